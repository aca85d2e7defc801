"""The values the client hands back: frozen, slotted, keyword-only, like h11's events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, NamedTuple

from typing_extensions import TypeVar

__all__ = [
    "ConsumerRecord",
    "Header",
    "Lag",
    "OffsetAndTimestamp",
    "RecordMetadata",
    "TopicPartition",
]

Header = tuple[str, bytes | None]
KT = TypeVar("KT", default=bytes | None)
VT = TypeVar("VT", default=bytes | None)
"""A record's key and value types: bytes (or None) unless the consumer deserializes them."""


class TopicPartition(NamedTuple):
    """A partition of a topic. A tuple, so `("orders", 0)` works wherever one is expected."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}-{self.partition}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordMetadata:
    """Where a record (or the first record of a batch) landed: aiokafka's RecordMetadata, with
    liferaft's names kept (timestamp_ms, record_count).

    offset is -1 for acks=0: the producer did not wait to learn it. timestamp_ms is the
    record's timestamp: the producer's, or the leader's when the topic uses LogAppendTime
    (timestamp_type 1).
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    log_start_offset: int = -1
    record_count: int = 1
    timestamp_type: int = 0
    """0: CreateTime (the producer's clock), 1: LogAppendTime (the leader's)."""

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    @property
    def timestamp(self) -> int:
        """aiokafka's name for timestamp_ms."""
        return self.timestamp_ms


def _size(data: object) -> int:
    return len(data) if isinstance(data, (bytes, bytearray, memoryview, str)) else -1


@dataclass(frozen=True, slots=True, init=False)
class ConsumerRecord(Generic[KT, VT]):
    """One record as the consumer hands it out: aiokafka's ConsumerRecord, field for field.

    key and value are bytes (None for a null key or a tombstone) unless the consumer was given a
    key_deserializer / value_deserializer; serialized_*_size are the sizes on the wire (-1:
    null). headers are (name, value) pairs in the order they were sent, as in aiokafka; use
    dict(record.headers) for a mapping. checksum is always None (as aiokafka's, for v2 batches).
    """

    topic: str
    partition: int
    offset: int
    timestamp: int
    """Milliseconds since the epoch; timestamp_ms is the same value under liferaft's name."""
    timestamp_type: int
    """0: CreateTime (the producer's clock), 1: LogAppendTime (the leader's)."""
    key: KT
    value: VT
    checksum: int | None
    serialized_key_size: int
    serialized_value_size: int
    headers: tuple[Header, ...]

    def __init__(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        timestamp: int | None = None,
        timestamp_type: int = 0,
        key: KT,
        value: VT,
        checksum: int | None = None,
        serialized_key_size: int | None = None,
        serialized_value_size: int | None = None,
        headers: Sequence[Header] = (),
        timestamp_ms: int | None = None,
    ) -> None:
        if timestamp is None:
            if timestamp_ms is None:
                raise TypeError("ConsumerRecord needs timestamp (or timestamp_ms)")
            timestamp = timestamp_ms
        put = object.__setattr__
        put(self, "topic", topic)
        put(self, "partition", partition)
        put(self, "offset", offset)
        put(self, "timestamp", timestamp)
        put(self, "timestamp_type", timestamp_type)
        put(self, "key", key)
        put(self, "value", value)
        put(self, "checksum", checksum)
        put(
            self,
            "serialized_key_size",
            serialized_key_size if serialized_key_size is not None else _size(key),
        )
        put(
            self,
            "serialized_value_size",
            serialized_value_size if serialized_value_size is not None else _size(value),
        )
        put(self, "headers", tuple(headers))

    @property
    def timestamp_ms(self) -> int:
        """liferaft's name for timestamp."""
        return self.timestamp

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True, kw_only=True)
class OffsetAndTimestamp:
    """A ListOffsets answer. offset -1: no record at or after the timestamp asked for
    (the consumer's offsets_for_times answers None then, as aiokafka does)."""

    offset: int
    timestamp_ms: int = -1
    leader_epoch: int = 0

    @property
    def timestamp(self) -> int:
        """aiokafka's name for timestamp_ms."""
        return self.timestamp_ms


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
