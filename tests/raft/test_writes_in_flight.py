"""Writes in flight (raft/rawnode.py): the host takes the next Ready before the previous one is
durable. A Ready never repeats what an earlier one handed out, a durable report for entries a new
leader replaced meanwhile changes nothing, and the leader counts itself only for what is durable."""

from __future__ import annotations

import pytest

from raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NotLeaderError,
    RaftError,
    RawNode,
    Ready,
    Role,
)
from raft.log import RaftLog
from tests.raft.harness import storage_with

APP = MessageType.APP
APP_RESP = MessageType.APP_RESP


def ents(*terms: int, start: int) -> tuple[Entry, ...]:
    return tuple(Entry(index=start + i, term=t, data=b"x") for i, t in enumerate(terms))


def finish(rn: RawNode, rd: Ready) -> None:
    """What a host does once rd's write is durable: write it, apply, advance."""
    st = rn.raft.log.storage
    if rd.entries:
        st.append(rd.entries)  # type: ignore[attr-defined]
    if rd.hard_state is not None:
        st.set_hard_state(rd.hard_state)  # type: ignore[attr-defined]
    rn.advance(rd)


def follower() -> RawNode:
    """Node 2, a follower of node 1 in term 2, its log one entry long."""
    rn = RawNode(Config(id=2), storage_with([1, 2, 3], [1]))
    rn.step(Message(type=APP, to=2, frm=1, term=2, index=1, log_term=1, commit=1))
    finish(rn, rn.ready())
    return rn


def test_the_next_ready_carries_only_what_is_new() -> None:
    rn = follower()
    rn.step(
        Message(type=APP, to=2, frm=1, term=2, index=1, log_term=1, entries=ents(2, 2, start=2))
    )
    first = rn.ready()
    assert [e.index for e in first.entries] == [2, 3]
    assert not rn.has_ready()  # nothing new: the write is in flight, not forgotten
    rn.step(
        Message(
            type=APP, to=2, frm=1, term=2, index=3, log_term=2, commit=3, entries=ents(2, start=4)
        )
    )
    second = rn.ready()
    assert [e.index for e in second.entries] == [4]
    # Entries 2 and 3 are committed while still being written: handed out once, to be applied
    # after the write that holds them (the host finishes Readies in order).
    assert [e.index for e in second.committed_entries] == [2, 3]
    assert [m.index for m in second.persisted_messages if m.type == APP_RESP] == [4]
    assert not rn.has_ready()
    finish(rn, first)
    assert rn.raft.log.unstable.offset == 4
    finish(rn, second)
    assert rn.raft.log.applied == 3
    assert rn.raft.log.unstable.entries == []
    assert rn.raft.log.storage.last_index() == 4


def test_entries_replaced_while_in_flight_are_written_again_and_the_stale_report_ignored() -> None:
    rn = follower()
    rn.step(
        Message(type=APP, to=2, frm=1, term=2, index=1, log_term=1, entries=ents(2, 2, 2, start=2))
    )
    stale = rn.ready()
    assert [e.index for e in stale.entries] == [2, 3, 4]
    # A new leader (node 3, term 3) never had 3 and 4: its entries replace them mid-write.
    rn.step(
        Message(type=APP, to=2, frm=3, term=3, index=2, log_term=2, entries=ents(3, 3, start=3))
    )
    log = rn.raft.log
    assert log.unstable.offset_in_progress == 3
    fresh = rn.ready()
    assert [(e.index, e.term) for e in fresh.entries] == [(3, 3), (4, 3)]
    finish(rn, stale)  # durable now, but its 3 and 4 are no longer ours: the report is
    assert log.last_persisted_index() == 1  # ignored whole (2 counts with the next one)
    assert [(e.index, e.term) for e in log.unstable.entries] == [(2, 2), (3, 3), (4, 3)]
    finish(rn, fresh)  # writes land in order: the storage now holds the new leader's 3 and 4
    assert log.last_persisted_index() == 4
    assert [log.storage.term(i) for i in (2, 3, 4)] == [2, 3, 3]
    assert log.unstable.entries == []


def test_a_leader_counts_itself_only_for_durable_entries() -> None:
    rn = RawNode(Config(id=1), storage_with([1], [1]))
    rn.campaign()
    finish(rn, rn.ready())  # a single voter: it wins at once
    finish(rn, rn.ready())  # the no-op of its term, committed by its own durable copy
    committed = rn.raft.log.committed
    rn.propose(b"a")
    first = rn.ready()
    rn.propose(b"b")
    second = rn.ready()
    assert [e.data for e in second.entries] == [b"b"]
    assert rn.raft.log.committed == committed  # neither write is durable yet
    finish(rn, first)
    assert rn.raft.log.committed == committed + 1
    assert not second.committed_entries
    third = rn.ready()
    assert [e.data for e in third.committed_entries] == [b"a"]
    finish(rn, second)
    finish(rn, third)
    assert rn.raft.log.committed == committed + 2


