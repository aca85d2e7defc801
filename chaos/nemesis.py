"""The nemesis: a seeded schedule of faults, and the task that injects it while the workload runs.

Plan. `plan_faults(kinds, duration_s, seed)` draws the whole schedule up front from one
`random.Random(seed)`: which fault, when, for how long, against the leader of which partition,
and its parameters. The same seed and arguments give the same plan, byte for byte (a test holds
it to that), so a failing run can be replayed. What the plan cannot fix in advance is which node
leads partition p at that moment: the nemesis asks the cluster just before each fault.

Fault kinds (the CLI's --faults names on the left):
  kill       kill -9 the leader of partition p; start it again after `hold_s`
  pause      SIGSTOP / docker pause that leader; resume it after `hold_s`
  partition  one of:
               isolate   the leader alone, both directions
               split     a minority (size (n-1)//2) holding the leader, both directions
               one_way   the leader's messages stop reaching every other node; it still hears
               ring      Jepsen's majorities ring (chaos/network.py)
  power      power loss (local target, nodes on chaos/lazyfs.py disks): one of
               power      the leader of partition p loses power: killed, and every write it
                          had not fsynced is gone; it starts again after `hold_s`
               power_all  every node at once, the same way; all start again after `hold_s`
  latency    latency_ms +- jitter_ms on every node-to-node link
  bandwidth  every node-to-node link limited to kbps KB/s
  answers    every produce answer is lost on its way back to the producers (the batch is
             written; the producer sees a broken connection): chaos/answers.py
  move       move partition p onto other replicas through the admin API (one replica swapped
             for a node that holds none of p, at a drawn throttle); after `hold_s` the heal step
             moves it back (`back`) if the move has finished, else leaves it: chaos/moves.py.
Each fault is healed (restart, resume, heal) after its hold time, before the next one starts;
except moves, which have a schedule of their own, drawn from a second random stream of the same
seed, and run concurrently with the other faults: a move is asked for while a node may be down
or cut off, and a kill or a partition lands in the middle of a move (the nemesis's settle check
then waits for the voters to be in sync, not for the move to finish). With move among the
kinds, the schedule of the other kinds is the one they would have without it.

Execution. Before each fault the nemesis waits (bounded) until the cluster is settled (every
partition led, every replica in sync), so each fault starts from a healthy cluster and its
unavailability is its own; then it looks up the leaders, injects, holds, heals, and records the
fault window in the History as (start, end, kind). Faults that would end past the run's end
are skipped.

When a window starts matters, because unavailability is measured from it and only sends invoked
after it count. It starts when the fault took effect: the moment of the signal for a local kill
or pause, the exit time docker recorded for a `docker kill`, otherwise the moment the injecting
call returned (the fault is certainly in effect then; a cut of six links or a `docker pause`
takes effect somewhere during the call, which `inject_ms` records, so unavailability measured
from the return errs short by at most that). It ends when the healing call returned.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos.answers import AnswerDropper
from chaos.faults import Faults
from chaos.history import History
from chaos.moves import MoveRecord, ReplicaMover
from chaos.targets import TargetError

__all__ = [
    "FAULT_KINDS",
    "PARTITION_KINDS",
    "POWER_KINDS",
    "FaultEvent",
    "Nemesis",
    "PlannedFault",
    "parse_fault_kinds",
    "plan_faults",
]

log = logging.getLogger("liferaft.chaos")

FAULT_KINDS = (
    "kill",
    "pause",
    "partition",
    "power",
    "latency",
    "bandwidth",
    "answers",
    "move",
)
PARTITION_KINDS = ("isolate", "split", "one_way", "ring")
POWER_KINDS = ("power", "power_all")
NODE_KINDS = ("kill", "pause", "isolate", "split", "one_way", "power")
"""Kinds aimed at the leader of one partition (the others hit every link)."""

LATENCY_MS = (20, 50, 100, 150)
BANDWIDTH_KBPS = (20, 100, 500)
MOVE_THROTTLE_BYTES_S = (0, 200_000, 1_000_000)
"""A move's throttle (0: none): a slow one is still catching up when the next fault lands."""


