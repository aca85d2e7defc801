"""The workloads against a liferaft cluster.

Two ways to drive it, chosen with `client`:

  "raw"       (the default) record batches are built once, before the clock starts, and sent
              as they are in Produce requests on the public gRPC API, to the leader that the
              Metadata RPC names (refreshed on NOT_LEADER and friends, retried while the
              broker says an error is retriable). Reads count records from batch headers. The
              figure is the cluster's: the benchmark process spends almost nothing per record.
  "producer"  through the Python client (client.Producer.send_batch / client.Consumer), which
              builds or decodes every record in Python (about 5 µs each): what an application
              using the client sees, on a machine where the client competes with the nodes.
  "kafka"     through confluent-kafka (librdkafka, in C) on the nodes' Kafka listeners
              (liferaft/bench/target_kafka.py): what a team on Kafka's clients sees.

Each producer has its own channels (as separate Kafka producers would) and `in_flight` sender
tasks; each sender takes the next batch from the producer's pacer, round-robin over partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from client.errors import LiferaftError
from client.produce_stream import ProduceStreams, StreamUnsupported
from client.security import Security
from client.stream_transport import StreamDialer
from liferaft.bench.stats import BenchResult, LatencyRecorder
from liferaft.bench.workload import Batch, ConsumeSpec, Pacer, ProduceSpec, record_latencies_ms
from liferaft_proto import records
from liferaft_proto import status as wire_status
from liferaft_proto.address import format_address
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc, errors_pb2

__all__ = ["BenchError", "create_topic", "ensure_topic", "run_consume", "run_produce"]

T = TypeVar("T")

Progress = Callable[[int], None]
"""Called with the records done so far (acknowledged, or read)."""

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]
REQUEST_TIMEOUT_S = 30.0
DELIVERY_TIMEOUT_S = 60.0


class BenchError(RuntimeError):
    """The benchmark cannot run (no cluster, no leader, a non-retriable error)."""


def _detail(err: grpc.aio.AioRpcError) -> errors_pb2.ErrorDetail | None:
    return wire_status.error_detail(err)


def _retriable(err: grpc.aio.AioRpcError) -> bool:
    detail = _detail(err)
    if detail is None:  # transport trouble: a node is starting, stopping or gone
        return err.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.CANCELLED,
        )
    return bool(detail.retriable)


def _describe(err: grpc.aio.AioRpcError) -> str:
    detail = _detail(err)
    if detail is not None:
        return f"{errors_pb2.ErrorCode.Name(detail.code)}: {detail.message}"
    return f"{err.code().name}: {err.details()}"


class Router:
    """Where each partition's leader is, from the Metadata RPC; one channel per node."""

    def __init__(
        self,
        bootstrap: list[str],
        security: Security | None = None,
        *,
        stream_transport: bool = True,
    ) -> None:
        if not bootstrap:
            raise BenchError("no bootstrap address")
        self.bootstrap = bootstrap
        security = security or Security()
        self._credentials = security.channel_credentials()
        self.md: tuple[tuple[str, str | bytes], ...] | None = security.call_metadata() or None
        """What every call carries: the SASL username and password (None without SASL). Passed
        per call rather than by an interceptor, which would cost Python time on every call."""
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.streams = ProduceStreams(
            metadata=self.md,
            dialer=StreamDialer.from_security(security, self.md) if stream_transport else None,
        )
        """Produce travels on one produce stream per node: on its stream listener when it has
        one (and stream_transport), else gRPC ProduceStream (unary to a node without that)."""
        self._stream_addresses: dict[str, str] = {}
        self._leaders: dict[tuple[str, int], str] = {}
        self._refreshing: asyncio.Task[None] | None = None

    def stub(self, address: str) -> broker_pb2_grpc.BrokerStub:
        ch = self._channels.get(address)
        if ch is None:
            if self._credentials is None:
                ch = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            else:
                ch = grpc.aio.secure_channel(address, self._credentials, options=CHANNEL_OPTIONS)
            self._channels[address] = ch
        return broker_pb2_grpc.BrokerStub(ch)

    async def metadata(self, topics: list[str]) -> broker_pb2.MetadataResponse:
        last: Exception | None = None
        for address in self.bootstrap:
            try:
                return await self.stub(address).Metadata(
                    broker_pb2.MetadataRequest(topics=topics), timeout=5.0, metadata=self.md
                )
            except grpc.aio.AioRpcError as e:
                last = e
        raise BenchError(f"no bootstrap node answered Metadata: {last}")

    async def refresh(self, topic: str) -> None:
        """Re-read the leaders (one refresh at a time; concurrent callers share it)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh(topic))
        await asyncio.shield(self._refreshing)

    async def _refresh(self, topic: str) -> None:
        md = await self.metadata([topic])
        hosts = {b.node_id: f"{b.host}:{b.port}" for b in md.brokers}
        for b in md.brokers:
            if b.stream_port:
                self._stream_addresses[hosts[b.node_id]] = format_address(b.host, b.stream_port)
        for t in md.topics:
            for p in t.partitions:
                if p.leader_id and p.leader_id in hosts:
                    self._leaders[(t.name, p.partition)] = hosts[p.leader_id]
                else:
                    self._leaders.pop((t.name, p.partition), None)

    async def leader(self, topic: str, partition: int) -> broker_pb2_grpc.BrokerStub:
        return self.stub(await self.leader_address(topic, partition))

    async def leader_address(self, topic: str, partition: int) -> str:
        address = self._leaders.get((topic, partition))
        if address is None:
            await self.refresh(topic)
            address = self._leaders.get((topic, partition))
            if address is None:
                raise _NoLeader(f"{topic}-{partition} has no leader yet")
        return address

    async def produce(
        self, topic: str, partition: int, req: broker_pb2.ProduceRequest
    ) -> broker_pb2.ProduceResponse:
        """One Produce attempt at the leader: on its stream, or unary to an older node."""
        address = await self.leader_address(topic, partition)
        stub = self.stub(address)
        if address not in self.streams.unsupported:
            with contextlib.suppress(StreamUnsupported):
                return await self.streams.produce(
                    stub, address, req, REQUEST_TIMEOUT_S, self._stream_addresses.get(address)
                )
        return await stub.Produce(req, timeout=REQUEST_TIMEOUT_S, metadata=self.md)

    def forget(self, topic: str, partition: int) -> None:
        self._leaders.pop((topic, partition), None)

    async def close(self) -> None:
        await self.streams.close()
        channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            await ch.close()


class _NoLeader(Exception):
    pass


async def _call_leader(
    router: Router,
    topic: str,
    partition: int,
    call: Callable[[broker_pb2_grpc.BrokerStub], Awaitable[T]],
    deadline: float,
) -> T:
    """Call a partition's leader, following redirects and retrying what is retriable."""
    backoff = 0.02
    while True:
        try:
            stub = await router.leader(topic, partition)
            return await call(stub)
        except _NoLeader as e:
            err: str = str(e)
        except LiferaftError as e:  # an answer on the produce stream, or the stream broke
            if not e.retriable:
                raise BenchError(f"{topic}-{partition}: {e}") from None
            err = str(e)
            router.forget(topic, partition)
        except grpc.aio.AioRpcError as e:
            if not _retriable(e):
                raise BenchError(f"{topic}-{partition}: {_describe(e)}") from None
            err = _describe(e)
            router.forget(topic, partition)
        if time.monotonic() + backoff > deadline:
            raise BenchError(f"{topic}-{partition}: gave up retrying ({err})")
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 0.5)