def test_applying_is_apart_from_applied() -> None:
    log = RaftLog(storage_with([1], [1, 1, 1]))
    log.commit_to(3)
    assert [e.index for e in log.next_committed_entries()] == [1, 2, 3]
    log.applying_to(3)
    assert log.next_committed_entries() == [] and not log.has_next_committed_entries()
    assert log.applied == 0
    log.applied_to(3)
    assert log.applied == 3


def test_a_single_voter_leads_only_once_its_term_is_durable() -> None:
    # Its own vote counts once persisted (etcd's single_node.txt): before, it is a candidate,
    # refuses proposals and sends nothing, so nothing of a term it could forget leaves it.
    rn = RawNode(Config(id=1), storage_with([1], learners=[2]))
    rn.campaign()
    assert rn.role == Role.CANDIDATE
    rd = rn.ready()
    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (1, 1)
    assert not rd.messages and not rd.persisted_messages
    assert rn.role == Role.CANDIDATE  # taken, not yet durable
    with pytest.raises(NotLeaderError):
        rn.propose(b"x")
    finish(rn, rd)
    assert rn.role == Role.LEADER
    assert rn.has_ready()  # its no-op, and the append of it to the learner


def test_a_vote_that_becomes_durable_after_a_newer_term_counts_for_nothing() -> None:
    rn = RawNode(Config(id=1), storage_with([1], learners=[2]))
    rn.campaign()
    rd = rn.ready()
    # While the write is in flight the node hears of term 5 (a leader that its learner
    # followed after a reconfiguration, say): the durable vote of term 1 is stale by then.
    rn.step(Message(type=MessageType.HEARTBEAT, to=1, frm=2, term=5))
    finish(rn, rd)
    assert (rn.role, rn.term) == (Role.FOLLOWER, 5)


# -- what a crash may leave behind when the host applies ahead of its write (sim seeds 757, 524)


def restarted_over(keep: int) -> RawNode:
    """Node 2 restarted from a disk where the host applied entries 1..3 ahead of the write that
    held their commit: the crash kept its snapshot at 3 (and the log from `keep` entries
    before it) but lost the commit index, which reads 1."""
    st = storage_with([1, 2, 3], [1, 1, 1], HardState(term=1, commit=1))
    st.create_snapshot(3, ConfState(voters=frozenset({1, 2, 3})), b"state at 3")
    st.compact(3 - keep)
    return RawNode(Config(id=2, applied=3), st)


@pytest.mark.parametrize("keep", [0, 2])
def test_a_snapshot_ahead_of_the_durable_commit_is_committed_and_never_applied_again(
    keep: int,
) -> None:
    # Sim seed 757: the core clamped applied down to the stale commit, then handed entry 1
    # out again once the leader's commit came back; applied twice. With the log compacted at
    # the snapshot it refused to start at all ("hard state commit 1 is out of range [3, 3]").
    rn = restarted_over(keep)
    assert (rn.committed, rn.applied) == (3, 3)
    rn.step(Message(type=APP, to=2, frm=1, term=1, index=3, log_term=1, commit=3))
    rd = rn.ready()
    assert rd.committed_entries == []
    finish(rn, rd)
    rn.step(
        Message(
            type=APP, to=2, frm=1, term=1, index=3, log_term=1, commit=4, entries=ents(1, start=4)
        )
    )
    rd = rn.ready()
    assert [e.index for e in rd.committed_entries] == [4]


def test_a_host_that_applied_past_its_log_is_refused() -> None:
    # Its disk lost entries it had applied: a broken disk, not something to clamp away.
    st = storage_with([1, 2, 3], [1, 1, 1], HardState(term=1, commit=1))
    with pytest.raises(RaftError, match="past the last index"):
        RawNode(Config(id=2, applied=5), st)


def committing_a_conf_change() -> tuple[RawNode, Ready]:
    """Follower 2 holds a membership change at index 2 and learns it is committed."""
    rn = follower()
    cc = Entry(
        index=2,
        term=2,
        type=EntryType.CONF_CHANGE,
        data=ConfChange(ConfChangeType.ADD_LEARNER, 4).encode(),
    )
    rn.step(Message(type=APP, to=2, frm=1, term=2, index=1, log_term=1, entries=(cc,)))
    finish(rn, rn.ready())
    rn.step(Message(type=MessageType.HEARTBEAT, to=2, frm=1, term=2, commit=2))
    rd = rn.ready()
    assert [e.index for e in rd.committed_entries] == [2]
    return rn, rd


def test_a_membership_change_is_applied_only_after_its_commit_is_synced() -> None:
    # Sim seed 524: node 4 applied its group's change {1,4} -> {4}, lost the lazily written
    # commit in a crash, and restarted in {1,4} with node 1 gone for good: no leader, ever.
    rn, rd = committing_a_conf_change()
    assert rd.applies_conf_change() and rd.must_sync()
    with pytest.raises(RaftError, match="membership change"):
        rn.advance_applied(rd)  # not ahead of its write
    plain = follower()
    plain.step(
        Message(
            type=APP, to=2, frm=1, term=2, index=1, log_term=1, commit=2, entries=ents(2, start=2)
        )
    )
    assert not plain.ready().applies_conf_change()
