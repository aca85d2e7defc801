"""The stream listener (issue 18) on a real three-node cluster, spoken to in raw frames.

A tiny client here (liferaft_proto/stream_wire.py over asyncio streams) opens a ProduceStream
and a FetchStream at each node's base port + 400, where metadata says: records produced there
are fetched back there; NOT_LEADER on a follower is a per-request error for a produce and the
END of a FetchStream; every kind of bad input ends its connection with an END that says why,
writes nothing, and the node serves the next connection. With TLS and SCRAM on, a connection
without the right password, or without TLS, is refused and one with it produces.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from client import AdminClient
from liferaft.certs import create_client_cert
from liferaft.launcher import DevCluster
from liferaft_proto import records
from liferaft_proto import stream_wire as wire
from liferaft_proto.credentials import MECHANISM_KEY, PASSWORD_KEY, USER_KEY
from liferaft_proto.ports import METRICS, STREAM
from liferaft_proto.v1 import broker_pb2, errors_pb2
from tests.clusters import running_cluster
from tests.integration.test_auth_sasl import PASSWORD, USER, cli, sasl
from tests.integration.test_replication import describe

pytestmark = pytest.mark.asyncio

WAIT_S = 30.0
READY = (wire.READY, bytes([wire.READY_PINGS]))
"""A node's READY: the stream is open, and it answers PING."""


class Conn:
    """One stream connection, in frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def dial(cls, address: str, tls: ssl.SSLContext | None = None) -> Conn:
        host, port = address.rsplit(":", 1)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port) + STREAM.offset, ssl=tls), WAIT_S
        )
        return cls(reader, writer)

    def send(self, kind: int, payload: bytes = b"") -> None:
        self.writer.write(wire.frame(kind, payload))

    async def read(self) -> tuple[int, bytes]:
        async with asyncio.timeout(WAIT_S):
            length, kind = wire.FRAME_HEADER.unpack(
                await self.reader.readexactly(wire.FRAME_HEADER.size)
            )
            return kind, await self.reader.readexactly(length - 1)

    async def open(
        self,
        method: str,
        fetch: broker_pb2.FetchRequest | None = None,
        credentials: dict[str, bytes] | None = None,
    ) -> tuple[int, bytes]:
        self.send(
            wire.OPEN,
            broker_pb2.StreamOpen(
                method=method, fetch=fetch, credentials=credentials or {}
            ).SerializeToString(),
        )
        return await self.read()

    async def end(self) -> broker_pb2.StreamEnd:
        """Read to the END frame (skipping answers), and see the node close the connection."""
        while True:
            kind, payload = await self.read()
            if kind == wire.END:
                break
        async with asyncio.timeout(WAIT_S):
            assert await self.reader.read() == b"", "the node did not close after END"
        return broker_pb2.StreamEnd.FromString(payload)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


def produce_request(topic: str, cid: int, *values: bytes) -> broker_pb2.ProduceRequest:
    return broker_pb2.ProduceRequest(
        topic=topic,
        partition=0,
        acks=-1,
        timeout_ms=20_000,
        correlation_id=cid,
        records=records.build_batch([records.Record(value=v) for v in values]),
    )


async def produce(
    address: str,
    *requests: broker_pb2.ProduceRequest,
    tls: ssl.SSLContext | None = None,
    credentials: dict[str, bytes] | None = None,
) -> dict[int, broker_pb2.ProduceResponse]:
    """One ProduceStream: the requests, two to a frame, then CLOSE; the answers by
    correlation id, and a clean END."""
    conn = await Conn.dial(address, tls)
    try:
        assert await conn.open(wire.PRODUCE_STREAM, credentials=credentials) == READY
        for i in range(0, len(requests), 2):
            message = broker_pb2.ProduceStreamRequest(requests=requests[i : i + 2])
            conn.send(wire.PRODUCE, message.SerializeToString())
        conn.send(wire.CLOSE)
        got: dict[int, broker_pb2.ProduceResponse] = {}
        while True:
            kind, payload = await conn.read()
            if kind == wire.END:
                end = broker_pb2.StreamEnd.FromString(payload)
                assert not end.HasField("error"), end
                break
            assert kind == wire.PRODUCED, wire.KIND_NAMES.get(kind, kind)
            for response in broker_pb2.ProduceStreamResponse.FromString(payload).responses:
                assert response.correlation_id not in got
                got[response.correlation_id] = response
        return got
    finally:
        await conn.close()


async def fetch_values(address: str, topic: str, n: int, *, close: bool = False) -> list[bytes]:
    """The first n values of partition 0, over one FetchStream that the client then drops (or
    ends with CLOSE, and the node with a clean END)."""
    conn = await Conn.dial(address)
    try:
        request = broker_pb2.FetchRequest(topic=topic, partition=0, offset=0, max_wait_ms=200)
        assert await conn.open(wire.FETCH_STREAM, fetch=request) == READY
        values: list[bytes] = []
        while len(values) < n:
            kind, payload = await conn.read()
            assert kind == wire.FETCHED, wire.KIND_NAMES.get(kind, kind)
            answer = broker_pb2.FetchResponse.FromString(payload)
            values += [r.value or b"" for r in records.iter_records(answer.records)]
        if values:  # an answer came: the stream is counted open
            assert metric(address, "liferaft_fetch_streams_open") >= 1
        if close:
            conn.send(wire.CLOSE)
            assert not (await conn.end()).HasField("error")
        return values
    finally:
        await conn.close()


def metric(address: str, name: str, **labels: str) -> float:
    """One sample of a node's /metrics (0 if absent)."""
    host, port = address.rsplit(":", 1)
    url = f"http://{host}:{int(port) + METRICS.offset}/metrics"
    with urllib.request.urlopen(url, timeout=10) as page:
        text = page.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return 0.0


