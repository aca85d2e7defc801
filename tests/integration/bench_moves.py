"""What a throttled replica move costs produce traffic at half load, on a local four-node cluster.

    python -m tests.integration.bench_moves --size-mb 2048 --throttle-mb-s 20 --sets 2

1. Fills partition big-0 (RF 3) with --size-mb MB (10^6 bytes) of 1 KiB records in 256 KiB
   batches (acks=all, the raw client: unmeasured; acks=all so that no follower is still
   catching up with it when the measurements begin).
2. Finds the workload's maximum: `liferaft bench produce`'s closed loop (the raw client,
   acks=all, 1 KiB records, 256 KiB batches, 8 requests in flight) on topic `load` (--partitions,
   RF 3) for --max-runs runs of 5 s, the median records/s; or takes --max-rate (measured by
   `liferaft bench produce --bootstrap ... --topic load --duration 10 --runs 3` on the same
   cluster, say).
3. Produces at half of it, open loop as `liferaft bench produce --throughput R --linger-ms 5`
   does (a record's latency runs from its arrival to its acknowledgement, queueing included),
   interleaved: without a move (--without-s seconds; by default as long as the move before it,
   the first as long as size / throttle), with one (big-0 moves one follower replica
   to the spare node at --throttle-mb-s; produce runs until the move is done), without, with
   (the replica moves back: the same data again), ..., without: --sets moves in all.
4. Prints each phase (the 1-minute load average at its start, records/s reached, p50/p99; the
   move's duration and MB/s), then p50/p99 pooled over all phases without a move and over all
   phases during one, their ratio, and the median of the per-set p99 ratios.

A measurement, not a test: nothing asserts on speed, and it is not in CI's run. --json prints
one JSON object last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from client import AdminClient
from liferaft.bench.stats import LatencyRecorder
from liferaft.bench.target_liferaft import ensure_topic, run_produce
from liferaft.bench.workload import ProduceSpec
from liferaft.launcher import DevCluster, free_port_block

RECORD = 1024
BATCH = 256 * 1024
LINGER_MS = 5.0
MOVE_LIMIT_S = 3600.0


@dataclass(slots=True)
class Phase:
    kind: str
    """"without" or "with" (a move under way)."""
    load: float
    """The 1-minute load average when it began."""
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    records: int = 0
    seconds: float = 0.0
    errors: int = 0
    move_s: float = 0.0
    move_mb_s: float = 0.0
    cpu: dict[int, float] = field(default_factory=dict)
    """Node id -> cores it used over the phase (CPU seconds / seconds, all its threads)."""

    def p(self, q: float) -> float:
        return self.latency.percentiles(q)[0]

    def line(self) -> str:
        rate = self.records / self.seconds if self.seconds else 0.0
        s = (
            f"{self.kind:>7}: load {self.load:4.1f}, {rate:8,.0f} records/s, "
            f"p50 {self.p(0.5):6.1f} ms, p99 {self.p(0.99):6.1f} ms, n={self.records}"
        )
        if self.errors:
            s += f", {self.errors} failed"
        if self.kind == "with":
            s += f"; move {self.move_s:.1f} s ({self.move_mb_s:.2f} MB/s)"
        if self.cpu:
            s += "; cores " + " ".join(f"n{n} {c:.2f}" for n, c in sorted(self.cpu.items()))
        return s


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process so far, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Each node's CPU over a phase: what a move costs where (the learner, the leader reading
    the old log, the others), measured alongside the latency it is blamed for."""

    def __init__(self, pids: dict[int, int]) -> None:
        self.pids = pids
        self.t0 = 0.0
        self.c0: dict[int, float] = {}

    def start(self) -> None:
        self.t0, self.c0 = time.monotonic(), {n: cpu_seconds(p) for n, p in self.pids.items()}

    def stop(self, phase: Phase) -> None:
        dt = time.monotonic() - self.t0
        phase.cpu = {n: (cpu_seconds(p) - self.c0[n]) / dt for n, p in self.pids.items()}


def load_average() -> float:
    return os.getloadavg()[0]


def half_load_spec(rate: float, seconds: float, partitions: int) -> ProduceSpec:
    return ProduceSpec(
        topic="load",
        record_size=RECORD,
        duration_s=seconds,
        batch_size=BATCH,
        linger_ms=LINGER_MS,
        partitions=partitions,
        throughput=rate,
    )


