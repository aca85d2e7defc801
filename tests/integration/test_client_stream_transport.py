"""The Python client on the nodes' stream listeners (issue 18), against real node processes.

The Producer and Consumer take ProduceStream and FetchStream to a node's stream listener when
its metadata names one (client/stream_transport.py), and gRPC otherwise: a node without a
listener, `stream_transport=False`. What is checked is that the listener is really what carries
the records (the producer's streams say so; the consumer's FetchStream opens are counted), that
the records and errors are the same either way (an offset out of range resets as on gRPC, a
wrong password is the same SaslAuthenticationFailedError), and that TLS (a client certificate)
and SCRAM logins work through it, and that a consumer is not held by a leader whose process is
stopped. A leader killed (and one stopped) under the producer's streams:
tests/integration/test_produce_stream.py.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

from client import AdminClient, Consumer, Producer, TopicPartition
from client.cluster import Cluster
from client.errors import SaslAuthenticationFailedError
from client.produce_stream import ProduceStreams
from client.security import Security
from client.stream_transport import FetchStreamConnection, StreamDialer
from liferaft.certs import create_client_cert
from liferaft.launcher import DevCluster
from liferaft_proto import records
from liferaft_proto.v1 import broker_pb2
from tests.integration.test_auth_sasl import PASSWORD, sasl
from tests.integration.test_replication import create_topic
from tests.integration.test_stream_listener import mtls_cluster, sasl_cluster

pytestmark = pytest.mark.asyncio

__all__ = ["mtls_cluster", "sasl_cluster"]  # fixtures, shared with the listener's own tests

WAIT_S = 60.0


@pytest.fixture
def fetch_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The addresses of the FetchStreams opened on stream listeners (the real ones: counted,
    then opened as ever)."""
    opened: list[str] = []
    real = FetchStreamConnection.open.__func__  # type: ignore[attr-defined]

    async def counted(cls: Any, dialer: Any, address: str, *args: Any) -> Any:
        call = await real(cls, dialer, address, *args)
        opened.append(address)
        return call

    monkeypatch.setattr(FetchStreamConnection, "open", classmethod(counted))
    return opened


def streams_of(producer: Producer) -> ProduceStreams:
    cluster = producer._cluster
    assert isinstance(cluster, Cluster) and cluster._streams is not None
    return cluster._streams


async def produce_and_read(
    dev: DevCluster, topic: str, n: int, **options: Any
) -> tuple[dict[str, bool], list[bytes]]:
    """n records over the topic's three partitions, then all of them read back from the start
    (both clients with `options`): whether the producer's stream to each leader was on its
    stream listener, and the values read (each partition's in order)."""
    sent = [b"r-%04d" % i for i in range(n)]
    async with Producer(dev.bootstrap, linger_ms=1, **options) as producer:
        futures = [await producer.send(topic, v, partition=i % 3) for i, v in enumerate(sent)]
        await asyncio.wait_for(asyncio.gather(*futures), WAIT_S)
        streams = streams_of(producer)
        metadata = producer._cluster.metadata  # type: ignore[union-attr]
        leaders = {metadata.leader_address(topic, p) for p in range(3)}
        tcp = {a: streams.over_tcp(a) for a in leaders if a is not None}
    tps = [TopicPartition(topic, p) for p in range(3)]
    got: list[bytes] = []
    async with Consumer(dev.bootstrap, auto_offset_reset="earliest", **options) as consumer:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        async with asyncio.timeout(WAIT_S):
            while len(got) < n:
                for recs in (await consumer.getmany(timeout_ms=500)).values():
                    got += [r.value for r in recs if r.value is not None]
    return tcp, got


async def test_records_travel_on_the_stream_listener_and_read_back_the_same(
    cluster: DevCluster, fetch_opens: list[str]
) -> None:
    await create_topic(cluster, "st", partitions=3)
    tcp, got = await produce_and_read(cluster, "st", 300)
    assert tcp and all(tcp.values()), tcp
    assert sorted(got) == [b"r-%04d" % i for i in range(300)]
    for p in range(3):  # each partition in the order sent
        mine = [v for v in got if int(v[2:]) % 3 == p]
        assert mine == sorted(mine)
    assert len(fetch_opens) >= 3, fetch_opens

    # The same cluster, told to keep to gRPC: no stream on a listener, the same records.
    fetch_opens.clear()
    await create_topic(cluster, "sg", partitions=3)
    tcp, got = await produce_and_read(cluster, "sg", 90, stream_transport=False)
    assert tcp and not any(tcp.values()), tcp
    assert sorted(got) == [b"r-%04d" % i for i in range(90)]
    assert fetch_opens == []


