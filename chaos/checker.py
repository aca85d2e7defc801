"""The history checker: did the cluster lose, invent, move or reorder any acknowledged message?

Pure: `check(ops, final_reads, faults)` reads values and returns a `Report`; no I/O, no clock.
`python -m chaos.checker HISTORY.jsonl` re-checks a recorded history (chaos/history.py) offline,
prints `format_summary` and exits 1 when the report is not ok.

Model (after Jepsen's Kafka "queue" workload). Each partition is an append-only log in which every
offset holds one message, and the workload sends values that are unique per partition. A send
completes `ok` with its acknowledged offset, `fail` when the broker said it was not written, or
`info` when nobody knows (a timeout, a lost connection, or no completion at all). Polls return
(offset, value) records. After the faults are healed, the workload reads every partition back
completely: the *final read*, the authority on what the log durably holds.

What is checked, per partition (topic, partition):

  lost                  an ok send whose value is not in the final read. (Seen by a poll during
                        the run but gone from the final read is lost too: it was acknowledged.)
                        A partition with no final read at all has lost every acknowledged value.
  duplicated            one value at two or more offsets, over all reads. At-least-once delivery
                        (a retried send) makes duplicates legal, so they are counted, not failed.
  inconsistent_offsets  two different values at one offset, over all reads (polls during the run
                        and the final read): two readers disagree on the log.
  aborted_reads         a value read although every send of it failed definitely.
  wrong_offset          a value read, but never at the offset its send was acknowledged with.
  phantom_reads         a value read that no send to this partition ever carried (corruption, or
                        a record served from the wrong partition).
  unacked_but_read      a value whose sends were all `info`, read anyway: fine, counted.
  reordered, skipped    per consumer process: each poll should start at the position it asked
                        for (or, without one, right after its previous poll) and continue in
                        offset order. Going backwards is `reordered`; jumping over offsets that
                        exist in some read is `skipped`. Gaps no read ever saw are not skips:
                        offsets may be sparse.

`Report.ok` is True only with no lost, inconsistent, aborted, wrong-offset or phantom records.
Duplicates, reordered and skipped polls and unacked reads are reported but do not fail a run.

Unavailability. For each fault window (start_ns, end_ns, name): the time from the fault's start
to the completion of the first ok send *invoked* at or after that start. Sends already in flight
when the fault began do not count: one acknowledged a millisecond after the fault started says
nothing about recovery. Per fault name (e.g. "kill") the report gives p50/p99/max over its
windows, and how many never saw a successful send afterwards. Computed per partition and over all
sends.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos.history import Fault, FinalReads, History, Op, Value

__all__ = [
    "AbortedRead",
    "Duplicate",
    "FaultStats",
    "InconsistentOffset",
    "Lost",
    "Op",
    "PhantomRead",
    "PollAnomaly",
    "Report",
    "UnackedRead",
    "Unavailability",
    "WrongOffset",
    "check",
    "check_history",
    "format_summary",
    "main",
]

PartitionKey = tuple[str, int]
_SAMPLE = 10  # offsets kept in an anomaly's `missing` list


def _vkey(value: Value) -> tuple[bool, Any]:
    """Sort key for values that may mix int and str."""
    return (isinstance(value, str), value)


def _pkey(key: PartitionKey) -> str:
    return f"{key[0]}/{key[1]}"


# ---------------------------------------------------------------------------------------------
# Anomalies


@dataclass(frozen=True, slots=True)
class Lost:
    topic: str
    partition: int
    value: Value
    offset: int | None  # the acknowledged offset (None if the ack carried none)
    acked_ns: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    topic: str
    partition: int
    value: Value
    offsets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class InconsistentOffset:
    topic: str
    partition: int
    offset: int
    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class AbortedRead:
    topic: str
    partition: int
    value: Value
    offsets: tuple[int, ...]  # where it was read


@dataclass(frozen=True, slots=True)
class WrongOffset:
    topic: str
    partition: int
    value: Value
    acked: tuple[int, ...]
    read: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class UnackedRead:
    topic: str
    partition: int
    value: Value
    offsets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PhantomRead:
    topic: str
    partition: int
    value: Value
    offsets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PollAnomaly:
    """A consumer's poll returned `offset` where it should have continued at `expected`."""

    process: int | str
    topic: str
    partition: int
    op_index: int
    expected: int
    offset: int
    missing: tuple[int, ...] = ()  # skipped: existing offsets jumped over (first _SAMPLE)
    missing_count: int = 0


