"""One node's own view of its replicas, for debugging: DescribeReplica (`liferaft trace`: where
an offset is in this replica's log) and ReplicaState (digests of every replica, for the chaos
checker to compare nodes; node/replica_state.py)."""

from __future__ import annotations

from liferaft_proto.v1 import broker_pb2
from node import replica_state as rs
from node.acl import CLUSTER, Operation
from node.api.context import Api
from node.errors import BrokerError, ErrorCode


async def describe_replica(
    api: Api, request: broker_pb2.DescribeReplicaRequest
) -> broker_pb2.DescribeReplicaResponse:
    broker = api.broker
    broker.authorizer.check(Operation.DESCRIBE, CLUSTER)
    info = broker.topic(request.topic)
    if not 0 <= request.partition < info.partitions:
        raise BrokerError(
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            f"topic {request.topic!r} has partitions 0..{info.partitions - 1}, "
            f"not {request.partition}",
        )
    if request.offset < 0:
        raise BrokerError(ErrorCode.OFFSET_OUT_OF_RANGE, f"offset {request.offset} is negative")
    part = broker.partitions.get((request.topic, request.partition))
    if part is None:
        replicas = info.replicas[request.partition]
        raise BrokerError(
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            f"node {broker.node_id} holds no replica of "
            f"{request.topic}-{request.partition} (its replicas: {replicas})",
        )
    v = part.describe_offset(request.offset)
    node = part.group.node
    return broker_pb2.DescribeReplicaResponse(
        node_id=broker.node_id,
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


async def replica_state(
    api: Api, request: broker_pb2.ReplicaStateRequest
) -> broker_pb2.ReplicaStateResponse:
    """This node's replicas, summed up. Read-only and synchronous (one consistent view:
    nothing is applied while it runs)."""
    b = api.broker
    b.authorizer.check(Operation.DESCRIBE, CLUSTER)
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
                applied_index=part.group.node.applied,
            )
        )
    for target, fsm, canonical in (
        (resp.controller, b.controller, rs.controller_canonical),
        (resp.groups, b.groups, rs.groups_canonical),
    ):
        target.group_id = fsm.raft_group.id
        target.applied_index = fsm.raft_group.node.applied
        target.digest = rs.canonical_digest(canonical(fsm.state.to_json()))
    return resp