async def test_an_offset_out_of_range_on_the_listener_resets_as_on_grpc(
    cluster: DevCluster, fetch_opens: list[str]
) -> None:
    """The node ENDs the FetchStream with OFFSET_OUT_OF_RANGE: auto_offset_reset applies, as
    it does to the gRPC stream's status."""
    await create_topic(cluster, "oor")
    tp = TopicPartition("oor", 0)
    async with Producer(cluster.bootstrap) as producer:
        for v in (b"a", b"b", b"c"):
            await producer.send_and_wait("oor", v, partition=0)
    async with Consumer(cluster.bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        consumer.seek(tp, 1000)
        got: list[bytes | None] = []
        async with asyncio.timeout(WAIT_S):
            while len(got) < 3:
                for recs in (await consumer.getmany(timeout_ms=500)).values():
                    got += [r.value for r in recs]
    assert got == [b"a", b"b", b"c"]
    assert fetch_opens


async def test_a_node_without_a_stream_listener_is_reached_over_grpc(
    make_cluster: Callable[..., DevCluster], fetch_opens: list[str]
) -> None:
    dev = make_cluster(3, "--no-stream-listener")
    assert all(b.stream_port == 0 for b in dev.metadata(1, timeout_s=10).brokers)
    await create_topic(dev, "ng", partitions=3)
    tcp, got = await produce_and_read(dev, "ng", 60)
    assert tcp and not any(tcp.values()), tcp
    assert sorted(got) == [b"r-%04d" % i for i in range(60)]
    assert fetch_opens == []


async def test_scram_over_tls_on_the_listener(
    sasl_cluster: DevCluster, fetch_opens: list[str]
) -> None:
    security = sasl(sasl_cluster)
    async with AdminClient(sasl_cluster.bootstrap, **security) as admin:  # type: ignore[arg-type]
        await admin.create_topic("ss", 3, 3)
        leader = (await admin.describe_topics(["ss"]))["ss"].partitions[0].leader
    tcp, got = await produce_and_read(sasl_cluster, "ss", 60, **security)
    assert tcp and all(tcp.values()), tcp
    assert sorted(got) == [b"r-%04d" % i for i in range(60)]
    assert fetch_opens

    # A wrong password on the listener: the error the gRPC path raises for it, nothing written.
    address = sasl_cluster.node(leader).address
    md = sasl_cluster.metadata(leader, timeout_s=10)
    stream_port = next(b.stream_port for b in md.brokers if b.node_id == leader)
    host = address.rsplit(":", 1)[0]
    wrong = Security.from_options(sasl(sasl_cluster, password=PASSWORD + "x"))
    streams = ProduceStreams(dialer=StreamDialer.from_security(wrong))
    request = broker_pb2.ProduceRequest(
        topic="ss",
        partition=0,
        acks=-1,
        timeout_ms=10_000,
        records=records.build_batch([records.Record(value=b"no")]),
    )
    try:
        with pytest.raises(SaslAuthenticationFailedError):
            await streams.produce(None, address, request, 10.0, f"{host}:{stream_port}")  # type: ignore[arg-type]
    finally:
        await streams.close()


def alice_security(dev: DevCluster) -> dict[str, str]:
    """The client options of a client certificate for "alice", made anew in dev's CA."""
    alice = create_client_cert(dev.tls_dir, "alice", force=True)
    return {
        "security_protocol": "SSL",
        "ssl_cafile": str(dev.tls_dir / "ca.crt"),
        "ssl_certfile": str(alice / "client.crt"),
        "ssl_keyfile": str(alice / "client.key"),
    }


async def test_a_client_certificate_on_the_listener(
    mtls_cluster: DevCluster, fetch_opens: list[str]
) -> None:
    security = alice_security(mtls_cluster)
    async with AdminClient(mtls_cluster.bootstrap, **security) as admin:  # type: ignore[arg-type]
        await admin.create_topic("mt", 3, 3)
    tcp, got = await produce_and_read(mtls_cluster, "mt", 30, **security)
    assert tcp and all(tcp.values()), tcp
    assert sorted(got) == [b"r-%04d" % i for i in range(30)]
    assert fetch_opens


async def test_a_request_sent_as_the_stream_opens_waits_behind_the_one_that_opened_it(
    cluster: DevCluster,
) -> None:
    """The first request to a node opens its stream and waits for it; one that comes the moment
    the stream is open, before the first has resumed, must not be sent past it: a partition's
    batches are written in the order its sender sent them. (It once was: `bench e2e` counted
    OUT_OF_ORDER_SEQUENCE_NUMBER at every idempotent producer's start, and without idempotence
    records 0 and 1 were written as 1, 0.)"""
    await create_topic(cluster, "og", partitions=1)
    async with AdminClient(cluster.bootstrap) as admin:
        leader = (await admin.describe_topics(["og"]))["og"].partitions[0].leader
    address = cluster.node(leader).address
    md = cluster.metadata(leader, timeout_s=10)
    stream_port = next(b.stream_port for b in md.brokers if b.node_id == leader)
    stream_address = f"{address.rsplit(':', 1)[0]}:{stream_port}"
    streams = ProduceStreams(dialer=StreamDialer.from_security(Security.from_options({})))

    def request(value: bytes) -> broker_pb2.ProduceRequest:
        return broker_pb2.ProduceRequest(
            topic="og",
            partition=0,
            acks=-1,
            timeout_ms=10_000,
            records=records.build_batch([records.Record(value=value)]),
        )

    try:
        first = asyncio.ensure_future(
            streams.produce(None, address, request(b"0"), 10.0, stream_address)  # type: ignore[arg-type]
        )
        async with asyncio.timeout(WAIT_S):
            while address not in streams._dialing:
                await asyncio.sleep(0)
        second: list[asyncio.Future[Any]] = []

        def at_open(_: object) -> None:  # the stream is open; the first has not resumed yet
            fut = streams.submit(address, request(b"1"), 10.0, lambda outcome: None)
            if fut is None:  # not past the first: the sender's other way, which queues behind
                fut = asyncio.ensure_future(
                    streams.produce(None, address, request(b"1"), 10.0, stream_address)  # type: ignore[arg-type]
                )
            second.append(fut)

        streams._dialing[address].add_done_callback(at_open)
        async with asyncio.timeout(WAIT_S):
            offset0 = (await first).base_offset
            while not second:
                await asyncio.sleep(0.01)
            offset1 = (await second[0]).base_offset
        assert streams.over_tcp(address)
        assert (offset0, offset1) == (0, 1)
    finally:
        await streams.close()


async def on_uvloop(make: Callable[[], Any]) -> Any:
    """Await the coroutine `make()` returns on a uvloop loop of its own, in a thread (the tests'
    own loop is asyncio's)."""

    def run() -> Any:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(make())

    return await asyncio.to_thread(run)


async def test_an_application_on_uvloop_takes_the_listener(
    cluster: DevCluster, mtls_cluster: DevCluster, fetch_opens: list[str]
) -> None:
    """uvloop (uvicorn's loop, and the nodes') is a client's loop like asyncio's: plaintext and
    TLS, the streams are on the listeners. (Its transports are not asyncio.Transport's
    subclasses: a check for that once sent every stream back to gRPC, after the dial's wait.)"""
    await create_topic(cluster, "uv", partitions=3)
    tcp, got = await on_uvloop(lambda: produce_and_read(cluster, "uv", 60))
    assert tcp and all(tcp.values()), tcp
    assert sorted(got) == [b"r-%04d" % i for i in range(60)]
    assert len(fetch_opens) >= 3, fetch_opens

    fetch_opens.clear()
    security = alice_security(mtls_cluster)
    async with AdminClient(mtls_cluster.bootstrap, **security) as admin:  # type: ignore[arg-type]
        await admin.create_topic("uvt", 3, 3)
    tcp, got = await on_uvloop(lambda: produce_and_read(mtls_cluster, "uvt", 30, **security))
    assert tcp and all(tcp.values()), tcp
    assert sorted(got) == [b"r-%04d" % i for i in range(30)]
    assert fetch_opens


async def test_a_listener_that_cannot_be_dialled_leaves_that_node_to_grpc(
    cluster: DevCluster, fetch_opens: list[str]
) -> None:
    """The metadata names a stream listener nothing answers at (a closed port): the produce
    and the fetch go to that node on gRPC, nothing fails, and the listener is left alone for a
    while (then tried again)."""
    await create_topic(cluster, "df")
    tp = TopicPartition("df", 0)
    async with Producer(cluster.bootstrap, linger_ms=0) as producer:
        await producer.send_and_wait("df", b"first", partition=0)  # the streams open
        cluster_core = producer._cluster
        assert cluster_core is not None
        address = cluster_core.metadata.leader_address("df", 0)
        assert address is not None
        streams = streams_of(producer)
        assert streams.over_tcp(address)
        await streams.drop(address)
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening: refused
        try:
            keep_naming(cluster_core.metadata, address, dead)
            await producer.send_and_wait("df", b"second", partition=0)
            assert not streams.over_tcp(address) and address in streams._no_listener_until
            async with Consumer(cluster.bootstrap, auto_offset_reset="earliest") as consumer:
                core = consumer._cluster
                assert core is not None
                keep_naming(core.metadata, address, dead)
                consumer.assign([tp])
                got: list[bytes | None] = []
                async with asyncio.timeout(WAIT_S):
                    while len(got) < 2:
                        got += [
                            r.value for r in (await consumer.getmany(timeout_ms=500)).get(tp, [])
                        ]
                assert got == [b"first", b"second"]
                assert fetch_opens == []
                assert address in core._fetch_no_listener_until
        finally:
            closed.close()


def keep_naming(metadata: Any, address: str, stream_address: str) -> None:
    """From now on `metadata` names `stream_address` as `address`'s stream listener, whatever
    the nodes' metadata says."""
    update = metadata.update

    def wrapped(*args: Any, **kwargs: Any) -> None:
        update(*args, **kwargs)
        metadata._stream_addresses[address] = stream_address

    metadata.update = wrapped
    metadata._stream_addresses[address] = stream_address


async def test_a_stopped_leader_does_not_hold_the_consumer_until_it_resumes(
    make_cluster: Callable[..., DevCluster],
) -> None:
    """SIGSTOP the leader of the partition a consumer reads: its FetchStream falls silent
    while the kernel still takes the bytes. The stream asks (PING), gets no PONG, fails as a
    lost connection, and the consumer reads on from the new leader: a record produced there
    reaches it while the old leader is still stopped (before PING it waited for the node to
    resume, or for its request timeout, 30 s)."""
    dev = make_cluster(3)
    await create_topic(dev, "stopped", partitions=1)
    async with AdminClient(dev.bootstrap) as admin:
        old = (await admin.describe_topics(["stopped"]))["stopped"].partitions[0].leader
    tp = TopicPartition("stopped", 0)
    async with (
        Producer(dev.bootstrap) as producer,
        Consumer(dev.bootstrap, auto_offset_reset="earliest") as consumer,
    ):
        consumer.assign([tp])

        async def next_value() -> bytes | None:
            while True:
                for recs in (await consumer.getmany(timeout_ms=200)).values():
                    for r in recs:
                        return r.value

        await producer.send_and_wait("stopped", b"before", partition=0)
        assert await asyncio.wait_for(next_value(), WAIT_S) == b"before"
        dev.signal_node(old, signal.SIGSTOP)
        try:
            await asyncio.wait_for(
                producer.send_and_wait("stopped", b"during", partition=0), STOPPED_S
            )
            assert await asyncio.wait_for(next_value(), STOPPED_S) == b"during"
        finally:
            dev.signal_node(old, signal.SIGCONT)


STOPPED_S = 20.0
"""At most how long the stopped leader stays stopped (within a request timeout, 30 s)."""