async def leader_and_follower(
    cluster: DevCluster, topic: str, security: dict[str, Any] | None = None
) -> tuple[str, str]:
    """A new topic's (one partition, RF 3) leader and a follower, by address."""
    async with AdminClient(cluster.bootstrap, **(security or {})) as admin:
        await admin.create_topic(topic, 1, 3)
        leader = (await admin.describe_topics([topic]))[topic].partitions[0].leader
    follower = next(n for n in cluster.nodes if n != leader)
    return cluster.node(leader).address, cluster.node(follower).address


async def test_produce_then_fetch_over_frames(cluster: DevCluster) -> None:
    md = cluster.metadata(1, timeout_s=10)
    assert {b.stream_port for b in md.brokers} == {
        cluster.node(b.node_id).port + STREAM.offset for b in md.brokers
    }
    leader, _ = await leader_and_follower(cluster, "plain")
    produced = {"api": "Produce", "outcome": "OK"}
    before = metric(leader, "liferaft_requests_total", **produced)
    sent = [produce_request("plain", 10 + i, b"a%d" % i, b"b%d" % i) for i in range(5)]
    got = await produce(leader, *sent)
    # Counted as the gRPC ProduceStream's requests are: one Produce each.
    assert metric(leader, "liferaft_requests_total", **produced) == before + 5
    assert sorted(got) == [10, 11, 12, 13, 14]
    assert all(not r.HasField("error") for r in got.values()), got
    assert sorted(r.base_offset for r in got.values()) == [0, 2, 4, 6, 8]
    values = await fetch_values(leader, "plain", 10)
    assert values == [v for i in range(5) for v in (b"a%d" % i, b"b%d" % i)]
    assert await fetch_values(leader, "plain", 10, close=True) == values
    # The open FetchStream was a gauge, down again once the client closed it.
    async with asyncio.timeout(WAIT_S):
        while metric(leader, "liferaft_fetch_streams_open") != 0:
            await asyncio.sleep(0.1)
    assert metric(leader, "liferaft_requests_total", api="FetchStream", outcome="OK") >= 1