async def window(
    bootstrap: list[str],
    spec: ProduceSpec,
    phase: Phase,
    stop: Callable[[], bool] | None = None,
) -> None:
    r = await run_produce(bootstrap, spec, create=False, stop=stop)
    phase.latency.merge(r.latency)
    phase.records += r.records
    phase.seconds += r.seconds
    phase.errors += r.errors


async def fill(bootstrap: list[str], size_mb: float) -> None:
    spec = ProduceSpec(
        topic="big",
        record_size=RECORD,
        records=int(size_mb * 1e6 / RECORD),
        batch_size=BATCH,
        partitions=1,
    )
    r = await run_produce(bootstrap, spec, create=False)
    if r.errors:
        raise RuntimeError(f"filling big-0: {r.errors} records failed: {r.settings['failures']}")
    print(f"filled big-0 with {size_mb:g} MB in {r.seconds:.1f} s", flush=True)


async def maximum(bootstrap: list[str], partitions: int, runs: int) -> float:
    spec = ProduceSpec(
        topic="load", record_size=RECORD, duration_s=5, batch_size=BATCH, partitions=partitions
    )
    rates = []
    for _ in range(runs):
        r = await run_produce(bootstrap, spec, create=False)
        rates.append(r.records_per_s)
    print(
        "maximum acks=all produce (closed loop, raw client, 1 KiB records, 256 KiB batches, "
        f"8 in flight): {', '.join(f'{x:,.0f}' for x in rates)} records/s",
        flush=True,
    )
    return statistics.median(rates)


async def during_move(
    admin: AdminClient,
    bootstrap: list[str],
    spec: ProduceSpec,
    target: list[int],
    throttle_mb_s: float,
    size_mb: float,
) -> Phase:
    """Start the move, produce until it is done, and check it ended where it was sent."""
    phase = Phase("with", load_average())
    t0 = time.monotonic()
    await admin.move_partitions([("big", 0, target)], throttle_bytes_s=int(throttle_mb_s * 1e6))
    done: list[float] = []

    async def watch() -> None:
        while True:
            await asyncio.sleep(0.2)
            moves, _ = await admin.list_partition_moves()
            if not moves:
                done.append(time.monotonic())
                return

    watcher = asyncio.create_task(watch())
    await window(bootstrap, replace(spec, duration_s=MOVE_LIMIT_S), phase, stop=lambda: bool(done))
    await watcher
    phase.move_s = done[0] - t0
    phase.move_mb_s = size_mb / phase.move_s
    md = (await admin.describe_topics(["big"]))["big"].partitions[0]
    if sorted(md.replicas) != sorted(target):
        raise RuntimeError(f"big-0 has replicas {md.replicas} after its move to {target}")
    return phase


def summary(phases: list[Phase]) -> dict[str, Any]:
    pooled = {k: LatencyRecorder() for k in ("without", "with")}
    for ph in phases:
        pooled[ph.kind].merge(ph.latency)
    p50_0, p99_0 = pooled["without"].percentiles(0.5, 0.99)
    p50_1, p99_1 = pooled["with"].percentiles(0.5, 0.99)
    # Each move against the mean of the phases either side of it.
    ratios = []
    for i, ph in enumerate(phases):
        if ph.kind == "with" and 0 < i < len(phases) - 1:
            around = (phases[i - 1].p(0.99) + phases[i + 1].p(0.99)) / 2
            ratios.append(ph.p(0.99) / around)
    moves = [ph for ph in phases if ph.kind == "with"]
    return {
        "without_p50_ms": round(p50_0, 2),
        "without_p99_ms": round(p99_0, 2),
        "with_p50_ms": round(p50_1, 2),
        "with_p99_ms": round(p99_1, 2),
        "p99_ratio": round(p99_1 / p99_0, 2),
        "per_set_p99_ratios": [round(r, 2) for r in ratios],
        "median_set_p99_ratio": round(statistics.median(ratios), 2) if ratios else None,
        "move_s": [round(m.move_s, 1) for m in moves],
        "move_mb_s": [round(m.move_mb_s, 2) for m in moves],
        "load_averages": [round(ph.load, 1) for ph in phases],
        "cores": [{str(n): round(c, 3) for n, c in sorted(ph.cpu.items())} for ph in phases],
        "errors": sum(ph.errors for ph in phases),
    }


