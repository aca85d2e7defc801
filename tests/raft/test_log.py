"""raft/log.py at its edges: the stable/unstable split, conflicts, commit and size limits."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from raft import CompactedError, ConfState, Entry, MemoryStorage, RaftError, UnavailableError
from raft.log import RaftLog, Unstable
from raft.types import Snapshot, SnapshotMeta


def ent(index: int, term: int, data: bytes = b"") -> Entry:
    return Entry(index=index, term=term, data=data)


def log_with(stored: Sequence[int], unstable: Sequence[int] = (), snap: int = 0) -> RaftLog:
    """A log whose storage holds entries of terms `stored` after a snapshot at index `snap`
    (term 1), followed by unpersisted entries of terms `unstable`."""
    st = MemoryStorage(ConfState(voters=frozenset({1})))
    if snap:
        st.apply_snapshot(Snapshot(meta=SnapshotMeta(index=snap, term=1)))
    st.append([ent(snap + 1 + i, t) for i, t in enumerate(stored)])
    log = RaftLog(st)
    first = snap + 1 + len(stored)
    log.append([ent(first + i, t) for i, t in enumerate(unstable)])
    return log


def terms(log: RaftLog) -> list[int]:
    return [e.term for e in log.slice(log.first_index(), log.last_index() + 1, None)]


# -- bounds and terms ---------------------------------------------------------------------------


def test_bounds_span_storage_and_unstable() -> None:
    log = log_with([1, 1], [2, 2], snap=3)
    assert (log.first_index(), log.last_index(), log.last_term()) == (4, 7, 2)
    assert log.committed == 3 and log.applied == 3  # the snapshot point


def test_term_at_the_snapshot_point_below_it_and_past_the_end() -> None:
    log = log_with([2], snap=3)
    assert log.term(3) == 1  # the snapshot's own term answers
    assert log.term(4) == 2
    assert log.term(5) == 0  # past the end: no entry, term 0
    with pytest.raises(CompactedError):
        log.term(2)
    assert not log.match_term(2, 1)  # compacted means "cannot tell", never "matches"


def test_last_persisted_index_ignores_unstable_entries() -> None:
    log = log_with([1, 1], [2])
    assert log.last_persisted_index() == 2
    assert isinstance(log.storage, MemoryStorage)
    log.storage.append(log.unstable_entries())  # the host persists, then says so
    assert log.last_persisted_index() == 2
    log.stable_to(3, 2)
    assert log.last_persisted_index() == 3


def test_is_up_to_date_compares_last_term_then_length() -> None:
    log = log_with([1, 2, 2])
    assert log.is_up_to_date(3, 2)
    assert log.is_up_to_date(1, 3)
    assert not log.is_up_to_date(2, 2)
    assert not log.is_up_to_date(9, 1)


# -- appends and conflicts ------------------------------------------------------------------------


def test_append_below_the_commit_index_is_refused() -> None:
    log = log_with([1, 1, 1])
    log.commit_to(2)
    with pytest.raises(RaftError):
        log.append([ent(2, 5)])
    log.append([ent(3, 5)])  # replacing an uncommitted entry is fine
    assert terms(log) == [1, 1, 5]


def test_find_conflict() -> None:
    log = log_with([1, 2, 3])
    assert log.find_conflict([ent(1, 1), ent(2, 2)]) == 0
    assert log.find_conflict([ent(2, 2), ent(3, 4)]) == 3
    assert log.find_conflict([ent(3, 3), ent(4, 4)]) == 4  # new entries count as a conflict
    assert log.find_conflict([]) == 0


@pytest.mark.parametrize(
    ("index", "term", "want"),
    [
        (6, 3, (6, 3)),
        (6, 2, (3, 2)),  # skip the whole of term 3
        (6, 1, (1, 1)),
        (6, 0, (0, 0)),
        (2, 5, (2, 2)),
        (0, 1, (0, 0)),
    ],
)
def test_find_conflict_by_term(index: int, term: int, want: tuple[int, int]) -> None:
    log = log_with([1, 2, 2, 3, 3, 3])
    assert log.find_conflict_by_term(index, term) == want


def test_find_conflict_by_term_stops_at_the_compacted_prefix() -> None:
    log = log_with([3, 3], snap=4)
    assert log.find_conflict_by_term(6, 1) == (4, 1)  # the snapshot point, term 1
    log = log_with([3, 3], snap=4)
    assert log.find_conflict_by_term(3, 1) == (3, 0)  # below it: unknown term


def test_maybe_append_rejects_a_missing_or_mismatching_previous_entry() -> None:
    log = log_with([1, 2])
    assert log.maybe_append(3, 2, 0, (ent(4, 2),)) is None  # we lack 3
    assert log.maybe_append(2, 1, 0, (ent(3, 2),)) is None  # 2 has term 2, not 1
    assert terms(log) == [1, 2]


def test_maybe_append_truncates_only_from_the_first_conflict() -> None:
    log = log_with([1, 1, 1, 1])
    assert log.maybe_append(1, 1, 0, (ent(2, 1), ent(3, 2))) == 3
    assert terms(log) == [1, 1, 2]  # 4 went with the conflicting 3


def test_maybe_append_keeps_a_longer_log_when_nothing_conflicts() -> None:
    log = log_with([1, 1, 1, 1])
    assert log.maybe_append(1, 1, 0, (ent(2, 1),)) == 2  # what the message proves
    assert terms(log) == [1, 1, 1, 1]


def test_maybe_append_commits_only_what_the_message_proves() -> None:
    log = log_with([1, 1, 1, 1])
    log.maybe_append(1, 1, 10, (ent(2, 1),))
    assert log.committed == 2


def test_maybe_append_refuses_to_overwrite_a_committed_entry() -> None:
    log = log_with([1, 1, 1])
    log.commit_to(3)
    with pytest.raises(RaftError):
        log.maybe_append(1, 1, 3, (ent(2, 2),))


def test_a_conflict_below_the_unstable_offset_rewinds_it() -> None:
    log = log_with([1, 1, 1], [1])
    log.maybe_append(1, 1, 0, (ent(2, 2),))
    assert log.unstable.offset == 2
    assert [e.index for e in log.unstable_entries()] == [2]
    assert log.last_persisted_index() == 1  # the stored 2 and 3 are stale now
    assert terms(log) == [1, 2]


# -- commit and apply -----------------------------------------------------------------------------


def test_commit_never_moves_back_nor_past_the_last_index() -> None:
    log = log_with([1, 1, 1])
    log.commit_to(2)
    log.commit_to(1)
    assert log.committed == 2
    with pytest.raises(RaftError):
        log.commit_to(4)


def test_maybe_commit_requires_the_entry_to_be_of_the_given_term() -> None:
    log = log_with([1, 2, 2])
    assert not log.maybe_commit(1, 2)
    assert log.committed == 0
    assert log.maybe_commit(3, 2)
    assert log.committed == 3
    assert not log.maybe_commit(2, 2)  # behind the commit index


def test_applied_stays_within_applied_and_committed() -> None:
    log = log_with([1, 1, 1])
    log.commit_to(2)
    with pytest.raises(RaftError):
        log.applied_to(3)
    log.applied_to(2)
    with pytest.raises(RaftError):
        log.applied_to(1)
    log.applied_to(0)  # "nothing applied" is accepted and changes nothing
    assert log.applied == 2


def test_next_committed_entries_respects_the_size_limit_but_returns_at_least_one() -> None:
    st = MemoryStorage(ConfState(voters=frozenset({1})))
    st.append([ent(i, 1, b"x" * 100) for i in range(1, 6)])
    log = RaftLog(st, max_applying_size=250)
    log.commit_to(5)
    assert [e.index for e in log.next_committed_entries()] == [1, 2]
    log.applied_to(2)
    assert [e.index for e in log.next_committed_entries()] == [3, 4]
    tiny = RaftLog(st, max_applying_size=1)
    tiny.commit_to(5)
    assert [e.index for e in tiny.next_committed_entries()] == [1]


def test_has_next_committed_entries() -> None:
    log = log_with([1, 1])
    assert not log.has_next_committed_entries()
    log.commit_to(2)
    assert log.has_next_committed_entries()
    log.applied_to(2)
    assert not log.has_next_committed_entries()


# -- reads ----------------------------------------------------------------------------------------


def test_slice_across_storage_and_unstable() -> None:
    log = log_with([1, 1], [2, 2])
    assert [e.index for e in log.slice(2, 4, None)] == [2, 3]
    assert [e.index for e in log.slice(1, 5, None)] == [1, 2, 3, 4]
    assert log.slice(3, 3, None) == []
    with pytest.raises(UnavailableError):
        log.slice(1, 6, None)


def test_slice_below_the_log_start_is_compacted() -> None:
    log = log_with([1], snap=5)
    with pytest.raises(CompactedError):
        log.slice(5, 7, None)


def test_slice_size_limit_cuts_at_the_storage_boundary_too() -> None:
    st = MemoryStorage(ConfState(voters=frozenset({1})))
    st.append([ent(1, 1, b"x" * 100), ent(2, 1, b"x" * 100)])
    log = RaftLog(st)
    log.append([ent(3, 1, b"x" * 100)])
    assert [e.index for e in log.slice(1, 4, 130)] == [1]
    assert [e.index for e in log.slice(1, 4, 260)] == [1, 2]
    assert [e.index for e in log.slice(1, 4, 400)] == [1, 2, 3]
    assert [e.index for e in log.slice(2, 4, 130)] == [2]


def test_entries_from_past_the_end_is_empty() -> None:
    log = log_with([1, 1])
    assert log.entries(3, None) == []


# -- snapshots and persistence feedback -----------------------------------------------------------


def test_restore_replaces_the_log_with_a_snapshot() -> None:
    log = log_with([1, 1, 1])
    snap = Snapshot(meta=SnapshotMeta(index=10, term=4))
    log.restore(snap)
    assert (log.first_index(), log.last_index(), log.committed) == (11, 10, 10)
    assert log.term(10) == 4
    assert log.has_pending_snapshot()
    assert log.last_persisted_index() == 0  # nothing agrees on disk until it is persisted
    assert log.snapshot() is snap
    log.stable_snap_to(10)
    assert not log.has_pending_snapshot()


def test_stable_to_ignores_an_entry_that_was_replaced_meanwhile() -> None:
    u = Unstable(offset=5)
    u.truncate_and_append([ent(5, 1), ent(6, 1)])
    u.stable_to(6, 2)  # we were told 6@2 is on disk, but we hold 6@1: not ours
    assert u.offset == 5 and len(u.entries) == 2
    u.stable_to(5, 1)
    assert u.offset == 6 and [e.index for e in u.entries] == [6]


@pytest.mark.parametrize(
    ("after", "want_offset", "want"),
    [
        (7, 5, [5, 6, 7]),  # right after the tail: extend
        (6, 5, [5, 6]),  # inside the tail: truncate there, then append
        (5, 5, [5]),  # at the offset: replace everything
        (3, 3, [3]),  # before the offset: the host's stored suffix is stale too
    ],
)
def test_unstable_truncate_and_append(after: int, want_offset: int, want: list[int]) -> None:
    u = Unstable(offset=5)
    u.truncate_and_append([ent(5, 1), ent(6, 1)])
    u.truncate_and_append([ent(after, 2)])
    assert u.offset == want_offset
    assert [e.index for e in u.entries] == want
    assert u.entries[-1].term == 2
