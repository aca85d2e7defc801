"""Quiescence: idle groups stop ticking, and wake for anything that matters (raft/core.py).

The host loop here ticks only nodes that are not quiesced, as node/driver.py does, so these
tests exercise what production relies on: a quiet group still elects a new leader when its
leader's node dies (once the host wakes the followers), and a quiet group whose leader is alive
keeps it even when one follower loses its link to it (PreVote and CheckQuorum still hold).
"""

from __future__ import annotations

from raft import QUIESCE_CONTEXT, Message, MessageType, Role
from tests.raft.harness import Cluster

ELECTION = 10


def _cluster() -> Cluster:
    c = Cluster(
        [1, 2, 3], election_tick=ELECTION, heartbeat_tick=2, pre_vote=True, check_quorum=True
    )
    c.elect(1)
    c.nodes[1].propose(b"x")
    c.flush()
    return c


def _quiesce(c: Cluster) -> None:
    assert c.nodes[1].maybe_quiesce()
    c.flush()
    assert all(c.nodes[i].quiesced for i in (1, 2, 3))


def _run(c: Cluster, ticks: int, cut: frozenset[frozenset[int]] = frozenset()) -> None:
    """Tick the awake nodes (the driver's rule) and deliver, dropping messages on cut links."""

    def allowed(m: Message) -> bool:
        return frozenset((m.frm, m.to)) not in cut

    for _ in range(ticks):
        for i, rn in c.nodes.items():
            if i not in c.down and not rn.quiesced:
                rn.tick()
        c.flush(allowed)


def test_idle_leader_quiesces_its_followers() -> None:
    c = _cluster()
    _quiesce(c)
    # The handshake ends with the followers' marked replies: nothing else to send, and a
    # quiet group ticked by nobody stays quiet.
    assert not any(c.nodes[i].has_ready() for i in (1, 2, 3))
    _run(c, 5 * ELECTION)
    assert c.leaders() == [1]
    assert all(c.nodes[i].quiesced for i in (1, 2, 3))


def test_proposal_wakes_the_group_and_commits() -> None:
    c = _cluster()
    _quiesce(c)
    index = c.nodes[1].propose(b"y")
    assert not c.nodes[1].quiesced
    c.flush()
    assert not c.nodes[2].quiesced and not c.nodes[3].quiesced
    assert all(c.nodes[i].raft.log.committed == index for i in (1, 2, 3))
    _quiesce(c)  # and it can go quiet again


def test_no_quiescence_with_entries_in_flight_or_unapplied() -> None:
    c = _cluster()
    c.nodes[1].propose(b"y")
    assert not c.nodes[1].maybe_quiesce()  # not even drained
    c.ready(1)  # sent, not yet acknowledged
    assert not c.nodes[1].maybe_quiesce()
    c.flush()
    assert c.nodes[1].maybe_quiesce()


def test_no_quiescence_when_a_follower_stopped_answering() -> None:
    c = _cluster()
    c.crash(3)
    _run(c, 3 * 2)  # three heartbeat intervals without an answer from 3
    assert not c.nodes[1].maybe_quiesce()
    assert not c.nodes[1].quiesced


def test_plain_heartbeat_reply_wakes_the_leader() -> None:
    # A follower that could not go quiet answers the quiesce heartbeat plainly; so does one
    # that woke up for its own reasons. Either way the leader resumes.
    c = _cluster()
    _quiesce(c)
    c.nodes[1].step(Message(MessageType.HEARTBEAT_RESP, to=1, frm=2, term=c.nodes[1].term))
    assert not c.nodes[1].quiesced
    marked = Message(
        MessageType.HEARTBEAT_RESP, to=1, frm=3, term=c.nodes[1].term, context=QUIESCE_CONTEXT
    )
    assert c.nodes[1].maybe_quiesce()
    c.nodes[1].step(marked)  # the handshake's own reply does not
    assert c.nodes[1].quiesced


