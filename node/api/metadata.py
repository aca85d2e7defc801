"""Metadata (brokers, topics, partition leaders and ISRs) and DescribeTopics (that, with each
topic's replication factor and configs), from this node's copy of the controller's state."""

from __future__ import annotations

from liferaft_proto.v1 import broker_pb2, errors_pb2
from node import validate
from node.acl import Operation, topic
from node.api.context import Api, detail
from node.broker import PartitionView
from node.controller import TopicInfo, validate_topic_name
from node.errors import BrokerError, ErrorCode
from node.topic_config import TopicConfig


def missing_topic(name: str) -> BrokerError:
    """The error for a topic that is not there: INVALID_TOPIC if it could never be."""
    try:
        validate_topic_name(name)
    except BrokerError as e:
        return e
    return BrokerError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist")


def partition_pb(view: PartitionView) -> broker_pb2.PartitionMetadata:
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


def topic_pb(api: Api, info: TopicInfo) -> broker_pb2.TopicMetadata:
    tm = broker_pb2.TopicMetadata(name=info.name)
    for p in range(info.partitions):
        tm.partitions.append(partition_pb(api.broker.partition_view(info, p)))
    return tm


def config_entries(
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


async def metadata(api: Api, request: broker_pb2.MetadataRequest) -> broker_pb2.MetadataResponse:
    validate.metadata(request)
    st = api.broker.controller.state
    resp = broker_pb2.MetadataResponse(
        controller_id=api.broker.controller_leader(),
        cluster_id=api.broker.config.cluster_id,
        founders=api.broker.founders,
    )
    # Every node runs the listeners this one does (the offsets are cluster-wide settings, as
    # kafka_port_offset is): a broker's stream listener is at its advertised port + the offset.
    stream_offset = api.broker.config.stream_port_offset
    for b in sorted(st.brokers.values(), key=lambda b: b.node_id):
        resp.brokers.append(
            broker_pb2.BrokerInfo(
                node_id=b.node_id,
                host=b.host,
                port=b.port,
                stream_port=b.port + stream_offset
                if stream_offset and b.port + stream_offset < 65536
                else 0,
            )
        )
    # Topics the caller may not DESCRIBE are left out of "every topic"; naming one is refused,
    # the whole call, so the refusal carries its message (a topic's entry has only a code).
    authorizer = api.broker.authorizer
    for name in request.topics:
        authorizer.check(Operation.DESCRIBE, topic(name))
    names = list(request.topics) or [
        n for n in sorted(st.topics) if authorizer.permits(Operation.DESCRIBE, topic(n))
    ]
    for name in names:
        info = st.topics.get(name)
        if info is None:
            resp.topics.append(
                broker_pb2.TopicMetadata(name=name, error_code=missing_topic(name).code)  # type: ignore[arg-type]
            )
        else:
            resp.topics.append(topic_pb(api, info))
    return resp


async def describe_topics(
    api: Api, request: broker_pb2.DescribeTopicsRequest
) -> broker_pb2.DescribeTopicsResponse:
    validate.topic_names(request.names)
    st = api.broker.controller.state
    resp = broker_pb2.DescribeTopicsResponse()
    defaults = TopicConfig().to_dict()
    authorizer = api.broker.authorizer
    for name in request.names:
        authorizer.check(Operation.DESCRIBE, topic(name))
    for name in list(request.names) or [
        n for n in sorted(st.topics) if authorizer.permits(Operation.DESCRIBE, topic(n))
    ]:
        info = st.topics.get(name)
        if info is None:
            resp.topics.append(
                broker_pb2.TopicDescription(name=name, error=detail(missing_topic(name)))
            )
            continue
        desc = broker_pb2.TopicDescription(name=name, replication_factor=len(info.replicas[0]))
        for p in range(info.partitions):
            desc.partitions.append(partition_pb(api.broker.partition_view(info, p)))
        if authorizer.permits(Operation.DESCRIBE_CONFIGS, topic(name)):
            desc.configs.extend(config_entries(info.config, info.configs, defaults))
        resp.topics.append(desc)
    return resp
