"""Metadata (key 3): brokers (each node's Kafka address), the controller, topics and partitions.

Served from this node's replica of the controller's state and what it knows of partition
leaders (its own replicas, and the leaders' gossip), like the gRPC Metadata. The leader epoch is
the partition's Raft term. Topics are never created by a Metadata request (Redpanda's default:
auto_create_topics_enabled=false): an unknown topic is UNKNOWN_TOPIC_OR_PARTITION. A node cut
off from the others names another replica for a partition it knows no leader of
(node/kafka/cut_off.py).
"""

from __future__ import annotations

import uuid
from typing import Any

from kio.schema.errors import ErrorCode as KafkaErrorCode

from node import acl
from node.acl import Operation
from node.controller import TopicInfo
from node.kafka.cut_off import leader_hint
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses

UNKNOWN_AUTHORIZED_OPERATIONS = -(2**31)
ZERO_UUID = uuid.UUID(int=0)


def _partitions(ctx: Ctx, r: Responses, info: TopicInfo) -> tuple[Any, ...]:
    out = []
    for p in range(info.partitions):
        view = ctx.broker.partition_view(info, p)
        st = view.state
        if st is None or not st.leader:
            hint = leader_hint(ctx.broker.node_id, view.replicas, ctx.broker.controller_leader())
            if hint is not None:
                # Cut off: send the client to another replica (node/kafka/cut_off.py).
                out.append(
                    r.make(
                        "MetadataResponsePartition",
                        error_code=KafkaErrorCode.not_leader_or_follower,
                        partition_index=p,
                        leader_id=hint,
                        leader_epoch=-1,
                        replica_nodes=view.replicas,
                        isr_nodes=(),
                        offline_replicas=(),
                    )
                )
                continue
            out.append(
                r.make(
                    "MetadataResponsePartition",
                    error_code=KafkaErrorCode.leader_not_available,
                    partition_index=p,
                    leader_id=-1,
                    leader_epoch=-1,
                    replica_nodes=view.replicas,
                    isr_nodes=(),
                    offline_replicas=(),
                )
            )
            continue
        out.append(
            r.make(
                "MetadataResponsePartition",
                error_code=NONE,
                partition_index=p,
                leader_id=st.leader,
                leader_epoch=st.leader_epoch,
                replica_nodes=view.replicas,
                # A follower that has not heard the leader's gossip yet knows no ISR: it says
                # the leader, which is always in it.
                isr_nodes=st.isr or (st.leader,),
                offline_replicas=(),
            )
        )
    return tuple(out)


def _topic(ctx: Ctx, r: Responses, info: TopicInfo) -> Any:
    return r.make(
        "MetadataResponseTopic",
        error_code=NONE,
        name=info.name,
        topic_id=ctx.topic_uuid(info.name, info.topic_id),
        is_internal=False,
        partitions=_partitions(ctx, r, info),
        topic_authorized_operations=UNKNOWN_AUTHORIZED_OPERATIONS,
    )


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    state = ctx.broker.controller.state
    brokers = []
    for b in sorted(state.brokers.values(), key=lambda b: b.node_id):
        address = ctx.kafka_address(b.node_id)
        if address is not None:
            brokers.append(
                r.make(
                    "MetadataResponseBroker",
                    node_id=b.node_id,
                    host=address[0],
                    port=address[1],
                    rack=None,
                )
            )
    wanted = request.topics
    may = ctx.broker.authorizer.permits
    if wanted is None or (version == 0 and not wanted):
        # Every topic: those the caller may not DESCRIBE are left out, as Kafka does.
        topics = [
            _topic(ctx, r, info)
            for _, info in sorted(state.topics.items())
            if may(Operation.DESCRIBE, acl.topic(info.name))
        ]
    else:
        by_id = {ctx.topic_uuid(t.name, t.topic_id): t for t in state.topics.values()}
        topics = []
        for t in wanted:
            name = getattr(t, "name", None)
            tid = getattr(t, "topic_id", None)
            info = state.topics.get(name) if name is not None else by_id.get(tid)  # type: ignore[arg-type]
            shown_name = info.name if info is not None else name
            if shown_name is not None and not may(Operation.DESCRIBE, acl.topic(shown_name)):
                topics.append(
                    r.make(
                        "MetadataResponseTopic",
                        error_code=KafkaErrorCode.topic_authorization_failed,
                        name=name,
                        topic_id=tid if tid is not None else ZERO_UUID,
                        is_internal=False,
                        partitions=(),
                    )
                )
                continue
            if info is not None:
                topics.append(_topic(ctx, r, info))
                continue
            topics.append(
                r.make(
                    "MetadataResponseTopic",
                    error_code=KafkaErrorCode.unknown_topic_or_partition
                    if name is not None
                    else KafkaErrorCode.unknown_topic_id,
                    name=name,
                    topic_id=tid if tid is not None else ZERO_UUID,
                    is_internal=False,
                    partitions=(),
                )
            )
    controller = ctx.broker.controller_leader()
    return r(
        throttle_time=NO_THROTTLE,
        brokers=tuple(brokers),
        cluster_id=ctx.broker.config.cluster_id,
        controller_id=controller if controller else -1,
        topics=tuple(topics),
        cluster_authorized_operations=UNKNOWN_AUTHORIZED_OPERATIONS,
    )


API = Api(key=3, name="Metadata", min_version=0, max_version=12, handle=handle)
