"""One simulated node: a RawNode, the MemoryStorage that stands for its disk, its state machine,
and the host loop that drives them, with a crash possible at every point of that loop.

The loop follows raft/rawnode.py's ordering contract to the letter:

    1. send rd.messages
    2. persist rd.snapshot, rd.entries, rd.hard_state into the MemoryStorage (that is "synced")
    3. send rd.persisted_messages
    4. install rd.snapshot into the state machine, apply rd.committed_entries (conf changes
       through RawNode.apply_conf_change)
    5. advance

A crash (CrashPoint) stops the loop before step 1 or after one of steps 1 to 4, and throws the
RawNode and the state machine away. Only the MemoryStorage survives: a restart builds a fresh
RawNode over it, restores the state machine from its snapshot and lets Raft hand out the
committed entries after it again. Step 2 is atomic (one write batch, one fsync): the simulation
models losing everything after the last sync, not torn writes.

Four things a real host (node/driver.py) does, and the world turns on per seed (HostPolicy):
  lazy commit   a Ready whose only durable change is the commit index is written without an
                fsync (rawnode.Ready.must_sync says it may be); a crash loses it, and the node
                relearns its commit index after the restart. Any later sync (entries, a vote, a
                snapshot, a compaction) makes it durable, as a database's log does. A Ready
                that applies a membership change syncs (Ready.applies_conf_change).
  syncing       while step 2's fsync is pending the host takes client proposals (etcd allows
                propose between ready() and advance()); the world proposes then (`syncing`).
  quiescence    an idle leader is asked to quiesce and quiesced nodes are not ticked; the
                transport tells the host when a peer's node is lost or back (`peer_changed`).
  pipeline      writes in flight (raft/rawnode.py): after step 1 a Ready's write joins a queue
                and the host takes the next Ready at once; the disk finishes the queued writes
                oldest first, all or a few at the end of each loop (the world decides: during
                chaos often none, when calm all, as a disk is much faster than a tick), and
                only then does the host do steps 3 to 5 for each. A crash loses every write
                still queued.
  apply ahead   with writes in flight, in half the lives of a node (drawn from its restart
                seed): committed entries already durable on the node are applied, and
                RawNode.advance_applied called, while their Ready's write (or an earlier one)
                is still queued, as node/driver.py does; the rest of the Ready finishes with its
                write (advance_persisted). A membership change waits for its write.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from raft import (
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryType,
    Fence,
    HardState,
    IsrPolicy,
    MemoryStorage,
    Message,
    RawNode,
    Ready,
    Snapshot,
)


class CrashPoint(IntEnum):
    """Where in the host loop a crash hits."""

    NONE = 0
    BEFORE_SEND = 5
    """The input was stepped, but nothing of its Ready left the node or reached its disk."""
    AFTER_SEND = 1
    """rd.messages left, nothing of this Ready is durable: the classic torn step."""
    AFTER_PERSIST = 2
    """Durable, but the messages that wait for durability never left."""
    AFTER_PERSISTED_SEND = 3
    """Everything sent, nothing applied."""
    AFTER_APPLY = 4
    """Applied (volatile anyway), but advance never happened."""


CRASH_POINT_NAMES = {
    CrashPoint.NONE: "between steps",
    CrashPoint.BEFORE_SEND: "before its Ready went anywhere",
    CrashPoint.AFTER_SEND: "after sending, before persisting",
    CrashPoint.AFTER_PERSIST: "after persisting, before sending the replies",
    CrashPoint.AFTER_PERSISTED_SEND: "after sending the replies, before applying",
    CrashPoint.AFTER_APPLY: "after applying, before advance",
}

_SNAP = struct.Struct(">Q8sQ")
_ENTRY_HEAD = struct.Struct(">QQB")


def chain_digest(digest: bytes, e: Entry) -> bytes:
    """The state machine's fingerprint after applying e on top of `digest`. Two nodes that applied
    the same entries in the same order hold the same digest, so comparing one value per index
    compares whole histories."""
    h = hashlib.blake2b(digest, digest_size=8)
    h.update(_ENTRY_HEAD.pack(e.index, e.term, int(e.type)))
    h.update(e.data)
    return h.digest()


@dataclass(slots=True)
class Machine:
    """The replicated state machine: how far it applied, a digest of everything it applied, and
    how many client values that was. Its snapshot is exactly this triple."""

    index: int = 0
    digest: bytes = bytes(8)
    values: int = 0

    def apply(self, e: Entry) -> None:
        self.index = e.index
        self.digest = chain_digest(self.digest, e)
        if e.type == EntryType.NORMAL:
            self.values += 1

    def encode(self) -> bytes:
        return _SNAP.pack(self.index, self.digest, self.values)

    @classmethod
    def decode(cls, data: bytes) -> Machine:
        index, digest, values = _SNAP.unpack(data)
        return cls(index=index, digest=digest, values=values)

    @classmethod
    def from_snapshot(cls, snap: Snapshot) -> Machine:
        return cls() if snap.is_empty() else cls.decode(snap.data)


@dataclass(slots=True, frozen=True)
class RaftParams:
    """The core's configuration, the same for every node of one simulated world."""

    election_tick: int = 10
    heartbeat_tick: int = 2
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_committed_size_per_ready: int = 16 << 20
    check_quorum: bool = True
    pre_vote: bool = True


