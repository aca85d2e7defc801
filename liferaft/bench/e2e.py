"""End to end: how long a record takes from the producer to a consumer, at a fixed rate.

One process holds both ends: a Python Producer (linger 1 ms, acks=all) sends records at a fixed
rate, each stamped with the wall-clock time it was handed to `send()` (an 8-byte double at the
head of its value; the record's timestamp_ms is the same moment, rounded), and a Consumer
assigned to every partition of the topic reads them as they are committed. A record's latency is
the time the consumer saw it minus the time in the record: the acks=all round (produce, Raft
commit, ISR) plus the way from commit to delivery (the high watermark's advance, the fetch
long-poll's wake-up, the consumer's loop); the settings carry the producer's acknowledgement
latency (ack_p50_ms, ack_p99_ms) of the same records, so the difference is that way. Both ends share one clock, so no clock skew enters.

The open loop is Kafka's: record i is sent at start + i/rate whatever the cluster does, so time a
record spends queued behind a slow round counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from liferaft.bench.stats import BenchResult, LatencyRecorder
from liferaft.bench.target_liferaft import BenchError, ensure_topic

__all__ = ["E2ESpec", "run_e2e"]


def _ms(value: float) -> float | None:
    return None if value != value else round(value, 3)  # NaN: nothing was acknowledged


_STAMP = struct.Struct("<d")
DRAIN_TIMEOUT_S = 30.0
"""After the last send: how long the consumer may take to see every acknowledged record."""


@dataclass(frozen=True, slots=True, kw_only=True)
class E2ESpec:
    topic: str = "bench-e2e"
    rate: float = 1000.0
    """Records per second, sent at even intervals."""
    duration_s: float = 15.0
    record_size: int = 100
    """Bytes per record value (the first 8 carry the send time)."""
    partitions: int = 3
    replication_factor: int = 3
    linger_ms: int = 1
    fetch_max_wait_ms: int = 500

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.duration_s <= 0:
            raise ValueError("rate and duration must be > 0")
        if self.record_size < _STAMP.size:
            raise ValueError(f"record size must be >= {_STAMP.size} bytes (the send time)")
        if self.partitions < 1 or self.replication_factor < 1:
            raise ValueError("partitions and replication factor must be >= 1")
        if self.linger_ms < 0 or self.fetch_max_wait_ms < 1:
            raise ValueError("linger must be >= 0 and fetch max wait >= 1 ms")

    @property
    def total_records(self) -> int:
        return max(1, round(self.rate * self.duration_s))

    def settings(self) -> dict[str, object]:
        return {
            "rate": self.rate,
            "duration_s": self.duration_s,
            "records": self.total_records,
            "record_size": self.record_size,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "acks": "all",
            "linger_ms": self.linger_ms,
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
        }


def _acked(into: LatencyRecorder, sent: float, fut: asyncio.Future[object]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        into.add((time.time() - sent) * 1e3)


async def run_e2e(
    bootstrap: list[str],
    spec: E2ESpec,
    *,
    progress: Callable[[int], None] | None = None,
    stream_transport: bool = True,
) -> BenchResult:
    """Produce spec.total_records at spec.rate while a consumer reads them; per-record latency
    from the send time in the record to the consumer's receipt. `stream_transport` False: both
    clients use gRPC streams, not the nodes' stream listeners (A/B runs)."""
    from client import Consumer, Producer, TopicPartition

    await ensure_topic(bootstrap, spec.topic, spec.partitions, spec.replication_factor)
    tps = [TopicPartition(spec.topic, p) for p in range(spec.partitions)]
    total = spec.total_records
    latency = LatencyRecorder()
    ack_latency = LatencyRecorder()  # send to acks=all acknowledgement, for comparison
    seen = 0
    failures: list[str] = []
    acked = 0
    pad = b"\0" * (spec.record_size - _STAMP.size)
    async with (
        Consumer(
            bootstrap, fetch_max_wait_ms=spec.fetch_max_wait_ms, stream_transport=stream_transport
        ) as consumer,
        Producer(
            bootstrap, acks="all", linger_ms=spec.linger_ms, stream_transport=stream_transport
        ) as producer,
    ):
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        sending = True

        async def consume() -> None:
            nonlocal seen
            drain_until: float | None = None
            while True:
                got = await consumer.getmany(timeout_ms=100, max_records=10_000)
                now = time.time()
                lats = []
                for recs in got.values():
                    for r in recs:
                        if r.value is not None and len(r.value) >= _STAMP.size:
                            lats.append((now - _STAMP.unpack_from(r.value)[0]) * 1e3)
                latency.add_many(lats)
                seen += len(lats)
                if progress is not None and lats:
                    progress(seen)
                if not sending:
                    if seen >= acked:
                        return
                    if drain_until is None:
                        drain_until = time.monotonic() + DRAIN_TIMEOUT_S
                    elif time.monotonic() > drain_until:
                        return

        reader = asyncio.create_task(consume())
        futures = []
        start = time.monotonic()
        try:
            for i in range(total):
                delay = start + i / spec.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.time()
                fut = await producer.send(
                    spec.topic, _STAMP.pack(now) + pad, timestamp_ms=int(now * 1000)
                )
                fut.add_done_callback(functools.partial(_acked, ack_latency, now))
                futures.append(fut)
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            elapsed = time.monotonic() - start
            for o in outcomes:
                if isinstance(o, BaseException):
                    if len(failures) < 5:
                        failures.append(f"{type(o).__name__}: {o}")
                else:
                    acked += 1
            sending = False
            await reader
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
    ack_p50, ack_p99 = ack_latency.percentiles(0.5, 0.99)
    if acked == 0:
        raise BenchError(f"no record was acknowledged; first error: {failures[:1]}")
    return BenchResult(
        system="liferaft",
        workload="e2e",
        records=seen,
        payload_bytes=seen * spec.record_size,
        seconds=elapsed,
        latency=latency,
        errors=(total - acked) + max(0, acked - seen),
        requests=None,  # batched by the producer as it will: not seen here
        settings={
            **spec.settings(),
            "transport": "stream" if stream_transport else "grpc",
            "acked": acked,
            "ack_p50_ms": _ms(ack_p50),
            "ack_p99_ms": _ms(ack_p99),
            "failures": failures,
        },
    )
