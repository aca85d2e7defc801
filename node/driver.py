"""The one driver between the Raft groups of a node and the world (etcd's node.go, multi-raft).

Theory of operation. Every Raft group of this node (the controller and one per hosted partition)
is a RawNode. One asyncio task runs them all, round after round:

  1. wait until something happens: a tick is due, a message arrived, a proposal was made;
  2. tick every awake group if a tick is due; step every queued message;
  3. take a Ready from every group that has one;
  4. send the messages that may go at once (leaders' appends: followers persist in parallel);
  5. write the snapshots, entries and hard states of ALL groups in ONE RocksDB write batch, then
     ONE fsync of the write-ahead log, in a worker thread (in place for a small round when the
     disk is idle, where the hand-off would cost more than the fsync). A round that only moves
     commit indexes does not sync at all: the commit index is recomputed after a restart, so
     losing its newest value costs nothing (unless it commits a membership change this node
     applies: a restart must not take that back, raft/rawnode.py);
  6. send the messages that had to wait for that sync (votes, acknowledgements);
  7. apply committed entries to each group's state machine; 8. advance every group.

Writes in flight (raft/rawnode.py's contract). Steps 6 to 8 of a round wait for its fsync, but
the next round does not: while the worker thread syncs, rounds go on stepping messages, sending
appends and writing (unsynced) into RocksDB, and queue their Readies behind the sync. When it
returns, one more fsync covers everything written meanwhile (group commit: syncs per second
stay flat as load grows), and each queued round is finished, steps 6 to 8, in the order it was
taken. So a proposal that arrives during a sync reaches the followers at once instead of after
it, and a follower's next append is written while its previous one syncs. With
`RaftTiming.apply_ahead`, the committed entries of a queued round that are durable here already
are applied (and their waiters answered) before that round's own sync returns, in order per
group (raft/rawnode.py, "Applying ahead of a write").

Only this task touches the RawNodes' Ready cycle; gRPC handlers call `propose` on a group between
rounds, or while a round waits for its fsync (all on the one event loop thread, so no locks), and
then mark the group touched. Stepping, ticking and taking Readies wait for the round's advance;
proposing in between is what etcd allows too. GroupStorage's memory may run ahead of the disk
while the fsync is pending; nothing reads the persisted index then but the round itself.

Idle groups cost nothing. A leader that saw no new entries for `quiesce_after_ticks` ticks asks
its RawNode to quiesce (raft/core.py: only when everything is replicated, committed and
applied); its followers follow, and neither side is ticked until something wakes the group. Only
awake groups are ticked and looked at, so the work per tick is O(active groups). A quiesced group
hears nothing, so the transport tells the driver when a peer's node seems gone (its stream broke,
or no frame for a while) or came back, and the driver wakes the groups that must act:
followers of a dead leader elect a new one; a leader with a dead follower ticks until the
follower leaves the ISR, then quiesces without it; a leader whose follower came back heartbeats
it back into the ISR. A live leader woken by a follower resumes heartbeats at once, so its
lease, CheckQuorum and PreVote work as they do without quiescence.

A node with no group awake does not even wake every tick: the tick timer is armed for the next
tick the tick listeners have work at (`next_duty_in`: the broker's gossip and chores, every
fifth tick), and the ticks in between are counted for the listeners then, at once. A group that
wakes in between wakes the driver, which takes the ticks that passed and arms the timer for the
next tick again: an awake group is ticked exactly as before.

Fail-stop. A write, a sync or an apply that raises leaves Readies taken and not finished, and
writes of unknown durability behind them: the RawNodes now believe things the disk may not
hold. Nothing safe remains but to stop the node (etcd panics, Redpanda asserts): `halt` logs one
CRITICAL line naming the cause and exits the process with EXIT_STORAGE_FAILURE. It never logs
and carries on. A test injects its own `halt` to see the driver stop instead of the process.

Restart. A group reopens at its snapshot: the state machine restores it and the RawNode starts
with applied = the snapshot's index, so only entries after it are applied again. (The log keeps
entries below the snapshot for followers slightly behind; they must not be re-applied: the
controller's and the groups' commands are not idempotent.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, KeysView
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol

from node.membership import (
    ANCHOR_GROUP,
    FENCES_KEY,
    PROMISES_KEY,
    Promises,
    fences_value,
    load_promises,
    promises_value,
    save_fences,
)
from node.storage import GroupStorage, GroupUpdate, NodeStore, StorageError
from node.tasks import FAIL_STOP_EXIT_CODE, fail_stop, supervise
from raft import (
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryType,
    Fence,
    HardState,
    IsrPolicy,
    Message,
    MessageType,
    RaftError,
    RawNode,
    Ready,
    Role,
    Snapshot,
    SoftState,
)

log = logging.getLogger("liferaft.driver")

EXIT_STORAGE_FAILURE = FAIL_STOP_EXIT_CODE
"""The exit code of a node stopped by fail-stop (node/tasks.py's, as a vital task's failure)."""

TIMER_SLACK_S = 0.001
"""A tick is due this close to its time. uvloop keeps its clock in whole milliseconds: the
timer armed for `_next_tick` fires when loop.time() may still read a float epsilon below it
(on a host up more than 2**16 s, 84 % of the ticks). Such a wake-up used to return without
ticking or re-arming, leaving the driver asleep until a message came: a new cluster never
elected its controller (every node "voting", none campaigning)."""


def exit_process(cause: str) -> None:
    """The production `halt`: the process ends at once, without running cleanups that would
    touch the untrusted store again."""
    logging.shutdown()
    os._exit(EXIT_STORAGE_FAILURE)


class StateMachine(Protocol):
    """What a Raft group's owner (a partition, the controller) hears from the driver."""

    def apply(self, entries: list[Entry]) -> None:
        """Committed entries, in log order (NOOP and CONF_CHANGE included; skip what you need not)."""

    def restore(self, snapshot: Snapshot) -> None:
        """The leader sent a snapshot: replace all state with it."""

    def on_soft_state(self, soft: SoftState, term: int) -> None:
        """Leadership changed (this node won or lost it, or learnt of a new leader)."""

    def on_round(self) -> None:
        """Called after every round in which this group did anything (resolve waiters here)."""

    def on_tick(self) -> None:
        """Called on every tick (timeouts, periodic checks)."""


class Outbox(Protocol):
    """The transport as the driver sees it: queue now, flush once per round."""

    def send(self, to: int, group: str, msg: Message) -> None: ...

    def flush(self) -> None: ...


