"""Which partition a record goes to.

The default does what Kafka's Java client does for keyed records, bit for bit: murmur2 of the
key bytes, sign bit cleared, modulo the partition count. So one key's records always land in one
partition (and stay in order there), and a liferaft producer places a key where a Java producer
would.

Keyless records are *sticky*, as Kafka's Java client places them (KIP-480 since 2.4, KIP-794's
uniform sticky partitioner since 3.3) and librdkafka too: they all go to one partition until
`batch_size` bytes have gone there, then to the next partition that has a leader (a random
start per topic and producer, so that many producers do not march in step). When the producer
says how many batches wait for each partition (`queued`), the next partition is drawn with
weight `most waiting + 1 - its own waiting` instead, as KIP-794's adaptive partitioning does: a
partition whose leader is slow or gone silent (its batches pile up) gets fewer new records, the
others more. Spread evenly over
time, but each partition gets full batches in turn instead of every partition a sliver of each
moment's records: at a low rate that is one request where round-robin made one per partition
(a 1 ms linger at 1,000 records/s over three partitions: about a third of the requests, and
half the end-to-end latency in `liferaft bench e2e`, docs/performance.md).

A custom partitioner is any callable `(topic, key, partitions, available) -> partition`:
`partitions` lists every partition of the topic, `available` those with a reachable leader now
(it may be empty; then choose from `partitions`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
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
    """Keyed: murmur2 like Kafka. Keyless: sticky, `batch_size` bytes to a partition, then the
    next available one (module docstring). The producer tells it each keyless record's size
    (`appended`); without that it sticks until the sticky partition loses its leader."""

    def __init__(
        self,
        batch_size: int = 16 * 1024,
        rng: random.Random | None = None,
        queued: Callable[[str, int], int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self._rng = rng or random.Random()
        self._queued = queued
        """(topic, partition) -> batches waiting in the producer for it; None: not known."""
        self._sticky: dict[str, _Sticky] = {}

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
        choices = available or partitions
        sticky = self._sticky.get(topic)
        if sticky is None:
            sticky = self._sticky[topic] = _Sticky(choices[self._rng.randrange(len(choices))])
        elif sticky.partition not in choices or sticky.bytes >= self.batch_size:
            sticky.partition = self._next(topic, sticky.partition, choices)
            sticky.bytes = 0
        return sticky.partition

    def _next(self, topic: str, current: int, choices: Sequence[int]) -> int:
        """The next sticky partition: the next in turn, unless some have more batches waiting
        than others; then a draw weighted towards the least loaded (KIP-794)."""
        if self._queued is not None and len(choices) > 1:
            waiting = [self._queued(topic, p) for p in choices]
            most = max(waiting)
            if most != min(waiting):
                weights = [most + 1 - w for w in waiting]
                return self._rng.choices(choices, weights)[0]
        return _next(current, choices)

    def appended(self, topic: str, partition: int, size: int) -> None:
        """A keyless record of `size` bytes went to `partition` (the one chosen for it)."""
        sticky = self._sticky.get(topic)
        if sticky is not None and sticky.partition == partition:
            sticky.bytes += size


class _Sticky:
    __slots__ = ("bytes", "partition")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.bytes = 0


def _next(current: int, choices: Sequence[int]) -> int:
    """The first of `choices` after `current` (in partition order, wrapping round)."""
    later = [p for p in choices if p > current]
    return min(later) if later else min(choices)
