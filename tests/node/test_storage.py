"""Tests of node/storage.py, the node's durable Raft log on RocksDB.

The first half is a conformance suite: the same tests run against raft.storage.MemoryStorage (the
reference) and GroupStorage, the latter with a small in-memory tail (reads cross from RocksDB into
the tail), with no tail (every read goes to RocksDB), and reopened from disk after every write
(everything must come back). Several cases follow etcd's storage_test.go. A seeded random
differential test then drives both implementations through the same operations and compares
everything they show. The rest covers what only the durable one has: several groups in one
database, destroy, host metadata, grouped writes, and corruption that must be reported, never read.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest
from rocksdict import Options, Rdict

from node.storage import (
    CorruptStorageError,
    GroupKeys,
    GroupStorage,
    GroupUpdate,
    NodeStore,
    StorageError,
)
from raft import (
    CompactedError,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Snapshot,
    SnapshotMeta,
    UnavailableError,
)


def ent(index: int, term: int, data: bytes | None = None) -> Entry:
    return Entry(index=index, term=term, data=f"{index}@{term}".encode() if data is None else data)


def snap(index: int, term: int, voters: set[int] | None = None, data: bytes = b"") -> Snapshot:
    cs = ConfState(voters=frozenset(voters or {1, 2, 3}))
    return Snapshot(SnapshotMeta(index=index, term=term, conf_state=cs), data)


# -- the harness: one interface over both implementations ----------------------------------------
class Harness(Protocol):
    storage: Any

    def append(self, entries: list[Entry]) -> None: ...
    def set_hard_state(self, hs: HardState) -> None: ...
    def apply_snapshot(self, s: Snapshot) -> None: ...
    def create_snapshot(self, index: int, cs: ConfState, data: bytes) -> Snapshot: ...
    def compact(self, index: int) -> None: ...
    def reopen(self) -> None: ...


class MemoryHarness:
    def __init__(self, conf_state: ConfState | None = None) -> None:
        self.storage = MemoryStorage(conf_state)

    def append(self, entries: list[Entry]) -> None:
        self.storage.append(entries)

    def set_hard_state(self, hs: HardState) -> None:
        self.storage.set_hard_state(hs)

    def apply_snapshot(self, s: Snapshot) -> None:
        self.storage.apply_snapshot(s)

    def create_snapshot(self, index: int, cs: ConfState, data: bytes) -> Snapshot:
        return self.storage.create_snapshot(index, cs, data)

    def compact(self, index: int) -> None:
        self.storage.compact(index)

    def reopen(self) -> None:
        """Memory is "durable" as long as the object lives."""


class RocksHarness:
    def __init__(
        self,
        path: Path,
        conf_state: ConfState | None = None,
        *,
        tail_entries: int,
        tail_bytes: int = 1 << 20,
        reopen_always: bool = False,
        group_id: str = "p-orders-0",
    ) -> None:
        self.path = path
        self.tail = (tail_entries, tail_bytes)
        self.reopen_always = reopen_always
        self.group_id = group_id
        self.store = NodeStore(path, tail_entries=tail_entries, tail_bytes=tail_bytes)
        self.storage: GroupStorage = self.store.group(group_id)
        if conf_state is not None:
            self.storage.bootstrap(conf_state)
            self._after()

    def _write(self, **kw: Any) -> None:
        self.store.write([GroupUpdate(self.storage, **kw)])
        self._after()

    def append(self, entries: list[Entry]) -> None:
        self._write(entries=entries)

    def set_hard_state(self, hs: HardState) -> None:
        self._write(hard_state=hs)

    def apply_snapshot(self, s: Snapshot) -> None:
        self._write(snapshot=s)

    def create_snapshot(self, index: int, cs: ConfState, data: bytes) -> Snapshot:
        out = self.storage.create_snapshot(index, cs, data)
        self._after()
        return out

    def compact(self, index: int) -> None:
        self.storage.compact(index)
        self._after()

    def _after(self) -> None:
        if self.reopen_always:
            self.reopen()

    def reopen(self) -> None:
        self.store.close()
        self.store = NodeStore(self.path, tail_entries=self.tail[0], tail_bytes=self.tail[1])
        self.storage = self.store.group(self.group_id)

    def close(self) -> None:
        self.store.close()


KINDS = ["memory", "rocks", "rocks-no-tail", "rocks-reopen"]


@pytest.fixture(params=KINDS)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[RocksHarness] = []

    def factory(conf_state: ConfState | None = None) -> Harness:
        if request.param == "memory":
            return MemoryHarness(conf_state)
        path = tmp_path / f"db{len(made)}"
        h = RocksHarness(
            path,
            conf_state,
            tail_entries=0 if request.param == "rocks-no-tail" else 3,
            reopen_always=request.param == "rocks-reopen",
        )
        made.append(h)
        return h

    yield factory
    for h in made:
        h.close()


def seeded(make: Callable[..., Harness], terms: list[int] | None = None) -> Harness:
    """etcd's test log: a snapshot at (3, 3) followed by entries 4 and 5 (terms 4 and 5)."""
    h = make()
    h.apply_snapshot(snap(3, 3))
    terms = terms or [4, 5]
    h.append([ent(4 + i, t) for i, t in enumerate(terms)])
    return h


