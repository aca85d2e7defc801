"""The nemesis (Jepsen's word): every fault the world injects, and when it heals.

Faults come from two sources. At random, as a Poisson process with a rate drawn per seed: cut
links (both ways or one way), isolated nodes, majority/minority splits, bridge and ring
partitions, flaky nodes, lost message types, storms of loss, duplication and delay, crashes, and
an occasional `recover` that heals everything (etcd raft_test.go's verbs). And aimed, where
Raft is delicate: crashes concentrate on Readies that cast a vote or move to a new term, and new
leaders are crashed or cut off before they replicated much (`depose`), and a leader that
sends entries while the write of its term is still in flight dies right after sending. Each fault knows how to
undo itself and when; the network reference-counts cuts, so overlapping faults compose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raft import MessageType, Ready
from tests.sim.host import CrashPoint, SimNode
from tests.sim.network import Weather

if TYPE_CHECKING:
    from tests.sim.world import World

CRASH_POINTS = [
    CrashPoint.BEFORE_SEND,
    CrashPoint.AFTER_SEND,
    CrashPoint.AFTER_PERSIST,
    CrashPoint.AFTER_PERSISTED_SEND,
    CrashPoint.AFTER_APPLY,
]
CRASH_WEIGHTS = [2, 4, 3, 2, 1]
"""Where in the host loop a crash hits; "right after sending" weighs most, as it is where the
ordering contract matters most."""

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

_KINDS = [
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
    "stall",
]
_KIND_WEIGHTS = [3, 2, 3, 3, 2, 2, 2, 1, 2, 2, 2, 1, 2]


@dataclass(slots=True)
class Rejoin:
    """The replacement of a wiped node's old incarnation, as the operator (node/'s controller)
    runs it: remove it, add the id back as a learner, tell the node (move its fence), promote."""

    stage: str = "remove"
    """remove: waiting for the old incarnation's removal to apply; add: for the learner's;
    promote: fence moved, promote once caught up."""
    removed_at: int = 0
    """Index of the entry that removed the old incarnation."""


@dataclass(slots=True)
class Fault:
    text: str
    heal_at: int
    undo: Callable[[], None]
    nodes: tuple[int, ...] = ()


class Nemesis:
    def __init__(self, world: World) -> None:
        self.world = world
        self.faults: list[Fault] = []
        self.scheduled: list[tuple[int, Callable[[], None]]] = []

    # -- the host loop's crashes ---------------------------------------------------------------
    def crash_point(self, sn: SimNode, rd: Ready) -> CrashPoint:
        """Where, if at all, sn crashes in the host loop of this Ready."""
        w = self.world
        if not w.chaos or not rd.must_sync():
            return CrashPoint.NONE
        p = w.profile
        chance = p.crash_sync
        if p.crash_vote and sn.node is not None:
            # A Ready that moves the durable term or vote, or any Ready taken while such a
            # write is still in flight (writes in flight): what the node says then rests on a
            # term its disk does not hold yet.
            durable = sn.storage.hard_state
            r = sn.node.raft
            if r.term != durable.term or r.vote != durable.vote:
                chance = max(chance, p.crash_vote)
                if (
                    any(m.entries for m in rd.messages)
                    and any(q.rd.hard_state and q.rd.hard_state.term == r.term for q in sn.writes)
                    and w.rng.random() < p.crash_vote
                ):
                    # Entries of a term whose write is still in flight leave the node, and it
                    # dies before that write lands: it may lead the term again with other
                    # entries. A correct core never gets here: a leader's term is durable
                    # before it leads (issue 11).
                    return CrashPoint.AFTER_SEND
        if sn.crash_armed or w.rng.random() < chance:
            return w.rng.choices(CRASH_POINTS, CRASH_WEIGHTS)[0]
        return CrashPoint.NONE

    # -- every tick ------------------------------------------------------------------------------
    def tick(self) -> None:
        """Run what is due, heal what expired, maybe inject something new."""
        w = self.world
        now = w.now
        due = [a for a in self.scheduled if a[0] <= now]
        if due:
            self.scheduled = [a for a in self.scheduled if a[0] > now]
            for _, action in due:
                action()
        for f in [f for f in self.faults if f.heal_at <= now]:
            self.faults.remove(f)
            f.undo()
            w.emit("heal", f"healed: {f.text}", f.nodes)
        p = w.profile
        rng = w.rng
        if rng.random() < p.fault_rate:
            self.inject()
        if p.wipe_rate and rng.random() < p.wipe_rate:
            self.wipe()
        if p.crash_idle and rng.random() < p.crash_idle:
            live = w.live()
            if live:
                w.begin_step()
                rng.choice(live).crash(CrashPoint.NONE)

    def recover(self) -> None:
        """Heal every fault at once (etcd's recover)."""
        w = self.world
        w.net.recover()
        for sn in w.nodes.values():
            sn.disk_stalled = False
        w.net.weather = w.profile.base_weather.copy() if w.chaos else Weather()
        if self.faults:
            w.emit("heal", "network recovered: every partition healed")
        self.faults.clear()
        self.scheduled.clear()

    def wipe(self) -> None:
        """A voter's disk is lost: it stops (if it runs), comes back a little later with an
        empty data directory as a new incarnation, fenced, and the operator replaces its old
        incarnation (actors.replace_wiped). One wipe at a time, and only while the group keeps
        three voters besides the wiped one's replacement."""
        w = self.world
        if w.rejoins or len(w.conf.voters) < 3:
            return
        voters = sorted(w.conf.voters)
        pool = [i for i in voters if i in w.nodes and not w.nodes[i].removed]
        if len(pool) - 1 <= len(voters) // 2:
            # The others could not elect anyone while it is silent: that is a lost quorum,
            # not a lost disk, and no replacement could run.
            return
        sn = w.nodes[w.rng.choice(pool)]
        w.stats.faults += 1
        w.stats.wipes += 1
        if sn.node is not None:
            w.begin_step()
            sn.crash(CrashPoint.NONE)
        sn.wipe(w.initial_conf)
        sn.restart_at = w.now + w.rng.randint(0, w.profile.restart_ticks)
        w.rejoins[sn.id] = Rejoin()
        w.emit("fault", f"node {sn.id}'s disk is wiped: it will return empty, fenced", (sn.id,))

    # -- random faults -------------------------------------------------------------------------
    def inject(self) -> None:
        w = self.world
        rng = w.rng
        p = w.profile
        net = w.net
        ids = sorted(w.nodes)
        live = [sn.id for sn in w.live()]
        heal_at = w.now + rng.randint(1, p.fault_ticks)
        kind = rng.choices(_KINDS, _KIND_WEIGHTS)[0]
        lead = w.leader()
        if kind == "cut":
            a, b = rng.sample(ids, 2)
            net.cut(a, b)
            self.add(f"link {a} <-> {b} cut", heal_at, lambda: net.uncut(a, b), (a, b))
        elif kind == "oneway":
            a, b = rng.sample(ids, 2)
            net.cut(a, b, both=False)
            self.add(
                f"link {a} -> {b} cut (one way)",
                heal_at,
                lambda: net.uncut(a, b, both=False),
                (a, b),
            )
        elif kind == "isolate":
            n = lead.id if lead is not None and rng.random() < 0.5 else rng.choice(ids)
            self.isolate(n, heal_at - w.now)
        elif kind == "split":
            shuffled = list(ids)
            rng.shuffle(shuffled)
            k = rng.randint(1, max(1, (len(ids) - 1) // 2))
            minority, majority = sorted(shuffled[:k]), sorted(shuffled[k:])
            self._cut_pairs(
                [(a, b) for a in minority for b in majority],
                f"split {fmt_ids(minority)} | {fmt_ids(majority)}",
                heal_at,
                tuple(minority),
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
                text = f"bridge: {fmt_ids(left)} | {order[half]} | {fmt_ids(right)}"
            else:
                reach = (size // 2 + 1) // 2
                for x in range(size):
                    for y in range(x + 1, size):
                        if min(y - x, size - (y - x)) > reach:
                            pairs.append((order[x], order[y]))
                text = "ring of majorities " + "-".join(str(i) for i in order)
            if pairs:
                self._cut_pairs(pairs, text, heal_at, tuple(order))
        elif kind == "flaky":
            n = lead.id if lead is not None and rng.random() < 0.5 else rng.choice(ids)
            self.flaky(n, heal_at - w.now)
        elif kind == "ignore":
            t = rng.choice(_IGNORABLE)
            net.ignore(t)
            self.add(f"all {t.name} messages lost", heal_at, lambda: net.unignore(t))
        elif kind == "storm":
            storm = Weather(
                drop=rng.choice([0.1, 0.3, 0.6]),
                dup=rng.choice([0.0, 0.1, 0.3]),
                max_delay=rng.choice([2, 5, 2 * p.raft.election_tick]),
            )
            net.weather = storm
            base = p.base_weather

            def calm() -> None:
                net.weather = base.copy()

            self.add(
                f"storm: {storm.drop:.0%} loss, {storm.dup:.0%} duplicates, delays up to "
                f"{storm.max_delay} ticks",
                heal_at,
                calm,
            )
        elif kind in ("crash", "crash_sync"):
            if not live:
                return
            n = lead.id if lead is not None and rng.random() < 0.3 else rng.choice(live)
            sn = w.nodes[n]
            w.stats.faults += 1
            if kind == "crash":
                w.begin_step()
                sn.crash(CrashPoint.NONE)
            else:
                sn.crash_armed = True
                w.emit("fault", f"node {n} will crash during its next disk write", (n,))
        elif kind == "stall":
            if not live or not p.host.pipeline:
                return  # a host that writes in step has no writes in flight to hold
            n = lead.id if lead is not None and rng.random() < 0.5 else rng.choice(live)
            sn = w.nodes[n]
            sn.disk_stalled = True

            def unstall() -> None:
                sn.disk_stalled = False

            self.add(f"node {n}'s disk stalls: its writes stay in flight", heal_at, unstall, (n,))
            if rng.random() < 0.5:
                # Cut off for the first half of the stall, it may lose its leadership (or miss
                # a new leader's entries) while its own writes wait: when it hears the new
                # leader, entries it is still writing get replaced.
                self.isolate(n, max(1, (heal_at - w.now) // 2))
        else:
            self.recover()

    # -- aimed at new leaders ------------------------------------------------------------------
    def depose(self, sn: SimNode) -> None:
        """Hit a new leader soon, so that it replicates only part of its log, or nothing, before
        it goes. Short-lived leaders with partial logs are what the election and commit rules
        exist for (Figure 8); a world where leaders live long never tests them."""
        w = self.world
        rng = w.rng
        et = w.profile.raft.election_tick
        n, life = sn.id, sn.life
        how = rng.randrange(6)
        if how == 0:
            # Crash during its next disk write: before, while or after its first appends leave.
            sn.crash_armed = True
            w.stats.faults += 1
            w.emit("fault", f"new leader {n} will crash during its next disk write", (n,))
        elif how == 1:

            def crash() -> None:
                if sn.node is not None and sn.life == life:
                    w.stats.faults += 1
                    w.begin_step()
                    sn.crash(CrashPoint.NONE)

            self.scheduled.append((w.now + rng.randint(1, et // 2), crash))
        elif how == 2:
            # Cut off the moment it wins: whatever it appends stays on its own disk.
            self.isolate(n, rng.randint(1, 2 * et))
        elif how == 3:
            ticks = rng.randint(1, 2 * et)
            self.scheduled.append((w.now + rng.randint(1, et // 2), lambda: self.isolate(n, ticks)))
        elif how == 4:
            self.flaky(n, rng.randint(1, 3 * et))
        else:
            # Cut off from some followers only: a minority gets its entries, or a majority does.
            others = [i for i in sorted(w.nodes) if i != n]
            cut = sorted(rng.sample(others, rng.randint(1, max(1, len(others) - 1))))
            both = rng.random() < 0.5
            net = w.net
            for o in cut:
                net.cut(n, o, both)

            def undo() -> None:
                for o in cut:
                    net.uncut(n, o, both)

            arrow = "<->" if both else "->"
            self.add(
                f"links {n} {arrow} {fmt_ids(cut)} cut", w.now + rng.randint(1, 2 * et), undo, (n,)
            )

    # -- building blocks -----------------------------------------------------------------------
    def add(
        self, text: str, heal_at: int, undo: Callable[[], None], nodes: tuple[int, ...] = ()
    ) -> None:
        self.faults.append(Fault(text, heal_at, undo, nodes))
        self.world.stats.faults += 1
        self.world.emit("fault", text, nodes)

    def isolate(self, n: int, ticks: int) -> None:
        w = self.world
        net = w.net
        others = sorted(w.nodes)
        net.isolate(n, others)
        self.add(f"node {n} isolated", w.now + ticks, lambda: net.unisolate(n, others), (n,))

    def flaky(self, n: int, ticks: int) -> None:
        w = self.world
        loss = w.rng.choice([0.3, 0.5, 0.7])
        net = w.net
        net.flaky(n, loss)
        self.add(
            f"node {n}'s links lose {loss:.0%} of messages",
            w.now + ticks,
            lambda: net.unflaky(n, loss),
            (n,),
        )

    def _cut_pairs(
        self, pairs: list[tuple[int, int]], text: str, heal_at: int, nodes: tuple[int, ...]
    ) -> None:
        net = self.world.net
        for a, b in pairs:
            net.cut(a, b)

        def undo() -> None:
            for a, b in pairs:
                net.uncut(a, b)

        self.add(text, heal_at, undo, nodes)


def fmt_ids(ids: frozenset[int] | set[int] | list[int]) -> str:
    return "{" + ",".join(str(i) for i in sorted(ids)) + "}"
