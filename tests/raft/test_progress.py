"""raft/progress.py at its edges: the leader's per-follower state machine and in-flight window."""

from __future__ import annotations

import pytest

from raft.progress import Inflights, Progress, ProgressState


def progress(match: int, next_index: int, state: ProgressState, cap: int = 4) -> Progress:
    pr = Progress(next_index, cap)
    pr.match = match
    pr.state = state
    return pr


def test_a_new_progress_probes_from_the_given_index() -> None:
    pr = Progress(7, 4)
    assert (pr.match, pr.next, pr.state) == (0, 7, ProgressState.PROBE)
    assert not pr.is_paused()


def test_maybe_update_moves_match_and_next_forward_only() -> None:
    pr = progress(3, 5, ProgressState.REPLICATE)
    assert pr.maybe_update(4)
    assert (pr.match, pr.next) == (4, 5)
    assert not pr.maybe_update(2)  # a stale acknowledgment
    assert (pr.match, pr.next) == (4, 5)
    assert pr.maybe_update(9)
    assert (pr.match, pr.next) == (9, 10)  # next is always past match


def test_maybe_update_unpauses_a_probe() -> None:
    pr = progress(0, 5, ProgressState.PROBE)
    pr.sent_entries(5)
    assert pr.is_paused()
    pr.maybe_update(5)
    assert not pr.is_paused()


@pytest.mark.parametrize(
    ("match", "next_index", "rejected", "hint", "changed", "want_next"),
    [
        (5, 10, 9, 9, True, 6),  # pipelined: fall back to match + 1, whatever the hint
        (5, 10, 5, 5, False, 10),  # rejects an index at or below match: stale
        (5, 10, 4, 4, False, 10),
    ],
)
def test_maybe_decr_to_in_replicate(
    match: int, next_index: int, rejected: int, hint: int, changed: bool, want_next: int
) -> None:
    pr = progress(match, next_index, ProgressState.REPLICATE)
    assert pr.maybe_decr_to(rejected, hint) is changed
    assert pr.next == want_next


@pytest.mark.parametrize(
    ("match", "next_index", "rejected", "hint", "changed", "want_next"),
    [
        (0, 10, 9, 3, True, 4),  # jump to just past the hint
        (0, 10, 9, 20, True, 9),  # a hint past the rejection is capped: retry just below
        (5, 10, 9, 2, True, 6),  # never below match + 1
        (0, 10, 8, 3, False, 10),  # answers a probe we no longer have in flight: stale
        (0, 1, 0, 0, True, 1),  # never below 1
    ],
)
def test_maybe_decr_to_in_probe(
    match: int, next_index: int, rejected: int, hint: int, changed: bool, want_next: int
) -> None:
    pr = progress(match, next_index, ProgressState.PROBE)
    pr.probe_sent = True
    assert pr.maybe_decr_to(rejected, hint) is changed
    assert pr.next == want_next
    if changed:
        assert not pr.is_paused()  # free to send the next probe


def test_probe_sends_one_append_at_a_time() -> None:
    pr = progress(0, 3, ProgressState.PROBE)
    pr.sent_entries(5)
    assert pr.is_paused()
    assert pr.next == 3  # a probe does not move next optimistically


def test_replicate_pipelines_until_the_window_is_full() -> None:
    pr = progress(2, 3, ProgressState.REPLICATE, cap=2)
    pr.sent_entries(4)
    assert pr.next == 5 and not pr.is_paused()
    pr.sent_entries(6)
    assert pr.next == 7 and pr.is_paused()
    pr.inflights.free_le(4)  # the first append acknowledged
    assert not pr.is_paused()


def test_snapshot_state_pauses_until_a_state_change() -> None:
    pr = progress(2, 3, ProgressState.PROBE)
    pr.become_snapshot(10)
    assert pr.is_paused()
    assert pr.pending_snapshot == 10


def test_leaving_snapshot_probes_past_the_snapshot_or_match() -> None:
    pr = progress(2, 3, ProgressState.SNAPSHOT)
    pr.become_snapshot(10)
    pr.become_probe()
    assert (pr.state, pr.next, pr.pending_snapshot) == (ProgressState.PROBE, 11, 0)
    pr = progress(12, 13, ProgressState.SNAPSHOT)
    pr.become_snapshot(10)
    pr.become_probe()
    assert pr.next == 13  # match beyond the snapshot wins


def test_become_replicate_and_probe_restart_from_match() -> None:
    pr = progress(4, 9, ProgressState.REPLICATE)
    pr.sent_entries(9)
    pr.become_probe()
    assert (pr.state, pr.next, pr.inflights.count()) == (ProgressState.PROBE, 5, 0)
    pr.become_replicate()
    assert (pr.state, pr.next) == (ProgressState.REPLICATE, 5)


def test_inflights_free_le_and_free_first_one() -> None:
    inf = Inflights(3)
    for i in (3, 5, 8):
        inf.add(i)
    assert inf.full()
    inf.free_le(4)
    assert inf.count() == 2 and not inf.full()
    inf.free_le(2)  # below everything: nothing to free
    assert inf.count() == 2
    inf.free_first_one()
    assert inf.count() == 1
    inf.free_le(100)
    assert inf.count() == 0
    inf.free_first_one()  # on empty: no error
    assert inf.count() == 0


def test_sent_commit_falls_back_with_next_and_says_when_a_commit_is_news() -> None:
    pr = Progress(next_index=6, max_inflight=4)
    pr.match = 5
    pr.become_replicate()
    pr.sent_entries(9)  # entries 6..9 in flight
    pr.sent_commit = 8
    assert pr.can_bump_commit(9)  # 9 is news, and the follower may hold up to 9
    assert not pr.can_bump_commit(8)  # sent already
    pr.sent_commit = 9
    assert not pr.can_bump_commit(12)  # what we sent reaches all the follower may hold
    assert pr.maybe_decr_to(9, 5)  # a rejection: what we sent probably never arrived
    assert (pr.next, pr.sent_commit) == (6, 5)
    pr.become_snapshot(20)
    assert pr.sent_commit == 20  # a snapshot is committed state up to its index
