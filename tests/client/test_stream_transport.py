"""client/stream_transport.py's pure parts: when a client dials the stream listeners at all,
what it sends as credentials and TLS, and how it reads frames (any split of the bytes gives the
same frames; a frame over the limit ends the stream as a retriable transport failure). The
transport against real nodes: tests/integration/test_client_stream_transport.py."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from pathlib import Path

import pytest

import client.stream_transport
from chaos.answers import AnswerDropper
from client.cluster import ClientConfig, Cluster
from client.errors import BrokerUnavailableError, NotLeaderError
from client.security import Security
from client.stream_transport import (
    KEEPALIVE_IDLE_S,
    USER_TIMEOUT_MS,
    FetchStreamConnection,
    StreamConnection,
    open_credentials,
    stream_ssl_context,
)
from liferaft.certs import create_certs, create_client_cert
from liferaft_proto import stream_wire
from liferaft_proto.credentials import MECHANISM_KEY, PASSWORD_KEY, USER_KEY
from liferaft_proto.v1 import broker_pb2
from liferaft_proto.v1.errors_pb2 import ErrorCode, ErrorDetail


async def test_the_listeners_are_dialled_unless_told_not_to_or_interceptors_must_see_all() -> None:
    def dialer(**settings: object) -> object:
        return Cluster(ClientConfig.build("127.0.0.1:1", **settings)).dialer

    assert dialer() is not None
    assert dialer(stream_transport=False) is None
    assert dialer(interceptors=tuple(AnswerDropper().interceptors())) is None


def test_credentials_are_the_grpc_metadata_under_the_same_keys() -> None:
    security = Security.from_options(
        {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_plain_username": "alice",
            "sasl_plain_password": "pw",
        }
    )
    assert open_credentials(security.call_metadata()) == {
        USER_KEY: b"alice",
        PASSWORD_KEY: b"pw",
        MECHANISM_KEY: b"SCRAM-SHA-256",
    }
    assert open_credentials(Security().call_metadata()) == {}


def test_tls_as_the_grpc_channel_has_it(tmp_path: Path) -> None:
    assert stream_ssl_context(Security()) is None
    create_certs(tmp_path, [1])
    alice = create_client_cert(tmp_path, "alice")
    security = Security.from_options(
        {
            "security_protocol": "SSL",
            "ssl_cafile": tmp_path / "ca.crt",
            "ssl_certfile": alice / "client.crt",
            "ssl_keyfile": alice / "client.key",
        }
    )
    context = stream_ssl_context(security)
    assert context is not None
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1  # the given CA only, not the system's too


class Sink:
    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []
        self.ended: list[BaseException | None] = []
        self.busy = False

    def on_frame(self, kind: int, payload: bytes) -> None:
        self.frames.append((kind, payload))

    def on_end(self, failure: BaseException | None) -> None:
        self.ended.append(failure)

    def waiting(self) -> bool:
        return self.busy


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.aborted = False
        self.written: list[bytes] = []
        self.node: StreamConnection | None = None
        """Set: a running node behind it, which answers each PING with a PONG at once."""

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written.append(bytes(data))
        ping = stream_wire.frame(stream_wire.PING)
        if self.node is not None and bytes(data) == ping:
            pong = stream_wire.frame(stream_wire.PONG)
            asyncio.get_running_loop().call_soon(self.node.data_received, pong)

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True


def connection() -> tuple[StreamConnection, Sink, Transport]:
    sink = Sink()
    conn = StreamConnection("127.0.0.1:1", sink, asyncio.get_running_loop())
    transport = Transport()
    conn.connection_made(transport)
    return conn, sink, transport


@pytest.mark.parametrize("step", [1, 2, 5, 7, 1000])
async def test_frames_come_out_whole_however_the_bytes_are_split(step: int) -> None:
    conn, sink, _ = connection()
    payloads = [b"", b"x", b"y" * 300, b"z" * 5]
    end = broker_pb2.StreamEnd(
        error=ErrorDetail(code=ErrorCode.NOT_LEADER, message="moved", leader_id=2, retriable=True)
    )
    data = stream_wire.frame(stream_wire.READY)
    data += b"".join(stream_wire.frame(stream_wire.FETCHED, p) for p in payloads)
    data += stream_wire.frame(stream_wire.END, end.SerializeToString())
    data += stream_wire.frame(stream_wire.FETCHED, b"after the end")
    for i in range(0, len(data), step):
        conn.data_received(data[i : i + step])
    assert conn.ready.done() and conn.ready.exception() is None
    assert sink.frames == [(stream_wire.FETCHED, p) for p in payloads]
    (failure,) = sink.ended
    assert isinstance(failure, NotLeaderError) and failure.leader_id == 2  # error_from_detail


async def test_a_frame_over_the_limit_ends_the_stream_before_it_is_buffered() -> None:
    conn, sink, transport = connection()
    conn.data_received(stream_wire.frame(stream_wire.READY))
    conn.data_received(stream_wire.FRAME_HEADER.pack(stream_wire.MAX_FRAME_BYTES + 2, 5))
    (failure,) = sink.ended
    assert isinstance(failure, BrokerUnavailableError) and failure.retriable and failure.transport
    assert transport.aborted


async def test_before_ready_only_ready_or_end_and_a_lost_connection_fails_the_opener() -> None:
    conn, sink, _ = connection()
    conn.data_received(stream_wire.frame(stream_wire.FETCHED, b"early"))
    with pytest.raises(BrokerUnavailableError):
        await conn.ready
    assert sink.frames == [] and sink.ended == []

    conn, sink, _ = connection()
    conn.connection_lost(ConnectionResetError())
    with pytest.raises(BrokerUnavailableError, match="lost"):
        await conn.ready


async def test_a_stream_connection_notices_a_silent_host_by_tcp_keepalive() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    transport, conn = await loop.create_connection(
        lambda: StreamConnection("x", Sink(), loop), "127.0.0.1", port
    )
    try:
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE_S
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == USER_TIMEOUT_MS
    finally:
        conn.abort()
        server.close()


PINGS_READY = stream_wire.frame(stream_wire.READY, bytes([stream_wire.READY_PINGS]))


@pytest.fixture
def quick_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog's times, shortened (the logic is the same)."""
    monkeypatch.setattr(client.stream_transport, "SILENT_S", 0.05)
    monkeypatch.setattr(client.stream_transport, "PONG_WITHIN_S", 0.1)
    monkeypatch.setattr(client.stream_transport, "WATCH_EVERY_S", 0.01)