def test_quiet_followers_elect_a_new_leader_when_the_leader_dies() -> None:
    c = _cluster()
    _quiesce(c)
    term = c.nodes[1].term
    c.crash(1)
    _run(c, 10 * ELECTION)
    assert c.leaders() == [], "nobody told the followers: a quiet group hears nothing"
    # The hosts of 2 and 3 notice node 1 is gone (its stream broke) and wake the group.
    for i in (2, 3):
        c.nodes[i].unquiesce()
    waited = 0
    while not c.leaders() and waited < 6 * ELECTION:
        _run(c, 1)
        waited += 1
    assert c.leaders() and c.leaders()[0] in (2, 3)
    assert c.nodes[c.leaders()[0]].term == term + 1  # PreVote: one election, one new term
    assert waited <= 4 * ELECTION, f"took {waited} ticks"


def test_one_woken_follower_is_enough() -> None:
    # Only node 2's host noticed; node 3 wakes when 2's PreVote arrives, and grants it once
    # its own lease ran out.
    c = _cluster()
    _quiesce(c)
    c.crash(1)
    c.nodes[2].unquiesce()
    _run(c, 8 * ELECTION)
    assert c.leaders() and c.leaders()[0] in (2, 3)


def test_live_leader_keeps_its_lease_against_a_cut_off_follower() -> None:
    # Node 2 loses its link to the leader (only that link): its host wakes the group. Node 3
    # wakes on 2's PreVote and wakes the leader, whose heartbeats then keep 3 from granting.
    c = _cluster()
    _quiesce(c)
    term = c.nodes[1].term
    cut = frozenset({frozenset((1, 2))})
    c.nodes[2].unquiesce()
    _run(c, 10 * ELECTION, cut)
    assert c.leaders() == [1]
    assert c.nodes[1].term == term and c.nodes[3].term == term
    assert not c.nodes[1].quiesced  # woken, and stays awake while a follower is missing
    # The link heals: the group converges and can quiesce again.
    _run(c, 3 * ELECTION)
    assert c.leaders() == [1]
    assert c.nodes[1].maybe_quiesce()


def test_any_tick_or_campaign_ends_quiescence() -> None:
    c = _cluster()
    _quiesce(c)
    c.nodes[2].tick()
    assert not c.nodes[2].quiesced
    assert c.nodes[1].quiesced  # the leader heard nothing yet
    c.flush()  # 2's tick woke it and it told its leader
    assert not c.nodes[1].quiesced
    assert c.nodes[1].role == Role.LEADER


def test_leader_quiesces_without_an_unreachable_follower_once_it_left_the_isr() -> None:
    c = _cluster()
    c.crash(3)
    gone = frozenset({3})
    assert 3 in c.nodes[1].in_sync_replicas()
    assert not c.nodes[1].maybe_quiesce(gone)  # 3 still counts as in sync: the ISR must shrink
    _run(c, c.nodes[1].raft.cfg.isr.max_lag_ticks + 1)
    assert c.nodes[1].in_sync_replicas() == frozenset({1, 2})
    assert c.nodes[1].maybe_quiesce(gone)
    c.flush()
    assert c.nodes[2].quiesced
    # Node 3 comes back: the leader's host wakes the group, whose heartbeats bring it in.
    c.restart(3)
    c.nodes[1].unquiesce()
    _run(c, 3 * ELECTION)
    assert c.leaders() == [1]
    assert c.nodes[1].in_sync_replicas() == frozenset({1, 2, 3})
    assert c.nodes[1].maybe_quiesce()


def test_no_quiescence_without_a_quorum_of_reachable_members() -> None:
    c = _cluster()
    assert not c.nodes[1].maybe_quiesce(frozenset({2, 3}))


def test_an_idle_group_quiesces_after_a_caught_up_follower_was_reported_unreachable() -> None:
    # report_unreachable puts 2 in PROBE though it has everything. Heartbeat answers recover it
    # (an empty append, whose answer means REPLICATE again), so the idle group can go quiet;
    # before, 2 stayed probing until someone wrote, and maybe_quiesce refused all along.
    c = _cluster()
    c.nodes[1].report_unreachable(2)
    assert not c.nodes[1].maybe_quiesce()
    _run(c, 2)  # one heartbeat round trip (heartbeat_tick=2)
    _quiesce(c)