def observe(s: Any) -> dict[str, Any]:
    """Everything a Storage shows."""
    first, last = s.first_index(), s.last_index()
    return {
        "first": first,
        "last": last,
        "initial": s.initial_state(),
        "snapshot": s.snapshot(),
        "terms": [s.term(i) for i in range(first - 1, last + 1)],
        "entries": s.entries(first, last + 1),
    }


def outcome(h: Harness, method: str, *args: Any) -> Any:
    """What calling the method on h gives: its result, or the type of the error it raised.
    Methods are the harness's writes, or "entries" (a read) and "reopen"."""
    try:
        if method == "entries":
            return ("ok", h.storage.entries(*args))
        return ("ok", getattr(h, method)(*args))
    except (CompactedError, UnavailableError, ValueError) as e:
        return ("error", type(e))


# -- conformance: the same tests for MemoryStorage and GroupStorage --------------------------------
def test_empty_storage(make: Callable[..., Harness]) -> None:
    s = make().storage
    assert (s.first_index(), s.last_index()) == (1, 0)
    assert s.term(0) == 0
    with pytest.raises(UnavailableError):
        s.term(1)
    assert s.entries(1, 1) == []
    with pytest.raises(CompactedError):
        s.entries(0, 1)
    with pytest.raises(UnavailableError):
        s.entries(1, 2)
    assert s.initial_state() == (HardState(), ConfState())
    assert s.snapshot().is_empty()


def test_bootstrapped_membership(make: Callable[..., Harness]) -> None:
    cs = ConfState(voters=frozenset({1, 2, 3}), learners=frozenset({4}))
    h = make(cs)
    h.reopen()
    s = h.storage
    assert s.initial_state() == (HardState(), cs)
    assert s.snapshot() == Snapshot(SnapshotMeta(conf_state=cs))
    assert (s.first_index(), s.last_index(), s.term(0)) == (1, 0, 0)


def test_term(make: Callable[..., Harness]) -> None:
    s = seeded(make).storage
    with pytest.raises(CompactedError):
        s.term(2)
    assert [s.term(i) for i in (3, 4, 5)] == [3, 4, 5]
    with pytest.raises(UnavailableError):
        s.term(6)


def test_first_and_last_index(make: Callable[..., Harness]) -> None:
    h = seeded(make)
    assert (h.storage.first_index(), h.storage.last_index()) == (4, 5)
    h.append([ent(6, 5)])
    assert (h.storage.first_index(), h.storage.last_index()) == (4, 6)


@pytest.mark.parametrize(
    ("lo", "hi", "max_size", "want"),
    [
        (2, 6, None, CompactedError),
        (3, 4, None, CompactedError),
        (4, 5, None, [4]),
        (4, 6, None, [4, 5]),
        (4, 7, None, [4, 5, 6]),
        (4, 8, None, UnavailableError),
        (7, 7, None, []),
        (6, 4, None, []),
        # Each entry's size() is 24 + len(data) = 27 here.
        (4, 7, 0, [4]),  # at least one entry, even over max_size
        (4, 7, 26, [4]),
        (4, 7, 27, [4]),
        (4, 7, 27 * 2 - 1, [4]),
        (4, 7, 27 * 2, [4, 5]),
        (4, 7, 27 * 3 - 1, [4, 5]),
        (4, 7, 27 * 3, [4, 5, 6]),
        (5, 7, 27, [5]),
        (6, 7, 0, [6]),
    ],
)
def test_entries(
    make: Callable[..., Harness], lo: int, hi: int, max_size: int | None, want: Any
) -> None:
    h = seeded(make, terms=[4, 5, 6])
    if isinstance(want, type):
        with pytest.raises(want):
            h.storage.entries(lo, hi, max_size)
    else:
        assert h.storage.entries(lo, hi, max_size) == [ent(i, i) for i in want]


@pytest.mark.parametrize(
    ("appended", "want"),
    [
        ([(4, 4), (5, 5)], [(4, 4), (5, 5)]),
        ([(4, 6), (5, 6)], [(4, 6), (5, 6)]),  # replace everything after the snapshot
        ([(4, 4), (5, 5), (6, 5)], [(4, 4), (5, 5), (6, 5)]),
        ([(2, 3), (3, 3), (4, 5)], [(4, 5)]),  # the part below first_index is ignored
        ([(5, 6)], [(4, 4), (5, 6)]),  # truncate a conflicting suffix
        ([(6, 5)], [(4, 4), (5, 5), (6, 5)]),
        ([(1, 1), (2, 2)], [(4, 4), (5, 5)]),  # wholly compacted: nothing to do
        ([(3, 3)], [(4, 4), (5, 5)]),
    ],
)
def test_append(
    make: Callable[..., Harness], appended: list[tuple[int, int]], want: list[tuple[int, int]]
) -> None:
    h = seeded(make)
    h.append([ent(i, t) for i, t in appended])
    s = h.storage
    assert s.entries(4, s.last_index() + 1) == [ent(i, t) for i, t in want]
    assert [s.term(i) for i in range(3, s.last_index() + 1)] == [3] + [t for _, t in want]
    assert (s.first_index(), s.last_index()) == (4, want[-1][0])


