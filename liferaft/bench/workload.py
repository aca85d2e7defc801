"""The workloads, as values, and the pacer that turns one into batches over time.

A produce workload is Kafka's perf-test vocabulary: record size, a count or a duration, acks,
batch size and linger, partitions, producers, requests in flight per producer, and an optional
throughput cap. Both systems under test run the same `ProduceSpec`; what differs is only how a
batch goes on the wire (one Produce request per batch for liferaft, one publish per record for
NATS JetStream, which has no batch publish) — with the same number of records in flight.

The pacer decides which records exist when. Without a cap, records appear the moment a sender
is free to take them (a closed loop: throughput is what the system sustains). With a cap of R
records/s, record i arrives at start + i/R whatever the system does (an open loop), a batch
closes when it is full or `linger_ms` after its first record, and a record's latency runs from
its arrival to its acknowledgement, so time spent queued behind a slow system counts: that is
the latency a producer at that rate would see.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

__all__ = ["Batch", "ConsumeSpec", "Pacer", "ProduceSpec"]

DEFAULT_RECORDS = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ProduceSpec:
    topic: str = "bench"
    record_size: int = 1024
    """Bytes of each record's value (no key, no headers)."""
    records: int = 0
    """How many records in all; 0 with duration_s 0 means DEFAULT_RECORDS."""
    duration_s: float = 0.0
    """Run for this long instead of a count (records must be 0)."""
    acks: int = -1
    """-1 (all), 1 or 0."""
    batch_size: int = 256 * 1024
    """Bytes of record values per batch (Kafka's batch.size): batch_records = this // size."""
    linger_ms: float = 5.0
    """With a throughput cap: how long a batch waits for more records before it is sent."""
    partitions: int = 3
    replication_factor: int = 3
    producers: int = 1
    in_flight: int = 8
    """Requests (batches) in flight per producer."""
    throughput: float = 0.0
    """Records per second over all producers; 0: as fast as the system goes."""

    def __post_init__(self) -> None:
        if self.record_size < 1:
            raise ValueError("record size must be >= 1 byte")
        if self.records < 0 or self.duration_s < 0:
            raise ValueError("records and duration must be >= 0")
        if self.records and self.duration_s:
            raise ValueError("give a record count or a duration, not both")
        if self.acks not in (-1, 0, 1):
            raise ValueError("acks must be all (-1), 1 or 0")
        if self.partitions < 1 or self.producers < 1 or self.in_flight < 1:
            raise ValueError("partitions, producers and in-flight must be >= 1")
        if self.batch_size < 1 or self.linger_ms < 0 or self.throughput < 0:
            raise ValueError("batch size must be >= 1, linger and throughput >= 0")

    @property
    def batch_records(self) -> int:
        return max(1, self.batch_size // self.record_size)

    @property
    def total_records(self) -> int | None:
        """The record count to send, or None for a timed run."""
        if self.duration_s:
            return None
        return self.records or DEFAULT_RECORDS

    @property
    def records_in_flight(self) -> int:
        """Records one producer may have unacknowledged: what the NATS harness matches."""
        return self.in_flight * self.batch_records

    def settings(self) -> dict[str, object]:
        return {
            "record_size": self.record_size,
            "records": self.total_records,
            "duration_s": self.duration_s or None,
            "acks": "all" if self.acks == -1 else self.acks,
            "batch_size": self.batch_size,
            "batch_records": self.batch_records,
            "linger_ms": self.linger_ms,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "producers": self.producers,
            "in_flight": self.in_flight,
            "throughput": self.throughput or None,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumeSpec:
    topic: str = "bench"
    record_size: int = 1024
    records: int = DEFAULT_RECORDS
    """Records to read in all (produced first if the topic holds fewer)."""
    partitions: int = 1
    replication_factor: int = 3
    fetch_max_bytes: int = 4 << 20
    """Bytes per Fetch answer (liferaft) or per pull (NATS: records = this // record size)."""

    def __post_init__(self) -> None:
        if self.records < 1 or self.record_size < 1 or self.partitions < 1:
            raise ValueError("records, record size and partitions must be >= 1")
        if self.fetch_max_bytes < 1:
            raise ValueError("fetch max bytes must be >= 1")

    def settings(self) -> dict[str, object]:
        return {
            "record_size": self.record_size,
            "records": self.records,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "fetch_max_bytes": self.fetch_max_bytes,
        }


@dataclass(frozen=True, slots=True)
class Batch:
    seq: int
    """0, 1, 2, ... in the order batches were cut (round-robins partitions)."""
    records: int
    arrivals: tuple[float, ...] | float
    """Each record's arrival time (monotonic seconds), or one time shared by all of them."""
    ready_at: float
    """When the batch closes (full, or its linger ran out): send it no earlier."""


class Pacer:
    """Cuts one producer's records into batches; shared by that producer's senders.

    `next()` is plain synchronous code, so however many sender tasks call it they get disjoint,
    ordered batches; a sender then sleeps until the batch's `ready_at` and sends it."""

    def __init__(
        self,
        *,
        batch_records: int,
        total: int | None,
        deadline: float | None,
        rate: float,
        linger_s: float,
        start: float | None = None,
    ) -> None:
        if total is None and deadline is None:
            raise ValueError("a pacer needs a record count or a deadline")
        self.batch_records = batch_records
        self.remaining = total
        self.deadline = deadline
        self.rate = rate
        self.linger_s = linger_s
        self._next_arrival = time.monotonic() if start is None else start
        self._seq = 0

    def next(self) -> Batch | None:
        """The next batch, or None when the workload is done."""
        now = time.monotonic()
        n = self.batch_records
        if self.remaining is not None:
            if self.remaining <= 0:
                return None
            n = min(n, self.remaining)
        if self.rate <= 0:
            if self.deadline is not None and now >= self.deadline:
                return None
            batch = Batch(self._seq, n, now, now)
        else:
            first = self._next_arrival
            if self.deadline is not None and first >= self.deadline:
                return None
            fits = 1 + math.floor(self.linger_s * self.rate)  # records arriving within linger
            if fits < n:
                n = fits
                ready = first + self.linger_s
            else:
                ready = first + (n - 1) / self.rate
            arrivals = tuple(first + i / self.rate for i in range(n))
            self._next_arrival = first + n / self.rate
            batch = Batch(self._seq, n, arrivals, ready)
        self._seq += 1
        if self.remaining is not None:
            self.remaining -= n
        return batch


def record_latencies_ms(batch: Batch, done: float) -> tuple[float, int] | list[float]:
    """Latency of a batch's records acknowledged at `done`: (ms, records) when they share an
    arrival time, else one figure per record."""
    if isinstance(batch.arrivals, float):
        return (done - batch.arrivals) * 1e3, batch.records
    return [(done - a) * 1e3 for a in batch.arrivals]