async def test_not_leader_is_a_request_error_and_ends_a_fetch(cluster: DevCluster) -> None:
    leader, follower = await leader_and_follower(cluster, "elsewhere")
    got = await produce(follower, produce_request("elsewhere", 7, b"x"))
    assert got[7].error.code == errors_pb2.NOT_LEADER, got
    assert got[7].error.leader_address == leader
    conn = await Conn.dial(follower)
    try:
        request = broker_pb2.FetchRequest(topic="elsewhere", partition=0)
        assert await conn.open(wire.FETCH_STREAM, fetch=request) == READY
        end = await conn.end()
        assert end.error.code == errors_pb2.NOT_LEADER and end.error.leader_address == leader
    finally:
        await conn.close()
    assert await fetch_values(leader, "elsewhere", 0) == []


async def test_a_ping_is_answered_at_once_with_its_bytes(cluster: DevCluster) -> None:
    """PONG says the node's process runs (client/stream_transport.py asks when a stream has been
    silent while answers are awaited): on a ProduceStream between requests, and on a
    FetchStream that has nothing to send."""
    leader, _ = await leader_and_follower(cluster, "pings")
    conn = await Conn.dial(leader)
    try:
        assert await conn.open(wire.PRODUCE_STREAM) == READY
        conn.send(wire.PING, b"12345678")
        assert await conn.read() == (wire.PONG, b"12345678")
        message = broker_pb2.ProduceStreamRequest(requests=[produce_request("pings", 1, b"a")])
        conn.send(wire.PRODUCE, message.SerializeToString())
        conn.send(wire.PING)
        got = [await conn.read(), await conn.read()]
        assert (wire.PONG, b"") in got and {kind for kind, _ in got} == {wire.PONG, wire.PRODUCED}
    finally:
        await conn.close()
    conn = await Conn.dial(leader)
    try:
        request = broker_pb2.FetchRequest(topic="pings", partition=0, offset=1)
        assert await conn.open(wire.FETCH_STREAM, fetch=request) == READY
        conn.send(wire.PING, b"f")
        assert await conn.read() == (wire.PONG, b"f")
    finally:
        await conn.close()


async def test_a_client_that_does_not_read_holds_its_fetch_stream(cluster: DevCluster) -> None:
    """Back-pressure: the node stops making answers for a FetchStream whose client reads
    nothing once its socket's buffers are full (about WRITE_HIGH_WATER plus the kernel's few
    MB), instead of buffering the whole log; then the client reads, and gets every batch."""
    leader, _ = await leader_and_follower(cluster, "slow")
    chunk = b"s" * (64 << 10)
    batches = 320  # 128 KiB each, 40 MiB in all: far beyond a socket's buffers
    for first in range(0, batches, 40):
        sent = [produce_request("slow", i, chunk, chunk) for i in range(first, first + 40)]
        assert all(not r.HasField("error") for r in (await produce(leader, *sent)).values())
    fetched = {"api": "FetchStream", "outcome": "OK"}
    before = metric(leader, "liferaft_requests_total", **fetched)
    conn = await Conn.dial(leader)
    try:
        request = broker_pb2.FetchRequest(topic="slow", partition=0, max_bytes=128 << 10)
        conn.send(
            wire.OPEN,
            broker_pb2.StreamOpen(method="FetchStream", fetch=request).SerializeToString(),
        )
        await asyncio.sleep(3)  # time enough to send everything, were nothing holding it
        made = metric(leader, "liferaft_requests_total", **fetched) - before
        assert 0 < made < batches / 2, made  # 47 here; without it, every one
        assert await conn.read() == READY
        got = 0
        while got < 2 * batches:
            kind, payload = await conn.read()
            assert kind == wire.FETCHED
            got += sum(
                1
                for _ in records.iter_records(broker_pb2.FetchResponse.FromString(payload).records)
            )
        assert got == 2 * batches
    finally:
        await conn.close()


def _open(method: str) -> bytes:
    return wire.frame(wire.OPEN, broker_pb2.StreamOpen(method=method).SerializeToString())


_PRODUCE_ONE = broker_pb2.ProduceStreamRequest(
    requests=[produce_request("bad", 1, b"must not be written")]
).SerializeToString()

