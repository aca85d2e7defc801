"""Kafka's classic group protocol on the coordinator (node/kafka/classic.py): a leader that joins
again with nothing new does not restart the rebalance.

Why: kafka-python 3 runs JoinGroup and SyncGroup on its own I/O thread. When its poll() returns
before the join completes, the join finishes in the background; the next poll() sees the task
done but never collected, and sends the same JoinGroup again. Kafka's rule (a leader's join in
Stable forces a rebalance) then restarted the group on every poll of the leader: a new
generation every ~400 ms, and the leader never held a partition. Here the leader's repeat join is
answered with the current generation; its SyncGroup starts a rebalance only if the assignment it
computed differs from the current one (so a leader that saw topic metadata change still gets
one, which is what Kafka's rule is for).

One real node (driver, RocksDB store) leads `__groups`; the classic state runs on a clock the
test moves, so nothing waits on time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.errors import BrokerError, ErrorCode
from node.groups import GroupCoordinator
from node.kafka.classic import COMPLETING, PREPARING, STABLE, ClassicGroups, JoinResult
from tests.node.inproc import Net, until

pytestmark = pytest.mark.asyncio

GROUP = "g"
PROTOCOLS = [("range", b"subscription: t")]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def classic(tmp_path: Path) -> AsyncIterator[tuple[ClassicGroups, Clock]]:
    net = Net(tmp_path)
    try:
        node = net.start(1)
        coord = GroupCoordinator(1, [1], node.driver, lambda _topic: 3)
        await until(lambda: coord.is_coordinator, "the one node to coordinate groups")
        clock = Clock()
        yield ClassicGroups(coord, lambda _node: "", clock=clock), clock
    finally:
        await net.close()


def join(
    groups: ClassicGroups, member_id: str = "", protocols: list[tuple[str, bytes]] = PROTOCOLS
) -> asyncio.Future[JoinResult]:
    return groups.join(GROUP, member_id, None, "c", "", 6000, 300_000, "consumer", protocols)


async def stable_group_of_two(groups: ClassicGroups, clock: Clock) -> tuple[str, str]:
    """Leader and follower of generation 1, both synced."""
    first, second = join(groups), join(groups)
    clock.now += 1  # past the initial rebalance delay
    groups.sweep()
    a = await first
    b = await second
    assert a.generation == b.generation == 1 and a.leader == a.member_id
    sync_b = groups.sync(GROUP, b.member_id, 1, {})
    sync_a = groups.sync(GROUP, a.member_id, 1, {a.member_id: b"A", b.member_id: b"B"})
    assert await sync_a == b"A" and await sync_b == b"B"
    assert groups.groups[GROUP].state == STABLE
    return a.member_id, b.member_id


async def test_a_leaders_repeat_join_in_stable_keeps_the_generation(
    classic: tuple[ClassicGroups, Clock],
) -> None:
    groups, clock = classic
    leader, follower = await stable_group_of_two(groups, clock)

    again = join(groups, leader)

    # Answered at once with the current generation, every member listed for the leader.
    assert again.done()
    res = again.result()
    assert (res.generation, res.leader) == (1, leader)
    assert {m for m, _, _ in res.members} == {leader, follower}
    g = groups.groups[GROUP]
    assert g.state == STABLE
    groups.heartbeat(GROUP, follower, 1)  # no REBALANCE_IN_PROGRESS for the follower

    # Its assignor gives the same answer: nothing changes, the leader gets its part.
    same = groups.sync(GROUP, leader, 1, {leader: b"A", follower: b"B"})
    assert await same == b"A"
    assert (g.state, g.generation) == (STABLE, 1)
    groups.heartbeat(GROUP, leader, 1)
    groups.heartbeat(GROUP, follower, 1)


async def test_a_leader_whose_assignment_changed_still_gets_a_rebalance(
    classic: tuple[ClassicGroups, Clock],
) -> None:
    groups, clock = classic
    leader, follower = await stable_group_of_two(groups, clock)
    g = groups.groups[GROUP]

    again = join(groups, leader)
    assert again.done()
    # A SyncGroup of another generation is refused and changes nothing.
    with pytest.raises(BrokerError) as bad:
        groups.sync(GROUP, leader, 7, {leader: b"A2", follower: b"B2"})
    assert bad.value.code == ErrorCode.ILLEGAL_GENERATION
    assert (g.state, g.generation) == (STABLE, 1)

    # Topic metadata changed under the leader: its new assignment starts a rebalance.
    with pytest.raises(BrokerError) as rebalance:
        groups.sync(GROUP, leader, 1, {leader: b"A2", follower: b"B2"})
    assert rebalance.value.code == ErrorCode.REBALANCE_IN_PROGRESS
    assert g.state == PREPARING
    with pytest.raises(BrokerError) as hb:
        groups.heartbeat(GROUP, follower, 1)
    assert hb.value.code == ErrorCode.REBALANCE_IN_PROGRESS

    first, second = join(groups, leader), join(groups, follower)
    a = await first
    b = await second
    assert a.generation == b.generation == 2


async def test_a_leader_that_joins_with_new_metadata_rebalances_at_once(
    classic: tuple[ClassicGroups, Clock],
) -> None:
    groups, clock = classic
    leader, follower = await stable_group_of_two(groups, clock)

    again = join(groups, leader, [("range", b"subscription: t, u")])

    assert not again.done()
    assert groups.groups[GROUP].state == PREPARING
    other = join(groups, follower)
    a = await again
    await other
    assert a.generation == 2


def commit_refusal(groups: ClassicGroups, member_id: str, generation: int) -> str | None:
    """The error code name a classic OffsetCommit would get, None if it is accepted."""
    try:
        groups.check_commit(GROUP, member_id, generation)
    except BrokerError as e:
        return ErrorCode.Name(e.code)
    return None


async def test_commits_are_fenced_as_kafkas_group_coordinator_fences_them(
    classic: tuple[ClassicGroups, Clock],
) -> None:
    """Kafka's rules for a classic OffsetCommit (GroupCoordinator.doCommitOffsets before 3.7,
    ClassicGroup.validateOffsetCommit since): an unknown member is UNKNOWN_MEMBER_ID; a
    generation other than the group's is ILLEGAL_GENERATION; with the group's generation a
    commit is taken in Stable *and in PreparingRebalance* (the generation only moves when the
    join phase ends, so a member keeps committing with the one it has until it rejoins: the
    heartbeat tells it to), and refused with REBALANCE_IN_PROGRESS in CompletingRebalance (the
    new generation is out, its assignment not yet). So a commit that races its own member's
    rejoin, sent with the old generation and read after the join phase ended, is
    ILLEGAL_GENERATION on Kafka as here: the client commits again once it has rejoined."""
    groups, clock = classic
    leader, follower = await stable_group_of_two(groups, clock)
    g = groups.groups[GROUP]

    # Stable, generation 1.
    assert commit_refusal(groups, leader, 1) is None
    assert commit_refusal(groups, follower, 1) is None
    assert commit_refusal(groups, leader, 0) == "ILLEGAL_GENERATION"
    assert commit_refusal(groups, leader, 2) == "ILLEGAL_GENERATION"
    assert commit_refusal(groups, "stranger", 1) == "UNKNOWN_MEMBER_ID"
    assert commit_refusal(groups, "", -1) == "UNKNOWN_MEMBER_ID"  # members only, now

    # The follower leaves: PreparingRebalance, still generation 1 until the leader rejoins.
    groups.leave(GROUP, follower)
    assert (g.state, g.generation) == (PREPARING, 1)
    assert commit_refusal(groups, leader, 1) is None
    assert commit_refusal(groups, leader, 2) == "ILLEGAL_GENERATION"
    assert commit_refusal(groups, follower, 1) == "UNKNOWN_MEMBER_ID"

    # The leader rejoins: the join phase ends, generation 2, its assignment awaited.
    rejoined = await join(groups, leader)
    assert (g.state, g.generation, rejoined.generation) == (COMPLETING, 2, 2)
    assert commit_refusal(groups, leader, 1) == "ILLEGAL_GENERATION"
    assert commit_refusal(groups, leader, 2) == "REBALANCE_IN_PROGRESS"

    # Its SyncGroup: Stable in generation 2.
    assert await groups.sync(GROUP, leader, 2, {leader: b"A"}) == b"A"
    assert g.state == STABLE
    assert commit_refusal(groups, leader, 2) is None
    assert commit_refusal(groups, leader, 1) == "ILLEGAL_GENERATION"

    # Empty: a consumer that assigns partitions itself (no member, generation -1) may commit.
    groups.leave(GROUP, leader)
    assert commit_refusal(groups, "", -1) is None
