"""The Raft consensus algorithm as a deterministic state machine.

Theory of operation. A `Raft` value changes only when its host calls `step` (a message from a
peer), `tick` (one unit of logical time), `propose*` or `apply_conf_change`. Each call may queue
outgoing messages and change the log; RawNode (raft/rawnode.py) packages those changes into a
Ready for the host to persist and send. Nothing here reads a clock, touches a socket or a disk,
or draws randomness except from the seeded `random.Random` in the config, so the same inputs
always give the same outputs, which is what lets tests/sim replay a failing seed exactly.

What it implements, with the paper (Ongaro & Ousterhout, "In Search of an Understandable
Consensus Algorithm", extended version) and thesis (Ongaro 2014) sections:
  - leader election with randomized timeouts (§5.2), the vote restriction (§5.4.1);
  - PreVote (thesis §9.6): a node that was cut off asks first whether it could win, so its
    rejoining does not bump terms and depose a healthy leader;
  - CheckQuorum (thesis §6.2): a leader steps down when it has not heard from a majority in an
    election timeout, and followers that heard from a leader recently ignore vote requests
    (the "leader lease"), so a flapping node cannot disrupt the group;
  - a no-op entry on election and commit of current-term entries only (§5.4.2, Figure 8);
  - log replication with pipelining and a bounded in-flight window, fast backtracking by term;
  - leadership transfer with TimeoutNow (thesis §3.10);
  - snapshots and InstallSnapshot (§7);
  - single-server membership changes (thesis §4.1) with learners; a leader accepts a change only
    once it has committed an entry of its own term and the previous change is applied (the fix
    for the bug described on raft-dev in 2015);
  - quiescence (CockroachDB's): an idle, fully replicated group stops ticking, so a node can
    host thousands of groups that cost nothing while nobody writes to them (see below).

Rejoining after a lost disk (the Fence, raft/types.py). Who votes is decided by the
configuration in a node's own log and snapshot, and whether it may grant a vote by the term and
vote on its own disk. A node whose disk is wiped keeps its id but has none of that: its host
boots it with the group's bootstrap configuration (it believes itself a voter again) and an empty
log at term 0. Unfenced, the first vote request of any term above 0 makes it a follower of that
term with no vote cast, and `_handle_vote_request` grants it, since every log is at least as up to
date as an empty one. So it can vote twice in a term (once before the wipe, once after), and
it can elect a candidate that lacks entries its old incarnation acknowledged (they were counted
toward a commit, and are gone). Worse, its acknowledgments lie too: it takes appends from any
leader of a term above 0, where its old incarnation, having moved to a later term, would have
refused them, so a deposed leader can count it toward a commit that a newer leader overwrites.

The fix treats the old incarnation as a node that crashed for good and the wiped node as a new
server that happens to reuse its id:
  1. Fenced silent (min_term 0), the node steps nothing: no vote, no acknowledgment, no
     campaign. To the group, the old incarnation is simply down, which Raft tolerates.
  2. The group removes the old incarnation (a conf change committed by the others alone,
     since the fenced node acknowledges nothing) and then adds the id back as a learner (entry
     L at index i). Both are ordinary single-server changes of a group that lost a node.
  3. The host learns (out of band: node/'s controller) that L was applied by some node in term
     T, and moves the fence to (T, i). Every leader of term T or later holds L (L was committed
     by term T; leader completeness), so its configuration no longer has the old incarnation, and
     a message of term >= T cannot come from a leader that still counts the old one. Older
     messages are dropped: they are the old incarnation's mail.
  4. Until its commit index reaches i the node grants no vote and does not campaign: its log
     does not yet hold what was committed before it rejoined. Once it does, a candidate it
     votes for must be at least as up to date, so holds L too (log matching), and the node's
     term and vote from then on are on its own disk: the fence lifts and it is an ordinary
     learner, promoted to voter like any other.
tests/sim wipes nodes ("wipe" fault) and checks that no node id votes twice in a term and that
every committed entry stays electable-only-with; planting the old behaviour (no fence) fails it.

Coming back after a removal (the fence's floor). A replica removed from a group (a replica move)
is deleted by its host; the node may be added back later, as a learner with an empty log. The
node kept its disk, so it is not a new incarnation, but the new replica has forgotten what the
old one promised: unguarded, it votes in a term its old replica already voted in, and for a
candidate that lacks entries the old replica acknowledged. A candidate still counting the old
replica as a voter (one that has not applied its removal) can then win a term another leader
holds (the broker simulation's seed 4 did). The host keeps, when it deletes a replica, the old
replica's durable term and vote and its last entry's position, and starts the new replica from
them: term and vote in its hard state, the last entry as the floor of a fence (Fence.floor_*).
With the floor, the node grants no vote (nor pre-vote) and does not campaign until its own log
is at least as up to date as the old replica's last entry. The argument: to Raft's proof the two
replicas are one server whose log was cut short once, and the proof needs two things of every
voter v (Raft §5.2, §5.4.3):
  1. v votes at most once per term: its term never goes back (the new replica starts at the
     old one's term) and the vote of that term is kept; the old replica never voted in a later
     term, since its term was no higher than the one it left on disk.
  2. if v acknowledged an entry E that was committed in term t counting v, any candidate v votes
     for in a later term holds E. If the old replica acknowledged E, its last log held E (entries
     committed are never removed from a log by a leader, and no leader of an older term was
     heard once its term passed t), so a candidate at least as up to date as that last entry
     holds E, by the usual argument (the same last term: log matching; a later last term: the
     leader of that term held E, by induction on terms). The floor makes every vote of the new
     replica, and its own vote as a candidate, pass that test. Entries the new replica
     acknowledged are in its own log, as for any voter. Once its log passes the floor it holds E
     for good and the floor, now implied, lifts.
Nothing else about the node changes: it hears leaders of its term and later as any follower
does, and, as a learner, it votes when asked (as etcd does, see `_handle_vote_request`).
Liveness: any leader it follows (of the old term or a later one) brings its log past the floor
(that leader's log holds the old replica's last entry, or has entries of a later term).

Where this core deliberately differs from etcd-io/raft, and what it took from etcd's scenarios,
is listed in raft/README.md.

Quiescence. A host with many groups asks an idle leader to `maybe_quiesce`. It agrees only when
nothing is in flight: every member acknowledged the last index, which is committed and applied,
and answered its last heartbeats (members the host reports unreachable may be left out once they
are out of the ISR, if the rest is a quorum). It then sends each follower a heartbeat marked
QUIESCE_CONTEXT and sets `quiesced`. A follower whose log ends exactly at that commit index
quiesces too and answers with a marked reply (one that cannot answer so, replies plainly, which
wakes the leader). A quiesced node needs no ticks: its host stops ticking it. Anything else ends
quiescence: a tick, a proposal, a transfer, a campaign, or any message that is not a marked
heartbeat or marked reply. A follower woken by anyone but its leader (a candidate's vote request,
or its host through `unquiesce` because the leader's node seems gone) sends its leader a
heartbeat reply, which wakes the leader, so a live leader resumes heartbeats at once and its lease
holds (CheckQuorum and PreVote work as without quiescence); a dead leader cannot answer, and the
followers, ticking again, elect a new one after an election timeout. Hosts must therefore wake
the followers of a leader whose node they lose contact with: a quiesced group hears nothing.

Which messages must wait for persistence. Messages are split in three queues:
  `msgs`               may be sent at once, before the host persists this step's state: a
                       leader's appends, heartbeats, snapshots and TimeoutNow, and PreVote
                       requests. A leader may replicate entries it has not yet written itself
                       (thesis §10.2.1) because it counts itself toward commit only once the host
                       reports them persisted (RawNode.advance).
  `msgs_after_persist` everything else: votes and vote replies, append and heartbeat replies.
                       They promise something about durable state (a vote cast, entries held), so
                       they leave only after the hard state and entries are on disk.
  `msgs_to_self`       a candidate's own vote. It is a promise like any other vote, so it counts
                       only once durable: RawNode hands it out inside the Ready (never to the
                       host) and steps it back in advance(), after that Ready's write. This is
                       what keeps a single voter from leading a term it has not persisted: it
                       wins on its own vote, so it becomes leader in advance(), with its term on
                       disk, and none of its appends (which go before its writes, above) can
                       carry a term a crash would let it reuse for different entries. etcd does
                       the same (raft.go campaign, rawnode.go stepsOnAdvance). Holding a new
                       leader's messages until its term is durable would also do, but would add
                       a second rule to the two queues; this keeps "leaders' appends go at once"
                       true without exception.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from raft.errors import (
    CompactedError,
    ConfChangeError,
    NotLeaderError,
    ProposalDroppedError,
    RaftError,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from raft.log import RaftLog
from raft.progress import Progress, ProgressState
from raft.quorum import VoteResult
from raft.storage import Storage
from raft.tracker import IsrPolicy, ProgressTracker
from raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Fence,
    HardState,
    Message,
    MessageType,
    Role,
    Snapshot,
    SoftState,
)

TRANSFER_CONTEXT = b"transfer"
"""Context of a vote request sent because of TimeoutNow: it may ignore the leader lease."""

QUIESCE_CONTEXT = b"quiesce"
"""Context of a leader's last heartbeat before its group goes quiet, and of the follower's
reply that it went quiet too."""

_SEND_NOW = frozenset(
    {
        MessageType.APP,
        MessageType.HEARTBEAT,
        MessageType.SNAP,
        MessageType.TIMEOUT_NOW,
        MessageType.PRE_VOTE,
    }
)


@dataclass(slots=True)
class Config:
    id: int
    """This node's id, >= 1."""
    election_tick: int = 10
    """Ticks without word from a leader before a follower campaigns. The actual timeout is
    drawn from [election_tick, 2 * election_tick) after every reset."""
    heartbeat_tick: int = 1
    """Ticks between a leader's heartbeats; must be < election_tick."""
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    """The only source of randomness; seed it for reproducible runs."""
    applied: int = 0
    """The host's last applied index on restart (its snapshot's); committed entries after it
    are delivered. It counts as committed even where the commit index on disk lags it."""
    max_size_per_msg: int = 1 << 20
    """Bytes of entries per append message (at least one entry is always sent)."""
    max_inflight_msgs: int = 256
    """Appends in flight per follower in REPLICATE state."""
    max_committed_size_per_ready: int = 16 << 20
    """Bytes of committed entries handed out per Ready."""
    check_quorum: bool = True
    pre_vote: bool = True
    lazy_commit: bool = False
    """A leader tells its followers a new commit index with the next append it sends them, or
    at its next tick, instead of in an empty append of its own at once (etcd's bcastAppend).
    Under a steady stream of proposals the next append carries it anyway, so each entry costs
    one append and one acknowledgement per follower instead of two of each; an idle follower
    learns the commit index at most a tick later. Nothing waits on a follower's commit index:
    the leader commits and answers from the followers' acknowledgements (match)."""
    isr: IsrPolicy = field(default_factory=IsrPolicy)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("raft"))

    def validate(self) -> None:
        if self.id <= NONE:
            raise ValueError("node id must be >= 1")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat_tick must be > 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election_tick must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be > 0")


