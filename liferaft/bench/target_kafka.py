"""The bench workloads through confluent-kafka (librdkafka) and the nodes' Kafka listeners:
`liferaft bench produce --client kafka` and `liferaft bench consume --client kafka`.

What a Python team on Kafka clients would run: librdkafka builds, batches and sends the record
batches in C threads, outside the GIL, so the figure says what the cluster sustains when the
client is not the limit (the liferaft Python producer builds every record in Python).

Produce. Each of `producers` is one `confluent_kafka.Producer` with the spec's acks (idempotent
when acks=all, as Kafka's clients are by default), batch.size = the spec's batch size,
linger.ms = its linger, and up to `in_flight` requests per connection (at most 5 with
idempotence), and a queue of in_flight x batch records records (the raw client's window: so a
closed-loop latency is not the time spent in an unbounded queue). Its thread calls `produce()`
as fast as that queue takes records (or at the spec's throughput), record i of a producer going to partition (i // batch records) mod
partitions, as the raw client cuts batches. A record counts once its delivery report says it
was acknowledged; its latency is librdkafka's own (`Message.latency()`: from `produce()` to the
acknowledgement, time in librdkafka's queue included, as kafka-producer-perf-test counts it).
requests/s counts the Produce requests librdkafka sent (its statistics: brokers[].req.Produce).

Consume. One `confluent_kafka.Consumer` assigned every partition from the beginning (no group),
reading each partition's share; latency per `consume()` call that returned records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from liferaft.bench.stats import BenchResult, LatencyRecorder
from liferaft.bench.target_liferaft import BenchError, Progress, ensure_topic
from liferaft_proto.ports import KAFKA, listener_address

if TYPE_CHECKING:
    from liferaft.bench.target_liferaft import _Tally
    from liferaft.bench.workload import ConsumeSpec, ProduceSpec

__all__ = ["consume_kafka", "kafka_bootstrap", "run_kafka_produce"]

FLUSH_TIMEOUT_S = 120.0
VALUES = 1024
"""Distinct random values per producer (incompressible; reused round-robin)."""


def kafka_bootstrap(bootstrap: list[str]) -> str:
    """The nodes' Kafka listeners, from their gRPC addresses (the port table's offset)."""
    return ",".join(listener_address(a, KAFKA.offset) for a in bootstrap)


def librdkafka_security(options: dict[str, Any] | None) -> dict[str, Any]:
    """The client's security options (aiokafka's names, client/security.py) as librdkafka's
    settings: the same credentials on the Kafka listener as on the gRPC one."""
    options = options or {}
    out: dict[str, Any] = {}
    names = {
        "security_protocol": "security.protocol",
        "ssl_cafile": "ssl.ca.location",
        "ssl_certfile": "ssl.certificate.location",
        "ssl_keyfile": "ssl.key.location",
        "sasl_mechanism": "sasl.mechanism",
        "sasl_plain_username": "sasl.username",
        "sasl_plain_password": "sasl.password",
    }
    for option, value in options.items():
        if value is None:
            continue
        if option not in names:
            raise ValueError(f"--client kafka cannot use the security option {option}")
        out[names[option]] = str(value)
    if str(out.get("security.protocol", "")).upper().startswith("SASL") and (
        "sasl.mechanism" not in out
    ):
        out["sasl.mechanism"] = "SCRAM-SHA-512"  # the liferaft client's default too
    return out


def _confluent() -> Any:
    try:
        import confluent_kafka
    except ImportError:
        raise BenchError(
            "--client kafka needs confluent-kafka: pip install 'liferaft[kafka]' "
            "(or pip install confluent-kafka)"
        ) from None
    return confluent_kafka


@dataclass(slots=True)
class _KafkaTally:
    """One producer's counts; written by its own thread only (delivery reports run there)."""

    records: int = 0
    errors: int = 0
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    failures: list[str] = field(default_factory=list)
    produce_requests: int | None = None


