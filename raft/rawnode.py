"""RawNode: the Raft core as its host drives it. Feed it, then drain a Ready.

The host loop (node/ in production, tests/sim in simulation) is, in this order:

    node.tick() / node.step(msg) / node.propose(data)   # any number of times
    if node.has_ready():
        rd = node.ready()
        send(rd.messages)                 # 1. may go at once, even before or while persisting
        persist(rd.snapshot, rd.entries, rd.hard_state)   # 2. then sync to disk
        send(rd.persisted_messages)       # 3. only after 2 is durable
        apply(rd.snapshot, rd.committed_entries)          # 4. after 2
        node.advance(rd)                  # 5. before the next ready()

advance() may itself give the node more to do (a commit it can now count, or its own vote,
now durable, that makes a candidate leader: rd.steps_on_advance), so the host asks has_ready()
again after it rather than wait for the next input.

Steps 1 to 4 are the ordering contract; breaking it breaks Raft's guarantees (the simulation
plants exactly such breaks to prove it notices). Committed entries may include entries that are
in rd.entries of the same Ready: they are committed by other nodes' copies, and step 2 makes
ours durable before step 4 applies them.

The commit index (rd.hard_state.commit) may be written without an fsync when nothing else in
the Ready needs one (rd.must_sync()): a node that loses it relearns it from the leader. Two
things make that safe. What the host made durable from applied entries (a snapshot) proves them
committed: a restart gives its index as Config.applied and the core restarts its commit index
there at least. And a Ready that applies a membership change must sync the commit index that
covers it before applying (rd.applies_conf_change()), so no crash takes back a membership change
that others saw applied.

Writes in flight (etcd's asynchronous storage writes). The host need not wait for a Ready's
write before it takes the next: it may call ready() again as soon as it has taken one, so a
proposal or an append that arrives while the disk syncs goes out (step 1) and into the next
write at once. The contract then holds per Ready, with one more rule: the host finishes the
Readies in the order it took them. For each, in that order: its write is durable (its writes
land in order, so every earlier one is too), then its persisted_messages go, then its committed
entries are applied, then advance(rd). A Ready never repeats what an earlier one handed out
(entries, snapshot, committed entries, messages), and committed entries may be in a write still
in flight: finishing in order makes them durable before they are applied. A crash loses every
write not yet durable, as it loses a Ready's write today.

Applying ahead of a write (etcd applies from its own queue the same way). advance(rd) is
advance_applied(rd) then advance_persisted(rd), and the host may split them: the committed
entries of a Ready that carries no snapshot and no soft state may be applied, and
advance_applied(rd) called, before the write of this or an earlier Ready is durable, provided
every one of them is durable here already (index <= persisted_index(): committed entries are
durable on a majority, and this keeps "applied only what this node's disk holds" true), none is
a membership change (rd.applies_conf_change(): it waits for its write, which syncs the commit),
and the applies of the group stay in Ready order (an earlier Ready whose entries are not yet
applied holds back every later one). advance_persisted(rd) still follows the write order above.
So a commit that arrives while the next round syncs is applied at once instead of after that
sync. The commit index of that round is not durable yet: a crash may lose it while a snapshot
the host made from the entries applied ahead survives. That is fine: the host restarts at its
snapshot (Config.applied) and the core takes the snapshot's index as committed (etcd's
asynchronous writes leave this to the application: its raft panics when Applied exceeds the
HardState's commit; sim seed 757 applied index 1 twice when this core clamped applied down).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raft.core import Config, Raft
from raft.errors import RaftError
from raft.progress import ProgressState
from raft.storage import Storage
from raft.types import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    Fence,
    HardState,
    Message,
    Role,
    Snapshot,
    SoftState,
)


@dataclass(slots=True)
class Ready:
    soft_state: SoftState | None = None
    """Leader and role, when changed since the last Ready. Volatile: do not persist."""
    hard_state: HardState | None = None
    """Term, vote and commit to persist, when changed since the last Ready."""
    entries: list[Entry] = field(default_factory=list)
    """Entries to append to stable storage (truncating any conflicting suffix held there)."""
    snapshot: Snapshot | None = None
    """A snapshot from the leader to persist and install before applying anything else."""
    committed_entries: list[Entry] = field(default_factory=list)
    """Entries to apply to the state machine, in order."""
    messages: list[Message] = field(default_factory=list)
    """Messages that may be sent before the rest of this Ready is persisted."""
    persisted_messages: list[Message] = field(default_factory=list)
    """Messages to send only after this Ready's hard state, entries and snapshot are durable."""
    steps_on_advance: list[Message] = field(default_factory=list)
    """Not for the host: the node's messages to itself (a candidate's own vote), which
    advance(rd) steps back into it once this Ready is durable."""

    def must_sync(self) -> bool:
        """Whether step 2 needs an fsync: new entries, a new vote or term, a snapshot, or a
        membership change to apply. A commit index alone can be written lazily (a restarted
        node relearns it from the leader), but not one that covers a membership change the
        node applies: see `applies_conf_change`."""
        return (
            bool(self.entries)
            or self.snapshot is not None
            or self.hard_state is not None
            or self.applies_conf_change()
        )

    def applies_conf_change(self) -> bool:
        """Whether committed_entries hold a membership change. Then the commit index that
        covers them (this Ready's hard state, or one written lazily before it) must be durable
        before they are applied, so not ahead of the write (see "Applying ahead of a write").
        Membership takes effect on apply, and what a node applied is seen (the leader, an
        operator, node/'s controller act on it: a removed node is shut down). A crash that lost
        the commit would take the change back on that node: it restarts in the old membership,
        which may need the removed node's vote for good (sim seed 524: voters {1,4}, 1 removed
        and gone, 4 restarted with commit 64 < 65 and waited for 1 forever). Rare, so cheap."""
        return any(e.type == EntryType.CONF_CHANGE for e in self.committed_entries)


