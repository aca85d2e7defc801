"""Replica moves as plain functions and values (node/moves.py, the controller's appliers, the
driver's throttle): the step order, the plan checks, placement by load, and the metadata
following the reports. The whole thing against real processes is tests/integration/test_moves.py;
with crashes and cuts, the broker simulation (tests/brokersim)."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.controller import BrokerInfo, Controller, ControllerState, TopicInfo
from node.controller_commands import (
    CancelMove,
    DecommissionNode,
    MovePartition,
    PartitionMembership,
    RecommissionNode,
)
from node.driver import (
    THROTTLED_INFLIGHT,
    THROTTLED_INFLIGHT_S,
    RaftDriver,
    RaftTiming,
    Throttle,
    split_append,
    throttled_window,
)
from node.errors import BrokerError, ErrorCode
from node.moves import (
    CATCH_UP_LAG,
    Step,
    assign_least_loaded,
    next_step,
    plan_cancel,
    plan_decommission,
    plan_moves,
    plan_readd,
    plan_rebalance,
    plan_recommission,
    replica_load,
    settled_index,
)
from node.storage import NodeStore
from raft import Entry, EntryType, Message, MessageType, PeerProgress, ProgressState
from tests.raft.harness import Solo


def pr(match: int, ticks: int = 0) -> PeerProgress:
    return PeerProgress(
        match=match,
        next=match + 1,
        state=ProgressState.REPLICATE,
        ticks_since_ack=ticks,
        is_learner=False,
    )


def step(voters: set[int], learners: set[int], target: list[int], **kw: object) -> Step:
    args: dict[str, object] = {
        "leader": 1,
        "progress": {n: pr(100) for n in voters | learners},
        "in_sync": voters,
        "last_index": 100,
        "recent_ticks": 10,
    }
    args.update(kw)
    return next_step(voters=voters, learners=learners, target=target, **args)  # type: ignore[arg-type]


def test_a_move_adds_a_learner_promotes_it_once_caught_up_then_removes_the_old_replica() -> None:
    assert step({1, 2, 3}, set(), [1, 2, 4]) == Step("add_learner", 4)
    behind = {1: pr(100), 2: pr(100), 3: pr(100), 4: pr(100 - CATCH_UP_LAG - 1)}
    assert step({1, 2, 3}, {4}, [1, 2, 4], progress=behind) == Step("wait", 4)
    silent = {1: pr(100), 2: pr(100), 3: pr(100), 4: pr(100, ticks=11)}
    assert step({1, 2, 3}, {4}, [1, 2, 4], progress=silent) == Step("wait", 4)
    assert step({1, 2, 3}, {4}, [1, 2, 4]) == Step("promote", 4)
    assert step({1, 2, 3, 4}, set(), [1, 2, 4]) == Step("remove", 3)
    assert step({1, 2, 4}, set(), [1, 2, 4]) == Step("done")


def test_new_replicas_join_one_at_a_time_before_any_old_one_leaves() -> None:
    assert step({1, 2, 3}, set(), [4, 5, 6]) == Step("add_learner", 4)
    assert step({1, 2, 3, 4}, set(), [4, 5, 6]) == Step("add_learner", 5)
    assert step({1, 2, 3, 4}, {5}, [4, 5, 6], progress={5: pr(0)}, last_index=1000) == Step(
        "wait", 5
    )
    assert step({1, 2, 3, 4, 5, 6}, set(), [4, 5, 6]) == Step("remove", 2)


def test_the_leader_hands_over_before_it_is_removed() -> None:
    # Only the leader (1) is left to go: transfer to an in-sync, caught-up target voter.
    assert step({1, 2, 3}, set(), [2, 3]) == Step("transfer", 2)
    lagging = {1: pr(1000), 2: pr(10), 3: pr(1000)}
    assert step({1, 2, 3}, set(), [2, 3], progress=lagging, last_index=1000) == Step("transfer", 3)
    assert step({1, 2, 3}, set(), [2, 3], in_sync={1}) == Step("wait", 0)
    # Other voters that go are removed first, the leader last.
    assert step({1, 2, 3, 4}, set(), [3, 4]) == Step("remove", 2)


def test_a_learner_is_caught_up_only_once_it_holds_an_entry_of_the_leaders_term() -> None:
    # Brokersim seed 50284 (one string hashing, before the driver's order was fixed): a new
    # leader counts every peer as heard, and a learner with match 0 is "within the lag" of a
    # short log; promoted so, a re-added replica that waits for its floor (it votes only once
    # a leader brings its log past its old replica's last entry) left voters {1, 2} with no
    # leader for good. Now it must hold the leader's first entry of its term (and the change
    # that added it) first.
    lead = Solo(1, voters=(1, 2), learners=(3,), terms=[1, 1, 1], term=1)
    lead.make_leader()
    status = lead.rn.status()
    term, last = status.term, status.last_index
    assert (term, last) == (2, 4)  # the new leader's no-op at 4
    lead.step(MessageType.APP_RESP, 2, term=term, index=last)
    lead.drain()

    def look(conf_index: int = 0) -> Step:
        st = lead.rn.status()
        return next_step(
            leader=1,
            voters={1, 2},
            learners={3},
            target=[1, 2, 3],
            progress=st.progress,
            in_sync=st.in_sync,
            last_index=st.last_index,
            recent_ticks=10,
            settled_at=settled_index(lead.rn, st, conf_index),
        )

    assert lead.rn.status().progress[3].match == 0
    assert look() == Step("wait", 3)
    lead.step(MessageType.APP_RESP, 3, term=term, index=3)  # the old term's entries only
    lead.drain()
    assert look() == Step("wait", 3)
    lead.step(MessageType.APP_RESP, 3, term=term, index=last)
    lead.drain()
    assert look() == Step("promote", 3)
    assert look(conf_index=last + 1) == Step("wait", 3)  # nor without the change that added it
    st = lead.rn.status()
    assert settled_index(lead.rn, st, 0) == 4 and settled_index(lead.rn, st, 9) == 9


def test_no_voter_leaves_while_another_waits_silent_for_its_wiped_disk_to_be_replaced() -> None:
    # Brokersim seed 80259: node 1's disk was wiped (its old incarnation still a voter, the
    # new one silent); removing node 4 left voters {1, 3} that could never commit again.
    assert step({1, 3, 4}, set(), [1, 3], silent={1}) == Step("wait", 4)
    assert step({1, 3, 4}, set(), [1, 3]) == Step("remove", 4)
    # The silent one itself may go, and goes first.
    assert step({1, 3, 4}, set(), [3, 5], silent={1}) == Step("add_learner", 5)
    assert step({1, 3, 4, 5}, set(), [3, 5], silent={1}, leader=3) == Step("remove", 1)


def test_a_learner_outside_the_target_is_removed_first() -> None:
    assert step({1, 2, 3}, {5}, [1, 2, 4]) == Step("remove", 5)


def state(brokers: int = 4) -> ControllerState:
    st = ControllerState()
    for b in range(1, brokers + 1):
        st.brokers[b] = BrokerInfo(b, "127.0.0.1", 9000 + b)
    st.topics["t"] = TopicInfo("t", 1, [[1, 2, 3], [2, 3, 1]])
    return st


@pytest.mark.parametrize(
    ("wishes", "code", "why"),
    [
        ([("t", 0, [1, 2, 9])], ErrorCode.INVALID_REPLICA_ASSIGNMENT, "not registered brokers"),
        ([("t", 0, [1, 1, 2])], ErrorCode.INVALID_REPLICA_ASSIGNMENT, "name a node twice"),
        ([("t", 0, [])], ErrorCode.INVALID_REPLICATION_FACTOR, "replication factor 0"),
        ([("u", 0, [1, 2])], ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "does not exist"),
        ([("t", 2, [1, 2])], ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "partitions 0..1"),
        ([("t", 0, [1, 2, 4]), ("t", 0, [1, 2])], ErrorCode.INVALID_REPLICA_ASSIGNMENT, "twice"),
    ],
)
def test_a_bad_plan_is_refused_whole(
    wishes: list[tuple[str, int, list[int]]], code: int, why: str
) -> None:
    st = state()
    with pytest.raises(BrokerError, match=why) as err:
        plan_moves(st, [("t", 1, [2, 3, 4]), *wishes])
    assert err.value.code == code


def test_a_plan_skips_what_is_in_place_and_refuses_a_second_move_and_retired_nodes() -> None:
    st = state()
    assert plan_moves(st, [("t", 0, [1, 2, 3])]) == []
    (cmd,) = plan_moves(st, [("t", 0, [1, 2, 4])], throttle_bytes_s=1000)
    assert cmd == MovePartition(
        name="t", topic_id=1, partition=0, target=(1, 2, 4), throttle_bytes_s=1000
    )
    ctl = _controller(st)
    ctl.apply_command(cmd)
    with pytest.raises(BrokerError, match="being moved already"):
        plan_moves(st, [("t", 0, [1, 2, 3])])
    ctl.apply_command(DecommissionNode(node_id=4))
    with pytest.raises(BrokerError, match="decommissioned"):
        plan_moves(st, [("t", 1, [2, 3, 4])])
    with pytest.raises(BrokerError, match="throttle"):
        plan_moves(st, [("t", 1, [2, 1, 3])], throttle_bytes_s=-1)


def _controller(st: ControllerState) -> Controller:
    ctl = Controller.__new__(Controller)  # the appliers only: no Raft group needed
    ctl.state = st
    ctl._appliers = {  # type: ignore[attr-defined]
        MovePartition: ctl._move_partition,
        PartitionMembership: ctl._partition_membership,
        DecommissionNode: ctl._decommission_node,
        CancelMove: ctl._cancel_move,
        RecommissionNode: ctl._recommission_node,
    }
    return ctl


def report(voters: tuple[int, ...], learners: tuple[int, ...], at: int) -> PartitionMembership:
    return PartitionMembership(
        name="t", topic_id=1, partition=0, voters=voters, learners=learners, conf_index=at
    )


def test_the_metadata_follows_each_reported_step_and_the_move_ends_at_the_target() -> None:
    st = state()
    ctl = _controller(st)
    ctl.apply_command(MovePartition(name="t", topic_id=1, partition=0, target=(4, 2, 1)))
    info = st.topics["t"]
    assert ctl.hosted_replicas(info, 0) == [1, 2, 3, 4]
    ctl.apply_command(report((1, 2, 3), (4,), 5))
    assert st.moves["t/0"].learners == [4] and ctl.learners_of(info, 0) == [4]
    ctl.apply_command(report((1, 2, 3, 4), (), 6))
    assert info.replicas[0] == [4, 2, 1, 3]  # target order first: 4 is the preferred leader
    ctl.apply_command(report((1, 2, 3), (4,), 5))  # a stale report changes nothing
    assert info.replicas[0] == [4, 2, 1, 3] and st.moves["t/0"].learners == []
    ctl.apply_command(report((1, 2, 4), (), 9))
    assert info.replicas[0] == [4, 2, 1] and "t/0" not in st.moves
    assert ctl.hosted_replicas(info, 0) == [4, 2, 1]
    # The state survives a snapshot round trip.
    again = ControllerState.from_json(st.to_json())
    assert again.topics["t"].replicas == info.replicas and again.topics["t"].conf_index == {"0": 9}


def test_a_cancelled_move_goes_back_to_its_origin_one_change_at_a_time() -> None:
    st = state()
    ctl = _controller(st)
    info = st.topics["t"]
    ctl.apply_command(MovePartition(name="t", topic_id=1, partition=0, target=(1, 2, 4)))
    ctl.apply_command(report((1, 2, 3, 4), (), 6))  # 4 promoted; 3 not removed yet
    (cmd,) = plan_cancel(st, [("t", 0)])
    assert cmd == CancelMove(name="t", topic_id=1, partition=0)
    ctl.apply_command(cmd)
    move = st.moves["t/0"]
    assert move.cancelled and move.target == [1, 2, 3] and move.origin == [1, 2, 3]
    # The leader drives back: the voter the move added goes, the old ones stay.
    assert step({1, 2, 3, 4}, set(), move.target) == Step("remove", 4)
    ctl.apply_command(report((1, 2, 3), (), 7))
    assert "t/0" not in st.moves and info.replicas[0] == [1, 2, 3]
    # A move that went further: the removed voter comes back as a learner, the added learner
    # goes first.
    assert step({1, 2, 4}, {5}, [1, 2, 3]) == Step("remove", 5)
    assert step({1, 2, 4}, set(), [1, 2, 3]) == Step("add_learner", 3)


def test_a_move_cancelled_before_its_first_step_ends_on_a_report_of_the_same_membership() -> None:
    st = state()
    ctl = _controller(st)
    ctl.apply_command(report((1, 2, 3), (), 4))
    ctl.apply_command(MovePartition(name="t", topic_id=1, partition=0, target=(1, 2, 4)))
    ctl.apply_command(CancelMove(name="t", topic_id=1, partition=0))
    # No Raft change happened, so no newer report comes: the same index, at the origin, ends it.
    ctl.apply_command(report((1, 2, 3), (), 4))
    assert "t/0" not in st.moves and st.topics["t"].replicas[0] == [1, 2, 3]
    # A report of the same index ends no move that is not at its target (it says nothing new).
    ctl.apply_command(MovePartition(name="t", topic_id=1, partition=0, target=(1, 2, 4)))
    ctl.apply_command(report((1, 2, 3), (), 4))
    assert "t/0" in st.moves


def test_cancelling_what_is_not_a_cancellable_move_is_refused_and_changes_nothing() -> None:
    st = state(5)
    ctl = _controller(st)
    cases: list[tuple[list[tuple[str, int]], int, str]] = [
        ([("t", 0)], ErrorCode.NO_REASSIGNMENT_IN_PROGRESS, "not being moved"),
        ([("u", 0)], ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "does not exist"),
        ([("t", 5)], ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "partitions 0..1"),
    ]
    for which, code, why in cases:
        with pytest.raises(BrokerError, match=why) as err:
            plan_cancel(st, which)
        assert err.value.code == code
    ctl.apply_command(MovePartition(name="t", topic_id=1, partition=0, target=(1, 2, 4)))
    before = st.to_json()
    with pytest.raises(BrokerError, match="named twice"):
        plan_cancel(st, [("t", 0), ("t", 0)])
    with pytest.raises(BrokerError, match="not being moved"):  # all or nothing
        plan_cancel(st, [("t", 0), ("t", 1)])
    ctl.apply_command(CancelMove(name="t", topic_id=1, partition=0))
    after_cancel = st.to_json()
    with pytest.raises(BrokerError, match="cancelled already") as err:
        plan_cancel(st, [("t", 0)])
    assert err.value.code == ErrorCode.NO_REASSIGNMENT_IN_PROGRESS
    # A racing second cancel is refused by the applier too, and changes nothing.
    with pytest.raises(BrokerError, match="no move to cancel"):
        ctl._cancel_move(CancelMove(name="t", topic_id=1, partition=0))
    assert st.to_json() == after_cancel != before
    # A refill of a wiped node's replica cannot be cancelled.
    fresh = state(5)
    ctl = _controller(fresh)
    for readd in plan_readd(fresh, 3):
        ctl.apply_command(readd)
    with pytest.raises(BrokerError, match="lost its disk"):
        plan_cancel(fresh, [("t", 1)])


def test_decommission_cancel_takes_the_node_back_and_turns_its_moves_around() -> None:
    st = state(5)
    ctl = _controller(st)
    with pytest.raises(BrokerError, match="not decommissioned"):
        plan_recommission(st, 3)
    wishes = plan_decommission(st, 3)
    ctl.apply_command(DecommissionNode(node_id=3))
    for cmd in plan_moves(st, wishes):
        ctl.apply_command(cmd)
    # A plain cancel would put a replica back on the decommissioned node: refused.
    with pytest.raises(BrokerError, match="keep a replica on decommissioned node"):
        plan_cancel(st, [("t", 0)])
    which = plan_recommission(st, 3)
    assert which == [("t", 0), ("t", 1)]
    cancels = plan_cancel(st, which, recommissioning=3)
    ctl.apply_command(RecommissionNode(node_id=3))
    for c in cancels:
        ctl.apply_command(c)
    assert 3 not in st.decommissioned
    assert [st.moves[k].target for k in ("t/0", "t/1")] == [[1, 2, 3], [2, 3, 1]]
    with pytest.raises(BrokerError, match="not decommissioned"):
        ctl._recommission_node(RecommissionNode(node_id=3))


def test_the_same_replicas_in_another_order_only_reorder() -> None:
    st = state()
    ctl = _controller(st)
    ctl.apply_command(MovePartition(name="t", topic_id=1, partition=0, target=(3, 1, 2)))
    assert st.topics["t"].replicas[0] == [3, 1, 2] and not st.moves


def test_decommission_moves_each_replica_to_the_least_loaded_other_broker() -> None:
    st = state(5)
    st.topics["t"] = TopicInfo("t", 1, [[1, 2, 3], [2, 3, 1], [3, 1, 2], [1, 4, 2]])
    wishes = plan_decommission(st, 1)
    # Loads before: 1:4, 2:4, 3:3, 4:1, 5:0; each replica goes where the load is least then
    # (ties: fewer preferred leaderships, then the lower id).
    targets = [w[2] for w in wishes]
    assert all(1 not in t and len(set(t)) == len(t) == 3 for t in targets)
    moved_to = [
        next(n for n in t if n not in old)
        for t, old in zip(targets, [p for p in st.topics["t"].replicas], strict=True)
    ]
    assert moved_to == [5, 4, 5, 5]
    with pytest.raises(BrokerError, match="not a registered broker"):
        plan_decommission(st, 9)
    small = state(3)
    with pytest.raises(BrokerError, match="add a broker first"):
        plan_decommission(small, 1)


def test_new_partitions_go_to_the_least_loaded_brokers() -> None:
    # Three brokers full of replicas, a fourth just joined: new partitions start there.
    st = state(4)
    st.topics["t"] = TopicInfo("t", 1, [[1, 2, 3], [2, 3, 1], [3, 1, 2]])
    placed = assign_least_loaded(st, 3, 3, salt=0)
    assert all(4 in p for p in placed)
    assert placed[0][0] == 4  # and it leads: it has no preferred leaderships yet
    replicas, leaders = replica_load(st)
    for p in placed:
        for n in p:
            replicas[n] += 1
        leaders[p[0]] += 1
    assert replicas == {1: 5, 2: 5, 3: 5, 4: 3}  # one replica of each new partition at most
    assert max(leaders.values()) - min(leaders.values()) <= 1
    # An empty cluster gets the classic spread: every broker leads once.
    empty = state(3)
    empty.topics.clear()
    spread = assign_least_loaded(empty, 3, 3, salt=1)
    assert sorted(p[0] for p in spread) == [1, 2, 3]
    # A decommissioned broker gets nothing.
    st.decommissioned.add(4)
    assert all(4 not in p for p in assign_least_loaded(st, 3, 3, salt=0))


class _Out:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str, Message]] = []

    def send(self, to: int, group: str, msg: Message) -> None:
        self.sent.append((to, group, msg))

    def flush(self) -> None:
        pass


def test_the_throttle_releases_appends_in_order_at_its_rate() -> None:
    out = _Out()
    throttle = Throttle(per_tick=1000)
    for i in range(10):
        throttle.offer(
            Message(
                type=MessageType.APP,
                to=4,
                frm=1,
                index=i,
                entries=[Entry(index=i + 1, term=1, type=EntryType.NORMAL, data=b"x" * 500)],
            )
        )
    released = []
    for _ in range(5):
        throttle.release(out, "g", 4)
        released.append(len(out.sent))
    # 1000 bytes a tick, 500-byte messages: two a tick.
    assert released == [2, 4, 6, 8, 10]
    assert [m.index for _, _, m in out.sent] == list(range(10))
    # Idle ticks save up at most one tick's allowance: no burst when traffic resumes.
    for _ in range(50):
        throttle.release(out, "g", 4)
    for i in range(10, 20):
        throttle.offer(
            Message(
                type=MessageType.APP,
                to=4,
                frm=1,
                index=i,
                entries=[Entry(index=i + 1, term=1, type=EntryType.NORMAL, data=b"x" * 500)],
            )
        )
    throttle.release(out, "g", 4)
    assert len(out.sent) == 12
    throttle.release_all(out, "g", 4)
    assert [m.index for _, _, m in out.sent] == list(range(20))


def app(index: int, size: int) -> Message:
    entries = (
        [Entry(index=index + 1, term=1, type=EntryType.NORMAL, data=b"x" * size)] if size else []
    )
    return Message(type=MessageType.APP, to=4, frm=1, index=index, entries=entries)


def test_the_throttle_keeps_appends_in_order_and_drops_what_a_resend_covers() -> None:
    throttle = Throttle(per_tick=100)
    assert throttle.wants(app(1, 500)) and not throttle.wants(app(1, 0))
    throttle.offer(app(1, 500))
    throttle.offer(app(2, 500))
    # An empty append behind held ones waits its turn (overtaking, it would be rejected).
    assert throttle.wants(app(3, 0))
    throttle.offer(app(3, 0))
    # The leader probes again from index 1: the held copies from 1 on are dropped.
    throttle.offer(app(1, 500))
    assert [m.index for m in throttle.held] == [1]
    heartbeat = Message(type=MessageType.HEARTBEAT, to=4, frm=1)
    assert not throttle.wants(heartbeat)
    out = _Out()
    throttle.release(out, "g", 4)
    assert len(out.sent) == 1 and throttle.allowance < 0


def test_the_throttle_cuts_a_large_append_into_pieces_a_follower_takes_as_the_whole() -> None:
    # A leader's append of five 300-byte entries (one message: its size limit is 1 MiB).
    lead = Solo(1)
    lead.make_leader()
    lead.commit_all()
    lead.rn.propose_many([bytes([i]) * 300 for i in range(5)])
    (whole,) = [m for m in lead.drain() if m.type == MessageType.APP and m.to == 2]
    assert len(whole.entries) == 5
    throttle = Throttle(per_tick=700)  # two entries' data per tick
    throttle.offer(whole)
    pieces = list(throttle.held)
    assert [len(p.entries) for p in pieces] == [2, 2, 1]
    assert [p.index for p in pieces] == [whole.index, whole.index + 2, whole.index + 4]
    # They leave tick by tick, in order: a piece goes while the allowance is positive, so a
    # tick sends at most its allowance plus one piece (whole, all 1,500 bytes would go at once).
    out = _Out()
    sent = []
    for _ in range(3):
        throttle.release(out, "g", 2)
        sent.append(len(out.sent))
    assert sent == [2, 3, 3] and [m for _, _, m in out.sent] == pieces
    # A follower that steps the pieces ends with the leader's log and acknowledges each piece;
    # one that steps the whole message ends the same.
    logs = []
    for msgs in (pieces, [whole]):
        f = Solo(2, terms=[e.term for e in lead.storage.entries(1, whole.index + 1)])
        acks = []
        for m in msgs:
            f.rn.step(m)
            acks += [r for r in f.drain() if r.type == MessageType.APP_RESP]
        assert [a.index for a in acks] == [m.entries[-1].index for m in msgs]
        assert not any(a.reject for a in acks)
        logs.append(f.storage.entries(whole.index + 1, f.storage.last_index() + 1))
    assert logs[0] == logs[1] == list(whole.entries)
    # An entry larger than the limit goes alone; an append within it stays one message.
    assert [len(p.entries) for p in split_append(whole, 100)] == [1] * 5
    assert split_append(whole, 10_000) == [whole]


def test_a_throttled_peers_window_holds_a_quarter_second_of_its_rate() -> None:
    # 2 appends of 1 MiB acknowledged after a 100 ms fsync would cap a move at 20 MB/s.
    assert throttled_window(20_000_000, 1 << 20) == 5
    assert throttled_window(100_000_000, 1 << 20) == 24
    assert throttled_window(20_000, 1 << 20) == THROTTLED_INFLIGHT


def test_a_throttled_peers_appends_are_tick_sized_and_its_window_a_quarter_second_of_them(
    tmp_path: Path,
) -> None:
    # The leader reads one tick's allowance per append (400 kB at 20 MB/s, 20 ms ticks), and an
    # append holds whole entries: 256 KiB record batches go one per append. The window must
    # still hold a quarter second of the rate, or the move runs below its throttle.
    with NodeStore(tmp_path / "db") as store:
        driver = RaftDriver(1, store, _Out(), RaftTiming(tick_s=0.02))
        driver.set_throttle("g", 4, 20_000_000)
        throttle = driver.throttles[("g", 4)]
        assert throttle.piece == 400_000
        assert throttle.window * (256 << 10) >= 20_000_000 * THROTTLED_INFLIGHT_S
        driver.set_throttle("g", 4, 200_000_000)  # over max_size_per_msg a tick: capped
        assert throttle.piece == 1 << 20


def test_a_rebalance_evens_replicas_and_leaders_after_a_broker_joins() -> None:
    st = state(4)  # brokers 1..4; 4 just joined and holds nothing
    st.topics["t"] = TopicInfo("t", 1, [[1, 2, 3], [2, 3, 1], [3, 1, 2], [1, 3, 2]])
    st.topics["u"] = TopicInfo("u", 2, [[2, 1, 3], [3, 2, 1]])
    wishes = plan_rebalance(st)
    assert wishes and all(len(set(t)) == len(t) == 3 for _, _, t in wishes)
    after = {(t, p): list(r) for t, info in st.topics.items() for p, r in enumerate(info.replicas)}
    for topic, p, target in wishes:
        after[(topic, p)] = target
    replicas = {b: sum(b in r for r in after.values()) for b in (1, 2, 3, 4)}
    leaders = {b: sum(r[0] == b for r in after.values()) for b in (1, 2, 3, 4)}
    assert max(replicas.values()) - min(replicas.values()) <= 1, replicas
    assert max(leaders.values()) - min(leaders.values()) <= 1, leaders
    # The plan is valid as moves, and a balanced cluster needs none.
    assert len(plan_moves(st, wishes)) == len(wishes)
    for topic, p, target in wishes:
        st.topics[topic].replicas[p] = target
    assert plan_rebalance(st) == []


def test_a_replica_is_replaced_by_a_fresh_one_in_two_legs() -> None:
    st = state()
    ctl = _controller(st)
    (cmd,) = [c for c in plan_readd(st, 3) if c.partition == 0]
    assert cmd.target == (1, 2) and cmd.then == (1, 2, 3)
    ctl.apply_command(cmd)
    info = st.topics["t"]
    ctl.apply_command(report((1, 2), (), 4))  # node 3's replica is out of the group
    # The first leg is done; the next waits for its own command, so every node applies the
    # removal first (node 3 drops its copy).
    assert "t/0" not in st.moves and st.next_moves["t/0"].target == [1, 2, 3]
    assert ctl.hosted_replicas(info, 0) == [1, 2]
    again = ControllerState.from_json(st.to_json())
    assert again.next_moves["t/0"].target == [1, 2, 3]
    ctl.apply_command(MovePartition(name="t", topic_id=1, partition=0, target=(1, 2, 3)))
    assert st.moves["t/0"].target == [1, 2, 3] and not st.next_moves
    ctl.apply_command(report((1, 2), (3,), 5))
    ctl.apply_command(report((1, 2, 3), (), 6))
    assert info.replicas[0] == [1, 2, 3] and not st.moves
    # Refused: an unknown node, a partition whose only replica is the node's.
    with pytest.raises(BrokerError, match="not a registered broker"):
        plan_readd(st, 9)
    st.topics["solo"] = TopicInfo("solo", 2, [[3]])
    with pytest.raises(BrokerError, match="nothing to refill it from"):
        plan_readd(st, 3)
