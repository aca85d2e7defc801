"""node/transport.py against a stranger on its Raft port (issue 13): nothing is buffered or
believed before a valid Hello, and a peer cannot speak for anyone else after it.

Each attack uses raw loopback sockets against one real Transport and checks the attack fails
and changes nothing: no delivery, no advertised address stored, the real peer still connects."""

from __future__ import annotations

import asyncio

import pytest

from liferaft_proto.v1 import errors_pb2, raft_pb2
from node.config import RAFT_PORT_OFFSET
from node.raft_wire import FRAME_HEADER, HELLO, LEADERS, REFUSE, encode_message, frame
from node.transport import Transport
from raft import Message, MessageType
from tests.node.loops import event_loop_policy  # noqa: F401  (every test on each loop)
from tests.node.test_transport import Node, _free_pair, _until


def _raft_port(address: str) -> int:
    return int(address.rsplit(":", 1)[1]) + RAFT_PORT_OFFSET


async def _open(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", _raft_port(address))


def _hello(from_node: int, to_node: int, advertise: str = "", cluster: str = "c") -> bytes:
    h = raft_pb2.Hello(
        cluster_id=cluster, from_node=from_node, to_node=to_node, advertise=advertise
    )
    return frame(HELLO, h.SerializeToString())


async def _closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything the node sends until it closes the connection (fails if it does not)."""
    return await asyncio.wait_for(reader.read(), timeout)


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    size, kind = FRAME_HEADER.unpack(await reader.readexactly(FRAME_HEADER.size))
    return kind, await reader.readexactly(size - 1)


async def test_a_huge_first_frame_is_refused_before_it_is_buffered() -> None:
    peers = {1: f"127.0.0.1:{_free_pair()}", 2: f"127.0.0.1:{_free_pair()}"}
    a = Node(1, "c", peers)
    await a.t.start()
    try:
        reader, writer = await _open(peers[1])
        writer.write(FRAME_HEADER.pack(256 << 20, HELLO) + b"\0" * 65536)
        assert await _closed(reader) == b""
        writer.close()
        assert a.t.stats.handshakes_refused == 1
        # A Hello of a few KiB + 1 is refused too: the cap is on the claim, not the bytes sent.
        reader, writer = await _open(peers[1])
        writer.write(FRAME_HEADER.pack(4097, HELLO))
        assert await _closed(reader) == b""
        writer.close()
        assert a.t.connected_peers() == [] and a.got == []
    finally:
        await a.t.stop()


async def test_idle_connections_are_capped_and_closed_at_the_handshake_deadline() -> None:
    peers = {1: f"127.0.0.1:{_free_pair()}", 2: f"127.0.0.1:{_free_pair()}"}
    a = Node(1, "c", peers)
    a.t.max_unauthenticated = 5
    a.t.hello_timeout_s = 0.5
    await a.t.start()
    b: Node | None = None
    try:
        conns = [await _open(peers[1]) for _ in range(20)]
        closed = await asyncio.gather(*(_closed(r, 5.0) for r, _ in conns))
        assert closed == [b""] * 20  # every one closed: 15 at once, 5 at the deadline
        assert a.t.stats.connections_over_limit == 15
        assert a.t.stats.handshakes_timed_out == 5
        for _, w in conns:
            w.close()
        # The real peer still gets in.
        b = Node(2, "c", peers)
        await b.t.start()
        await _until(lambda: a.t.connected_peers() == [2])
    finally:
        await a.t.stop()
        if b is not None:
            await b.t.stop()


@pytest.mark.parametrize(
    "advertise", ["evil-host", "evil:0", "evil:70000", "0.0.0.0:9092", "a b:1", "x" * 300 + ":1"]
)
async def test_a_hello_with_a_malformed_advertise_is_refused(advertise: str) -> None:
    peers = {1: f"127.0.0.1:{_free_pair()}", 2: f"127.0.0.1:{_free_pair()}"}
    a = Node(1, "c", peers)
    stored: list[tuple[int, str]] = []
    a.t.on_peer_advertise = lambda peer, addr: stored.append((peer, addr))
    await a.t.start()
    try:
        reader, writer = await _open(peers[1])
        writer.write(_hello(2, 1, advertise))
        kind, payload = await _read_frame(reader)
        assert kind == REFUSE
        detail = errors_pb2.ErrorDetail.FromString(payload)
        assert detail.code == errors_pb2.INVALID_REQUEST
        assert "advertised address" in detail.message
        writer.close()
        assert stored == [] and a.t.connected_peers() == []
    finally:
        await a.t.stop()


async def test_a_peer_speaks_only_for_itself() -> None:
    """After a valid Hello as node 2: a message claiming to be to another node, or gossip
    claiming to come from another node, drops the connection and delivers nothing."""
    peers = {
        1: f"127.0.0.1:{_free_pair()}",
        2: f"127.0.0.1:{_free_pair()}",
        3: f"127.0.0.1:{_free_pair()}",
    }
    a = Node(1, "c", peers)
    await a.t.start()
    try:
        for bad in (
            lambda: _batch(Message(MessageType.HEARTBEAT, to=3, frm=2, term=1)),
            lambda: _batch(Message(MessageType.HEARTBEAT, to=1, frm=3, term=1)),
            lambda: frame(LEADERS, raft_pb2.LeaderStates(from_node=3).SerializeToString()),
            lambda: frame(LEADERS, b"\xff\xff\xff"),
        ):
            reader, writer = await _open(peers[1])
            writer.write(_hello(2, 1, "good-host:9092"))
            kind, _ = await _read_frame(reader)
            assert kind == HELLO
            writer.write(bad())
            assert await _closed(reader) == b""
            writer.close()
        assert a.got == [] and a.leaders == []
    finally:
        await a.t.stop()


def _batch(msg: Message) -> bytes:
    parts: list[bytes] = []
    size = encode_message("g", msg, parts)
    return FRAME_HEADER.pack(size + 1, 3) + b"".join(parts)


async def test_frames_after_the_hello_are_capped_at_the_configured_size() -> None:
    peers = {1: f"127.0.0.1:{_free_pair()}", 2: f"127.0.0.1:{_free_pair()}"}
    t = Transport(1, "c", peers, deliver=lambda g, m: None, listen=peers[1], max_frame_bytes=8192)
    await t.start()
    try:
        reader, writer = await _open(peers[1])
        writer.write(_hello(2, 1))
        assert (await _read_frame(reader))[0] == HELLO
        writer.write(FRAME_HEADER.pack(8193, 3))
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            while True:  # keepalives may come first; then the node hangs up
                await asyncio.wait_for(_read_frame(reader), 5)
        writer.close()
    finally:
        await t.stop()