@dataclass(slots=True, frozen=True)
class HostPolicy:
    """How the host drives its node, beyond the ordering contract (see the module docstring)."""

    lazy_commit: bool = False
    quiesce_after: int = 0
    """A leader with no new entries for this many ticks is asked to quiesce (0: never)."""
    pipeline: bool = False
    """Take the next Ready while earlier ones are still being written (see the module doc)."""


class HostEvents(Protocol):
    """What a node's host reports to the world (and through it to the checker)."""

    def send(self, sn: SimNode, msgs: list[Message]) -> None: ...

    def persisted(self, sn: SimNode, rd: Ready) -> None: ...

    def syncing(self, sn: SimNode) -> None:
        """Step 2's fsync is pending: the world may propose on sn now (no Ready cycle)."""
        ...

    def writes_done(self, sn: SimNode, queued: int) -> int:
        """How many of sn's `queued` writes in flight the disk finishes now (pipeline)."""
        ...

    def applying(self, sn: SimNode, e: Entry) -> None: ...

    def applied_conf_change(self, sn: SimNode, e: Entry, cc: ConfChange, cs: ConfState) -> None: ...

    def installed_snapshot(self, sn: SimNode, snap: Snapshot) -> None: ...

    def crashed(self, sn: SimNode, point: CrashPoint) -> None: ...


CrashDecider = Callable[["SimNode", Ready], CrashPoint]

MAX_READIES_PER_CYCLE = 100_000
"""A host loop that takes more Readies than this in one go never settles: the core keeps
handing out the same work (it would spin, or fill memory with writes in flight, forever)."""


class HostLoopError(RuntimeError):
    pass


@dataclass(slots=True)
class _Write:
    """A Ready whose write is in flight (pipeline)."""

    rd: Ready
    point: CrashPoint
    applied: bool = False
    """Its committed entries were applied ahead of the write (apply ahead)."""