BAD_INPUT: dict[str, tuple[bytes, str]] = {
    "garbage": (b"\xff" * 64, "over the limit"),
    "an empty frame": (wire.FRAME_HEADER.pack(0, wire.OPEN), "without a kind"),
    "half a header, then silence": (struct.pack(">I", 0), "no OPEN frame within"),
    "a first frame that is not OPEN": (wire.frame(wire.PRODUCE, _PRODUCE_ONE), "must be OPEN"),
    "an unknown kind": (wire.frame(99, b"x"), "unknown kind 99"),
    "an OPEN over its limit": (
        wire.FRAME_HEADER.pack(wire.MAX_OPEN_BYTES + 2, wire.OPEN),
        "over the limit",
    ),
    "an OPEN that does not parse": (wire.frame(wire.OPEN, b"\xff\xff\xff"), "not a liferaft"),
    "an unknown method": (_open("Produce"), "unknown stream method"),
    "a second OPEN": (
        _open("ProduceStream") + _open("ProduceStream"),
        "an OPEN frame on a Produce",
    ),
    "a PRODUCE that does not parse": (
        _open("ProduceStream") + wire.frame(wire.PRODUCE, b"\xff\xff\xff"),
        "not a liferaft.v1.ProduceStreamRequest",
    ),
    "a frame over the limit": (
        _open("ProduceStream") + wire.FRAME_HEADER.pack(wire.MAX_FRAME_BYTES + 2, wire.PRODUCE),
        "over the limit",
    ),
    "a PING over its limit": (
        _open("ProduceStream") + wire.frame(wire.PING, b"p" * (wire.MAX_PING_BYTES + 1)),
        f"a PING of {wire.MAX_PING_BYTES + 1} bytes",
    ),
    "PRODUCE on a FetchStream": (
        wire.frame(
            wire.OPEN,
            broker_pb2.StreamOpen(
                method="FetchStream", fetch=broker_pb2.FetchRequest(topic="bad", partition=0)
            ).SerializeToString(),
        )
        + wire.frame(wire.PRODUCE, _PRODUCE_ONE),
        "PRODUCE frame on a FetchStream",
    ),
}


async def test_bad_input_ends_the_stream_and_changes_nothing(cluster: DevCluster) -> None:
    leader, _ = await leader_and_follower(cluster, "bad")
    for what, (data, words) in BAD_INPUT.items():
        conn = await Conn.dial(leader)
        try:
            conn.writer.write(data)
            end = await conn.end()
        finally:
            await conn.close()
        assert end.error.code == errors_pb2.INVALID_REQUEST, (what, end)
        assert words in end.error.message, (what, end.error.message)
    # Nothing was written, and the node serves the next stream.
    assert (await describe(cluster, "bad")).partitions[0].high_watermark == 0
    got = await produce(leader, produce_request("bad", 2, b"good"))
    assert got[2].base_offset == 0 and not got[2].HasField("error")


def client_tls(dev: DevCluster) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(dev.tls_dir / "ca.crt"))
    ctx.check_hostname = False
    return ctx


@pytest.fixture(scope="module")
def sasl_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """SASL_SSL on the client listeners, alice made with a node's key (as test_auth_sasl)."""
    args = ["--client-security-protocol", "SASL_SSL"]
    with running_cluster(tmp_path_factory.mktemp("stream-sasl"), 3, args) as dev:
        done = cli(
            dev,
            "--security-protocol",
            "SSL",
            "--ssl-cafile",
            str(dev.tls_dir / "ca.crt"),
            "user",
            "add",
            USER,
            "--password-stdin",
            "--as-node",
            str(dev.tls_dir / "node-2"),
            stdin=PASSWORD + "\n",
        )
        assert done.returncode == 0, done.stderr
        yield dev


def login(password: str) -> dict[str, bytes]:
    return {
        USER_KEY: USER.encode(),
        PASSWORD_KEY: password.encode(),
        MECHANISM_KEY: b"SCRAM-SHA-512",
    }