async def test_a_node_silent_while_answers_are_awaited_is_pinged_then_given_up(
    quick_watch: None,
) -> None:
    """A stopped process (SIGSTOP) whose kernel still takes the bytes: without the PING the
    requests would wait for their deadlines; now the stream fails as a lost connection."""
    conn, sink, transport = connection()
    conn.data_received(PINGS_READY)
    sink.busy = True
    async with asyncio.timeout(5):
        while not sink.ended:
            await asyncio.sleep(0.01)
    assert transport.written == [stream_wire.frame(stream_wire.PING)]  # one, unanswered
    (failure,) = sink.ended
    assert isinstance(failure, BrokerUnavailableError) and failure.retriable and failure.transport
    assert "not even a ping" in str(failure)
    assert transport.aborted and conn.ended


async def test_a_node_that_answers_the_ping_keeps_its_stream(quick_watch: None) -> None:
    conn, sink, transport = connection()
    transport.node = conn
    conn.data_received(PINGS_READY)
    sink.busy = True
    await asyncio.sleep(1.0)  # ten PONG_WITHIN_S
    assert len(transport.written) >= 2, transport.written  # asked again after each silence
    assert sink.ended == [] and not transport.aborted
    assert sink.frames == []  # a PONG is the connection's own, not an answer


async def test_no_ping_while_nothing_is_awaited_nor_to_a_node_that_does_not_answer_them(
    quick_watch: None,
) -> None:
    idle, idle_sink, idle_transport = connection()
    idle.data_received(PINGS_READY)
    older, older_sink, older_transport = connection()
    older.data_received(stream_wire.frame(stream_wire.READY))  # a node from before PING
    older_sink.busy = True
    await asyncio.sleep(0.5)
    assert idle_transport.written == [] and older_transport.written == []
    assert idle_sink.ended == [] and older_sink.ended == []


async def test_no_verdict_on_a_round_this_loop_was_late_for(quick_watch: None) -> None:
    """An application that holds up its own event loop past PONG_WITHIN_S has not heard the
    node's PONG yet even if it came: uvloop runs due timers before it reads the sockets. The
    late round gives no verdict; the PONG, read next, keeps the stream."""
    conn, sink, transport = connection()
    conn.data_received(PINGS_READY)
    sink.busy = True
    async with asyncio.timeout(5):
        while not transport.written:
            await asyncio.sleep(0.005)
    loop = asyncio.get_running_loop()
    # Due after the watchdog's next round, before this loop is free again: run after it.
    loop.call_later(0.2, conn.data_received, stream_wire.frame(stream_wire.PONG))
    time.sleep(0.3)  # the application's own work, on the loop
    await asyncio.sleep(0.05)
    assert sink.ended == [] and not transport.aborted


def test_a_fetch_stream_awaits_answers_while_it_reads() -> None:
    """A running node answers a FetchStream at least every max_wait_ms, so its silence while the
    consumer reads is worth a PING; not while the consumer holds the socket (its own silence)."""
    fetch = FetchStreamConnection()
    assert fetch.waiting()
    fetch._reading_paused = True  # the reader holds HOLD answers: the socket is not read
    assert not fetch.waiting()
    fetch._reading_paused = False
    fetch.on_end(None)
    assert not fetch.waiting()
