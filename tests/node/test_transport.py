"""node/transport.py over real loopback sockets: two nodes connect, exchange Raft messages and
leader gossip, see each other come and go; a node of another cluster, or one that dialled the
wrong node, is refused with a reason and never delivers anything."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import pytest

from liferaft_proto.ports import RAFT_PORT_OFFSET
from liferaft_proto.v1 import raft_pb2
from node.transport import Transport
from raft import Entry, Message, MessageType


def _free_pair() -> int:
    """A port p with p and p + RAFT_PORT_OFFSET free (only the Raft one is bound here)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + RAFT_PORT_OFFSET < 65536:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + RAFT_PORT_OFFSET))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair")


class Node:
    def __init__(self, node_id: int, cluster: str, peers: dict[int, str]) -> None:
        self.got: list[tuple[str, Message]] = []
        self.leaders: list[tuple[int, raft_pb2.LeaderStates]] = []
        self.changes: list[tuple[int, bool]] = []
        self.t = Transport(
            node_id,
            cluster,
            peers,
            deliver=lambda g, m: self.got.append((g, m)),
            on_leaders=lambda p, s: self.leaders.append((p, s)),
            advertise=f"client-{node_id}:9092",
            keepalive_s=0.02,
            dead_after_s=0.3,
            listen=peers[node_id],
        )
        self.t.on_peer_change = lambda p, alive: self.changes.append((p, alive))


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def _peers() -> dict[int, str]:
    return {1: f"127.0.0.1:{_free_pair()}", 2: f"127.0.0.1:{_free_pair()}"}


async def test_two_nodes_exchange_messages_and_gossip_and_notice_a_stop() -> None:
    peers = _peers()
    a, b = Node(1, "c", peers), Node(2, "c", peers)
    await b.t.start()
    await a.t.start()
    try:
        await _until(lambda: a.t.connected_peers() == [2] and b.t.connected_peers() == [1])
        data = b"batch" * 1000
        app = Message(
            MessageType.APP, to=2, frm=1, term=3, index=7, entries=(Entry(8, 3, data=data),)
        )
        a.t.send(2, "orders-0", app)
        a.t.send(2, "__controller", Message(MessageType.HEARTBEAT, to=2, frm=1, term=1))
        a.t.flush()
        b.t.send(1, "orders-0", Message(MessageType.APP_RESP, to=1, frm=2, term=3, index=8))
        b.t.flush()
        await _until(lambda: len(b.got) == 2 and len(a.got) == 1)
        assert b.got[0] == ("orders-0", app)
        assert b.got[1][0] == "__controller"
        assert a.got[0][1].index == 8
        b.t.broadcast_leaders(raft_pb2.LeaderStates(from_node=2))
        await _until(lambda: len(a.leaders) == 1)
        assert a.leaders[0][0] == 2
        await _until(lambda: (2, True) in a.changes and (1, True) in b.changes)
        await b.t.stop()
        await _until(lambda: (2, False) in a.changes)
        assert a.t.connected_peers() == []
        # Sending to a peer that is gone drops the message; nothing raises.
        a.t.send(2, "orders-0", app)
        a.t.flush()
    finally:
        await a.t.stop()
        await b.t.stop()


async def test_a_node_of_another_cluster_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    reason = "node 1 belongs to cluster 'alpha' but node 2 belongs to 'beta'"
    peers = _peers()
    a, b = Node(1, "alpha", peers), Node(2, "beta", peers)
    caplog.set_level(logging.WARNING, logger="liferaft.transport")
    await b.t.start()
    await a.t.start()
    try:
        await _until(lambda: any(reason in r.getMessage() for r in caplog.records))
        a.t.send(2, "g", Message(MessageType.HEARTBEAT, to=2, frm=1, term=1))
        a.t.flush()
        await asyncio.sleep(0.2)
        assert a.t.connected_peers() == [] and b.t.connected_peers() == []
        assert b.got == [] and a.got == []
        # The dialler heard why (the REFUSE frame), not just a closed socket.
        assert any(
            r.levelno == logging.ERROR and "refused" in r.getMessage() and reason in r.getMessage()
            for r in caplog.records
        )
    finally:
        await a.t.stop()
        await b.t.stop()


async def test_dialling_the_wrong_node_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    peers = _peers()
    # Node 1 believes node 2 lives where node 3 listens.
    c_peers = {1: peers[1], 3: peers[2]}
    a = Node(1, "c", {1: peers[1], 2: peers[2]})
    c = Node(3, "c", c_peers)
    caplog.set_level(logging.WARNING, logger="liferaft.transport")
    await c.t.start()
    await a.t.start()
    try:
        await _until(
            lambda: any(
                "dialled node 2 but reached node 3" in r.getMessage() for r in caplog.records
            )
        )
        assert a.t.connected_peers() == [] and c.t.connected_peers() == []
    finally:
        await a.t.stop()
        await c.t.stop()


async def test_a_raft_port_in_use_is_a_clear_error() -> None:
    from node.config import ConfigError

    peers = _peers()
    host, port = peers[1].rsplit(":", 1)
    with socket.socket() as s:
        s.bind((host, int(port) + RAFT_PORT_OFFSET))
        s.listen()
        node = Node(1, "c", peers)
        with pytest.raises(ConfigError, match="cannot listen for Raft peers"):
            await node.t.start()
        await node.t.stop()
