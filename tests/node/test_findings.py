"""Issue 10, findings 3 to 8: each scenario built on real drivers, RocksDB stores and state
machines (Partition, Controller) over tests/node/inproc.py's network, and its outcome checked.

3. an acks=all waiter whose batch retention dropped before the ISR caught up is answered with
   its offset (it was committed), not NOT_LEADER ("not written": a retry would duplicate it);
4. a new leader does not serve (nor report a high watermark) before its no-op is applied, so
   no valid position looks out of range and the high watermark never goes backward;
5. a quiet leader whose follower's node is gone shrinks its ISR: acks=all below
   min.insync.replicas is refused with NOT_ENOUGH_REPLICAS and writes nothing;
6. a snapshot records the membership of its own index, not the applied one's;
7. a restarted leader remembers each producer batch once: a retry of the oldest remembered
   batch is answered with its offset;
8. a controller proposal pending when its proposer stops leading is not failed as "retry": it
   may still commit, and here it does, with its result.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from liferaft_proto import records
from node.controller import Controller
from node.controller_commands import AllocateProducerIds
from node.errors import BrokerError, ErrorCode
from node.partition import ACKS_ALL, ACKS_LEADER, Partition
from node.topic_config import TopicConfig
from raft import NONE, ConfChange, ConfChangeType, ConfState, Message, MessageType, Role
from tests.node.inproc import Net, Node, until

pytestmark = pytest.mark.asyncio

NEVER = 10**9  # ticks: no retention or hand-back unless the test calls it
SMALL_LOG = TopicConfig(retention_ms=-1, retention_bytes=1)  # keeps only the newest batch


def _batch(value: bytes, *, pid: int = -1, seq: int = -1) -> bytes:
    if pid < 0:
        return records.build_batch([records.Record(value=value)])
    return records.build_batch(
        [records.Record(value=value)], producer_id=pid, producer_epoch=0, base_sequence=seq
    )


def _partition(node: Node, replicas: list[int], config: TopicConfig | None = None) -> Partition:
    return Partition(
        node_id=node.id,
        topic="t",
        topic_id=1,
        index=0,
        replicas=replicas,
        config=config or TopicConfig(),
        driver=node.driver,
        rebalance_ticks=NEVER,
        retention_ticks=NEVER,
    )


async def _three(net: Net, config: TopicConfig | None = None) -> dict[int, Partition]:
    parts = {i: _partition(net.start(i), [1, 2, 3], config) for i in (1, 2, 3)}
    await until(
        lambda: parts[1].is_leader and parts[1].state().isr == (1, 2, 3),
        "node 1 to lead with all three in sync",
    )
    return parts


def _code(e: pytest.ExceptionInfo[BrokerError]) -> str:
    return str(ErrorCode.Name(e.value.code))


# -- 3 ------------------------------------------------------------------------------------------
async def test_a_waiter_whose_batch_retention_dropped_is_answered_with_its_offset(
    tmp_path: Path,
) -> None:
    net = Net(tmp_path)
    try:
        parts = await _three(net, SMALL_LOG)
        leader = parts[1]
        # Node 3 stays in the ISR (it answers heartbeats) but its acknowledgements are lost.
        net.drop = lambda frm, _to, _g, m: frm == 3 and m.type == MessageType.APP_RESP
        futs = []
        for i, value in enumerate((b"a", b"b", b"c")):
            base, fut = leader.produce(_batch(value), ACKS_ALL)
            assert base == i and fut is not None
            futs.append(fut)
            leader.flush_proposals()  # one entry each (retention drops whole entries)
        await until(lambda: leader.high_watermark == 3, "a, b, c committed by nodes 1 and 2")
        await asyncio.sleep(0.05)
        assert 3 in leader.state().isr and not any(f.done() for f in futs)
        # Retention drops a and b (the log now starts after b) while their waiters wait.
        assert leader.enforce_retention(int(time.time() * 1000)) == 2
        assert leader.log_start_offset == 2
        net.drop = lambda *_: False
        assert await asyncio.wait_for(asyncio.gather(*futs), 20) == [0, 1, 2]
    finally:
        await net.close()


# -- 4 ------------------------------------------------------------------------------------------
async def test_a_new_leader_serves_only_once_its_noop_is_applied(tmp_path: Path) -> None:
    net = Net(tmp_path)
    try:
        parts = await _three(net)
        _, fut = parts[1].produce(_batch(b"a"), ACKS_ALL)
        assert fut is not None and await fut == 0
        await until(lambda: all(p.high_watermark == 1 for p in parts.values()), "a everywhere")
        # From now on only appends that carry entries leave node 1: the followers get b but
        # never learn that it committed.
        net.drop = lambda frm, _to, _g, m: (
            frm == 1 and not (m.type == MessageType.APP and m.entries)
        )
        _, fut = parts[1].produce(_batch(b"b"), ACKS_ALL)
        assert fut is not None and await fut == 1
        assert parts[1].high_watermark == 2  # a consumer may hold position 2 now
        assert parts[2].high_watermark == parts[3].high_watermark == 1
        # Node 1 is gone; nodes 2 and 3 may elect a leader but not replicate its no-op.
        net.down.add(1)
        net.drop = lambda frm, _to, _g, m: (
            frm != 1
            and m.type
            in (
                MessageType.APP,
                MessageType.APP_RESP,
                MessageType.HEARTBEAT,
                MessageType.HEARTBEAT_RESP,
            )
        )

        def elected() -> Partition | None:
            for i in (2, 3):
                if parts[i].group.node.role == Role.LEADER:
                    return parts[i]
            return None

        await until(lambda: elected() is not None, "node 2 or 3 to win an election")
        new = elected()
        assert new is not None
        assert new.high_watermark == 1  # behind what node 1 reported
        assert not new.is_leader
        assert new.state().leader == NONE  # metadata shows no leader, not a lower watermark
        with pytest.raises(BrokerError) as e:
            new.lag(2)
        assert _code(e) == "LEADER_NOT_AVAILABLE" and e.value.retriable
        with pytest.raises(BrokerError) as e:
            new.read(2, 1 << 20)
        assert e.value.retriable

        net.drop = lambda *_: False
        await until(lambda: any(parts[i].is_leader for i in (2, 3)), "a serving leader")
        new = next(parts[i] for i in (2, 3) if parts[i].is_leader)
        assert new.high_watermark == 2
        assert new.lag(2) == (0, -1)
        assert new.state().high_watermark == 2
    finally:
        await net.close()


# -- 5 ------------------------------------------------------------------------------------------
async def test_a_quiet_leader_drops_a_dead_follower_from_the_isr(tmp_path: Path) -> None:
    net = Net(tmp_path)
    try:
        parts = await _three(net, TopicConfig(min_insync_replicas=3))
        leader = parts[1]
        _, fut = leader.produce(_batch(b"a"), ACKS_ALL)
        assert fut is not None and await fut == 0
        gid = leader.group_id
        drivers = {i: net.nodes[i].driver for i in (1, 2)}
        await until(lambda: drivers[1].is_quiesced(gid), "the partition to go quiet")
        await net.stop(3)
        # What the transport does when a peer's stream breaks or falls silent
        # (node/transport.py's liveness watch -> server -> driver.peer_changed).
        for d in drivers.values():
            d.peer_changed(3, alive=False)
        await until(lambda: leader.state().isr == (1, 2), "node 3 to leave the ISR")
        await until(lambda: drivers[1].is_quiesced(gid), "the partition to go quiet again")
        last = leader.group.node.status().last_index
        with pytest.raises(BrokerError) as e:
            leader.produce(_batch(b"b"), ACKS_ALL)
        assert _code(e) == "NOT_ENOUGH_REPLICAS" and "nothing was written" in e.value.message
        assert leader.group.node.status().last_index == last
        assert leader.high_watermark == 1
    finally:
        await net.close()


# -- 6 ------------------------------------------------------------------------------------------
async def test_a_snapshot_carries_the_membership_of_its_index(tmp_path: Path) -> None:
    net = Net(tmp_path)
    try:
        node = net.start(1)
        part = _partition(node, [1], SMALL_LOG)
        await until(lambda: part.is_leader, "the single replica to lead")
        for value in (b"a", b"b", b"c"):
            _, fut = part.produce(_batch(value), ACKS_LEADER)
            assert fut is not None
            await fut
        await until(lambda: part.high_watermark == 3, "a, b, c applied")
        # A learner joins after c; then retention snapshots at b, before it joined.
        part.group.node.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 2))
        node.driver.touched(part.group_id)
        await until(lambda: 2 in part.group.conf_state.learners, "the learner applied")
        assert part.enforce_retention(int(time.time() * 1000)) == 2
        snap = part.group.storage.snapshot().meta
        assert snap.conf_state == ConfState(voters=frozenset({1}))
        # A restart replays the change from the log after the snapshot.
        await net.stop(1)
        node = net.start(1)
        part = _partition(node, [1], SMALL_LOG)
        await until(lambda: part.is_leader, "leading again")
        assert part.group.conf_state == ConfState(voters=frozenset({1}), learners=frozenset({2}))
        assert part.high_watermark == 3 and part.log_start_offset == 2
    finally:
        await net.close()


# -- 7 ------------------------------------------------------------------------------------------
async def test_a_restarted_leader_remembers_each_producer_batch_once(tmp_path: Path) -> None:
    pid = 7
    net = Net(tmp_path)
    try:
        node = net.start(1)
        part = _partition(node, [1], SMALL_LOG)
        await until(lambda: part.is_leader, "the single replica to lead")
        for seq in range(6):
            _, fut = part.produce(_batch(b"v%d" % seq, pid=pid, seq=seq), ACKS_LEADER)
            assert fut is not None and await fut == seq
        await until(lambda: part.high_watermark == 6, "six batches applied")
        # The snapshot is at the fifth batch; its producer table already holds the sixth.
        assert part.enforce_retention(int(time.time() * 1000)) == 5
        await net.stop(1)

        node = net.start(1)
        part = _partition(node, [1], SMALL_LOG)
        part.group.node.campaign()  # leads at once, before applying the sixth batch again
        _, table = part._leader_tail()
        assert [b.first_seq for b in table.producers[pid].batches] == [1, 2, 3, 4, 5]
        await until(lambda: part.is_leader, "serving")
        base, fut = part.produce(_batch(b"v1", pid=pid, seq=1), ACKS_LEADER)
        assert base == 1 and fut is not None and await fut == 1  # answered, not written
        assert part.high_watermark == 6
    finally:
        await net.close()


# -- 8 ------------------------------------------------------------------------------------------
async def test_a_pending_controller_proposal_survives_a_step_down(tmp_path: Path) -> None:
    net = Net(tmp_path)
    try:
        ctls = {i: Controller(i, [1, 2, 3], net.start(i).driver) for i in (1, 2, 3)}
        await until(lambda: any(c.is_leader for c in ctls.values()), "a controller leader")
        old = next(i for i, c in ctls.items() if c.is_leader)
        # The proposal reaches the followers, but the leader never hears that they have it...
        net.drop = lambda _frm, to, _g, m: to == old and m.type == MessageType.APP_RESP
        pending = asyncio.ensure_future(ctls[old].replicate_and_wait(AllocateProducerIds(count=1)))
        others = [i for i in ctls if i != old]
        await until(
            lambda: all(ctls[i].raft_group.node.status().last_index >= 2 for i in others),
            "the followers to hold the proposal",
        )

        # ...and is then cut off: it steps down (CheckQuorum) while the others elect a new
        # leader whose no-op commits the proposal.
        def cut(frm: int, to: int, _g: str, _m: Message) -> bool:
            return old in (frm, to)

        net.drop = cut
        await until(lambda: not ctls[old].is_leader, "the old leader to step down")
        await asyncio.sleep(0.05)
        assert not pending.done()  # not failed as "retry": it may still be committed
        await until(lambda: any(ctls[i].is_leader for i in others), "a new leader")
        new = next(i for i in others if ctls[i].is_leader)
        await until(lambda: ctls[new].state.next_producer_id == 2, "the proposal applied")
        net.drop = lambda *_: False
        assert await asyncio.wait_for(pending, 20) == 1  # its result, once applied here
        assert all(c.state.next_producer_id == 2 for c in ctls.values())
    finally:
        await net.close()