@dataclass(slots=True, frozen=True)
class PeerProgress:
    match: int
    next: int
    state: ProgressState
    ticks_since_ack: int
    is_learner: bool
    inflight: int = 0
    """Appends sent and not yet acknowledged (REPLICATE; bounded by max_inflight_msgs)."""
    max_msg_bytes: int = 0
    """The most entry bytes per append to this peer (0: max_size_per_msg; set_inflight_limit)."""


@dataclass(slots=True, frozen=True)
class Status:
    id: int
    term: int
    vote: int
    commit: int
    applied: int
    role: Role
    leader: int
    first_index: int
    last_index: int
    conf_state: ConfState
    progress: dict[int, PeerProgress]
    """Per member, leader only (empty elsewhere)."""
    in_sync: frozenset[int]
    """The in-sync replica set, leader only (empty elsewhere)."""
    lead_transferee: int


class RawNode:
    def __init__(self, cfg: Config, storage: Storage) -> None:
        self.raft = Raft(cfg, storage)
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()

    # -- inputs --------------------------------------------------------------------------------
    def tick(self) -> None:
        self.raft.tick()

    def step(self, m: Message) -> None:
        self.raft.step(m)

    def campaign(self) -> None:
        """Start an election now (tests, and bootstrapping a single-node group quickly)."""
        self.raft.hup()

    def propose(self, data: bytes) -> int:
        """Append data as a new entry; returns its index. Raises NotLeaderError elsewhere."""
        return self.raft.propose([Entry(index=0, term=0, type=EntryType.NORMAL, data=data)])

    def propose_many(self, datas: list[bytes]) -> int:
        """Append several entries at once (one broadcast); returns the first one's index."""
        return self.raft.propose(
            [Entry(index=0, term=0, type=EntryType.NORMAL, data=d) for d in datas]
        )

    def propose_conf_change(self, cc: ConfChange) -> int:
        return self.raft.propose_conf_change(cc)

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        return self.raft.apply_conf_change(cc)

    def set_fence(self, fence: Fence | None) -> None:
        """Fence a node whose disk was wiped, or move its fence once the group added it back
        (raft/core.py, "Rejoining after a lost disk"). The host keeps the fence on disk until
        `fence` reads None (it lifts itself), and sets it again after a restart."""
        self.raft.fence = fence
        self.raft._maybe_lift_fence()

    @property
    def fence(self) -> Fence | None:
        return self.raft.fence

    def transfer_leader(self, to: int) -> None:
        self.raft.transfer_leader(to)

    def report_unreachable(self, to: int) -> None:
        self.raft.report_unreachable(to)

    def set_inflight_limit(self, to: int, limit: int, max_bytes: int = 0) -> None:
        """Leader: at most `limit` appends in flight to `to` (0: the configured window), each
        of at most `max_bytes` of entries (0: max_size_per_msg)."""
        self.raft.set_inflight_limit(to, limit, max_bytes)

    def maybe_quiesce(self, unreachable: frozenset[int] = frozenset()) -> bool:
        """Leader: go quiet if the group is idle and fully replicated (raft/core.py), leaving
        out members on unreachable nodes; returns whether the node is quiesced. A quiesced
        node need not be ticked."""
        return self.raft.maybe_quiesce(unreachable)

    def unquiesce(self) -> None:
        """Wake a quiesced node (the host lost contact with its leader's node, say)."""
        self.raft.unquiesce()

    @property
    def quiesced(self) -> bool:
        return self.raft.quiesced

    def report_snapshot(self, to: int, failed: bool) -> None:
        self.raft.report_snapshot(to, failed)

    # -- outputs -------------------------------------------------------------------------------
    def has_ready(self) -> bool:
        # Called for every busy group every round: compare fields, build no state objects.
        r = self.raft
        log = r.log
        unstable = log.unstable
        if r.msgs or r.msgs_after_persist or r.msgs_to_self or unstable.has_next_entries():
            return True
        if unstable.next_snapshot() is not None or log.has_next_committed_entries():
            return True
        soft, hard = self._prev_soft, self._prev_hard
        return (
            r.lead != soft.leader
            or r.role != soft.role
            or r.term != hard.term
            or r.vote != hard.vote
            or log.committed != hard.commit
        )

    def ready(self) -> Ready:
        r = self.raft
        log = r.log
        unstable = log.unstable
        rd = Ready(
            entries=unstable.next_entries(),
            snapshot=unstable.next_snapshot(),
            committed_entries=log.next_committed_entries(),
            messages=r.msgs,
            persisted_messages=r.msgs_after_persist,
            steps_on_advance=r.msgs_to_self,
        )
        r.msgs = []
        r.msgs_after_persist = []
        r.msgs_to_self = []
        unstable.accept_in_progress()
        if rd.snapshot is not None:
            log.applying_to(rd.snapshot.meta.index)
        if rd.committed_entries:
            log.applying_to(rd.committed_entries[-1].index)
        soft = r.soft_state()
        if soft != self._prev_soft:
            rd.soft_state = soft
            self._prev_soft = soft
        hard = r.hard_state()
        if hard != self._prev_hard:
            rd.hard_state = hard
            self._prev_hard = hard
        return rd

    def advance(self, rd: Ready) -> None:
        """The host has done what rd asked (persisted, sent, applied); with several Readies
        in flight, in the order they were taken."""
        self._advance(rd, applied=True)

    def advance_applied(self, rd: Ready) -> None:
        """The host applied rd's committed entries ahead of its write (see "Applying ahead of
        a write" above): only for a Ready with no snapshot, and in Ready order among applies."""
        if rd.snapshot is not None:
            raise RaftError("a Ready with a snapshot is applied only with its write (advance)")
        if rd.applies_conf_change():
            raise RaftError(
                "a Ready with a membership change is applied only once its commit is durable "
                "(advance)"
            )
        if rd.committed_entries:
            last = rd.committed_entries[-1].index
            log = self.raft.log
            if last > log.last_persisted_index():
                raise RaftError(
                    f"applied {last} ahead of the disk (persisted {log.last_persisted_index()})"
                )
            log.applied_to(last)

    def advance_persisted(self, rd: Ready) -> None:
        """The rest of advance(rd) for a Ready whose committed entries advance_applied took."""
        self._advance(rd, applied=False)

    def _advance(self, rd: Ready, *, applied: bool) -> None:
        log = self.raft.log
        if rd.snapshot is not None:
            log.stable_snap_to(rd.snapshot.meta.index)
            if rd.snapshot.meta.index > log.applied:
                log.applied = rd.snapshot.meta.index
                log.applying_to(log.applied)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if applied and rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
        if rd.entries or rd.snapshot is not None:
            self.raft.on_persisted(log.last_persisted_index())
        for m in rd.steps_on_advance:
            # Our own vote, now durable: a single voter becomes leader here.
            self.raft.step(m)

    # -- views ---------------------------------------------------------------------------------
    def status(self) -> Status:
        r = self.raft
        progress: dict[int, PeerProgress] = {}
        isr: frozenset[int] = frozenset()
        if r.role == Role.LEADER:
            for node in r.tracker.progress:
                pr = self.progress_of(node)
                assert pr is not None
                progress[node] = pr
            isr = frozenset(r.in_sync_replicas())
        return Status(
            id=r.id,
            term=r.term,
            vote=r.vote,
            commit=r.log.committed,
            applied=r.log.applied,
            role=r.role,
            leader=r.lead,
            first_index=r.log.first_index(),
            last_index=r.log.last_index(),
            conf_state=r.tracker.conf_state(),
            progress=progress,
            in_sync=isr,
            lead_transferee=r.lead_transferee,
        )

    # -- questions (etcd's BasicStatus and WithProgress: ask, do not reach into raft/log/tracker) --
    def in_sync_replicas(self) -> frozenset[int]:
        """The in-sync replica set (leader only; empty elsewhere)."""
        return frozenset(self.raft.in_sync_replicas())

    def in_sync_durable_index(self) -> int:
        """Leader: the highest index every in-sync replica holds durably: for a follower its
        acknowledged match, for this node its own persisted index (its match may run ahead of
        its disk). 0 where this node does not lead."""
        r = self.raft
        isr = r.in_sync_replicas()
        if not isr:
            return 0
        persisted = r.log.last_persisted_index()
        progress = r.tracker.progress
        return min(persisted if n == r.id else progress[n].match for n in isr)

    @property
    def applied(self) -> int:
        """The last index the host applied and said so (advance): applied <= committed."""
        return self.raft.log.applied

    @property
    def committed(self) -> int:
        return self.raft.log.committed

    def last_index(self) -> int:
        """The last index of the log, persisted or not."""
        return self.raft.log.last_index()

    def persisted_index(self) -> int:
        """The last index known durable on this node's disk."""
        return self.raft.log.last_persisted_index()

    def term_at(self, index: int) -> int:
        """The term of the entry at `index`; 0 where the log no longer (or not yet) holds it."""
        return self.raft.log.term_or_zero(index)

    def unapplied_entries(self) -> list[Entry]:
        """The entries after the applied index, committed or not, in order (a leader's tail:
        what it has proposed and not yet applied)."""
        log = self.raft.log
        lo, hi = log.applied + 1, log.last_index() + 1
        return log.slice(lo, hi, None) if lo < hi else []

    def conf_state(self) -> ConfState:
        """The membership as this node knows it (voters, learners)."""
        return self.raft.tracker.conf_state()

    def progress_of(self, peer: int) -> PeerProgress | None:
        """A member's replication progress, as the leader tracks it (None elsewhere)."""
        r = self.raft
        pr = r.tracker.progress.get(peer) if r.role == Role.LEADER else None
        if pr is None:
            return None
        return PeerProgress(
            match=pr.match,
            next=pr.next,
            state=pr.state,
            ticks_since_ack=0 if peer == r.id else r.now - pr.last_ack_tick,
            is_learner=pr.is_learner,
            inflight=pr.inflights.count(),
            max_msg_bytes=pr.max_msg_bytes,
        )

    def caught_up_in_term(self) -> bool:
        """Whether this node has applied everything committed and the last committed entry is
        of the current term: a new leader's own no-op commits everything before it, so a leader
        for which this holds knows every command its predecessors committed."""
        log = self.raft.log
        return log.applied >= log.committed and self.term_at(log.committed) == self.raft.term

    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def role(self) -> Role:
        return self.raft.role

    @property
    def leader(self) -> int:
        return self.raft.lead

    @property
    def term(self) -> int:
        return self.raft.term