@dataclass(frozen=True, slots=True)
class Unavailability:
    name: str
    start_ns: int
    end_ns: int
    recovered_ns: int | None  # completion of the first ok send invoked at or after start_ns

    @property
    def unavailable_ns(self) -> int | None:
        return None if self.recovered_ns is None else self.recovered_ns - self.start_ns


@dataclass(frozen=True, slots=True)
class FaultStats:
    name: str
    count: int
    unrecovered: int
    p50_ns: int | None
    p99_ns: int | None
    max_ns: int | None


# ---------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True, slots=True)
class Report:
    """What the checker found, for one partition or (key "total") for all of them."""

    key: str
    sends_ok: int = 0
    sends_fail: int = 0
    sends_info: int = 0
    polls: int = 0
    records_polled: int = 0
    final_records: int = 0
    lost: tuple[Lost, ...] = ()
    duplicated: tuple[Duplicate, ...] = ()
    inconsistent_offsets: tuple[InconsistentOffset, ...] = ()
    aborted_reads: tuple[AbortedRead, ...] = ()
    wrong_offset: tuple[WrongOffset, ...] = ()
    phantom_reads: tuple[PhantomRead, ...] = ()
    unacked_but_read: tuple[UnackedRead, ...] = ()
    reordered: tuple[PollAnomaly, ...] = ()
    skipped: tuple[PollAnomaly, ...] = ()
    unavailability: tuple[Unavailability, ...] = ()
    partitions: Mapping[str, Report] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.inconsistent_offsets
            or self.aborted_reads
            or self.wrong_offset
            or self.phantom_reads
        )

    def fault_stats(self) -> dict[str, FaultStats]:
        by_name: dict[str, list[Unavailability]] = defaultdict(list)
        for u in self.unavailability:
            by_name[u.name].append(u)
        return {name: _fault_stats(name, windows) for name, windows in sorted(by_name.items())}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of everything in the report."""
        out: dict[str, Any] = {"key": self.key, "ok": self.ok}
        out["counts"] = {
            "sends_ok": self.sends_ok,
            "sends_fail": self.sends_fail,
            "sends_info": self.sends_info,
            "polls": self.polls,
            "records_polled": self.records_polled,
            "final_records": self.final_records,
            **{name: len(getattr(self, name)) for name in _ANOMALIES},
        }
        for name in _ANOMALIES:
            out[name] = [asdict(a) for a in getattr(self, name)]
        out["unavailability"] = [
            {**asdict(u), "unavailable_ns": u.unavailable_ns} for u in self.unavailability
        ]
        out["fault_stats"] = {name: asdict(s) for name, s in self.fault_stats().items()}
        out["partitions"] = {k: r.to_dict() for k, r in self.partitions.items()}
        return out


_ANOMALIES = (
    "lost",
    "duplicated",
    "inconsistent_offsets",
    "aborted_reads",
    "wrong_offset",
    "phantom_reads",
    "unacked_but_read",
    "reordered",
    "skipped",
)


def _percentile(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of a non-empty sorted list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _fault_stats(name: str, windows: Sequence[Unavailability]) -> FaultStats:
    times = sorted(u.unavailable_ns for u in windows if u.unavailable_ns is not None)
    return FaultStats(
        name=name,
        count=len(windows),
        unrecovered=len(windows) - len(times),
        p50_ns=_percentile(times, 50) if times else None,
        p99_ns=_percentile(times, 99) if times else None,
        max_ns=times[-1] if times else None,
    )


# ---------------------------------------------------------------------------------------------
# Reading the history


@dataclass(frozen=True, slots=True)
class _Send:
    process: int | str
    value: Value
    outcome: str  # "ok" | "fail" | "info"
    offset: int | None
    invoke_ns: int
    complete_ns: int  # for an unfinished send: its invoke time


@dataclass(frozen=True, slots=True)
class _Poll:
    process: int | str
    index: int
    start: int | None  # the position asked for, if any
    records: tuple[tuple[int, Value], ...]


@dataclass
class _Partition:
    sends: list[_Send] = field(default_factory=list)
    polls: list[_Poll] = field(default_factory=list)


def _pair(ops: Iterable[Op]) -> Iterable[tuple[Op, Op | None]]:
    """(invoke, completion) pairs in completion order; (op, None) for unfinished invokes.

    A completion without a matching invoke stands alone as (completion, completion).
    """
    pending: dict[int | str, Op] = {}
    for op in ops:
        if op.type == "invoke":
            if op.process in pending:  # the process moved on: its last op never completed
                yield pending.pop(op.process), None
            pending[op.process] = op
            continue
        invoke = pending.pop(op.process, None)
        if invoke is not None and invoke.f != op.f:
            yield invoke, None
            invoke = None
        yield (invoke or op), op
    yield from ((op, None) for op in pending.values())


def _gather(ops: Iterable[Op]) -> dict[PartitionKey, _Partition]:
    parts: dict[PartitionKey, _Partition] = defaultdict(_Partition)
    for invoke, done in _pair(ops):
        last = done or invoke
        topic = last.topic or invoke.topic
        partition = last.partition if last.partition is not None else invoke.partition
        if partition is None:
            continue  # not about one partition (e.g. a metadata call)
        if invoke.f == "send":
            value = last.value if last.value is not None else invoke.value
            if value is None:
                continue
            outcome = done.type if done is not None else "info"
            parts[(topic, partition)].sends.append(
                _Send(
                    process=invoke.process,
                    value=value,
                    outcome=outcome,
                    offset=done.offset if done is not None and outcome == "ok" else None,
                    invoke_ns=invoke.time_ns,
                    complete_ns=last.time_ns,
                )
            )
        elif invoke.f == "poll" and done is not None and done.type == "ok":
            start = done.offset if done.offset is not None else invoke.offset
            parts[(topic, partition)].polls.append(
                _Poll(process=invoke.process, index=done.index, start=start, records=done.records)
            )
    return parts


# ---------------------------------------------------------------------------------------------
# Checking


def check(
    ops: Sequence[Op],
    final_reads: FinalReads,
    faults: Iterable[tuple[int, int, str]] = (),
) -> Report:
    """Check a history; see the module docstring for what each anomaly means."""
    windows = [Fault(int(s), int(e), str(n)) for s, e, n in faults]
    parts = _gather(ops)
    keys = sorted(set(parts) | set(final_reads))
    reports = {
        _pkey(key): _check_partition(
            key, parts.get(key, _Partition()), final_reads.get(key), windows
        )
        for key in keys
    }
    all_sends = [s for p in parts.values() for s in p.sends]

    def merged(name: str) -> tuple[Any, ...]:
        return tuple(a for r in reports.values() for a in getattr(r, name))

    return Report(
        key="total",
        sends_ok=sum(r.sends_ok for r in reports.values()),
        sends_fail=sum(r.sends_fail for r in reports.values()),
        sends_info=sum(r.sends_info for r in reports.values()),
        polls=sum(r.polls for r in reports.values()),
        records_polled=sum(r.records_polled for r in reports.values()),
        final_records=sum(r.final_records for r in reports.values()),
        **{name: merged(name) for name in _ANOMALIES},
        unavailability=_unavailability(all_sends, windows),
        partitions=reports,
    )


def check_history(history: History) -> Report:
    return check(history.ops, history.final_reads, history.faults)


def _check_partition(
    key: PartitionKey,
    part: _Partition,
    final: Sequence[tuple[int, Value]] | None,
    faults: Sequence[Fault],
) -> Report:
    topic, partition = key
    final = final or ()

    # Every (offset, value) any read observed, both ways round.
    offsets_of: dict[Value, set[int]] = defaultdict(set)
    values_at: dict[int, set[Value]] = defaultdict(set)
    for poll in part.polls:
        for offset, value in poll.records:
            offsets_of[value].add(offset)
            values_at[offset].add(value)
    final_values: set[Value] = set()
    for offset, value in final:
        offsets_of[value].add(offset)
        values_at[offset].add(value)
        final_values.add(value)

    # What the sends of each value came to.
    acked: dict[Value, list[_Send]] = defaultdict(list)
    outcomes: dict[Value, set[str]] = defaultdict(set)
    for send in part.sends:
        outcomes[send.value].add(send.outcome)
        if send.outcome == "ok":
            acked[send.value].append(send)

    lost = []
    wrong = []
    for value in sorted(acked, key=_vkey):
        sends = acked[value]
        acked_offsets = sorted({s.offset for s in sends if s.offset is not None})
        if value not in final_values:
            first = min(sends, key=lambda s: s.complete_ns)
            lost.append(Lost(topic, partition, value, first.offset, first.complete_ns))
        read = offsets_of.get(value)
        if read and any(o not in read for o in acked_offsets):
            wrong.append(
                WrongOffset(topic, partition, value, tuple(acked_offsets), tuple(sorted(read)))
            )

    aborted, unacked, phantom = [], [], []
    for value in sorted(offsets_of, key=_vkey):
        where = tuple(sorted(offsets_of[value]))
        seen = outcomes.get(value)
        if not seen:
            phantom.append(PhantomRead(topic, partition, value, where))
        elif seen == {"fail"}:
            aborted.append(AbortedRead(topic, partition, value, where))
        elif "ok" not in seen:
            unacked.append(UnackedRead(topic, partition, value, where))

    duplicated = tuple(
        Duplicate(topic, partition, v, tuple(sorted(offsets_of[v])))
        for v in sorted(offsets_of, key=_vkey)
        if len(offsets_of[v]) > 1
    )
    inconsistent = tuple(
        InconsistentOffset(topic, partition, o, tuple(sorted(values_at[o], key=_vkey)))
        for o in sorted(values_at)
        if len(values_at[o]) > 1
    )
    reordered, skipped = _check_polls(topic, partition, part.polls, sorted(values_at))

    return Report(
        key=_pkey(key),
        sends_ok=sum(s.outcome == "ok" for s in part.sends),
        sends_fail=sum(s.outcome == "fail" for s in part.sends),
        sends_info=sum(s.outcome == "info" for s in part.sends),
        polls=len(part.polls),
        records_polled=sum(len(p.records) for p in part.polls),
        final_records=len(final),
        lost=tuple(lost),
        duplicated=duplicated,
        inconsistent_offsets=inconsistent,
        aborted_reads=tuple(aborted),
        wrong_offset=tuple(wrong),
        phantom_reads=tuple(phantom),
        unacked_but_read=tuple(unacked),
        reordered=reordered,
        skipped=skipped,
        unavailability=_unavailability(part.sends, faults),
    )


def _check_polls(
    topic: str, partition: int, polls: Sequence[_Poll], existing: Sequence[int]
) -> tuple[tuple[PollAnomaly, ...], tuple[PollAnomaly, ...]]:
    """Each consumer's polls must continue where it asked (or where it left off), in order."""
    reordered: list[PollAnomaly] = []
    skipped: list[PollAnomaly] = []
    position: dict[int | str, int] = {}  # per process: the offset it should read next
    for poll in polls:
        expected = poll.start if poll.start is not None else position.get(poll.process)
        for offset, _ in poll.records:
            if expected is not None:
                if offset < expected:
                    reordered.append(
                        PollAnomaly(poll.process, topic, partition, poll.index, expected, offset)
                    )
                else:
                    lo = bisect.bisect_left(existing, expected)
                    hi = bisect.bisect_left(existing, offset)
                    if hi > lo:
                        skipped.append(
                            PollAnomaly(
                                poll.process,
                                topic,
                                partition,
                                poll.index,
                                expected,
                                offset,
                                tuple(existing[lo : min(hi, lo + _SAMPLE)]),
                                hi - lo,
                            )
                        )
            expected = offset + 1
        if expected is not None:
            position[poll.process] = expected
    return tuple(reordered), tuple(skipped)


