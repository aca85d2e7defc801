"""The simulation proves it can fail: each test plants a known Raft bug in the core (patched for
the test only) and asserts that the simulation finds it within a fixed budget of seeds.

A simulation that passes with these bugs planted would prove nothing when it passes without
them. Budgets are about ten times the seed count the simulation needed when they were set, so a
change to the world that makes a bug rarer shows up here before it makes the simulation blind.
"""

from __future__ import annotations

import pytest

import raft.core
from raft.log import RaftLog
from raft.types import Entry, MessageType
from tests.sim.cli import main
from tests.sim.runner import SeedResult, first_failure
from tests.sim.world import SimOptions

JOBS = 2


def _hunt(budget: int) -> SeedResult:
    found = first_failure(list(range(budget)), SimOptions(), JOBS)
    assert found is not None, f"the simulation did not find the planted bug in {budget} seeds"
    return found


def test_vote_without_the_up_to_date_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Raft §5.4.1: grant a vote only to a candidate whose log is at least as up to date as
    ours. Without it a node missing committed entries can win, and overwrite them."""
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, index, term: True)
    found = _hunt(budget=60)
    assert found.kind == "safety", found.error
    assert found.prop in {"leader completeness", "commit durability", "log matching"}, found.error


def test_commit_previous_term_entry_by_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Raft §5.4.2, Figure 8: a leader must not commit an entry of an earlier term because it is
    on a majority; only by committing one of its own term."""

    def maybe_commit(self: RaftLog, max_index: int, term: int) -> bool:
        if max_index > self.committed:
            self.commit_to(max_index)
            return True
        return False

    monkeypatch.setattr(RaftLog, "maybe_commit", maybe_commit)
    found = _hunt(budget=400)
    assert found.kind == "safety", found.error
    assert found.prop in {"commit durability", "leader completeness"}, found.error


def test_vote_reply_before_the_vote_is_durable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A vote is a promise about durable state: the reply may leave only once the vote is on
    disk. Sent at once, a crash before the write lets the node vote again in the same term."""
    monkeypatch.setattr(raft.core, "_SEND_NOW", raft.core._SEND_NOW | {MessageType.VOTE_RESP})
    found = _hunt(budget=200)
    assert found.kind == "safety", found.error
    assert found.prop in {"vote safety", "election safety"}, found.error


def test_apply_past_the_commit_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """State machine safety: apply only committed entries."""

    def next_committed_entries(self: RaftLog) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        if self.last_index() < lo:
            return []
        return self.slice(lo, self.last_index() + 1, self.max_applying_size)

    monkeypatch.setattr(RaftLog, "next_committed_entries", next_committed_entries)
    found = _hunt(budget=20)
    assert found.kind == "safety", found.error
    assert found.prop == "state machine safety", found.error


def test_a_failure_exits_1_with_the_replay_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, index, term: True)
    assert main(["--seeds", "10", "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert "FAILED (safety)" in out
    assert "python -m tests.sim --seed " in out
