"""node/transport.py over real loopback sockets: two nodes connect, exchange Raft messages and
leader gossip, see each other come and go; a node of another cluster, or one that dialled the
wrong node, is refused with a reason and never delivers anything.

Over mutual TLS (the default in a real cluster), a peer is who its certificate says: a Hello
without a node certificate, with one from another CA, or with another node's certificate is
refused and changes nothing, and a dialler that reaches the wrong node hangs up before its Hello.
Certificates come from liferaft/certs.py, the code behind `liferaft certs create`."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from liferaft.certs import create_certs
from liferaft_proto.ports import RAFT_PORT_OFFSET
from liferaft_proto.v1 import errors_pb2, raft_pb2
from node.config import ConfigError, raft_address
from node.raft_wire import BATCH, FRAME_HEADER, HELLO, REFUSE, encode_message, frame
from node.tls import PeerTls, TlsFiles, cert_node_ids
from node.transport import Transport
from raft import Entry, Message, MessageType
from tests.node.loops import event_loop_policy  # noqa: F401  (every test on each loop)


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
    def __init__(
        self, node_id: int, cluster: str, peers: dict[int, str], tls: PeerTls | None = None
    ) -> None:
        self.got: list[tuple[str, Message]] = []
        self.leaders: list[tuple[int, raft_pb2.LeaderStates]] = []
        self.changes: list[tuple[int, bool]] = []
        self.advertised: list[tuple[int, str]] = []
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
            tls=tls,
        )
        self.t.on_peer_change = lambda p, alive: self.changes.append((p, alive))
        self.t.on_peer_advertise = lambda p, a: self.advertised.append((p, a))

    def untouched(self) -> bool:
        """Nothing a peer could have changed: no message, gossip, address or link came up."""
        return (
            self.got == []
            and self.leaders == []
            and self.advertised == []
            and self.t.connected_peers() == []
            and all(link.stats.connects == 0 for link in self.t.links.values())
        )


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def _peers() -> dict[int, str]:
    return {1: f"127.0.0.1:{_free_pair()}", 2: f"127.0.0.1:{_free_pair()}"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cluster CA with nodes 1-5 (4 and 5 for joining nodes), and beside it (other-ca/)
    another CA with ids 1-3."""
    root = tmp_path_factory.mktemp("tls")
    create_certs(root / "ours", [1, 2, 3, 4, 5], ["127.0.0.1"], cluster="c")
    create_certs(root / "other-ca", [1, 2, 3], ["127.0.0.1"], cluster="c")
    return root


def _tls(certs: Path, node_id: int, which: str = "ours") -> PeerTls:
    return PeerTls(TlsFiles.find(node_id, certs / which), node_id)


@pytest.mark.parametrize("secure", [False, True], ids=["plaintext", "mutual-tls"])
async def test_two_nodes_exchange_messages_and_gossip_and_notice_a_stop(
    secure: bool, certs: Path
) -> None:
    peers = _peers()
    tls1, tls2 = (_tls(certs, 1), _tls(certs, 2)) if secure else (None, None)
    a, b = Node(1, "c", peers, tls1), Node(2, "c", peers, tls2)
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