def parse_fault_kinds(text: str) -> tuple[str, ...]:
    """ "kill,pause,partition" -> ("kill", "pause", "partition"), checked."""
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown or not kinds:
        raise ValueError(
            f"unknown fault kind(s) {unknown}: choose from {', '.join(FAULT_KINDS)}"
            if unknown
            else "no fault kinds given"
        )
    return kinds


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedFault:
    at_s: float
    """Earliest start, in seconds after the run began."""
    kind: str
    """kill, pause, isolate, split, one_way, ring, power, power_all, latency or bandwidth."""
    hold_s: float
    partition: int = 0
    """The fault is aimed at this partition's leader (node kinds)."""
    latency_ms: int = 0
    jitter_ms: int = 0
    kbps: int = 0
    pick: int = 0
    """move: which replica is replaced and by which node (chaos.moves.move_target)."""
    throttle_bytes_s: int = 0
    back: bool = False
    """move: the heal step moves the partition back if the move has finished."""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v or k in ("at_s", "kind", "hold_s")}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PlannedFault:
        return cls(**d)

    def describe(self) -> str:
        if self.kind == "latency":
            return f"latency {self.latency_ms}+-{self.jitter_ms} ms for {self.hold_s:.1f}s"
        if self.kind == "bandwidth":
            return f"bandwidth {self.kbps} KB/s for {self.hold_s:.1f}s"
        if self.kind == "ring":
            return f"ring for {self.hold_s:.1f}s"
        if self.kind == "power_all":
            return f"power loss of every node for {self.hold_s:.1f}s"
        if self.kind == "answers":
            return f"lose every produce answer for {self.hold_s:.1f}s"
        if self.kind == "move":
            return (
                f"move partition {self.partition} (then {'back' if self.back else 'leave it'}"
                f" after {self.hold_s:.1f}s)"
            )
        return f"{self.kind} the leader of partition {self.partition} for {self.hold_s:.1f}s"


def plan_faults(
    kinds: Sequence[str],
    duration_s: float,
    seed: int,
    *,
    partitions: int = 6,
    first_s: float = 4.0,
    hold_s: tuple[float, float] = (2.0, 5.0),
    quiet_s: tuple[float, float] = (2.0, 4.0),
    tail_s: float = 6.0,
) -> list[PlannedFault]:
    """The fault schedule of a run: faults back to back (hold, then a quiet gap) from
    `first_s` until `tail_s` before the end. Deterministic in its arguments."""
    for k in kinds:
        if k not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {k!r}")
    if not kinds:
        return []
    plan = _plan_sequence(
        [k for k in kinds if k != "move"],
        duration_s,
        seed,
        partitions=partitions,
        first_s=first_s,
        hold_s=hold_s,
        quiet_s=quiet_s,
        tail_s=tail_s,
    )
    if "move" in kinds:
        moves = _plan_moves(
            duration_s, seed, partitions=partitions, first_s=first_s, hold_s=hold_s, tail_s=tail_s
        )
        plan = sorted(plan + moves, key=lambda p: (p.at_s, p.kind == "move"))
    return plan


def _plan_moves(
    duration_s: float,
    seed: int,
    *,
    partitions: int,
    first_s: float,
    hold_s: tuple[float, float],
    tail_s: float,
    gap_s: tuple[float, float] = (3.0, 8.0),
) -> list[PlannedFault]:
    """The move track: a move every few seconds, each held `hold_s` before its heal step, from
    a random stream of its own (the seed's other faults do not shift when move is added)."""
    rng = random.Random(f"move-{seed}")
    plan: list[PlannedFault] = []
    t = first_s + rng.uniform(*gap_s)
    while True:
        hold = round(rng.uniform(*hold_s), 3)
        partition = rng.randrange(partitions)
        pick = rng.randrange(1 << 16)
        throttle = rng.choice(MOVE_THROTTLE_BYTES_S)
        back = rng.random() < 0.5
        if t + hold > duration_s - tail_s:
            return plan
        plan.append(
            PlannedFault(
                at_s=round(t, 3),
                kind="move",
                hold_s=hold,
                partition=partition,
                pick=pick,
                throttle_bytes_s=throttle,
                back=back,
            )
        )
        t += hold + rng.uniform(*gap_s)