async def create_topic(
    stub: broker_pb2_grpc.BrokerStub,
    topic: str,
    partitions: int,
    replication_factor: int,
    *,
    timeout_s: float = 30.0,
    exist_ok: bool = False,
    metadata: tuple[tuple[str, str | bytes], ...] | None = None,
) -> None:
    """CreateTopics through any node (it forwards to the controller); returns once the topic
    exists. Raises BenchError with the broker's reason."""
    req = broker_pb2.CreateTopicsRequest(
        topics=[
            broker_pb2.NewTopic(
                name=topic, partitions=partitions, replication_factor=replication_factor
            )
        ],
        timeout_ms=int(timeout_s * 1000),
    )
    try:
        resp = await stub.CreateTopics(req, timeout=timeout_s + 15, metadata=metadata)
    except grpc.aio.AioRpcError as e:
        raise BenchError(f"creating {topic!r}: {_describe(e)}") from None
    err = resp.topics[0].error
    ok = (errors_pb2.NONE, errors_pb2.TOPIC_ALREADY_EXISTS) if exist_ok else (errors_pb2.NONE,)
    if err.code not in ok:
        raise BenchError(
            f"creating {topic!r}: {errors_pb2.ErrorCode.Name(err.code)}: {err.message}"
        )


async def ensure_topic(
    bootstrap: list[str],
    topic: str,
    partitions: int,
    replication_factor: int,
    security: Security | None = None,
) -> None:
    """Create the topic unless it exists (with at least that many partitions), and wait until
    every partition has a leader whose ISR is complete (so acks=all is not refused at first)."""
    router = Router(bootstrap, security)
    try:
        md = await router.metadata([topic])
        tm = md.topics[0] if md.topics else None
        if tm is None or tm.error_code == errors_pb2.UNKNOWN_TOPIC_OR_PARTITION:
            await create_topic(
                router.stub(bootstrap[0]),
                topic,
                partitions,
                replication_factor,
                exist_ok=True,
                metadata=router.md,
            )
        elif len(tm.partitions) < partitions:
            raise BenchError(
                f"topic {topic!r} exists with {len(tm.partitions)} partitions, fewer than "
                f"{partitions}: pick another --topic"
            )
        deadline = time.monotonic() + 60
        while True:
            md = await router.metadata([topic])
            parts = md.topics[0].partitions
            if all(p.leader_id and len(p.isr) == len(p.replicas) for p in parts[:partitions]):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"{topic!r}: partitions still lack a leader or a full ISR")
            await asyncio.sleep(0.1)
    finally:
        await router.close()


