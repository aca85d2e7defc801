"""The history of a chaos run: what each worker asked, what it was told, and when.

Workers record an *invoke* before each operation and exactly one completion after it, as in
Jepsen: `ok` (it happened; a send carries its acknowledged offset, a poll the records it read),
`fail` (it definitely did not happen: the broker said so), or `info` (unknown: a timeout or a lost
connection; the send may or may not have been written). An invoke with no completion at the end
of the run counts as `info`. A process does one operation at a time, so a completion belongs to
the last invoke of the same process.

The recorder also keeps the fault windows (start, end, name) and the final read of each
partition, and writes all of it as JSON lines, so a failing run's history can be re-checked
offline with `python -m chaos.checker HISTORY.jsonl`.

Time is `time.monotonic_ns()` by default: only differences matter (fault start to first
acknowledged send), and a monotonic clock cannot jump during the run. Appends take a lock, so
threads and asyncio tasks may record into one History; each op gets the next `index`, and its
`time_ns` is read under the same lock, so index order and time order agree.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

__all__ = [
    "FORMAT",
    "Fault",
    "FinalReads",
    "History",
    "Op",
    "OpType",
    "Value",
]

FORMAT = "liferaft-chaos-history"
FORMAT_VERSION = 1

Value = str | int  # message values are unique per partition; JSON keeps str and int apart
OpType = Literal["invoke", "ok", "fail", "info"]
_OP_TYPES = ("invoke", "ok", "fail", "info")


@dataclass(frozen=True, slots=True, kw_only=True)
class Op:
    """One line of the history.

    For f="send": `value` is the message; an ok completion's `offset` is the acknowledged offset.
    For f="poll": `offset` is the position the consumer asked to read from (None: "continue where
    my last poll ended"), and an ok completion's `records` are the (offset, value) pairs read, in
    the order the broker returned them. Other `f`s are kept but not analysed.
    """

    process: int | str
    type: OpType
    f: str
    topic: str = ""
    partition: int | None = None
    value: Value | None = None
    offset: int | None = None
    records: tuple[tuple[int, Value], ...] = ()
    time_ns: int = 0
    index: int = -1  # position in the history, set by History
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["records"] = [list(r) for r in self.records]
        return {k: v for k, v in d.items() if v is not None and v != []}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Op:
        if d.get("type") not in _OP_TYPES:
            raise ValueError(f"op type must be one of {_OP_TYPES}: {d!r}")
        return cls(
            process=d["process"],
            type=d["type"],
            f=d["f"],
            topic=d.get("topic", ""),
            partition=d.get("partition"),
            value=d.get("value"),
            offset=d.get("offset"),
            records=tuple((int(o), v) for o, v in d.get("records", ())),
            time_ns=d.get("time_ns", 0),
            index=d.get("index", -1),
            error=d.get("error"),
        )


class Fault(NamedTuple):
    """A fault window. A plain (start_ns, end_ns, name) tuple is accepted wherever this is."""

    start_ns: int
    end_ns: int
    name: str


FinalReads = Mapping[tuple[str, int], Sequence[tuple[int, Value]]]


class History:
    """A thread- and task-safe, append-only recorder of ops, faults and final reads.

    With `stream_to`, every record is also written to that text file as it is appended (and
    flushed), so even a run that dies mid-way leaves its history behind.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        stream_to: IO[str] | None = None,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: list[Op] = []
        self._faults: list[Fault] = []
        self._final: dict[tuple[str, int], tuple[tuple[int, Value], ...]] = {}
        self._stream = stream_to
        if stream_to is not None:
            self._write(stream_to, _header())

    # -- recording

    def now(self) -> int:
        return self._clock()

    def append(self, op: Op) -> Op:
        """Record `op` with the next index and, unless it has one, the current time."""
        with self._lock:
            op = replace(op, index=len(self._ops), time_ns=op.time_ns or self._clock())
            self._ops.append(op)
            if self._stream is not None:
                self._write(self._stream, {"kind": "op", **op.to_json()})
        return op

    def invoke(
        self,
        process: int | str,
        f: str,
        *,
        topic: str = "",
        partition: int | None = None,
        value: Value | None = None,
        offset: int | None = None,
    ) -> Op:
        return self.append(
            Op(
                process=process,
                type="invoke",
                f=f,
                topic=topic,
                partition=partition,
                value=value,
                offset=offset,
            )
        )

    def ok(
        self,
        invoke: Op,
        *,
        offset: int | None = None,
        records: Sequence[tuple[int, Value]] = (),
        partition: int | None = None,
    ) -> Op:
        """Complete `invoke` successfully: a send's acknowledged `offset`, a poll's `records`."""
        return self._complete(
            invoke,
            "ok",
            offset=invoke.offset if offset is None else offset,
            records=tuple((int(o), v) for o, v in records),
            partition=invoke.partition if partition is None else partition,
        )

    def fail(self, invoke: Op, *, error: str | None = None) -> Op:
        """Complete `invoke` as definitely not done."""
        return self._complete(invoke, "fail", error=error)

    def info(self, invoke: Op, *, error: str | None = None) -> Op:
        """Complete `invoke` with an unknown outcome."""
        return self._complete(invoke, "info", error=error)

    def _complete(self, invoke: Op, type_: OpType, **changes: Any) -> Op:
        if invoke.type != "invoke":
            raise ValueError(f"can only complete an invoke, not {invoke!r}")
        return self.append(replace(invoke, type=type_, time_ns=0, index=-1, **changes))

    def record_fault(self, name: str, start_ns: int, end_ns: int) -> Fault:
        fault = Fault(start_ns, end_ns, name)
        with self._lock:
            self._faults.append(fault)
            if self._stream is not None:
                self._write(self._stream, {"kind": "fault", **fault._asdict()})
        return fault

    @contextmanager
    def fault(self, name: str) -> Iterator[None]:
        """`with history.fault("kill"): ...` records the window the block ran in."""
        start = self.now()
        try:
            yield
        finally:
            self.record_fault(name, start, self.now())

    def set_final_read(
        self, topic: str, partition: int, records: Sequence[tuple[int, Value]]
    ) -> None:
        """The complete (offset, value) list read back from one partition after healing."""
        rows = tuple((int(o), v) for o, v in records)
        with self._lock:
            self._final[(topic, partition)] = rows
            if self._stream is not None:
                self._write(self._stream, _final_json(topic, partition, rows))

    # -- reading

    @property
    def ops(self) -> tuple[Op, ...]:
        with self._lock:
            return tuple(self._ops)

    @property
    def faults(self) -> tuple[Fault, ...]:
        with self._lock:
            return tuple(self._faults)

    @property
    def final_reads(self) -> dict[tuple[str, int], tuple[tuple[int, Value], ...]]:
        with self._lock:
            return dict(self._final)

    # -- JSON lines

    def dump(self, path: str | Path) -> None:
        """Write the whole history to `path` as JSON lines."""
        with open(path, "w", encoding="utf-8") as f:
            self.dump_to(f)

    def dump_to(self, out: IO[str]) -> None:
        with self._lock:
            self._write(out, _header(), flush=False)
            for op in self._ops:
                self._write(out, {"kind": "op", **op.to_json()}, flush=False)
            for fault in self._faults:
                self._write(out, {"kind": "fault", **fault._asdict()}, flush=False)
            for (topic, partition), rows in self._final.items():
                self._write(out, _final_json(topic, partition, rows), flush=False)
        out.flush()

    @classmethod
    def load(cls, path: str | Path) -> History:
        """Read a history written by `dump` or `stream_to` (ops keep their index and time)."""
        history = cls()
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    history._load_record(json.loads(line))
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{path}:{lineno}: {e}") from e
        return history

    def _load_record(self, rec: dict[str, Any]) -> None:
        kind = rec.pop("kind", None)
        if kind == "header":
            if rec.get("format") != FORMAT or rec.get("version") != FORMAT_VERSION:
                raise ValueError(f"not a {FORMAT} v{FORMAT_VERSION} file: {rec!r}")
        elif kind == "op":
            self._ops.append(Op.from_json(rec))
        elif kind == "fault":
            self._faults.append(Fault(int(rec["start_ns"]), int(rec["end_ns"]), str(rec["name"])))
        elif kind == "final_read":
            key = (str(rec["topic"]), int(rec["partition"]))
            self._final[key] = tuple((int(o), v) for o, v in rec["records"])
        else:
            raise ValueError(f"unknown record kind {kind!r}")

    @staticmethod
    def _write(out: IO[str], record: dict[str, Any], *, flush: bool = True) -> None:
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        if flush:
            out.flush()


def _header() -> dict[str, Any]:
    return {
        "kind": "header",
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "clock": "monotonic_ns",
        "wall_start": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _final_json(topic: str, partition: int, rows: Sequence[tuple[int, Value]]) -> dict[str, Any]:
    return {
        "kind": "final_read",
        "topic": topic,
        "partition": partition,
        "records": [list(r) for r in rows],
    }
