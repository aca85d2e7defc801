"""raft/storage.py: MemoryStorage at its edges, and limit_size."""

from __future__ import annotations

import pytest

from raft import (
    CompactedError,
    ConfState,
    Entry,
    HardState,
    MemoryStorage,
    Snapshot,
    SnapshotMeta,
    UnavailableError,
)
from raft.storage import limit_size

CS = ConfState(voters=frozenset({1, 2, 3}))


def ent(index: int, term: int, size: int = 0) -> Entry:
    return Entry(index=index, term=term, data=b"x" * size)


def storage(*terms: int) -> MemoryStorage:
    """Entries 1..n of the given terms."""
    st = MemoryStorage(CS)
    st.append([ent(i + 1, t) for i, t in enumerate(terms)])
    return st


def test_a_new_storage_is_empty_and_bootstraps_the_membership() -> None:
    st = MemoryStorage(CS)
    assert (st.first_index(), st.last_index()) == (1, 0)
    assert st.term(0) == 0
    assert st.initial_state() == (HardState(), CS)
    assert st.snapshot().is_empty()
    assert st.entries(1, 1) == []


def test_term_answers_from_the_snapshot_point_to_the_last_index() -> None:
    st = storage(1, 2, 3)
    st.compact(1)
    assert st.term(1) == 1  # the snapshot point answers although the entry is gone
    assert st.term(3) == 3
    with pytest.raises(CompactedError):
        st.term(0)
    with pytest.raises(UnavailableError):
        st.term(4)


def test_entries_bounds() -> None:
    st = storage(1, 1, 2, 2)
    st.compact(1)
    assert [e.index for e in st.entries(2, 5)] == [2, 3, 4]
    with pytest.raises(CompactedError):
        st.entries(1, 3)  # the snapshot point itself is not an entry
    with pytest.raises(UnavailableError):
        st.entries(2, 6)


def test_entries_size_limit_returns_at_least_one() -> None:
    st = MemoryStorage(CS)
    st.append([ent(i, 1, 100) for i in range(1, 5)])  # 124 bytes each
    assert [e.index for e in st.entries(1, 5, 0)] == [1]
    assert [e.index for e in st.entries(1, 5, 248)] == [1, 2]
    assert [e.index for e in st.entries(1, 5, 249)] == [1, 2]
    assert [e.index for e in st.entries(1, 5, None)] == [1, 2, 3, 4]


def test_limit_size() -> None:
    es = [ent(1, 1, 10), ent(2, 1, 10), ent(3, 1, 10)]  # 34 bytes each
    assert limit_size(es, None) == es
    assert limit_size(es, 68) == es[:2]
    assert limit_size(es, 1) == es[:1]
    assert limit_size([], 1) == []


def test_append_truncates_a_conflicting_suffix() -> None:
    st = storage(1, 1, 1, 1)
    st.append([ent(3, 2)])
    assert st.last_index() == 3
    assert [e.term for e in st.entries(1, 4)] == [1, 1, 2]


def test_append_extends_and_refuses_a_gap() -> None:
    st = storage(1, 1)
    st.append([ent(3, 1), ent(4, 1)])
    assert st.last_index() == 4
    with pytest.raises(ValueError, match="missing log entry"):
        st.append([ent(6, 1)])


def test_append_trims_entries_already_compacted() -> None:
    st = storage(1, 1, 1, 1)
    st.compact(2)
    st.append([ent(1, 1), ent(2, 1), ent(3, 2)])  # 1 and 2 are in the snapshot
    assert (st.first_index(), st.last_index()) == (3, 3)
    assert st.term(3) == 2
    st.append([ent(1, 1), ent(2, 1)])  # entirely compacted: nothing to do
    assert (st.first_index(), st.last_index()) == (3, 3)
    st.append([])
    assert st.last_index() == 3


def test_compact_drops_a_prefix_and_keeps_its_last_term() -> None:
    st = storage(1, 2, 3)
    st.compact(2)
    assert (st.first_index(), st.last_index(), st.term(2)) == (3, 3, 2)
    st.compact(1)  # already compacted: ignored
    assert st.first_index() == 3
    with pytest.raises(ValueError):
        st.compact(4)
    st.compact(3)  # everything: the log is empty after the snapshot point
    assert (st.first_index(), st.last_index(), st.term(3)) == (4, 3, 3)


def test_create_snapshot_records_index_term_and_membership() -> None:
    st = storage(1, 2, 2)
    cs = ConfState(voters=frozenset({1, 2}), learners=frozenset({3}))
    snap = st.create_snapshot(2, cs, b"state")
    assert snap.meta == SnapshotMeta(index=2, term=2, conf_state=cs)
    assert st.snapshot() is snap
    assert st.first_index() == 1  # creating a snapshot does not compact by itself
    assert st.create_snapshot(1, cs, b"older") is snap  # not newer: the held one stays
    with pytest.raises(ValueError):
        st.create_snapshot(4, cs, b"")


def test_apply_snapshot_replaces_everything_and_refuses_an_older_one() -> None:
    st = storage(1, 1, 1)
    snap = Snapshot(meta=SnapshotMeta(index=10, term=3, conf_state=CS), data=b"s")
    st.apply_snapshot(snap)
    assert (st.first_index(), st.last_index(), st.term(10)) == (11, 10, 3)
    assert st.snapshot() is snap
    assert st.initial_state()[1] == CS
    with pytest.raises(ValueError):
        st.apply_snapshot(Snapshot(meta=SnapshotMeta(index=10, term=3)))


def test_hard_state_round_trips() -> None:
    st = MemoryStorage(CS)
    st.set_hard_state(HardState(term=4, vote=2, commit=0))
    assert st.initial_state()[0] == HardState(term=4, vote=2, commit=0)
