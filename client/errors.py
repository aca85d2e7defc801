"""The errors a liferaft client raises, and the one place gRPC failures become them.

Every error carries what a program needs to act without parsing text: the ErrorCode (Kafka's
numbering, see errors.proto), a message for a person, the leader hint a node attached, and two
flags that drive the client's own recovery:

- `retriable`: the same request may succeed if sent again after a backoff. When a node attached
  an ErrorDetail, the node decided (the detail's own flag); for failures with no detail (the
  transport: refused connections, deadlines) this module decides.
- `invalid_metadata`: the error suggests our picture of the cluster is out of date (a leader
  moved, a node died), so refresh metadata before the retry. This is the client's own
  knowledge, by code, as in aiokafka's errors.

`from_rpc_error` is the single boundary where a `grpc.RpcError` turns into a `LiferaftError`
(the pattern of httpcore's `map_exceptions`): nothing else in client/ looks at gRPC status codes.
Catch the subclasses by what they mean (`except NotLeaderError`), or `LiferaftError` for all.
"""

from __future__ import annotations

from types import MappingProxyType

import grpc

from liferaft_proto.codes import is_retriable
from liferaft_proto.status import error_detail
from liferaft_proto.v1.errors_pb2 import ErrorCode, ErrorDetail

__all__ = [
    "AuthorizationError",
    "BrokerNotAvailableError",
    "BrokerUnavailableError",
    "BufferFullError",
    "ClusterAuthorizationFailedError",
    "CommitFailedError",
    "CoordinatorLoadInProgressError",
    "CoordinatorNotAvailableError",
    "CorruptMessageError",
    "DeliveryTimeoutError",
    "DuplicateSequenceNumberError",
    "FencedLeaderEpochError",
    "GroupAuthorizationFailedError",
    "GroupIdNotFoundError",
    "GroupMaxSizeReachedError",
    "IllegalGenerationError",
    "InconsistentClusterIdError",
    "InconsistentGroupProtocolError",
    "InconsistentNodeIdError",
    "InvalidConfigError",
    "InvalidFetchSizeError",
    "InvalidGroupIdError",
    "InvalidPartitionsError",
    "InvalidProducerEpochError",
    "InvalidRecordError",
    "InvalidReplicaAssignmentError",
    "InvalidReplicationFactorError",
    "InvalidRequestError",
    "InvalidRequiredAcksError",
    "InvalidSessionTimeoutError",
    "InvalidTimestampError",
    "InvalidTopicError",
    "LeaderNotAvailableError",
    "LiferaftError",
    "MemberIdRequiredError",
    "MessageTooLargeError",
    "NoOffsetForPartitionError",
    "NoReassignmentInProgressError",
    "NonEmptyGroupError",
    "NotControllerError",
    "NotCoordinatorError",
    "NotEnoughReplicasAfterAppendError",
    "NotEnoughReplicasError",
    "NotLeaderError",
    "OffsetMetadataTooLargeError",
    "OffsetNotAvailableError",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceNumberError",
    "ProducerFencedError",
    "RebalanceInProgressError",
    "ReplicaNotAvailableError",
    "RequestTimedOutError",
    "ResourceNotFoundError",
    "SaslAuthenticationFailedError",
    "SecurityDisabledError",
    "StorageError",
    "TopicAlreadyExistsError",
    "TopicAuthorizationFailedError",
    "TransactionalIdAuthorizationFailedError",
    "UnknownLeaderEpochError",
    "UnknownMemberIdError",
    "UnknownProducerIdError",
    "UnknownServerError",
    "UnknownTopicOrPartitionError",
    "UnsupportedCompressionTypeError",
    "UnsupportedVersionError",
    "error_class",
    "error_from_detail",
    "from_rpc_error",
]


