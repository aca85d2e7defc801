"""Run seeds (one, or many on several cores) and summarise them."""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.sim.checker import LivenessViolation, Violation
from tests.sim.world import (
    COMMIT_BOUND_ETS,
    LEADER_BOUND_ETS,
    NO_PRE_VOTE_BOUND_ETS,
    Observer,
    SeedStats,
    SimOptions,
    World,
)


@dataclass(slots=True)
class SeedResult:
    seed: int
    stats: SeedStats
    error: str | None = None
    kind: str = ""
    """"safety", "liveness" or "exception" (the core, or the simulation, raised)."""
    prop: str = ""
    """The violated property, for violations."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def headline(self) -> str:
        """One short line: the property, or the first line of the error."""
        return self.prop or (self.error or "").splitlines()[0][:100]


def replay_command(seed: int, opts: SimOptions) -> str:
    """The exact command that replays `seed` under `opts`."""
    cmd = f"python -m tests.sim --seed {seed}"
    defaults = SimOptions()
    if opts.nodes is not None:
        cmd += f" --nodes {opts.nodes}"
    if opts.ticks != defaults.ticks:
        cmd += f" --ticks {opts.ticks}"
    if opts.steps is not None:
        cmd += f" --steps {opts.steps}"
    if opts.leader_removes_itself:
        cmd += " --leader-removes-itself"
    return cmd


def run_seed(
    seed: int, opts: SimOptions | None = None, observer: Observer | None = None
) -> SeedResult:
    """Run one seed; never raises for what the run finds (it is in the result)."""
    opts = opts or SimOptions()
    world = World(seed, opts, observer)
    result = SeedResult(seed=seed, stats=world.stats)
    try:
        world.run()
    except Violation as e:
        result.error = str(e)
        result.kind = "liveness" if isinstance(e, LivenessViolation) else "safety"
        result.prop = e.prop
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)
        where = " <- ".join(
            f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in tb[::-1][:6]
        )
        result.error = (
            f"{type(e).__name__} at step {world.steps} (tick {world.now}): {e}\n    at {where}"
        )
        result.kind = "exception"
    world.finish_stats()
    return result


def _run_chunk(args: tuple[list[int], SimOptions]) -> list[SeedResult]:
    seeds, opts = args
    return [run_seed(s, opts) for s in seeds]


def run_many(seeds: list[int], opts: SimOptions, jobs: int) -> Iterator[SeedResult]:
    """Results in seed order, so the first failure reported is the lowest failing seed; seeds
    are spread over `jobs` processes."""
    if jobs <= 1 or len(seeds) < 2:
        for s in seeds:
            yield run_seed(s, opts)
        return
    chunk = max(1, min(25, len(seeds) // (jobs * 8)))
    chunks = [(seeds[i : i + chunk], opts) for i in range(0, len(seeds), chunk)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs) as pool:
        for results in pool.imap(_run_chunk, chunks):
            yield from results


def first_failure(seeds: list[int], opts: SimOptions, jobs: int = 1) -> SeedResult | None:
    """The lowest failing seed, or None if all pass."""
    for r in run_many(seeds, opts, jobs):
        if not r.ok:
            return r
    return None


@dataclass(slots=True)
class Summary:
    seeds: int = 0
    failed: list[SeedResult] = field(default_factory=list)
    steps: int = 0
    ticks: int = 0
    elections: int = 0
    committed: int = 0
    values_committed: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    conf_changes: int = 0
    conf_refused: int = 0
    faults: int = 0
    crashes: int = 0
    messages: int = 0
    checks: int = 0
    pipelined: int = 0
    stale_writes: int = 0
    applied_ahead: int = 0
    wipes: int = 0
    rejoined: int = 0
    readds: int = 0
    max_leader_ets: float = 0.0
    max_commit_ets: float = 0.0
    max_no_pre_vote_ets: float = 0.0
    worst_seeds: list[int] = field(default_factory=lambda: [-1, -1, -1])
    """The seeds behind the three maxima above, to study a slow convergence."""
    elapsed: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def add(self, r: SeedResult) -> None:
        s = r.stats
        self.seeds += 1
        if not r.ok:
            self.failed.append(r)
        self.steps += s.steps
        self.ticks += s.ticks
        self.elections += s.elections
        self.committed += s.committed
        self.values_committed += s.values_committed
        self.snapshots_taken += s.snapshots_taken
        self.snapshots_installed += s.snapshots_installed
        self.conf_changes += s.conf_changes
        self.conf_refused += s.conf_refused
        self.faults += s.faults
        self.crashes += s.crashes
        self.messages += s.messages
        self.pipelined += s.pipelined
        self.stale_writes += s.stale_writes
        self.applied_ahead += s.applied_ahead
        self.wipes += s.wipes
        self.rejoined += s.rejoined
        self.readds += s.readds
        self.checks += s.checks
        if r.ok:
            et = s.election_tick
            if s.pre_vote:
                if s.leader_ticks / et > self.max_leader_ets:
                    self.max_leader_ets, self.worst_seeds[0] = s.leader_ticks / et, r.seed
                if s.commit_ticks / et > self.max_commit_ets:
                    self.max_commit_ets, self.worst_seeds[1] = s.commit_ticks / et, r.seed
            else:
                worst = max(s.leader_ticks, s.commit_ticks) / et
                if worst > self.max_no_pre_vote_ets:
                    self.max_no_pre_vote_ets, self.worst_seeds[2] = worst, r.seed
        self.elapsed = time.perf_counter() - self.started

    def lines(self) -> list[str]:
        rate = self.steps / self.elapsed if self.elapsed else 0.0
        w = self.worst_seeds
        return [
            f"seeds run           {self.seeds} ({len(self.failed)} failed)",
            f"steps               {self.steps:,} over {self.ticks:,} ticks",
            f"elections           {self.elections:,}",
            f"entries committed   {self.committed:,} ({self.values_committed:,} client values)",
            f"snapshots           {self.snapshots_taken:,} taken, {self.snapshots_installed:,} installed",
            f"membership changes  {self.conf_changes:,} applied, {self.conf_refused:,} refused",
            f"faults              {self.faults:,} injected, {self.crashes:,} crashes",
            f"wiped disks         {self.wipes:,} (old incarnation replaced and promoted back: "
            f"{self.rejoined:,}); removed nodes added back {self.readds:,}",
            f"messages delivered  {self.messages:,}",
            f"writes in flight    {self.pipelined:,} Readies taken over one, "
            f"{self.stale_writes:,} finished after their entries were replaced, "
            f"{self.applied_ahead:,} applied ahead of their write",
            f"safety checks       {self.checks:,} node-steps checked",
            "liveness (calm)     in election timeouts, worst seen (bound, seed): "
            f"leader {self.max_leader_ets:.1f} ({LEADER_BOUND_ETS}, {w[0]}), "
            f"commit on all {self.max_commit_ets:.1f} ({COMMIT_BOUND_ETS}, {w[1]}), "
            f"without PreVote {self.max_no_pre_vote_ets:.1f} ({NO_PRE_VOTE_BOUND_ETS}, {w[2]})",
            f"time                {self.elapsed:.1f} s, {rate:,.0f} steps/s",
        ]
