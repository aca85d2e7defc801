"""ProduceStream (issue 18) on a real three-node cluster: what the stream promises, not its speed.

One partition's batches are written in the order the stream carried them and answered in that
order; a request that fails (NOT_LEADER, a bad batch, an unknown topic) is answered with its
error and the stream goes on, having written nothing for it; an idempotent producer writing two
partitions over its streams loses and duplicates nothing while the leader of one is killed, and
is not held by a leader whose process is stopped. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import grpc
import pytest

from client import Producer, RecordMetadata, TopicPartition
from liferaft.launcher import DevCluster
from liferaft_proto import records
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc, errors_pb2
from tests.integration.test_replication import (
    check_log,
    create_topic,
    describe,
    read_all,
    wait_for,
)

pytestmark = pytest.mark.asyncio


def batch(*values: bytes) -> bytes:
    return records.build_batch([records.Record(value=v) for v in values])


def request(topic: str, partition: int, data: bytes, acks: int = -1) -> broker_pb2.ProduceRequest:
    return broker_pb2.ProduceRequest(
        topic=topic, partition=partition, acks=acks, timeout_ms=20_000, records=data
    )


async def answers(call: grpc.aio.StreamStreamCall, n: int) -> dict[int, broker_pb2.ProduceResponse]:
    """The next n answers on the stream, by correlation id (bounded wait)."""
    got: dict[int, broker_pb2.ProduceResponse] = {}
    async with asyncio.timeout(60):
        while len(got) < n:
            message = await call.read()
            assert message is not grpc.aio.EOF, "the stream ended early"
            for response in message.responses:
                assert response.correlation_id not in got, "one request answered twice"
                got[response.correlation_id] = response
    return got


def message(*requests: broker_pb2.ProduceRequest) -> broker_pb2.ProduceStreamRequest:
    return broker_pb2.ProduceStreamRequest(requests=requests)


async def test_order_per_partition_and_errors_are_values(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster(3)
    await create_topic(cluster, "s", partitions=3)
    parts = (await describe(cluster, "s")).partitions
    node = parts[0].leader
    mine = [p.partition for p in parts if p.leader == node]
    others = [p.partition for p in parts if p.leader != node]
    address = cluster.node(node).address

    async with grpc.aio.insecure_channel(address) as channel:
        call = broker_pb2_grpc.BrokerStub(channel).ProduceStream()  # type: ignore[no-untyped-call]
        # 60 batches over the partitions this node leads, all written before any is answered,
        # in messages of one to seven requests.
        sent: dict[int, tuple[int, bytes]] = {}
        pending: list[broker_pb2.ProduceRequest] = []
        for i in range(60):
            p = mine[i % len(mine)]
            value = b"v-%03d" % i
            sent[1000 + i] = (p, value)
            req = request("s", p, batch(value))
            req.correlation_id = 1000 + i
            pending.append(req)
            if len(pending) == 1 + i % 7 or i == 59:
                await call.write(message(*pending))
                pending = []
        got = await answers(call, 60)
        assert set(got) == set(sent)
        for p in mine:
            cids = [c for c in sorted(sent) if sent[c][0] == p]
            offsets = [got[c].base_offset for c in cids]
            assert not any(got[c].HasField("error") for c in cids)
            assert offsets == list(range(offsets[0], offsets[0] + len(cids))), (
                f"partition {p}: offsets not in the stream's order: {offsets}"
            )

        # Requests that fail, between good ones: each answered with its error; the stream goes on.
        bad: list[tuple[broker_pb2.ProduceRequest, int]] = [
            (request("no-such-topic", 0, batch(b"x")), errors_pb2.UNKNOWN_TOPIC_OR_PARTITION),
            (request("s", 99, batch(b"x")), errors_pb2.UNKNOWN_TOPIC_OR_PARTITION),
            (request("s", mine[0], batch(b"x")[:-3]), errors_pb2.CORRUPT_MESSAGE),
            (request("s", mine[0], batch(b"x"), acks=5), errors_pb2.INVALID_REQUIRED_ACKS),
            (request("s", mine[0], b""), errors_pb2.INVALID_REQUEST),
        ]
        if others:
            bad.append((request("s", others[0], batch(b"x")), errors_pb2.NOT_LEADER))
        before = {p.partition: p.high_watermark for p in (await describe(cluster, "s")).partitions}
        for i, (req, _) in enumerate(bad):
            req.correlation_id = 1 + i
        good = request("s", mine[0], batch(b"after the errors"))
        good.correlation_id = 500
        # One message: the refusals and a good request after them.
        await call.write(message(*(req for req, _ in bad), good))
        got = await answers(call, len(bad) + 1)
        for i, (_, code) in enumerate(bad):
            error = got[1 + i].error
            assert error.code == code, f"request {i}: {error}"
            assert error.message
        if others:
            hint = got[len(bad)].error
            assert hint.leader_id == parts[others[0]].leader and hint.leader_address
        assert not got[500].HasField("error")
        assert got[500].base_offset == before[mine[0]]

        # Half-closing ends the stream once every request is answered.
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK

    after = {p.partition: p.high_watermark for p in (await describe(cluster, "s")).partitions}
    assert after[mine[0]] == before[mine[0]] + 1, "a refused request wrote something"
    for p in mine[1:] + others:
        assert after[p] == before[p], "a refused request wrote something"
    log = await read_all(cluster, TopicPartition("s", mine[0]), after[mine[0]])
    expected = [v for _, (p, v) in sorted(sent.items()) if p == mine[0]] + [b"after the errors"]
    assert [v for _, v in log] == expected


@pytest.mark.parametrize("stream_transport", [True, False], ids=["listener", "grpc"])
async def test_idempotent_producer_over_streams_survives_a_leader_kill(
    make_cluster: Callable[..., DevCluster], stream_transport: bool
) -> None:
    """Four partitions over three leaders, so a stream carries several partitions; the leader of
    partition 0 is killed mid-stream: its waiting requests fail at once, the producer follows
    the new leaders (new streams) and its retries are deduplicated: each partition holds exactly
    what was sent to it, in order. Streams on the nodes' stream listeners (framed TCP, the
    default) or on gRPC (stream_transport=False): the same outcome."""
    cluster = make_cluster(3)
    n = 4
    await create_topic(cluster, "fo", partitions=n)
    sent: dict[int, list[bytes]] = {p: [] for p in range(n)}
    futures: dict[int, list[asyncio.Future[RecordMetadata]]] = {p: [] for p in range(n)}
    stop = asyncio.Event()
    async with Producer(
        cluster.bootstrap,
        linger_ms=2,
        batch_size=2048,
        delivery_timeout_ms=60_000,
        stream_transport=stream_transport,
    ) as producer:

        async def pump() -> None:
            i = 0
            while not stop.is_set():
                p = i % n
                value = b"p%d-%06d" % (p, i)
                i += 1
                futures[p].append(await producer.send("fo", value, partition=p))
                sent[p].append(value)
                if i % 20 == 0:
                    await asyncio.sleep(0.005)

        def acked() -> int:
            return sum(f.done() for fs in futures.values() for f in fs)

        task = asyncio.create_task(pump())
        await wait_for("records acknowledged", lambda: acked() > 400)
        streams = producer._cluster._streams  # type: ignore[union-attr]
        assert streams is not None and streams._calls and not streams.unsupported
        old = (await describe(cluster, "fo")).partitions[0]
        assert streams.over_tcp(cluster.node(old.leader).address) == stream_transport
        cluster.kill(old.leader)

        async def moved() -> bool:
            ps = (await describe(cluster, "fo")).partitions
            return all(p.leader not in (0, old.leader) for p in ps)

        await wait_for("new leaders", moved, timeout_s=60)
        done_at = acked()
        await wait_for("acks after the kill", lambda: acked() > done_at + 400, timeout_s=60)
        new = (await describe(cluster, "fo")).partitions[0]
        assert streams.over_tcp(cluster.node(new.leader).address) == stream_transport
        stop.set()
        await asyncio.wait_for(task, 30)
        await asyncio.wait_for(producer.flush(), 60)
    for p in range(n):
        metas = [f.result() for f in futures[p]]  # none failed: a failure would raise here
        acked_at = dict(zip(sent[p], (m.offset for m in metas), strict=True))
        hw = (await describe(cluster, "fo")).partitions[p].high_watermark
        log = await read_all(cluster, TopicPartition("fo", p), hw)
        check_log(acked_at, log, once=True)
        assert [v for _, v in log] == sent[p], f"partition {p} is not what was sent, in order"


STOPPED_S = 20.0
"""How long the stopped leader stays stopped at the most: less than the request timeout (30 s),
so a producer that waited for the stopped node would still be waiting."""


async def test_a_stopped_leader_does_not_hold_the_producer_until_it_resumes(
    make_cluster: Callable[..., DevCluster],
) -> None:
    """SIGSTOP: the leader's process stops, its kernel still takes the bytes and answers TCP
    keepalives, so nothing but the node's own silence shows. The producer's stream asks (PING,
    client/stream_transport.py); with no PONG it fails as a lost connection, and the request
    is retried at the new leader: acknowledged, once, while the old leader is still stopped.
    (Before PING, the request waited for the node to resume or for its 30 s deadline.)"""
    cluster = make_cluster(3)
    await create_topic(cluster, "stopped", partitions=1)
    old = (await describe(cluster, "stopped")).partitions[0].leader
    async with Producer(cluster.bootstrap, linger_ms=0) as producer:
        before = await producer.send_and_wait("stopped", b"before", partition=0)
        streams = producer._cluster._streams  # type: ignore[union-attr]
        assert streams is not None and streams.over_tcp(cluster.node(old).address)
        cluster.signal_node(old, signal.SIGSTOP)
        try:
            during = await asyncio.wait_for(
                producer.send_and_wait("stopped", b"during", partition=0), STOPPED_S
            )
        finally:
            cluster.signal_node(old, signal.SIGCONT)
    assert during.offset == before.offset + 1
    hw = (await describe(cluster, "stopped")).partitions[0].high_watermark
    log = await read_all(cluster, TopicPartition("stopped", 0), hw)
    check_log({b"before": before.offset, b"during": during.offset}, log, once=True)