@dataclass(slots=True)
class RaftTiming:
    tick_s: float = 0.02
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    isr: IsrPolicy = field(default_factory=IsrPolicy)
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 64
    inline_sync_bytes: int = 64 << 10
    """A round persisting less than this fsyncs on the event loop instead of in the worker
    thread: measured one record at a time, p50 1.9-2.3 -> 1.6-1.7 ms; and 16 KiB batches
    went 11.1k -> 12.6k records/s."""
    apply_ahead: bool = False
    """Apply committed entries durable here while a later round's sync runs (raft/rawnode.py,
    "Applying ahead of a write") instead of after it. Off: on the shared 2-core VM it did not
    pay (docs/performance.md, issue 18); tests/brokersim runs it in every world whose rounds
    all sync in the worker thread."""
    coalesce_proposals: bool = True
    """Group commit of proposals: the produce requests of one partition that arrive between
    two rounds are proposed as one entry holding their batches (node/partition.py,
    `flush_proposals`) instead of one entry each."""
    coalesce_max_bytes: int = 128 << 10
    """Batches proposed together fill entries up to this size; a larger batch is an entry of
    its own (large batches gain little from sharing one, and joining them costs a copy)."""
    coalesce_max_turns: int = 32
    coalesce_quiet_turns: int = 8
    """Group commit waits up to coalesce_max_turns turns of the event loop for more proposals,
    and stops after coalesce_quiet_turns in a row without one (RaftDriver._gather_proposals)."""
    lazy_commit: bool = True
    """Leaders send a new commit index with the next append, or at the next tick, not in an
    empty append of its own (raft Config.lazy_commit): half the messages, acknowledgements
    and follower rounds per entry under load. On since session 8 (docs/performance.md,
    issue 18): the stall once suspected of it was the grpc INTERNAL error since fixed in
    client/errors.py; the simulations run it both ways. Partition groups only: the metadata
    groups tell their followers at once (`add_group(eager_commit=True)`)."""
    quiesce_after_ticks: int = 3
    """A leader with no new entries for this many ticks tries to quiesce (0: never). Short:
    an awake idle group costs heartbeats, and waking one costs a message."""


@dataclass(slots=True)
class Group:
    id: str
    node: RawNode
    storage: GroupStorage
    fsm: StateMachine
    conf_state: ConfState
    removed: bool = False
    busy_tick: int = 0
    """The driver's tick count when the group last had new or committed entries."""
    conf_changes: list[tuple[int, ConfState]] = field(default_factory=list)
    """(index, membership after it) of the conf changes applied since the last snapshot, in
    order: what `conf_state_at` answers from."""
    conf_index: int = 0
    """The index `conf_state` is as of: the last applied conf change's, or the snapshot's if
    newer (what a leader reports with its membership, so older reports can be told apart)."""

    def conf_state_at(self, index: int) -> ConfState:
        """The membership as of applied `index` (at or after the snapshot's): a snapshot taken
        at an index older than the applied one must carry that index's membership."""
        base = self.storage.snapshot()
        if index < base.meta.index:
            raise ValueError(
                f"group {self.id}: membership at {index} is older than the snapshot at "
                f"{base.meta.index}"
            )
        cs = base.meta.conf_state
        for at, after in self.conf_changes:
            if at > index:
                break
            cs = after
        return cs


@dataclass(slots=True)
class _Taken:
    """A Ready taken and written, waiting for the sync that makes its write durable."""

    group: Group
    rd: Ready
    applied: bool = False
    """Its committed entries were applied ahead of the write (RawNode.advance_applied)."""
    unfenced: bool = True
    """The group's fence had lifted when this Ready was taken: once its write is durable, so
    is everything the lift rests on, and the fence may leave the disk."""


@dataclass(slots=True)
class DriverStats:
    rounds: int = 0
    syncs: int = 0
    entries_persisted: int = 0
    bytes_persisted: int = 0
    messages_stepped: int = 0
    sync_seconds: float = 0.0
    rounds_over_sync: int = 0
    """Rounds taken while a sync was in flight (writes in flight)."""
    applied_ahead: int = 0
    """Readies whose committed entries were applied before their own write was durable."""
    quiesces: int = 0
    wakeups: int = 0
    gathers: int = 0
    """Rounds that waited loop turns for more proposals (group commit, `_gather_proposals`)."""
    gather_turns: int = 0
    """Loop turns those waits took."""
    gathers_caught: int = 0
    """Waits during which another proposal arrived (the turns bought something)."""
    messages_from_non_members: int = 0
    """Messages dropped because their sender is not a voter or learner of the group."""
    tick_passes: int = 0
    """Times the driver took the ticks due (most a loop wake-up of their own): one a tick
    while a group is awake, one per several ticks while none is (`next_duty_in`)."""
    replicas_readded_with_promises: int = 0
    """Replicas created again where a deleted one of this node had promised something (their
    term, vote and fence floor come from it: node/membership.py, "Promises")."""


def snapshot_and_trim(group: Group, index: int, data: bytes, keep_entries: int) -> None:
    """Snapshot a replicated state machine at applied `index` and drop the log before it,
    keeping the last `keep_entries` entries so a follower slightly behind catches up from the
    log rather than from a snapshot."""
    storage = group.storage
    take_snapshot(group, index, data)
    keep_from = index - keep_entries
    if keep_from > storage.first_index():
        storage.compact(min(keep_from, index))


def take_snapshot(group: Group, index: int, data: bytes) -> None:
    """Record `data`, the state machine as of applied `index`, as the group's snapshot, with
    the membership of that index; forget the conf changes it now covers."""
    if index <= group.storage.snapshot().meta.index:
        return  # it holds this index already (a newer one came from the leader, say)
    group.storage.create_snapshot(index, group.conf_state_at(index), data)
    snap_index = group.storage.snapshot().meta.index
    group.conf_changes = [(i, c) for i, c in group.conf_changes if i > snap_index]


def _payload_bytes(m: Message) -> int:
    size = sum(len(e.data) for e in m.entries)
    if m.snapshot is not None:
        size += len(m.snapshot.data)
    return size


def split_append(m: Message, max_bytes: int) -> list[Message]:
    """An append cut into appends of consecutive entries, each of at most `max_bytes` of entry
    data or a single entry: what the leader would have sent with a smaller message size limit.
    Each names the entry before its first as its predecessor (index, log_term) and carries the
    message's commit (a follower commits no further than the entries it was sent)."""
    pieces: list[Message] = []
    chunk: list[Entry] = []
    size = 0
    prev_index, prev_term = m.index, m.log_term
    for e in m.entries:
        if chunk and size + len(e.data) > max_bytes:
            pieces.append(
                dataclasses.replace(m, index=prev_index, log_term=prev_term, entries=tuple(chunk))
            )
            prev_index, prev_term = chunk[-1].index, chunk[-1].term
            chunk, size = [], 0
        chunk.append(e)
        size += len(e.data)
    if not pieces:
        return [m]
    pieces.append(
        dataclasses.replace(m, index=prev_index, log_term=prev_term, entries=tuple(chunk))
    )
    return pieces


