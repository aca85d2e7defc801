"""Which partition a record goes to.

The default does what Kafka's Java client does for keyed records, bit for bit: murmur2 of the
key bytes, sign bit cleared, modulo the partition count. So one key's records always land in one
partition (and stay in order there), and a liferaft producer places a key where a Java producer
would. Keyless records go round-robin over the partitions that have a leader, per topic.

A custom partitioner is any callable `(topic, key, partitions, available) -> partition`:
`partitions` lists every partition of the topic, `available` those with a reachable leader now
(it may be empty; then choose from `partitions`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Protocol

__all__ = ["DefaultPartitioner", "Partitioner", "murmur2", "partition_for_key"]

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as a signed 32-bit int.

    Java does this in 32-bit ints with wrap-around and unsigned shifts (>>>); Python ints do not
    wrap, so every step masks to 32 bits and the result is converted back to signed at the end.
    """
    length = len(data)
    h = (_SEED ^ length) & _MASK
    end4 = length & ~3
    for i in range(0, end4, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    rest = length & 3
    # Java's switch falls through: 3 -> 2 -> 1.
    if rest >= 3:
        h ^= data[end4 + 2] << 16
    if rest >= 2:
        h ^= data[end4 + 1] << 8
    if rest >= 1:
        h ^= data[end4]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """Kafka's keyed placement: toPositive(murmur2(key)) % numPartitions."""
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


class Partitioner(Protocol):
    def __call__(
        self,
        topic: str,
        key: bytes | None,
        partitions: Sequence[int],
        available: Sequence[int],
    ) -> int: ...


class DefaultPartitioner:
    """Keyed: murmur2 like Kafka. Keyless: round-robin over available partitions, per topic."""

    def __init__(self) -> None:
        self._counters: dict[str, itertools.count[int]] = {}

    def __call__(
        self,
        topic: str,
        key: bytes | None,
        partitions: Sequence[int],
        available: Sequence[int],
    ) -> int:
        if not partitions:
            raise ValueError(f"topic {topic!r} has no partitions")
        if key is not None:
            # Every partition, not just available ones: a key must not move when a leader is
            # briefly missing (the send waits for the leader instead).
            return partitions[partition_for_key(key, len(partitions))]
        counter = self._counters.get(topic)
        if counter is None:
            counter = self._counters[topic] = itertools.count()
        choices = available or partitions
        return choices[next(counter) % len(choices)]
