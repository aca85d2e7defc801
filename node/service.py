"""The public Broker gRPC service: a table routing each RPC to its handler in node/api/.

Errors cross the boundary here and only here: a BrokerError raised anywhere below becomes a gRPC
status carrying an ErrorDetail (code, message, leader hint, retriable), so clients never parse
message strings. Anything unexpected becomes UNKNOWN_SERVER_ERROR with its text, and is logged.
Every request is counted here too (NodeMetrics.observe_request: by API and outcome, with its
latency).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from liferaft_proto import status as wire_status
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc, errors_pb2
from node import principal
from node.api import (
    acls,
    admin,
    fetch,
    groups,
    metadata,
    moves,
    produce,
    produce_stream,
    producers,
    replicas,
    users,
)
from node.api.context import Api, cut, detail
from node.authn import AuthError, GrpcAuth
from node.broker import Broker
from node.errors import BrokerError, ErrorCode
from node.metrics import NodeMetrics

log = logging.getLogger("liferaft.service")

R = TypeVar("R")
Handler = Callable[[Api, Any], Awaitable[Any]]


def unary(fn: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Map BrokerError (and surprises) to a gRPC status with an ErrorDetail; count the request."""

    api = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: BrokerService, request: Any, context: grpc.aio.ServicerContext) -> R:
        t0 = time.perf_counter()
        outcome = "OK"
        try:
            self.authenticate(context, api)
            return await fn(self, request, context)
        except BrokerError as e:
            outcome = e.code_name
            await context.abort_with_status(wire_status.error_status(detail(e)))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as e:  # a bug: say so plainly, keep serving
            outcome = "UNKNOWN_SERVER_ERROR"
            log.exception("%s failed", fn.__name__)
            unknown = errors_pb2.ErrorDetail(
                code=errors_pb2.UNKNOWN_SERVER_ERROR,
                message=cut(f"{type(e).__name__}: {e}"),
                retriable=False,
            )
            await context.abort_with_status(wire_status.error_status(unknown))
        finally:
            if self.metrics is not None:
                self.metrics.observe_request(api, outcome, time.perf_counter() - t0)
        raise AssertionError("unreachable")

    return wrapper