IDLE_TICKS_MAX = 10
"""With no group awake, the driver's timer spans at most this many ticks (the listeners'
next_duty_in says how many); a stall past them is not made up for."""
_THROTTLED = (MessageType.APP, MessageType.SNAP)
_FROM_LEADER = frozenset({MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP})
_FROM_EXPECTED = _FROM_LEADER | {MessageType.VOTE, MessageType.PRE_VOTE}
"""What a replica hears from a node the metadata names as a member before it has applied that
node's addition: a leader's messages, and vote requests (granting a vote is safe whoever asks;
a lagging voter that dropped a new voter's vote requests could leave the group leaderless)."""
THROTTLED_INFLIGHT = 2
"""Appends in flight to a throttled peer at least (raft's window for it while throttled)."""
THROTTLED_INFLIGHT_S = 0.25
"""...and as many as hold this long a stretch of its rate: a window of 2 appends of up to
max_size_per_msg, acknowledged only after the learner's fsync (tens of ms on a busy disk),
would cap the rate below a throttle of 20 MB/s; the token bucket, not the window, is what
keeps the pace, so a wider window costs only what waits in the bucket."""


def throttled_piece(per_tick: float, max_size_per_msg: int) -> int:
    """Raft's entry bytes per append to a throttled peer: one tick's allowance (at most
    max_size_per_msg). The leader reads each append from its database in one call that holds
    the GIL, disk waits included: a 1 MiB read of a moving partition's old log held the
    leader's event loop 4-10 ms on the 2-core VM, and the produce traffic it leads or follows
    waited behind it (issue 19). Tick-sized appends leave the bucket as they are read, so
    split_append has nothing to cut."""
    return max(1, min(int(per_tick), max_size_per_msg))


