"""A seeded, replayable world of 3 to 7 Raft nodes, and the run of one seed through it.

Theory of operation. Everything random comes from one `random.Random(seed)`: the shape of the
world (cluster size, message size limits, how nasty the faults are), the order messages arrive
in, every fault, every crash, and the seeds of the nodes' own generators. There is no clock:
time is a tick counter. So a seed is a complete description of a run, and
`python -m tests.sim --seed S` replays it exactly.

One tick of the world is, in this order:
  1. deliver every message due (each delivery is a step; replies sent with no delay are due at
     once and delivered in the same tick, in random order with the rest);
  2. world events, each a step: restarts, fault injection and healing, crashes between steps,
     client proposals, leadership transfers, membership changes, snapshots and compaction;
  3. tick every live node, in random order (a step each).
After every step the node it touched runs its host loop (raft/rawnode.py's contract, see
tests/sim/host.py), unless the world lets inputs pile up first, as node/'s driver does under load,
and the checker (tests/sim/checker.py) checks that node.

A run has two phases. Chaos: the faults above. Calm: every partition healed, every crashed member
restarted, no loss; then a leader must emerge and a fresh proposal commit on every member within
bounds derived from the election timeout (LEADER_BOUND_ETS and COMMIT_BOUND_ETS below).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from raft import (
    ConfChange,
    ConfChangeError,
    ConfChangeType,
    ConfState,
    Entry,
    MemoryStorage,
    Message,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    Ready,
    Role,
    Snapshot,
)
from tests.sim.checker import Checker, LivenessViolation
from tests.sim.host import CRASH_POINT_NAMES, CrashPoint, RaftParams, SimNode
from tests.sim.network import Network, Weather

LEADER_BOUND_ETS = 6
"""Calm phase, PreVote on (production): a leader within this many election timeouts. Once
healed, every node times out within two election timeouts of its last reset; a node with a stale
log fails its PreVote without raising the term, so it delays nobody, and a round is lost only to
a split vote between up-to-date nodes that time out within a message delay of each other. Six
election timeouts is three full rounds (2000 seeds measured: at most 2.6)."""
COMMIT_BOUND_ETS = 4
"""Calm phase, PreVote on: from the first attempt of the fresh proposal to its application on
every member (retries to a new leader included). Replication is immediate once healed; the
slack is for a follower behind the log start (a snapshot) and one re-election when the leader
that took the proposal is deposed (2000 seeds measured: at most 1.8)."""
NO_PRE_VOTE_BOUND_ETS = 30
"""Both bounds when PreVote is off (a core option, tested here for safety). Then a node with a
stale log that times out first raises the term and deposes whoever leads; it wins that race
with odds up to one half per round, so liveness is only probabilistic: 30 election timeouts
(about 15 rounds) keeps false alarms below one in ten thousand seeds."""


def liveness_bounds(raft: RaftParams) -> tuple[int, int]:
    """(leader, commit) bounds in ticks for a world with these Raft parameters."""
    et = raft.election_tick
    if raft.pre_vote:
        return LEADER_BOUND_ETS * et, COMMIT_BOUND_ETS * et
    return NO_PRE_VOTE_BOUND_ETS * et, NO_PRE_VOTE_BOUND_ETS * et


MAX_DELIVERIES_PER_TICK = 50_000
"""A guard against a livelock in delivery; a healthy run never comes near it."""

_CRASH_POINTS = [
    CrashPoint.BEFORE_SEND,
    CrashPoint.AFTER_SEND,
    CrashPoint.AFTER_PERSIST,
    CrashPoint.AFTER_PERSISTED_SEND,
    CrashPoint.AFTER_APPLY,
]
_CRASH_WEIGHTS = [2, 4, 3, 2, 1]

_IGNORABLE = [
    MessageType.APP,
    MessageType.APP_RESP,
    MessageType.VOTE,
    MessageType.VOTE_RESP,
    MessageType.PRE_VOTE_RESP,
    MessageType.HEARTBEAT,
    MessageType.HEARTBEAT_RESP,
    MessageType.SNAP,
    MessageType.TIMEOUT_NOW,
]


@dataclass(slots=True, frozen=True)
class SimOptions:
    """What the command line may fix; everything else the seed chooses."""

    nodes: int | None = None
    """Cluster size; None: 3 to 7, drawn from the seed."""
    ticks: int = 300
    """Length of the chaos phase in ticks."""
    steps: int | None = None
    """Optional cap on the chaos phase in steps."""
    faults: bool = True
    """False: no faults at all (the benchmark)."""


@dataclass(slots=True, frozen=True)
class Profile:
    """The shape of one world, drawn from its seed: how big, and how nasty."""

    nodes: int
    spares: int
    raft: RaftParams
    base_weather: Weather
    fault_rate: float  # per tick: probability that a new fault starts
    fault_ticks: int  # a fault lasts 1 to this many ticks
    crash_sync: float  # per Ready that needs an fsync: probability of a crash in its loop
    crash_vote: float  # the same, for a Ready that changes the durable term or vote
    depose_rate: float  # probability that a new leader is crashed or cut off soon after
    crash_idle: float  # per tick: probability that some node crashes between steps
    restart_ticks: int  # a crashed node is back within this many ticks
    propose_rate: float  # per tick: probability of a client batch
    max_batch: int
    transfer_rate: float
    compact_rate: float  # per node per tick
    member_rate: float
    defer_ready: float  # probability a node steps more input before its next Ready cycle
    one_ready: float = 0.0  # probability a host loop stops after one Ready (lazy apply)
    campaign_rate: float = 0.0  # per tick: probability an operator makes a node campaign now
    min_batch: int = 1
    proposals_per_tick: int = 1  # client batches tried per tick (each with propose_rate)

    @classmethod
    def draw(cls, rng: random.Random, opts: SimOptions) -> Profile:
        nodes = opts.nodes if opts.nodes is not None else rng.randint(3, 7)
        et = rng.choice([6, 8, 10])
        raft = RaftParams(
            election_tick=et,
            heartbeat_tick=rng.choice([1, 2, 2, 3]),
            # Small messages make entries travel one at a time, which is what exposes commit
            # rules (Figure 8): the old-term entry arrives without the new leader's no-op.
            # A broker's entries are record batches close to the message size limit, so "one
            # entry per message" is the common case in production, and weighted so here.
            max_size_per_msg=rng.choice([1, 1, 100, 1000, 1 << 20]),
            max_inflight_msgs=rng.choice([1, 2, 8, 256]),
            max_committed_size_per_ready=rng.choice([1, 500, 16 << 20]),
            check_quorum=rng.random() < 0.8,
            pre_vote=rng.random() < 0.8,
        )
        if not opts.faults:
            return cls(
                nodes=nodes,
                spares=0,
                raft=raft,
                base_weather=Weather(),
                fault_rate=0.0,
                fault_ticks=1,
                crash_sync=0.0,
                crash_vote=0.0,
                depose_rate=0.0,
                crash_idle=0.0,
                restart_ticks=1,
                propose_rate=rng.uniform(0.2, 0.9),
                max_batch=rng.choice([1, 4, 16]),
                transfer_rate=0.0,
                compact_rate=0.02,
                member_rate=0.0,
                defer_ready=0.0,
            )
        return cls(
            nodes=nodes,
            spares=3,
            raft=raft,
            base_weather=Weather(
                drop=rng.choice([0.0, 0.0, 0.01, 0.05]),
                dup=rng.choice([0.0, 0.01, 0.05]),
                max_delay=rng.choice([0, 1, 2, 3]),
            ),
            fault_rate=rng.choice([0.02, 0.05, 0.1, 0.2]),
            fault_ticks=rng.choice([2, 3, 5]) * et,
            crash_sync=rng.choice([0.005, 0.02, 0.05]),
            # The nemesis aims where Raft is delicate (Jepsen's targeted faults): a node that
            # is casting a vote or moving to a new term, and a leader that was just elected and
            # has replicated only part of its log. Split votes and short-lived leaders with
            # partial logs are what the election and commit rules exist for (Figure 8).
            crash_vote=rng.choice([0.0, 0.05, 0.2]),
            depose_rate=rng.choice([0.0, 0.3, 0.6, 0.9]),
            crash_idle=rng.choice([0.0, 0.01, 0.03]),
            restart_ticks=rng.choice([1, 2, 4]) * et,
            propose_rate=rng.uniform(0.1, 0.8),
            max_batch=rng.choice([1, 3, 8]),
            transfer_rate=rng.choice([0.0, 0.005, 0.02]),
            compact_rate=rng.choice([0.0, 0.01, 0.05]),
            member_rate=rng.choice([0.0, 0.01, 0.03]),
            defer_ready=rng.choice([0.0, 0.0, 0.3]),
            one_ready=rng.choice([0.0, 0.0, 0.5]),
            campaign_rate=rng.choice([0.0, 0.01]),
        )


@dataclass(slots=True, frozen=True)
class Event:
    """Something worth telling a person watching (-v, --demo)."""

    tick: int
    step: int
    kind: str
    """elect, fault, heal, crash, restart, commit, snapshot, member, transfer, phase, live"""
    text: str
    nodes: tuple[int, ...] = ()


Observer = Callable[[Event], None]


@dataclass(slots=True)
class SeedStats:
    seed: int
    nodes: int = 0
    election_tick: int = 10
    pre_vote: bool = True
    steps: int = 0
    ticks: int = 0
    elections: int = 0
    committed: int = 0
    values_committed: int = 0
    snapshots_installed: int = 0
    snapshots_taken: int = 0
    conf_changes: int = 0
    conf_refused: int = 0
    faults: int = 0
    crashes: int = 0
    messages: int = 0
    checks: int = 0
    leader_ticks: int = 0
    """Calm phase: ticks until a leader was elected."""
    commit_ticks: int = 0
    """Calm phase: ticks from the fresh proposal to its application on every member."""


@dataclass(slots=True)
class _Fault:
    text: str
    heal_at: int
    undo: Callable[[], None]
    nodes: tuple[int, ...] = ()


@dataclass(slots=True)
class _Probe:
    """The calm phase's fresh proposal: one value per attempt (a retry is a new value, as a
    client's would be), done when any attempt is applied on every member."""

    values: list[bytes] = field(default_factory=list)
    leader: int = 0
    term: int = 0
    first_at: int = -1


