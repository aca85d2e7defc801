"""How an ErrorDetail rides a gRPC status, both ways.

The standard way, as grpcio-status does it: the server ends the call with a status whose
`grpc-status-details-bin` trailer holds a serialized google.rpc.Status (code, message and a
list of Any); liferaft packs exactly one ErrorDetail into that list. Any gRPC tool shows the
code and message; a liferaft client also gets the ErrorDetail: the error code, whether to
retry, and for NOT_LEADER where the leader is.

    # server (grpc.aio servicer)
    await context.abort_with_status(error_status(detail))
    # client
    except grpc.RpcError as err:            # grpc.aio.AioRpcError is one too
        detail = error_detail(err)          # None if the peer sent none (transport errors)

The gRPC code is chosen from the ErrorCode (GRPC_CODES) so that generic tooling, proxies and
logs classify the error sensibly; clients decide from ErrorDetail, never from the gRPC code.
"""

from __future__ import annotations

from types import MappingProxyType

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status

from liferaft_proto.v1.errors_pb2 import ErrorCode, ErrorDetail

__all__ = ["DETAILS_KEY", "GRPC_CODES", "error_detail", "error_status", "grpc_code_for"]

DETAILS_KEY = "grpc-status-details-bin"
"""The trailer that carries the serialized google.rpc.Status (grpcio-status uses the same)."""

_S = grpc.StatusCode
_E = ErrorCode
GRPC_CODES = MappingProxyType(
    {
        # The request is wrong and will stay wrong.
        _E.CORRUPT_MESSAGE: _S.INVALID_ARGUMENT,
        _E.INVALID_FETCH_SIZE: _S.INVALID_ARGUMENT,
        _E.MESSAGE_TOO_LARGE: _S.INVALID_ARGUMENT,
        _E.INVALID_REQUIRED_ACKS: _S.INVALID_ARGUMENT,
        _E.INVALID_TIMESTAMP: _S.INVALID_ARGUMENT,
        _E.UNSUPPORTED_COMPRESSION_TYPE: _S.INVALID_ARGUMENT,
        _E.INVALID_RECORD: _S.INVALID_ARGUMENT,
        _E.INVALID_TOPIC: _S.INVALID_ARGUMENT,
        _E.INVALID_PARTITIONS: _S.INVALID_ARGUMENT,
        _E.INVALID_REPLICATION_FACTOR: _S.INVALID_ARGUMENT,
        _E.INVALID_REPLICA_ASSIGNMENT: _S.INVALID_ARGUMENT,
        _E.INVALID_CONFIG: _S.INVALID_ARGUMENT,
        _E.INVALID_REQUEST: _S.INVALID_ARGUMENT,
        _E.INVALID_GROUP_ID: _S.INVALID_ARGUMENT,
        _E.INVALID_SESSION_TIMEOUT: _S.INVALID_ARGUMENT,
        _E.OFFSET_METADATA_TOO_LARGE: _S.INVALID_ARGUMENT,
        _E.UNSUPPORTED_VERSION: _S.UNIMPLEMENTED,
        # Something named does not exist, or already does.
        _E.UNKNOWN_TOPIC_OR_PARTITION: _S.NOT_FOUND,
        _E.GROUP_ID_NOT_FOUND: _S.NOT_FOUND,
        _E.TOPIC_ALREADY_EXISTS: _S.ALREADY_EXISTS,
        _E.DUPLICATE_SEQUENCE_NUMBER: _S.ALREADY_EXISTS,
        _E.OFFSET_OUT_OF_RANGE: _S.OUT_OF_RANGE,
        _E.REQUEST_TIMED_OUT: _S.DEADLINE_EXCEEDED,
        # Try again, maybe elsewhere, after a metadata refresh and a backoff.
        _E.NOT_LEADER: _S.UNAVAILABLE,
        _E.LEADER_NOT_AVAILABLE: _S.UNAVAILABLE,
        _E.BROKER_NOT_AVAILABLE: _S.UNAVAILABLE,
        _E.REPLICA_NOT_AVAILABLE: _S.UNAVAILABLE,
        _E.NOT_ENOUGH_REPLICAS: _S.UNAVAILABLE,
        _E.NOT_ENOUGH_REPLICAS_AFTER_APPEND: _S.UNAVAILABLE,
        _E.STORAGE_ERROR: _S.UNAVAILABLE,
        _E.NOT_CONTROLLER: _S.UNAVAILABLE,
        _E.OFFSET_NOT_AVAILABLE: _S.UNAVAILABLE,
        _E.COORDINATOR_LOAD_IN_PROGRESS: _S.UNAVAILABLE,
        _E.COORDINATOR_NOT_AVAILABLE: _S.UNAVAILABLE,
        _E.NOT_COORDINATOR: _S.UNAVAILABLE,
        # The system is not in the state this request needs.
        _E.NO_REASSIGNMENT_IN_PROGRESS: _S.FAILED_PRECONDITION,
        _E.FENCED_LEADER_EPOCH: _S.FAILED_PRECONDITION,
        _E.UNKNOWN_LEADER_EPOCH: _S.FAILED_PRECONDITION,
        _E.INCONSISTENT_CLUSTER_ID: _S.FAILED_PRECONDITION,
        _E.INCONSISTENT_NODE_ID: _S.FAILED_PRECONDITION,
        _E.OUT_OF_ORDER_SEQUENCE_NUMBER: _S.FAILED_PRECONDITION,
        _E.INVALID_PRODUCER_EPOCH: _S.FAILED_PRECONDITION,
        _E.UNKNOWN_PRODUCER_ID: _S.FAILED_PRECONDITION,
        _E.PRODUCER_FENCED: _S.FAILED_PRECONDITION,
        _E.NON_EMPTY_GROUP: _S.FAILED_PRECONDITION,
        _E.MEMBER_ID_REQUIRED: _S.FAILED_PRECONDITION,
        _E.GROUP_MAX_SIZE_REACHED: _S.RESOURCE_EXHAUSTED,
        # A group member must rejoin: retry at a higher level.
        _E.ILLEGAL_GENERATION: _S.ABORTED,
        _E.UNKNOWN_MEMBER_ID: _S.ABORTED,
        _E.REBALANCE_IN_PROGRESS: _S.ABORTED,
        _E.INCONSISTENT_GROUP_PROTOCOL: _S.ABORTED,
        _E.UNKNOWN_SERVER_ERROR: _S.INTERNAL,
        # Authorization (ACLs): the caller may not do this (it is known, just not allowed).
        _E.TOPIC_AUTHORIZATION_FAILED: _S.PERMISSION_DENIED,
        _E.GROUP_AUTHORIZATION_FAILED: _S.PERMISSION_DENIED,
        _E.CLUSTER_AUTHORIZATION_FAILED: _S.PERMISSION_DENIED,
        _E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: _S.PERMISSION_DENIED,
        _E.SECURITY_DISABLED: _S.FAILED_PRECONDITION,
        _E.SASL_AUTHENTICATION_FAILED: _S.UNAUTHENTICATED,
        _E.RESOURCE_NOT_FOUND: _S.NOT_FOUND,
    }
)
"""The gRPC status code for each ErrorCode; codes not listed map to UNKNOWN."""


