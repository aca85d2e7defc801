"""The history checker (chaos/checker.py) and the recorder (chaos/history.py).

Hand-written histories show each anomaly detected and each look-alike that is fine passing.
Hypothesis then builds clean runs from a simulated log (interleaved workers, definite failures,
unknown outcomes that did or did not land, unfinished sends, consumers that continue or seek) that
must pass, and mutates them the ways a broken broker would: each mutation must be caught.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chaos.checker import (
    PollAnomaly,
    Report,
    check,
    check_history,
    format_summary,
    main,
)
from chaos.history import Fault, History, Op

REPO = Path(__file__).resolve().parents[2]
T = "orders"


class Clock:
    """A settable clock for the recorder: each read returns `t`, then moves it on by `step`."""

    def __init__(self, step: int = 1) -> None:
        self.t = 0
        self.step = step

    def __call__(self) -> int:
        now = self.t
        self.t += self.step
        return now


def new_history(step: int = 1) -> tuple[History, Clock]:
    clock = Clock(step)
    return History(clock=clock), clock


def send(
    h: History,
    process: Any,
    value: Any,
    offset: int | None = None,
    outcome: str | None = "ok",
    partition: int = 0,
) -> Op:
    inv = h.invoke(process, "send", topic=T, partition=partition, value=value)
    if outcome == "ok":
        return h.ok(inv, offset=offset)
    if outcome == "fail":
        return h.fail(inv, error="NOT_LEADER")
    if outcome == "info":
        return h.info(inv, error="timeout")
    return inv  # never completes


def poll(
    h: History,
    process: Any,
    records: list[tuple[int, Any]],
    start: int | None = None,
    partition: int = 0,
) -> Op:
    inv = h.invoke(process, "poll", topic=T, partition=partition, offset=start)
    return h.ok(inv, records=records)


def run(
    h: History,
    final: dict[int, list[tuple[int, Any]]] | None = None,
    faults: Sequence[tuple[int, int, str]] = (),
) -> Report:
    """Check `h` with `final` ({partition: records}) as the final read."""
    finals = {(T, p): recs for p, recs in (final or {}).items()}
    return check(h.ops, finals, faults)


def log(*values: Any) -> list[tuple[int, Any]]:
    return list(enumerate(values))


_VOLUME = {"sends_ok", "sends_fail", "sends_info", "polls", "records_polled", "final_records"}


def counts(report: Report) -> dict[str, int]:
    """The anomaly counts of a report (not the op counts)."""
    return {k: v for k, v in report.to_dict()["counts"].items() if k not in _VOLUME}


# ---------------------------------------------------------------------------------------------
# Hand-written histories


def test_a_clean_history_passes() -> None:
    h, _ = new_history()
    send(h, "w1", "a", 0)
    send(h, "w2", "b", 1)
    send(h, "w1", "x", outcome="fail")  # definitely not written, and indeed never read
    send(h, "w2", "y", outcome="info")  # unknown, and it did not land: fine
    send(h, "w1", "c", 2)
    poll(h, "c1", log("a", "b"))
    poll(h, "c1", [(2, "c")])  # continues where it left off
    poll(h, "c2", log("a", "b", "c"))
    report = run(h, {0: log("a", "b", "c")})
    assert report.ok
    assert set(counts(report).values()) == {0}
    assert (report.sends_ok, report.sends_fail, report.sends_info) == (3, 1, 1)
    assert (report.polls, report.records_polled, report.final_records) == (3, 6, 3)
    assert list(report.partitions) == [f"{T}/0"] and report.partitions[f"{T}/0"].ok


def test_an_acked_value_missing_from_the_final_read_is_lost() -> None:
    h, _ = new_history()
    send(h, "w", "a", 0)
    ack = send(h, "w", "b", 1)
    report = run(h, {0: log("a")})
    assert not report.ok
    (lost,) = report.lost
    assert (lost.value, lost.offset, lost.acked_ns) == ("b", 1, ack.time_ns)


def test_seen_by_a_poll_but_gone_from_the_final_read_is_lost() -> None:
    h, _ = new_history()
    send(h, "w", "a", 0)
    send(h, "w", "b", 1)
    poll(h, "c", log("a", "b"))
    report = run(h, {0: log("a")})  # e.g. the log was truncated by a new leader
    assert [x.value for x in report.lost] == ["b"] and not report.ok


def test_a_partition_without_a_final_read_lost_everything_acked() -> None:
    h, _ = new_history()
    send(h, "w", "a", 0, partition=0)
    send(h, "w", "b", 0, partition=1)
    report = run(h, {0: log("a")})
    assert [(x.partition, x.value) for x in report.lost] == [(1, "b")]
    assert report.partitions[f"{T}/0"].ok and not report.partitions[f"{T}/1"].ok


def test_duplicates_are_counted_but_do_not_fail() -> None:
    h, _ = new_history()
    send(h, "w", "a", 0)
    send(h, "w", "b", outcome="info")  # a retried send may land twice
    send(h, "w", "b", 2)
    report = run(h, {0: log("a", "b", "b")})
    assert report.ok
    (dup,) = report.duplicated
    assert (dup.value, dup.offsets) == ("b", (1, 2))


def test_two_values_at_one_offset_are_inconsistent() -> None:
    h, _ = new_history()
    send(h, "w", "a", 0)
    send(h, "w", "b", outcome="info")
    send(h, "w", "c", 1)
    poll(h, "c", log("a", "b"))  # a reader saw b at offset 1 ...
    report = run(h, {0: log("a", "c")})  # ... the log says c
    assert not report.ok
    (bad,) = report.inconsistent_offsets
    assert (bad.offset, bad.values) == (1, ("b", "c"))


def test_two_polls_disagreeing_are_inconsistent_too() -> None:
    h, _ = new_history()
    send(h, "w", "a", 0)
    poll(h, "c1", [(0, "a")])
    poll(h, "c2", [(0, "zz")])
    report = run(h, {0: log("a")})
    assert [x.offset for x in report.inconsistent_offsets] == [0]
    assert [x.value for x in report.phantom_reads] == ["zz"]


def test_reading_a_definitely_failed_send_is_an_aborted_read() -> None:
    h, _ = new_history()
    send(h, "w", "a", 0)
    send(h, "w", "f", outcome="fail")
    poll(h, "c", log("a", "f"))
    report = run(h, {0: log("a")})
    assert not report.ok
    (aborted,) = report.aborted_reads
    assert (aborted.value, aborted.offsets) == ("f", (1,))


def test_a_failed_send_retried_and_acked_is_not_aborted() -> None:
    h, _ = new_history()
    send(h, "w", "a", outcome="fail")
    send(h, "w", "a", 0)
    report = run(h, {0: log("a")})
    assert report.ok and not report.aborted_reads


def test_a_value_read_away_from_its_acked_offset_is_wrong() -> None:
    h, _ = new_history()
    send(h, "w", "a", 0)
    send(h, "w", "b", 1)
    report = run(h, {0: log("b", "a")})  # swapped
    assert not report.ok
    assert [(x.value, x.acked, x.read) for x in report.wrong_offset] == [
        ("a", (0,), (1,)),
        ("b", (1,), (0,)),
    ]
    assert not report.lost  # both are there, just not where they were acknowledged


def test_unacked_values_that_landed_are_fine_and_counted() -> None:
    h, _ = new_history()
    send(h, "w", "a", outcome="info")  # landed
    send(h, "w", "b", outcome="info")  # did not land: not lost, it was never acknowledged
    send(h, "w2", "c", outcome=None)  # never completed, landed
    report = run(h, {0: log("a", "c")})
    assert report.ok
    assert [x.value for x in report.unacked_but_read] == ["a", "c"]
    assert report.sends_info == 3


def test_a_process_that_moves_on_leaves_its_last_op_unknown() -> None:
    h, _ = new_history()
    send(h, "w", "a", outcome=None)
    send(h, "w", "b", 0)  # same process, next op: "a" is now an unknown outcome
    report = run(h, {0: log("b", "a")})
    assert report.ok and [x.value for x in report.unacked_but_read] == ["a"]


def test_a_value_nobody_sent_is_a_phantom() -> None:
    h, _ = new_history()
    send(h, "w", "a", 0, partition=0)
    send(h, "w", "b", 0, partition=1)
    report = run(h, {0: log("a", "b"), 1: log("b")})  # b served from the wrong partition
    assert not report.ok
    assert [(x.partition, x.value) for x in report.phantom_reads] == [(0, "b")]


def test_a_poll_going_backwards_is_reordered() -> None:
    h, _ = new_history()
    for i, v in enumerate("abcd"):
        send(h, "w", v, i)
    poll(h, "c", log("a", "b", "c"))
    p = poll(h, "c", [(1, "b"), (3, "d")])  # asked to continue at 3, got 1 first
    report = run(h, {0: log(*"abcd")})
    assert report.ok  # reported, not failed
    assert report.reordered == (PollAnomaly("c", T, 0, p.index, expected=3, offset=1),)
    # and inside one poll:
    h2, _ = new_history()
    for i, v in enumerate("abc"):
        send(h2, "w", v, i)
    poll(h2, "c", [(0, "a"), (2, "c"), (1, "b")])
    assert [(x.expected, x.offset) for x in run(h2, {0: log(*"abc")}).reordered] == [(3, 1)]
    # Served the last record again: a step back of one is still backwards.
    h3, _ = new_history()
    for i, v in enumerate("abc"):
        send(h3, "w", v, i)
    poll(h3, "c", log("a", "b"))
    poll(h3, "c", [(1, "b"), (2, "c")])
    poll(h3, "c", [(2, "c")], start=2)
    poll(h3, "c", [(2, "c")], start=2)  # asking for the same offset twice is fine
    assert [(x.expected, x.offset) for x in run(h3, {0: log(*"abc")}).reordered] == [(2, 1)]


def test_a_poll_jumping_over_existing_offsets_skipped() -> None:
    h, _ = new_history()
    for i, v in enumerate("abcde"):
        send(h, "w", v, i)
    poll(h, "c", log("a", "b"))
    poll(h, "c", [(4, "e")])  # 2 and 3 exist
    report = run(h, {0: log(*"abcde")})
    (skip,) = report.skipped
    assert (skip.expected, skip.offset, skip.missing, skip.missing_count) == (2, 4, (2, 3), 2)
    assert report.ok


def test_seeks_and_sparse_offsets_are_not_skips_or_reorders() -> None:
    h, _ = new_history()
    send(h, "w", "a", 0)
    send(h, "w", "b", 1)
    send(h, "w", "c", 5)  # offsets may be sparse (2..4 never existed)
    send(h, "w", "d", 6)
    poll(h, "c", log("a", "b"))
    poll(h, "c", [(5, "c")])  # jumps over 2..4, which no read ever saw: fine
    poll(h, "c", [(6, "d")], start=6)  # explicit position
    poll(h, "c", [(0, "a")], start=0)  # seeking backwards is the consumer's choice
    poll(h, "c", [(1, "b")])  # continues after its seek
    poll(h, "c", [], start=6)  # an empty poll still moves the position
    poll(h, "c", [(6, "d")])
    report = run(h, {0: [(0, "a"), (1, "b"), (5, "c"), (6, "d")]})
    assert report.ok and not report.skipped and not report.reordered


def test_unavailability_after_each_fault() -> None:
    h, clock = new_history(step=0)  # the clock reads whatever clock.t says
    faults = [
        Fault(1_000, 1_500, "kill"),
        Fault(5_000, 5_100, "kill"),
        Fault(9_000, 9_001, "pause"),
    ]
    clock.t = 100
    send(h, "w1", "a", 0)
    clock.t = 900
    inflight = h.invoke("w2", "send", topic=T, partition=0, value="inflight")
    clock.t = 1_100  # the first kill began at 1_000
    h.ok(inflight, offset=1)  # in flight when it began: says nothing about recovery
    clock.t = 1_200
    failed = h.invoke("w1", "send", topic=T, partition=0, value="x")
    clock.t = 1_300
    h.fail(failed)
    clock.t = 2_000
    first = h.invoke("w1", "send", topic=T, partition=0, value="b")
    clock.t = 3_000
    h.ok(first, offset=2)  # recovered 2_000 after the first kill
    clock.t = 5_000
    second = h.invoke("w1", "send", topic=T, partition=0, value="c")
    clock.t = 5_700
    h.ok(second, offset=3)  # 700 after the second
    report = run(h, {0: log("a", "inflight", "b", "c")}, faults)
    assert report.ok
    assert [(u.name, u.unavailable_ns) for u in report.unavailability] == [
        ("kill", 2_000),
        ("kill", 700),
        ("pause", None),  # no successful send afterwards
    ]
    stats = report.fault_stats()
    assert (stats["kill"].count, stats["kill"].p50_ns, stats["kill"].p99_ns) == (2, 700, 2_000)
    assert (stats["pause"].unrecovered, stats["pause"].p50_ns) == (1, None)
    assert report.partitions[f"{T}/0"].unavailability == report.unavailability


def test_unavailability_percentiles_use_nearest_rank() -> None:
    h, clock = new_history(step=0)
    faults = []
    for i in range(1, 101):  # 100 kills; the recovery after kill i takes i units
        start = i * 1_000
        faults.append((start, start + 1, "kill"))
        clock.t = start
        inv = h.invoke("w", "send", topic=T, partition=0, value=i)
        clock.t = start + i
        h.ok(inv, offset=i - 1)
    report = run(h, {0: [(i - 1, i) for i in range(1, 101)]}, faults)
    s = report.fault_stats()["kill"]
    assert (s.count, s.p50_ns, s.p99_ns, s.max_ns, s.unrecovered) == (100, 50, 99, 100, 0)


def test_the_summary_ends_with_the_four_headline_counts() -> None:
    h, _ = new_history()
    send(h, "w", "a", 0)
    send(h, "w", "b", 1)
    send(h, "w", "f", outcome="fail")
    poll(h, "c", [(0, "a"), (1, "zz")])
    report = run(h, {0: log("a", "a", "f")}, [(0, 5, "kill")])
    text = format_summary(report)
    assert text.splitlines()[-4:] == [
        "lost: 1",  # b
        "duplicated: 1",  # a at 0 and 1
        "inconsistent_offsets: 1",  # offset 1: zz, a
        "aborted_reads: 1",  # f
    ]
    assert text.startswith("history check: FAILED")
    assert "unavailable after kill: n=1" in text
    clean = format_summary(run(h, {0: log("a", "b")}))
    assert clean.splitlines()[-4:] == [
        "lost: 0",
        "duplicated: 0",
        "inconsistent_offsets: 1",  # the poll's zz at offset 1 still disagrees
        "aborted_reads: 0",
    ]


def test_report_to_dict_is_json() -> None:
    h, _ = new_history()
    send(h, "w", "a", 0)
    send(h, 7, 42, 1)  # int processes and values survive too
    send(h, "w", "b", 0, partition=1)
    report = run(h, {0: log("a")}, [(0, 10, "partition")])
    d = json.loads(json.dumps(report.to_dict()))
    assert d["ok"] is False and d["counts"]["lost"] == 2
    assert {x["value"] for x in d["lost"]} == {42, "b"}
    assert set(d["partitions"]) == {f"{T}/0", f"{T}/1"}
    assert d["partitions"][f"{T}/0"]["counts"]["lost"] == 1
    assert d["fault_stats"]["partition"]["count"] == 1


# ---------------------------------------------------------------------------------------------
# The recorder


def test_history_records_pairs_and_round_trips(tmp_path: Path) -> None:
    h, _ = new_history()
    send(h, "w", "a", 0)
    send(h, 3, 17, outcome="info")
    poll(h, "c", [(0, "a"), (1, 17)], start=0)
    h.record_fault("kill", 10, 20)
    with h.fault("partition"):
        send(h, "w", "b", 2)
    h.set_final_read(T, 0, log("a", 17, "b"))
    assert [op.index for op in h.ops] == list(range(len(h.ops)))
    assert h.ops[1].type == "ok" and h.ops[1].offset == 0 and h.ops[1].value == "a"
    path = tmp_path / "h.jsonl"
    h.dump(path)
    loaded = History.load(path)
    assert loaded.ops == h.ops and loaded.faults == h.faults
    assert loaded.final_reads == h.final_reads
    (fault,) = [f for f in loaded.faults if f.name == "partition"]
    assert fault.start_ns < loaded.ops[-1].time_ns <= fault.end_ns
    assert check_history(loaded) == check_history(h)
    assert check_history(loaded).ok


def test_history_streams_every_record_as_it_goes(tmp_path: Path) -> None:
    path = tmp_path / "stream.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        h = History(stream_to=f)
        send(h, "w", "a", 0)
        h.record_fault("kill", 1, 2)
        h.set_final_read(T, 0, log("a"))
        # Readable before anything is closed or dumped: a crashed run still leaves this.
        loaded = History.load(path)
    assert loaded.ops == h.ops and loaded.faults == h.faults
    assert loaded.final_reads == h.final_reads


def test_history_is_safe_to_record_from_threads() -> None:
    h = History()
    per_thread = 500

    def worker(n: int) -> None:
        for i in range(per_thread):
            send(h, n, f"{n}-{i}", i)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    ops = h.ops
    assert len(ops) == 4 * per_thread * 2
    assert [op.index for op in ops] == list(range(len(ops)))
    assert all(a.time_ns <= b.time_ns for a, b in itertools.pairwise(ops))
    assert check(ops, {}).sends_ok == 4 * per_thread  # every invoke met its own completion


def test_history_rejects_bad_input(tmp_path: Path) -> None:
    h, _ = new_history()
    done = send(h, "w", "a", 0)
    with pytest.raises(ValueError):
        h.ok(done)  # only an invoke can be completed
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "op", "process": 1, "type": "maybe", "f": "send"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        History.load(bad)
    bad.write_text('{"kind": "header", "format": "something-else", "version": 1}\n')
    with pytest.raises(ValueError):
        History.load(bad)


def test_command_line_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h, _ = new_history()
    send(h, "w", "a", 0)
    h.set_final_read(T, 0, log("a"))
    good = tmp_path / "good.jsonl"
    h.dump(good)
    assert main([str(good)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "aborted_reads: 0"

    send(h, "w", "b", 1)  # acknowledged, missing from the final read
    bad = tmp_path / "bad.jsonl"
    h.dump(bad)
    assert main([str(bad), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["counts"]["lost"] == 1
    assert main([str(tmp_path / "missing.jsonl")]) == 2

    # And as a module, the way the chaos command and a person re-check a saved run.
    proc = subprocess.run(
        [sys.executable, "-m", "chaos.checker", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-4] == "lost: 1"


# ---------------------------------------------------------------------------------------------
# Generated clean runs and their mutations


@dataclass
class Run:
    ops: list[Op]
    final: dict[tuple[str, int], list[tuple[int, Any]]]
    faults: list[tuple[int, int, str]]


_KINDS = (
    "send_ok",
    "send_ok",
    "send_ok",
    "send_fail",
    "send_info_landed",
    "send_info_lost",
    "send_unfinished_landed",
    "poll",
    "poll",
    "seek_poll",
)


@st.composite
def clean_runs(draw: st.DrawFn, min_steps: int = 0, max_poll: int = 4) -> Run:
    """A run against a correct broker: a log per partition that only ever appends."""
    n_parts = draw(st.integers(1, 3))
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(_KINDS),
                st.integers(0, n_parts - 1),  # partition
                st.integers(0, 2),  # worker or consumer number
                st.integers(0, max_poll),  # poll size
                st.booleans(),  # complete now, or later (before the process's next op)
                st.integers(0, 10_000),  # seek position, scaled to the log
            ),
            min_size=min_steps,
            max_size=60,
        )
    )
    clock = Clock(step=10)
    h = History(clock=clock)
    logs: dict[int, list[Any]] = {p: [] for p in range(n_parts)}
    positions: dict[tuple[str, int], int] = {}
    deferred: dict[str, Any] = {}
    for n, (kind, p, who, size, now, seek) in enumerate(steps):
        process = f"w{who}" if kind.startswith("send") else f"c{who}"
        if process in deferred:  # a process completes its op before starting the next
            deferred.pop(process)()
        partition_log = logs[p]
        done = None
        if kind.startswith("send"):
            value = f"v{n}"
            inv = h.invoke(process, "send", topic=T, partition=p, value=value)
            if kind == "send_ok":
                done = partial(h.ok, inv, offset=len(partition_log))
                partition_log.append(value)
            elif kind == "send_fail":
                done = partial(h.fail, inv, error="NOT_ENOUGH_REPLICAS")
            elif kind == "send_info_landed":
                done = partial(h.info, inv, error="timeout")
                partition_log.append(value)
            elif kind == "send_info_lost":
                done = partial(h.info, inv, error="connection lost")
            else:  # unfinished: the worker died; the write landed
                partition_log.append(value)
        else:
            if kind == "seek_poll":
                start: int | None = seek % (len(partition_log) + 1)
                pos = start
            else:
                start, pos = None, positions.get((process, p), 0)
            assert pos is not None
            records = [
                (o, partition_log[o]) for o in range(pos, min(len(partition_log), pos + size))
            ]
            inv = h.invoke(process, "poll", topic=T, partition=p, offset=start)
            positions[(process, p)] = pos + len(records)
            done = partial(h.ok, inv, records=records)
        if done is not None:
            if now:
                done()
            else:
                deferred[process] = done
    for done in deferred.values():
        done()
    end = clock.t
    faults = [
        (lo, hi, name)
        for lo, hi, name in draw(
            st.lists(
                st.tuples(
                    st.integers(0, end), st.integers(0, end), st.sampled_from(["kill", "pause"])
                ),
                max_size=4,
            )
        )
        if lo <= hi
    ]
    final = {(T, p): list(enumerate(values)) for p, values in logs.items()}
    return Run(list(h.ops), final, faults)


def _check(r: Run) -> Report:
    return check(r.ops, r.final, r.faults)


def _acked(r: Run) -> list[Op]:
    return [op for op in r.ops if op.f == "send" and op.type == "ok"]


_settings = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(clean_runs())
def test_generated_clean_runs_pass(r: Run) -> None:
    report = _check(r)
    assert report.ok, format_summary(report)
    found = counts(report)
    # Unknown outcomes that landed are read without an ack: expected, and exactly those.
    read = {v for recs in r.final.values() for _, v in recs}
    assert {x.value for x in report.unacked_but_read} == read - {op.value for op in _acked(r)}
    del found["unacked_but_read"]
    assert set(found.values()) <= {0}, format_summary(report)
    assert report.sends_ok == len(_acked(r))
    for u in report.unavailability:
        assert u.unavailable_ns is None or u.unavailable_ns >= 0
    assert format_summary(report).splitlines()[-4:] == [
        "lost: 0",
        "duplicated: 0",
        "inconsistent_offsets: 0",
        "aborted_reads: 0",
    ]


@_settings
@given(clean_runs(min_steps=10), st.data())
def test_dropping_an_acked_value_from_the_final_read_is_caught(r: Run, data: st.DataObject) -> None:
    acked = _acked(r)
    assume(acked)
    victim = data.draw(st.sampled_from(acked))
    key = (victim.topic, victim.partition or 0)
    r.final[key] = [(o, v) for o, v in r.final[key] if v != victim.value]
    report = _check(r)
    assert not report.ok
    assert [(x.value, x.offset) for x in report.lost] == [(victim.value, victim.offset)]


@_settings
@given(clean_runs(min_steps=10), st.data())
def test_duplicating_a_value_is_caught_and_allowed(r: Run, data: st.DataObject) -> None:
    keys = [k for k, recs in r.final.items() if recs]
    assume(keys)
    key = data.draw(st.sampled_from(keys))
    _, value = data.draw(st.sampled_from(r.final[key]))
    r.final[key].append((len(r.final[key]), value))
    report = _check(r)
    assert [d.value for d in report.duplicated] == [value]
    assert report.ok  # at-least-once: a duplicate is not a loss


@_settings
@given(clean_runs(min_steps=10), st.data())
def test_swapping_two_offsets_is_caught(r: Run, data: st.DataObject) -> None:
    acked = {(op.topic, op.partition, op.value) for op in _acked(r)}
    keys = [
        k
        for k, recs in r.final.items()
        if len(recs) >= 2 and any((*k, v) in acked for _, v in recs)
    ]
    assume(keys)
    key = data.draw(st.sampled_from(keys))
    recs = r.final[key]
    i = data.draw(st.sampled_from([i for i, (_, v) in enumerate(recs) if (*key, v) in acked]))
    j = data.draw(st.sampled_from([j for j in range(len(recs)) if j != i]))
    (oi, vi), (oj, vj) = recs[i], recs[j]
    recs[i], recs[j] = (oi, vj), (oj, vi)
    report = _check(r)
    assert not report.ok
    # The acked value now sits at the other offset: wrong, unless a poll saw it where it was
    # acknowledged, and then that poll and the final read disagree about the offset.
    assert vi in {x.value for x in report.wrong_offset} or oi in {
        x.offset for x in report.inconsistent_offsets
    }


@_settings
@given(clean_runs(min_steps=10), st.data())
def test_reading_a_failed_value_is_caught(r: Run, data: st.DataObject) -> None:
    failed = [op for op in r.ops if op.f == "send" and op.type == "fail"]
    assume(failed)
    victim = data.draw(st.sampled_from(failed))
    key = (victim.topic, victim.partition or 0)
    r.final[key].append((len(r.final[key]), victim.value))
    report = _check(r)
    assert not report.ok
    assert [x.value for x in report.aborted_reads] == [victim.value]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(clean_runs(min_steps=30, max_poll=8), st.data())
def test_a_poll_that_skips_a_record_is_caught(r: Run, data: st.DataObject) -> None:
    polls = [i for i, op in enumerate(r.ops) if op.f == "poll" and len(op.records) >= 3]
    assume(polls)
    i = data.draw(st.sampled_from(polls))
    k = data.draw(st.integers(1, len(r.ops[i].records) - 2))
    records = r.ops[i].records
    r.ops[i] = replace(r.ops[i], records=records[:k] + records[k + 1 :])
    report = _check(r)
    assert [(x.expected, x.missing) for x in report.skipped] == [(records[k][0], (records[k][0],))]