def _producer_config(
    bootstrap: str, spec: ProduceSpec, stats: dict[str, Any], security: dict[str, Any]
) -> dict[str, Any]:
    idempotent = spec.acks == -1

    def on_stats(text: str) -> None:
        stats["last"] = text

    return {
        "bootstrap.servers": bootstrap,
        "client.id": "liferaft-bench",
        "acks": "all" if spec.acks == -1 else str(spec.acks),
        "enable.idempotence": idempotent,
        "linger.ms": spec.linger_ms,
        "batch.size": spec.batch_size,
        "batch.num.messages": 1_000_000,
        # As many records outstanding as the raw client has (in_flight x batch records): a
        # closed loop with the same window, so latency is not time in an unbounded queue.
        "queue.buffering.max.messages": max(spec.records_in_flight, spec.batch_records),
        "max.in.flight.requests.per.connection": min(spec.in_flight, 5)
        if idempotent
        else spec.in_flight,
        "message.timeout.ms": int(FLUSH_TIMEOUT_S * 1000),
        "statistics.interval.ms": 500,
        "stats_cb": on_stats,
        **security,
    }


def _produce_requests(stats_json: str | None) -> int | None:
    """Produce requests sent, over every broker, from one librdkafka statistics document."""
    if not stats_json:
        return None
    doc = json.loads(stats_json)
    total = 0
    for broker in doc.get("brokers", {}).values():
        total += int(broker.get("req", {}).get("Produce", 0))
    return total