def grpc_code_for(code: int) -> grpc.StatusCode:
    if code == ErrorCode.NONE:
        raise ValueError("ErrorCode NONE is not an error: there is no gRPC status for it")
    return GRPC_CODES.get(code, grpc.StatusCode.UNKNOWN)  # type: ignore[call-overload]


def error_status(detail: ErrorDetail, grpc_code: grpc.StatusCode | None = None) -> grpc.Status:
    """A grpc.Status for `context.abort_with_status`, carrying `detail` in the standard trailer.

    The status message is detail.message, so a person using any gRPC tool reads it too.
    """
    code = grpc_code if grpc_code is not None else grpc_code_for(detail.code)
    packed = any_pb2.Any()
    packed.Pack(detail)
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=detail.message, details=[packed])
    )


def error_detail(err: grpc.RpcError) -> ErrorDetail | None:
    """The ErrorDetail a liferaft node attached to a failed call, or None if there is none.

    Works for the errors of sync calls and of grpc.aio calls (both expose trailing_metadata()
    without awaiting once the call has failed). None means the failure did not come from a
    liferaft handler (a transport failure, a deadline, an unknown method): the client maps the
    gRPC code itself.
    """
    trailing = getattr(err, "trailing_metadata", None)
    metadata = trailing() if callable(trailing) else None
    if not metadata:
        return None
    for key, value in metadata:
        if key != DETAILS_KEY:
            continue
        status = status_pb2.Status.FromString(value)
        for packed in status.details:
            if packed.Is(ErrorDetail.DESCRIPTOR):
                detail = ErrorDetail()
                packed.Unpack(detail)
                return detail
    return None