async def run(a: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        dev = DevCluster.create(Path(tmp), 4, free_port_block(4))
        dev.start()
        try:
            dev.wait_healthy(60)
            bootstrap = dev.bootstrap.split(",")
            await ensure_topic(bootstrap, "big", 1, 3)
            await ensure_topic(bootstrap, "load", a.partitions, 3)
            async with AdminClient(dev.bootstrap) as admin:
                md = (await admin.describe_topics(["big"]))["big"].partitions[0]
                load_md = (await admin.describe_topics(["load"]))["load"].partitions
            print(
                f"big-0: replicas {md.replicas}, leader {md.leader}; load: "
                + ", ".join(f"{p.replicas} leader {p.leader}" for p in load_md),
                flush=True,
            )
            await fill(bootstrap, a.size_mb)
            top = a.max_rate or await maximum(bootstrap, a.partitions, a.max_runs)
            rate = top / 2
            # Phases of equal length: where the rate is more than the cluster keeps up with,
            # open-loop latency grows with the phase's length, and a longer phase would look
            # worse for that alone.
            without_s = a.without_s or (a.size_mb / a.throttle_mb_s if a.throttle_mb_s else 15)
            spec = half_load_spec(rate, without_s, a.partitions)
            print(
                f"half load: {rate:,.0f} records/s ({rate * RECORD / 1e6:.1f} MB/s) of 1 KiB "
                f"records, linger {LINGER_MS:g} ms, acks=all, {a.partitions} partitions; phases "
                f"without a move {without_s:.0f} s (then as long as the move before) at {a.throttle_mb_s:g} MB/s",
                flush=True,
            )
            spare = next(n for n in (1, 2, 3, 4) if n not in md.replicas)
            going = next(n for n in reversed(md.replicas) if n != md.leader)
            there = [spare if n == going else n for n in md.replicas]
            phases: list[Phase] = []
            meter = CpuMeter({n: dev.node(n).pid for n in (1, 2, 3, 4)})
            async with AdminClient(dev.bootstrap) as admin:
                for i in range(a.sets + 1):
                    ph = Phase("without", load_average())
                    meter.start()
                    await window(bootstrap, replace(spec, duration_s=without_s), ph)
                    meter.stop(ph)
                    phases.append(ph)
                    print(ph.line(), flush=True)
                    if i == a.sets:
                        break
                    target = there if i % 2 == 0 else list(md.replicas)
                    meter.start()
                    ph = await during_move(
                        admin, bootstrap, spec, target, a.throttle_mb_s, a.size_mb
                    )
                    meter.stop(ph)
                    phases.append(ph)
                    print(ph.line(), flush=True)
                    if not a.without_s:
                        without_s = ph.move_s
            out = {
                "size_mb": a.size_mb,
                "throttle_mb_s": a.throttle_mb_s,
                "max_records_s": round(top),
                "half_records_s": round(rate),
                **summary(phases),
            }
            print(
                f"without a move: p50 {out['without_p50_ms']} ms, p99 {out['without_p99_ms']} ms; "
                f"during moves: p50 {out['with_p50_ms']} ms, p99 {out['with_p99_ms']} ms; "
                f"p99 ratio {out['p99_ratio']} (per set {out['per_set_p99_ratios']}, median "
                f"{out['median_set_p99_ratio']}); moves {out['move_s']} s at "
                f"{out['move_mb_s']} MB/s",
                flush=True,
            )
            return out
        finally:
            dev.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=256, help="partition size, 10^6 bytes")
    ap.add_argument("--throttle-mb-s", type=float, default=20, help="0: no limit")
    ap.add_argument("--partitions", type=int, default=4, help="partitions of topic load")
    ap.add_argument("--max-rate", type=float, default=0, help="records/s; 0: measure it")
    ap.add_argument("--max-runs", type=int, default=3)
    ap.add_argument("--sets", type=int, default=2, help="moves, each between two phases without")
    ap.add_argument(
        "--without-s",
        type=float,
        default=0,
        help="seconds of each phase without a move (0: as long as the move before it)",
    )
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.sets < 1 or a.without_s < 0 or a.size_mb <= 0 or a.throttle_mb_s < 0:
        ap.error("--sets and --size-mb must be positive, --without-s and --throttle-mb-s >= 0")
    out = asyncio.run(run(a))
    if a.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
