"""The Raft transport: one long-lived bidirectional gRPC stream per pair of nodes.

Theory of operation. For each pair of nodes the one with the lower id dials and the other
accepts; the single stream between them carries, in both directions, the Raft messages of every
group (the controller and all partitions) in batches: the driver queues messages during a round
and flushes once, so one frame per peer per round goes on the wire however many groups spoke.
Leaders also gossip the state of the partitions they lead (leader, epoch, ISR, high watermark)
on the same stream, so any node can answer metadata for partitions it does not host.

The stream opens with a Hello from each side (cluster id, node ids); a node wired to the wrong
cluster or address is refused with a clear error instead of silently joining. A broken stream is
dialled again with backoff and jitter; messages for a peer without a stream are dropped, which
Raft tolerates (it retransmits), and the send queue per peer is bounded so a dead peer cannot
take the node's memory.

Liveness. Quiesced Raft groups send nothing, so the stream itself says whether a peer is there:
a node sends an empty batch to a peer it has sent nothing to for `keepalive_s`, and considers a
peer gone when its stream breaks or nothing came from it for `dead_after_s`. Every change either
way is reported to `on_peer_change` (the driver wakes the groups that peer belongs to).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from liferaft_proto import status as wire_status
from liferaft_proto.v1 import errors_pb2, raft_pb2, raft_pb2_grpc
from node.raft_codec import fill_proto, from_proto, pack_heartbeat, unpack_heartbeats
from raft import Message

log = logging.getLogger("liferaft.transport")

MAX_QUEUED_FRAMES = 256
STREAM_METHOD_TIMEOUT = None


@dataclass(slots=True)
class LinkStats:
    frames_sent: int = 0
    messages_sent: int = 0
    frames_dropped: int = 0
    messages_received: int = 0
    connects: int = 0


@dataclass(slots=True)
class PeerLink:
    """This node's end of the stream to one peer, whichever side dialled it."""

    peer_id: int
    address: str
    pending: raft_pb2.RaftFrame | None = None
    """The frame this round's messages are encoded into, in place (flush sends it)."""
    pending_count: int = 0
    heartbeats: list[bytes] = field(default_factory=list)
    """This round's heartbeats and replies, packed (RaftBatch.heartbeats)."""
    queue: asyncio.Queue[raft_pb2.RaftFrame] | None = None  # set while a stream is up
    generation: int = 0
    stats: LinkStats = field(default_factory=LinkStats)
    last_heard: float = 0.0
    last_sent: float = 0.0
    alive: bool = False
    """As last reported to on_peer_change: a stream is up and the peer was heard lately."""

    @property
    def connected(self) -> bool:
        return self.queue is not None