def _produce_thread(
    bootstrap: str,
    spec: ProduceSpec,
    share: int | None,
    duration_s: float,
    rate: float,
    first_partition: int,
    tally: _KafkaTally,
    ready: threading.Barrier,
    security: dict[str, Any],
) -> None:
    ck = _confluent()
    stats: dict[str, Any] = {}
    try:
        producer = ck.Producer(_producer_config(bootstrap, spec, stats, security))
        values = [os.urandom(spec.record_size) for _ in range(min(VALUES, share or VALUES))]
    except BaseException:
        ready.abort()  # the others must not wait for this one
        raise
    per_batch = spec.batch_records

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            tally.records += 1
            tally.latency.add(msg.latency() * 1e3)
        else:
            tally.errors += 1
            if len(tally.failures) < 5:
                tally.failures.append(f"{err.name()}: {err.str()}")

    ready.wait()  # every producer made: the clock starts
    start = time.monotonic()
    deadline = start + duration_s if duration_s else None
    i = 0
    while share is None or i < share:
        if deadline is not None and time.monotonic() >= deadline:
            break
        if rate > 0:
            wait = start + i / rate - time.monotonic()
            if wait > 0:
                producer.poll(wait)
        partition = (first_partition + i // per_batch) % spec.partitions
        try:
            producer.produce(
                spec.topic, values[i % len(values)], partition=partition, on_delivery=on_delivery
            )
        except BufferError:  # librdkafka's queue is full: serve delivery reports, try again
            producer.poll(0.005)
            continue
        i += 1
        if i % 256 == 0:
            producer.poll(0)
    left = producer.flush(FLUSH_TIMEOUT_S)
    if left:
        tally.errors += left
        tally.failures.append(f"{left} records not delivered within {FLUSH_TIMEOUT_S:.0f}s")
    # One more statistics document, emitted after the last request went out.
    before = stats.get("last")
    until = time.monotonic() + 2.0
    while stats.get("last") is before and time.monotonic() < until:
        producer.poll(0.1)
    tally.produce_requests = _produce_requests(stats.get("last"))


async def run_kafka_produce(
    bootstrap: list[str],
    spec: ProduceSpec,
    *,
    progress: Progress | None = None,
    create: bool = True,
    security: dict[str, Any] | None = None,
) -> BenchResult:
    """Run a produce workload with confluent-kafka (module docstring)."""
    from client.security import Security

    ck = _confluent()
    kafka_security = librdkafka_security(security)
    if create:
        await ensure_topic(
            bootstrap,
            spec.topic,
            spec.partitions,
            spec.replication_factor,
            Security.from_options(security or {}),
        )
    servers = kafka_bootstrap(bootstrap)
    total = spec.total_records
    tallies = [_KafkaTally() for _ in range(spec.producers)]
    ready = threading.Barrier(spec.producers + 1)
    pool = ThreadPoolExecutor(max_workers=spec.producers + 1, thread_name_prefix="bench-kafka")
    loop = asyncio.get_running_loop()
    threads = []
    for i, tally in enumerate(tallies):
        share = None if total is None else total // spec.producers + (i < total % spec.producers)
        threads.append(
            loop.run_in_executor(
                pool,
                _produce_thread,
                servers,
                spec,
                share,
                spec.duration_s,
                spec.throughput / spec.producers,
                i,
                tally,
                ready,
                kafka_security,
            )
        )

    async def ticker() -> None:
        while progress is not None:
            progress(sum(t.records for t in tallies))
            await asyncio.sleep(0.2)

    tick = asyncio.create_task(ticker())
    running = asyncio.gather(*threads)
    try:
        try:
            await loop.run_in_executor(pool, ready.wait, 60.0)
        except threading.BrokenBarrierError:
            await running  # raises what broke it
            raise
        start = time.monotonic()
        await running
    finally:
        pool.shutdown(wait=False)
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
    # The clock stops at the last acknowledgement (flush), not after the statistics wait.
    elapsed = time.monotonic() - start
    records = sum(t.records for t in tallies)
    if progress is not None:
        progress(records)
    failures = [f for t in tallies for f in t.failures][:5]
    if records == 0 and failures:
        raise BenchError(f"every record failed; first: {failures[0]}")
    latency = LatencyRecorder()
    for t in tallies:
        latency.merge(t.latency)
    counts = [t.produce_requests for t in tallies]
    return BenchResult(
        system="liferaft",
        workload="produce",
        records=records,
        payload_bytes=records * spec.record_size,
        seconds=elapsed,
        latency=latency,
        errors=sum(t.errors for t in tallies),
        requests=sum(c or 0 for c in counts),
        settings={
            **spec.settings(),
            "client": "kafka",
            "librdkafka": ck.libversion()[0],
            "requests_counted": None not in counts,
            "failures": failures,
        },
    )


def _consume_thread(
    bootstrap: str,
    spec: ConsumeSpec,
    targets: list[int],
    tally: _Tally,
    security: dict[str, Any],
) -> None:
    ck = _confluent()
    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": "liferaft-bench",
            "group.id": f"liferaft-bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.max.bytes": max(spec.fetch_max_bytes, 1 << 20),
            "max.partition.fetch.bytes": spec.fetch_max_bytes,
            **security,
        }
    )
    try:
        want = {p: upto for p, upto in enumerate(targets) if upto > 0}
        consumer.assign(
            [ck.TopicPartition(spec.topic, p, ck.OFFSET_BEGINNING) for p in sorted(want)]
        )
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        while want:
            if time.monotonic() > deadline:
                raise BenchError(f"records still unread after {FLUSH_TIMEOUT_S:.0f}s: {want}")
            t0 = time.monotonic()
            n = 0
            for msg in consumer.consume(10_000, 1.0):
                if msg.error() is not None:
                    tally.errors += 1
                    continue
                p = msg.partition()
                if want.get(p, 0) > 0:
                    want[p] -= 1
                    n += 1
                    if want[p] == 0:
                        del want[p]
            if n:
                tally.latency.add((time.monotonic() - t0) * 1e3)
                tally.records += n
                tally.requests += 1
    finally:
        consumer.close()


async def consume_kafka(
    bootstrap: list[str],
    spec: ConsumeSpec,
    targets: list[int],
    tally: _Tally,
    security: dict[str, Any] | None = None,
) -> None:
    """Read `targets[p]` records from each partition p with confluent-kafka."""
    await asyncio.to_thread(
        _consume_thread,
        kafka_bootstrap(bootstrap),
        spec,
        targets,
        tally,
        librdkafka_security(security),
    )
