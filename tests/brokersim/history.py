"""What the simulated clients did and were told, and the checks over it.

Checked as the run goes (cheap): every read is below the high watermark the same answer gave,
dense within itself, and agrees with every earlier read of the same offsets (what a consumer
read is never taken back); no producer id is handed out twice; an idempotent producer with one
batch in flight is never told its sequence is out of order or unknown; no fetch is answered
from below the log start the answer gives; a DeleteRecords answer's low watermark is at least
the offset asked for, and a bad one (above the high watermark, below -1) is refused.

Checked at the end, against each partition's final log (read through the handlers from its
leader, and compared across replicas): offsets dense from the log start to the high watermark;
every record acknowledged with acks=all there, at the offset it was acknowledged at; every
record acknowledged with acks=1 at its offset if anywhere (acks=1 may lose a record, never move
it); a plain batch answered "not written" nowhere; every idempotent batch at most once, and
exactly once where acknowledged; every acknowledged group commit is the group's committed
offset unless a later commit may have replaced it; the log starts at or above every acknowledged
DeleteRecords offset.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from tests.brokersim.fixture import Violation

TP = tuple[str, int]

NOT_WRITTEN = frozenset({"NOT_LEADER", "LEADER_NOT_AVAILABLE", "NOT_ENOUGH_REPLICAS"})
"""Answers that mean a plain batch was not written (docs/semantics.md)."""


@dataclass(slots=True)
class Attempt:
    producer: str
    tp: TP
    values: tuple[bytes, ...]
    acks: int
    idempotent: bool
    outcome: str = "unknown"
    """"ok", "not written" or "unknown"."""
    offset: int = -1
    """The acknowledged base offset (-1: none, or DUPLICATE_SEQUENCE_NUMBER's unknown one)."""
    code: str = ""
    sent_at: float = 0.0


@dataclass(slots=True)
class Commit:
    group: str
    tp: TP
    offset: int
    sent_at: float
    outcome: str = "unknown"


@dataclass(slots=True)
class Deletion:
    tp: TP
    offset: int
    bad: bool
    """Asked for an offset that must be refused (above the high watermark, or below -1)."""
    sent_at: float = 0.0
    outcome: str = "unknown"
    """"ok", or the error code."""
    low_watermark: int = -1


@dataclass
class History:
    attempts: list[Attempt] = field(default_factory=list)
    reads: dict[TP, dict[int, bytes]] = field(default_factory=lambda: defaultdict(dict))
    producer_ids: dict[int, str] = field(default_factory=dict)
    commits: list[Commit] = field(default_factory=list)
    deletions: list[Deletion] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    records_read: int = 0

    def fail(self, prop: str, detail: str) -> None:
        self.violations.append(Violation(prop, detail))

    # -- online checks -------------------------------------------------------------------------
    def producer_id(self, pid: int, who: str) -> None:
        if pid in self.producer_ids:
            self.fail(
                "producer ids unique",
                f"producer id {pid} given to {who} was given to {self.producer_ids[pid]} before",
            )
        self.producer_ids[pid] = who

    def deleted(self, d: Deletion) -> None:
        """A DeleteRecords was answered OK with d.low_watermark."""
        if d.bad:
            self.fail(
                "bad delete-records refused",
                f"DeleteRecords of {d.tp} before {d.offset} was answered OK "
                f"(low watermark {d.low_watermark})",
            )
        elif d.low_watermark < d.offset:
            self.fail(
                "delete-records answers its new start",
                f"DeleteRecords of {d.tp} before {d.offset} answered low watermark "
                f"{d.low_watermark}",
            )

    def acked_log_start(self, tp: TP) -> int:
        """The highest log start an acknowledged DeleteRecords of tp answered."""
        return max(
            (d.low_watermark for d in self.deletions if d.tp == tp and d.outcome == "ok"),
            default=0,
        )

    def read(
        self,
        tp: TP,
        offset: int,
        batches: list[tuple[int, list[bytes]]],
        high_watermark: int,
        log_start: int = 0,
    ) -> None:
        """A fetch at `offset` answered these (base offset, values) batches."""
        if batches and offset < log_start:
            self.fail(
                "nothing served below the log start",
                f"{tp}: a fetch at {offset} was answered with records, log start {log_start}",
            )
        seen = self.reads[tp]
        expect = None
        for base, values in batches:
            if expect is not None and base != expect:
                self.fail("offsets dense", f"{tp}: a fetch returned batch {base} after {expect}")
            expect = base + len(values)
            if expect > high_watermark:
                self.fail(
                    "no read past the high watermark",
                    f"{tp}: a fetch returned offsets up to {expect - 1}, high watermark "
                    f"{high_watermark}",
                )
            for k, v in enumerate(values):
                o = base + k
                if o < offset:
                    continue
                self.records_read += 1
                old = seen.setdefault(o, v)
                if old != v:
                    self.fail(
                        "reads never taken back",
                        f"{tp} offset {o} was read as {old!r}, now as {v!r}",
                    )

    # -- the end ---------------------------------------------------------------------------------
    def check_log(self, tp: TP, log_start: int, log: dict[int, bytes]) -> None:
        """The final log of a partition from its log start (offset -> value)."""
        offsets = sorted(log)
        if offsets and (offsets[0] != log_start or offsets[-1] - offsets[0] + 1 != len(offsets)):
            holes = [o for o in range(log_start, offsets[-1]) if o not in log][:5]
            self.fail("offsets dense", f"{tp}: log from {log_start} misses offsets {holes}")
        for o, v in self.reads.get(tp, {}).items():
            if o >= log_start and log.get(o, v) != v:
                self.fail(
                    "reads never taken back",
                    f"{tp} offset {o} was read as {v!r}; the log now holds {log.get(o)!r}",
                )
        where: dict[bytes, list[int]] = defaultdict(list)
        for o, v in log.items():
            where[v].append(o)
        for o, v in self.reads.get(tp, {}).items():
            if o < log_start:
                where[v].append(o)
        for a in self.attempts:
            if a.tp != tp:
                continue
            found = [sorted(set(where.get(v, []))) for v in a.values]
            if a.idempotent and any(len(f) > 1 for f in found):
                self.fail(
                    "idempotent records exactly once",
                    f"{a.producer}'s {a.values[0]!r} is at offsets {found[0]} of {tp}",
                )
            if a.outcome == "not written" and any(found) and not a.idempotent:
                self.fail(
                    "'not written' means not written",
                    f"{a.producer}'s {a.values[0]!r} was answered {a.code} but is at "
                    f"{found[0]} of {tp}",
                )
            if a.outcome != "ok":
                continue
            for k, v in enumerate(a.values):
                at = found[k]
                want = a.offset + k if a.offset >= 0 else None
                if want is not None and at and at != [want]:
                    self.fail(
                        "acknowledged records stay where they were acknowledged",
                        f"{a.producer}'s {v!r} acknowledged at {want} of {tp} is at {at}",
                    )
                if a.acks == -1 and not at and (want is None or want >= log_start):
                    self.fail(
                        "no acknowledged record lost",
                        f"{a.producer}'s {v!r} acknowledged (acks=all) at offset {want} of "
                        f"{tp} is not in the log [{log_start}, {log_start + len(log)})",
                    )

    def check_commits(self, final: dict[tuple[str, TP], int]) -> None:
        last_ok: dict[tuple[str, TP], Commit] = {}
        for c in self.commits:
            if c.outcome == "ok":
                prev = last_ok.get((c.group, c.tp))
                if prev is None or c.sent_at >= prev.sent_at:
                    last_ok[(c.group, c.tp)] = c
        for key, c in last_ok.items():
            allowed = {c.offset} | {
                d.offset
                for d in self.commits
                if (d.group, d.tp) == key and d.outcome != "not written" and d.sent_at >= c.sent_at
            }
            got = final.get(key, -1)
            if got not in allowed:
                self.fail(
                    "acknowledged commits kept",
                    f"group {key[0]} committed {c.offset} for {key[1]} (acknowledged); it now "
                    f"has {got}",
                )