class TransportRefused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Transport(raft_pb2_grpc.RaftTransportServicer):
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
    ) -> None:
        self.node_id = node_id
        self.advertise = advertise
        self.keepalive_s = keepalive_s
        self.dead_after_s = dead_after_s
        self.on_peer_advertise: Callable[[int, str], None] | None = None
        self.on_peer_change: Callable[[int, bool], None] | None = None
        """Called with (peer id, alive) whenever a peer is found gone or back."""
        self.cluster_id = cluster_id
        self.deliver = deliver
        self.on_leaders = on_leaders
        self.links = {pid: PeerLink(pid, addr) for pid, addr in peers.items() if pid != node_id}
        self._seq = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    # -- the driver's Outbox -------------------------------------------------------------------
    def send(self, to: int, group: str, msg: Message) -> None:
        link = self.links.get(to)
        if link is None:
            return
        packed = pack_heartbeat(group, msg)
        if packed is not None:
            link.heartbeats.append(packed)
            link.pending_count += 1
            return
        frame = link.pending
        if frame is None:
            frame = link.pending = raft_pb2.RaftFrame()
        fill_proto(frame.batch.messages.add(), group, msg)
        link.pending_count += 1

    def flush(self) -> None:
        for link in self.links.values():
            n = link.pending_count
            if not n:
                continue
            frame = link.pending or raft_pb2.RaftFrame()
            link.pending, link.pending_count = None, 0
            heartbeats, link.heartbeats = link.heartbeats, []
            if link.queue is None:
                link.stats.frames_dropped += 1
                continue
            self._seq += 1
            batch = frame.batch
            batch.from_node = self.node_id
            batch.seq = self._seq
            if heartbeats:
                batch.heartbeats = b"".join(heartbeats)
            self._enqueue(link, frame, n)

    def broadcast_leaders(self, states: raft_pb2.LeaderStates) -> None:
        frame = raft_pb2.RaftFrame(leaders=states)
        for link in self.links.values():
            if link.queue is not None:
                self._enqueue(link, frame, 0)

    def _enqueue(self, link: PeerLink, frame: raft_pb2.RaftFrame, n_msgs: int) -> None:
        assert link.queue is not None
        try:
            link.queue.put_nowait(frame)
            link.stats.frames_sent += 1
            link.stats.messages_sent += n_msgs
            link.last_sent = asyncio.get_running_loop().time()
        except asyncio.QueueFull:
            link.stats.frames_dropped += 1

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
        """Send keepalives on idle streams; declare silent peers gone."""
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
                if link.queue is None:
                    self._set_alive(link, False)
                    continue
                if stalled:
                    link.last_heard = max(link.last_heard, now - self.keepalive_s)
                if now - link.last_sent >= self.keepalive_s:
                    self._seq += 1
                    frame = raft_pb2.RaftFrame(
                        batch=raft_pb2.RaftBatch(from_node=self.node_id, seq=self._seq)
                    )
                    self._enqueue(link, frame, 0)
                if link.alive and now - link.last_heard > self.dead_after_s:
                    self._set_alive(link, False)

    def connected_peers(self) -> list[int]:
        return sorted(pid for pid, link in self.links.items() if link.connected)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        for link in self.links.values():
            if self.node_id < link.peer_id:
                self._tasks.append(asyncio.create_task(self._dial_forever(link)))
        self._tasks.append(asyncio.create_task(self._watch()))

    async def stop(self) -> None:
        self._stopped = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for link in self.links.values():
            link.queue = None

    # -- both ends -----------------------------------------------------------------------------
    def _hello(self, to_node: int) -> raft_pb2.RaftFrame:
        return raft_pb2.RaftFrame(
            hello=raft_pb2.Hello(
                cluster_id=self.cluster_id,
                from_node=self.node_id,
                to_node=to_node,
                advertise=self.advertise,
            )
        )

    def _check_hello(self, frame: raft_pb2.RaftFrame | None, expect_from: int | None) -> int:
        """Validate the other side's Hello; returns its node id or raises TransportRefused."""
        if frame is None or frame.WhichOneof("kind") != "hello":
            raise TransportRefused(
                errors_pb2.INVALID_REQUEST, "the first frame of a Raft stream must be a Hello"
            )
        h = frame.hello
        if h.cluster_id != self.cluster_id:
            raise TransportRefused(
                errors_pb2.INCONSISTENT_CLUSTER_ID,
                f"node {h.from_node} belongs to cluster {h.cluster_id!r} but node {self.node_id} "
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
                f"expected node {expect_from} at this address but node {h.from_node} answered",
            )
        if h.from_node not in self.links:
            raise TransportRefused(
                errors_pb2.INCONSISTENT_NODE_ID,
                f"node {h.from_node} is not in node {self.node_id}'s --peers",
            )
        if self.on_peer_advertise is not None and h.advertise:
            self.on_peer_advertise(int(h.from_node), h.advertise)
        return int(h.from_node)

    async def _pump(
        self,
        link: PeerLink,
        queue: asyncio.Queue[raft_pb2.RaftFrame],
        write: Callable[[raft_pb2.RaftFrame], Awaitable[None]],
    ) -> None:
        while True:
            frame = await queue.get()
            await write(frame)

    def _handle(self, link: PeerLink, frame: raft_pb2.RaftFrame) -> None:
        kind = frame.WhichOneof("kind")
        link.last_heard = asyncio.get_running_loop().time()
        if not link.alive:
            self._set_alive(link, True)
        if kind == "batch":
            deliver = self.deliver
            batch = frame.batch
            for gm in batch.messages:
                group, msg = from_proto(gm)
                deliver(group, msg)
            n = len(batch.messages)
            if batch.heartbeats:
                for group, msg in unpack_heartbeats(batch.heartbeats, link.peer_id, self.node_id):
                    deliver(group, msg)
                    n += 1
            link.stats.messages_received += n
        elif kind == "leaders" and self.on_leaders is not None:
            self.on_leaders(link.peer_id, frame.leaders)

    async def _serve_link(
        self,
        link: PeerLink,
        read: Callable[[], Awaitable[object]],
        write: Callable[[raft_pb2.RaftFrame], Awaitable[None]],
    ) -> None:
        """Run one established stream until it breaks."""
        link.generation += 1
        gen = link.generation
        queue: asyncio.Queue[raft_pb2.RaftFrame] = asyncio.Queue(MAX_QUEUED_FRAMES)
        link.queue = queue
        link.stats.connects += 1
        pump = asyncio.create_task(self._pump(link, queue, write))
        try:
            while True:
                reading = asyncio.ensure_future(read())
                done, _ = await asyncio.wait({reading, pump}, return_when=asyncio.FIRST_COMPLETED)
                if pump in done:
                    reading.cancel()
                    pump.result()  # raises the write error
                    return
                frame = reading.result()
                if frame is grpc.aio.EOF or frame is None:
                    return
                assert isinstance(frame, raft_pb2.RaftFrame)
                self._handle(link, frame)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            if link.generation == gen:
                link.queue = None
                self._set_alive(link, False)

    # -- accepting side (the gRPC servicer) --------------------------------------------------
    async def Stream(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:
        first = await context.read()
        try:
            peer = self._check_hello(first if first is not grpc.aio.EOF else None, None)
        except TransportRefused as e:
            log.warning("refused a Raft stream: %s", e)
            await context.abort_with_status(
                wire_status.error_status(errors_pb2.ErrorDetail(code=e.code, message=str(e)))  # type: ignore[arg-type]
            )
            return
        link = self.links[peer]
        await context.write(self._hello(peer))
        log.info("node %d accepted the Raft stream from node %d", self.node_id, peer)
        try:
            await self._serve_link(link, context.read, context.write)
        except (grpc.aio.AioRpcError, asyncio.CancelledError, ConnectionError) as e:
            log.info("Raft stream from node %d ended: %s", peer, type(e).__name__)

    # -- dialling side -------------------------------------------------------------------------
    async def _dial_forever(self, link: PeerLink) -> None:
        backoff = 0.05
        while not self._stopped:
            channel = grpc.aio.insecure_channel(
                link.address,
                options=[
                    ("grpc.max_send_message_length", 64 << 20),
                    ("grpc.max_receive_message_length", 64 << 20),
                    ("grpc.keepalive_time_ms", 10_000),
                    ("grpc.keepalive_timeout_ms", 5_000),
                    ("grpc.http2.max_pings_without_data", 0),
                ],
            )
            try:
                stub = raft_pb2_grpc.RaftTransportStub(channel)
                call = stub.Stream(wait_for_ready=False)
                await call.write(self._hello(link.peer_id))
                first = await call.read()
                self._check_hello(first if first is not grpc.aio.EOF else None, link.peer_id)
                log.info(
                    "node %d connected to node %d at %s", self.node_id, link.peer_id, link.address
                )
                backoff = 0.05
                await self._serve_link(link, call.read, call.write)
            except TransportRefused as e:
                log.error("node %d at %s refused: %s", link.peer_id, link.address, e)
                backoff = 2.0
            except grpc.aio.AioRpcError as e:
                detail = wire_status.error_detail(e)
                if detail is not None and detail.code != errors_pb2.NONE:
                    log.error(
                        "node %d at %s refused the stream: %s",
                        link.peer_id,
                        link.address,
                        detail.message,
                    )
                    backoff = 2.0
                else:
                    log.debug("stream to node %d failed: %s", link.peer_id, e.code())
            except asyncio.CancelledError:
                await channel.close()
                raise
            except Exception:
                log.exception("stream to node %d failed", link.peer_id)
            finally:
                link.queue = None
            await channel.close()
            if self._stopped:
                return
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 1.0)