def test_append_with_a_gap_is_refused(make: Callable[..., Harness]) -> None:
    h = seeded(make)
    with pytest.raises(ValueError, match="missing log entry"):
        h.append([ent(7, 5)])
    assert observe(h.storage)["entries"] == [ent(4, 4), ent(5, 5)]


def test_truncation_deep_into_a_long_log(make: Callable[..., Harness]) -> None:
    h = make()
    h.append([ent(i, 1 + i // 10) for i in range(1, 41)])
    h.append([ent(i, 7, b"new %d" % i) for i in range(17, 23)])
    s = h.storage
    assert s.last_index() == 22
    assert s.entries(1, 23) == [ent(i, 1 + i // 10) for i in range(1, 17)] + [
        ent(i, 7, b"new %d" % i) for i in range(17, 23)
    ]
    assert [s.term(i) for i in (9, 10, 16, 17, 22)] == [1, 2, 2, 7, 7]
    with pytest.raises(UnavailableError):
        s.term(23)
    h.append([ent(23, 7)])
    assert h.storage.entries(22, 24) == [ent(22, 7, b"new 22"), ent(23, 7)]


def test_hard_state(make: Callable[..., Harness]) -> None:
    h = make(ConfState(voters=frozenset({1})))
    h.set_hard_state(HardState(term=3, vote=2, commit=0))
    h.set_hard_state(HardState(term=4, vote=1, commit=0))
    assert h.storage.initial_state() == (
        HardState(term=4, vote=1, commit=0),
        ConfState(voters=frozenset({1})),
    )


def test_apply_snapshot_replaces_the_log(make: Callable[..., Harness]) -> None:
    h = make()
    h.append([ent(i, 1) for i in range(1, 9)])
    s4 = snap(4, 2, {1, 2}, b"state at 4")
    h.apply_snapshot(s4)
    s = h.storage
    assert (s.first_index(), s.last_index(), s.term(4)) == (5, 4, 2)
    assert s.snapshot() == s4
    assert s.initial_state()[1] == ConfState(voters=frozenset({1, 2}))
    assert s.entries(5, 5) == []
    with pytest.raises(CompactedError):
        s.term(3)
    with pytest.raises(UnavailableError):
        s.term(5)
    with pytest.raises(ValueError, match="older"):
        h.apply_snapshot(snap(4, 2))
    with pytest.raises(ValueError, match="older"):
        h.apply_snapshot(snap(3, 2))
    h.append([ent(5, 3), ent(6, 3)])
    assert h.storage.entries(5, 7) == [ent(5, 3), ent(6, 3)]
    assert h.storage.term(4) == 2


def test_create_snapshot(make: Callable[..., Harness]) -> None:
    h = seeded(make)
    cs = ConfState(voters=frozenset({1, 2, 3}))
    got = h.create_snapshot(4, cs, b"data4")
    assert got == Snapshot(SnapshotMeta(index=4, term=4, conf_state=cs), b"data4")
    assert h.storage.snapshot() == got
    assert (h.storage.first_index(), h.storage.last_index()) == (4, 5)  # not compacted
    assert h.create_snapshot(5, cs, b"data5").meta.term == 5
    assert h.create_snapshot(4, cs, b"again") == h.storage.snapshot()  # older: not taken
    assert h.storage.snapshot().data == b"data5"
    with pytest.raises(ValueError, match="past the last index"):
        h.create_snapshot(6, cs, b"")


def test_compact(make: Callable[..., Harness]) -> None:
    h = seeded(make)
    h.create_snapshot(5, ConfState(voters=frozenset({1})), b"")
    h.compact(2)
    h.compact(3)
    assert (h.storage.first_index(), h.storage.term(3)) == (4, 3)
    h.compact(4)
    s = h.storage
    assert (s.first_index(), s.last_index(), s.term(4), s.term(5)) == (5, 5, 4, 5)
    assert s.entries(5, 6) == [ent(5, 5)]
    with pytest.raises(CompactedError):
        s.entries(4, 6)
    with pytest.raises(CompactedError):
        s.term(3)
    with pytest.raises(ValueError, match="past the last index"):
        h.compact(6)
    h.compact(5)
    assert (s.first_index(), s.last_index(), s.term(5)) == (6, 5, 5)
    h.append([ent(6, 6)])
    assert h.storage.entries(6, 7) == [ent(6, 6)]


def test_compact_in_the_middle_of_a_term_run(make: Callable[..., Harness]) -> None:
    h = make()
    h.append([ent(i, 1 + i // 10) for i in range(1, 31)])
    h.create_snapshot(25, ConfState(voters=frozenset({1})), b"s")
    h.compact(15)
    h.reopen()
    s = h.storage
    assert (s.first_index(), s.term(15), s.term(16), s.term(20), s.term(30)) == (16, 2, 2, 3, 4)
    assert s.entries(16, 31) == [ent(i, 1 + i // 10) for i in range(16, 31)]


def test_reopen_everything_comes_back(make: Callable[..., Harness]) -> None:
    h = make(ConfState(voters=frozenset({1, 2})))
    h.append([ent(i, 1, bytes([i]) * i) for i in range(1, 21)])
    h.append([ent(i, 2) for i in range(15, 30)])
    h.set_hard_state(HardState(term=2, vote=1, commit=20))
    h.create_snapshot(12, ConfState(voters=frozenset({1, 2, 3})), b"app state")
    h.compact(10)
    h.append([Entry(30, 2, EntryType.CONF_CHANGE, b"cc"), Entry(31, 3, EntryType.NOOP)])
    before = observe(h.storage)
    h.reopen()
    assert observe(h.storage) == before


def test_random_operations_match_memory_storage(tmp_path: Path) -> None:
    """A seeded differential test: every operation and read gives the same answer (or error)
    on MemoryStorage and GroupStorage, whose tail is tiny and which is sometimes reopened."""
    rng = random.Random(20240611)
    mem = MemoryHarness()
    rocks = RocksHarness(tmp_path / "db", tail_entries=5, tail_bytes=300)
    try:
        for step in range(1000):
            s = mem.storage
            first, last = s.first_index(), s.last_index()
            op = rng.random()
            call: tuple[Any, ...]
            if op < 0.45:
                start = rng.randint(max(1, first - 3), last + (2 if rng.random() < 0.05 else 1))
                top = max(s.term(i) for i in range(first - 1, last + 1))
                term = top + rng.choice([0, 0, 1])
                ents = [
                    Entry(i, term, EntryType(rng.randrange(3)), rng.randbytes(rng.randrange(80)))
                    for i in range(start, start + rng.randint(1, 9))
                ]
                call = ("append", ents)
            elif op < 0.55:
                call = ("set_hard_state", HardState(rng.randrange(9), rng.randrange(4), last))
            elif op < 0.62:
                index = s.snapshot().meta.index + rng.randint(-2, 12)
                sn = snap(index, rng.randint(1, 9), {1, rng.randint(2, 5)}, rng.randbytes(20))
                call = ("apply_snapshot", sn)
            elif op < 0.72:
                cs = ConfState(voters=frozenset({1, 2}), learners=frozenset({7}))
                call = ("create_snapshot", rng.randint(first - 1, last + 1), cs, rng.randbytes(9))
            elif op < 0.82:
                # MemoryStorage may compact past its snapshot, GroupStorage clamps: stay below.
                call = ("compact", rng.choice([rng.randint(0, s.snapshot().meta.index), last + 1]))
            elif op < 0.9:
                call = ("reopen",)
            else:
                lo = rng.randint(first - 1, last + 2)
                hi = rng.randint(lo - 1, last + 2)
                call = ("entries", lo, hi, rng.choice([None, 0, 50, 200, 1000]))
            assert outcome(mem, *call) == outcome(rocks, *call), f"step {step}: {call}"
            assert observe(rocks.storage) == observe(mem.storage), f"step {step}: {call}"
        assert mem.storage.last_index() > 20  # the walk went somewhere
    finally:
        rocks.close()


# -- GroupStorage only ------------------------------------------------------------------------------
@contextmanager
def raw_db(path: Path) -> Iterator[Rdict]:
    """The database as RocksDB has it (the NodeStore on it must be closed)."""
    db = Rdict(str(path), Options(raw_mode=True))
    try:
        yield db
    finally:
        db.close()


def raw_keys(path: Path, prefix: bytes) -> list[bytes]:
    with raw_db(path) as db:
        it = db.keys(from_key=prefix)
        keys = []
        for k in it:
            if not k.startswith(prefix):
                break
            keys.append(k)
        del it
    return keys


def test_snapshot_and_entries_in_one_update_order(tmp_path: Path) -> None:
    """A Ready can carry a snapshot and the entries after it: the snapshot goes first."""
    with NodeStore(tmp_path / "db") as store:
        g = store.group("g")
        store.write([GroupUpdate(g, entries=[ent(i, 1) for i in range(1, 6)])])
        store.write([GroupUpdate(g, snapshot=snap(10, 2), entries=[ent(11, 3), ent(12, 3)])])
        assert (g.first_index(), g.last_index(), g.term(10), g.term(11)) == (11, 12, 2, 3)
        assert g.entries(11, 13) == [ent(11, 3), ent(12, 3)]


def test_truncated_suffix_is_gone_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = NodeStore(path)
    g = store.group("g")
    store.write([GroupUpdate(g, entries=[ent(i, 1 + i // 4) for i in range(1, 11)])])
    store.write([GroupUpdate(g, entries=[ent(6, 9), ent(7, 9)])])
    store.close()
    k = GroupKeys("g")
    assert raw_keys(path, k.entry_prefix) == [k.entry(i) for i in range(1, 8)]
    # Term runs: 1 (term 1), 4 (term 2), 6 (term 9); those of 8.. are gone with their entries.
    assert raw_keys(path, k.run_prefix) == [k.run(1), k.run(4), k.run(6)]
    store = NodeStore(path)
    g = store.group("g")
    assert g.entries(1, 8) == [ent(i, 1 + i // 4) for i in range(1, 6)] + [ent(6, 9), ent(7, 9)]
    store.close()


def test_compacted_prefix_is_gone_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = NodeStore(path)
    g = store.group("g")
    store.write([GroupUpdate(g, entries=[ent(i, 1 + i // 4) for i in range(1, 11)])])
    g.create_snapshot(6, ConfState(voters=frozenset({1})), b"x")
    g.compact(6)
    store.close()
    k = GroupKeys("g")
    assert raw_keys(path, k.entry_prefix) == [k.entry(i) for i in range(7, 11)]
    assert raw_keys(path, k.run_prefix) == [k.run(7), k.run(8)]


def test_compact_is_clamped_to_the_snapshot(tmp_path: Path) -> None:
    with NodeStore(tmp_path / "db") as store:
        g = store.group("g")
        store.write([GroupUpdate(g, entries=[ent(i, 1) for i in range(1, 11)])])
        g.compact(5)  # no snapshot covers 1..5: nothing may go
        assert g.first_index() == 1
        g.create_snapshot(3, ConfState(voters=frozenset({1})), b"")
        g.compact(8)
        assert (g.first_index(), g.term(3)) == (4, 1)
        with pytest.raises(ValueError, match="past the last index"):
            g.compact(11)


def test_groups_side_by_side(tmp_path: Path) -> None:
    """Ids that are prefixes of each other, or not ASCII, never see each other's keys."""
    ids = ["p-1", "p-10", "p-1\x00", "ü/ñ-0", "controller"]
    path = tmp_path / "db"
    store = NodeStore(path, tail_entries=2)
    gs = [store.group(i) for i in ids]
    store.write(
        [
            GroupUpdate(
                g,
                hard_state=HardState(term=n + 1),
                entries=[ent(j, n + 1) for j in range(1, 6 + n)],
            )
            for n, g in enumerate(gs)
        ]
    )
    store.write([GroupUpdate(gs[0], entries=[ent(2, 9)])])  # truncates p-1 only
    gs[1].create_snapshot(3, ConfState(voters=frozenset({1})), b"p-10 state")
    gs[1].compact(3)
    gs[3].destroy()
    store.close()

    store = NodeStore(path)
    assert store.groups() == sorted(set(ids) - {"ü/ñ-0"})
    want = {
        "p-1": (1, [ent(1, 1), ent(2, 9)]),
        "p-10": (4, [ent(j, 2) for j in range(4, 7)]),
        "p-1\x00": (1, [ent(j, 3) for j in range(1, 8)]),
        "ü/ñ-0": (1, []),
        "controller": (1, [ent(j, 5) for j in range(1, 10)]),
    }
    for n, gid in enumerate(ids):
        g = store.group(gid)
        first, ents = want[gid]
        assert (g.first_index(), g.entries(first, g.last_index() + 1)) == (first, ents), gid
        assert g.initial_state()[0] == (HardState() if gid == "ü/ñ-0" else HardState(term=n + 1))
    store.close()


def test_destroy(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = NodeStore(path)
    a, b = store.group("a"), store.group("b")
    a.bootstrap(ConfState(voters=frozenset({1})))
    store.write(
        [
            GroupUpdate(a, entries=[ent(1, 1)], hard_state=HardState(1, 1, 1)),
            GroupUpdate(b, entries=[ent(1, 1)]),
        ]
    )
    a.create_snapshot(1, ConfState(voters=frozenset({1})), b"a")
    a.destroy()
    assert store.groups() == ["b"]
    with pytest.raises(StorageError, match="destroyed"):
        store.write([GroupUpdate(a, entries=[ent(1, 1)])])
    with pytest.raises(StorageError, match="destroyed"):
        a.create_snapshot(1, ConfState(), b"")
    fresh = store.group("a")
    assert fresh is not a
    assert observe(fresh) == observe(MemoryStorage())
    store.close()
    assert raw_keys(path, GroupKeys("a").prefix) == []
    assert raw_keys(path, GroupKeys("a").registry) == []

    store = NodeStore(path)
    assert store.groups() == ["b"]
    assert store.group("b").entries(1, 2) == [ent(1, 1)]
    assert observe(store.group("a")) == observe(MemoryStorage())
    store.group("a").bootstrap(ConfState(voters=frozenset({2})))  # the id can be used again
    assert store.groups() == ["a", "b"]
    store.close()


def test_bootstrap_only_once(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with NodeStore(path) as store:
        g = store.group("g")
        g.bootstrap(ConfState(voters=frozenset({1, 2, 3})))
        with pytest.raises(ValueError, match="already has state"):
            g.bootstrap(ConfState(voters=frozenset({1})))
        h = store.group("h")
        store.write([GroupUpdate(h, hard_state=HardState(term=1))])
        with pytest.raises(ValueError, match="already has state"):
            h.bootstrap(ConfState(voters=frozenset({1})))
    with NodeStore(path) as store:
        assert store.group("g").initial_state()[1] == ConfState(voters=frozenset({1, 2, 3}))
        with pytest.raises(ValueError, match="already has state"):
            store.group("g").bootstrap(ConfState(voters=frozenset({1})))


def test_host_metadata(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with NodeStore(path) as store:
        g = store.group("g")
        assert store.get_meta(b"node-id") is None
        store.write(
            [GroupUpdate(g, entries=[ent(1, 1)], meta=[(b"node-id", b"3"), (b"offsets/x", b"")])]
        )
        assert store.get_meta(b"node-id") == b"3"
        assert store.get_meta(b"offsets/x") == b""
        store.write([GroupUpdate(g, meta=[(b"offsets/x", None), (b"node-id", b"4")])])
        assert store.groups() == ["g"]
    with NodeStore(path) as store:
        assert store.get_meta(b"node-id") == b"4"
        assert store.get_meta(b"offsets/x") is None
        assert store.group("g").last_index() == 1


class CountingDb:
    """Stands in for the Rdict to count the writes that reach it."""

    def __init__(self, db: Rdict) -> None:
        self.db = db
        self.writes: list[bool] = []

    def write(self, batch: Any, opts: Any) -> None:
        self.writes.append(opts.sync)
        self.db.write(batch, opts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_many_groups_one_write_one_sync(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = NodeStore(path)
    gs = [store.group(f"p-{i}") for i in range(8)]
    counting = CountingDb(store._db)  # type: ignore[arg-type]
    store._db = counting  # type: ignore[assignment]
    store.write(
        [
            GroupUpdate(
                g, entries=[ent(j, 1) for j in range(1, 101)], hard_state=HardState(1, 0, 50)
            )
            for g in gs
        ]
    )
    store.write([GroupUpdate(gs[0], hard_state=HardState(1, 0, 100))], sync=False)
    assert counting.writes == [True, False]
    store._db = counting.db
    store.close()
    with NodeStore(path) as store:
        assert [store.group(f"p-{i}").last_index() for i in range(8)] == [100] * 8


def test_a_bad_update_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with NodeStore(path) as store:
        a, b = store.group("a"), store.group("b")
        store.write([GroupUpdate(a, entries=[ent(1, 1)]), GroupUpdate(b, entries=[ent(1, 1)])])
        with pytest.raises(ValueError, match="missing log entry"):
            store.write(
                [
                    GroupUpdate(a, entries=[ent(2, 1)], meta=[(b"k", b"v")]),
                    GroupUpdate(b, entries=[ent(5, 1)]),
                ]
            )
        with pytest.raises(ValueError, match="two updates"):
            store.write(
                [GroupUpdate(a, entries=[ent(2, 1)]), GroupUpdate(a, hard_state=HardState(1))]
            )
        with pytest.raises(ValueError, match="not contiguous"):
            store.write([GroupUpdate(a, entries=[ent(2, 1), ent(4, 1)])])
        assert (a.last_index(), b.last_index(), store.get_meta(b"k")) == (1, 1, None)
    with NodeStore(path) as store:
        assert (store.group("a").last_index(), store.group("b").last_index()) == (1, 1)
        assert store.get_meta(b"k") is None


class FailingDb(CountingDb):
    def write(self, batch: Any, opts: Any) -> None:
        raise OSError("disk on fire")


def test_a_failed_write_leaves_memory_as_it_was(tmp_path: Path) -> None:
    """Memory follows the disk only after the batch is written: after a failed write the
    groups still show what is on disk, and the next write goes on from there."""
    path = tmp_path / "db"
    with NodeStore(path) as store:
        g = store.group("g")
        store.write([GroupUpdate(g, entries=[ent(1, 1), ent(2, 1)], hard_state=HardState(1))])
        before = observe(g)
        real, store._db = store._db, FailingDb(store._db)  # type: ignore[arg-type, assignment]
        with pytest.raises(OSError, match="on fire"):
            store.write(
                [GroupUpdate(g, snapshot=snap(5, 2), entries=[ent(6, 2)], hard_state=HardState(2))]
            )
        with pytest.raises(OSError, match="on fire"):
            store.write([GroupUpdate(g, entries=[ent(2, 3), ent(3, 3)])])
        assert observe(g) == before
        store._db = real
        store.write([GroupUpdate(g, entries=[ent(2, 3), ent(3, 3)])])
        assert (g.last_index(), g.term(2)) == (3, 3)
    with NodeStore(path) as store:
        assert store.group("g").entries(1, 4) == [ent(1, 1), ent(2, 3), ent(3, 3)]


class NoDisk:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"read went to disk: Rdict.{name}")


def test_term_and_tail_reads_never_touch_disk(tmp_path: Path) -> None:
    with NodeStore(tmp_path / "db", tail_entries=50) as store:
        g = store.group("g")
        store.write([GroupUpdate(g, entries=[ent(i, 1 + i // 7) for i in range(1, 201)])])
        real, store._db = store._db, NoDisk()  # type: ignore[assignment]
        try:
            assert [g.term(i) for i in (0, 1, 6, 7, 150, 200)] == [0, 1, 1, 2, 22, 29]
            assert (g.first_index(), g.last_index()) == (1, 200)
            assert g.entries(151, 201) == [ent(i, 1 + i // 7) for i in range(151, 201)]
            g.initial_state()
            g.snapshot()
            with pytest.raises(AssertionError, match="went to disk"):
                g.entries(150, 152)
        finally:
            store._db = real


def test_tail_stays_within_its_bounds(tmp_path: Path) -> None:
    with NodeStore(tmp_path / "db", tail_entries=10, tail_bytes=500) as store:
        g = store.group("g")
        for i in range(1, 60):
            store.write([GroupUpdate(g, entries=[ent(i, 1, b"x" * (i % 50))])])
            tail = g._tail
            assert len(tail) <= 10 and sum(e.size() for e in tail) <= 500
            assert g._tail_bytes == sum(e.size() for e in tail)
            assert g._tail_start + len(tail) == g.last_index() + 1
        assert g.entries(1, 60) == [ent(i, 1, b"x" * (i % 50)) for i in range(1, 60)]


def test_refuses_a_database_that_is_not_a_node_store(tmp_path: Path) -> None:
    path = tmp_path / "db"
    db = Rdict(str(path), Options(raw_mode=True))
    db[b"something"] = b"else"
    db.close()
    with pytest.raises(StorageError, match="not a liferaft node store"):
        NodeStore(path)
    with NodeStore(tmp_path / "ok") as store:
        assert store.groups() == []
    with pytest.raises(StorageError, match="closed"):
        store.group("g")


# -- corruption ------------------------------------------------------------------------------------
def flip(value: bytes, at: int) -> bytes:
    return value[:at] + bytes([value[at] ^ 0x40]) + value[at + 1 :]


@pytest.fixture
def written(tmp_path: Path) -> Path:
    """A closed database holding group 'p-orders-0': snapshot at 2, entries 3..12, hard state."""
    path = tmp_path / "db"
    with NodeStore(path) as store:
        g = store.group("p-orders-0")
        g.bootstrap(ConfState(voters=frozenset({1, 2, 3})))
        store.write(
            [
                GroupUpdate(
                    g,
                    entries=[ent(i, 1 + i // 5, b"record batch %d" % i) for i in range(1, 13)],
                    hard_state=HardState(term=3, vote=1, commit=12),
                    meta=[(b"node-id", b"1")],
                )
            ]
        )
        g.create_snapshot(2, ConfState(voters=frozenset({1, 2, 3})), b"partition state")
        g.compact(2)
    return path


def assert_actionable(e: CorruptStorageError, path: Path, what: str, reason: str) -> None:
    msg = str(e)
    assert (e.group, e.what, e.path) == ("p-orders-0", what, str(path))
    assert reason in e.reason
    assert msg.startswith(f"group 'p-orders-0' {what}: {e.reason} — the database at {path} ")
    assert str(path) in msg and "wiping its data directory" in msg


def test_a_flipped_byte_in_an_entry_is_reported_on_read(written: Path) -> None:
    key = GroupKeys("p-orders-0").entry(7)
    with raw_db(written) as db:
        db[key] = flip(db[key], 20)  # inside the data
    with NodeStore(written) as store:
        g = store.group("p-orders-0")  # entry 7 is neither first nor last: found when read
        assert g.entries(3, 7) == [ent(i, 1 + i // 5, b"record batch %d" % i) for i in range(3, 7)]
        assert g.term(7) == 2  # from memory
        with pytest.raises(CorruptStorageError) as info:
            g.entries(3, 13)
        assert_actionable(info.value, written, "entry 7", "checksum mismatch")
        assert info.value.key == key


def test_a_flipped_byte_in_a_blob_file_is_reported_by_our_checksum(tmp_path: Path) -> None:
    """Reads of the log skip RocksDB's own checksums (computed in software by rocksdict's
    RocksDB, a cost the leader of a moving partition pays per MiB): the CRC each entry carries
    must still catch a value damaged on disk, and report it as any other damaged entry."""
    path = tmp_path / "db"
    payload = [bytes([i]) * 8192 for i in range(1, 7)]  # record-batch sized: in blob files
    with NodeStore(path) as store:
        g = store.group("p-orders-0")
        g.bootstrap(ConfState(voters=frozenset({1, 2, 3})))
        store.write([GroupUpdate(g, entries=[ent(i, 1, payload[i - 1]) for i in range(1, 7)])])
        store._live_db().flush()  # the memtable into an SST and a blob file
    blobs = [p for p in path.iterdir() if p.suffix == ".blob"]
    assert len(blobs) == 1
    raw = bytearray(blobs[0].read_bytes())
    at = raw.find(payload[3])  # entry 4's data
    assert at > 0
    raw[at + 100] ^= 0x40
    blobs[0].write_bytes(bytes(raw))
    with NodeStore(path) as store:
        g = store.group("p-orders-0")  # entries 1 and 6 are whole: open reads them
        assert g.entries(1, 4) == [ent(i, 1, payload[i - 1]) for i in range(1, 4)]
        with pytest.raises(CorruptStorageError) as info:
            g.entries(1, 7)
    assert (info.value.group, info.value.what) == ("p-orders-0", "entry 4")
    assert "checksum mismatch" in info.value.reason


def test_a_flipped_term_in_the_last_entry_is_reported_on_open(written: Path) -> None:
    key = GroupKeys("p-orders-0").entry(12)
    with raw_db(written) as db:
        db[key] = flip(db[key], 6)  # inside the term
    with NodeStore(written) as store, pytest.raises(CorruptStorageError) as info:
        store.group("p-orders-0")
    assert_actionable(info.value, written, "entry 12", "checksum mismatch")


def test_a_value_under_the_wrong_key_is_reported(written: Path) -> None:
    """Same term, and a valid checksum for its own key: only the key in the CRC catches it."""
    keys = GroupKeys("p-orders-0")
    with raw_db(written) as db:
        db[keys.entry(6)] = db[keys.entry(5)]
    with NodeStore(written) as store, pytest.raises(CorruptStorageError) as info:
        store.group("p-orders-0").entries(5, 7)
    assert_actionable(info.value, written, "entry 6", "checksum mismatch")


def test_a_hole_in_the_log_is_reported(written: Path) -> None:
    with raw_db(written) as db:
        del db[GroupKeys("p-orders-0").entry(9)]
    with NodeStore(written, tail_entries=0) as store:
        g = store.group("p-orders-0")
        with pytest.raises(CorruptStorageError) as info:
            g.entries(8, 11)
        assert_actionable(info.value, written, "entry 9", "missing")
        with pytest.raises(CorruptStorageError, match="entry 9: missing"):
            g.entries(3, 10, max_size=10_000)


@pytest.mark.parametrize(
    ("key", "damage", "what", "reason"),
    [
        ("hard_state", lambda v: v[:-3], "hard state", "checksum mismatch"),
        ("hard_state", lambda v: v[:2], "hard state", "too short"),
        ("snapshot", lambda v: flip(v, len(v) - 1), "snapshot", "checksum mismatch"),
        ("snapshot", lambda v: v[:10], "snapshot", "checksum mismatch"),
        ("log_start", lambda v: flip(v, 10), "log start", "checksum mismatch"),
        ("registry", lambda v: v + b"x", "registration", "checksum mismatch"),
    ],
)
def test_damaged_group_state_is_reported_on_open(
    written: Path, key: str, damage: Callable[[bytes], bytes], what: str, reason: str
) -> None:
    k = getattr(GroupKeys("p-orders-0"), key)
    with raw_db(written) as db:
        db[k] = damage(db[k])
    with NodeStore(written) as store, pytest.raises(CorruptStorageError) as info:
        store.group("p-orders-0")
    assert_actionable(info.value, written, what, reason)


def test_a_damaged_term_run_is_reported_on_open(written: Path) -> None:
    keys = GroupKeys("p-orders-0")
    with raw_db(written) as db:
        db[keys.run(5)] = flip(db[keys.run(5)], 11)
    with NodeStore(written) as store, pytest.raises(CorruptStorageError) as info:
        store.group("p-orders-0")
    assert_actionable(info.value, written, "term run at 5", "checksum mismatch")


def test_a_lost_term_run_is_caught_by_the_entries(written: Path) -> None:
    """Without the run starting at 10, entries 10.. would claim the wrong term: the term stored
    in each entry disagrees, and the read says so instead of returning it."""
    keys = GroupKeys("p-orders-0")
    with raw_db(written) as db:
        del db[keys.run(10)]
    with NodeStore(written) as store, pytest.raises(CorruptStorageError) as info:
        store.group("p-orders-0")
    assert_actionable(info.value, written, "entry 12", "term 3 disagrees with the term index (2)")


def test_damaged_host_metadata_is_reported(written: Path) -> None:
    with raw_db(written) as db:
        db[b"Mnode-id"] = flip(db[b"Mnode-id"], 4)
    with NodeStore(written) as store:
        with pytest.raises(CorruptStorageError, match="host metadata b'node-id': checksum") as info:
            store.get_meta(b"node-id")
        assert info.value.group is None
        assert store.group("p-orders-0").last_index() == 12
