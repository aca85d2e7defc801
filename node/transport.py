"""The Raft transport: one long-lived TCP connection per pair of nodes, frames of raw bytes.

Theory of operation. For each pair of nodes the one with the lower id dials and the other
accepts; the single connection between them carries, in both directions, the Raft messages of
every group (the controller and all partitions) in batches: the driver queues messages during a
round and flushes once, so one frame per peer per round goes on the wire however many groups
spoke. Leaders also gossip the state of the partitions they lead (leader, epoch, ISR, high
watermark) on the same connection, so any node can answer metadata for partitions it does not
host. The bytes are node/raft_wire.py's.

Why TCP of our own and not a gRPC stream, as before: on the replication path gRPC cost more than
everything else. Profiled on a node at full produce load (py-spy --gil), writing and reading
frames through grpc.aio took over 40 % of the time the node held the GIL, and a message round
trip between two processes took 0.22 ms against 0.09 ms on a plain asyncio connection. Clients
still speak gRPC to the Broker service; only node-to-node Raft traffic moved, as Kafka, Redpanda
and NATS each replicate over a protocol of their own. The Raft listener is at the node's gRPC
port plus `raft_port_offset` (node/config.py), so `--peers` still names each node once.

The connection opens with a Hello each way (cluster id, node ids, advertised address); a node
wired to the wrong cluster or address is refused with a REFUSE frame that says why, instead of
silently joining. A broken connection is dialled again with backoff and jitter; messages for a
peer without a connection are dropped, which Raft tolerates (it retransmits), and what may wait
in a connection's write buffer is bounded, so a dead or slow peer cannot take the node's memory.

Who a peer is. With TLS (the default; node/tls.py), both ends present a certificate of the
cluster CA and each reads the other's node id from it: the accepting side takes a Hello only from
the node its certificate names, and the dialling side checks that the node it reached is the one
it dialled before it sends its own Hello. Without TLS (--insecure-plaintext-between-nodes) a
peer is whoever its Hello claims to be, which only a network of trusted processes can afford.

Liveness. Quiesced Raft groups send nothing, so the connection itself says whether a peer is
there: a node sends an empty batch to a peer it has sent nothing to for `keepalive_s`, and
considers a peer gone when its connection breaks or nothing came from it for `dead_after_s`.
Every change either way is reported to `on_peer_change` (the driver wakes the groups that peer
belongs to).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import socket
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from liferaft_proto.v1 import errors_pb2, raft_pb2
from node.config import (
    RAFT_PORT_OFFSET,
    ConfigError,
    parse_address,
    parse_advertised,
    raft_address,
)
from node.limits import (
    HELLO_DEADLINE_S,
    MAX_FRAME_BYTES_DEFAULT,
    MAX_HELLO_BYTES,
    MAX_NODE_ID,
    MAX_UNAUTHENTICATED_CONNECTIONS,
    shown,
)
from node.raft_wire import (
    BATCH,
    FRAME_HEADER,
    HELLO,
    LEADERS,
    REFUSE,
    decode_batch,
    encode_message,
    frame,
)
from node.tasks import supervise
from node.tls import PeerIdentityError, PeerTls, peer_node_id
from raft import Message

log = logging.getLogger("liferaft.transport")

MAX_BUFFERED_BYTES = 64 << 20
"""A connection whose unsent bytes exceed this drops new frames until it drains."""
READ_LIMIT = 8 << 20
"""asyncio's read buffer high-water mark once a peer is known: large, so big frames do not pause
reading per 128 KiB."""
HELLO_READ_LIMIT = MAX_HELLO_BYTES
"""The same before the Hello: a stranger cannot make the node buffer more than about twice this."""
HELLO_TIMEOUT_S = HELLO_DEADLINE_S
_KEEPALIVE = FRAME_HEADER.pack(1, BATCH)


@dataclass(slots=True)
class LinkStats:
    frames_sent: int = 0
    messages_sent: int = 0
    frames_dropped: int = 0
    messages_received: int = 0
    connects: int = 0


@dataclass(slots=True)
class TransportStats:
    """What the accepting side refused, by reason (every refusal is also logged)."""

    connections_over_limit: int = 0
    """Closed at once: MAX_UNAUTHENTICATED_CONNECTIONS were already waiting for their Hello."""
    handshakes_timed_out: int = 0
    handshakes_refused: int = 0
    """A first frame that is not a valid Hello (too large, garbage, wrong cluster or node)."""


@dataclass(slots=True)
class PeerLink:
    """This node's end of the connection to one peer, whichever side dialled it."""

    peer_id: int
    address: str
    """The peer's Raft transport, HOST:PORT."""
    parts: list[bytes] = field(default_factory=list)
    """This round's messages, encoded (flush sends them as one BATCH frame)."""
    pending_bytes: int = 0
    pending_count: int = 0
    writer: asyncio.StreamWriter | None = None  # set while a connection is up
    generation: int = 0
    stats: LinkStats = field(default_factory=LinkStats)
    last_heard: float = 0.0
    last_sent: float = 0.0
    alive: bool = False
    """As last reported to on_peer_change: a connection is up and the peer was heard lately."""

    @property
    def connected(self) -> bool:
        return self.writer is not None