def throttled_window(bytes_per_s: int, max_size_per_msg: int) -> int:
    """Raft's in-flight window for a peer fed at `bytes_per_s`."""
    return max(THROTTLED_INFLIGHT, -(-int(bytes_per_s * THROTTLED_INFLIGHT_S) // max_size_per_msg))


@dataclass(slots=True)
class Throttle:
    """A token bucket for one peer of one group: its appends and snapshots wait in order and
    leave as the allowance (bytes per tick) accrues; an empty append leaves as soon as it is at
    the head. Appends stay in order because one that overtook the others would be rejected (its
    previous entry not there yet) and send the leader back to probing. Heartbeats pass: Raft
    does not need them in order with the appends.

    A new append that starts at or before a waiting one's start is the leader sending again
    from an earlier point (a probe after a rejection, or its retry): the waiting ones it covers
    are dropped, as a lossy link would drop them. Otherwise a leader probing every heartbeat
    would queue a copy per heartbeat while the first waits its turn.

    An append larger than one tick's allowance is cut into appends of at most that much (whole
    entries, at least one each; `split_append`), which leave tick by tick. Raft reads up to
    max_size_per_msg (1 MiB) per append; sent whole, that is a burst the receiver writes and
    fsyncs in one round, in the same write batch and sync as its produce traffic, and a frame
    that holds up the other groups' messages on the one connection between the two nodes
    (issue 19: produce p99 at half load during a move). Smaller pieces at the same rate spread
    the cost over the ticks. Each piece is a valid append (its predecessor is the previous
    piece's last entry); the leader counts the message once in its window and frees the slot
    when the last piece is acknowledged."""

    per_tick: float
    window: int = THROTTLED_INFLIGHT
    """Raft's in-flight window for the peer while throttled (throttled_window)."""
    piece: int = 0
    """Raft's entry bytes per append to the peer while throttled (throttled_piece; 0: its
    max_size_per_msg)."""
    allowance: float = 0.0
    held: deque[Message] = field(default_factory=deque)
    bytes_sent: int = 0

    def wants(self, m: Message) -> bool:
        return m.type in _THROTTLED and (bool(self.held) or _payload_bytes(m) > 0)

    def offer(self, m: Message) -> None:
        if m.type == MessageType.APP and m.entries:
            while (
                self.held
                and self.held[-1].type == MessageType.APP
                and (self.held[-1].index >= m.index)
            ):
                self.held.pop()
            self.held.extend(split_append(m, int(self.per_tick)))
            return
        self.held.append(m)

    def release(self, out: Outbox, group_id: str, peer: int) -> bool:
        # Burst at most one tick's worth (or one message) beyond the rate.
        self.allowance = min(self.allowance + self.per_tick, self.per_tick)
        sent = False
        while self.held:
            size = _payload_bytes(self.held[0])
            if size and self.allowance <= 0:
                break
            self.allowance -= size
            self.bytes_sent += size
            out.send(peer, group_id, self.held.popleft())
            sent = True
        return sent

    def release_all(self, out: Outbox, group_id: str, peer: int) -> None:
        while self.held:
            out.send(peer, group_id, self.held.popleft())


class RaftDriver:
    def __init__(
        self,
        node_id: int,
        store: NodeStore,
        outbox: Outbox,
        timing: RaftTiming,
        rng: random.Random | None = None,
        halt: Callable[[str], None] = exit_process,
        run_sync: Callable[[Callable[[], None]], Awaitable[None]] | None = None,
    ) -> None:
        self.node_id = node_id
        self.halt = halt
        self._run_sync = run_sync or self._sync_in_thread
        """Runs a WAL sync off the round (the worker-thread path): in the worker thread in
        production; a simulation injects its own, to run the sync at a virtual time of its
        choosing (tests/brokersim/)."""
        """Called once, with the cause, when the node must stop (fail-stop); ends the process
        in production. The driver has stopped by then either way."""
        self.failure: str | None = None
        """Why the driver stopped, if fail-stop stopped it."""
        self.store = store
        self.outbox = outbox
        self.timing = timing
        self.rng = rng or random.Random()
        self.groups: dict[str, Group] = {}
        self.stats = DriverStats()
        self.soft_state_listeners: list[Callable[[str, SoftState], None]] = []
        """Told every group's leader or role change after its owner (the node's metrics)."""
        self._inbox: list[tuple[str, Message]] = []
        self._proposals_queued = 0  # calls of will_propose, ever (to see new ones arrive)
        self._gather = False  # a group with proposals waiting has others in flight
        self._quiet_turns = timing.coalesce_quiet_turns
        """How many turns without a new proposal end the next gather: the configured number
        while gathers catch proposals, halved after each one that caught none (a lone request
        every few milliseconds gains nothing from waiting; each turn costs ~15 us)."""
        self._gathers_since_full = 0
        self._proposers: dict[str, Callable[[], None]] = {}
        """Groups with proposals waiting for the next round (group commit), and how to make
        them: each is called once, before the round ticks or steps anything."""
        # Insertion-ordered (dicts, not sets): groups are ticked and their rounds taken in an
        # order that does not hang on string hashing, so one seed of the broker simulation
        # replays one world whatever PYTHONHASHSEED is (tests/brokersim/README.md).
        self._dirty: dict[str, None] = {}
        self._awake: dict[str, None] = {}  # groups that are not quiesced: the ones to tick
        self._unreachable: set[int] = set()  # peers the transport says are gone
        self._ticks = 0
        self._syncer = ThreadPoolExecutor(1, thread_name_prefix=f"wal-sync-{node_id}")
        self._queued: list[_Taken] = []
        """Rounds written but not finished: they wait for the next sync (oldest first)."""
        self._syncing: list[_Taken] = []
        """Rounds whose sync is in flight (older than every one in _queued)."""
        self._queued_sync = False  # whether something in _queued needs that sync
        self._sync_task: asyncio.Task[None] | None = None  # the sync in flight, if any
        self._wake = asyncio.Event()
        self._stopped = False
        self._doing = "idle"  # the stage of the round under way, for the fail-stop message
        self._task: asyncio.Task[None] | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        self.tick_listeners: list[Callable[[], None]] = []
        self.next_duty_in: Callable[[], int] = lambda: 1
        """In how many ticks (>= 1) the tick listeners next do more than count the tick: with
        no group awake, the driver sleeps until then (at most IDLE_TICKS_MAX ticks)."""
        self._armed_ticks = 1
        """How many ticks the armed timer spans: 1, or more while no group is awake."""
        self.expected_members: Callable[[str], Collection[int]] = lambda _group: ()
        """group -> the nodes the cluster's metadata names as its replicas (or a move's target):
        a leader among them is heard before this replica has applied the change that added it
        (the broker sets it; node/moves.py)."""
        self.fences: dict[str, Fence] = {}
        """Groups in which this node is a wiped node's new incarnation, or a replica added back
        with a floor (node/membership.py): kept on disk until the core lifts them; the server
        loads them before any group opens."""
        self._promises: dict[str, Promises] | None = None
        """Deleted replicas' promises by group (node/membership.py), read from disk at first use."""
        self.throttles: dict[tuple[str, int], Throttle] = {}
        """(group, peer) -> how fast that peer is fed the group's log (a learner catching up
        during a replica move: node/moves.py)."""

    # -- groups --------------------------------------------------------------------------------
    def add_group(
        self,
        group_id: str,
        fsm: StateMachine,
        bootstrap: ConfState | None = None,
        *,
        campaign: bool = False,
        eager_commit: bool = False,
    ) -> Group:
        """Open a group from disk, or create it with the `bootstrap` membership if it is new.

        `eager_commit`: the leader tells the followers each new commit index at once, whatever
        `RaftTiming.lazy_commit` says. For the metadata groups (the controller's, the consumer
        groups'): a follower applies a change as soon as it hears it is committed, so what an
        administrator changed through one node (a topic's config, a user, an ACL) is in force
        on every node about a round trip after the answer, not up to a tick later. Their
        traffic is too small for lazy commit indexes to save anything there.

        Every replica of a new group bootstraps the same membership at index 0, so none needs
        to hear from another before the first election."""
        if group_id in self.groups:
            return self.groups[group_id]
        storage = self.store.group(group_id)
        _, cs = storage.initial_state()
        if not cs.voters:
            if bootstrap is None:
                raise RaftError(f"group {group_id} has no membership on disk and none was given")
            storage.bootstrap(bootstrap)
            cs = bootstrap
            promised = self._load_promises().get(group_id)
            if promised is not None:
                self._keep_promises(storage, promised)
        snap = storage.snapshot()
        if not snap.is_empty():
            fsm.restore(snap)
        # Restart at the snapshot, not at the log start below it: the entries in between are
        # in the restored state already, and applying them again would apply them twice.
        cfg = Config(
            id=self.node_id,
            election_tick=self.timing.election_ticks,
            heartbeat_tick=self.timing.heartbeat_ticks,
            rng=random.Random(self.rng.random()),
            applied=snap.meta.index,
            max_size_per_msg=self.timing.max_size_per_msg,
            max_inflight_msgs=self.timing.max_inflight_msgs,
            isr=self.timing.isr,
            lazy_commit=self.timing.lazy_commit and not eager_commit,
            logger=logging.getLogger(f"liferaft.raft.{group_id}"),
        )
        node = RawNode(cfg, storage)
        fence = self.fences.get(group_id)
        if fence is not None:
            node.set_fence(fence)  # before any message: see node/membership.py
        group = Group(
            id=group_id,
            node=node,
            storage=storage,
            fsm=fsm,
            conf_state=cs,
            busy_tick=self._ticks,
            conf_index=snap.meta.index,
        )
        self.groups[group_id] = group
        if campaign and len(cs.voters) == 1 and self.node_id in cs.voters:
            node.campaign()
        self._dirty[group_id] = None
        self._awake[group_id] = None
        self.wake()
        return group

    def remove_group(self, group_id: str, *, destroy: bool, for_good: bool = False) -> None:
        """Close a group; with destroy, delete its replica from disk, first writing what it
        promised (node/membership.py, "Promises") unless the group can never come back here
        (for_good: its topic was deleted)."""
        group = self.groups.pop(group_id, None)
        if group is None:
            return
        group.removed = True
        self._dirty.pop(group_id, None)
        self._awake.pop(group_id, None)
        if destroy:
            promises = self._load_promises()
            st = group.storage
            hs, last = st.hard_state, st.last_index()
            if for_good:
                dropped = promises.pop(group_id, None) is not None
            else:
                old = promises.get(group_id)
                # (Promises still on disk for a replica that has state: a crash came between
                # their write and the deletion. The replica's own are as new or newer.)
                dropped = hs.term > 0 and (old is None or old.term <= hs.term)
                if dropped:
                    # Its last entry, or what it still had to pass: a replica started from an
                    # earlier one's promises and deleted before its log passed their floor
                    # (added back, removed again at once) promised that floor too. Without it,
                    # the brokersim seed 50284 (the driver's group order fixed) added node 3 back
                    # with no floor after such a pair; it voted for a candidate lacking entries
                    # 23-41 its first replica had helped commit, and they were lost.
                    at = (st.term(last), last)
                    fence = self.fences.get(group_id)
                    if fence is not None and fence.floor_index:
                        at = max(at, (fence.floor_term, fence.floor_index))
                    if old is not None:
                        at = max(at, (old.last_term, old.last_index))
                    promises[group_id] = Promises(
                        term=hs.term, vote=hs.vote, last_term=at[0], last_index=at[1]
                    )
            if dropped:
                self._write_promises(promises, "saving a deleted replica's promises")
            st.destroy()
            if self.fences.pop(group_id, None) is not None:
                save_fences(self.store, self.fences)

    def _load_promises(self) -> dict[str, Promises]:
        if self._promises is None:
            self._promises = load_promises(self.store)
        return self._promises

    def forget_promises(self, gone: Callable[[str], bool]) -> None:
        """Drop the promises of deleted replicas whose group is `gone` for good (its topic was
        deleted: topic ids are never reused)."""
        promises = self._load_promises()
        dropped = [g for g in promises if gone(g)]
        if not dropped:
            return
        for g in dropped:
            del promises[g]
        self._write_promises(promises, "dropping a deleted topic's promises")

    def _write_promises(self, promises: dict[str, Promises], what: str) -> None:
        self._durably(
            [
                GroupUpdate(
                    group=self.store.group(ANCHOR_GROUP),
                    meta=[(PROMISES_KEY, promises_value(promises))],
                )
            ],
            what,
        )

    def _durably(self, updates: list[GroupUpdate], what: str) -> None:
        """One synced write of promises or fences. A failure stops the node (fail-stop): what
        it promised is then unknown on disk; the error goes on to the caller too."""
        try:
            self.store.write(updates, sync=True)
        except (OSError, StorageError) as e:
            self._fail_stop(f"{what} failed: {e!r}")
            raise

    def _keep_promises(self, storage: GroupStorage, promised: Promises) -> None:
        """Start a new replica of a group from what this node's deleted replica of it promised
        (node/membership.py, "Promises"; raft/core.py, "Coming back after a removal"): its
        term and vote as the hard state, its last entry as the floor of the group's fence
        (kept with a wiped node's fence if there is one). One synced write, before the core
        is made: the promises leave the disk only with their replacement on it."""
        group_id = storage.group_id
        fence = self.fences.get(group_id)
        if promised.last_index > 0:
            floor = {"floor_term": promised.last_term, "floor_index": promised.last_index}
            self.fences[group_id] = (
                replace(fence, **floor) if fence is not None else Fence(min_term=1, **floor)
            )
        promises = self._load_promises()
        del promises[group_id]
        self._durably(
            [
                GroupUpdate(
                    group=storage,
                    hard_state=HardState(term=promised.term, vote=promised.vote),
                    meta=[
                        (FENCES_KEY, fences_value(self.fences)),
                        (PROMISES_KEY, promises_value(promises)),
                    ],
                )
            ],
            "starting a replica from its predecessor's promises",
        )
        self.stats.replicas_readded_with_promises += 1
        log.info(
            "node %d: group %s: a replica of this node was here before; starting from its "
            "term %d (vote %d), voting once the log passes its last entry %d@%d",
            self.node_id,
            group_id,
            promised.term,
            promised.vote,
            promised.last_index,
            promised.last_term,
        )

    def set_fence(self, group_id: str, fence: Fence | None) -> None:
        """Fence (or unfence) this node in a group, durably first, then in the core if the
        group is open (raft/core.py, "Rejoining after a lost disk")."""
        old = self.fences.get(group_id)
        if old is not None and old.floor_index and (fence is None or not fence.floor_index):
            # A floor is this node's own promise (node/membership.py, "Promises"): no grant or
            # birth waives it; it lifts with the core's fence.
            floor = {"floor_term": old.floor_term, "floor_index": old.floor_index}
            fence = replace(fence, **floor) if fence is not None else Fence(min_term=1, **floor)
        if fence is None:
            if self.fences.pop(group_id, None) is None:
                return
        else:
            self.fences[group_id] = fence
        if not self._save_fences():
            return
        group = self.groups.get(group_id)
        if group is not None:
            group.node.set_fence(fence)
            self._note_lifted(group)
            self._dirty[group_id] = None
            self._awake[group_id] = None
            self._wake.set()

    def _save_fences(self) -> bool:
        """Write the fences durably; a write or sync that fails stops the node (fail-stop),
        as any other: the fences in memory are then ahead of the disk, and a grant may come
        from gossip (an event-loop callback) where a raised error would only be logged."""
        try:
            save_fences(self.store, self.fences)
        except (OSError, StorageError) as e:
            self._fail_stop(f"saving the node's fences failed: {e!r}")
            return False
        return True

    def fence_of(self, group_id: str) -> Fence | None:
        return self.fences.get(group_id)

    def _note_lifted(self, group: Group) -> None:
        if group.id in self.fences and group.node.fence is None:
            del self.fences[group.id]
            if not self._save_fences():
                return
            log.info("node %d: group %s: fence lifted, voting as itself", self.node_id, group.id)

    # -- inputs --------------------------------------------------------------------------------
    def deliver(self, group_id: str, msg: Message) -> None:
        """A message from a peer (called by the transport)."""
        self._inbox.append((group_id, msg))
        self._wake.set()

    def will_propose(self, group_id: str, flush: Callable[[], None], *, busy: bool) -> None:
        """A handler has proposals for a group waiting: `flush` proposes them, first thing in
        the next round (so every handler that runs before it adds to the same entry). `busy`:
        the group has earlier proposals still unanswered, so more requests are likely on their
        way; the round then waits a few loop turns for them (`_gather_proposals`). A lone
        request (one at a time) is proposed at once, as without group commit."""
        self._proposers[group_id] = flush
        self._proposals_queued += 1
        self._gather = self._gather or busy
        self._wake.set()

    async def _gather_proposals(self) -> None:
        """Let the loop run a few more times before proposing, while more requests keep
        arriving: a request the transport has already taken in reaches its handler (and
        `will_propose`) only a few loop turns later, and each turn costs microseconds where
        an entry of its own costs a write, an fsync, an append and an acknowledgement per
        follower. Stops after `_quiet_turns` turns without a new proposal.

        Adaptive: a gather that caught nothing halves the next one's quiet turns (down to
        one), one that caught a proposal restores `coalesce_quiet_turns`, and every
        `coalesce_quiet_turns`-th gather runs in full anyway, so arrivals a few turns apart
        are found again. At a few hundred lone requests a second per leader (bench e2e)
        the quiet turns cost more than they caught."""
        full = self.timing.coalesce_quiet_turns
        self._gathers_since_full += 1
        if self._gathers_since_full >= full:
            self._gathers_since_full = 0
            limit = full
        else:
            limit = self._quiet_turns
        quiet = 0
        turns = 0
        caught = False
        stats = self.stats
        for _ in range(self.timing.coalesce_max_turns):
            before = self._proposals_queued
            await asyncio.sleep(0)
            turns += 1
            if self._stopped:
                break
            if self._proposals_queued == before:
                quiet += 1
                if quiet >= limit:
                    break
            else:
                quiet = 0
                caught = True
        stats.gathers += 1
        stats.gather_turns += turns
        if caught:
            stats.gathers_caught += 1
            self._quiet_turns = full
        else:
            self._quiet_turns = max(1, limit // 2)

    def _flush_proposals(self) -> None:
        proposers, self._proposers = self._proposers, {}
        self._gather = False
        for group_id, flush in proposers.items():
            if group_id in self.groups:
                flush()

    def touched(self, group_id: str) -> None:
        """A handler proposed on or otherwise changed a group: process it next round."""
        self._dirty[group_id] = None
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def set_throttle(self, group_id: str, peer: int, bytes_per_s: int) -> None:
        """Feed `peer` the group's appends and snapshots at most `bytes_per_s` (0: lift the
        limit): they wait in order, released tick by tick. Delaying a message is always safe
        in Raft (a slow link); the leader's in-flight window bounds how many wait."""
        key = (group_id, peer)
        group = self.groups.get(group_id)
        if bytes_per_s <= 0:
            throttle = self.throttles.pop(key, None)
            if throttle is not None:
                throttle.release_all(self.outbox, group_id, peer)
                self.outbox.flush()
                if group is not None:
                    group.node.set_inflight_limit(peer, 0)
            return
        per_tick = bytes_per_s * self.timing.tick_s
        piece = throttled_piece(per_tick, self.timing.max_size_per_msg)
        # An append holds whole entries: one just over half a piece goes alone (two would be
        # over), so count appends as half full.
        window = throttled_window(bytes_per_s, max(1, piece // 2))
        if group is not None:
            # A short window: the leader reads and holds at most that much for the peer, not
            # max_inflight_msgs appends of up to max_size_per_msg each in one round. And small
            # appends: each is one read of old entries from the database, under the GIL.
            group.node.set_inflight_limit(peer, window, piece)
        throttle = self.throttles.get(key)
        if throttle is None:
            self.throttles[key] = Throttle(per_tick, window, piece)
        else:
            throttle.per_tick = per_tick
            throttle.window = window
            throttle.piece = piece

    def _release_throttled(self) -> None:
        out = self.outbox
        sent = False
        for (group_id, peer), throttle in list(self.throttles.items()):
            if group_id not in self.groups:
                del self.throttles[(group_id, peer)]
                continue
            sent = throttle.release(out, group_id, peer) or sent
        if sent:
            out.flush()

    def is_quiesced(self, group_id: str) -> bool:
        group = self.groups.get(group_id)
        return group is not None and group.node.quiesced

    def awake_groups(self) -> KeysView[str]:
        """Ids of the groups that are not quiesced."""
        return self._awake.keys()

    def peer_changed(self, node_id: int, alive: bool) -> None:
        """The transport lost (alive=False) or regained contact with a node. Wake the quiesced
        groups that must act: on a loss, those the node leads (their followers elect a new
        leader) and those this node leads with it as a member (the ISR must shrink, then they
        quiesce without it); on a return, those this node leads with it as a member (it needs
        heartbeats to rejoin and catch up)."""
        if alive:
            self._unreachable.discard(node_id)
        else:
            self._unreachable.add(node_id)
        woken = 0
        me = self.node_id
        for group in self.groups.values():
            node = group.node
            if not node.quiesced:
                continue
            cs = group.conf_state
            if node_id not in cs.voters and node_id not in cs.learners:
                continue
            leader = node.leader
            if leader == me or (not alive and leader == node_id):
                node.unquiesce()
                self._dirty[group.id] = None
                self._awake[group.id] = None
                woken += 1
        if woken:
            self.stats.wakeups += woken
            log.debug("node %d: woke %d groups of node %d", self.node_id, woken, node_id)
            self._wake.set()

    # -- the loop ------------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._next_tick = loop.time() + self.timing.tick_s
        self._schedule_tick()
        self._task = supervise(self._run(), f"raft-driver-{self.node_id}", on_failure=fail_stop)

    async def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._sync_task is not None:
            await asyncio.gather(self._sync_task, return_exceptions=True)
        self._syncer.shutdown(wait=True)

    def _schedule_tick(self) -> None:
        """Arm the timer for the next tick, or, with no group awake and no throttled messages,
        for the next tick the listeners have work at (module docstring): a quiet node's loop
        then wakes a fifth as often."""
        loop = asyncio.get_running_loop()
        span = 1
        if not self._awake and not self.throttles:
            span = max(1, min(IDLE_TICKS_MAX, self.next_duty_in()))
        self._armed_ticks = span
        self._tick_handle = loop.call_at(
            self._next_tick + (span - 1) * self.timing.tick_s, self._tick_timer_fired
        )

    def _tick_timer_fired(self) -> None:
        self._tick_handle = None  # spent: _maybe_tick re-arms it if it fired early
        self._wake.set()

    def _rearm_tick(self) -> None:
        """A group woke while the timer spanned idle ticks: tick on time again."""
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        self._schedule_tick()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopped:
            await self._wake.wait()
            self._wake.clear()
            try:
                # Keep going while rounds produce work (a leader that commits after persisting
                # its own entries broadcasts the new commit index), ticking on time throughout.
                while not self._stopped:
                    if self._proposers:
                        if self._gather:
                            await self._gather_proposals()
                        self._doing = "proposing"
                        self._flush_proposals()
                    self._doing = "ticking"
                    self._maybe_tick(loop.time())
                    self._doing = "stepping messages"
                    self._step_inbox()
                    self._doing = "taking Readies"
                    if not await self._round():
                        break
                    await asyncio.sleep(0)  # let handlers and the transport run between rounds
                if self._armed_ticks > 1 and (self._awake or self.throttles):
                    self._rearm_tick()
            except Exception as e:
                self._fail_stop(f"a raft round failed while {self._doing}: {e!r}")
                return

    def _fail_stop(self, cause: str) -> None:
        """Stop for good: Readies were taken and not finished, and what the disk holds is
        unknown. No round runs again; nothing more is sent, acknowledged or applied."""
        if self.failure is not None:
            return
        self.failure = cause
        self._stopped = True
        self._wake.set()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        log.critical(
            "node %d: STORAGE FAILURE, stopping the node (fail-stop): %s",
            self.node_id,
            cause,
            exc_info=True,
        )
        self.halt(cause)

    def _maybe_tick(self, now: float) -> None:
        if now < self._next_tick - TIMER_SLACK_S:
            if self._tick_handle is None and not self._stopped:
                # The timer fired before its time by more than the slack (a coarser clock
                # still): without a timer armed, no tick would ever come again.
                self._schedule_tick()
            return
        self.stats.tick_passes += 1
        if self._armed_ticks > 1:
            # The ticks that passed while the timer spanned them had no group awake: the
            # listeners count them now (a group woken since is ticked below, as it would
            # have been at the first tick after it woke). No more than the timer spanned: a
            # stall is not made up for, as below.
            passed = int((now - self._next_tick) / self.timing.tick_s) + 1
            for _ in range(min(passed, self._armed_ticks) - 1):
                self._tick_all(ticking_groups=False)
                self._next_tick += self.timing.tick_s
        self._tick_all()
        self._next_tick += self.timing.tick_s
        if self._next_tick < now:  # we fell far behind (a stall): do not burst ticks
            self._next_tick = now + self.timing.tick_s
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        self._schedule_tick()

    def _tick_all(self, ticking_groups: bool = True) -> None:
        """Tick the awake groups (unless not ticking_groups: a tick that passed with none awake);
        ask idle leaders among them to quiesce."""
        self._ticks += 1
        if not ticking_groups:
            if self.throttles:
                self._release_throttled()
            for listener in self.tick_listeners:
                listener()
            return
        now = self._ticks
        quiet_after = self.timing.quiesce_after_ticks
        unreachable = frozenset(self._unreachable)
        groups = self.groups
        quiesced: list[str] = []
        for group_id in list(self._awake):  # a tick hook may open a group
            group = groups[group_id]
            node = group.node
            if node.quiesced:  # put to sleep since the last round looked (a follower)
                quiesced.append(group_id)
                self.stats.quiesces += 1
                continue
            if (
                quiet_after
                and now - group.busy_tick >= quiet_after
                and node.role == Role.LEADER
                and node.maybe_quiesce(unreachable)
            ):
                quiesced.append(group_id)  # its last heartbeats go out this round
                self.stats.quiesces += 1
                continue
            node.tick()
            group.fsm.on_tick()
        self._dirty.update(self._awake)
        for group_id in quiesced:
            self._awake.pop(group_id, None)
        if self.throttles:
            self._release_throttled()
        for listener in self.tick_listeners:
            listener()

    def _step_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for group_id, msg in inbox:
            group = self.groups.get(group_id)
            if group is None:
                continue
            cs = group.conf_state  # Only members speak: a non-member's message is dropped.
            if (
                msg.frm not in cs.voters
                and msg.frm not in cs.learners
                and not (msg.type in _FROM_EXPECTED and msg.frm in self.expected_members(group_id))
            ):
                # A replica that has not yet applied the change adding a new member hears that
                # member only if the metadata already names it and it speaks as a leader
                # (appends, heartbeats, snapshots) or asks for a vote: Raft's own checks decide
                # the rest. Without that, a lagging replica would never hear a new leader it
                # does not know of, nor vote for a new voter whose election needs it.
                self.stats.messages_from_non_members += 1
                if self.stats.messages_from_non_members % 1000 == 1:
                    log.warning(
                        "group %s: dropped a %s from node %d, not a member (%d dropped)",
                        group_id,
                        msg.type.name,
                        msg.frm,
                        self.stats.messages_from_non_members,
                    )
                continue
            try:
                group.node.step(msg)
            except RaftError:
                log.exception(
                    "group %s: step of %s from %d failed", group_id, msg.type.name, msg.frm
                )
            self._dirty[group_id] = None
        self.stats.messages_stepped += len(inbox)

    async def _round(self) -> bool:
        """One Ready cycle over every dirty group, up to its write; the rest (steps 6 to 8)
        now or, with a sync in flight, after the next sync. Returns whether anything was done.
        Never awaits: a round runs whole between two finishes."""
        dirty, self._dirty = self._dirty, {}
        readies: list[tuple[Group, Ready]] = []
        touched: list[Group] = []
        awake = self._awake
        for group_id in dirty:
            group = self.groups.get(group_id)
            if group is None:
                continue
            touched.append(group)
            node = group.node
            # A step or a proposal may have woken the group, a leader's quiesce heartbeat may
            # have put a follower to sleep: tick exactly the groups that are awake.
            if node.quiesced:
                if group_id in awake:
                    awake.pop(group_id, None)
                    self.stats.quiesces += 1
            else:
                awake[group_id] = None
            if node.has_ready():
                readies.append((group, node.ready()))
        if not readies:
            # A step may change what waiters wait for without producing a Ready (an
            # acknowledgement that moves a follower's match but not the commit index).
            for group in touched:
                group.fsm.on_round()
            return False
        self.stats.rounds += 1
        out = self.outbox
        throttles = self.throttles
        for group, rd in readies:
            for m in rd.messages:
                throttle = throttles.get((group.id, m.to)) if throttles else None
                if throttle is not None and throttle.wants(m):
                    throttle.offer(m)
                    continue
                out.send(m.to, group.id, m)
        out.flush()

        updates: list[GroupUpdate] = []
        sync = False
        round_bytes = 0
        now = self._ticks
        for g, rd in readies:
            if rd.entries or rd.committed_entries:
                g.busy_tick = now
            if rd.committed_entries and rd.applies_conf_change():
                # The commit index that covers a membership change is durable before the
                # change is applied (raft/rawnode.py: Ready.applies_conf_change): this round
                # syncs, even if only to make a commit written lazily before it durable.
                sync = True
            hs = rd.hard_state
            if not rd.entries and hs is None and rd.snapshot is None:
                continue
            if rd.entries or rd.snapshot is not None:
                sync = True
                round_bytes += sum(len(e.data) for e in rd.entries)
                if rd.snapshot is not None:
                    round_bytes += len(rd.snapshot.data)
            elif hs is not None:
                # Term and vote must be durable before the messages that depend on them; a
                # commit index alone need not be (see the module docstring).
                durable = g.storage.hard_state
                sync = sync or hs.term != durable.term or hs.vote != durable.vote
            updates.append(
                GroupUpdate(
                    group=g.storage, hard_state=hs, entries=rd.entries, snapshot=rd.snapshot
                )
            )
        if updates:
            t0 = time.perf_counter()
            self._doing = "writing a round to storage"
            self.store.write(updates, sync=False)
            self.stats.sync_seconds += time.perf_counter() - t0
            self.stats.bytes_persisted += round_bytes
            for u in updates:
                self.stats.entries_persisted += len(u.entries)

        if self._sync_task is not None or self._queued:
            # A sync is in flight: this round is finished after the next one, in order; the
            # committed entries it carries that are durable here already are applied now.
            self.stats.rounds_over_sync += 1
            self._queued.extend(_Taken(g, rd, unfenced=g.node.fence is None) for g, rd in readies)
            self._queued_sync = self._queued_sync or sync
            if self.timing.apply_ahead:
                self._doing = "applying committed entries ahead of a sync"
                self._apply_ahead()
        elif not sync or round_bytes < self.timing.inline_sync_bytes:
            # rocksdict releases the GIL while it syncs the WAL (not while it writes with
            # sync=True), so a large round syncs in the worker thread while the loop goes on.
            # A small round's fsync is shorter than the two thread hand-offs (~0.1 ms each,
            # more when the GIL is contended), so it syncs in place. (Even on a slow shared
            # disk: every small round in the thread measured 10-30 % fewer requests/s there,
            # docs/performance.md.)
            if sync:
                self._doing = "syncing the WAL"
                took: list[float] = []
                self._timed_sync(took)
                self._count_sync(took)
            self._finish([_Taken(g, rd, unfenced=g.node.fence is None) for g, rd in readies])
        else:
            self._queued.extend(_Taken(g, rd, unfenced=g.node.fence is None) for g, rd in readies)
            self._queued_sync = True
        if self._queued and self._sync_task is None:
            self._sync_task = supervise(
                self._sync_queued(), f"raft-sync-{self.node_id}", on_failure=fail_stop
            )
        self._doing = "resolving waiters"
        for group in touched:
            if not group.removed:
                group.fsm.on_round()
        return True

    async def _sync_in_thread(self, sync: Callable[[], None]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._syncer, sync)

    def _timed_sync(self, took: list[float]) -> None:
        """One WAL fsync, timed where it runs (on the loop or in the worker thread): the
        time of the fsync, not of the hand-offs around it. The loop counts it (`_count_sync`),
        so the stats are only ever changed on the loop."""
        t0 = time.perf_counter()
        self.store.sync_wal()
        took.append(time.perf_counter() - t0)

    def _count_sync(self, took: list[float]) -> None:
        self.stats.syncs += len(took)
        self.stats.sync_seconds += sum(took)

    async def _sync_queued(self) -> None:
        """Sync and finish the queued rounds until none is left: each sync covers every round
        written before it started, and rounds written meanwhile wait for the next one."""
        try:
            while self._queued and not self._stopped:
                batch, self._queued = self._queued, []
                self._syncing = batch
                sync, self._queued_sync = self._queued_sync, False
                if sync:
                    took: list[float] = []
                    await self._run_sync(functools.partial(self._timed_sync, took))
                    self._count_sync(took)
                if self._stopped:
                    return
                self._syncing = []
                self._finish(batch)
                # The sync made more entries durable here: apply what is committed of them
                # now rather than after the next sync (the queued rounds' own).
                touched = {t.group.id: t.group for t in batch}
                if self.timing.apply_ahead:
                    touched.update((g.id, g) for g in self._apply_ahead())
                for group in touched.values():
                    if not group.removed:
                        group.fsm.on_round()
                self._wake.set()  # advances may have produced messages (commit broadcast)
        except Exception as e:
            # A failed fsync leaves writes of unknown durability behind Readies that were
            # handed out: nothing safe remains to do but stop (as etcd and Redpanda do).
            self._fail_stop(f"a WAL sync (or the rounds it finishes) failed: {e!r}")
        finally:
            self._sync_task = None
            self._syncing = []

    def _finish(self, readies: list[_Taken]) -> None:
        """Steps 6 to 8 for rounds whose writes are durable, in the order they were taken."""
        out = self.outbox
        for t in readies:
            for m in t.rd.persisted_messages:
                out.send(m.to, t.group.id, m)
        out.flush()
        for t in readies:
            group, rd = t.group, t.rd
            if group.removed:
                continue
            self._doing = f"applying committed entries of group {group.id}"
            if t.applied:
                group.node.advance_persisted(rd)
            else:
                self._apply(group, rd)
                group.node.advance(rd)
            self._dirty[group.id] = None  # advance may have produced messages (commit broadcast)
            if self.fences and t.unfenced:
                self._note_lifted(group)

    def _apply_ahead(self) -> list[Group]:
        """Apply the committed entries of rounds still waiting for a sync, where they are
        durable on this node already (raft/rawnode.py, "Applying ahead of a write"): a commit
        that arrives while the next round's fsync runs is applied and answered at once. Per
        group in Ready order: the first round that cannot go (its entries not yet durable here,
        a snapshot or a leadership change to hand over with its write) holds back the later
        ones. A membership change waits for its round's sync, which makes the commit that
        covers it durable (raft/rawnode.py). Returns the groups that applied something."""
        held: set[str] = set()
        applied: list[Group] = []
        for t in (*self._syncing, *self._queued):
            if t.applied:
                continue
            group, rd = t.group, t.rd
            if group.removed or group.id in held:
                continue
            ents = rd.committed_entries
            if (
                rd.snapshot is not None
                or rd.soft_state is not None
                or (ents and ents[-1].index > group.node.persisted_index())
                or rd.applies_conf_change()
            ):
                held.add(group.id)
                continue
            t.applied = True
            if ents:
                self._doing = f"applying committed entries of group {group.id}"
                self._apply(group, rd)
                group.node.advance_applied(rd)
                self._dirty[group.id] = None
                self.stats.applied_ahead += 1
                applied.append(group)
        return applied

    def _apply(self, group: Group, rd: Ready) -> None:
        if rd.snapshot is not None:
            group.conf_state = rd.snapshot.meta.conf_state
            group.conf_changes = []
            group.conf_index = max(group.conf_index, rd.snapshot.meta.index)
            group.fsm.restore(rd.snapshot)
        if rd.soft_state is not None:
            group.fsm.on_soft_state(rd.soft_state, group.node.term)
            for listener in self.soft_state_listeners:
                listener(group.id, rd.soft_state)
        if rd.committed_entries:
            for e in rd.committed_entries:
                if e.type == EntryType.CONF_CHANGE:
                    cc = ConfChange.decode(e.data)
                    group.conf_state = group.node.apply_conf_change(cc)
                    group.conf_changes.append((e.index, group.conf_state))
                    group.conf_index = e.index
                    throttle = self.throttles.get((group.id, cc.node_id))
                    if throttle is not None:
                        # A new member throttled from the start: a short window before the
                        # leader's first full append to it (it probes first).
                        group.node.set_inflight_limit(cc.node_id, throttle.window, throttle.piece)
            group.fsm.apply(rd.committed_entries)
