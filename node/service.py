"""The public Broker gRPC service: requests in, Broker/Partition calls, responses out.

Errors cross the boundary here and only here: a BrokerError raised anywhere below becomes a gRPC
status carrying an ErrorDetail (code, message, leader hint, retriable), so clients never parse
message strings. Anything unexpected becomes UNKNOWN_SERVER_ERROR with its text, and is logged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc

from liferaft_proto import records
from liferaft_proto import status as wire_status
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc, errors_pb2
from node import validate
from node.broker import Broker, PartitionView
from node.config import parse_address
from node.controller import TopicInfo, merge_configs, validate_topic_name
from node.controller_commands import AllocateProducerIds, DeleteTopic
from node.errors import BrokerError, ErrorCode
from node.groups import EMPTY, GroupCoordinator, OffsetEntry
from node.limits import MAX_ADDRESS_CHARS, MAX_ERROR_MESSAGE_CHARS, shown
from node.metrics import NodeMetrics
from node.topic_config import TopicConfig, parse_topic_config

log = logging.getLogger("liferaft.service")

DEFAULT_PRODUCE_TIMEOUT_MS = 30_000
DEFAULT_FETCH_MAX_BYTES = 1 << 20
DEFAULT_FETCH_MAX_WAIT_MS = 500
MAX_FETCH_BYTES = 64 << 20
ADMIN_TIMEOUT_MS = 15_000

R = TypeVar("R")


def _cut(message: str) -> str:
    """Error messages leave the node at most MAX_ERROR_MESSAGE_CHARS long: a status trailer
    past a client's metadata limit (16 KiB by default) would hide the real error."""
    if len(message) <= MAX_ERROR_MESSAGE_CHARS:
        return message
    return message[: MAX_ERROR_MESSAGE_CHARS - 20] + f"... ({len(message)} chars)"


def _detail(err: BrokerError) -> errors_pb2.ErrorDetail:
    return errors_pb2.ErrorDetail(
        code=err.code,  # type: ignore[arg-type]
        message=_cut(err.message),
        leader_id=err.leader_id,
        leader_address=err.leader_address[:MAX_ADDRESS_CHARS],
        retriable=err.retriable,
        leader_epoch=err.leader_epoch,
    )