async def test_tls_and_scram(sasl_cluster: DevCluster) -> None:
    security = sasl(sasl_cluster)
    leader, _ = await leader_and_follower(sasl_cluster, "secure", security)
    tls = client_tls(sasl_cluster)
    for credentials in ({}, login("wrong"), {USER_KEY: USER.encode()}):
        conn = await Conn.dial(leader, tls)
        try:
            kind, payload = await conn.open(wire.PRODUCE_STREAM, credentials=credentials)
        finally:
            await conn.close()
        assert kind == wire.END, credentials
        end = broker_pb2.StreamEnd.FromString(payload)
        assert end.error.code == errors_pb2.SASL_AUTHENTICATION_FAILED, (credentials, end)
    # Plaintext to a TLS listener: the handshake fails, no stream opens.
    conn = await Conn.dial(leader)
    try:
        conn.writer.write(_open("ProduceStream"))
        async with asyncio.timeout(WAIT_S):
            assert wire.frame(*READY) not in await conn.reader.read(64)
    except ConnectionError:
        pass
    finally:
        await conn.close()
    async with AdminClient(sasl_cluster.bootstrap, **security) as admin:
        described = await admin.describe_topics(["secure"])
    assert described["secure"].partitions[0].high_watermark == 0
    got = await produce(
        leader, produce_request("secure", 3, b"in"), tls=tls, credentials=login(PASSWORD)
    )
    assert got[3].base_offset == 0 and not got[3].HasField("error"), got


@pytest.fixture(scope="module")
def mtls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """Client certificates required, the authorizer on, alice's certificate a super user."""
    args = ["--client-tls", "--client-tls-auth", "required"]
    args += ["--authorizer", "--super-users", "User:CN=alice"]
    with running_cluster(tmp_path_factory.mktemp("stream-mtls"), 3, args) as dev:
        yield dev


def with_cert(dev: DevCluster, folder: Path | None) -> ssl.SSLContext:
    ctx = client_tls(dev)
    if folder is not None:
        ctx.load_cert_chain(folder / "client.crt", folder / "client.key")
    return ctx


async def test_client_certificate_required_and_names_the_caller(mtls_cluster: DevCluster) -> None:
    alice = create_client_cert(mtls_cluster.tls_dir, "alice")
    bob = create_client_cert(mtls_cluster.tls_dir, "bob")
    as_alice = {
        "security_protocol": "SSL",
        "ssl_cafile": str(mtls_cluster.tls_dir / "ca.crt"),
        "ssl_certfile": str(alice / "client.crt"),
        "ssl_keyfile": str(alice / "client.key"),
    }
    leader, _ = await leader_and_follower(mtls_cluster, "certs", as_alice)
    # No certificate: the handshake is refused, no stream opens.
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        conn = await Conn.dial(leader, with_cert(mtls_cluster, None))
        try:
            await conn.open(wire.PRODUCE_STREAM)
        finally:
            await conn.close()
    # bob's certificate is the cluster's, but no ACL lets him write or read: his requests are
    # refused as his (the principal reaches the stream's reader), his FetchStream ends.
    got = await produce(
        leader, produce_request("certs", 1, b"bob"), tls=with_cert(mtls_cluster, bob)
    )
    assert got[1].error.code == errors_pb2.TOPIC_AUTHORIZATION_FAILED, got
    conn = await Conn.dial(leader, with_cert(mtls_cluster, bob))
    try:
        request = broker_pb2.FetchRequest(topic="certs", partition=0)
        assert await conn.open(wire.FETCH_STREAM, fetch=request) == READY
        assert (await conn.end()).error.code == errors_pb2.TOPIC_AUTHORIZATION_FAILED
    finally:
        await conn.close()
    # alice (a super user by her certificate) writes.
    got = await produce(
        leader, produce_request("certs", 2, b"alice"), tls=with_cert(mtls_cluster, alice)
    )
    assert got[2].base_offset == 0 and not got[2].HasField("error"), got


async def test_the_listener_can_be_turned_off(tmp_path: Path) -> None:
    """--no-stream-listener: metadata says 0 (clients use gRPC) and nothing listens there."""
    with running_cluster(tmp_path, 1, ["--no-stream-listener"]) as dev:
        assert [b.stream_port for b in dev.metadata(1, timeout_s=10).brokers] == [0]
        with pytest.raises(ConnectionRefusedError):
            await Conn.dial(dev.node(1).address)
