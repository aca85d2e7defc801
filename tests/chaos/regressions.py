"""Seeds that once made a chaos run fail: each is replayed by tests/chaos/test_chaos_local.py.

A failing run prints its seed and fault kinds (and keeps its history.jsonl, summary.json and node
logs in the output folder). Once the bug is understood and fixed, add the run here with a note
saying what failed and what fixed it, so the same schedule runs on every CI from then on. The
plan is a pure function of (faults, duration_s, seed, partitions) (chaos.nemesis.plan_faults),
so the same faults are injected again, aimed at the leaders of the same partitions.

Keep each entry short (a regression needs the schedule up to the fault that broke it, not the
whole original run): CI runs them all.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REGRESSIONS", "Regression"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Regression:
    seed: int
    faults: tuple[str, ...]
    duration_s: float
    partitions: int = 6
    note: str
    """What failed (lost, inconsistent, aborted, no recovery...), and the fix."""


REGRESSIONS: list[Regression] = [
    # None yet: no chaos run has lost, corrupted or failed to recover acknowledged data.
]