class SimNode:
    """One node and its disk. `node` is None while the node is down."""

    def __init__(
        self,
        node_id: int,
        storage: MemoryStorage,
        params: RaftParams,
        events: HostEvents,
        policy: HostPolicy | None = None,
    ) -> None:
        self.id = node_id
        self.storage = storage
        self.params = params
        self.events = events
        self.policy = policy or HostPolicy()
        self.synced = storage.hard_state  # the hard state a crash leaves (lazy commit)
        self.node: RawNode | None = None
        self.machine = Machine()
        self.conf_state = ConfState()
        self.life = 0  # incremented on every start, so a message knows which life sent it
        self.removed = False  # out of the group: never restarted again
        self.restart_at: int | None = None  # tick at which a crashed node comes back
        self.shutdown_at: int | None = None  # tick at which a removed node is stopped
        self.crash_armed = False  # crash during the next Ready that needs an fsync
        self.dirty = False  # stepped since its last Ready cycle
        self.durable_commit = 0  # highest commit index ever made durable (never decreases)
        self.busy_tick = 0  # last tick a Ready carried entries (quiescence waits for idleness)
        self.client_waiting = False  # a client batch to take during the next fsync
        self.unreachable: set[int] = set()  # peers the transport reports lost
        self.peer_lives: dict[int, int] = {}  # peer -> its life when last seen reachable
        self.writes: deque[_Write] = deque()  # in flight (pipeline), oldest first
        self.apply_ahead = False  # this life applies durable committed entries early
        self.applied_ahead = 0  # Readies whose entries were applied before their write
        self.disk = random.Random(0)  # how many queued writes the disk finishes (pipeline)
        self.disk_stalled = False  # a fault: the disk finishes nothing until it heals
        self.crashes = 0
        self.pipelined = 0  # Readies taken while an earlier write was still in flight
        self.stale_writes = 0  # writes finished after a newer leader replaced their entries
        self.snapshots_installed = 0
        self.snapshots_taken = 0
        self.incarnation = 0  # bumped when its disk is wiped: a new data directory
        self.fence: Fence | None = None  # on its disk, as node/ keeps it (set after a wipe)

    @property
    def alive(self) -> bool:
        return self.node is not None

    def start(self, rng_seed: int) -> None:
        """Boot from the MemoryStorage only, as a process would from its disk."""
        snap = self.storage.snapshot()
        self.machine = Machine.from_snapshot(snap)
        self.conf_state = snap.meta.conf_state
        p = self.params
        cfg = Config(
            id=self.id,
            election_tick=p.election_tick,
            heartbeat_tick=p.heartbeat_tick,
            rng=random.Random(rng_seed),
            applied=snap.meta.index,
            max_size_per_msg=p.max_size_per_msg,
            max_inflight_msgs=p.max_inflight_msgs,
            max_committed_size_per_ready=p.max_committed_size_per_ready,
            check_quorum=p.check_quorum,
            pre_vote=p.pre_vote,
            isr=IsrPolicy(),
            # Its own draw, so the world's draws stay as they are: half the lives commit lazily.
            lazy_commit=random.Random(rng_seed ^ 0x1A2C0).random() < 0.5,
        )
        self.node = RawNode(cfg, self.storage)
        if self.fence is not None:
            self.node.set_fence(self.fence)
        self.disk = random.Random(rng_seed ^ 0xD15C)  # its own: the world's draws stay as they are
        self.apply_ahead = self.policy.pipeline and random.Random(rng_seed ^ 0xA4EAD).random() < 0.5
        self.life += 1
        self.restart_at = None
        self.crash_armed = False
        self.dirty = True

    def crash(self, point: CrashPoint = CrashPoint.NONE) -> None:
        """Lose everything but what the MemoryStorage holds durably."""
        self.node = None
        self.writes.clear()  # never reached the disk
        self.storage.set_hard_state(self.synced)  # an unsynced commit index is gone
        self.unreachable.clear()
        self.peer_lives.clear()
        self.client_waiting = False
        self.crashes += 1
        self.dirty = False
        self.crash_armed = False
        self.events.crashed(self, point)

    def wipe(self, bootstrap: ConfState) -> None:
        """The disk is gone (the node must be down): a new, empty data directory, which the
        host boots with the group's bootstrap membership and, being a new incarnation of a
        node the group knows, fenced silent (raft/core.py, "Rejoining after a lost disk")."""
        assert self.node is None
        self.storage = MemoryStorage(bootstrap)
        self.synced = HardState()
        self.durable_commit = 0
        self.machine = Machine()
        self.conf_state = ConfState()
        self.incarnation += 1
        self.fence = Fence()

    def readd(self, bootstrap: ConfState) -> None:
        """Added back after its removal (a broker's replica move away and back: node/driver.py
        deletes the replica and keeps what it promised, node/membership.py "Promises"): an
        empty log with `bootstrap`'s membership, the old replica's term and vote, and a fence
        whose floor is its last entry (raft/core.py, "Coming back after a removal"). The node
        must be down."""
        assert self.node is None
        # The old replica's writes still in flight (a shutdown, unlike a crash, leaves them to
        # finish) belong to the deleted replica: the broker deletes it in a later round, after
        # them; none may land in the new one's empty log. What they held was never promised
        # (nothing is sent before its write is durable), so the promises below are complete.
        self.writes.clear()
        old = self.storage
        hs = old.hard_state
        last = old.last_index()
        promised = HardState(term=hs.term, vote=hs.vote)
        self.storage = MemoryStorage(bootstrap)
        self.storage.set_hard_state(promised)
        self.synced = promised
        self.durable_commit = 0
        self.machine = Machine()
        self.conf_state = ConfState()
        self.removed = False
        if last > 0:
            floor = Fence(min_term=1, floor_term=old.term(last), floor_index=last)
            if self.fence is not None:
                floor = dataclasses.replace(
                    self.fence, floor_term=floor.floor_term, floor_index=floor.floor_index
                )
            self.fence = floor

    def sync_fence(self) -> None:
        """The core lifted its fence: forget it on disk too (lazily: a restart before this
        only fences the node again until its commit index is back, which is harmless)."""
        if self.fence is not None and self.node is not None and self.node.fence is None:
            self.fence = None

    def cycle(self, decide: CrashDecider, max_readies: int = MAX_READIES_PER_CYCLE) -> None:
        """Run Ready cycles until the node has nothing more to do (or crashes), or for at most
        `max_readies` Readies: a host that does one round per wake-up, as node/'s driver does,
        leaves committed entries unapplied while it steps the next input.

        Each Ready: step 1, then its write joins the queue. In step (the default) the write
        finishes at once; with writes in flight (policy.pipeline) the host takes every Ready
        first, then the disk finishes some queued writes, oldest first, and the host takes more
        only when the disk finished everything and the node has more to say."""
        self.dirty = False
        ev = self.events
        pipeline = self.policy.pipeline
        limit = max_readies
        while True:
            while self.node is not None and self.node.has_ready():
                if max_readies == 0:
                    self._unsettled(limit)
                    self.dirty = True
                    break
                max_readies -= 1
                rd = self.node.ready()
                point = decide(self, rd)
                if point == CrashPoint.BEFORE_SEND:
                    self.crash(point)
                    return
                ev.send(self, rd.messages)
                if point == CrashPoint.AFTER_SEND:
                    self.crash(point)
                    return
                self.writes.append(_Write(rd, point))
                self.pipelined += len(self.writes) > 1
                ev.syncing(self)
                if self.apply_ahead:
                    self._apply_ahead()
                if not pipeline and not self._finish_write():
                    return
            if not pipeline:
                return
            queued = len(self.writes)
            done = ev.writes_done(self, queued)
            for _ in range(done):
                if not self._finish_write():
                    return
            if self.apply_ahead and done:
                self._apply_ahead()
            if done < queued or self.dirty or self.node is None or not self.node.has_ready():
                return

    def _unsettled(self, limit: int) -> None:
        if limit >= MAX_READIES_PER_CYCLE:
            raise HostLoopError(
                f"node {self.id} still has a Ready after {limit:,} in one host loop: the core "
                "hands out the same work again"
            )

    def _finish_write(self) -> bool:
        """The oldest queued write is durable: steps 3 to 5 for its Ready. False: crashed."""
        node = self.node
        assert node is not None
        w = self.writes.popleft()
        rd, point = w.rd, w.point
        ev = self.events
        if rd.entries:
            last = rd.entries[-1]
            self.stale_writes += node.raft.log.unstable.maybe_term(last.index) != last.term
        self._persist(rd)
        ev.persisted(self, rd)
        if point == CrashPoint.AFTER_PERSIST:
            self.crash(point)
            return False
        ev.send(self, rd.persisted_messages)
        if point == CrashPoint.AFTER_PERSISTED_SEND:
            self.crash(point)
            return False
        if not w.applied:
            self._apply(node, rd)
        if point == CrashPoint.AFTER_APPLY:
            self.crash(point)
            return False
        if w.applied:
            node.advance_persisted(rd)
        else:
            node.advance(rd)
        return True

    def _apply_ahead(self) -> None:
        """Apply the committed entries of queued writes that are durable here already, in Ready
        order: the first that cannot (not durable yet, or a snapshot or leader change to hand
        over with its write) holds back the rest (raft/rawnode.py, "Applying ahead")."""
        node = self.node
        assert node is not None
        for w in self.writes:
            if w.applied:
                continue
            rd = w.rd
            ents = rd.committed_entries
            if (
                rd.snapshot is not None
                or rd.soft_state is not None
                or (ents and ents[-1].index > node.persisted_index())
                or rd.applies_conf_change()
            ):
                return
            w.applied = True
            if ents:
                self._apply(node, rd)
                node.advance_applied(rd)
                self.applied_ahead += 1

    def _persist(self, rd: Ready) -> None:
        st = self.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        if rd.entries:
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        hs = st.hard_state
        synced = self.synced
        if (
            not self.policy.lazy_commit
            or rd.entries
            or rd.snapshot is not None
            or hs.term != synced.term
            or hs.vote != synced.vote
            or rd.applies_conf_change()
        ):
            self.synced = hs

    def _apply(self, node: RawNode, rd: Ready) -> None:
        ev = self.events
        if rd.snapshot is not None:
            self.machine = Machine.from_snapshot(rd.snapshot)
            self.conf_state = rd.snapshot.meta.conf_state
            self.snapshots_installed += 1
            ev.installed_snapshot(self, rd.snapshot)
        for e in rd.committed_entries:
            ev.applying(self, e)
            self.machine.apply(e)
            if e.type == EntryType.CONF_CHANGE:
                cc = ConfChange.decode(e.data)
                self.conf_state = node.apply_conf_change(cc)
                ev.applied_conf_change(self, e, cc, self.conf_state)

    def take_snapshot(self, keep: int) -> bool:
        """Snapshot the applied state and compact the log, keeping `keep` entries before the
        snapshot point for followers that are only a little behind. Returns whether it did."""
        snap = self.storage.snapshot()
        if self.machine.index <= snap.meta.index:
            return False
        index = self.machine.index
        self.storage.create_snapshot(index, self.conf_state, self.machine.encode())
        self.storage.compact(max(snap.meta.index, index - keep))
        self.synced = self.storage.hard_state  # the compaction's write is synced, and all before
        self.snapshots_taken += 1
        return True