class LiferaftError(Exception):
    """Base of every error the client raises about the cluster or a request.

    `code` is an ErrorCode value (errors.proto); `leader_id`/`leader_address`/`leader_epoch`
    name the node to go to instead when a node knew it (NOT_LEADER, NOT_CONTROLLER), else 0/"".
    Subclasses fix the code and the default flags; an instance may override the flags (a node's
    ErrorDetail says whether *this* failure is retriable).
    """

    code: int = ErrorCode.UNKNOWN_SERVER_ERROR
    retriable: bool = False
    invalid_metadata: bool = False
    transport: bool = False
    """No node described this failure: the call failed below liferaft (connection, deadline)."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # A class's default `retriable` is the wire contract's (liferaft_proto.codes), the one
        # table the node answers from too; a class may still say otherwise (the give-up errors).
        if "code" in cls.__dict__ and "retriable" not in cls.__dict__:
            cls.retriable = is_retriable(cls.code)

    def __init__(
        self,
        code: int | None = None,
        message: str = "",
        leader_id: int = 0,
        leader_address: str = "",
        retriable: bool | None = None,
        invalid_metadata: bool | None = None,
        *,
        leader_epoch: int = 0,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.leader_id = leader_id
        self.leader_address = leader_address
        self.leader_epoch = leader_epoch
        if retriable is not None:
            self.retriable = retriable
        if invalid_metadata is not None:
            self.invalid_metadata = invalid_metadata

    @property
    def code_name(self) -> str:
        """The ErrorCode's name (NOT_LEADER), or the number if this client does not know it."""
        try:
            return ErrorCode.Name(self.code)
        except ValueError:
            return str(self.code)

    @property
    def has_leader_hint(self) -> bool:
        return self.leader_id > 0

    def __str__(self) -> str:
        return f"{self.code_name}: {self.message}" if self.message else self.code_name

    def __repr__(self) -> str:
        hint = f", leader_id={self.leader_id}" if self.leader_id else ""
        return (
            f"{type(self).__name__}({self.code_name}, {self.message!r}{hint}, "
            f"retriable={self.retriable})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Exceptions pickle as cls(*args), and ours take more than a message: rebuild from the
        # instance's own fields instead (multiprocessing, concurrent.futures).
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(
    cls: type[LiferaftError], args: tuple[object, ...], state: dict[str, object]
) -> LiferaftError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


# -- one class per code a program may want to catch --------------------------------------------
# Defaults for `retriable` matter only when no node said (it always says when it sends a
# detail) and come from liferaft_proto.codes; `invalid_metadata` is the client's own knowledge.


class UnknownServerError(LiferaftError):
    """The node failed in a way it did not expect; the message says what happened."""

    code = ErrorCode.UNKNOWN_SERVER_ERROR


class OffsetOutOfRangeError(LiferaftError):
    """The offset asked for is below the log start or past the log end."""

    code = ErrorCode.OFFSET_OUT_OF_RANGE


class NoOffsetForPartitionError(OffsetOutOfRangeError):
    """A partition has no position, no committed offset, and auto_offset_reset is "none": the
    consumer will not guess where to start (aiokafka's NoOffsetForPartitionError). A client-side
    error: it carries OFFSET_OUT_OF_RANGE's code, and catching OffsetOutOfRangeError catches it."""


class CorruptMessageError(LiferaftError):
    """A record batch failed its CRC, or its lengths or counts lie."""

    code = ErrorCode.CORRUPT_MESSAGE


class UnknownTopicOrPartitionError(LiferaftError):
    """The cluster has no such topic or partition."""

    code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    invalid_metadata = True


class InvalidFetchSizeError(LiferaftError):
    code = ErrorCode.INVALID_FETCH_SIZE


class LeaderNotAvailableError(LiferaftError):
    """The partition has no leader right now (an election is under way)."""

    code = ErrorCode.LEADER_NOT_AVAILABLE
    invalid_metadata = True


class NotLeaderError(LiferaftError):
    """The node asked does not lead the partition; `leader_id`/`leader_address` say who does."""

    code = ErrorCode.NOT_LEADER
    invalid_metadata = True


class RequestTimedOutError(LiferaftError):
    """A request (or, with no detail, the gRPC deadline of one attempt) ran out of time."""

    code = ErrorCode.REQUEST_TIMED_OUT


class BrokerNotAvailableError(LiferaftError):
    """The node named is down or not (yet) part of the cluster."""

    code = ErrorCode.BROKER_NOT_AVAILABLE
    invalid_metadata = True


class BrokerUnavailableError(BrokerNotAvailableError):
    """A node could not be reached at all (refused, reset, unreachable): a transport failure
    with no ErrorDetail. The client tries another node or waits for a new leader."""


class ReplicaNotAvailableError(LiferaftError):
    code = ErrorCode.REPLICA_NOT_AVAILABLE
    invalid_metadata = True


class MessageTooLargeError(LiferaftError):
    """The batch is larger than the topic's max.message.bytes (or the transport's limit)."""

    code = ErrorCode.MESSAGE_TOO_LARGE


class InvalidTopicError(LiferaftError):
    """A topic name is empty, too long, or uses characters outside [a-zA-Z0-9._-]."""

    code = ErrorCode.INVALID_TOPIC


class NotEnoughReplicasError(LiferaftError):
    """acks=all while the ISR is below min.insync.replicas; nothing was written."""

    code = ErrorCode.NOT_ENOUGH_REPLICAS


class NotEnoughReplicasAfterAppendError(LiferaftError):
    """Written, but the ISR shrank before the batch reached all of it; a retry may duplicate."""

    code = ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND


class InvalidRequiredAcksError(LiferaftError):
    code = ErrorCode.INVALID_REQUIRED_ACKS


class InvalidTimestampError(LiferaftError):
    code = ErrorCode.INVALID_TIMESTAMP


class UnsupportedVersionError(LiferaftError):
    """The node does not speak this request (an older node, or not a liferaft node)."""

    code = ErrorCode.UNSUPPORTED_VERSION


class TopicAlreadyExistsError(LiferaftError):
    code = ErrorCode.TOPIC_ALREADY_EXISTS


class InvalidPartitionsError(LiferaftError):
    code = ErrorCode.INVALID_PARTITIONS


class InvalidReplicationFactorError(LiferaftError):
    code = ErrorCode.INVALID_REPLICATION_FACTOR


class InvalidReplicaAssignmentError(LiferaftError):
    code = ErrorCode.INVALID_REPLICA_ASSIGNMENT


class NoReassignmentInProgressError(LiferaftError):
    """The partition whose move was to be cancelled is not being moved."""

    code = ErrorCode.NO_REASSIGNMENT_IN_PROGRESS


class InvalidConfigError(LiferaftError):
    """A topic config name or value is not accepted; the message names it."""

    code = ErrorCode.INVALID_CONFIG


class NotControllerError(LiferaftError):
    """No controller leader could take the request right now."""

    code = ErrorCode.NOT_CONTROLLER
    invalid_metadata = True


class InvalidRequestError(LiferaftError):
    """The request is malformed: a missing field, a bad combination, an unknown value."""

    code = ErrorCode.INVALID_REQUEST


class StorageError(LiferaftError):
    code = ErrorCode.STORAGE_ERROR
    invalid_metadata = True


class FencedLeaderEpochError(LiferaftError):
    code = ErrorCode.FENCED_LEADER_EPOCH
    invalid_metadata = True


class UnknownLeaderEpochError(LiferaftError):
    code = ErrorCode.UNKNOWN_LEADER_EPOCH
    invalid_metadata = True


class UnsupportedCompressionTypeError(LiferaftError):
    code = ErrorCode.UNSUPPORTED_COMPRESSION_TYPE


class OffsetNotAvailableError(LiferaftError):
    code = ErrorCode.OFFSET_NOT_AVAILABLE
    invalid_metadata = True


class InvalidRecordError(LiferaftError):
    """A record in a sound batch is not acceptable (or the batch uses an unsupported feature)."""

    code = ErrorCode.INVALID_RECORD


class InconsistentClusterIdError(LiferaftError):
    code = ErrorCode.INCONSISTENT_CLUSTER_ID


class InconsistentNodeIdError(LiferaftError):
    code = ErrorCode.INCONSISTENT_NODE_ID


# Idempotent producers.
class OutOfOrderSequenceNumberError(LiferaftError):
    code = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


class DuplicateSequenceNumberError(LiferaftError):
    code = ErrorCode.DUPLICATE_SEQUENCE_NUMBER


class InvalidProducerEpochError(LiferaftError):
    code = ErrorCode.INVALID_PRODUCER_EPOCH


class UnknownProducerIdError(LiferaftError):
    code = ErrorCode.UNKNOWN_PRODUCER_ID


class ProducerFencedError(LiferaftError):
    code = ErrorCode.PRODUCER_FENCED


# Consumer groups.
class OffsetMetadataTooLargeError(LiferaftError):
    code = ErrorCode.OFFSET_METADATA_TOO_LARGE


class CoordinatorLoadInProgressError(LiferaftError):
    code = ErrorCode.COORDINATOR_LOAD_IN_PROGRESS


class CoordinatorNotAvailableError(LiferaftError):
    code = ErrorCode.COORDINATOR_NOT_AVAILABLE
    invalid_metadata = True


class NotCoordinatorError(LiferaftError):
    code = ErrorCode.NOT_COORDINATOR
    invalid_metadata = True


class IllegalGenerationError(LiferaftError):
    code = ErrorCode.ILLEGAL_GENERATION


class InconsistentGroupProtocolError(LiferaftError):
    code = ErrorCode.INCONSISTENT_GROUP_PROTOCOL


class InvalidGroupIdError(LiferaftError):
    code = ErrorCode.INVALID_GROUP_ID


class UnknownMemberIdError(LiferaftError):
    code = ErrorCode.UNKNOWN_MEMBER_ID


class InvalidSessionTimeoutError(LiferaftError):
    code = ErrorCode.INVALID_SESSION_TIMEOUT


class RebalanceInProgressError(LiferaftError):
    code = ErrorCode.REBALANCE_IN_PROGRESS


class NonEmptyGroupError(LiferaftError):
    code = ErrorCode.NON_EMPTY_GROUP


class GroupIdNotFoundError(LiferaftError):
    code = ErrorCode.GROUP_ID_NOT_FOUND


class MemberIdRequiredError(LiferaftError):
    code = ErrorCode.MEMBER_ID_REQUIRED


class GroupMaxSizeReachedError(LiferaftError):
    code = ErrorCode.GROUP_MAX_SIZE_REACHED


# Authorization (ACLs): the message names the principal, the operation and the resource
# ("User:bob may not WRITE topic orders"). Nothing was changed.
class AuthorizationError(LiferaftError):
    """Base of the four "may not" errors: catch it for any refusal by an ACL."""


class TopicAuthorizationFailedError(AuthorizationError):
    code = ErrorCode.TOPIC_AUTHORIZATION_FAILED


class GroupAuthorizationFailedError(AuthorizationError):
    code = ErrorCode.GROUP_AUTHORIZATION_FAILED


class ClusterAuthorizationFailedError(AuthorizationError):
    code = ErrorCode.CLUSTER_AUTHORIZATION_FAILED


class TransactionalIdAuthorizationFailedError(AuthorizationError):
    code = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


class SecurityDisabledError(LiferaftError):
    """An ACL request to a cluster whose authorizer is off."""

    code = ErrorCode.SECURITY_DISABLED


class SaslAuthenticationFailedError(LiferaftError):
    """The cluster refused the credentials: no username and password where they are wanted,
    an unknown user or a wrong password (the message does not say which)."""

    code = ErrorCode.SASL_AUTHENTICATION_FAILED


class ResourceNotFoundError(LiferaftError):
    """A named user (SCRAM credential) does not exist."""

    code = ErrorCode.RESOURCE_NOT_FOUND


class DeliveryTimeoutError(RequestTimedOutError):
    """The client gave up: retriable failures went on past the delivery timeout.

    `last_error` (also the `__cause__`) is the failure of the last attempt. Not retriable: the
    client already retried for as long as it was allowed to.
    """

    retriable = False

    def __init__(self, message: str, last_error: LiferaftError | None = None) -> None:
        super().__init__(None, message)
        self.last_error = last_error


class BufferFullError(RequestTimedOutError):
    """The producer's buffer (buffer_memory) stayed full for max_block_ms: the records could not
    even be queued. Nothing of them was sent."""

    retriable = False


class CommitFailedError(IllegalGenerationError):
    """A group member's commit was refused because the partitions are no longer its own (its
    session ended, or they moved to another member). The offsets were not committed; the
    records after the last successful commit will be read again by their new owner."""


def _collect_codes() -> MappingProxyType[int, type[LiferaftError]]:
    by_code: dict[int, type[LiferaftError]] = {}
    pending: list[type[LiferaftError]] = list(LiferaftError.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        # The transport and give-up classes share a code with the class a node's detail maps to.
        if cls in (
            AuthorizationError,
            BrokerUnavailableError,
            DeliveryTimeoutError,
            BufferFullError,
            CommitFailedError,
            NoOffsetForPartitionError,
        ):
            continue
        if cls.code in by_code:
            raise AssertionError(f"{cls.__name__} and {by_code[cls.code].__name__} share a code")
        by_code[cls.code] = cls
    return MappingProxyType(by_code)


_BY_CODE = _collect_codes()


def error_class(code: int) -> type[LiferaftError]:
    """The class for an ErrorCode (LiferaftError itself for a code this client does not know)."""
    return _BY_CODE.get(code, LiferaftError)


def error_from_detail(detail: ErrorDetail) -> LiferaftError:
    """The error a node described: a failed call's trailer, or a per-topic result's `error`."""
    return error_class(detail.code)(
        detail.code,
        detail.message,
        detail.leader_id,
        detail.leader_address,
        detail.retriable,
        leader_epoch=detail.leader_epoch,
    )


# gRPC statuses that come with no ErrorDetail: the call never reached a liferaft handler (or the
# node died mid-call). Class, retriable, invalid_metadata.
_TRANSPORT: MappingProxyType[grpc.StatusCode, tuple[type[LiferaftError], bool, bool]] = (
    MappingProxyType(
        {
            # Connection refused or lost, node shutting down: another node, or later, may do.
            grpc.StatusCode.UNAVAILABLE: (BrokerUnavailableError, True, True),
            grpc.StatusCode.CANCELLED: (BrokerUnavailableError, True, True),
            # No answer in time: the node may be paused or partitioned away; look again.
            grpc.StatusCode.DEADLINE_EXCEEDED: (RequestTimedOutError, True, True),
            # The request exceeds a gRPC message size limit.
            grpc.StatusCode.RESOURCE_EXHAUSTED: (MessageTooLargeError, False, False),
            # Not a liferaft node, or one that predates this RPC.
            grpc.StatusCode.UNIMPLEMENTED: (UnsupportedVersionError, False, False),
            grpc.StatusCode.INVALID_ARGUMENT: (InvalidRequestError, False, False),
        }
    )
)


CORE_WRITE_FAILED = "Internal error from Core"
"""The details of grpc.aio's INTERNAL status for a write on a call that had already ended."""


def from_rpc_error(err: grpc.RpcError, *, address: str = "") -> LiferaftError:
    """Translate a failed gRPC call into a LiferaftError. The one place this happens.

    With an ErrorDetail (a liferaft handler refused the request) the detail decides everything.
    Without one, the gRPC status code does: UNAVAILABLE (and CANCELLED) become a retriable
    BrokerUnavailableError, DEADLINE_EXCEEDED a retriable RequestTimedOutError, both marking
    metadata as suspect; anything else is not retriable. `address` (the node called) goes into
    the message so a person can tell which node failed.
    """
    detail = error_detail(err)
    if detail is not None and detail.code != ErrorCode.NONE:
        return error_from_detail(detail)
    code = _status_code(err)
    details = _status_details(err)
    where = f" from {address}" if address else ""
    cls, retriable, invalid = _TRANSPORT.get(code, (UnknownServerError, False, False))
    if code == grpc.StatusCode.INTERNAL and details == CORE_WRITE_FAILED:
        # Not a node's answer: grpc.aio's own status for a stream write that failed because the
        # call had already ended, which hides the real status (a node killed under a stream:
        # UNAVAILABLE; grpc/grpc#36066). The stream is broken; whatever was in flight may or
        # may not have been written, as with UNAVAILABLE.
        cls, retriable, invalid = _TRANSPORT[grpc.StatusCode.UNAVAILABLE]
    name = code.name if code is not None else "UNKNOWN"
    if code == grpc.StatusCode.UNAVAILABLE:
        details += tls_hint(details)
    error = cls(
        None,
        f"gRPC {name}{where}: {details}" if details else f"gRPC {name}{where}",
        retriable=retriable,
        invalid_metadata=invalid,
    )
    error.transport = True
    return error


def tls_hint(details: str) -> str:
    """What a bare UNAVAILABLE most likely means when TLS is on one side only, from gRPC's own
    words: a node serving TLS closes a plaintext connection at once ("Socket closed" while
    connecting); a plaintext node answers a TLS handshake with something that is not TLS
    (WRONG_VERSION_NUMBER). "" when the details say neither."""
    if "WRONG_VERSION_NUMBER" in details or "Tls handshake failed" in details:
        return (
            " (the TLS handshake failed: if the node's listener is plaintext, connect with "
            "security_protocol PLAINTEXT, or turn TLS on there with --client-tls)"
        )
    if "failed to connect" in details and "Socket closed" in details:
        return (
            " (the node closed the connection at once: if it serves TLS (--client-tls), "
            "connect with security_protocol SSL and ssl_cafile, `liferaft --security-protocol "
            "SSL --ssl-cafile CA`)"
        )
    return ""


def _status_code(err: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(err, "code", None)
    if not callable(code):
        return None
    value = code()
    return value if isinstance(value, grpc.StatusCode) else None


def _status_details(err: grpc.RpcError) -> str:
    details = getattr(err, "details", None)
    value = details() if callable(details) else None
    return str(value) if value else ""
