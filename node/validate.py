"""Every field of every Broker request checked against node/limits.py, before anything is done.

Each handler of node/api/ calls the function named after its request first thing, so a
request that is refused has changed nothing: no proposal, no write, no member, no waiter. The
checks here need no state (a topic that does not exist is found later, where the state is); what
they refuse gets the code a Kafka user expects (INVALID_TOPIC, INVALID_GROUP_ID, INVALID_REQUEST,
OFFSET_OUT_OF_RANGE...), and every name they echo is cut short (limits.shown).
"""

from __future__ import annotations

from collections.abc import Iterable

from liferaft_proto.v1 import broker_pb2
from node.controller import validate_topic_name
from node.errors import BrokerError, ErrorCode
from node.groups import validate_group_id
from node.limits import (
    MAX_CLIENT_ID_CHARS,
    MAX_COMMIT_OFFSETS,
    MAX_GENERATION,
    MAX_GROUPS_PER_REQUEST,
    MAX_MEMBER_ID_CHARS,
    MAX_OFFSET_METADATA_BYTES,
    MAX_OWNED_PARTITIONS,
    MAX_SUBSCRIBED_TOPICS,
    MAX_TIMEOUT_MS,
    MAX_TOPIC_CONFIG_CHARS,
    MAX_TOPIC_CONFIGS,
    MAX_TOPICS_PER_REQUEST,
    check_count,
    check_offset,
    check_partition,
    check_text,
    check_timeout_ms,
    shown,
)

__all__ = [
    "commit_offsets",
    "create_partitions",
    "create_topics",
    "delete_groups",
    "delete_topics",
    "describe_group",
    "fetch",
    "fetch_offsets",
    "find_coordinator",
    "group_heartbeat",
    "leave_group",
    "list_offsets",
    "metadata",
    "new_topic",
    "partition_lag",
    "produce",
    "topic_names",
]


def _topic_partition(topic: str, partition: int) -> None:
    validate_topic_name(topic)
    check_partition(partition, topic)


def produce(r: broker_pb2.ProduceRequest) -> None:
    _topic_partition(r.topic, r.partition)
    acks = r.acks if r.HasField("acks") else -1
    if acks not in (0, 1, -1):
        raise BrokerError(
            ErrorCode.INVALID_REQUIRED_ACKS, f"acks must be 0, 1 or -1 (all), got {acks}"
        )
    check_timeout_ms(r.timeout_ms)
    if not r.records:
        raise BrokerError(ErrorCode.INVALID_REQUEST, "a Produce request needs one record batch")


def fetch(r: broker_pb2.FetchRequest) -> None:
    _topic_partition(r.topic, r.partition)
    if r.max_bytes < 0 or r.min_bytes < 0 or r.max_wait_ms < 0:
        raise BrokerError(
            ErrorCode.INVALID_FETCH_SIZE, "max_bytes, min_bytes and max_wait_ms must be >= 0"
        )
    if r.max_wait_ms > MAX_TIMEOUT_MS:
        raise BrokerError(
            ErrorCode.INVALID_REQUEST, f"max_wait_ms {r.max_wait_ms} is over {MAX_TIMEOUT_MS}"
        )
    check_offset(r.offset)


def topic_names(names: Iterable[str]) -> None:
    """A list of topics to look at: bounded in number (each name is judged per topic)."""
    check_count(len(list(names)), "topics", MAX_TOPICS_PER_REQUEST)


def metadata(r: broker_pb2.MetadataRequest) -> None:
    topic_names(r.topics)


def new_topic(t: broker_pb2.NewTopic) -> None:
    """One topic of a CreateTopics request (its error is that topic's)."""
    validate_topic_name(t.name)
    if len(t.configs) > MAX_TOPIC_CONFIGS:
        raise BrokerError(
            ErrorCode.INVALID_CONFIG,
            f"{len(t.configs)} configs for topic {t.name!r}; at most {MAX_TOPIC_CONFIGS}",
        )
    for key, value in t.configs.items():
        if len(key) > MAX_TOPIC_CONFIG_CHARS or len(value) > MAX_TOPIC_CONFIG_CHARS:
            raise BrokerError(
                ErrorCode.INVALID_CONFIG,
                f"topic config {shown(key)}={shown(value)} is longer than "
                f"{MAX_TOPIC_CONFIG_CHARS} characters",
            )


def create_topics(r: broker_pb2.CreateTopicsRequest) -> None:
    check_count(len(r.topics), "topics", MAX_TOPICS_PER_REQUEST)
    check_timeout_ms(r.timeout_ms)