def _unavailability(sends: Iterable[_Send], faults: Sequence[Fault]) -> tuple[Unavailability, ...]:
    oks = sorted((s.invoke_ns, s.complete_ns) for s in sends if s.outcome == "ok")
    invoked = [i for i, _ in oks]
    # suffix_min[i]: the earliest completion among oks invoked at or after invoked[i].
    suffix_min = [0] * len(oks)
    best: int | None = None
    for i in range(len(oks) - 1, -1, -1):
        best = oks[i][1] if best is None else min(best, oks[i][1])
        suffix_min[i] = best
    result = []
    for fault in sorted(faults):
        i = bisect.bisect_left(invoked, fault.start_ns)
        recovered = suffix_min[i] if i < len(oks) else None
        result.append(Unavailability(fault.name, fault.start_ns, fault.end_ns, recovered))
    return tuple(result)


# ---------------------------------------------------------------------------------------------
# Output


def _secs(ns: int | None) -> str:
    if ns is None:
        return "-"
    return f"{ns / 1e9:.3f}s" if ns >= 1_000_000_000 else f"{ns / 1e6:.1f}ms"


def format_summary(report: Report, *, examples: int = 5) -> str:
    """A human summary. Its last four lines are exactly `lost: N`, `duplicated: N`,
    `inconsistent_offsets: N` and `aborted_reads: N` (the chaos command prints this)."""
    lines = [
        f"history check: {'OK' if report.ok else 'FAILED'}",
        f"sends: {report.sends_ok} ok, {report.sends_fail} fail, {report.sends_info} info; "
        f"polls: {report.polls} ({report.records_polled} records); "
        f"final read: {report.final_records} records in {len(report.partitions)} partitions",
    ]
    for name, s in report.fault_stats().items():
        lines.append(
            f"unavailable after {name}: n={s.count} p50={_secs(s.p50_ns)} "
            f"p99={_secs(s.p99_ns)} max={_secs(s.max_ns)} unrecovered={s.unrecovered}"
        )
    for key, part in report.partitions.items():
        counts = ", ".join(
            f"{name} {len(getattr(part, name))}" for name in _ANOMALIES if getattr(part, name)
        )
        lines.append(
            f"  {key}: {'ok' if part.ok else 'FAILED'} ({part.sends_ok} acked, "
            f"{part.final_records} in final read){'; ' + counts if counts else ''}"
        )
    for name in _ANOMALIES:
        found = getattr(report, name)
        for anomaly in found[:examples]:
            lines.append(f"  {name}: {anomaly}")
        if len(found) > examples:
            lines.append(f"  {name}: ... and {len(found) - examples} more")
    for name in ("phantom_reads", "unacked_but_read", "reordered", "skipped", "wrong_offset"):
        lines.append(f"{name}: {len(getattr(report, name))}")
    for name in ("lost", "duplicated", "inconsistent_offsets", "aborted_reads"):
        lines.append(f"{name}: {len(getattr(report, name))}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaos.checker",
        description="Check a recorded chaos history (JSON lines from chaos.history). "
        "Exits 0 when nothing acknowledged was lost or corrupted, 1 when it was, 2 on bad input.",
    )
    parser.add_argument("history", help="the HISTORY.jsonl file")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = parser.parse_args(argv)
    try:
        history = History.load(args.history)
    except (OSError, ValueError) as e:
        print(f"chaos.checker: {e}", file=sys.stderr)
        return 2
    report = check_history(history)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_summary(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
