"""ListOffsets: "earliest", "latest" or a timestamp, turned into an offset by the leader.

Shared by the admin client (list_offsets) and the consumer (seek_to_beginning/end, resets).
"""

from __future__ import annotations

from typing import Literal

from client.cluster import Cluster
from client.types import OffsetAndTimestamp, TopicPartition
from liferaft_proto.v1 import broker_pb2

__all__ = ["OffsetSpec", "list_offset", "list_offsets_request"]

OffsetSpec = Literal["earliest", "latest"] | int
"""What to look up: the log start, the high watermark, or a timestamp in ms."""


def list_offsets_request(tp: TopicPartition, spec: OffsetSpec) -> broker_pb2.ListOffsetsRequest:
    req = broker_pb2.ListOffsetsRequest(topic=tp.topic, partition=tp.partition)
    if spec == "earliest":
        req.spec = broker_pb2.ListOffsetsRequest.EARLIEST
    elif spec == "latest":
        req.spec = broker_pb2.ListOffsetsRequest.LATEST
    elif isinstance(spec, int) and not isinstance(spec, bool):
        req.spec = broker_pb2.ListOffsetsRequest.BY_TIMESTAMP
        req.timestamp_ms = spec
    else:
        raise ValueError(
            f"offset spec must be 'earliest', 'latest' or a timestamp in ms, not {spec!r}"
        )
    return req


async def list_offset(cluster: Cluster, tp: TopicPartition, spec: OffsetSpec) -> OffsetAndTimestamp:
    """One ListOffsets at the partition's leader (shared with the consumer's offset resets)."""
    response = await cluster.call_leader(
        tp.topic, tp.partition, "ListOffsets", list_offsets_request(tp, spec)
    )
    return OffsetAndTimestamp(
        offset=response.offset,
        timestamp_ms=response.timestamp_ms,
        leader_epoch=response.leader_epoch,
    )
