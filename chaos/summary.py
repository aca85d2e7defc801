"""What a chaos run reports: the numbers, the summary text, and the files in the output folder.

Unavailability, two ways. The checker (chaos/checker.py) measures, for every fault window, the
time from the fault to the first acknowledged send invoked after it, over all partitions and
per partition. Over all partitions that says little about a leader kill: the partitions the dead
node did not lead keep taking writes. So this module also reports it for the partitions a fault
actually hit (`FaultEvent.affected_partitions`: those the killed, paused or cut-off node led
just before the fault; every partition for ring, latency and bandwidth), one sample per
(fault, partition). "Unavailability after a leader kill" is that number for kind "kill".

Files written by `write_outputs`: history.jsonl (streamed during the run, so it is already there),
summary.json (everything below plus the checker's full report) and plot.png (chaos/plot.py).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chaos.checker import format_summary
from chaos.workload import STUCK_AFTER_HEAL_S, RunResult

__all__ = [
    "HitStats",
    "format_run_summary",
    "hit_unavailability",
    "operation_counts",
    "summary_dict",
    "write_outputs",
]


@dataclass(frozen=True, slots=True)
class HitStats:
    """Unavailability of the partitions one kind of fault hit, over all its (fault, partition)
    samples. Times in seconds; None when there is no recovered sample."""

    kind: str
    faults: int
    samples: int
    unrecovered: int
    p50_s: float | None
    p99_s: float | None
    max_s: float | None
    values_s: tuple[float, ...]


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest rank, as the checker does."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def hit_unavailability(result: RunResult) -> dict[str, HitStats]:
    """Per fault kind: fault start to the first acknowledged write in each partition it hit."""
    samples: dict[str, list[float | None]] = defaultdict(list)
    counts: Counter[str] = Counter()
    for event in result.events:
        failed_to_inject = event.error is not None and event.error.startswith("inject")
        if event.skipped or not event.start_ns or failed_to_inject:
            continue
        counts[event.kind] += 1
        for p in event.affected_partitions:
            part = result.report.partitions.get(f"{result.topic}/{p}")
            if part is None:
                samples[event.kind].append(None)
                continue
            found = [
                u
                for u in part.unavailability
                if u.start_ns == event.start_ns and u.name == event.kind
            ]
            ns = found[0].unavailable_ns if found else None
            samples[event.kind].append(None if ns is None else ns / 1e9)
    out: dict[str, HitStats] = {}
    for kind in sorted(counts):
        values = sorted(v for v in samples[kind] if v is not None)
        out[kind] = HitStats(
            kind=kind,
            faults=counts[kind],
            samples=len(samples[kind]),
            unrecovered=sum(v is None for v in samples[kind]),
            p50_s=_percentile(values, 50) if values else None,
            p99_s=_percentile(values, 99) if values else None,
            max_s=values[-1] if values else None,
            values_s=tuple(round(v, 4) for v in values),
        )
    return out


def operation_counts(result: RunResult) -> dict[str, Any]:
    r = result.report
    sends = r.sends_ok + r.sends_fail + r.sends_info
    return {
        "sends": sends,
        "sends_ok": r.sends_ok,
        "sends_fail": r.sends_fail,
        "sends_info": r.sends_info,
        "polls": r.polls,
        "records_polled": r.records_polled,
        "final_records": r.final_records,
        "acks_per_s": round(r.sends_ok / result.duration_s, 1) if result.duration_s else 0.0,
    }


def summary_dict(result: RunResult, run: Mapping[str, Any]) -> dict[str, Any]:
    """Everything about a run as JSON-ready data (`run`: the settings it ran with)."""
    injected = [e for e in result.events if e.start_ns and not e.skipped]
    return {
        "run": dict(run),
        "ok": result.ok,
        "operations": operation_counts(result),
        "faults_injected": len(injected),
        "faults_by_kind": dict(Counter(e.kind for e in injected)),
        "unavailability_of_hit_partitions": {
            k: asdict(s) for k, s in hit_unavailability(result).items()
        },
        "plan": [p.to_json() for p in result.plan],
        "events": [e.to_json() for e in result.events],
        "recovery": result.recovery,
        "settled_after_s": result.settled_after_s,
        "problems": result.problems,
        "stuck_producers": result.stuck,
        "answers_dropped": result.answers_dropped,
        "moves": move_counts(result),
        "client_notes": result.client_notes,
        "lost": len(result.report.lost),
        "duplicated": len(result.report.duplicated),
        "inconsistent_offsets": len(result.report.inconsistent_offsets),
        "aborted_reads": len(result.report.aborted_reads),
        "replica_differences": result.replica_differences,
        "replicas": (
            None
            if result.replicas is None
            else {
                "partitions": result.replicas.partitions,
                "state_machines": result.replicas.state_machines,
                "attempts": result.replicas.attempts,
                "differences": result.replicas.differences,
            }
        ),
        "checker": result.report.to_dict(),
    }


def move_counts(result: RunResult) -> dict[str, Any]:
    """The `move` fault's moves: asked for, started (the controller accepted), finished, and
    each one."""
    started = [m for m in result.moves if m.started]
    return {
        "asked": len(result.moves),
        "started": len(started),
        "finished": sum(m.finished for m in started),
        "refused": len(result.moves) - len(started),
        "each": [m.to_json() for m in result.moves],
    }


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}s"


def format_run_summary(result: RunResult, run: Mapping[str, Any]) -> str:
    """The text the chaos command prints. Its last five lines: the checker's `lost: N`,
    `duplicated: N`, `inconsistent_offsets: N`, `aborted_reads: N`, then
    `replica_differences: N` (chaos/replicas.py)."""
    ops = operation_counts(result)
    injected = [e for e in result.events if e.start_ns and not e.skipped]
    by_kind = Counter(e.kind for e in injected)
    failed = [e for e in result.events if e.error]
    skipped = [e for e in result.events if e.skipped]
    lines = [
        "chaos run: " + " ".join(f"{k}={v}" for k, v in run.items()),
        f"operations: {ops['sends']} sends ({ops['sends_ok']} ok, {ops['sends_fail']} fail, "
        f"{ops['sends_info']} info), {ops['polls']} polls ({ops['records_polled']} records), "
        f"{ops['acks_per_s']} acks/s over {result.duration_s:.0f}s",
        f"faults injected: {len(injected)}"
        + (f" ({', '.join(f'{k} {n}' for k, n in sorted(by_kind.items()))})" if by_kind else "")
        + (f"; {len(skipped)} skipped" if skipped else "")
        + (f"; {len(failed)} with errors" if failed else ""),
    ]
    stats = hit_unavailability(result)
    if stats:
        lines.append("unavailability of the partitions each fault hit (fault to first ack):")
        for s in stats.values():
            lines.append(
                f"  {s.kind}: faults={s.faults} samples={s.samples} p50={_secs(s.p50_s)} "
                f"p99={_secs(s.p99_s)} max={_secs(s.max_s)} unrecovered={s.unrecovered}"
            )
    for e in failed:
        lines.append(f"  fault error: {e.describe()}: {e.error}")
    lines.append(
        "recovery: "
        + (", ".join(result.recovery) or "nothing to undo")
        + (
            f"; every replica in sync {result.settled_after_s:.1f}s later"
            if result.settled_after_s is not None
            else "; replicas NOT back in sync"
        )
    )
    if result.moves:
        moves = move_counts(result)
        lines.append(
            f"moves: {moves['asked']} asked, {moves['started']} started, "
            f"{moves['finished']} finished, {moves['refused']} refused"
        )
    if result.answers_dropped:
        lines.append(f"produce answers lost by the 'answers' fault: {result.answers_dropped}")
    for note in result.client_notes:
        lines.append(f"client: {note}")
    if result.stuck is not None:
        lines.append(
            f"stuck producers (no new ack within {STUCK_AFTER_HEAL_S:.0f}s of the final heal): "
            + (", ".join(result.stuck) if result.stuck else "none")
        )
    for problem in result.problems:
        lines.append(f"PROBLEM: {problem}")
    if result.replicas is None:
        lines.append("replicas: not compared")
    else:
        for difference in result.replicas.differences:
            lines.append(f"REPLICA DIFFERENCE: {difference}")
    lines.append(format_summary(result.report))
    lines.append(f"replica_differences: {result.replica_differences}")
    return "\n".join(lines)


def write_outputs(
    result: RunResult, run: Mapping[str, Any], out: Path, *, plot: bool = True
) -> list[Path]:
    """summary.json and (with `plot`) plot.png in `out`; history.jsonl is streamed there by the
    caller. Returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    summary = out / "summary.json"
    summary.write_text(json.dumps(summary_dict(result, run), indent=1, default=str) + "\n")
    written.append(summary)
    if plot:
        from chaos.plot import plot_run

        path = out / "plot.png"
        plot_run(result, path, title=" ".join(f"{k}={v}" for k, v in run.items()))
        written.append(path)
    return written
