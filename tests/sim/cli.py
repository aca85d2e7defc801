"""`python -m tests.sim`: run seeds, replay one, watch the demo, or measure speed."""

from __future__ import annotations

import argparse
import os
import resource
import sys

from tests.sim.profile import SimOptions
from tests.sim.runner import Summary, replay_command, run_many, run_seed
from tests.sim.world import Event, World


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.sim",
        description="Deterministic simulation of the Raft core: seeded worlds with crashes, "
        "partitions, lossy networks, snapshots and membership changes, with Raft's safety "
        "properties checked after every step.",
    )
    p.add_argument("--seeds", type=int, default=200, help="how many seeds to run (default 200)")
    p.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--seed", type=int, help="run (replay) this one seed")
    p.add_argument("--nodes", type=int, choices=range(3, 8), help="cluster size (default: by seed)")
    p.add_argument(
        "--ticks",
        type=int,
        default=SimOptions().ticks,
        help=f"length of the chaos phase in ticks (default {SimOptions().ticks})",
    )
    p.add_argument("--steps", type=int, help="cap the chaos phase at this many steps")
    p.add_argument(
        "--leader-removes-itself",
        action="store_true",
        help="let the operator ask a leader to remove itself (the operator before seed 907)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (default: all cores)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="trace what happens (with --seed)")
    p.add_argument("--demo", action="store_true", help="watch one five-node cluster live")
    p.add_argument("--bench", action="store_true", help="measure the simulation and the core")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.demo:
        from tests.sim.demo import run_demo

        return run_demo(seed=args.seed if args.seed is not None else 7)
    if args.bench:
        from tests.sim.bench import run_bench

        return run_bench()
    opts = SimOptions(
        nodes=args.nodes,
        ticks=args.ticks,
        steps=args.steps,
        leader_removes_itself=args.leader_removes_itself,
    )
    if args.seed is not None:
        return _replay(args.seed, opts, args.verbose)
    seeds = list(range(args.start, args.start + args.seeds))
    summary = Summary()
    for r in run_many(seeds, opts, args.jobs):
        summary.add(r)
        if not r.ok:
            print(f"seed {r.seed} FAILED ({r.kind}): {r.error}", flush=True)
    for line in summary.lines():
        print(line)
    print(f"cpu                 {_cpu_seconds():.1f} s over {args.jobs} process(es)")
    if summary.failed:
        print(f"\n{len(summary.failed)} seed(s) failed; replay with:")
        for r in sorted(summary.failed, key=lambda r: r.seed)[:20]:
            print(f"  {replay_command(r.seed, opts)}    # {r.kind}: {r.headline}")
        return 1
    return 0


def _cpu_seconds() -> float:
    """CPU time of this process and its workers: on a shared machine, a steadier figure than
    the wall clock."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _replay(seed: int, opts: SimOptions, verbose: bool) -> int:
    def trace(ev: Event) -> None:
        print(f"[tick {ev.tick:5d} step {ev.step:7d}] {ev.kind:8s} {ev.text}")

    if verbose:
        print(f"world of seed {seed}: {World(seed, opts).profile.describe()}")
    summary = Summary()
    r = run_seed(seed, opts, trace if verbose else None)
    summary.add(r)
    for line in summary.lines():
        print(line)
    if not r.ok:
        print(f"\nseed {seed} FAILED ({r.kind}): {r.error}", file=sys.stderr)
        print(f"replay: {replay_command(seed, opts)} -v", file=sys.stderr)
        return 1
    return 0