def _payloads(record_size: int, n: int) -> list[bytes]:
    return [os.urandom(record_size) for _ in range(n)]


class _Templates:
    """Record batches of n records, built once per n (values random, so incompressible)."""

    def __init__(self, record_size: int, max_records: int) -> None:
        self.values = _payloads(record_size, max_records)
        self._built: dict[int, bytes] = {}

    def batch(self, n: int) -> bytes:
        b = self._built.get(n)
        if b is None:
            now = int(time.time() * 1000)
            b = self._built[n] = records.build_batch(
                [records.Record(value=v, timestamp_ms=now) for v in self.values[:n]]
            )
        return b


@dataclass(slots=True)
class _Tally:
    records: int = 0
    requests: int = 0
    errors: int = 0
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    failures: list[str] = field(default_factory=list)

    def acked(self, batch: Batch, done: float) -> None:
        self.records += batch.records
        self.requests += 1
        lat = record_latencies_ms(batch, done)
        if isinstance(lat, tuple):
            self.latency.add(*lat)
        else:
            self.latency.add_many(lat)


async def _ticker(tally: _Tally, progress: Progress | None) -> None:
    if progress is None:
        return
    while True:
        progress(tally.records)
        await asyncio.sleep(0.2)


async def _producer(
    spec: ProduceSpec,
    bootstrap: list[str],
    pacer: Pacer,
    tally: _Tally,
    first_partition: int,
    client: str,
    security: Security,
    options: dict[str, Any],
    stop: Callable[[], bool] | None = None,
    stream_transport: bool = True,
) -> None:
    templates = _Templates(spec.record_size, spec.batch_records)
    for n in {spec.batch_records, 1}:
        templates.batch(n)
    topic = spec.topic
    router = Router(bootstrap, security, stream_transport=stream_transport)
    producer = None
    if client == "producer":
        from client import Producer

        producer = Producer(
            bootstrap,
            acks=spec.acks,
            delivery_timeout_ms=int(DELIVERY_TIMEOUT_S * 1000),
            stream_transport=stream_transport,
            **options,
        )
        await producer.start()

    async def send_raw(batch: Batch, partition: int) -> None:
        req = broker_pb2.ProduceRequest(
            topic=topic,
            partition=partition,
            acks=spec.acks,
            timeout_ms=int(REQUEST_TIMEOUT_S * 1000) - 1000,
            records=templates.batch(batch.records),
        )
        await _call_leader(
            router,
            topic,
            partition,
            lambda _stub: router.produce(topic, partition, req),
            time.monotonic() + DELIVERY_TIMEOUT_S,
        )

    async def send_client(batch: Batch, partition: int) -> None:
        assert producer is not None
        await producer.send_batch(topic, templates.values[: batch.records], partition=partition)

    send = send_client if producer is not None else send_raw

    async def sender() -> None:
        while True:
            if stop is not None and stop():
                return
            batch = pacer.next()
            if batch is None:
                return
            delay = batch.ready_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            partition = (first_partition + batch.seq) % spec.partitions
            try:
                await send(batch, partition)
            except Exception as e:  # counted, shown, and the run goes on
                tally.errors += batch.records
                if len(tally.failures) < 5:
                    tally.failures.append(f"{type(e).__name__}: {e}")
                continue
            tally.acked(batch, time.monotonic())

    try:
        await asyncio.gather(*(sender() for _ in range(spec.in_flight)))
    finally:
        await router.close()
        if producer is not None:
            await producer.close()


