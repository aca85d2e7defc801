"""The values the client hands back: frozen, slotted, keyword-only, like h11's events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "ConsumerRecord",
    "Header",
    "Lag",
    "OffsetAndTimestamp",
    "RecordMetadata",
    "TopicPartition",
]

Header = tuple[str, bytes | None]


class TopicPartition(NamedTuple):
    """A partition of a topic. A tuple, so `("orders", 0)` works wherever one is expected."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}-{self.partition}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordMetadata:
    """Where a record (or the first record of a batch) landed.

    offset is -1 for acks=0: the producer did not wait to learn it. timestamp_ms is the
    record's timestamp: the producer's, or the leader's when the topic uses LogAppendTime.
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    log_start_offset: int = -1
    record_count: int = 1

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()
    timestamp_type: int = 0
    """0: CreateTime (the producer's clock), 1: LogAppendTime (the leader's)."""

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True, kw_only=True)
class OffsetAndTimestamp:
    """A ListOffsets answer. offset -1: no record at or after the timestamp asked for."""

    offset: int
    timestamp_ms: int = -1
    leader_epoch: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Lag:
    """How far a reader at `offset` is behind a partition's high watermark, as its leader
    computed it from the replicated log (so it does not change with the leader)."""

    offset: int
    high_watermark: int
    records: int
    """Records from `offset` (or the log start, if later) to the high watermark."""
    ms: int
    """The leader's clock minus the timestamp of the first of those records; 0 when caught up."""
    first_unconsumed_timestamp_ms: int = -1
    leader_epoch: int = 0

    @property
    def seconds(self) -> float:
        return self.ms / 1000
