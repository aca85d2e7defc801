"""`python -m tests.sim --bench`: how fast the simulation runs, and how fast the core commits.

(a) simulation speed: steps per second over a fixed set of seeds (faults, checks and all), one
    process.
(b) core throughput: entries committed per second by a three-node group in the simulation with
    no faults, clients proposing batches of 64 entries (propose_many), both with the safety
    checker off (the core, its host loop and MemoryStorage) and with it on.
Each figure is the median of three runs, per second of CPU time (the process's own, so a busy
shared machine slows the run but not the figure).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from raft import Entry, Message, Ready, Snapshot
from tests.sim.checker import Checker
from tests.sim.host import RaftParams, SimNode
from tests.sim.network import Weather
from tests.sim.profile import Profile, SimOptions
from tests.sim.runner import run_seed
from tests.sim.world import World

RUNS = 3
SIM_SEEDS = range(30)
BATCH = 64
BENCH_TICKS = 300

BENCH_PROFILE = Profile(
    nodes=3,
    spares=0,
    raft=RaftParams(election_tick=10, heartbeat_tick=2, max_size_per_msg=1 << 20),
    base_weather=Weather(),
    fault_rate=0.0,
    fault_ticks=1,
    crash_sync=0.0,
    crash_vote=0.0,
    depose_rate=0.0,
    crash_idle=0.0,
    restart_ticks=1,
    propose_rate=1.0,
    max_batch=BATCH,
    transfer_rate=0.0,
    compact_rate=0.01,
    member_rate=0.0,
    defer_ready=0.0,
    min_batch=BATCH,
    proposals_per_tick=16,
)


class NullChecker(Checker):
    """Checks nothing: measures the core and the host loop alone."""

    def observe(self, sn: SimNode) -> None:
        pass

    def sent(self, sn: SimNode, msgs: list[Message]) -> None:
        pass

    def persisted(self, sn: SimNode, rd: Ready) -> None:
        pass

    def applying(self, sn: SimNode, e: Entry) -> None:
        pass

    def installed_snapshot(self, sn: SimNode, snap: Snapshot) -> None:
        pass

    def check_durability(self, nodes: object) -> None:
        pass


def _median(run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(RUNS))


def sim_steps_per_second() -> float:
    def once() -> float:
        t0 = time.process_time()
        steps = sum(run_seed(s).stats.steps for s in SIM_SEEDS)
        return steps / (time.process_time() - t0)

    return _median(once)


def committed_per_second(checks: bool) -> float:
    def once() -> float:
        world = World(
            1,
            SimOptions(nodes=3, faults=False),
            profile=BENCH_PROFILE,
            checker=None if checks else NullChecker(),
        )
        t0 = time.process_time()
        for _ in range(BENCH_TICKS):
            world.tick()
        elapsed = time.process_time() - t0
        committed = min(sn.node.raft.log.committed for sn in world.nodes.values() if sn.node)
        return committed / elapsed

    return _median(once)


def run_bench() -> int:
    print(
        f"(a) simulation: {sim_steps_per_second():,.0f} steps/s (seeds 0-{SIM_SEEDS[-1]}, one process)"
    )
    print(
        f"(b) core, 3 nodes, batches of {BATCH}, no faults: "
        f"{committed_per_second(checks=False):,.0f} entries committed/s without the checker, "
        f"{committed_per_second(checks=True):,.0f} with every safety check"
    )
    print(f"    (median of {RUNS} runs each, per second of CPU time)")
    return 0