# -- mutual TLS: a peer is who its certificate says --------------------------------------------
def _client_context(certs: Path, cert_of: int | None, which: str = "ours") -> ssl.SSLContext:
    """What an intruder dials with: trusts our CA (so it gets as far as it can), and presents
    node `cert_of`'s certificate from CA `which`, or none."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(certs / "ours" / "ca.crt")
    if cert_of is not None:
        folder = certs / which / f"node-{cert_of}"
        ctx.load_cert_chain(folder / "node.crt", folder / "node.key")
    return ctx


async def _intrude(
    address: str, ctx: ssl.SSLContext | None, claim: int, to: int, **hello_fields: object
) -> bytes:
    """Dial the Raft port, send a Hello as node `claim` (with `hello_fields`) and then a forged
    AppendEntries from it; everything the other side sent back before it closed (b"" if it
    never answered)."""
    host, port = address.rsplit(":", 1)
    try:
        reader, writer = await asyncio.open_connection(host, int(port), ssl=ctx)
    except (ssl.SSLError, ConnectionError):
        return b""
    hello = raft_pb2.Hello(
        cluster_id="c", from_node=claim, to_node=to, advertise="evil:1", **hello_fields
    )
    forged = Message(
        MessageType.APP,
        to=to,
        frm=claim,
        term=1000,
        index=0,
        commit=1,
        entries=(Entry(1, 1000, data=b"forged"),),
    )
    parts: list[bytes] = []
    size = encode_message("orders-0", forged, parts)
    got = b""
    try:
        writer.write(frame(HELLO, hello.SerializeToString()))
        writer.write(FRAME_HEADER.pack(size + 1, BATCH) + b"".join(parts))
        await writer.drain()
        # Until the other side closes, or its first frame is in (a peer that took the Hello
        # goes on sending keepalives).
        while chunk := await asyncio.wait_for(reader.read(65536), 5):
            got += chunk
            if len(got) >= FRAME_HEADER.size and len(got) >= 4 + FRAME_HEADER.unpack_from(got)[0]:
                break
    except (ssl.SSLError, ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
    return got


def _frame_kind(data: bytes) -> int:
    return FRAME_HEADER.unpack_from(data)[1] if len(data) >= FRAME_HEADER.size else -1


async def test_mutual_tls_refuses_every_hello_not_backed_by_the_nodes_certificate(
    certs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's attack: a process sends a Hello as node 1 to node 3, then AppendEntries at
    term +1000. Each way of doing it without node 1's own certificate is refused, and node 3
    delivers nothing, records no address and brings up no link."""
    peers = {i: f"127.0.0.1:{_free_pair()}" for i in (1, 2, 3)}
    victim = Node(3, "c", peers, _tls(certs, 3))  # node 3 dials nobody: it only accepts
    raft = raft_address(peers[3])
    caplog.set_level(logging.WARNING, logger="liferaft.transport")
    await victim.t.start()
    try:
        # Plain TCP: the Hello is not a TLS handshake; the connection just closes.
        assert await _intrude(raft, None, claim=1, to=3) == b""
        # TLS without a client certificate: TLS 1.3 refuses it after the handshake.
        assert await _intrude(raft, _client_context(certs, None), claim=1, to=3) == b""
        # Node 1's certificate, but signed by another CA: unknown CA.
        other = _client_context(certs, 1, which="other-ca")
        assert await _intrude(raft, other, claim=1, to=3) == b""
        assert victim.untouched()
        # Node 2's genuine certificate, claiming to be node 1: refused with a reason.
        answer = await _intrude(raft, _client_context(certs, 2), claim=1, to=3)
        assert _frame_kind(answer) == REFUSE
        detail = errors_pb2.ErrorDetail.FromString(answer[FRAME_HEADER.size :])
        assert detail.code == errors_pb2.INCONSISTENT_NODE_ID
        assert "certificate" in detail.message and "node 1" in detail.message
        assert victim.untouched()
        # The control: with node 1's own certificate the same Hello is taken (a HELLO comes
        # back and the forged message is delivered), so the refusals above were the checks.
        answer = await _intrude(raft, _client_context(certs, 1), claim=1, to=3)
        assert _frame_kind(answer) == HELLO
        await _until(lambda: [g for g, _ in victim.got] == ["orders-0"])
    finally:
        await victim.t.stop()


async def test_a_joining_node_is_the_node_its_certificate_names(certs: Path) -> None:
    """Join identity (issue 19): a node holding a valid cluster certificate for node 5 cannot
    join, or ask to be admitted as a new incarnation, as node 2 (a member) or node 4 (a new
    id): its Hello is refused before any of it is believed, so no link, address, incarnation
    or admission follows. The membership machinery (node/membership.py, AdmitIncarnation)
    acts only on what such a Hello, and gossip on the link it opened, said."""
    peers = {i: f"127.0.0.1:{_free_pair()}" for i in (1, 2, 3)}
    victim = Node(3, "c", peers, _tls(certs, 3))
    hellos: list[tuple[int, int, bool]] = []
    victim.t.on_peer_hello = lambda p, h: hellos.append((p, h.incarnation, h.rejoining))
    raft = raft_address(peers[3])
    await victim.t.start()
    try:
        for claim in (2, 4):
            answer = await _intrude(
                raft, _client_context(certs, 5), claim=claim, to=3, incarnation=77, rejoining=True
            )
            assert _frame_kind(answer) == REFUSE, claim
            detail = errors_pb2.ErrorDetail.FromString(answer[FRAME_HEADER.size :])
            assert detail.code == errors_pb2.INCONSISTENT_NODE_ID
            assert "certificate" in detail.message and "node 5" in detail.message
        assert victim.untouched() and hellos == []
        assert sorted(victim.t.links) == [1, 2]
        # The control: node 4's own certificate joins as node 4 (a link, its address, its
        # incarnation and its wish to be admitted are taken), so the refusals were the check.
        answer = await _intrude(
            raft, _client_context(certs, 4), claim=4, to=3, incarnation=77, rejoining=True
        )
        assert _frame_kind(answer) == HELLO
        assert hellos == [(4, 77, True)] and 4 in victim.t.links
    finally:
        await victim.t.stop()