async def run_produce(
    bootstrap: list[str],
    spec: ProduceSpec,
    *,
    client: str = "raw",
    progress: Progress | None = None,
    create: bool = True,
    security: dict[str, Any] | None = None,
    stop: Callable[[], bool] | None = None,
    stream_transport: bool = True,
) -> BenchResult:
    """Run a produce workload (creating the topic first unless create=False). `security` holds
    the client's security options (client/security.py, aiokafka's names), as the CLI reads them
    (--client-config, LIFERAFT_SECURITY_PROTOCOL...). `stop`, if given, ends the run early once
    it returns True (each sender asks before it takes a batch; batches in flight finish): a
    caller measuring while something else happens (tests/integration/bench_moves.py, a replica
    move) runs for exactly as long as that lasts. `stream_transport` False: the raw and
    producer clients use gRPC streams, not the nodes' stream listeners (A/B runs)."""
    if client not in ("raw", "producer", "kafka"):
        raise ValueError(f"client must be raw, producer or kafka, got {client!r}")
    if client == "kafka":
        if stop is not None:
            raise ValueError("stop is supported by the raw and producer clients only")
        from liferaft.bench.target_kafka import run_kafka_produce

        return await run_kafka_produce(
            bootstrap, spec, progress=progress, create=create, security=security
        )
    options = dict(security or {})
    sec = Security.from_options(options)
    if create:
        await ensure_topic(bootstrap, spec.topic, spec.partitions, spec.replication_factor, sec)
    total = spec.total_records
    start = time.monotonic()
    deadline = start + spec.duration_s if spec.duration_s else None
    rate = spec.throughput / spec.producers
    pacers = []
    for i in range(spec.producers):
        share = None if total is None else total // spec.producers + (i < total % spec.producers)
        pacers.append(
            Pacer(
                batch_records=spec.batch_records,
                total=share,
                deadline=deadline,
                rate=rate,
                linger_s=spec.linger_ms / 1000,
                start=start,
            )
        )
    tally = _Tally()
    ticker = asyncio.create_task(_ticker(tally, progress))
    try:
        await asyncio.gather(
            *(
                _producer(
                    spec, bootstrap, pacer, tally, i, client, sec, options, stop, stream_transport
                )
                for i, pacer in enumerate(pacers)
            )
        )
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    elapsed = time.monotonic() - start
    if progress is not None:
        progress(tally.records)
    if tally.records == 0 and tally.failures:
        raise BenchError(f"every batch failed; first: {tally.failures[0]}")
    return BenchResult(
        system="liferaft",
        workload="produce",
        records=tally.records,
        payload_bytes=tally.records * spec.record_size,
        seconds=elapsed,
        latency=tally.latency,
        errors=tally.errors,
        requests=tally.requests,
        settings={
            **spec.settings(),
            "client": client,
            "transport": "stream" if stream_transport else "grpc",
            "security_protocol": sec.protocol,
            "failures": tally.failures,
        },
    )


# -- consume -------------------------------------------------------------------------------------
async def _high_watermarks(router: Router, topic: str, partitions: int) -> list[int]:
    out = []
    for p in range(partitions):
        req = broker_pb2.ListOffsetsRequest(
            topic=topic, partition=p, spec=broker_pb2.ListOffsetsRequest.LATEST
        )

        def ask(
            stub: broker_pb2_grpc.BrokerStub, req: broker_pb2.ListOffsetsRequest = req
        ) -> Awaitable[broker_pb2.ListOffsetsResponse]:
            return stub.ListOffsets(req, timeout=5.0, metadata=router.md)

        resp = await _call_leader(router, topic, p, ask, time.monotonic() + DELIVERY_TIMEOUT_S)
        out.append(resp.offset)
    return out


async def prepare_consume(
    bootstrap: list[str], spec: ConsumeSpec, security: dict[str, Any] | None = None
) -> list[int]:
    """Make sure the topic holds spec.records records (producing what is missing, unmeasured);
    returns the high watermark of each partition."""
    sec = Security.from_options(security or {})
    await ensure_topic(bootstrap, spec.topic, spec.partitions, spec.replication_factor, sec)
    router = Router(bootstrap, sec)
    try:
        hws = await _high_watermarks(router, spec.topic, spec.partitions)
    finally:
        await router.close()
    missing = spec.records - sum(hws)
    if missing > 0:
        fill = ProduceSpec(
            topic=spec.topic,
            record_size=spec.record_size,
            records=missing,
            acks=-1,
            partitions=spec.partitions,
            replication_factor=spec.replication_factor,
        )
        await run_produce(bootstrap, fill, create=False, security=security)
        router = Router(bootstrap, sec)
        try:
            hws = await _high_watermarks(router, spec.topic, spec.partitions)
        finally:
            await router.close()
    return hws


