"""Run seeds (one, or many over several processes) and sum them up."""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.brokersim.world import SeedResult, SeedStats, SimOptions, Trace, World


def run_seed(seed: int, opts: SimOptions | None = None, trace: Trace | None = None) -> SeedResult:
    """Run one seed; what it finds is in the result (a crash of the simulation too)."""
    world = World(seed, opts, trace)
    try:
        return world.run()
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)
        where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in tb[::-1][:6])
        return SeedResult(
            seed, world.stats, f"{type(e).__name__}: {e}\n    at {where}", "exception"
        )


def _chunk(args: tuple[list[int], SimOptions]) -> list[SeedResult]:
    seeds, opts = args
    return [run_seed(s, opts) for s in seeds]


def run_many(seeds: list[int], opts: SimOptions, jobs: int) -> Iterator[SeedResult]:
    """Results in seed order, spread over `jobs` processes."""
    if jobs <= 1 or len(seeds) < 2:
        for s in seeds:
            yield run_seed(s, opts)
        return
    size = max(1, min(10, len(seeds) // (jobs * 4)))
    chunks = [(seeds[i : i + size], opts) for i in range(0, len(seeds), size)]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        for results in pool.imap(_chunk, chunks):
            yield from results


def first_failure(seeds: list[int], opts: SimOptions | None = None) -> SeedResult | None:
    for s in seeds:
        r = run_seed(s, opts)
        if not r.ok:
            return r
    return None


@dataclass
class Summary:
    seeds: int = 0
    failed: list[SeedResult] = field(default_factory=list)
    total: SeedStats = field(default_factory=SeedStats)
    started: float = field(default_factory=time.perf_counter)

    def add(self, r: SeedResult) -> None:
        self.seeds += 1
        if not r.ok:
            self.failed.append(r)
        for name in SeedStats.__dataclass_fields__:
            setattr(self.total, name, getattr(self.total, name) + getattr(r.stats, name))

    def lines(self) -> list[str]:
        t = self.total
        return [
            f"seeds run           {self.seeds} ({len(self.failed)} failed)",
            f"virtual time        {t.virtual_s:,.0f} s",
            f"records             {t.acked:,} acknowledged in {t.attempts:,} produce attempts, "
            f"{t.read:,} read back",
            f"faults              {t.faults:,} injected: {t.crashes:,} crashes, {t.halts:,} "
            f"restarts, {t.failed_syncs:,} failed syncs, {t.torn:,} torn writes, "
            f"{t.lost_writes:,} unsynced writes lost, {t.moves:,} replica moves started "
            f"({t.cancels:,} cancelled), {t.wipes:,} disks wiped",
            f"delete-records      {t.deletions_ok:,} acknowledged, {t.deletions_refused:,} bad "
            "ones refused",
            f"messages delivered  {t.messages:,}",
            f"replica states      {t.states_compared:,} compared at equal applied indexes",
            f"time                {time.perf_counter() - self.started:.1f} s",
        ]