async def test_the_dialler_hangs_up_on_a_node_that_is_not_the_one_it_dialled(
    certs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Node 1 dials node 2 at an address where node 3 (a valid certificate of our CA) answers:
    node 1 sees node 3's certificate and closes before sending its Hello."""
    addr_1, addr_3 = f"127.0.0.1:{_free_pair()}", f"127.0.0.1:{_free_pair()}"
    a = Node(1, "c", {1: addr_1, 2: addr_3}, _tls(certs, 1))
    c = Node(3, "c", {1: addr_1, 3: addr_3}, _tls(certs, 3))
    caplog.set_level(logging.WARNING, logger="liferaft.transport")
    await c.t.start()
    await a.t.start()
    try:
        await _until(
            lambda: any(
                "presented node 3's certificate, not node 2's" in r.getMessage()
                for r in caplog.records
            )
        )
        assert a.untouched() and c.untouched()
    finally:
        await a.t.stop()
        await c.t.stop()


async def test_a_node_of_another_ca_cannot_connect_either_way(
    certs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    peers = _peers()
    a, b = Node(1, "c", peers, _tls(certs, 1)), Node(2, "c", peers, _tls(certs, 2, "other-ca"))
    caplog.set_level(logging.WARNING, logger="liferaft.transport")
    await b.t.start()
    await a.t.start()
    try:
        await _until(lambda: any("TLS with node 2" in r.getMessage() for r in caplog.records))
        await asyncio.sleep(0.1)
        assert a.untouched() and b.untouched()
    finally:
        await a.t.stop()
        await b.t.stop()


def test_a_node_refuses_to_start_with_another_nodes_certificate(certs: Path) -> None:
    with pytest.raises(ConfigError, match="names node 2, but this is node 3"):
        PeerTls(TlsFiles.find(3, certs / "ours" / "node-2"), 3)
    with pytest.raises(ConfigError, match="neither"):
        TlsFiles.find(6, certs / "ours")
    mixed = TlsFiles(
        ca=certs / "other-ca" / "ca.crt",
        cert=certs / "ours" / "node-1" / "node.crt",
        key=certs / "ours" / "node-1" / "node.key",
    )
    with pytest.raises(ConfigError, match="not signed by the CA"):
        PeerTls(mixed, 1)


def test_only_a_node_uri_names_a_node() -> None:
    def san(*names: tuple[str, str]) -> dict[str, object]:
        return {"subjectAltName": names}

    assert cert_node_ids(san(("URI", "liferaft://node/3"), ("DNS", "node-2"))) == {3}
    assert cert_node_ids(san(("DNS", "node-3"), ("URI", "liferaft://node/3x"))) == set()
    assert cert_node_ids(san(("URI", "liferaft://node/0"), ("URI", "http://node/3"))) == set()
    assert cert_node_ids(san(("URI", "liferaft://node/1"), ("URI", "liferaft://node/2"))) == {1, 2}


async def test_tls_handshakes_count_against_the_bound_on_strangers(certs: Path) -> None:
    """Connections that never start their TLS handshake hold a slot each, as plaintext ones
    waiting for their Hello do: beyond `max_unauthenticated` they are closed at once (before
    asyncio gives them TLS buffers), the rest at the deadline; a real peer then gets in."""
    peers = _peers()
    a = Node(1, "c", peers, _tls(certs, 1))
    a.t.max_unauthenticated = 5
    a.t.hello_timeout_s = 0.5
    await a.t.start()
    b: Node | None = None
    host, port = raft_address(peers[1]).rsplit(":", 1)
    conns = [await asyncio.open_connection(host, int(port)) for _ in range(20)]
    try:

        async def closed(reader: asyncio.StreamReader) -> bytes:
            return await asyncio.wait_for(reader.read(), 5.0)

        assert await asyncio.gather(*(closed(r) for r, _ in conns)) == [b""] * 20
        assert a.t.stats.connections_over_limit == 15
        assert a.t.stats.handshakes_timed_out == 5
        assert a.t._handshaking == 0
        b = Node(2, "c", peers, _tls(certs, 2))
        await b.t.start()
        await _until(lambda: a.t.connected_peers() == [2])
    finally:
        for _, w in conns:
            w.close()
        await a.t.stop()
        if b is not None:
            await b.t.stop()
