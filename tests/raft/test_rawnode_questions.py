"""RawNode answers its host's questions (etcd's BasicStatus / WithProgress), so nothing outside
raft/ reads its log or tracker: applied and committed indexes, terms at an index, the leader's
tail, who is in sync and how far they durably are, a peer's progress, the membership.
"""

from __future__ import annotations

from raft import MessageType, Role
from tests.raft.harness import Cluster


def _elected() -> Cluster:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.flush()
    return c


def test_a_settled_leader_has_applied_its_own_term() -> None:
    c = _elected()
    leader = c.nodes[1]
    last = leader.last_index()
    assert leader.committed == leader.applied == leader.persisted_index() == last
    assert leader.term_at(last) == leader.term and leader.term_at(last + 1) == 0
    assert leader.caught_up_in_term()
    assert leader.unapplied_entries() == []
    assert leader.conf_state().voters == frozenset({1, 2, 3})
    assert leader.in_sync_replicas() == frozenset({1, 2, 3})
    progress = leader.progress_of(2)
    assert progress is not None and progress.match == last
    assert leader.progress_of(9) is None
    assert c.nodes[2].progress_of(1) is None  # a follower tracks nobody
    assert c.nodes[2].in_sync_durable_index() == 0


def test_the_in_sync_durable_index_waits_for_every_in_sync_disk() -> None:
    c = _elected()
    leader = c.nodes[1]
    before = leader.last_index()
    index = leader.propose(b"x")
    # Proposed, not persisted anywhere: the leader's own disk holds the floor down.
    assert [e.index for e in leader.unapplied_entries()] == [index]
    assert leader.persisted_index() == before
    assert leader.in_sync_durable_index() == before
    # The leader persists it (its appends queued, not delivered): the followers hold it down.
    assert c.ready(1)
    c.queue.clear()
    assert leader.persisted_index() == index
    assert leader.in_sync_durable_index() == before
    # Once the followers have it and said so, every in-sync replica durably holds it.
    leader.propose(b"y")
    c.flush()
    assert leader.in_sync_durable_index() == leader.last_index() == index + 1
    assert leader.committed == leader.applied == index + 1


def test_a_new_leader_knows_its_predecessors_commands_only_once_its_term_commits() -> None:
    c = _elected()
    old_term = c.nodes[1].term
    # Node 2 wins, but its own no-op reaches nobody: it has not committed in its term yet.
    c.nodes[2].campaign()
    c.flush(pick=lambda m: m.type != MessageType.APP)
    new = c.nodes[2]
    assert new.role == Role.LEADER and new.term > old_term
    assert new.term_at(new.committed) == old_term
    assert not new.caught_up_in_term()
    for _ in range(3):  # heartbeats find the followers behind; the no-op goes out again
        new.tick()
        c.flush()
    assert new.term_at(new.committed) == new.term and new.caught_up_in_term()
