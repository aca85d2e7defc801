"""The same workloads against NATS JetStream, through nats-py.

Produce: each producer is one connection whose JetStream context publishes asynchronously
(`publish_async`, the Python twin of Go's PublishAsync) with at most `spec.records_in_flight`
publishes unacknowledged — the records liferaft has in flight with the same spec — one message
per record, since JetStream has no batch publish. A record's latency runs from its arrival (see
liferaft/bench/workload.py) to its PubAck. The stream is file-backed with three replicas.

Consume: a pull consumer with no acks reads the stream from its first message, pulling
`fetch_max_bytes // record_size` messages a request; latency figures are per pull.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from typing import Any

from liferaft.bench.stats import BenchResult, LatencyRecorder
from liferaft.bench.target_liferaft import BenchError, Progress
from liferaft.bench.workload import ConsumeSpec, Pacer, ProduceSpec, record_latencies_ms

__all__ = ["run_nats_consume", "run_nats_produce"]


def _subject(topic: str) -> str:
    return f"bench.{topic}"


def _stream(topic: str) -> str:
    """One stream per topic (stream names allow letters, digits, - and _)."""
    return "BENCH_" + re.sub(r"[^A-Za-z0-9_-]", "_", topic)


async def _connect(servers: list[str]) -> Any:
    import nats

    return await nats.connect(
        servers=servers,
        connect_timeout=5,
        max_reconnect_attempts=5,
        pending_size=64 << 20,
    )


async def ensure_stream(servers: list[str], topic: str, replicas: int) -> None:
    """Create the stream (retrying while the cluster elects its JetStream meta leader)."""
    from nats.js import api

    nc = await _connect(servers)
    try:
        js = nc.jetstream(timeout=10)
        deadline = time.monotonic() + 60
        while True:
            try:
                await js.add_stream(
                    name=_stream(topic),
                    subjects=[_subject(topic)],
                    num_replicas=replicas,
                    storage=api.StorageType.FILE,
                )
                return
            except Exception as e:
                if "already in use" in str(e):
                    return
                if time.monotonic() > deadline:
                    raise BenchError(f"NATS JetStream did not create the stream: {e}") from None
                await asyncio.sleep(0.25)
    finally:
        await nc.close()


async def _nats_producer(
    servers: list[str], spec: ProduceSpec, pacer: Pacer, latency: LatencyRecorder, done: list[int]
) -> list[str]:
    nc = await _connect(servers)
    failures: list[str] = []
    try:
        js = nc.jetstream(timeout=30, publish_async_max_pending=spec.records_in_flight)
        subject = _subject(spec.topic)
        payloads = [os.urandom(spec.record_size) for _ in range(64)]
        pending: set[asyncio.Future[Any]] = set()
        i = 0
        while True:
            batch = pacer.next()  # batch_records is 1: one record, one publish
            if batch is None:
                break
            delay = batch.ready_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            fut = await js.publish_async(subject, payloads[i % len(payloads)])
            i += 1

            def acked(f: asyncio.Future[Any], batch: Any = batch) -> None:
                pending.discard(f)
                if f.cancelled() or f.exception() is not None:
                    if len(failures) < 5:
                        failures.append(repr(f.exception()))
                    return
                lat = record_latencies_ms(batch, time.monotonic())
                if isinstance(lat, tuple):
                    latency.add(*lat)
                else:
                    latency.add_many(lat)
                done[0] += 1

            pending.add(fut)
            fut.add_done_callback(acked)
        if pending:
            await asyncio.wait(pending, timeout=60)
    finally:
        await nc.close()
    return failures


async def run_nats_produce(
    servers: list[str], spec: ProduceSpec, *, progress: Progress | None = None
) -> BenchResult:
    await ensure_stream(servers, spec.topic, spec.replication_factor)
    total = spec.total_records
    start = time.monotonic()
    deadline = start + spec.duration_s if spec.duration_s else None
    pacers = [
        Pacer(
            batch_records=1,
            total=None if total is None else total // spec.producers + (i < total % spec.producers),
            deadline=deadline,
            rate=spec.throughput / spec.producers,
            linger_s=0.0,
            start=start,
        )
        for i in range(spec.producers)
    ]
    latency = LatencyRecorder()
    done = [0]

    async def tick() -> None:
        while progress is not None:
            progress(done[0])
            await asyncio.sleep(0.2)

    ticker = asyncio.create_task(tick())
    try:
        outcomes = await asyncio.gather(
            *(_nats_producer(servers, spec, p, latency, done) for p in pacers)
        )
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    elapsed = time.monotonic() - start
    if progress is not None:
        progress(done[0])
    failures = [f for out in outcomes for f in out]
    sent = total if total is not None else done[0]
    return BenchResult(
        system="nats",
        workload="produce",
        records=done[0],
        payload_bytes=done[0] * spec.record_size,
        seconds=elapsed,
        latency=latency,
        errors=max(0, sent - done[0]),
        requests=done[0],  # one publish per record
        settings={
            **spec.settings(),
            "in_flight_records": spec.records_in_flight,
            "failures": failures[:5],
        },
    )


async def run_nats_consume(
    servers: list[str], spec: ConsumeSpec, *, progress: Progress | None = None
) -> BenchResult:
    """Fill the stream with spec.records records (unmeasured), then read them all back."""
    from nats.js import api

    fill = ProduceSpec(
        topic=spec.topic,
        record_size=spec.record_size,
        records=spec.records,
        replication_factor=spec.replication_factor,
    )
    await run_nats_produce(servers, fill)
    nc = await _connect(servers)
    latency = LatencyRecorder()
    got = 0
    pulls = 0
    try:
        js = nc.jetstream(timeout=30)
        sub = await js.pull_subscribe(
            _subject(spec.topic),
            durable="bench-reader",
            stream=_stream(spec.topic),
            config=api.ConsumerConfig(
                ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL
            ),
        )
        per_pull = max(1, spec.fetch_max_bytes // spec.record_size)
        start = time.monotonic()
        while got < spec.records:
            t0 = time.monotonic()
            msgs = await sub.fetch(batch=min(per_pull, spec.records - got), timeout=10)
            latency.add((time.monotonic() - t0) * 1e3)
            got += len(msgs)
            pulls += 1
            if progress is not None:
                progress(got)
        elapsed = time.monotonic() - start
    finally:
        await nc.close()
    return BenchResult(
        system="nats",
        workload="consume",
        records=got,
        payload_bytes=got * spec.record_size,
        seconds=elapsed,
        latency=latency,
        requests=pulls,
        settings=spec.settings(),
    )