def route(rpc: str, handler: Handler) -> Callable[..., Awaitable[Any]]:
    """The servicer method for `rpc`: the handler, given this node's Api, inside `unary`."""

    async def method(self: BrokerService, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await handler(self.api, request)

    method.__name__ = method.__qualname__ = rpc
    return unary(method)


class BrokerService(broker_pb2_grpc.BrokerServicer):
    def __init__(
        self,
        broker: Broker,
        forward: Callable[[int], broker_pb2_grpc.BrokerStub | None],
        metrics: NodeMetrics | None = None,
        auth: GrpcAuth | None = None,
    ) -> None:
        self.api = Api(broker, forward)
        self.metrics = metrics
        self.auth = auth

    def authenticate(self, context: grpc.aio.ServicerContext, api: str) -> None:
        """Set node.principal.caller for this call (its own task: gRPC serves each call in
        one), or raise SASL_AUTHENTICATION_FAILED."""
        if self.auth is None:
            return
        try:
            who = self.auth.principal(
                context.invocation_metadata() or (),
                context.auth_context(),
                api,
            )
        except AuthError as e:
            raise BrokerError(ErrorCode.SASL_AUTHENTICATION_FAILED, str(e)) from None
        principal.caller.set(who)

    # -- produce and read (node/api/produce.py, fetch.py) --------------------------------------
    Produce = route("Produce", produce.produce)

    async def ProduceStream(
        self,
        requests: AsyncIterator[broker_pb2.ProduceStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[broker_pb2.ProduceStreamResponse]:
        """Each request is answered (or refused) by a value on the stream; only a failed
        authentication, which concerns every request, ends it with a status."""
        try:
            self.authenticate(context, "ProduceStream")
        except BrokerError as e:
            if self.metrics is not None:
                self.metrics.observe_request("ProduceStream", e.code_name, 0.0)
            await context.abort_with_status(wire_status.error_status(detail(e)))
        observe = self.metrics.observe_request if self.metrics is not None else None
        async for answer in produce_stream.produce_stream(self.api, requests, observe):
            yield answer

    Fetch = route("Fetch", fetch.fetch)
    ListOffsets = route("ListOffsets", fetch.list_offsets)
    PartitionLag = route("PartitionLag", fetch.partition_lag)
    DeleteRecords = route("DeleteRecords", fetch.delete_records)

    async def FetchStream(
        self, request: broker_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[broker_pb2.FetchResponse]:
        """Each answer counts as one FetchStream request (its time: from the previous answer);
        the open streams are a gauge, down again when the client cancels (gRPC cancels this
        generator) or the stream fails."""
        metrics = self.metrics
        if metrics is not None:
            metrics.fetch_streams.inc()
        t0 = time.perf_counter()
        try:
            self.authenticate(context, "FetchStream")
            async for answer in fetch.fetch_stream(self.api, request):
                if metrics is not None:
                    metrics.observe_request("FetchStream", "OK", time.perf_counter() - t0)
                yield answer
                t0 = time.perf_counter()
        except BrokerError as e:
            if metrics is not None:
                metrics.observe_request("FetchStream", e.code_name, time.perf_counter() - t0)
            await context.abort_with_status(wire_status.error_status(detail(e)))
        finally:
            if metrics is not None:
                metrics.fetch_streams.dec()

    # -- metadata (node/api/metadata.py) -------------------------------------------------------
    Metadata = route("Metadata", metadata.metadata)
    DescribeTopics = route("DescribeTopics", metadata.describe_topics)

    # -- administration, on the controller leader (node/api/admin.py, producers.py) -----------
    CreateTopics = route("CreateTopics", admin.create_topics)
    AlterConfigs = route("AlterConfigs", admin.alter_configs)
    DeleteTopics = route("DeleteTopics", admin.delete_topics)
    CreatePartitions = route("CreatePartitions", admin.create_partitions)
    InitProducerId = route("InitProducerId", producers.init_producer_id)

    # -- consumer groups, on the coordinator (node/api/groups.py) ------------------------------
    FindCoordinator = route("FindCoordinator", groups.find_coordinator)
    GroupHeartbeat = route("GroupHeartbeat", groups.group_heartbeat)
    LeaveGroup = route("LeaveGroup", groups.leave_group)
    CommitOffsets = route("CommitOffsets", groups.commit_offsets)
    FetchOffsets = route("FetchOffsets", groups.fetch_offsets)
    ListGroups = route("ListGroups", groups.list_groups)
    DescribeGroup = route("DescribeGroup", groups.describe_group)
    DeleteGroups = route("DeleteGroups", groups.delete_groups)

    # -- one replica, for debugging (node/api/replicas.py) -------------------------------------
    DescribeReplica = route("DescribeReplica", replicas.describe_replica)
    ReplicaState = route("ReplicaState", replicas.replica_state)

    # -- ACLs (node/api/acls.py) ---------------------------------------------------------------
    DescribeAcls = route("DescribeAcls", acls.describe_acls)
    CreateAcls = route("CreateAcls", acls.create_acls)
    DeleteAcls = route("DeleteAcls", acls.delete_acls)
    # -- users (issue 17; node/api/users.py) ---------------------------------------------------
    UpsertUser = route("UpsertUser", users.upsert_user)
    DeleteUser = route("DeleteUser", users.delete_user)
    DescribeUsers = route("DescribeUsers", users.describe_users)

    # -- replica moves (issue 19), on the controller leader (node/api/moves.py) ---------------
    MovePartitions = route("MovePartitions", moves.move_partitions)
    ListPartitionMoves = route("ListPartitionMoves", moves.list_partition_moves)
    DecommissionNode = route("DecommissionNode", moves.decommission_node)
    CancelPartitionMoves = route("CancelPartitionMoves", moves.cancel_partition_moves)
    Rebalance = route("Rebalance", moves.rebalance)
