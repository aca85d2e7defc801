"""The simulation proves it can fail: each test plants a known Raft bug in the core (patched for
the test only) and asserts that the simulation finds it within a fixed budget of seeds.

A simulation that passes with these bugs planted would prove nothing when it passes without
them. Each budget holds about ten expected findings at the rate the simulation found that bug when
the budget was set (Figure 8: 1 seed in 40; the early vote reply: 1 in 18; the others: most
seeds), so a change to the world that makes a bug rarer fails here before it makes the simulation
blind. Seeds run in order and the hunt stops at the first failure, so this file is quick.

Beyond the four classic bugs, three more prove the checks no classic bug reaches can fire: log
matching, commit monotonicity and leader append-only; one more is a host-contract bug of writes
in flight (a Ready that repeats committed entries), one a host that applies ahead of its
writes out of order, and one is issue 11's single voter that
leads a term before it is durable.
"""

from __future__ import annotations

import pytest

import raft.core
from raft.log import RaftLog
from raft.quorum import VoteResult
from raft.rawnode import RawNode
from raft.types import Entry, Message, MessageType
from tests.sim.cli import main
from tests.sim.host import SimNode
from tests.sim.profile import SimOptions
from tests.sim.runner import SeedResult, first_failure

JOBS = 1  # no fork inside pytest: other tests may have started threads (grpc)


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
        lo = max(self.applying + 1, self.first_index())
        if self.last_index() < lo:
            return []
        return self.slice(lo, self.last_index() + 1, self.max_applying_size)

    monkeypatch.setattr(RaftLog, "next_committed_entries", next_committed_entries)
    found = _hunt(budget=20)
    assert found.kind == "safety", found.error
    assert found.prop == "state machine safety", found.error


def test_append_without_the_consistency_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Raft §5.3: a follower appends only after the entry before the new ones matches the
    leader's (index and term). Without that check logs diverge silently."""

    def maybe_append(
        self: RaftLog, index: int, log_term: int, committed: int, ents: tuple[Entry, ...]
    ) -> int | None:
        last_new = index + len(ents)
        conflict = self.find_conflict(ents)
        if conflict and conflict > self.committed:
            self.append(list(ents[conflict - index - 1 :]))
        self.commit_to(min(committed, last_new, self.last_index()))
        return last_new

    monkeypatch.setattr(RaftLog, "maybe_append", maybe_append)
    found = _hunt(budget=20)
    assert found.kind in {"safety", "exception"}, found.error
    if found.kind == "safety":
        assert found.prop in {"log matching", "state machine safety"}, found.error


def test_commit_index_that_goes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit index never decreases: what was acknowledged stays acknowledged. Let a stale
    heartbeat or append lower it."""

    def commit_to(self: RaftLog, to: int) -> None:
        if to > self.last_index():
            raise AssertionError("commit past the last index")
        self.committed = to

    monkeypatch.setattr(RaftLog, "commit_to", commit_to)
    found = _hunt(budget=20)
    assert found.kind == "safety", found.error
    assert found.prop == "commit monotonicity", found.error


def test_leader_that_overwrites_its_own_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leader append-only (Figure 3): a leader never overwrites or deletes its entries. Plant a
    leader that writes each proposal over its last uncommitted entry."""

    def append_entries(self: raft.core.Raft, ents: list[Entry]) -> int:
        start = max(self.log.last_index(), self.log.committed + 1)
        self.log.append(
            [
                Entry(index=start + i, term=self.term, type=e.type, data=e.data)
                for i, e in enumerate(ents)
            ]
        )
        return start

    monkeypatch.setattr(raft.core.Raft, "append_entries", append_entries)
    found = _hunt(budget=20)
    assert found.kind == "safety", found.error
    assert found.prop == "leader append-only", found.error


def test_a_ready_that_hands_out_committed_entries_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes in flight: a Ready must not repeat what an earlier one handed out. Plant a log
    that forgets which committed entries are already on their way to be applied."""
    monkeypatch.setattr(RaftLog, "applying_to", lambda self, index: None)
    found = _hunt(budget=20)
    assert found.kind in {"safety", "exception"}, found.error
    if found.kind == "safety":
        assert found.prop == "state machine safety", found.error


def test_a_host_that_applies_ahead_out_of_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Applying ahead of a write (raft/rawnode.py): a Ready whose committed entries are not
    durable yet must hold back the applies of every later Ready. Plant a host that skips it
    and applies the later ones (node/driver.py's `_apply_ahead` keeps the same rule)."""

    def apply_ahead_skipping(self: SimNode) -> None:
        node = self.node
        assert node is not None
        for w in self.writes:
            rd = w.rd
            ents = rd.committed_entries
            if w.applied or (ents and ents[-1].index > node.persisted_index()):
                continue  # the bug: `return`, holding back the rest, is what is right
            if rd.snapshot is not None or rd.soft_state is not None or rd.applies_conf_change():
                continue
            w.applied = True
            if ents:
                self._apply(node, rd)
                node.advance_applied(rd)

    monkeypatch.setattr(SimNode, "_apply_ahead", apply_ahead_skipping)
    found = _hunt(budget=100)
    assert found.kind in {"safety", "exception"}, found.error
    if found.kind == "safety":
        assert found.prop == "state machine safety", found.error


def test_a_single_voter_that_leads_before_its_term_is_durable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 11: a candidate's own vote is a promise like any other and counts only once
    durable. Plant the old rule (a single voter counts its vote and leads inside campaign()):
    its appends, sent while its term's write is in flight, reach a learner; it crashes, leads
    the same term again, and writes other entries at the same (index, term). Found only in the
    one-voter worlds (Profile.voters), with writes in flight."""
    send = raft.core.Raft.send

    def counting_own_vote_at_once(self: raft.core.Raft, m: Message) -> None:
        if m.to != self.id:
            send(self, m)
        elif self.poll(self.id, MessageType.VOTE, True) == VoteResult.WON:
            self.become_leader()

    monkeypatch.setattr(raft.core.Raft, "send", counting_own_vote_at_once)
    found = _hunt(budget=500)  # CI's budget: python -m tests.sim --seeds 500
    assert found.kind == "safety", found.error
    assert found.prop in {"log matching", "state machine safety"}, found.error


def test_a_failure_exits_1_with_the_replay_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, index, term: True)
    assert main(["--seeds", "10", "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert "FAILED (safety)" in out
    assert "python -m tests.sim --seed " in out


def test_wiped_node_without_its_fence(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node whose disk was wiped comes back with the bootstrap membership, term 0 and an
    empty log (raft/core.py, "Rejoining after a lost disk"). A host that does not fence it lets
    it vote again in terms its old incarnation voted in, for candidates that lack what that
    incarnation acknowledged, and acknowledge a deposed leader's appends."""
    monkeypatch.setattr(RawNode, "set_fence", lambda self, fence: None)
    found = first_failure(list(range(400)), SimOptions(), JOBS)
    assert found is not None, "the simulation did not find the unfenced wiped node in 400 seeds"
    assert found.kind == "safety", found.error
    assert found.prop in {
        "commit durability",
        "election safety",
        "leader completeness",
        "state machine safety",
        "log matching",
    }, found.error