def _raise_read_limit(reader: asyncio.StreamReader) -> None:
    """Let an accepted peer's reader buffer READ_LIMIT, as the dialled side's does: it was
    opened with HELLO_READ_LIMIT so that nothing is buffered for a stranger. asyncio has no
    public setter for a StreamReader's limit; the attribute has been there since 3.4."""
    if getattr(reader, "_limit", READ_LIMIT) < READ_LIMIT:
        reader._limit = READ_LIMIT  # type: ignore[attr-defined]


def _listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for host:port, one per address it resolves to, as
    loop.create_server makes them (SO_REUSEADDR; an IPv6 socket does not take IPv4 too)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(100)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


class TransportRefused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Transport:
    def __init__(
        self,
        node_id: int,
        cluster_id: str,
        peers: dict[int, str],
        deliver: Callable[[str, Message], None],
        on_leaders: Callable[[int, raft_pb2.LeaderStates], None] | None = None,
        advertise: str = "",
        keepalive_s: float = 0.05,
        dead_after_s: float = 0.5,
        *,
        listen: str = "",
        raft_port_offset: int = RAFT_PORT_OFFSET,
        max_frame_bytes: int = MAX_FRAME_BYTES_DEFAULT,
        max_unauthenticated: int = MAX_UNAUTHENTICATED_CONNECTIONS,
        hello_timeout_s: float = HELLO_TIMEOUT_S,
        tls: PeerTls | None = None,
    ) -> None:
        """`peers` and `listen` are gRPC addresses (as in --peers, --listen): the Raft
        transport of each is at its port plus `raft_port_offset`. With `tls`, every connection
        is mutual TLS and a peer is who its certificate says (node/tls.py); without it,
        plaintext, and a peer is whoever its Hello claims to be."""
        self.node_id = node_id
        self.tls = tls
        self.advertise = advertise
        self.keepalive_s = keepalive_s
        self.dead_after_s = dead_after_s
        self.on_peer_advertise: Callable[[int, str], None] | None = None
        self.on_peer_change: Callable[[int, bool], None] | None = None
        """Called with (peer id, alive) whenever a peer is found gone or back."""
        self.raft_port_offset = raft_port_offset
        self.dial_all = False
        """Dial every peer, not only those with higher ids: a node joining (--join), which the
        members do not know until it dials them."""
        self.incarnation = 0
        """This node's data directory's incarnation, told in every Hello (node/membership.py)."""
        self.hello_state: Callable[[], tuple[int, bool]] = lambda: (0, False)
        """(controller term, rejoining) to tell in a Hello, asked when it is sent."""
        self.on_peer_hello: Callable[[int, raft_pb2.Hello], None] | None = None
        """Called with each peer's accepted Hello (its incarnation, term, rejoining)."""
        self.cluster_id = cluster_id
        self.deliver = deliver
        self.on_leaders = on_leaders
        self.listen = raft_address(listen, raft_port_offset) if listen else ""
        self.links = {
            pid: PeerLink(pid, raft_address(addr, raft_port_offset))
            for pid, addr in peers.items()
            if pid != node_id
        }
        self.max_frame_bytes = max_frame_bytes
        """Frames after the Hello; the Hello itself may claim at most MAX_HELLO_BYTES."""
        self.max_unauthenticated = max_unauthenticated
        self.hello_timeout_s = hello_timeout_s
        self.stats = TransportStats()
        self._handshaking = 0
        """Accepted connections whose Hello has not been accepted yet."""
        self._server: asyncio.Server | None = None
        self._listeners: list[socket.socket] = []
        """The TLS listener's sockets (a plaintext listener is `_server`)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    # -- the driver's Outbox -------------------------------------------------------------------
    def send(self, to: int, group: str, msg: Message) -> None:
        link = self.links.get(to)
        if link is None:
            return
        if link.writer is None:  # no connection: dropped (Raft sends again)
            return
        link.pending_bytes += encode_message(group, msg, link.parts)
        link.pending_count += 1

    def flush(self) -> None:
        now = asyncio.get_running_loop().time()
        for link in self.links.values():
            n = link.pending_count
            if not n:
                continue
            parts, size = link.parts, link.pending_bytes
            link.parts, link.pending_bytes, link.pending_count = [], 0, 0
            parts.insert(0, FRAME_HEADER.pack(size + 1, BATCH))
            self._write(link, b"".join(parts), n, now)

    def broadcast_leaders(self, states: raft_pb2.LeaderStates) -> None:
        data = frame(LEADERS, states.SerializeToString())
        now = asyncio.get_running_loop().time()
        for link in self.links.values():
            self._write(link, data, 0, now)

    def _write(self, link: PeerLink, data: bytes, n_msgs: int, now: float) -> None:
        writer = link.writer
        if writer is None or writer.transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            link.stats.frames_dropped += 1
            return
        writer.write(data)
        link.stats.frames_sent += 1
        link.stats.messages_sent += n_msgs
        link.last_sent = now

    # -- liveness ------------------------------------------------------------------------------
    def _set_alive(self, link: PeerLink, alive: bool) -> None:
        if link.alive == alive:
            return
        link.alive = alive
        log.info(
            "node %d: node %d is %s", self.node_id, link.peer_id, "up" if alive else "unreachable"
        )
        if self.on_peer_change is not None:
            self.on_peer_change(link.peer_id, alive)

    async def _watch(self) -> None:
        """Send keepalives on idle connections; declare silent peers gone."""
        loop = asyncio.get_running_loop()
        prev = loop.time()
        while not self._stopped:
            await asyncio.sleep(self.keepalive_s)
            now = loop.time()
            # If this loop itself did not run for a while (a long round, a busy machine), the
            # frames peers sent meanwhile are still unread: their silence proves nothing.
            stalled = now - prev > 2 * self.keepalive_s
            prev = now
            for link in self.links.values():
                if link.writer is None:
                    self._set_alive(link, False)
                    continue
                if stalled:
                    link.last_heard = max(link.last_heard, now - self.keepalive_s)
                if now - link.last_sent >= self.keepalive_s:
                    self._write(link, _KEEPALIVE, 0, now)
                if link.alive and now - link.last_heard > self.dead_after_s:
                    self._set_alive(link, False)

    def connected_peers(self) -> list[int]:
        return sorted(pid for pid, link in self.links.items() if link.connected)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen for peers (raises ConfigError if the Raft port is taken), dial the peers with
        higher ids, and watch liveness."""
        if self.listen:
            host, port = parse_address(self.listen, "Raft listener")
            try:
                if self.tls is None:
                    self._server = await asyncio.start_server(
                        self._accept, host, port, limit=HELLO_READ_LIMIT, reuse_address=True
                    )
                else:
                    # Not start_server(ssl=...): that starts a handshake (and its buffers) for
                    # every connection before any count of them could close the surplus. Nor a
                    # protocol that pauses reading until it is admitted: uvloop starts reading
                    # after connection_made whatever it asked, and the ClientHello was lost.
                    # The accept loop takes each socket bare, counts it, and only then hands
                    # it to loop.connect_accepted_socket for its handshake.
                    self._listeners = _listening_sockets(host, port)
            except OSError as e:
                raise ConfigError(
                    f"cannot listen for Raft peers on {self.listen}: {e.strerror or e} (the "
                    "gRPC port plus --raft-port-offset must be free)"
                ) from None
        for listener in self._listeners:
            self._spawn(
                functools.partial(self._accept_tls_forever, listener),
                f"raft-accept-{self.node_id}",
            )
        for link in self.links.values():
            if self.node_id < link.peer_id or self.dial_all:
                self._spawn(
                    functools.partial(self._dial_forever, link),
                    f"raft-dial-{self.node_id}-{link.peer_id}",
                )
        self._spawn(self._watch, f"raft-watch-{self.node_id}")

    async def stop(self) -> None:
        self._stopped = True
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for listener in self._listeners:
            listener.close()
        self._listeners = []
        for link in self.links.values():
            if link.writer is not None:
                link.writer.close()
                link.writer = None

    def _spawn(self, make: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        """A loop that runs until stop: supervised, so a bug in it is logged and it restarts."""
        task = supervise(make, name, restart=True)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- both ends -----------------------------------------------------------------------------
    def _hello(self, to_node: int) -> bytes:
        term, rejoining = self.hello_state()
        hello = raft_pb2.Hello(
            cluster_id=self.cluster_id,
            from_node=self.node_id,
            to_node=to_node,
            advertise=self.advertise,
            incarnation=self.incarnation,
            controller_term=term,
            rejoining=rejoining,
        )
        return frame(HELLO, hello.SerializeToString())

    def _check_hello(self, kind: int, payload: bytes, expect_from: int | None) -> int:
        """Validate the other side's Hello; returns its node id or raises TransportRefused."""
        if kind != HELLO:
            raise TransportRefused(
                errors_pb2.INVALID_REQUEST, "the first frame of a Raft connection must be a Hello"
            )
        try:
            h = raft_pb2.Hello.FromString(payload)
        except Exception:  # protobuf's DecodeError
            raise TransportRefused(errors_pb2.INVALID_REQUEST, "the Hello does not parse") from None
        if h.cluster_id != self.cluster_id:
            raise TransportRefused(
                errors_pb2.INCONSISTENT_CLUSTER_ID,
                f"node {h.from_node} belongs to cluster {shown(h.cluster_id)} but node {self.node_id} "
                f"belongs to {self.cluster_id!r}: check --peers and the cluster id",
            )
        if h.to_node != self.node_id:
            raise TransportRefused(
                errors_pb2.INCONSISTENT_NODE_ID,
                f"node {h.from_node} dialled node {h.to_node} but reached node {self.node_id}: "
                "the --peers lists disagree",
            )
        if expect_from is not None and h.from_node != expect_from:
            raise TransportRefused(
                errors_pb2.INCONSISTENT_NODE_ID,
                f"expected node {expect_from} (by its address or its certificate) but the Hello "
                f"is from node {h.from_node}",
            )
        if h.from_node not in self.links:
            if not (h.advertise and 0 < h.from_node <= MAX_NODE_ID and h.from_node != self.node_id):
                raise TransportRefused(
                    errors_pb2.INCONSISTENT_NODE_ID,
                    f"node {h.from_node} is not in node {self.node_id}'s --peers and gives no "
                    "address to join with",
                )
            # A node joining the running cluster (--join): it dials every member, and is a
            # member of no Raft group until the controller adds it (node/membership.py). Over
            # TLS its certificate proved its id before this Hello was read.
            try:
                address = raft_address(h.advertise, self.raft_port_offset)
            except ConfigError as e:
                raise TransportRefused(errors_pb2.INVALID_REQUEST, str(e)) from None
            self.links[int(h.from_node)] = PeerLink(int(h.from_node), address)
            log.info("node %d: node %d joins from %s", self.node_id, h.from_node, h.advertise)
        if h.advertise:
            # Checked before anything stores it: it becomes the node's address in metadata.
            # Only this (the peer's own) link can set the peer's address.
            try:
                parse_advertised(h.advertise, f"node {h.from_node}'s advertised address")
            except ConfigError as e:
                raise TransportRefused(errors_pb2.INVALID_REQUEST, str(e)) from None
            if self.on_peer_advertise is not None:
                self.on_peer_advertise(int(h.from_node), h.advertise)
        if self.on_peer_hello is not None:
            self.on_peer_hello(int(h.from_node), h)
        return int(h.from_node)

    @staticmethod
    async def _read_frame(
        reader: asyncio.StreamReader, max_bytes: int = MAX_HELLO_BYTES
    ) -> tuple[int, bytes]:
        """The next frame's kind and payload. Raises ValueError on a frame that claims more than
        `max_bytes` (before a byte of it is buffered) or cannot be one,
        asyncio.IncompleteReadError when the peer closes."""
        size, kind = FRAME_HEADER.unpack(await reader.readexactly(FRAME_HEADER.size))
        if not 1 <= size <= max_bytes:
            raise ValueError(
                f"a frame of {size} bytes is not a Raft frame here (at most {max_bytes})"
            )
        return kind, await reader.readexactly(size - 1) if size > 1 else b""

    def _handle(self, link: PeerLink, kind: int, payload: bytes) -> None:
        link.last_heard = asyncio.get_running_loop().time()
        if not link.alive:
            self._set_alive(link, True)
        if kind == BATCH:
            deliver, peer, me, n = self.deliver, link.peer_id, self.node_id, 0
            for group, msg in decode_batch(payload):
                if msg.frm != peer or msg.to != me:
                    raise ValueError(
                        f"node {peer} sent a message from node {msg.frm} to node {msg.to}"
                    )
                deliver(group, msg)
                n += 1
            link.stats.messages_received += n
        elif kind == LEADERS:
            try:
                states = raft_pb2.LeaderStates.FromString(payload)
            except Exception:  # protobuf's DecodeError
                raise ValueError("a LEADERS frame that does not parse") from None
            if states.from_node != link.peer_id:
                raise ValueError(f"node {link.peer_id} sent gossip as node {states.from_node}")
            if self.on_leaders is not None:
                self.on_leaders(link.peer_id, states)
        else:
            raise ValueError(f"unexpected frame kind {kind} after the Hello")

    async def _serve_link(
        self, link: PeerLink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Run one established connection until it breaks."""
        link.generation += 1
        gen = link.generation
        old, link.writer = link.writer, writer
        if old is not None:  # the peer reconnected before we noticed the old one was gone
            old.close()
        link.parts, link.pending_bytes, link.pending_count = [], 0, 0
        link.stats.connects += 1
        _raise_read_limit(reader)
        max_bytes = self.max_frame_bytes
        try:
            while True:
                kind, payload = await self._read_frame(reader, max_bytes)
                self._handle(link, kind, payload)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            log.info("node %d: the Raft connection with node %d closed", self.node_id, link.peer_id)
        except ValueError as e:
            log.warning(
                "node %d: dropping the Raft connection with node %d: %s",
                self.node_id,
                link.peer_id,
                e,
            )
        finally:
            writer.close()
            if link.generation == gen:
                link.writer = None
                link.parts, link.pending_bytes, link.pending_count = [], 0, 0
                self._set_alive(link, False)

    # -- accepting side ------------------------------------------------------------------------
    def _over_limit(self) -> bool:
        """Whether a new connection must be closed at once: `max_unauthenticated` connections
        are waiting for their TLS handshake or Hello already."""
        if self._handshaking < self.max_unauthenticated:
            return False
        self.stats.connections_over_limit += 1
        if self.stats.connections_over_limit % 100 == 1:
            log.warning(
                "node %d: %d Raft connections are waiting for their Hello already; closing "
                "new ones (%d so far)",
                self.node_id,
                self._handshaking,
                self.stats.connections_over_limit,
            )
        return True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A plaintext connection from anyone: at most `max_unauthenticated` of them wait for
        their Hello, each for at most `hello_timeout_s` and MAX_HELLO_BYTES, before it is
        trusted."""
        if self._over_limit():
            writer.close()
            return
        self._handshaking += 1
        await self._greet(reader, writer)

    async def _accept_tls_forever(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as e:  # out of file descriptors, mostly: asyncio's server waits too
                log.warning("node %d: accepting a Raft connection failed: %s", self.node_id, e)
                await asyncio.sleep(1.0)
                continue
            self._admit_tls(sock)

    def _admit_tls(self, sock: socket.socket) -> None:
        """A TLS connection from anyone, before its handshake: admitted under the same bound as
        a plaintext one (a handshake costs memory too), then the handshake and the Hello."""
        if self._stopped or self._over_limit():
            sock.close()
            return
        self._handshaking += 1
        task = asyncio.create_task(self._tls_accept(sock))
        self._tasks.add(task)  # cancelled by stop(), as the links are
        task.add_done_callback(self._tasks.discard)

    async def _tls_accept(self, sock: socket.socket) -> None:
        assert self.tls is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=HELLO_READ_LIMIT, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            peer = sock.getpeername()
        except OSError:
            peer = None
        try:
            # The loop owns the socket from here on, and closes it if the handshake fails.
            secured, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                sock,
                ssl=self.tls.server,
                ssl_handshake_timeout=self.hello_timeout_s,
            )
        except BaseException as e:
            self._handshaking -= 1
            if isinstance(e, ssl.SSLError):  # no certificate, another CA's, not TLS at all
                self.stats.handshakes_refused += 1
                log.warning("refused a Raft connection from %s: TLS: %s", peer, e.reason or e)
            elif isinstance(e, ConnectionAbortedError | TimeoutError):
                self.stats.handshakes_timed_out += 1
            if not isinstance(e, Exception):  # cancelled: the transport stops
                raise
            return
        await self._greet(reader, asyncio.StreamWriter(secured, protocol, reader, loop))

    async def _greet(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Take the Hello of an admitted connection (counted in `_handshaking` until then) and
        serve the link it opens."""
        try:
            try:
                try:
                    kind, payload = await asyncio.wait_for(
                        self._read_frame(reader), self.hello_timeout_s
                    )
                    # Over TLS the certificate says who dialled, and the Hello must agree.
                    peer = self._check_hello(kind, payload, self._certified_peer(writer))
                finally:
                    self._handshaking -= 1
            except TransportRefused as e:
                self.stats.handshakes_refused += 1
                log.warning("refused a Raft connection: %s", e)
                detail = errors_pb2.ErrorDetail(code=e.code, message=str(e))  # type: ignore[arg-type]
                writer.write(frame(REFUSE, detail.SerializeToString()))
                with contextlib.suppress(ConnectionError):
                    await asyncio.wait_for(writer.drain(), self.hello_timeout_s)
                writer.close()
                return
            except TimeoutError:
                self.stats.handshakes_timed_out += 1
                writer.close()
                return
            except ValueError as e:
                self.stats.handshakes_refused += 1
                log.warning("refused a Raft connection: %s", e)
                writer.close()
                return
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                writer.close()
                return
            writer.write(self._hello(peer))
            log.info("node %d accepted the Raft connection from node %d", self.node_id, peer)
            await self._serve_link(self.links[peer], reader, writer)
        except asyncio.CancelledError:
            writer.close()
            raise
        except Exception:  # a bug: asyncio would only print it, and the link must not leak
            log.exception("node %d: a Raft connection failed", self.node_id)
            writer.close()

    def _certified_peer(self, writer: asyncio.StreamWriter) -> int | None:
        """The node id the other end's certificate names (None without TLS); TransportRefused
        if its certificate names no node (TLS already refused any not signed by our CA)."""
        if self.tls is None:
            return None
        try:
            return peer_node_id(writer.get_extra_info("ssl_object"))
        except PeerIdentityError as e:
            raise TransportRefused(
                errors_pb2.INCONSISTENT_NODE_ID, f"not a node's certificate: {e}"
            ) from None

    # -- dialling side -------------------------------------------------------------------------
    async def _dial_forever(self, link: PeerLink) -> None:
        backoff = 0.05
        host, port = parse_address(link.address, f"node {link.peer_id}'s Raft address")
        while not self._stopped:
            writer: asyncio.StreamWriter | None = None
            try:
                reader, conn = await asyncio.wait_for(
                    asyncio.open_connection(
                        host,
                        port,
                        limit=READ_LIMIT,
                        ssl=self.tls.client if self.tls is not None else None,
                        ssl_handshake_timeout=HELLO_TIMEOUT_S if self.tls is not None else None,
                    ),
                    HELLO_TIMEOUT_S,
                )
                writer = conn
                # The node we reached proves it is the one we dialled before we say a word.
                certified = self._certified_peer(conn)
                if certified is not None and certified != link.peer_id:
                    raise TransportRefused(
                        errors_pb2.INCONSISTENT_NODE_ID,
                        f"it presented node {certified}'s certificate, not node {link.peer_id}'s",
                    )
                conn.write(self._hello(link.peer_id))
                kind, payload = await asyncio.wait_for(self._read_frame(reader), HELLO_TIMEOUT_S)
                if kind == REFUSE:
                    detail = errors_pb2.ErrorDetail.FromString(payload)
                    raise TransportRefused(detail.code, detail.message)
                self._check_hello(kind, payload, link.peer_id)
                log.info(
                    "node %d connected to node %d at %s", self.node_id, link.peer_id, link.address
                )
                backoff = 0.05
                await self._serve_link(link, reader, conn)
            except TransportRefused as e:
                log.error("node %d at %s refused: %s", link.peer_id, link.address, e)
                backoff = 2.0
            except ssl.SSLError as e:  # a certificate refused, by either side
                log.error(
                    "TLS with node %d at %s failed: %s", link.peer_id, link.address, e.reason or e
                )
                backoff = 2.0
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as e:
                log.debug("Raft connection to node %d failed: %r", link.peer_id, e, exc_info=True)
            finally:
                if writer is not None:
                    writer.close()
            if self._stopped:
                return
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 1.0)