def _plan_sequence(
    kinds: Sequence[str],
    duration_s: float,
    seed: int,
    *,
    partitions: int,
    first_s: float,
    hold_s: tuple[float, float],
    quiet_s: tuple[float, float],
    tail_s: float,
) -> list[PlannedFault]:
    """The faults one after the other (every kind but move)."""
    if not kinds:
        return []
    rng = random.Random(seed)
    plan: list[PlannedFault] = []
    t = first_s
    while True:
        kind = rng.choice(list(kinds))
        if kind == "partition":
            kind = rng.choice(PARTITION_KINDS)
        elif kind == "power":  # drawn only for power: the plans of other kinds stay as they were
            kind = rng.choice(POWER_KINDS)
        hold = round(rng.uniform(*hold_s), 3)
        partition = rng.randrange(partitions)
        latency = jitter = kbps = 0
        if kind == "latency":
            latency = rng.choice(LATENCY_MS)
            jitter = latency // rng.choice((2, 4))
        elif kind == "bandwidth":
            kbps = rng.choice(BANDWIDTH_KBPS)
        if t + hold > duration_s - tail_s:
            return plan
        plan.append(
            PlannedFault(
                at_s=round(t, 3),
                kind=kind,
                hold_s=hold,
                partition=partition if kind in NODE_KINDS else 0,
                latency_ms=latency,
                jitter_ms=jitter,
                kbps=kbps,
            )
        )
        t += hold + rng.uniform(*quiet_s)


@dataclass(slots=True, kw_only=True)
class FaultEvent:
    """One fault as it happened."""

    kind: str
    planned: PlannedFault
    nodes: tuple[int, ...] = ()
    """The nodes it was aimed at (the leader, the minority); () for whole-network faults."""
    leaders: dict[int, int] = field(default_factory=dict)
    """partition -> leader just before the fault (0: none)."""
    affected_partitions: tuple[int, ...] = ()
    """Partitions whose leader was among `nodes` (every partition for whole-network faults)."""
    start_ns: int = 0
    end_ns: int = 0
    start_wall: float = 0.0
    """start_ns as a time.time() value, to line the fault up with the nodes' logs."""
    inject_ms: float = 0.0
    """How long the injecting call took (the window starts before it)."""
    heal_ms: float = 0.0
    error: str | None = None
    skipped: str | None = None
    moves: list[MoveRecord] = field(default_factory=list)
    """move: the move it asked for, and the move back if its heal step asked for one."""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["moves"] = [m.to_json() for m in self.moves]
        d["planned"] = self.planned.to_json()
        d["leaders"] = {str(k): v for k, v in self.leaders.items()}
        return d

    def describe(self) -> str:
        if self.kind == "latency":
            return f"latency {self.planned.latency_ms}+-{self.planned.jitter_ms}ms"
        if self.kind == "bandwidth":
            return f"bandwidth {self.planned.kbps}KB/s"
        if self.kind == "move" and self.moves:
            return self.moves[0].describe()
        target = f" node {','.join(map(str, self.nodes))}" if self.nodes else ""
        return f"{self.kind}{target}"


LeaderLookup = Callable[[], Awaitable[Mapping[int, int]]]
"""partition -> leader node id (0 when it has none), from the cluster's metadata."""