def unary(fn: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Map BrokerError (and surprises) to a gRPC status with an ErrorDetail."""

    api = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: BrokerService, request: Any, context: grpc.aio.ServicerContext) -> R:
        t0 = time.perf_counter()
        outcome = "OK"
        try:
            return await fn(self, request, context)
        except BrokerError as e:
            outcome = e.code_name
            await context.abort_with_status(wire_status.error_status(_detail(e)))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as e:  # a bug: say so plainly, keep serving
            outcome = "UNKNOWN_SERVER_ERROR"
            log.exception("%s failed", fn.__name__)
            detail = errors_pb2.ErrorDetail(
                code=errors_pb2.UNKNOWN_SERVER_ERROR,
                message=_cut(f"{type(e).__name__}: {e}"),
                retriable=False,
            )
            await context.abort_with_status(wire_status.error_status(detail))
        finally:
            if self.metrics is not None:
                self.metrics.observe_request(api, outcome, time.perf_counter() - t0)
        raise AssertionError("unreachable")

    return wrapper


class BrokerService(broker_pb2_grpc.BrokerServicer):
    def __init__(
        self,
        broker: Broker,
        forward: Callable[[int], broker_pb2_grpc.BrokerStub | None],
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.broker = broker
        self._forward = forward  # node id -> stub to that node (for controller requests)
        self.metrics = metrics

    # -- produce and fetch ---------------------------------------------------------------------
    @unary
    async def Produce(
        self, request: broker_pb2.ProduceRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.ProduceResponse:
        validate.produce(request)
        acks = request.acks if request.HasField("acks") else -1
        part = self.broker.leader_partition(request.topic, request.partition)
        base, fut = part.produce(request.records, acks)
        if fut is not None:
            timeout_ms = request.timeout_ms or DEFAULT_PRODUCE_TIMEOUT_MS
            try:
                await asyncio.wait_for(asyncio.shield(fut), timeout_ms / 1000)
            except TimeoutError:
                part.cancel_waiter(fut)
                raise BrokerError(
                    ErrorCode.REQUEST_TIMED_OUT,
                    f"batch at offset {base} of {request.topic}-{request.partition} was not "
                    f"{'committed to the ISR' if acks == -1 else 'written'} within {timeout_ms} ms; "
                    "it may still be written",
                ) from None
        return broker_pb2.ProduceResponse(
            base_offset=base if acks != 0 else -1,
            log_append_time_ms=-1,
            log_start_offset=part.log_start_offset,
        )

    @staticmethod
    def _fetch_limits(request: broker_pb2.FetchRequest) -> tuple[int, int]:
        if request.max_bytes < 0 or request.min_bytes < 0 or request.max_wait_ms < 0:
            raise BrokerError(
                ErrorCode.INVALID_FETCH_SIZE, "max_bytes, min_bytes and max_wait_ms must be >= 0"
            )
        if request.offset < 0:
            raise BrokerError(ErrorCode.OFFSET_OUT_OF_RANGE, f"offset {request.offset} is negative")
        max_bytes = min(request.max_bytes or DEFAULT_FETCH_MAX_BYTES, MAX_FETCH_BYTES)
        max_wait = request.max_wait_ms if request.max_wait_ms else DEFAULT_FETCH_MAX_WAIT_MS
        return max_bytes, max_wait

    @unary
    async def Fetch(
        self, request: broker_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.FetchResponse:
        validate.fetch(request)
        max_bytes, max_wait = self._fetch_limits(request)
        part = self.broker.leader_partition(request.topic, request.partition)
        res = await part.fetch(request.offset, max_bytes, max_wait, request.min_bytes)
        return broker_pb2.FetchResponse(
            records=res.records,
            high_watermark=res.high_watermark,
            log_start_offset=res.log_start_offset,
            last_stable_offset=res.high_watermark,
        )

    async def FetchStream(
        self, request: broker_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[broker_pb2.FetchResponse]:
        try:
            validate.fetch(request)
            max_bytes, max_wait = self._fetch_limits(request)
            offset = request.offset
            while True:
                part = self.broker.leader_partition(request.topic, request.partition)
                res = await part.fetch(offset, max_bytes, max_wait, 1)
                if res.records:
                    end = offset
                    for header, _ in records.split_batches(res.records):
                        end = header.base_offset + header.record_count
                    offset = max(offset, end)
                yield broker_pb2.FetchResponse(
                    records=res.records,
                    high_watermark=res.high_watermark,
                    log_start_offset=res.log_start_offset,
                    last_stable_offset=res.high_watermark,
                )
        except BrokerError as e:
            await context.abort_with_status(wire_status.error_status(_detail(e)))

    @unary
    async def ListOffsets(
        self, request: broker_pb2.ListOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.ListOffsetsResponse:
        validate.list_offsets(request)
        spec = request.spec
        if spec == broker_pb2.ListOffsetsRequest.UNSPECIFIED:
            raise BrokerError(
                ErrorCode.INVALID_REQUEST, "ListOffsets needs spec EARLIEST, LATEST or BY_TIMESTAMP"
            )
        part = self.broker.leader_partition(request.topic, request.partition)
        epoch = part.state().leader_epoch
        if spec == broker_pb2.ListOffsetsRequest.EARLIEST:
            return broker_pb2.ListOffsetsResponse(
                offset=part.log_start_offset, timestamp_ms=-1, leader_epoch=epoch
            )
        if spec == broker_pb2.ListOffsetsRequest.LATEST:
            return broker_pb2.ListOffsetsResponse(
                offset=part.high_watermark, timestamp_ms=-1, leader_epoch=epoch
            )
        if spec == broker_pb2.ListOffsetsRequest.BY_TIMESTAMP:
            found = part.offset_for_time(request.timestamp_ms)
            offset, ts = found if found is not None else (-1, -1)
            return broker_pb2.ListOffsetsResponse(
                offset=offset, timestamp_ms=ts, leader_epoch=epoch
            )
        raise BrokerError(ErrorCode.INVALID_REQUEST, f"unknown ListOffsets spec {spec}")

    # -- metadata ------------------------------------------------------------------------------
    def _partition_pb(self, view: PartitionView) -> broker_pb2.PartitionMetadata:
        st = view.state
        pm = broker_pb2.PartitionMetadata(partition=view.partition, replicas=list(view.replicas))
        if st is None or st.leader == 0:
            pm.error_code = errors_pb2.LEADER_NOT_AVAILABLE
            if st is not None:
                pm.high_watermark = st.high_watermark
                pm.log_start_offset = st.log_start_offset
            return pm
        pm.leader_id = st.leader
        pm.leader_epoch = st.leader_epoch
        pm.isr.extend(st.isr)
        pm.high_watermark = st.high_watermark
        pm.log_start_offset = st.log_start_offset
        return pm

    def _topic_pb(self, info: TopicInfo) -> broker_pb2.TopicMetadata:
        tm = broker_pb2.TopicMetadata(name=info.name)
        for p in range(info.partitions):
            tm.partitions.append(self._partition_pb(self.broker.partition_view(info, p)))
        return tm

    @unary
    async def Metadata(
        self, request: broker_pb2.MetadataRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.MetadataResponse:
        validate.metadata(request)
        st = self.broker.controller.state
        resp = broker_pb2.MetadataResponse(
            controller_id=self.broker.controller_leader(), cluster_id=self.broker.config.cluster_id
        )
        for b in sorted(st.brokers.values(), key=lambda b: b.node_id):
            resp.brokers.append(broker_pb2.BrokerInfo(node_id=b.node_id, host=b.host, port=b.port))
        names = list(request.topics) or sorted(st.topics)
        for name in names:
            info = st.topics.get(name)
            if info is None:
                resp.topics.append(
                    broker_pb2.TopicMetadata(name=name, error_code=_missing_topic(name).code)  # type: ignore[arg-type]
                )
            else:
                resp.topics.append(self._topic_pb(info))
        return resp

    @unary
    async def DescribeTopics(
        self, request: broker_pb2.DescribeTopicsRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.DescribeTopicsResponse:
        validate.topic_names(request.names)
        st = self.broker.controller.state
        resp = broker_pb2.DescribeTopicsResponse()
        defaults = TopicConfig().to_dict()
        for name in list(request.names) or sorted(st.topics):
            info = st.topics.get(name)
            if info is None:
                resp.topics.append(
                    broker_pb2.TopicDescription(name=name, error=_detail(_missing_topic(name)))
                )
                continue
            desc = broker_pb2.TopicDescription(name=name, replication_factor=len(info.replicas[0]))
            for p in range(info.partitions):
                desc.partitions.append(self._partition_pb(self.broker.partition_view(info, p)))
            desc.configs.extend(_config_entries(info.config, info.configs, defaults))
            resp.topics.append(desc)
        return resp

    # -- administration (through the controller) ---------------------------------------------
    async def _on_controller(self, method: str, request: Any) -> Any:
        """Run an admin request on the controller leader: here, or forwarded there."""
        ctl = self.broker.controller
        if ctl.is_leader:
            return None
        leader = ctl.leader
        stub = self._forward(leader) if leader else None
        if stub is None:
            raise BrokerError(
                ErrorCode.NOT_CONTROLLER,
                f"the controller has no leader right now ({self.broker.waiting_for()}); "
                "retry shortly",
            )
        try:
            return await getattr(stub, method)(request, timeout=ADMIN_TIMEOUT_MS / 1000)
        except grpc.aio.AioRpcError as e:
            detail = wire_status.error_detail(e)
            if detail is not None:
                raise BrokerError(detail.code, detail.message, leader_id=detail.leader_id) from None
            raise BrokerError(
                ErrorCode.NOT_CONTROLLER,
                f"could not reach the controller leader (node {leader}): {e.code().name}",
            ) from None

    @unary
    async def CreateTopics(
        self, request: broker_pb2.CreateTopicsRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.CreateTopicsResponse:
        validate.create_topics(request)
        forwarded = await self._on_controller("CreateTopics", request)
        if forwarded is not None:
            return forwarded
        ctl = self.broker.controller
        cfg = self.broker.config
        resp = broker_pb2.CreateTopicsResponse()
        seen: set[str] = set()
        for t in request.topics:
            partitions = t.partitions or cfg.default_partitions
            rf = t.replication_factor or min(
                cfg.default_replication_factor, max(1, len(ctl.state.brokers))
            )
            result = broker_pb2.CreateTopicResult(
                name=t.name, partitions=partitions, replication_factor=rf
            )
            try:
                if t.name in seen:
                    raise BrokerError(
                        ErrorCode.INVALID_REQUEST,
                        f"topic {shown(t.name)} appears twice in the request",
                    )
                seen.add(t.name)
                validate.new_topic(t)
                cmd = ctl.plan_create_topic(t.name, partitions, rf, dict(t.configs))
                if not request.validate_only:
                    await asyncio.wait_for(
                        ctl.replicate_and_wait(cmd), (request.timeout_ms or ADMIN_TIMEOUT_MS) / 1000
                    )
                    await self._wait_for_leaders(
                        t.name, (request.timeout_ms or ADMIN_TIMEOUT_MS) / 1000
                    )
            except BrokerError as e:
                result.error.CopyFrom(_detail(e))
            except TimeoutError:
                result.error.CopyFrom(
                    _detail(
                        BrokerError(
                            ErrorCode.REQUEST_TIMED_OUT, f"topic {t.name!r} was not created in time"
                        )
                    )
                )
            resp.topics.append(result)
        return resp

    @unary
    async def AlterConfigs(
        self, request: broker_pb2.AlterConfigsRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.AlterConfigsResponse:
        forwarded = await self._on_controller("AlterConfigs", request)
        if forwarded is not None:
            return forwarded
        ctl = self.broker.controller
        both = sorted(set(request.set) & set(request.delete))
        if both:
            raise BrokerError(
                ErrorCode.INVALID_CONFIG,
                f"{', '.join(shown(k) for k in both)}: both set and deleted; choose one",
            )
        changes: dict[str, str | None] = {k: None for k in request.delete}
        changes.update(request.set)
        cmd = ctl.plan_alter_topic_configs(request.topic, changes)
        info = ctl.state.topics[request.topic]
        configs = merge_configs(info.configs, changes)
        if not request.validate_only:
            try:
                await asyncio.wait_for(
                    ctl.replicate_and_wait(cmd), (request.timeout_ms or ADMIN_TIMEOUT_MS) / 1000
                )
            except TimeoutError:
                raise BrokerError(
                    ErrorCode.REQUEST_TIMED_OUT,
                    f"the config change of {request.topic!r} was not applied in time; it may "
                    "still be",
                ) from None
        config = parse_topic_config(configs, len(info.replicas[0]))
        return broker_pb2.AlterConfigsResponse(
            configs=_config_entries(config, configs, TopicConfig().to_dict())
        )

    async def _wait_for_leaders(self, name: str, timeout_s: float) -> None:
        """Wait (bounded) until every partition of a new topic has a leader, so a producer
        that creates then produces does not meet LEADER_NOT_AVAILABLE."""
        deadline = time.monotonic() + min(timeout_s, 10.0)
        while time.monotonic() < deadline:
            info = self.broker.controller.state.topics.get(name)
            if info is None:
                return
            views = [self.broker.partition_view(info, p) for p in range(info.partitions)]
            if all(v.state is not None and v.state.leader for v in views):
                return
            await asyncio.sleep(0.02)

    @unary
    async def DeleteTopics(
        self, request: broker_pb2.DeleteTopicsRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.DeleteTopicsResponse:
        validate.delete_topics(request)
        forwarded = await self._on_controller("DeleteTopics", request)
        if forwarded is not None:
            return forwarded
        ctl = self.broker.controller
        resp = broker_pb2.DeleteTopicsResponse()
        for name in request.names:
            result = broker_pb2.DeleteTopicResult(name=name)
            try:
                if name not in ctl.state.topics:
                    raise _missing_topic(name)
                await asyncio.wait_for(
                    ctl.replicate_and_wait(DeleteTopic(name=name)),
                    (request.timeout_ms or ADMIN_TIMEOUT_MS) / 1000,
                )
            except BrokerError as e:
                result.error.CopyFrom(_detail(e))
            except TimeoutError:
                result.error.CopyFrom(
                    _detail(
                        BrokerError(
                            ErrorCode.REQUEST_TIMED_OUT, f"deleting {shown(name)} timed out"
                        )
                    )
                )
            resp.topics.append(result)
        return resp

    # -- idempotent producers ------------------------------------------------------------------
    @unary
    async def InitProducerId(
        self, request: broker_pb2.InitProducerIdRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.InitProducerIdResponse:
        forwarded = await self._on_controller("InitProducerId", request)
        if forwarded is not None:
            return forwarded
        try:
            first = await asyncio.wait_for(
                self.broker.controller.replicate_and_wait(AllocateProducerIds(count=1)),
                ADMIN_TIMEOUT_MS / 1000,
            )
        except TimeoutError:
            raise BrokerError(
                ErrorCode.REQUEST_TIMED_OUT, "no producer id could be allocated in time; retry"
            ) from None
        return broker_pb2.InitProducerIdResponse(producer_id=int(first), producer_epoch=0)

    # -- lag -----------------------------------------------------------------------------------
    @unary
    async def PartitionLag(
        self, request: broker_pb2.PartitionLagRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.PartitionLagResponse:
        validate.partition_lag(request)
        part = self.broker.leader_partition(request.topic, request.partition)
        lag_records, first_ts = part.lag(request.offset)
        now_ms = int(time.time() * 1000)
        return broker_pb2.PartitionLagResponse(
            high_watermark=part.high_watermark,
            log_start_offset=part.log_start_offset,
            lag_records=lag_records,
            first_unconsumed_timestamp_ms=first_ts,
            lag_ms=max(0, now_ms - first_ts) if first_ts >= 0 else 0,
            now_ms=now_ms,
            leader_epoch=part.state().leader_epoch,
        )

    # -- one replica ---------------------------------------------------------------------------
    @unary
    async def DescribeReplica(
        self, request: broker_pb2.DescribeReplicaRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.DescribeReplicaResponse:
        info = self.broker.topic(request.topic)
        if not 0 <= request.partition < info.partitions:
            raise BrokerError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                f"topic {request.topic!r} has partitions 0..{info.partitions - 1}, "
                f"not {request.partition}",
            )
        if request.offset < 0:
            raise BrokerError(ErrorCode.OFFSET_OUT_OF_RANGE, f"offset {request.offset} is negative")
        part = self.broker.partitions.get((request.topic, request.partition))
        if part is None:
            replicas = info.replicas[request.partition]
            raise BrokerError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                f"node {self.broker.node_id} holds no replica of "
                f"{request.topic}-{request.partition} (its replicas: {replicas})",
            )
        v = part.describe_offset(request.offset)
        node = part.group.node
        return broker_pb2.DescribeReplicaResponse(
            node_id=self.broker.node_id,
            leader_id=node.leader,
            term=node.term,
            is_leader=part.is_leader,
            log_start_offset=v.log_start_offset,
            high_watermark=v.high_watermark,
            log_end_offset=v.log_end_offset,
            commit_index=v.commit_index,
            applied_index=v.applied_index,
            persisted_index=v.persisted_index,
            last_index=v.last_index,
            found=v.found,
            batch_base_offset=v.batch_base_offset,
            batch_record_count=v.batch_record_count,
            raft_index=v.raft_index,
            raft_term=v.raft_term,
            committed=v.committed,
            persisted=v.persisted,
        )

    # -- consumer groups -----------------------------------------------------------------------
    def _coordinator(self) -> GroupCoordinator:
        coord = self.broker.groups
        coord.check_coordinator(self.broker.advertised_address)
        return coord

    @unary
    async def FindCoordinator(
        self, request: broker_pb2.FindCoordinatorRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.FindCoordinatorResponse:
        validate.find_coordinator(request)
        leader = self.broker.groups.leader
        address = self.broker.advertised_address(leader) if leader else ""
        if not address:
            raise BrokerError(
                ErrorCode.COORDINATOR_NOT_AVAILABLE,
                "the group coordinator is being elected; retry shortly",
            )
        host, port = parse_address(address)
        return broker_pb2.FindCoordinatorResponse(node_id=leader, host=host, port=port)

    @unary
    async def GroupHeartbeat(
        self, request: broker_pb2.GroupHeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.GroupHeartbeatResponse:
        validate.group_heartbeat(request)
        coord = self._coordinator()
        try:
            answer = await asyncio.wait_for(
                coord.heartbeat(
                    request.group_id,
                    request.member_id,
                    request.generation,
                    request.client_id,
                    list(request.topics),
                    _tps(request.owned),
                    request.session_timeout_ms,
                ),
                ADMIN_TIMEOUT_MS / 1000,
            )
        except TimeoutError:
            raise BrokerError(
                ErrorCode.REQUEST_TIMED_OUT, "joining the group was not logged in time; retry"
            ) from None
        return broker_pb2.GroupHeartbeatResponse(
            member_id=answer.member_id,
            generation=answer.generation,
            assignment=_tps_pb(answer.assignment),
            heartbeat_interval_ms=answer.heartbeat_interval_ms,
            pending_partitions=answer.pending,
        )

    @unary
    async def LeaveGroup(
        self, request: broker_pb2.LeaveGroupRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.LeaveGroupResponse:
        validate.leave_group(request)
        coord = self._coordinator()
        coord.leave(request.group_id, request.member_id)
        return broker_pb2.LeaveGroupResponse()

    @unary
    async def CommitOffsets(
        self, request: broker_pb2.CommitOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.CommitOffsetsResponse:
        validate.commit_offsets(request)
        coord = self._coordinator()
        offsets = [(o.topic, o.partition, o.offset, o.metadata) for o in request.offsets]
        if not offsets:
            raise BrokerError(ErrorCode.INVALID_REQUEST, "a commit needs at least one offset")
        tps = {(t, p) for t, p, _, _ in offsets}
        if len(tps) != len(offsets):
            raise BrokerError(ErrorCode.INVALID_REQUEST, "a partition appears twice in the commit")
        coord.check_commit(request.group_id, request.member_id, request.generation, tps)
        for topic, partition, offset, _ in offsets:
            info = self.broker.topic(topic)
            if not 0 <= partition < info.partitions:
                raise BrokerError(
                    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                    f"topic {topic!r} has partitions 0..{info.partitions - 1}, not {partition}",
                )
            if offset < 0:
                raise BrokerError(
                    ErrorCode.OFFSET_OUT_OF_RANGE,
                    f"cannot commit offset {offset} for {topic}-{partition}: offsets are >= 0",
                )
            hw = await self._high_watermark(info, partition, offset)
            if offset > hw:
                raise BrokerError(
                    ErrorCode.OFFSET_OUT_OF_RANGE,
                    f"cannot commit offset {offset} for {topic}-{partition}: it is past the "
                    f"high watermark {hw} (no record there has been written); nothing committed",
                )
        # Checked again with nothing awaited in between, so no rebalance slips in.
        coord = self._coordinator()
        coord.check_commit(request.group_id, request.member_id, request.generation, tps)
        try:
            await asyncio.wait_for(coord.commit(request.group_id, offsets), ADMIN_TIMEOUT_MS / 1000)
        except TimeoutError:
            raise BrokerError(
                ErrorCode.REQUEST_TIMED_OUT,
                "the commit was not replicated in time; it may still be applied",
            ) from None
        return broker_pb2.CommitOffsetsResponse()

    async def _high_watermark(self, info: TopicInfo, partition: int, wanted: int) -> int:
        """The partition's high watermark, asking its leader when what this node knows (its own
        replica, gossip) is below `wanted` (it may just lag)."""
        part = self.broker.partitions.get((info.name, partition))
        if part is not None and part.is_leader:
            return part.high_watermark
        view = self.broker.partition_view(info, partition)
        known = view.state.high_watermark if view.state is not None else -1
        if part is not None:
            known = max(known, part.high_watermark)
        if wanted <= known:
            return known
        leader = view.state.leader if view.state is not None else 0
        stub = self._forward(leader) if leader and leader != self.broker.node_id else None
        if stub is not None:
            try:
                resp = await stub.ListOffsets(
                    broker_pb2.ListOffsetsRequest(
                        topic=info.name,
                        partition=partition,
                        spec=broker_pb2.ListOffsetsRequest.LATEST,
                    ),
                    timeout=5,
                )
                return int(resp.offset)
            except grpc.aio.AioRpcError:
                pass
        raise BrokerError(
            ErrorCode.LEADER_NOT_AVAILABLE,
            f"cannot check offset {wanted} against the high watermark of {info.name}-{partition} "
            "now (its leader is not reachable); retry",
        )

    @unary
    async def FetchOffsets(
        self, request: broker_pb2.FetchOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.FetchOffsetsResponse:
        validate.fetch_offsets(request)
        coord = self._coordinator()
        committed = coord.committed(request.group_id)
        wanted = sorted(_tps(request.partitions)) if request.partitions else sorted(committed)
        resp = broker_pb2.FetchOffsetsResponse()
        for tp in wanted:
            entry = committed.get(tp)
            resp.offsets.append(_committed_pb(tp, entry))
        return resp

    @unary
    async def ListGroups(
        self, request: broker_pb2.ListGroupsRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.ListGroupsResponse:
        coord = self._coordinator()
        coord.expire_members()
        resp = broker_pb2.ListGroupsResponse()
        for gid in coord.group_ids():
            live = coord.live.get(gid)
            resp.groups.append(
                broker_pb2.GroupOverview(
                    group_id=gid,
                    state=live.state() if live is not None else EMPTY,
                    members=len(live.members) if live is not None else 0,
                )
            )
        return resp

    @unary
    async def DescribeGroup(
        self, request: broker_pb2.DescribeGroupRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.DescribeGroupResponse:
        validate.describe_group(request)
        coord = self._coordinator()
        coord.expire_members()
        if not coord.exists(request.group_id):
            raise BrokerError(
                ErrorCode.GROUP_ID_NOT_FOUND,
                f"group {request.group_id!r} does not exist (no member has joined it and it has "
                "no committed offsets)",
            )
        live = coord.live.get(request.group_id)
        resp = broker_pb2.DescribeGroupResponse(
            group_id=request.group_id,
            state=live.state() if live is not None else EMPTY,
            generation=live.generation if live is not None else 0,
            coordinator_id=self.broker.node_id,
        )
        for m in sorted(live.members.values() if live else [], key=lambda m: m.member_id):
            resp.members.append(
                broker_pb2.GroupMemberDescription(
                    member_id=m.member_id,
                    client_id=m.client_id,
                    topics=sorted(m.topics),
                    assignment=_tps_pb(m.holds()),
                    target=_tps_pb(m.target),
                    session_timeout_ms=m.session_timeout_ms,
                )
            )
        for tp, entry in sorted(coord.committed(request.group_id).items()):
            resp.offsets.append(_committed_pb(tp, entry))
        return resp

    # -- debug ---------------------------------------------------------------------------------
    @unary
    async def ReplicaState(
        self, request: broker_pb2.ReplicaStateRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.ReplicaStateResponse:
        """This node's replicas, summed up (node/replica_state.py). Read-only, synchronous
        (one consistent view: nothing is applied while it runs)."""
        from node import replica_state as rs

        b = self.broker
        resp = broker_pb2.ReplicaStateResponse(node_id=b.node_id)
        for (topic, index), part in sorted(b.partitions.items()):
            wanted = request.ranges.get(f"{topic}/{index}")
            lo, hi = (wanted.from_offset, wanted.to_offset) if wanted else (0, 1 << 62)
            if lo < 0 or hi < lo:
                raise BrokerError(
                    ErrorCode.INVALID_REQUEST, f"bad range [{lo}, {hi}) for {topic}/{index}"
                )
            got_from, got_to, digest = rs.partition_digest(part, lo, hi)
            resp.partitions.append(
                broker_pb2.PartitionReplicaState(
                    topic=topic,
                    partition=index,
                    group_id=part.group_id,
                    log_start_offset=part.log_start_offset,
                    high_watermark=part.high_watermark,
                    digest_from=got_from,
                    digest_to=got_to,
                    digest=digest,
                    applied_index=part.group.node.status().applied,
                )
            )
        for target, fsm, canonical in (
            (resp.controller, b.controller, rs.controller_canonical),
            (resp.groups, b.groups, rs.groups_canonical),
        ):
            target.group_id = fsm.group.id
            target.applied_index = fsm.group.node.status().applied
            target.digest = rs.canonical_digest(canonical(fsm.state.to_json()))
        return resp


def _missing_topic(name: str) -> BrokerError:
    """The error for a topic that is not there: INVALID_TOPIC if it could never be."""
    try:
        validate_topic_name(name)
    except BrokerError as e:
        return e
    return BrokerError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist")


def _config_entries(
    config: TopicConfig, overrides: dict[str, str], defaults: dict[str, str]
) -> list[broker_pb2.ConfigEntry]:
    """Every setting in force, each with where it comes from (set on the topic, or default)."""
    effective = config.to_dict()
    out = []
    for key in sorted(effective):
        own = key in overrides
        out.append(
            broker_pb2.ConfigEntry(
                name=key,
                value=effective[key] if own else defaults[key],
                source=broker_pb2.ConfigEntry.TOPIC if own else broker_pb2.ConfigEntry.DEFAULT,
            )
        )
    return out


def _tps(items: Iterable[broker_pb2.TopicPartitions]) -> set[tuple[str, int]]:
    return {(tp.topic, p) for tp in items for p in tp.partitions}


def _tps_pb(tps: Iterable[tuple[str, int]]) -> list[broker_pb2.TopicPartitions]:
    by_topic: dict[str, list[int]] = {}
    for topic, p in sorted(tps):
        by_topic.setdefault(topic, []).append(p)
    return [broker_pb2.TopicPartitions(topic=t, partitions=ps) for t, ps in by_topic.items()]


def _committed_pb(tp: tuple[str, int], entry: OffsetEntry | None) -> broker_pb2.CommittedOffset:
    if entry is None:
        return broker_pb2.CommittedOffset(topic=tp[0], partition=tp[1], offset=-1)
    return broker_pb2.CommittedOffset(
        topic=tp[0],
        partition=tp[1],
        offset=entry.offset,
        metadata=entry.metadata,
        commit_timestamp_ms=entry.timestamp_ms,
    )