def create_partitions(r: broker_pb2.CreatePartitionsRequest) -> None:
    validate_topic_name(r.topic)
    if r.count < 1:
        raise BrokerError(
            ErrorCode.INVALID_PARTITIONS,
            f"the new partition count must be >= 1 (the total, not the number to add), "
            f"not {r.count}",
        )
    check_timeout_ms(r.timeout_ms)


def delete_topics(r: broker_pb2.DeleteTopicsRequest) -> None:
    topic_names(r.names)
    check_timeout_ms(r.timeout_ms)


def list_offsets(r: broker_pb2.ListOffsetsRequest) -> None:
    _topic_partition(r.topic, r.partition)
    if r.spec == broker_pb2.ListOffsetsRequest.BY_TIMESTAMP and r.timestamp_ms < 0:
        raise BrokerError(
            ErrorCode.INVALID_REQUEST,
            f"timestamp_ms {r.timestamp_ms} is negative: use spec EARLIEST or LATEST",
        )


def delete_records(r: broker_pb2.DeleteRecordsRequest) -> None:
    _topic_partition(r.topic, r.partition)
    check_timeout_ms(r.timeout_ms)
    # The offset is the partition's to judge (OFFSET_OUT_OF_RANGE, as Kafka answers it).


def partition_lag(r: broker_pb2.PartitionLagRequest) -> None:
    _topic_partition(r.topic, r.partition)
    check_offset(r.offset)


def find_coordinator(r: broker_pb2.FindCoordinatorRequest) -> None:
    validate_group_id(r.group_id)


def _member_id(member_id: str, *, required: bool) -> None:
    check_text(
        member_id,
        "member id",
        MAX_MEMBER_ID_CHARS,
        code=ErrorCode.UNKNOWN_MEMBER_ID,
        allow_empty=not required,
    )


def _generation(generation: int, *, allow_none: bool) -> None:
    lowest = -1 if allow_none else 0
    if not lowest <= generation <= MAX_GENERATION:
        raise BrokerError(
            ErrorCode.ILLEGAL_GENERATION,
            f"generation {generation} is outside {lowest}..{MAX_GENERATION}",
        )


def _topic_partitions(items: Iterable[broker_pb2.TopicPartitions], what: str) -> None:
    n = 0
    for tp in items:
        validate_topic_name(tp.topic)
        n += len(tp.partitions)
        check_count(n, what, MAX_OWNED_PARTITIONS)
        for p in tp.partitions:
            check_partition(p, tp.topic)


def group_heartbeat(r: broker_pb2.GroupHeartbeatRequest) -> None:
    """What a join stores in the replicated `__groups` log (client id, subscription) is
    bounded here, before the coordinator sees it."""
    validate_group_id(r.group_id)
    _member_id(r.member_id, required=False)
    _generation(r.generation, allow_none=False)
    check_text(r.client_id, "client id", MAX_CLIENT_ID_CHARS)
    check_count(len(r.topics), "subscribed topics", MAX_SUBSCRIBED_TOPICS)
    for t in r.topics:
        validate_topic_name(t)
    _topic_partitions(r.owned, "owned partitions")


def leave_group(r: broker_pb2.LeaveGroupRequest) -> None:
    validate_group_id(r.group_id)
    _member_id(r.member_id, required=True)


def commit_offsets(r: broker_pb2.CommitOffsetsRequest) -> None:
    validate_group_id(r.group_id)
    _member_id(r.member_id, required=False)
    _generation(r.generation, allow_none=True)
    check_count(len(r.offsets), "offsets", MAX_COMMIT_OFFSETS)
    for o in r.offsets:
        _topic_partition(o.topic, o.partition)
        if o.offset < 0:
            raise BrokerError(
                ErrorCode.OFFSET_OUT_OF_RANGE,
                f"cannot commit offset {o.offset} for {o.topic}-{o.partition}: offsets are >= 0",
            )
        size = len(o.metadata.encode())
        if size > MAX_OFFSET_METADATA_BYTES:
            raise BrokerError(
                ErrorCode.OFFSET_METADATA_TOO_LARGE,
                f"metadata for {o.topic}-{o.partition} is {size} bytes; the limit is "
                f"{MAX_OFFSET_METADATA_BYTES}",
            )


def fetch_offsets(r: broker_pb2.FetchOffsetsRequest) -> None:
    validate_group_id(r.group_id)
    _topic_partitions(r.partitions, "partitions")


def describe_group(r: broker_pb2.DescribeGroupRequest) -> None:
    validate_group_id(r.group_id)


def delete_groups(r: broker_pb2.DeleteGroupsRequest) -> None:
    check_count(len(r.group_ids), "group ids", MAX_GROUPS_PER_REQUEST)