class Raft:
    def __init__(self, cfg: Config, storage: Storage) -> None:
        cfg.validate()
        self.id = cfg.id
        self.cfg = cfg
        self.rng = cfg.rng
        self.logger = cfg.logger
        self.log = RaftLog(storage, cfg.max_committed_size_per_ready)
        hs, cs = storage.initial_state()
        self.tracker = ProgressTracker(cfg.max_inflight_msgs)
        self.term = 0
        self.vote = NONE
        self.role = Role.FOLLOWER
        self.lead = NONE
        self.lead_transferee = NONE
        self.pending_conf_index = 0  # a conf change at or below this index is not yet applied
        self.msgs: list[Message] = []
        self.msgs_after_persist: list[Message] = []
        # Messages to ourselves (our own vote): RawNode steps them back into us once the Ready
        # they came with is durable (see `msgs_to_self` in the module docstring).
        self.msgs_to_self: list[Message] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = cfg.election_tick
        self.now = 0  # logical clock: ticks since this value was created
        # Whether this node agreed to go quiet (see the module docstring): its host may stop
        # ticking it until something ends quiescence. Volatile, like the role.
        self.quiesced = False
        # Set by the host on a node whose disk was wiped (see "Rejoining after a lost disk"):
        # what it may step and whether it may vote or campaign. None: an ordinary node.
        self.fence: Fence | None = None
        self._apply_conf_state(cs)
        if hs != HardState():
            self._load_hard_state(hs)
        if cfg.applied > 0:
            self._restart_applied(cfg.applied)
        self.become_follower(self.term, NONE)

    # -- views ---------------------------------------------------------------------------------
    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(leader=self.lead, role=self.role)

    def promotable(self) -> bool:
        """Whether this node may campaign: a voter with no snapshot waiting to be persisted."""
        return self.tracker.is_voter(self.id) and not self.log.has_pending_snapshot()

    def in_sync_replicas(self) -> set[int]:
        if self.role != Role.LEADER:
            return set()
        return self.tracker.in_sync(self.id, self.log.last_index(), self.now, self.cfg.isr)

    def _load_hard_state(self, hs: HardState) -> None:
        # The commit index on disk may lag the snapshot the log starts after (log.committed
        # here): a host writes it lazily and applies ahead of it (raft/rawnode.py), and a crash
        # can keep the snapshot made from that state while losing the commit. A snapshot holds
        # only committed entries, so it is the floor. Past the last index is a broken disk.
        if hs.commit > self.log.last_index():
            raise RaftError(
                f"hard state commit {hs.commit} is past the last index {self.log.last_index()}"
            )
        self.log.committed = max(self.log.committed, hs.commit)
        self.term = hs.term
        self.vote = hs.vote

    def _restart_applied(self, applied: int) -> None:
        """The host restarts its state machine at `applied` (its snapshot). A host applies only
        committed entries, so `applied` proves them committed even where the commit index on
        disk lags it (the commit of a round applied ahead of its write was lost in a crash,
        the state made from it was not: sim seed 757). Clamping `applied` down to that stale
        commit instead would hand those entries out again: applied twice."""
        log = self.log
        if applied > log.last_index():
            raise RaftError(
                f"the host applied up to {applied}, past the last index {log.last_index()}: "
                "its log lost entries it had applied"
            )
        log.commit_to(applied)
        log.applied_to(applied)

    # -- sending -------------------------------------------------------------------------------
    def send(self, m: Message) -> None:
        m.frm = self.id
        if m.type in (
            MessageType.VOTE,
            MessageType.PRE_VOTE,
            MessageType.VOTE_RESP,
            MessageType.PRE_VOTE_RESP,
        ):
            if m.term == 0:
                raise RaftError(f"term must be set when sending {m.type.name}")
        elif m.term == 0:
            m.term = self.term
        if m.to == self.id:
            self.msgs_to_self.append(m)
        elif m.type in _SEND_NOW:
            self.msgs.append(m)
        else:
            self.msgs_after_persist.append(m)

    def maybe_send_append(self, to: int, send_if_empty: bool = True) -> bool:
        """Send the follower what it lacks, or a snapshot if that is compacted away."""
        pr = self.tracker.progress[to]
        if pr.is_paused():
            return False
        return self._send_append(to, pr, send_if_empty, with_entries=True)

    def _send_append(self, to: int, pr: Progress, send_if_empty: bool, with_entries: bool) -> bool:
        try:
            prev_term = self.log.term(pr.next - 1)
            size = pr.max_msg_bytes or self.cfg.max_size_per_msg
            ents = self.log.entries(pr.next, size) if with_entries else []
        except (CompactedError, UnavailableError):
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self.send(
            Message(
                type=MessageType.APP,
                to=to,
                frm=self.id,
                index=pr.next - 1,
                log_term=prev_term,
                entries=tuple(ents),
                commit=self.log.committed,
            )
        )
        pr.sent_commit = self.log.committed
        if ents:
            pr.sent_entries(ents[-1].index)
        elif pr.state == ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if pr.last_ack_tick <= self.now - self.cfg.election_tick:
            return False  # do not ship a snapshot to a follower that may be down
        try:
            snap = self.log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        if snap.is_empty():
            raise RaftError("need a non-empty snapshot to catch up a follower")
        self.send(Message(type=MessageType.SNAP, to=to, frm=self.id, snapshot=snap))
        pr.become_snapshot(snap.meta.index)
        pr.snapshot_sent_tick = self.now
        self.logger.debug("%d sends snapshot at %d to %d (%r)", self.id, snap.meta.index, to, pr)
        return True

    def send_heartbeat(self, to: int) -> None:
        pr = self.tracker.progress[to]
        commit = min(pr.match, self.log.committed)
        self.send(Message(type=MessageType.HEARTBEAT, to=to, frm=self.id, commit=commit))
        pr.sent_commit = commit

    def bcast_append(self) -> None:
        for peer in self.tracker.progress:
            if peer != self.id:
                self.maybe_send_append(peer)

    def bcast_commit(self) -> None:
        """The commit index moved: tell the followers now (an empty append if nothing new
        is to go), or with lazy_commit only with new entries, the rest at the next tick."""
        if not self.cfg.lazy_commit:
            self.bcast_append()
            return
        for peer in self.tracker.progress:
            if peer != self.id:
                self.maybe_send_append(peer, send_if_empty=False)

    def _send_lazy_commits(self) -> None:
        """lazy_commit: once a tick, an empty append to each follower that was sent entries
        past the commit index it was last told and has not heard the new one since."""
        committed = self.log.committed
        for peer, pr in self.tracker.progress.items():
            if peer != self.id and pr.can_bump_commit(committed):
                self.maybe_send_append(peer)

    def bcast_heartbeat(self) -> None:
        for peer in self.tracker.progress:
            if peer != self.id:
                self.send_heartbeat(peer)

    # -- role changes ------------------------------------------------------------------------
    def reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.quiesced = False
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.reset_randomized_election_timeout()
        self.abort_leader_transfer()
        self.tracker.reset_votes()
        last = self.log.last_index()
        for peer, pr in list(self.tracker.progress.items()):
            fresh = Progress(last + 1, self.cfg.max_inflight_msgs, pr.is_learner)
            if peer == self.id:
                fresh.match = self.log.last_persisted_index()
            self.tracker.progress[peer] = fresh
        self.pending_conf_index = 0

    def reset_randomized_election_timeout(self) -> None:
        et = self.cfg.election_tick
        self.randomized_election_timeout = et + self.rng.randrange(et)

    def become_follower(self, term: int, lead: int) -> None:
        self.reset(term)
        self.role = Role.FOLLOWER
        self.lead = lead
        self.logger.debug("%d became follower at term %d (leader %d)", self.id, term, lead)

    def become_pre_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise RaftError("invalid transition: leader -> pre-candidate")
        # Neither term nor vote change: a pre-candidate promises nothing durable.
        self.role = Role.PRE_CANDIDATE
        self.tracker.reset_votes()
        self.lead = NONE
        self.logger.debug("%d became pre-candidate at term %d", self.id, self.term)

    def become_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise RaftError("invalid transition: leader -> candidate")
        self.reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self.logger.debug("%d became candidate at term %d", self.id, self.term)

    def become_leader(self) -> None:
        if self.role == Role.FOLLOWER:
            raise RaftError("invalid transition: follower -> leader")
        self.reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        me = self.tracker.progress[self.id]
        me.become_replicate()
        me.match = self.log.last_persisted_index()
        me.next = self.log.last_index() + 1
        for pr in self.tracker.progress.values():
            pr.last_ack_tick = self.now  # give everyone one election timeout to answer
        # No membership change until this term's no-op is applied (pending_conf_index) and
        # committed (checked in propose_conf_change).
        self.pending_conf_index = self.log.last_index()
        self.append_entries([Entry(index=0, term=0, type=EntryType.NOOP)])
        self.logger.info("%d became leader at term %d", self.id, self.term)

    # -- elections -----------------------------------------------------------------------------
    def hup(self, transfer: bool = False) -> None:
        self.unquiesce()
        if self.role == Role.LEADER:
            return
        if not self.promotable():
            return
        if self.fence is not None and self._fence_blocks_votes():
            return
        if self._has_unapplied_conf_change():
            # Campaigning under a membership we are about to change could count the wrong
            # majority; wait until it is applied.
            return
        if transfer or not self.cfg.pre_vote:
            self.campaign(pre=False, transfer=transfer)
        else:
            self.campaign(pre=True, transfer=False)

    def _has_unapplied_conf_change(self) -> bool:
        lo, hi = self.log.applied + 1, self.log.committed + 1
        if lo >= hi:
            return False
        try:
            ents = self.log.slice(lo, hi, None)
        except CompactedError:
            return False
        return any(e.type == EntryType.CONF_CHANGE for e in ents)

    def campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self.become_pre_candidate()
            vote_type, term = MessageType.PRE_VOTE, self.term + 1
        else:
            self.become_candidate()
            vote_type, term = MessageType.VOTE, self.term
        if pre:
            # A pre-vote promises nothing durable: count our own at once (and in a single-voter
            # group go straight on to the real election).
            if self.poll(self.id, vote_type, True) == VoteResult.WON:
                self.campaign(pre=False, transfer=transfer)
                return
        else:
            # Our own vote counts only once it is durable, like anyone else's: a reply to
            # ourselves that RawNode steps back into us after the Ready holding our new term
            # and vote is persisted (etcd's stepsOnAdvance). A single voter thus becomes
            # leader only with its term on disk, so no append of that term can leave first.
            self.send(Message(type=MessageType.VOTE_RESP, to=self.id, frm=self.id, term=term))
        last = self.log.last_index()
        last_term = self.log.last_term()
        for peer in sorted(self.tracker.voters):
            if peer == self.id:
                continue
            self.send(
                Message(
                    type=vote_type,
                    to=peer,
                    frm=self.id,
                    term=term,
                    index=last,
                    log_term=last_term,
                    context=TRANSFER_CONTEXT if transfer else b"",
                )
            )

    def poll(self, node: int, vote_type: MessageType, granted: bool) -> VoteResult:
        self.tracker.record_vote(node, granted)
        return self.tracker.tally_votes()[2]

    # -- the step function -------------------------------------------------------------------
    def step(self, m: Message) -> None:
        """Handle a message from a peer (Raft §5.1: compare terms first)."""
        if self.fence is not None:
            if self._fence_drops(m):
                return
            self._step(m)
            self._maybe_lift_fence()
            return
        self._step(m)

    # -- the fence of a wiped node (see "Rejoining after a lost disk" above) -----------------
    def _fence_blocks_votes(self) -> bool:
        f = self.fence
        return f is not None and (f.min_term == 0 or not self._fence_passed(f))

    def _fence_passed(self, f: Fence) -> bool:
        """Whether our log holds what the fence asks before we vote: the entry that added us
        back committed (a wiped node), and a log at least as up to date as our earlier
        replica's last entry (its floor; see "Coming back after a removal")."""
        if self.log.committed < f.index:
            return False
        if f.floor_index == 0:
            return True
        last_term = self.log.last_term()
        return last_term > f.floor_term or (
            last_term == f.floor_term and self.log.last_index() >= f.floor_index
        )

    def _fence_drops(self, m: Message) -> bool:
        """Whether a fenced node must ignore m: anything while the old incarnation is still a
        member (min_term 0) or from before the term it was added back in; a vote request
        until its log holds the entry that added it back and passes its floor."""
        f = self.fence
        assert f is not None
        if f.min_term == 0 or m.term < f.min_term:
            return True
        return m.type in (MessageType.VOTE, MessageType.PRE_VOTE) and not self._fence_passed(f)

    def _maybe_lift_fence(self) -> None:
        f = self.fence
        if f is not None and f.min_term > 0 and self.term >= f.min_term and self._fence_passed(f):
            self.logger.info(
                "%d: fence lifted (term %d, commit %d >= %d, last %d@%d >= floor %d@%d)",
                self.id,
                self.term,
                self.log.committed,
                f.index,
                self.log.last_index(),
                self.log.last_term(),
                f.floor_index,
                f.floor_term,
            )
            self.fence = None

    def _step(self, m: Message) -> None:
        if self.quiesced and not (
            m.context == QUIESCE_CONTEXT
            and m.type in (MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP)
        ):
            # Anything but the quiesce handshake wakes the group; a follower woken by someone
            # other than its leader wakes the leader too, so a live one resumes heartbeats.
            self.unquiesce(wake_leader=m.frm != self.lead)
        if m.term > self.term:
            if m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
                force = m.context == TRANSFER_CONTEXT
                in_lease = (
                    self.cfg.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.cfg.election_tick
                )
                if not force and in_lease:
                    # We heard from a leader within the minimum election timeout: keep it
                    # (thesis §4.2.3). Do not update the term, do not vote.
                    return
            if m.type == MessageType.PRE_VOTE:
                pass  # never change our term for a PreVote
            elif m.type == MessageType.PRE_VOTE_RESP and not m.reject:
                pass  # the term is the future one we asked for; bumped when we win
            elif m.type in (MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP):
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and m.type in (
                MessageType.HEARTBEAT,
                MessageType.APP,
            ):
                # A leader of an older term still talks to us. Maybe we bumped our term while
                # cut off and now cannot rejoin (CheckQuorum makes others ignore our votes);
                # tell it our term so it steps down and an election can bring us back.
                self.send(Message(type=MessageType.APP_RESP, to=m.frm, frm=self.id))
            elif m.type == MessageType.PRE_VOTE:
                # Reject with our term so the pre-candidate learns it is behind.
                self.send(
                    Message(
                        type=MessageType.PRE_VOTE_RESP,
                        to=m.frm,
                        frm=self.id,
                        term=self.term,
                        reject=True,
                    )
                )
            return

        if m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
            self._handle_vote_request(m)
            return
        if self.role == Role.LEADER:
            self.step_leader(m)
        elif self.role == Role.FOLLOWER:
            self.step_follower(m)
        else:
            self.step_candidate(m)

    def _handle_vote_request(self, m: Message) -> None:
        """Grant or refuse a (pre-)vote. A learner votes too, as in etcd: a candidate asks only
        the voters of its own configuration, which may be newer than ours (we were promoted by
        a leader that died before we heard of it); refusing would leave a group whose voters
        are alive without a leader. A candidate whose configuration is older than ours cannot
        win with our vote unless it is at least as up to date as we are (Raft's usual checks),
        and a replica that was a member before and was added back votes only past its floor
        ("Coming back after a removal")."""
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MessageType.PRE_VOTE and m.term > self.term)
        )
        resp_type = (
            MessageType.VOTE_RESP if m.type == MessageType.VOTE else MessageType.PRE_VOTE_RESP
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # The reply carries the requested term so the (pre-)candidate counts it; for a real
            # vote it goes out only after the vote is persisted (msgs_after_persist).
            self.send(Message(type=resp_type, to=m.frm, frm=self.id, term=m.term))
            if m.type == MessageType.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.send(Message(type=resp_type, to=m.frm, frm=self.id, term=self.term, reject=True))

    def step_leader(self, m: Message) -> None:
        pr = self.tracker.progress.get(m.frm)
        if pr is None:
            return
        if m.type == MessageType.APP_RESP:
            pr.last_ack_tick = self.now
            pr.responded = True
            if m.reject:
                next_probe = m.reject_hint
                if m.log_term > 0:
                    next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
                if pr.maybe_decr_to(m.index, next_probe):
                    if pr.state == ProgressState.REPLICATE:
                        pr.become_probe()
                    self.maybe_send_append(m.frm)
                return
            # An acknowledgment of exactly `match` while probing (the answer to an empty
            # probe of a follower that was in fact caught up) also proves where the logs
            # agree: resume pipelining now rather than stay paused until a heartbeat answer.
            if pr.maybe_update(m.index) or (
                pr.match == m.index and pr.state == ProgressState.PROBE
            ):
                if pr.state == ProgressState.PROBE:
                    pr.become_replicate()
                elif pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index():
                    # The follower can continue from our log (it installed the snapshot, or
                    # caught up another way): probe from its match, then pipeline.
                    pr.become_probe()
                    pr.become_replicate()
                elif pr.state == ProgressState.REPLICATE:
                    pr.inflights.free_le(m.index)
                if self.maybe_commit():
                    self.bcast_commit()
                elif not self.cfg.lazy_commit and pr.can_bump_commit(self.log.committed):
                    # The follower may lack our commit index: tell it now rather than at the
                    # next heartbeat. Only then: an acknowledgment that moves nothing (the
                    # answer to a probe that carried our commit) needs no reply (etcd).
                    self.maybe_send_append(m.frm)
                while self.maybe_send_append(m.frm, send_if_empty=False):
                    pass
                if m.frm == self.lead_transferee and pr.match == self.log.last_index():
                    self.send_timeout_now(m.frm)
        elif m.type == MessageType.HEARTBEAT_RESP:
            pr.last_ack_tick = self.now
            pr.responded = True
            pr.probe_sent = False
            if (
                pr.state == ProgressState.SNAPSHOT
                and self.now - pr.snapshot_sent_tick >= 2 * self.cfg.election_tick
            ):
                # The snapshot was probably lost; the follower is alive, so try again.
                pr.become_probe()
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                # Its acknowledgments may all have been lost, or it is just slow. Either way
                # the window stays shut to new data (it bounds what a slow follower costs us):
                # send an empty append after the last one in flight, whose answer frees the
                # window or, if appends were lost, sends us back to probing (etcd#14633).
                self._send_append(m.frm, pr, send_if_empty=True, with_entries=False)
            elif pr.match < self.log.last_index() or pr.state == ProgressState.PROBE:
                # Behind, or probing (after report_unreachable, say) though caught up: an
                # append, empty if need be, whose answer puts it back in REPLICATE, without
                # which an idle group could never quiesce (etcd's
                # heartbeat_resp_recovers_from_probing.txt).
                self.maybe_send_append(m.frm)

    def step_candidate(self, m: Message) -> None:
        resp_type = (
            MessageType.PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else MessageType.VOTE_RESP
        )
        if m.type == MessageType.APP:
            self.become_follower(m.term, m.frm)
            self.handle_append(m)
        elif m.type == MessageType.HEARTBEAT:
            self.become_follower(m.term, m.frm)
            self.handle_heartbeat(m)
        elif m.type == MessageType.SNAP:
            self.become_follower(m.term, m.frm)
            self.handle_snapshot(m)
        elif m.type == resp_type:
            result = self.poll(m.frm, m.type, not m.reject)
            if result == VoteResult.WON:
                if self.role == Role.PRE_CANDIDATE:
                    self.campaign(pre=False, transfer=False)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif result == VoteResult.LOST:
                self.become_follower(self.term, NONE)

    def step_follower(self, m: Message) -> None:
        if m.type == MessageType.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self.handle_append(m)
        elif m.type == MessageType.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self.handle_heartbeat(m)
        elif m.type == MessageType.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self.handle_snapshot(m)
        elif m.type == MessageType.TIMEOUT_NOW:
            self.logger.info("%d campaigns now: leadership transfer from %d", self.id, m.frm)
            self.hup(transfer=True)

    # -- follower handlers ---------------------------------------------------------------------
    def handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self.send(
                Message(type=MessageType.APP_RESP, to=m.frm, frm=self.id, index=self.log.committed)
            )
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self.send(Message(type=MessageType.APP_RESP, to=m.frm, frm=self.id, index=last_new))
            return
        # Our log lacks (m.index, m.log_term). Tell the leader the largest index where we
        # might agree: at most our last index, and skipping entries whose term is above
        # m.log_term since they cannot match (etcd's findConflictByTerm).
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(m.index, self.log.last_index()), m.log_term
        )
        self.send(
            Message(
                type=MessageType.APP_RESP,
                to=m.frm,
                frm=self.id,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(min(m.commit, self.log.last_index()))
        quiesce = (
            m.context == QUIESCE_CONTEXT and self.log.last_index() == m.commit == self.log.committed
        )
        if quiesce:
            # Our log is exactly the leader's, all committed: nothing can happen until the
            # leader speaks again (or its node goes away, which the host tells us).
            self.quiesced = True
        self.send(
            Message(
                type=MessageType.HEARTBEAT_RESP,
                to=m.frm,
                frm=self.id,
                context=QUIESCE_CONTEXT if quiesce else b"",
            )
        )

    def handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        if self.restore(m.snapshot):
            self.send(
                Message(
                    type=MessageType.APP_RESP, to=m.frm, frm=self.id, index=self.log.last_index()
                )
            )
        else:
            self.send(
                Message(type=MessageType.APP_RESP, to=m.frm, frm=self.id, index=self.log.committed)
            )

    def restore(self, snap: Snapshot) -> bool:
        """Install a leader's snapshot (Raft §7). Returns False if it tells us nothing new."""
        meta = snap.meta
        if meta.index <= self.log.committed:
            return False
        if self.role != Role.FOLLOWER:
            # Only a leader of our term sends snapshots, and then we are its follower.
            raise RaftError(f"{self.id} got a snapshot while {self.role.name}")
        if self.log.match_term(meta.index, meta.term):
            # We hold the snapshot's last entry: just commit up to it (fast-forward).
            self.log.commit_to(meta.index)
            return False
        self.log.restore(snap)
        self._apply_conf_state(meta.conf_state)
        self.logger.info("%d restored snapshot at %d (term %d)", self.id, meta.index, meta.term)
        return True

    # -- leader actions ----------------------------------------------------------------------
    def append_entries(self, ents: list[Entry]) -> int:
        """Assign indexes and the current term, append, and count ourselves once persisted."""
        last = self.log.last_index()
        stamped = [
            Entry(index=last + 1 + i, term=self.term, type=e.type, data=e.data)
            for i, e in enumerate(ents)
        ]
        self.log.append(stamped)
        # Our own progress moves when the host reports the entries persisted (see advance);
        # single-voter groups commit then too.
        return last + 1

    def maybe_commit(self) -> bool:
        return self.log.maybe_commit(self.tracker.committed(), self.term)

    def on_persisted(self, index: int) -> None:
        """The host persisted our log up to index: count ourselves for commit."""
        if self.role != Role.LEADER:
            return
        me = self.tracker.progress.get(self.id)
        if me is None:
            return
        persisted = min(index, self.log.last_persisted_index())
        if me.maybe_update(persisted) and self.maybe_commit():
            self.bcast_commit()

    def propose(self, entries: list[Entry]) -> int:
        """Append entries as leader; returns the index of the first one."""
        self.unquiesce()
        if self.role != Role.LEADER:
            raise NotLeaderError(self.lead, self.term)
        if self.id not in self.tracker.progress:
            raise ProposalDroppedError(f"{self.id} is no longer a member of the group")
        if self.lead_transferee != NONE:
            raise ProposalDroppedError(
                f"leadership is being transferred to {self.lead_transferee}; retry there"
            )
        first = self.append_entries(entries)
        self.bcast_append()
        return first

    def propose_conf_change(self, cc: ConfChange) -> int:
        if self.role != Role.LEADER:
            raise NotLeaderError(self.lead, self.term)
        if self.pending_conf_index > self.log.applied:
            raise ConfChangeError(
                f"a membership change at index {self.pending_conf_index} is not applied yet "
                f"(applied {self.log.applied}); one change at a time"
            )
        if self.log.term_or_zero(self.log.committed) != self.term:
            raise ConfChangeError(
                "the leader has not committed an entry of its term yet; retry shortly"
            )
        self._validate_conf_change(cc)
        index = self.propose([Entry(index=0, term=0, type=EntryType.CONF_CHANGE, data=cc.encode())])
        self.pending_conf_index = index
        return index

    def _validate_conf_change(self, cc: ConfChange) -> None:
        t = self.tracker
        if cc.node_id <= NONE:
            raise ConfChangeError(f"invalid node id {cc.node_id}")
        if cc.type == ConfChangeType.ADD_VOTER and cc.node_id in t.voters:
            raise ConfChangeError(f"node {cc.node_id} is already a voter")
        if cc.type == ConfChangeType.ADD_LEARNER:
            if cc.node_id in t.voters:
                raise ConfChangeError(f"node {cc.node_id} is a voter; demotion is not supported")
            if cc.node_id in t.learners:
                raise ConfChangeError(f"node {cc.node_id} is already a learner")
        if cc.type == ConfChangeType.REMOVE_NODE:
            if cc.node_id not in t.voters and cc.node_id not in t.learners:
                raise ConfChangeError(f"node {cc.node_id} is not a member")
            if t.voters == {cc.node_id}:
                raise ConfChangeError("cannot remove the last voter")

    def transfer_leader(self, to: int) -> None:
        self.unquiesce()
        if self.role != Role.LEADER:
            raise NotLeaderError(self.lead, self.term)
        if to == self.id or to == self.lead_transferee:
            return
        if to not in self.tracker.voters:
            raise ConfChangeError(f"cannot transfer leadership to {to}: not a voter")
        self.abort_leader_transfer()
        # The transfer must finish within one election timeout or it is abandoned (tick).
        self.election_elapsed = 0
        self.lead_transferee = to
        pr = self.tracker.progress[to]
        if pr.match == self.log.last_index():
            self.send_timeout_now(to)
        else:
            self.maybe_send_append(to)

    def send_timeout_now(self, to: int) -> None:
        self.send(Message(type=MessageType.TIMEOUT_NOW, to=to, frm=self.id))

    def abort_leader_transfer(self) -> None:
        self.lead_transferee = NONE

    # -- membership --------------------------------------------------------------------------
    def _apply_conf_state(self, cs: ConfState) -> None:
        t = self.tracker
        last = self.log.last_index()
        old = t.progress
        t.voters = set(cs.voters)
        t.learners = set(cs.learners)
        t.progress = {}
        for node in sorted(t.voters | t.learners):
            pr = old.get(node) or Progress(last + 1, self.cfg.max_inflight_msgs)
            pr.is_learner = node in t.learners
            t.progress[node] = pr

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed membership change (the host calls this when it applies the entry).
        Membership takes effect on apply; proposing waits for the previous one to be applied."""
        self.unquiesce()
        t = self.tracker
        voters, learners = set(t.voters), set(t.learners)
        if cc.type == ConfChangeType.ADD_VOTER:
            learners.discard(cc.node_id)
            voters.add(cc.node_id)
        elif cc.type == ConfChangeType.ADD_LEARNER:
            if cc.node_id not in voters:
                learners.add(cc.node_id)
        else:
            voters.discard(cc.node_id)
            learners.discard(cc.node_id)
        cs = ConfState(voters=frozenset(voters), learners=frozenset(learners))
        if not voters:
            raise ConfChangeError("a membership change may not remove every voter")
        added = (voters | learners) - set(t.progress)
        self._apply_conf_state(cs)
        for node in added:
            # A new member: probe from the end, as if it had just answered (so the leader may
            # send it a snapshot straight away).
            self.tracker.progress[node].last_ack_tick = self.now
        if self.role != Role.LEADER:
            return cs
        if self.id not in voters:
            # Removed (or, hypothetically, demoted) leader: step down; the rest elect anew.
            self.become_follower(self.term, NONE)
            return cs
        if self.maybe_commit():
            self.bcast_append()
        else:
            for peer in self.tracker.progress:
                if peer != self.id:
                    self.maybe_send_append(peer, send_if_empty=False)
        if self.lead_transferee != NONE and self.lead_transferee not in voters:
            self.abort_leader_transfer()
        return cs

    # -- quiescence ----------------------------------------------------------------------------
    def maybe_quiesce(self, unreachable: frozenset[int] = frozenset()) -> bool:
        """As leader, go quiet if nothing is in flight (see the module docstring); returns
        whether this node is quiesced now. The host should drain the Ready first.

        `unreachable`: members the host knows it cannot reach (their node is down). They are
        left out, once they are out of the ISR (so the ISR a quiet group shows is true) and if
        the others still make a quorum: a group need not stay awake, heartbeating into the
        void, for as long as a node is down. The host wakes the group when they come back."""
        if self.quiesced:
            return True
        if self.role != Role.LEADER or self.lead_transferee != NONE:
            return False
        if self.msgs or self.msgs_after_persist or self.msgs_to_self:
            return False
        log = self.log
        last = log.last_index()
        if (
            log.committed != last
            or log.applied != last
            or log.unstable.entries
            or log.unstable.snapshot is not None
            or self.pending_conf_index > log.applied
        ):
            return False
        isr = self.in_sync_replicas() if unreachable else set()
        live: list[int] = []
        for peer, pr in self.tracker.progress.items():
            if peer == self.id:
                if pr.match != last:
                    return False
                continue
            if peer in unreachable:
                if peer in isr:
                    return False  # wait until it leaves the ISR (max_lag_ticks)
                continue
            if (
                pr.match != last
                or pr.state != ProgressState.REPLICATE
                or pr.inflights.count()
                or not pr.responded
                or self.now - pr.last_ack_tick > 2 * self.cfg.heartbeat_tick
            ):
                return False  # behind, or not answering our heartbeats: it may be gone
            live.append(peer)
        voters = self.tracker.voters
        if sum(1 for v in voters if v == self.id or v in live) <= len(voters) // 2:
            return False
        for peer in live:
            self.send(
                Message(
                    type=MessageType.HEARTBEAT,
                    to=peer,
                    frm=self.id,
                    commit=last,
                    context=QUIESCE_CONTEXT,
                )
            )
        self.quiesced = True
        self.logger.debug("%d quiesces at %d (term %d)", self.id, last, self.term)
        return True

    def unquiesce(self, wake_leader: bool = True) -> None:
        """End quiescence. A follower that knows its leader tells it (a heartbeat reply) when
        wake_leader, so a live leader resumes heartbeats."""
        if not self.quiesced:
            return
        self.quiesced = False
        if wake_leader and self.role == Role.FOLLOWER and self.lead not in (NONE, self.id):
            self.send(Message(type=MessageType.HEARTBEAT_RESP, to=self.lead, frm=self.id))

    # -- time ----------------------------------------------------------------------------------
    def tick(self) -> None:
        self.unquiesce()  # a host that ticks a quiet node wants it awake
        self.now += 1
        if self.role == Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.hup()

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum and not self.tracker.quorum_active(
                self.id, self.now, self.cfg.election_tick
            ):
                self.logger.info(
                    "%d steps down: no quorum heard within an election timeout", self.id
                )
                self.become_follower(self.term, NONE)
                return
            if self.lead_transferee != NONE:
                self.abort_leader_transfer()  # transfer did not finish in time
        if self.role != Role.LEADER:
            return
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self.bcast_heartbeat()
        if self.cfg.lazy_commit:
            self._send_lazy_commits()

    # -- host feedback -------------------------------------------------------------------------
    def set_inflight_limit(self, to: int, limit: int, max_bytes: int = 0) -> None:
        """Host flow control: at most `limit` appends in flight to `to` (0: back to
        max_inflight_msgs), each of at most `max_bytes` of entries (0: max_size_per_msg; at
        least one entry all the same). A host that throttles a peer (a learner catching up
        during a replica move) keeps its window small, so what the host holds back stays small
        too, and its appends small, so that no single read of old entries from storage holds
        the host up for long. Leader only; a new term's progress starts with the configured
        window and size again."""
        pr = self.tracker.progress.get(to)
        if self.role == Role.LEADER and pr is not None:
            pr.inflights.capacity = limit if limit > 0 else self.cfg.max_inflight_msgs
            pr.max_msg_bytes = max(0, max_bytes)

    def report_unreachable(self, to: int) -> None:
        pr = self.tracker.progress.get(to)
        if self.role == Role.LEADER and pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, to: int, failed: bool) -> None:
        pr = self.tracker.progress.get(to)
        if self.role != Role.LEADER or pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if failed:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for the follower's answer (or a heartbeat response) before probing again.
        pr.probe_sent = True
