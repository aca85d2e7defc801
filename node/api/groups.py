"""Consumer groups over gRPC: FindCoordinator, GroupHeartbeat, LeaveGroup, CommitOffsets,
FetchOffsets, ListGroups, DescribeGroup, DeleteGroups (docs/consumer-groups.md).

All but FindCoordinator run on the consumer-group coordinator (the `__groups` Raft leader; any
other node answers NOT_COORDINATOR with the coordinator's address). Membership, assignment and
commit fencing are the coordinator's (node/groups.py); what is checked here is the request's
shape and, for a commit, that each offset exists in its partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import grpc

from liferaft_proto.v1 import broker_pb2
from node import acl, validate
from node.acl import CLUSTER, Operation
from node.api.context import ADMIN_TIMEOUT_MS, Api, detail
from node.config import parse_address
from node.controller import TopicInfo
from node.errors import BrokerError, ErrorCode
from node.groups import EMPTY, GroupCoordinator, OffsetEntry, validate_group_id
from node.limits import shown

TP = tuple[str, int]


def coordinator(api: Api) -> GroupCoordinator:
    """The consumer-group coordinator, if this node is it (else NOT_COORDINATOR, with where)."""
    coord = api.broker.groups
    coord.check_coordinator(api.broker.advertised_address)
    return coord


def tps(items: Iterable[broker_pb2.TopicPartitions]) -> set[TP]:
    return {(tp.topic, p) for tp in items for p in tp.partitions}


def tps_pb(items: Iterable[TP]) -> list[broker_pb2.TopicPartitions]:
    by_topic: dict[str, list[int]] = {}
    for topic, p in sorted(items):
        by_topic.setdefault(topic, []).append(p)
    return [broker_pb2.TopicPartitions(topic=t, partitions=ps) for t, ps in by_topic.items()]


def committed_pb(tp: TP, entry: OffsetEntry | None) -> broker_pb2.CommittedOffset:
    if entry is None:
        return broker_pb2.CommittedOffset(topic=tp[0], partition=tp[1], offset=-1)
    return broker_pb2.CommittedOffset(
        topic=tp[0],
        partition=tp[1],
        offset=entry.offset,
        metadata=entry.metadata,
        commit_timestamp_ms=entry.timestamp_ms,
    )


async def find_coordinator(
    api: Api, request: broker_pb2.FindCoordinatorRequest
) -> broker_pb2.FindCoordinatorResponse:
    validate.find_coordinator(request)
    api.broker.authorizer.check(Operation.DESCRIBE, acl.group(request.group_id))
    leader = api.broker.groups.leader
    address = api.broker.advertised_address(leader) if leader else ""
    if not address:
        raise BrokerError(
            ErrorCode.COORDINATOR_NOT_AVAILABLE,
            "the group coordinator is being elected; retry shortly",
        )
    host, port = parse_address(address)
    return broker_pb2.FindCoordinatorResponse(node_id=leader, host=host, port=port)


async def group_heartbeat(
    api: Api, request: broker_pb2.GroupHeartbeatRequest
) -> broker_pb2.GroupHeartbeatResponse:
    validate.group_heartbeat(request)
    api.broker.authorizer.check(Operation.READ, acl.group(request.group_id))
    coord = coordinator(api)
    try:
        answer = await asyncio.wait_for(
            coord.heartbeat(
                request.group_id,
                request.member_id,
                request.generation,
                request.client_id,
                list(request.topics),
                tps(request.owned),
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
        assignment=tps_pb(answer.assignment),
        heartbeat_interval_ms=answer.heartbeat_interval_ms,
        pending_partitions=answer.pending,
    )


async def leave_group(
    api: Api, request: broker_pb2.LeaveGroupRequest
) -> broker_pb2.LeaveGroupResponse:
    validate.leave_group(request)
    api.broker.authorizer.check(Operation.READ, acl.group(request.group_id))
    coordinator(api).leave(request.group_id, request.member_id)
    return broker_pb2.LeaveGroupResponse()


async def commit_offsets(
    api: Api, request: broker_pb2.CommitOffsetsRequest
) -> broker_pb2.CommitOffsetsResponse:
    validate.commit_offsets(request)
    api.broker.authorizer.check(Operation.READ, acl.group(request.group_id))
    for name in sorted({o.topic for o in request.offsets}):
        api.broker.authorizer.check(Operation.READ, acl.topic(name))
    coord = coordinator(api)
    offsets = [(o.topic, o.partition, o.offset, o.metadata) for o in request.offsets]
    if not offsets:
        raise BrokerError(ErrorCode.INVALID_REQUEST, "a commit needs at least one offset")
    wanted = {(t, p) for t, p, _, _ in offsets}
    if len(wanted) != len(offsets):
        raise BrokerError(ErrorCode.INVALID_REQUEST, "a partition appears twice in the commit")
    coord.check_commit(request.group_id, request.member_id, request.generation, wanted)
    for topic, partition, offset, _ in offsets:
        info = api.broker.topic(topic)
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
        hw = await _high_watermark(api, info, partition, offset)
        if offset > hw:
            raise BrokerError(
                ErrorCode.OFFSET_OUT_OF_RANGE,
                f"cannot commit offset {offset} for {topic}-{partition}: it is past the "
                f"high watermark {hw} (no record there has been written); nothing committed",
            )
    # Checked again with nothing awaited in between, so no rebalance slips in.
    coord = coordinator(api)
    coord.check_commit(request.group_id, request.member_id, request.generation, wanted)
    try:
        await asyncio.wait_for(coord.commit(request.group_id, offsets), ADMIN_TIMEOUT_MS / 1000)
    except TimeoutError:
        raise BrokerError(
            ErrorCode.REQUEST_TIMED_OUT,
            "the commit was not replicated in time; it may still be applied",
        ) from None
    return broker_pb2.CommitOffsetsResponse()


async def _high_watermark(api: Api, info: TopicInfo, partition: int, wanted: int) -> int:
    """The partition's high watermark, asking its leader when what this node knows (its own
    replica, gossip) is below `wanted` (it may just lag)."""
    broker = api.broker
    part = broker.partitions.get((info.name, partition))
    if part is not None and part.is_leader:
        return part.high_watermark
    view = broker.partition_view(info, partition)
    known = view.state.high_watermark if view.state is not None else -1
    if part is not None:
        known = max(known, part.high_watermark)
    if wanted <= known:
        return known
    leader = view.state.leader if view.state is not None else 0
    stub = api.forward(leader) if leader and leader != broker.node_id else None
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


async def fetch_offsets(
    api: Api, request: broker_pb2.FetchOffsetsRequest
) -> broker_pb2.FetchOffsetsResponse:
    validate.fetch_offsets(request)
    authorizer = api.broker.authorizer
    authorizer.check(Operation.DESCRIBE, acl.group(request.group_id))
    for tp in request.partitions:
        authorizer.check(Operation.DESCRIBE, acl.topic(tp.topic))
    committed = coordinator(api).committed(request.group_id)
    wanted = sorted(tps(request.partitions)) if request.partitions else sorted(committed)
    wanted = [tp for tp in wanted if authorizer.permits(Operation.DESCRIBE, acl.topic(tp[0]))]
    resp = broker_pb2.FetchOffsetsResponse()
    for tp in wanted:
        resp.offsets.append(committed_pb(tp, committed.get(tp)))
    return resp


async def list_groups(
    api: Api, request: broker_pb2.ListGroupsRequest
) -> broker_pb2.ListGroupsResponse:
    coord = coordinator(api)
    coord.expire_members()
    resp = broker_pb2.ListGroupsResponse()
    everything = api.broker.authorizer.permits(Operation.DESCRIBE, CLUSTER)
    for gid in coord.group_ids():
        if not everything and not api.broker.authorizer.permits(Operation.DESCRIBE, acl.group(gid)):
            continue  # Kafka's ListGroups: the groups the caller may describe
        live = coord.live.get(gid)
        resp.groups.append(
            broker_pb2.GroupOverview(
                group_id=gid,
                state=live.state() if live is not None else EMPTY,
                members=len(live.members) if live is not None else 0,
            )
        )
    return resp


async def describe_group(
    api: Api, request: broker_pb2.DescribeGroupRequest
) -> broker_pb2.DescribeGroupResponse:
    validate.describe_group(request)
    api.broker.authorizer.check(Operation.DESCRIBE, acl.group(request.group_id))
    coord = coordinator(api)
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
        coordinator_id=api.broker.node_id,
    )
    for m in sorted(live.members.values() if live else [], key=lambda m: m.member_id):
        resp.members.append(
            broker_pb2.GroupMemberDescription(
                member_id=m.member_id,
                client_id=m.client_id,
                topics=sorted(m.topics),
                assignment=tps_pb(m.holds()),
                target=tps_pb(m.target),
                session_timeout_ms=m.session_timeout_ms,
            )
        )
    for tp, entry in sorted(coord.committed(request.group_id).items()):
        resp.offsets.append(committed_pb(tp, entry))
    return resp


async def delete_groups(
    api: Api, request: broker_pb2.DeleteGroupsRequest
) -> broker_pb2.DeleteGroupsResponse:
    validate.delete_groups(request)
    for gid in request.group_ids:
        api.broker.authorizer.check(Operation.DELETE, acl.group(gid))
    coordinator(api)  # not the coordinator: the whole request goes elsewhere
    resp = broker_pb2.DeleteGroupsResponse()
    for gid in request.group_ids:
        result = broker_pb2.DeleteGroupResult(group_id=gid)
        try:
            await _delete_group(api, gid)
        except BrokerError as e:
            result.error.CopyFrom(detail(e))
        resp.groups.append(result)
    return resp


async def _delete_group(api: Api, gid: str) -> None:
    """Kafka's rule: only a group with no live member (of either protocol) may go; checked on
    the coordinator again for each group, since an earlier delete awaited the log."""
    validate_group_id(gid)
    coord = coordinator(api)
    coord.expire_members()
    live = coord.live.get(gid)
    if (live is not None and live.members) or coord.foreign_members(gid):
        raise BrokerError(
            ErrorCode.NON_EMPTY_GROUP,
            f"group {shown(gid)} has live members; stop its consumers first (nothing deleted)",
        )
    if not coord.exists(gid):
        raise BrokerError(ErrorCode.GROUP_ID_NOT_FOUND, f"group {shown(gid)} does not exist")
    try:
        await asyncio.wait_for(coord.delete(gid), ADMIN_TIMEOUT_MS / 1000)
    except TimeoutError:
        raise BrokerError(
            ErrorCode.REQUEST_TIMED_OUT,
            f"deleting group {shown(gid)} was not replicated in time; it may still be applied",
        ) from None