async def run_consume(
    bootstrap: list[str],
    spec: ConsumeSpec,
    *,
    client: str = "raw",
    progress: Progress | None = None,
    security: dict[str, Any] | None = None,
    stream_transport: bool = True,
) -> BenchResult:
    """Read spec.records records from the start of the topic's partitions (caught up: the
    records are all there before the clock starts). Latency figures are per Fetch request.
    `security`: the client's security options, as run_produce takes them."""
    if client not in ("raw", "consumer", "kafka"):
        raise ValueError(f"client must be raw, consumer or kafka, got {client!r}")
    hws = await prepare_consume(bootstrap, spec, security)
    # Read each partition up to its share of the records, at most its high watermark.
    targets, left = [], spec.records
    for hw in hws:
        take = min(hw, left)
        targets.append(take)
        left -= take
    tally = _Tally()
    ticker = asyncio.create_task(_ticker(tally, progress))
    start = time.monotonic()
    try:
        if client == "raw":
            await _consume_raw(bootstrap, spec, targets, tally, security)
        elif client == "kafka":
            from liferaft.bench.target_kafka import consume_kafka

            await consume_kafka(bootstrap, spec, targets, tally, security)
        else:
            await _consume_client(bootstrap, spec, targets, tally, security, stream_transport)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    elapsed = time.monotonic() - start
    if progress is not None:
        progress(tally.records)
    return BenchResult(
        system="liferaft",
        workload="consume",
        records=tally.records,
        payload_bytes=tally.records * spec.record_size,
        seconds=elapsed,
        latency=tally.latency,
        errors=tally.errors,
        requests=tally.requests,
        settings={
            **spec.settings(),
            "client": client,
            "transport": "stream" if stream_transport else "grpc",
        },
    )


async def _consume_raw(
    bootstrap: list[str],
    spec: ConsumeSpec,
    targets: list[int],
    tally: _Tally,
    security: dict[str, Any] | None = None,
) -> None:
    router = Router(bootstrap, Security.from_options(security or {}))
    topic = spec.topic

    async def one(partition: int, upto: int) -> None:
        offset = 0
        while offset < upto:
            req = broker_pb2.FetchRequest(
                topic=topic,
                partition=partition,
                offset=offset,
                max_bytes=spec.fetch_max_bytes,
                max_wait_ms=500,
            )
            t0 = time.monotonic()

            def fetch(
                stub: broker_pb2_grpc.BrokerStub, req: broker_pb2.FetchRequest = req
            ) -> Awaitable[broker_pb2.FetchResponse]:
                return stub.Fetch(req, timeout=REQUEST_TIMEOUT_S, metadata=router.md)

            resp = await _call_leader(
                router, topic, partition, fetch, time.monotonic() + DELIVERY_TIMEOUT_S
            )
            got = 0
            for header, _ in records.split_batches(resp.records):
                end = min(header.base_offset + header.record_count, upto)
                got += max(0, end - max(offset, header.base_offset))
                offset = max(offset, header.base_offset + header.record_count)
            tally.latency.add((time.monotonic() - t0) * 1e3)
            tally.records += got
            tally.requests += 1

    try:
        await asyncio.gather(*(one(p, upto) for p, upto in enumerate(targets) if upto > 0))
    finally:
        await router.close()


async def _consume_client(
    bootstrap: list[str],
    spec: ConsumeSpec,
    targets: list[int],
    tally: _Tally,
    security: dict[str, Any] | None = None,
    stream_transport: bool = True,
) -> None:
    from client import Consumer, TopicPartition

    want = {TopicPartition(spec.topic, p): upto for p, upto in enumerate(targets) if upto > 0}
    async with Consumer(
        bootstrap,
        auto_offset_reset="earliest",
        fetch_max_bytes=spec.fetch_max_bytes,
        stream_transport=stream_transport,
        **(security or {}),
    ) as consumer:
        consumer.assign(list(want))
        await consumer.seek_to_beginning(*want)
        while want:
            t0 = time.monotonic()
            got = await consumer.getmany(*want, timeout_ms=1000, max_records=1 << 20)
            n = 0
            for tp, recs in got.items():
                left = want.get(tp, 0)
                take = min(left, len(recs))
                n += take
                if left - take <= 0:
                    want.pop(tp, None)
                else:
                    want[tp] = left - take
            if n:  # one poll that returned records counts as one request
                tally.latency.add((time.monotonic() - t0) * 1e3)
                tally.records += n
                tally.requests += 1