class Nemesis:
    """Runs a plan of faults against `faults`, recording windows into `history`."""

    def __init__(
        self,
        faults: Faults,
        history: History,
        plan: Iterable[PlannedFault],
        *,
        leaders: LeaderLookup,
        settled: Callable[[], Awaitable[bool]] | None = None,
        settle_timeout_s: float = 30.0,
        on_event: Callable[[str], None] | None = None,
        answers: AnswerDropper | None = None,
        mover: ReplicaMover | None = None,
    ) -> None:
        self.faults = faults
        self.answers = answers
        self.mover = mover
        self.history = history
        self.plan = list(plan)
        self.leaders = leaders
        self.settled = settled
        self.settle_timeout_s = settle_timeout_s
        self.events: list[FaultEvent] = []
        self._say = on_event or (lambda text: log.info("%s", text))

    async def run(self, started: float, end_s: float | None) -> list[FaultEvent]:
        """Inject the plan; `started` is the run's time.monotonic() origin and `end_s` the
        run's length (None: inject every fault, however late). Returns the events (also kept
        in `self.events`). Moves run on their own track, concurrently (module docstring)."""
        moves = [p for p in self.plan if p.kind == "move"]
        others = [p for p in self.plan if p.kind != "move"]
        if moves:
            await asyncio.gather(
                self._track(others, started, end_s, settle=True),
                self._track(moves, started, end_s, settle=False),
            )
        else:
            await self._track(others, started, end_s, settle=True)
        return self.events

    async def _track(
        self, plan: Sequence[PlannedFault], started: float, end_s: float | None, *, settle: bool
    ) -> None:
        for planned in plan:
            await _sleep_until(started + planned.at_s)
            if settle and self.settled is not None:
                await self._settle()
            now_s = time.monotonic() - started
            event = FaultEvent(kind=planned.kind, planned=planned)
            if end_s is not None and now_s + planned.hold_s > end_s:
                event.skipped = f"would end after the run ({now_s:.1f}s + {planned.hold_s:.1f}s)"
                self.events.append(event)
                continue
            self.events.append(event)  # before it runs: a cancelled run still lists it
            await self._one(planned, event, started)

    async def _settle(self) -> None:
        assert self.settled is not None
        deadline = time.monotonic() + self.settle_timeout_s
        while time.monotonic() < deadline:
            try:
                if await self.settled():
                    return
            except Exception as e:  # the cluster is still recovering: ask again
                log.debug("settle check failed: %r", e)
            await asyncio.sleep(0.25)
        self._say(f"cluster not settled after {self.settle_timeout_s:.0f}s; injecting anyway")

    async def _one(self, planned: PlannedFault, event: FaultEvent, started: float) -> None:
        try:
            leaders = dict(await self.leaders())
        except Exception as e:
            leaders = {}
            log.warning("leader lookup failed: %r", e)
        event.leaders = leaders
        if planned.kind == "move":
            await self._move(planned, event, started)
            return
        nodes = self.faults.node_ids
        leader = leaders.get(planned.partition) or nodes[planned.partition % len(nodes)]
        inject, heal, targets = self._actions(planned, leader)
        event.nodes = targets
        event.affected_partitions = tuple(
            sorted(p for p, n in leaders.items() if n in targets) if targets else sorted(leaders)
        )
        called = self.history.now()
        t0 = time.monotonic()
        try:
            took_effect = await asyncio.to_thread(inject)
        except TargetError as e:
            event.error = f"inject: {e}"
            self._say(f"[{time.monotonic() - started:6.1f}s] {event.describe()} FAILED: {e}")
            await self._recover()
            return
        returned = self.history.now()
        event.inject_ms = (time.monotonic() - t0) * 1000
        start = returned
        if took_effect is not None:  # a wall-clock time: onto the history's clock
            at = int(took_effect * 1e9) + (self.history.now() - time.time_ns())
            start = min(max(at, called), returned)
        self._say(
            f"[{time.monotonic() - started:6.1f}s] {planned.describe()}: {event.describe()}"
            + (f" (leads {list(event.affected_partitions)})" if targets else "")
        )
        try:
            await asyncio.sleep(planned.hold_s)
        finally:
            t1 = time.monotonic()
            try:
                await asyncio.to_thread(heal)
            except TargetError as e:
                event.error = f"heal: {e}"
                await self._recover()
            event.heal_ms = (time.monotonic() - t1) * 1000
            event.start_ns, event.end_ns = start, self.history.now()
            event.start_wall = time.time() - (event.end_ns - start) / 1e9
            self.history.record_fault(planned.kind, event.start_ns, event.end_ns)

    async def _move(self, planned: PlannedFault, event: FaultEvent, started: float) -> None:
        """A move fault: ask for the move, hold, then the heal step (chaos/moves.py). A
        request the cluster refused is the event's error, not a run failure."""
        mover = self.mover
        if mover is None:
            raise ValueError("the 'move' fault needs a ReplicaMover")
        event.affected_partitions = (planned.partition,)
        start = self.history.now()
        record = await mover.start(planned.partition, planned.pick, planned.throttle_bytes_s)
        event.moves.append(record)
        event.nodes = tuple(sorted(set(record.target) ^ set(record.origin)))
        if record.error is not None:
            event.error = f"move: {record.error}"
            self._say(
                f"[{time.monotonic() - started:6.1f}s] {record.describe()} FAILED: {record.error}"
            )
        else:
            self._say(
                f"[{time.monotonic() - started:6.1f}s] {planned.describe()}: {record.describe()}"
            )
        try:
            await asyncio.sleep(planned.hold_s)
            if record.started:
                again = await mover.heal(record, planned.back)
                if again is not None:
                    event.moves.append(again)
                    self._say(
                        f"[{time.monotonic() - started:6.1f}s] "
                        + (
                            f"{again.describe()} FAILED: {again.error}"
                            if again.error
                            else again.describe()
                        )
                    )
        finally:
            event.start_ns, event.end_ns = start, self.history.now()
            event.start_wall = time.time() - (event.end_ns - start) / 1e9
            self.history.record_fault(planned.kind, event.start_ns, event.end_ns)

    async def _recover(self) -> None:
        try:
            await asyncio.to_thread(self.faults.recover)
        except TargetError as e:
            self._say(f"recovery failed: {e}")

    def _actions(
        self, planned: PlannedFault, leader: int
    ) -> tuple[Callable[[], float | None], Callable[[], None], tuple[int, ...]]:
        """(inject, heal, nodes aimed at) for one planned fault. `inject` returns when the
        fault took effect (time.time()) if the target knows, else None."""
        f = self.faults
        kind = planned.kind
        if kind == "kill":
            return (lambda: f.kill(leader)), (lambda: f.restart(leader)), (leader,)
        if kind == "pause":
            return (lambda: f.pause(leader)), (lambda: f.resume(leader)), (leader,)
        if kind == "power":
            return (lambda: f.power([leader])), (lambda: f.restart(leader)), (leader,)
        if kind == "power_all":
            everyone = tuple(f.node_ids)

            def restart_all() -> None:
                for n in everyone:
                    f.restart(n)

            return (lambda: f.power(everyone)), restart_all, everyone
        if kind == "isolate":
            return (lambda: f.isolate(leader)), f.heal, (leader,)
        if kind == "split":
            others = [n for n in f.node_ids if n != leader]
            size = max(1, (len(f.node_ids) - 1) // 2)
            # Deterministic for a given leader: the nodes after it, in id order, fill up.
            others.sort(key=lambda n: (n - leader) % (max(f.node_ids) + 1))
            minority = (leader, *others[: size - 1])
            return (lambda: f.split(minority)), f.heal, tuple(sorted(minority))
        if kind == "one_way":

            def mute() -> None:
                for n in f.node_ids:
                    if n != leader:
                        f.one_way(leader, n)

            return mute, f.heal, (leader,)
        if kind == "ring":
            return f.ring, f.heal, ()
        if kind == "latency":
            return (lambda: f.latency(planned.latency_ms, planned.jitter_ms)), f.heal, ()
        if kind == "answers":
            dropper = self.answers
            if dropper is None:
                raise ValueError("the 'answers' fault needs the workload's AnswerDropper")

            def lose() -> None:
                dropper.start()

            return lose, dropper.stop, ()
        if kind == "bandwidth":
            return (lambda: f.bandwidth(planned.kbps)), f.heal, ()
        raise ValueError(f"unknown fault kind {kind!r}")


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