class World:
    def __init__(
        self,
        seed: int,
        opts: SimOptions,
        observer: Observer | None = None,
        *,
        profile: Profile | None = None,
        checker: Checker | None = None,
    ) -> None:
        """`profile` fixes the world's shape instead of drawing it from the seed (demo, bench);
        `checker` replaces the safety checker (the benchmark measures without one)."""
        self.seed = seed
        self.opts = opts
        self.rng = random.Random(seed)
        self.profile = profile if profile is not None else Profile.draw(self.rng, opts)
        self.observer = observer
        self.on_tick: Callable[[World], None] | None = None
        self.checker = checker if checker is not None else Checker()
        self.checker.on_elected = self._elected
        self.net = Network(self.rng)
        self.net.weather = _copy(self.profile.base_weather)
        self.now = 0
        self.steps = 0
        self.chaos = True
        self.stats = SeedStats(
            seed=seed,
            nodes=self.profile.nodes,
            election_tick=self.profile.raft.election_tick,
            pre_vote=self.profile.raft.pre_vote,
        )
        self.faults: list[_Fault] = []
        self.nodes: dict[int, SimNode] = {}
        n = self.profile.nodes
        self.initial_conf = ConfState(voters=frozenset(range(1, n + 1)))
        self.conf = self.initial_conf  # the latest configuration applied anywhere
        self.conf_index = 0
        self.next_id = n + 1
        self.max_id = n + self.profile.spares
        self.next_value = 0
        self._applied_conf_indexes: set[int] = set()
        self._reported_commit = 0
        self._probe: _Probe | None = None
        self._scheduled: list[tuple[int, Callable[[], None]]] = []
        self._durability_checked = 0
        for i in range(1, n + 1):
            self._add_node(i)

    # -- plumbing ------------------------------------------------------------------------------
    def emit(self, kind: str, text: str, nodes: tuple[int, ...] = ()) -> None:
        if self.observer is not None:
            self.observer(Event(self.now, self.steps, kind, text, nodes))

    def _add_node(self, node_id: int) -> SimNode:
        # A node joining later boots with the group's initial membership, like the founders: the
        # log it replays (or the snapshot it gets) brings it up to date.
        sn = SimNode(node_id, MemoryStorage(self.initial_conf), self.profile.raft, self)
        self.nodes[node_id] = sn
        sn.start(self.rng.getrandbits(64))
        return sn

    def _begin_step(self) -> None:
        self.steps += 1
        self.checker.step = self.steps

    def _finish(self, sn: SimNode, defer: bool = False) -> None:
        """Run sn's host loop (unless deferred) and check what the step changed."""
        if sn.node is not None and not defer:
            p = self.profile.one_ready
            sn.cycle(self._decide, 1 if p and self.rng.random() < p else 1 << 30)
        c = self.checker
        if sn.node is not None:
            c.observe(sn)
        if c.committed != self._durability_checked:
            self._durability_checked = c.committed
            c.check_durability(self.nodes.values())

    def _elected(self, sn: SimNode) -> None:
        assert sn.node is not None
        self.emit("elect", f"node {sn.id} leads term {sn.node.term}", (sn.id,))
        if self.chaos and self.rng.random() < self.profile.depose_rate:
            self._depose(sn)

    def _decide(self, sn: SimNode, rd: Ready) -> CrashPoint:
        """The crash decider the host loop asks before each Ready (see host.SimNode.cycle)."""
        # Check the step's outcome before any of it leaves the node or reaches its disk (a
        # crash may come next), and record new commits before anything applies them.
        self.checker.observe(sn)
        if not self.chaos or not rd.must_sync():
            return CrashPoint.NONE
        p = self.profile
        chance = p.crash_sync
        hs = rd.hard_state
        if hs is not None and p.crash_vote:
            durable = sn.storage.hard_state
            if hs.term != durable.term or hs.vote != durable.vote:
                chance = max(chance, p.crash_vote)
        if sn.crash_armed or self.rng.random() < chance:
            return self.rng.choices(_CRASH_POINTS, _CRASH_WEIGHTS)[0]
        return CrashPoint.NONE

    def _leaders(self) -> list[SimNode]:
        return [
            sn for sn in self.nodes.values() if sn.node is not None and sn.node.role == Role.LEADER
        ]

    def _leader(self) -> SimNode | None:
        """The leader of the highest term among the live nodes that think they lead."""
        best: SimNode | None = None
        best_term = -1
        for sn in self._leaders():
            assert sn.node is not None
            if sn.node.term > best_term:
                best, best_term = sn, sn.node.term
        return best

    def members(self) -> list[SimNode]:
        cs = self.conf
        return [self.nodes[i] for i in sorted(cs.voters | cs.learners) if i in self.nodes]

    # -- HostEvents (called from SimNode.cycle) ------------------------------------------------
    def send(self, sn: SimNode, msgs: list[Message]) -> None:
        if not msgs:
            return
        self.checker.sent(sn, msgs)
        for m in msgs:
            self.net.send(m, sn.life, self.now)

    def persisted(self, sn: SimNode, rd: Ready) -> None:
        self.checker.persisted(sn, rd)

    def applying(self, sn: SimNode, e: Entry) -> None:
        self.checker.applying(sn, e)

    def applied_conf_change(self, sn: SimNode, e: Entry, cc: ConfChange, cs: ConfState) -> None:
        if e.index not in self._applied_conf_indexes:
            self._applied_conf_indexes.add(e.index)
            self.stats.conf_changes += 1
            self.emit(
                "member",
                f"{_cc_text(cc)} committed at index {e.index}: voters {_ids(cs.voters)}"
                + (f", learners {_ids(cs.learners)}" if cs.learners else ""),
                (cc.node_id,),
            )
        if e.index > self.conf_index:
            self.conf_index = e.index
            self.conf = cs
        if cc.type == ConfChangeType.REMOVE_NODE:
            gone = self.nodes.get(cc.node_id)
            if gone is not None and not gone.removed:
                # The operator stops a removed node a little later (it may act until then).
                gone.removed = True
                gone.restart_at = None
                gone.shutdown_at = self.now + self.rng.randint(0, self.profile.raft.election_tick)

    def installed_snapshot(self, sn: SimNode, snap: Snapshot) -> None:
        self.checker.installed_snapshot(sn, snap)
        self.emit(
            "snapshot",
            f"node {sn.id} installed a snapshot at index {snap.meta.index} (term {snap.meta.term})",
            (sn.id,),
        )

    def crashed(self, sn: SimNode, point: CrashPoint) -> None:
        self.stats.crashes += 1
        if not sn.removed:
            if self.rng.random() < 0.3:
                sn.restart_at = self.now
            else:
                sn.restart_at = self.now + self.rng.randint(1, self.profile.restart_ticks)
        self.emit("crash", f"node {sn.id} crashed {CRASH_POINT_NAMES[point]}", (sn.id,))

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> SeedStats:
        """The whole run: chaos, then calm with its liveness bounds, then the final checks."""
        self.run_chaos()
        self.run_calm()
        self._finish_stats()
        return self.stats

    def run_chaos(self) -> None:
        opts = self.opts
        while self.now < opts.ticks and (opts.steps is None or self.steps < opts.steps):
            self.tick()

    def tick(self) -> None:
        """One tick of the world (see the module docstring)."""
        self.now += 1
        self.checker.tick = self.now
        self._deliver()
        self._world_events()
        order = [sn for sn in self.nodes.values() if sn.node is not None]
        self.rng.shuffle(order)
        for sn in order:
            if sn.node is None:
                continue  # crashed while another node ticked? (cannot happen, but cheap)
            self._begin_step()
            sn.node.tick()
            self._finish(sn)
        self.checker.check_durability(self.nodes.values())
        self._report_commit()
        if self.on_tick is not None:
            self.on_tick(self)

    def _deliver(self) -> None:
        budget = MAX_DELIVERIES_PER_TICK
        net = self.net
        defer_p = self.profile.defer_ready
        rng = self.rng
        while budget > 0:
            got = net.next_due(self.now)
            if got is None:
                # Nodes that let input pile up run their loop now; what they send may be due.
                pending = [sn for sn in self.nodes.values() if sn.dirty and sn.node is not None]
                if not pending:
                    return
                for sn in pending:
                    self._begin_step()
                    self._finish(sn)
                continue
            budget -= 1
            m, life, ok = got
            dst = self.nodes.get(m.to)
            if not ok or dst is None or dst.node is None:
                self._undeliverable(m, life)
                continue
            self.stats.messages += 1
            self._begin_step()
            dst.node.step(m)
            dst.dirty = True
            self._finish(dst, defer=bool(defer_p) and rng.random() < defer_p)
            if m.type == MessageType.SNAP:
                self._report_snapshot(m, life, failed=False)

    def _undeliverable(self, m: Message, life: int) -> None:
        """The sender's transport may notice a lost message (a broken stream) and say so."""
        if m.type == MessageType.SNAP:
            self._report_snapshot(m, life, failed=True)
            return
        sender = self.nodes.get(m.frm)
        if (
            sender is not None
            and sender.node is not None
            and sender.life == life
            and self.rng.random() < 0.1
        ):
            self._begin_step()
            sender.node.report_unreachable(m.to)
            self._finish(sender)

    def _report_snapshot(self, m: Message, life: int, failed: bool) -> None:
        sender = self.nodes.get(m.frm)
        if sender is None or sender.node is None or sender.life != life:
            return
        if self.rng.random() < 0.7:  # sometimes the transport does not know
            self._begin_step()
            sender.node.report_snapshot(m.to, failed)
            self._finish(sender)

    def _report_commit(self) -> None:
        c = self.checker.committed
        if c > self._reported_commit:
            lead = self._leader()
            who = f" (leader {lead.id}, term {lead.node.term})" if lead and lead.node else ""
            self.emit("commit", f"entries {self._reported_commit + 1}..{c} committed{who}")
            self._reported_commit = c

    # -- world events --------------------------------------------------------------------------
    def _world_events(self) -> None:
        p = self.profile
        rng = self.rng
        for sn in list(self.nodes.values()):
            if sn.shutdown_at is not None and sn.shutdown_at <= self.now:
                sn.shutdown_at = None
                if sn.node is not None:
                    self._begin_step()
                    sn.node = None
                    sn.dirty = False
                    self.emit("crash", f"node {sn.id} shut down: removed from the group", (sn.id,))
            elif sn.restart_at is not None and sn.restart_at <= self.now and not sn.removed:
                self._begin_step()
                sn.start(rng.getrandbits(64))
                st = sn.storage
                first, last = st.first_index(), st.last_index()
                log = f"log {first}..{last}" if last >= first else "empty log"
                self.emit(
                    "restart",
                    f"node {sn.id} restarted from disk (term {st.hard_state.term}, "
                    f"commit {st.hard_state.commit}, {log})",
                    (sn.id,),
                )
                self._finish(sn)
        if self.chaos:
            due = [a for a in self._scheduled if a[0] <= self.now]
            if due:
                self._scheduled = [a for a in self._scheduled if a[0] > self.now]
                for _, action in due:
                    action()
            for f in [f for f in self.faults if f.heal_at <= self.now]:
                self.faults.remove(f)
                f.undo()
                self.emit("heal", f"healed: {f.text}", f.nodes)
            if rng.random() < p.fault_rate:
                self._inject_fault()
            if p.crash_idle and rng.random() < p.crash_idle:
                live = [sn for sn in self.nodes.values() if sn.node is not None]
                if live:
                    self._begin_step()
                    rng.choice(live).crash(CrashPoint.NONE)
            if p.transfer_rate and rng.random() < p.transfer_rate:
                self._transfer()
            if p.member_rate and rng.random() < p.member_rate:
                self._membership()
            if p.campaign_rate and rng.random() < p.campaign_rate:
                self._campaign_now()
        for _ in range(p.proposals_per_tick):
            if rng.random() < p.propose_rate:
                self._propose()
        if p.compact_rate:
            for sn in self.nodes.values():
                if sn.node is not None and rng.random() < p.compact_rate:
                    self._begin_step()
                    if sn.take_snapshot(keep=rng.choice([0, 0, 1, 5, 20])):
                        self.stats.snapshots_taken += 1
                    self._finish(sn)

    def _depose(self, sn: SimNode) -> None:
        """Hit a new leader soon, so that it replicates only part of its log, or nothing, before
        it goes. Short-lived leaders with partial logs are what the election and commit rules
        exist for (Figure 8); a world where leaders live long never tests them."""
        rng = self.rng
        et = self.profile.raft.election_tick
        n, life = sn.id, sn.life
        how = rng.randrange(6)
        if how == 0:
            # Crash during its next disk write: before, while or after its first appends leave.
            sn.crash_armed = True
            self.stats.faults += 1
            self.emit("fault", f"new leader {n} will crash during its next disk write", (n,))
        elif how == 1:

            def crash() -> None:
                if sn.node is not None and sn.life == life:
                    self.stats.faults += 1
                    self._begin_step()
                    sn.crash(CrashPoint.NONE)

            self._scheduled.append((self.now + rng.randint(1, et // 2), crash))
        elif how == 2:
            # Cut off the moment it wins: whatever it appends stays on its own disk.
            self._isolate(n, rng.randint(1, 2 * et))
        elif how == 3:
            ticks = rng.randint(1, 2 * et)
            self._scheduled.append(
                (self.now + rng.randint(1, et // 2), lambda: self._isolate(n, ticks))
            )
        elif how == 4:
            self._flaky(n, rng.randint(1, 3 * et))
        else:
            # Cut off from some followers only: a minority gets its entries, or a majority does.
            others = [i for i in sorted(self.nodes) if i != n]
            cut = sorted(rng.sample(others, rng.randint(1, max(1, len(others) - 1))))
            both = rng.random() < 0.5
            net = self.net
            for o in cut:
                net.cut(n, o, both)

            def undo() -> None:
                for o in cut:
                    net.uncut(n, o, both)

            arrow = "<->" if both else "->"
            self._add_fault(
                f"links {n} {arrow} {_ids(cut)} cut", self.now + rng.randint(1, 2 * et), undo, (n,)
            )

    def _flaky(self, n: int, ticks: int) -> None:
        loss = self.rng.choice([0.3, 0.5, 0.7])
        net = self.net
        net.flaky(n, loss)
        self._add_fault(
            f"node {n}'s links lose {loss:.0%} of messages",
            self.now + ticks,
            lambda: net.unflaky(n, loss),
            (n,),
        )

    def _isolate(self, n: int, ticks: int) -> None:
        net = self.net
        others = sorted(self.nodes)
        net.isolate(n, others)
        self._add_fault(
            f"node {n} isolated", self.now + ticks, lambda: net.unisolate(n, others), (n,)
        )

    def _campaign_now(self) -> None:
        """An operator (or a test) tells a node to start an election at once."""
        live = [sn for sn in self.nodes.values() if sn.node is not None]
        if not live:
            return
        sn = self.rng.choice(live)
        assert sn.node is not None
        self._begin_step()
        sn.node.campaign()
        self._finish(sn)

    def _propose(self) -> None:
        rng = self.rng
        leaders = self._leaders()
        if leaders:
            sn = rng.choice(leaders)
        else:
            live = [sn for sn in self.nodes.values() if sn.node is not None]
            if not live:
                return
            sn = rng.choice(live)
        assert sn.node is not None
        k = rng.randint(self.profile.min_batch, self.profile.max_batch)
        values = [b"v%d" % (self.next_value + i) for i in range(k)]
        self.next_value += k
        self._begin_step()
        try:
            if k == 1:
                sn.node.propose(values[0])
            else:
                sn.node.propose_many(values)
        except (NotLeaderError, ProposalDroppedError):
            pass
        self._finish(sn)

    def _transfer(self) -> None:
        lead = self._leader()
        if lead is None or lead.node is None:
            return
        targets = sorted(lead.node.raft.tracker.voters - {lead.id})
        if not targets:
            return
        to = self.rng.choice(targets)
        self._begin_step()
        try:
            lead.node.transfer_leader(to)
            self.emit("transfer", f"leader {lead.id} hands leadership to {to}", (lead.id, to))
        except (NotLeaderError, ConfChangeError):
            pass
        self._finish(lead)

    def _membership(self) -> None:
        """The operator: add a learner, promote it, or remove a member, one at a time."""
        lead = self._leader()
        if lead is None or lead.node is None:
            return
        rng = self.rng
        t = lead.node.raft.tracker
        voters, learners = set(t.voters), set(t.learners)
        joiners = [
            sn
            for sn in self.nodes.values()
            if sn.id not in voters and sn.id not in learners and not sn.removed
        ]
        options: list[str] = []
        if len(voters) + len(learners) < 8 and (joiners or self.next_id <= self.max_id):
            options.append("add")
        if learners:
            options.append("promote")
        if len(voters) > 3 or learners:
            options.append("remove")
        if not options:
            return
        choice = rng.choice(options)
        new_id = 0
        if rng.random() < 0.1:
            # A sloppy operator: a change that makes no sense, which the core must refuse.
            outsider = max(self.nodes) + 1
            cc = rng.choice(
                [
                    ConfChange(ConfChangeType.ADD_VOTER, rng.choice(sorted(voters))),
                    ConfChange(ConfChangeType.ADD_LEARNER, rng.choice(sorted(voters))),
                    ConfChange(ConfChangeType.REMOVE_NODE, outsider),
                    ConfChange(ConfChangeType.ADD_LEARNER, 0),
                ]
                + ([ConfChange(ConfChangeType.ADD_LEARNER, min(learners))] if learners else [])
            )
        elif choice == "add":
            if joiners and (self.next_id > self.max_id or rng.random() < 0.5):
                node_id = rng.choice(joiners).id
            else:
                node_id = new_id = self.next_id
            cc = ConfChange(ConfChangeType.ADD_LEARNER, node_id)
        elif choice == "promote":
            cc = ConfChange(ConfChangeType.ADD_VOTER, rng.choice(sorted(learners)))
        else:
            pool = sorted(learners) + (sorted(voters) if len(voters) > 3 else [])
            cc = ConfChange(ConfChangeType.REMOVE_NODE, rng.choice(pool))
        self._begin_step()
        try:
            lead.node.propose_conf_change(cc)
        except ConfChangeError as e:
            self.stats.conf_refused += 1
            self.emit("member", f"refused {_cc_text(cc)}: {e}", (cc.node_id,))
            self._finish(lead)
            return
        except (NotLeaderError, ProposalDroppedError):
            self._finish(lead)
            return
        self.emit("member", f"leader {lead.id} proposes {_cc_text(cc)}", (cc.node_id,))
        self._finish(lead)
        if new_id:
            self.next_id += 1
            self._begin_step()
            sn = self._add_node(new_id)
            self.emit("restart", f"node {new_id} started (empty disk) to join", (new_id,))
            self._finish(sn)

    def _inject_fault(self) -> None:
        rng = self.rng
        p = self.profile
        net = self.net
        ids = sorted(self.nodes)
        live = [i for i in ids if self.nodes[i].node is not None]
        heal_at = self.now + rng.randint(1, p.fault_ticks)
        kind = rng.choices(
            [
                "cut",
                "oneway",
                "isolate",
                "split",
                "bridge",
                "ring",
                "flaky",
                "ignore",
                "storm",
                "crash",
                "crash_sync",
                "recover",
            ],
            [3, 2, 3, 3, 2, 2, 2, 1, 2, 2, 2, 1],
        )[0]
        lead = self._leader()
        if kind == "cut":
            a, b = rng.sample(ids, 2)
            net.cut(a, b)
            self._add_fault(f"link {a} <-> {b} cut", heal_at, lambda: net.uncut(a, b), (a, b))
        elif kind == "oneway":
            a, b = rng.sample(ids, 2)
            net.cut(a, b, both=False)
            self._add_fault(
                f"link {a} -> {b} cut (one way)",
                heal_at,
                lambda: net.uncut(a, b, both=False),
                (a, b),
            )
        elif kind == "isolate":
            n = lead.id if lead is not None and rng.random() < 0.5 else rng.choice(ids)
            self._isolate(n, heal_at - self.now)
        elif kind == "split":
            shuffled = list(ids)
            rng.shuffle(shuffled)
            k = rng.randint(1, max(1, (len(ids) - 1) // 2))
            minority, majority = sorted(shuffled[:k]), sorted(shuffled[k:])
            for a in minority:
                for b in majority:
                    net.cut(a, b)

            def undo() -> None:
                for a in minority:
                    for b in majority:
                        net.uncut(a, b)

            self._add_fault(
                f"split {_ids(minority)} | {_ids(majority)}", heal_at, undo, tuple(minority)
            )
        elif kind in ("bridge", "ring"):
            # Jepsen's nastiest partitions: every node (bridge: the middle one) sees a majority,
            # but no two majorities agree, so leaders come and go with partial logs.
            order = list(ids)
            rng.shuffle(order)
            size = len(order)
            pairs: list[tuple[int, int]] = []
            if kind == "bridge":
                half = (size - 1) // 2
                left, right = order[:half], order[half + 1 :]
                pairs = [(a, b) for a in left for b in right]
                text = f"bridge: {_ids(left)} | {order[half]} | {_ids(right)}"
            else:
                reach = (size // 2 + 1) // 2
                for x in range(size):
                    for y in range(x + 1, size):
                        if min(y - x, size - (y - x)) > reach:
                            pairs.append((order[x], order[y]))
                text = "ring of majorities " + "-".join(str(i) for i in order)
            if not pairs:
                return
            for a, b in pairs:
                net.cut(a, b)

            def undo_pairs() -> None:
                for a, b in pairs:
                    net.uncut(a, b)

            self._add_fault(text, heal_at, undo_pairs, tuple(order))
        elif kind == "flaky":
            n = lead.id if lead is not None and rng.random() < 0.5 else rng.choice(ids)
            self._flaky(n, heal_at - self.now)
        elif kind == "ignore":
            t = rng.choice(_IGNORABLE)
            net.ignore(t)
            self._add_fault(f"all {t.name} messages lost", heal_at, lambda: net.unignore(t))
        elif kind == "storm":
            w = Weather(
                drop=rng.choice([0.1, 0.3, 0.6]),
                dup=rng.choice([0.0, 0.1, 0.3]),
                max_delay=rng.choice([2, 5, 2 * p.raft.election_tick]),
            )
            net.weather = w
            base = p.base_weather

            def calm() -> None:
                net.weather = _copy(base)

            self._add_fault(
                f"storm: {w.drop:.0%} loss, {w.dup:.0%} duplicates, delays up to {w.max_delay} ticks",
                heal_at,
                calm,
            )
        elif kind in ("crash", "crash_sync"):
            if not live:
                return
            n = lead.id if lead is not None and rng.random() < 0.3 else rng.choice(live)
            sn = self.nodes[n]
            self.stats.faults += 1
            if kind == "crash":
                self._begin_step()
                sn.crash(CrashPoint.NONE)
            else:
                sn.crash_armed = True
                self.emit("fault", f"node {n} will crash during its next disk write", (n,))
        else:
            self._recover()

    def _add_fault(
        self, text: str, heal_at: int, undo: Callable[[], None], nodes: tuple[int, ...] = ()
    ) -> None:
        self.faults.append(_Fault(text, heal_at, undo, nodes))
        self.stats.faults += 1
        self.emit("fault", text, nodes)

    def _recover(self) -> None:
        self.net.recover()
        self.net.weather = _copy(self.profile.base_weather) if self.chaos else Weather()
        if self.faults:
            self.emit("heal", "network recovered: every partition healed")
        self.faults.clear()
        self._scheduled.clear()

    # -- calm ----------------------------------------------------------------------------------
    def run_calm(self) -> None:
        """Heal everything, bring every member back, and demand progress within bounds."""
        self.chaos = False
        self._recover()
        self.emit("phase", "calm: network healed, every member restarting")
        for sn in self.nodes.values():
            sn.crash_armed = False
            if sn.removed:
                continue
            sn.shutdown_at = None
            if sn.node is None:
                sn.restart_at = self.now
        leader_bound, commit_bound = liveness_bounds(self.profile.raft)
        et = self.profile.raft.election_tick
        start = self.now
        elected_at = -1
        self._probe = probe = _Probe()
        while True:
            self.tick()
            lead = self._leader()
            if elected_at < 0:
                if lead is not None:
                    elected_at = self.now
                    self.stats.leader_ticks = elected_at - start
                elif self.now - start > leader_bound:
                    raise LivenessViolation(
                        "liveness",
                        f"no leader within {leader_bound} ticks ({leader_bound // et} election "
                        f"timeouts) of the calm phase; live: {self._describe_nodes()}",
                        self.steps,
                        self.now,
                    )
            if (
                lead is not None
                and lead.node is not None
                and (lead.id != probe.leader or lead.node.term != probe.term)
            ):
                self._propose_probe(lead, probe)
            if probe.first_at >= 0:
                lagging = self._probe_lagging(probe)
                if not lagging:
                    self.stats.commit_ticks = self.now - probe.first_at
                    self.emit(
                        "live",
                        f"calm: a leader after {_ticks(self.stats.leader_ticks)}, a fresh "
                        f"proposal on every member {_ticks(self.stats.commit_ticks)} later "
                        f"(bounds {leader_bound} and {commit_bound})",
                    )
                    break
                if self.now - probe.first_at > commit_bound:
                    raise LivenessViolation(
                        "liveness",
                        f"fresh proposal not applied on nodes {_ids(lagging)} within "
                        f"{commit_bound} ticks ({commit_bound // et} election timeouts); "
                        f"{self._describe_nodes()}",
                        self.steps,
                        self.now,
                    )
        self.checker.final_check(list(self.nodes.values()))

    def _propose_probe(self, lead: SimNode, probe: _Probe) -> None:
        assert lead.node is not None
        value = b"probe%d" % len(probe.values)
        self._begin_step()
        try:
            lead.node.propose(value)
        except (NotLeaderError, ProposalDroppedError):
            self._finish(lead)
            return
        probe.values.append(value)
        probe.leader, probe.term = lead.id, lead.node.term
        if probe.first_at < 0:
            probe.first_at = self.now
        self._finish(lead)

    def _probe_lagging(self, probe: _Probe) -> list[int]:
        vi = self.checker.value_index
        at = min((vi[v] for v in probe.values if v in vi), default=0)
        members = self.members()
        if not at:
            return [sn.id for sn in members]
        return [sn.id for sn in members if sn.node is None or sn.machine.index < at]

    def _describe_nodes(self) -> str:
        parts = []
        for sn in self.nodes.values():
            if sn.node is None:
                parts.append(f"{sn.id}:down" + (" (removed)" if sn.removed else ""))
            else:
                r = sn.node.raft
                parts.append(
                    f"{sn.id}:{r.role.name.lower()} t{r.term} lead={r.lead} "
                    f"commit={r.log.committed} last={r.log.last_index()}"
                )
        return "; ".join(parts) + f"; config {_ids(self.conf.voters)}+{_ids(self.conf.learners)}"

    def _finish_stats(self) -> None:
        s = self.stats
        c = self.checker
        s.steps = self.steps
        s.ticks = self.now
        s.elections = len(c.leaders)
        s.committed = c.committed
        s.values_committed = len(c.value_index)
        s.snapshots_installed = sum(sn.snapshots_installed for sn in self.nodes.values())
        s.checks = c.checks


def _ticks(n: int) -> str:
    return f"{n} tick" if n == 1 else f"{n} ticks"


def _copy(w: Weather) -> Weather:
    return Weather(drop=w.drop, dup=w.dup, max_delay=w.max_delay)


def _ids(ids: frozenset[int] | set[int] | list[int]) -> str:
    return "{" + ",".join(str(i) for i in sorted(ids)) + "}"


def _cc_text(cc: ConfChange) -> str:
    verb = {
        ConfChangeType.ADD_LEARNER: "add learner",
        ConfChangeType.ADD_VOTER: "promote to voter",
        ConfChangeType.REMOVE_NODE: "remove",
    }[cc.type]
    return f"{verb} {cc.node_id}"
