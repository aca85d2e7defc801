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

Most worlds start with every node a voter; some (Profile.voters) with one voter and the rest
learners, a broker partition of replication factor 1 whose replica is being moved. In some
(World.readd_removed) the operator adds removed nodes back with an empty log, as a broker's
replica moved away and back (raft/core.py, "Coming back after a removal").

A run has two phases. Chaos: the faults above. Calm: every partition healed, every crashed member
restarted, no loss; then a leader must emerge and a fresh proposal commit on every member within
bounds derived from the election timeout (LEADER_BOUND_ETS and COMMIT_BOUND_ETS below).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from raft import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    Fence,
    MemoryStorage,
    Message,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    RawNode,
    Ready,
    Role,
    Snapshot,
)
from tests.sim import actors
from tests.sim.checker import Checker, LivenessViolation
from tests.sim.host import (
    CRASH_POINT_NAMES,
    MAX_READIES_PER_CYCLE,
    CrashPoint,
    RaftParams,
    SimNode,
)
from tests.sim.nemesis import Nemesis, Rejoin, fmt_ids
from tests.sim.network import Network
from tests.sim.profile import Profile, SimOptions

__all__ = ["Event", "Observer", "Profile", "SeedStats", "SimOptions", "World", "liveness_bounds"]

LEADER_BOUND_ETS = 10
"""Calm phase, PreVote on (production): a leader within this many election timeouts. Once
healed, every node times out within two election timeouts of its last reset; a node with a stale
log fails its PreVote without raising the term, so it delays nobody, and a round is lost only to
a split vote between up-to-date nodes that time out in the same tick (timeouts take only
election_tick distinct values, so with six or seven nodes that is not rare). Ten election
timeouts is five full rounds; 12,000 seeds measured at most 4.2. A liveness bug (a node that
never campaigns, a quiesced group nobody wakes) misses any bound."""
COMMIT_BOUND_ETS = 6
"""Calm phase, PreVote on: from the first attempt of the fresh proposal until every member has
committed it (retries to a new leader included). Replication is immediate once healed; the
slack is for a follower behind the log start (a snapshot, resent two election timeouts after a
lost one) and one re-election; 12,000 seeds measured at most 2.2."""
NO_PRE_VOTE_BOUND_ETS = 30
"""Both bounds when PreVote is off (a core option, tested here for safety). Then a node with a
stale log that times out first raises the term and deposes whoever leads; it wins that race
with odds up to one half per round, so liveness is only probabilistic: 30 election timeouts
(about 15 rounds; 12,000 seeds measured at most 12.8)."""


READD_ODDS = 0.5
"""Share of worlds with membership changes whose operator adds removed nodes back."""
READD_SALT = 0x5EADD
READD_MEMBER_RATE = 0.08


def liveness_bounds(raft: RaftParams) -> tuple[int, int]:
    """(leader, commit) bounds in ticks for a world with these Raft parameters."""
    et = raft.election_tick
    if raft.pre_vote:
        return LEADER_BOUND_ETS * et, COMMIT_BOUND_ETS * et
    return NO_PRE_VOTE_BOUND_ETS * et, NO_PRE_VOTE_BOUND_ETS * et


MAX_DELIVERIES_PER_TICK = 50_000
"""A guard against a livelock in delivery; a healthy run never comes near it."""


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
    quiesces: int = 0
    wakeups: int = 0
    proposals_syncing: int = 0
    pipelined: int = 0
    """Readies a host took while an earlier write was still in flight (pipeline)."""
    stale_writes: int = 0
    """Writes that finished after a newer leader had replaced their entries (pipeline)."""
    applied_ahead: int = 0
    """Readies whose committed entries were applied before their write finished (apply ahead)."""
    leader_ticks: int = 0
    """Calm phase: ticks until a leader was elected."""
    commit_ticks: int = 0
    """Calm phase: ticks from the fresh proposal until every member had committed it."""
    wipes: int = 0
    """Disks wiped (a node back as a new incarnation)."""
    rejoined: int = 0
    """Wiped nodes whose old incarnation was replaced and that were promoted back to voter."""
    readds: int = 0
    """Removed nodes added back with an empty log and their old replica's promises."""


@dataclass(slots=True)
class _Probe:
    """The calm phase's fresh proposal: one value per attempt (a retry is a new value, as a
    client's would be), done when any attempt is committed and every member's commit index has
    reached it. (Commit, not apply: how fast a host applies is the host's business.)"""

    attempts: list[tuple[int, int]] = field(default_factory=list)  # (index, term) proposed
    leader: int = 0
    term: int = 0
    first_at: int = -1


class World:
    """One seeded world: its nodes, network, nemesis, clients and operator, and the checker."""

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
        self.net.weather = self.profile.base_weather.copy()
        self.now = 0
        self.steps = 0
        self.chaos = True
        self.stats = SeedStats(
            seed=seed,
            nodes=self.profile.nodes,
            election_tick=self.profile.raft.election_tick,
            pre_vote=self.profile.raft.pre_vote,
        )
        self.nodes: dict[int, SimNode] = {}
        n = self.profile.nodes
        v = self.profile.voters or n
        self.initial_conf = ConfState(
            voters=frozenset(range(1, v + 1)), learners=frozenset(range(v + 1, n + 1))
        )
        self.conf = self.initial_conf  # the latest configuration applied anywhere
        self.conf_index = 0
        self.next_id = n + 1
        self.max_id = n + self.profile.spares
        self.next_value = 0
        self._applied_conf_indexes: set[int] = set()
        self._reported_commit = 0
        self._probe: _Probe | None = None
        self.rejoins: dict[int, Rejoin] = {}
        """Wiped nodes whose old incarnation is being replaced (actors.replace_wiped)."""
        self._rejoin_removals: set[tuple[int, int]] = set()
        """(node, index) of each entry that removed a wiped node's old incarnation: a node
        replaying its log applies them again, and they stop nobody."""
        self._fence_mail: list[tuple[int, int, int, Fence]] = []
        """(tick, node, incarnation, fence): the controller telling a wiped node it was
        added back, delivered late (it is mail, not a Raft message)."""
        self.readd_removed = (
            not self.profile.voters
            and self.profile.member_rate > 0
            and random.Random(seed ^ READD_SALT).random() < READD_ODDS
        )
        """Whether the operator adds removed nodes back, as a broker's replica moves away and
        back do (SimNode.readd). Drawn apart from `rng`, so that other worlds stay as they were.
        Such worlds change their membership more often (a node must be removed, stopped and
        added back while the others still vote around it) and wipe no disk: that churn would
        break the nemesis's rule of three voters besides a wiped one (seed 2386: two wiped
        voters of three, no leader for good)."""
        if self.readd_removed:
            self.profile = dataclasses.replace(
                self.profile, member_rate=READD_MEMBER_RATE, wipe_rate=0.0
            )
        self._readded_at: dict[int, int] = {}
        """node -> the index of the change that last added it back (a removal below it is
        an older one)."""
        self.nemesis = Nemesis(self)
        self._durability_checked = 0
        for i in range(1, n + 1):
            self.add_node(i)

    # -- plumbing ------------------------------------------------------------------------------
    def emit(self, kind: str, text: str, nodes: tuple[int, ...] = ()) -> None:
        if self.observer is not None:
            self.observer(Event(self.now, self.steps, kind, text, nodes))

    def add_node(self, node_id: int) -> SimNode:
        # A node joining later boots with the group's initial membership, like the founders: the
        # log it replays (or the snapshot it gets) brings it up to date.
        sn = SimNode(
            node_id, MemoryStorage(self.initial_conf), self.profile.raft, self, self.profile.host
        )
        self.nodes[node_id] = sn
        sn.start(self.rng.getrandbits(64))
        return sn

    def begin_step(self) -> None:
        self.steps += 1
        self.checker.step = self.steps

    def finish(self, sn: SimNode, defer: bool = False) -> None:
        """Run sn's host loop (unless deferred) and check what the step changed."""
        if sn.node is not None and not defer:
            p = self.profile.one_ready
            sn.cycle(self._decide, 1 if p and self.rng.random() < p else MAX_READIES_PER_CYCLE)
            sn.sync_fence()
        c = self.checker
        if sn.node is not None:
            c.observe(sn)
        if c.committed != self._durability_checked:
            self._durability_checked = c.committed
            c.check_durability(self.nodes.values())

    def _elected(self, sn: SimNode) -> None:
        assert sn.node is not None
        self.emit("elect", f"node {sn.id} leads term {sn.node.term}", (sn.id,))
        p = self.profile.propose_syncing
        if p and self.rng.random() < p:
            # A client that found no leader retries as soon as its metadata names one: its
            # batch reaches the new leader while that leader's first write is in flight.
            sn.client_waiting = True
        if self.chaos and self.rng.random() < self.profile.depose_rate:
            self.nemesis.depose(sn)

    def _decide(self, sn: SimNode, rd: Ready) -> CrashPoint:
        """The crash decider the host loop asks before each Ready (see host.SimNode.cycle)."""
        # Check the step's outcome before any of it leaves the node or reaches its disk (a
        # crash may come next), and record new commits before anything applies them.
        self.checker.observe(sn)
        return self.nemesis.crash_point(sn, rd)

    def leaders(self) -> list[SimNode]:
        return [
            sn for sn in self.nodes.values() if sn.node is not None and sn.node.role == Role.LEADER
        ]

    def leader(self) -> SimNode | None:
        """The leader of the highest term among the live nodes that think they lead."""
        best: SimNode | None = None
        best_term = -1
        for sn in self.leaders():
            assert sn.node is not None
            if sn.node.term > best_term:
                best, best_term = sn, sn.node.term
        return best

    def live(self) -> list[SimNode]:
        return [sn for sn in self.nodes.values() if sn.node is not None]

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
        if rd.entries or rd.committed_entries:
            sn.busy_tick = self.now
        self.checker.persisted(sn, rd)

    def syncing(self, sn: SimNode) -> None:
        if sn.client_waiting:
            # A client batch that arrived while the leader waited for its fsync.
            sn.client_waiting = False
            self.stats.proposals_syncing += 1
            actors.propose_to(self, sn)

    def writes_done(self, sn: SimNode, queued: int) -> int:
        # A slow disk is one more fault: during chaos it finishes all, a few or none of the
        # writes in flight (the node's own generator draws, so the world's draws stay put);
        # once calm it keeps up, as a real one does within a tick.
        if not self.chaos:
            return queued
        if sn.disk_stalled:
            return 0
        if sn.disk.random() < 0.5:
            return queued
        return sn.disk.randint(0, queued)

    def applying(self, sn: SimNode, e: Entry) -> None:
        self.checker.applying(sn, e)

    def applied_conf_change(self, sn: SimNode, e: Entry, cc: ConfChange, cs: ConfState) -> None:
        if e.index not in self._applied_conf_indexes:
            self._applied_conf_indexes.add(e.index)
            self.stats.conf_changes += 1
            self.emit(
                "member",
                f"{actors.cc_text(cc)} committed at index {e.index}: "
                + actors.describe(cs.voters, cs.learners),
                (cc.node_id,),
            )
        if e.index > self.conf_index:
            self.conf_index = e.index
            self.conf = cs
        if self._rejoin_step(sn, e, cc):
            return
        if cc.type == ConfChangeType.REMOVE_NODE and e.index < self._readded_at.get(cc.node_id, 0):
            return  # a removal before the node was added back, applied again by a replay
        if cc.type == ConfChangeType.REMOVE_NODE:
            gone = self.nodes.get(cc.node_id)
            if gone is not None and not gone.removed:
                # The operator stops a removed node a little later (it may act until then).
                gone.removed = True
                gone.restart_at = None
                gone.shutdown_at = self.now + self.rng.randint(0, self.profile.raft.election_tick)

    def _rejoin_step(self, sn: SimNode, e: Entry, cc: ConfChange) -> bool:
        """Advance the replacement of a wiped node's old incarnation on a change applied by sn;
        True when the change was that replacement's removal (the node is not stopped)."""
        nid = cc.node_id
        if cc.type == ConfChangeType.REMOVE_NODE and (nid, e.index) in self._rejoin_removals:
            return True  # the replacement's removal, applied by another node
        rj = self.rejoins.get(nid)
        if rj is None:
            return False
        if cc.type == ConfChangeType.REMOVE_NODE:
            if rj.stage == "remove":
                rj.stage, rj.removed_at = "add", e.index
                self._rejoin_removals.add((nid, e.index))
                return True
            del self.rejoins[nid]  # removed again, for good this time
            return False
        return False

    def readd(self, sn: SimNode, voters: frozenset[int], index: int) -> None:
        """The operator adds a removed node back (actors.change_membership proposed it as a
        learner, at `index`): its host makes a new, empty replica from what the old one
        promised."""
        sn.readd(ConfState(voters=voters, learners=frozenset({sn.id})))
        self._readded_at[sn.id] = index
        sn.restart_at = self.now
        self.stats.readds += 1
        f = sn.fence
        floor = f"{f.floor_index}@{f.floor_term}" if f is not None else "none"
        self.emit(
            "restart",
            f"node {sn.id} added back: empty log, term {sn.synced.term} and vote "
            f"{sn.synced.vote} kept, voting past {floor}",
            (sn.id,),
        )

    def tell_fence(self, nid: int, fence: Fence) -> None:
        """The controller tells a wiped node it was added back: late, as mail (not Raft)."""
        delay = self.rng.randint(0, self.profile.raft.election_tick)
        self._fence_mail.append((self.now + delay, nid, self.nodes[nid].incarnation, fence))
        self.emit(
            "member",
            f"node {nid} added back (applied up to {fence.index}): it may speak from term "
            f"{fence.min_term}",
            (nid,),
        )

    def _deliver_fences(self) -> None:
        due = [f for f in self._fence_mail if f[0] <= self.now]
        if not due:
            return
        self._fence_mail = [f for f in self._fence_mail if f[0] > self.now]
        for _, nid, incarnation, fence in due:
            sn = self.nodes[nid]
            if sn.incarnation != incarnation or sn.fence is None:
                continue
            sn.fence = fence
            if sn.node is not None:
                self.begin_step()
                sn.node.set_fence(fence)
                self.finish(sn)

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
        self.finish_stats()
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
        quiesce_after = self.profile.host.quiesce_after
        if quiesce_after:
            self._transport()
        order = [sn for sn in self.nodes.values() if sn.node is not None]
        self.rng.shuffle(order)
        for sn in order:
            node = sn.node
            if node is None:
                continue  # stopped earlier in this tick
            self.begin_step()
            if quiesce_after and self._quiet(sn, node, quiesce_after):
                self.finish(sn)
                continue
            node.tick()
            self.finish(sn)
        self.checker.check_durability(self.nodes.values())
        self._report_commit()
        if self.on_tick is not None:
            self.on_tick(self)

    # -- quiescence (host side, as node/driver.py does it) --------------------------------------
    def _quiet(self, sn: SimNode, node: RawNode, quiesce_after: int) -> bool:
        """Whether sn is (now) quiesced, and so is not ticked: an idle leader is asked to."""
        if node.quiesced:
            return True
        if node.role != Role.LEADER or self.now - sn.busy_tick < quiesce_after:
            return False
        if node.maybe_quiesce(frozenset(sn.unreachable)):
            self.stats.quiesces += 1
            return True
        return False

    def _transport(self) -> None:
        """Each host's transport notices peers it lost (down, or a link cut either way) and
        peers that came back (a restart in between counts as both), and tells the host."""
        net = self.net
        for sn in self.live():
            for peer in self.nodes.values():
                pid = peer.id
                if pid == sn.id:
                    continue
                reach = (
                    peer.node is not None
                    and not net.is_cut(sn.id, pid)
                    and not net.is_cut(pid, sn.id)
                )
                if reach:
                    seen = sn.peer_lives.get(pid)
                    if seen == peer.life and pid not in sn.unreachable:
                        continue
                    if seen is not None and seen != peer.life and pid not in sn.unreachable:
                        self._peer_changed(sn, pid, alive=False)
                    sn.peer_lives[pid] = peer.life
                    self._peer_changed(sn, pid, alive=True)
                elif pid not in sn.unreachable:
                    sn.peer_lives.pop(pid, None)
                    self._peer_changed(sn, pid, alive=False)

    def _peer_changed(self, sn: SimNode, pid: int, alive: bool) -> None:
        """node/driver.py's peer_changed: wake the quiesced groups that must act. On a loss, a
        follower of the lost leader (it must elect anew) and a leader of the lost member (the
        ISR must shrink); on a return, a leader of the member (it must catch up)."""
        if alive:
            sn.unreachable.discard(pid)
        else:
            sn.unreachable.add(pid)
        node = sn.node
        if node is None or not node.quiesced:
            return
        cs = sn.conf_state
        if pid not in cs.voters and pid not in cs.learners:
            return
        if node.leader == sn.id or (not alive and node.leader == pid):
            self.begin_step()
            node.unquiesce()
            self.stats.wakeups += 1
            self.finish(sn)

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
                    self.begin_step()
                    self.finish(sn)
                continue
            budget -= 1
            m, life, ok = got
            dst = self.nodes.get(m.to)
            if not ok or dst is None or dst.node is None:
                self._undeliverable(m, life)
                continue
            self.stats.messages += 1
            self.begin_step()
            dst.node.step(m)
            dst.dirty = True
            self.finish(dst, defer=bool(defer_p) and rng.random() < defer_p)
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
            self.begin_step()
            sender.node.report_unreachable(m.to)
            self.finish(sender)

    def _report_snapshot(self, m: Message, life: int, failed: bool) -> None:
        sender = self.nodes.get(m.frm)
        if sender is None or sender.node is None or sender.life != life:
            return
        if self.rng.random() < 0.7:  # sometimes the transport does not know
            self.begin_step()
            sender.node.report_snapshot(m.to, failed)
            self.finish(sender)

    def _report_commit(self) -> None:
        c = self.checker.committed
        if c > self._reported_commit:
            lead = self.leader()
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
                    self.begin_step()
                    sn.node = None
                    sn.dirty = False
                    self.emit("crash", f"node {sn.id} shut down: removed from the group", (sn.id,))
            elif sn.restart_at is not None and sn.restart_at <= self.now and not sn.removed:
                self.begin_step()
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
                self.finish(sn)
        self._deliver_fences()
        if self.rejoins:
            actors.replace_wiped(self)
        if self.chaos:
            self.nemesis.tick()
            if p.transfer_rate and rng.random() < p.transfer_rate:
                actors.transfer(self)
            if p.member_rate and rng.random() < p.member_rate:
                actors.change_membership(self)
            if p.campaign_rate and rng.random() < p.campaign_rate:
                actors.campaign_now(self)
        for _ in range(p.proposals_per_tick):
            if rng.random() < p.propose_rate:
                actors.propose(self)
        if p.compact_rate:
            for sn in self.nodes.values():
                if sn.node is not None and rng.random() < p.compact_rate:
                    self.begin_step()
                    if sn.take_snapshot(keep=rng.choice([0, 0, 1, 5, 20])):
                        self.stats.snapshots_taken += 1
                    self.finish(sn)

    # -- calm ----------------------------------------------------------------------------------
    def run_calm(self) -> None:
        """Heal everything, bring every member back, and demand progress within bounds."""
        self.chaos = False
        self.nemesis.recover()
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
        self._settle_rejoins(leader_bound + 2 * commit_bound)
        start = self.now
        elected_at = -1
        self._probe = probe = _Probe()
        while True:
            self.tick()
            lead = self.leader()
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
                        f"proposal committed on every member {_ticks(self.stats.commit_ticks)} later "
                        f"(bounds {leader_bound} and {commit_bound})",
                    )
                    break
                if self.now - probe.first_at > commit_bound:
                    raise LivenessViolation(
                        "liveness",
                        f"fresh proposal not committed on nodes {fmt_ids(lagging)} within "
                        f"{commit_bound} ticks ({commit_bound // et} election timeouts); "
                        f"{self._describe_nodes()}",
                        self.steps,
                        self.now,
                    )
        self.checker.final_check(list(self.nodes.values()))

    def _settle_rejoins(self, bound: int) -> None:
        """Calm: every wiped node's old incarnation is replaced and the node told so, before
        the liveness probe (a node fenced silent commits nothing, by design)."""
        start = self.now
        while any(rj.stage != "promote" for rj in self.rejoins.values()) or self._fence_mail:
            if self.now - start > bound:
                raise LivenessViolation(
                    "liveness",
                    f"wiped nodes {fmt_ids(self.rejoins)} not added back within {bound} ticks; "
                    f"{self._describe_nodes()}",
                    self.steps,
                    self.now,
                )
            self.tick()

    def _propose_probe(self, lead: SimNode, probe: _Probe) -> None:
        assert lead.node is not None
        value = b"probe%d" % len(probe.attempts)
        self.begin_step()
        try:
            index = lead.node.propose(value)
        except (NotLeaderError, ProposalDroppedError):
            self.finish(lead)
            return
        probe.attempts.append((index, lead.node.term))
        probe.leader, probe.term = lead.id, lead.node.term
        if probe.first_at < 0:
            probe.first_at = self.now
        self.finish(lead)

    def _probe_lagging(self, probe: _Probe) -> list[int]:
        c = self.checker
        at = min(
            (i for i, t in probe.attempts if i <= c.committed and c.commit_term[i] == t),
            default=0,
        )
        members = self.members()
        if not at:
            return [sn.id for sn in members]
        return [sn.id for sn in members if sn.node is None or sn.node.raft.log.committed < at]

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
        return (
            "; ".join(parts) + f"; config {fmt_ids(self.conf.voters)}+{fmt_ids(self.conf.learners)}"
        )

    def finish_stats(self) -> None:
        s = self.stats
        c = self.checker
        s.steps = self.steps
        s.ticks = self.now
        s.elections = len(c.leaders)
        s.committed = c.committed
        s.values_committed = len(c.value_index)
        s.snapshots_installed = sum(sn.snapshots_installed for sn in self.nodes.values())
        s.pipelined = sum(sn.pipelined for sn in self.nodes.values())
        s.stale_writes = sum(sn.stale_writes for sn in self.nodes.values())
        s.applied_ahead = sum(sn.applied_ahead for sn in self.nodes.values())
        s.checks = c.checks


def _ticks(n: int) -> str:
    return f"{n} tick" if n == 1 else f"{n} ticks"
