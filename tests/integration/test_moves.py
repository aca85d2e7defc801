"""Replica moves on a real four-node cluster (issue 19): a partition moves while it takes acks=all
traffic, its leader among the replicas moved off; a node is decommissioned; bad plans change
nothing.

What is checked is the promise: every acknowledged record reads back exactly once, at its
offset, from the new replicas; the old replica no longer holds the partition; the metadata (the
gRPC answer and the Kafka listener's) shows the new replicas and leader without a restart. Waits
are bounded and generous (a shared machine); nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from client import AdminClient, LiferaftError, Producer, TopicPartition
from client.errors import NoReassignmentInProgressError
from liferaft.launcher import DevCluster
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc
from tests.integration.test_cli_tools import ok, run
from tests.integration.test_kafka_failover import kafka_request
from tests.integration.test_membership import _raft
from tests.integration.test_replication import (
    check_log,
    describe,
    produce_loop,
    read_all,
    wait_for,
)

pytestmark = pytest.mark.asyncio


async def hosts(cluster: DevCluster, node_id: int) -> set[str]:
    """The partitions node_id holds a replica of, from its own answer (ReplicaState)."""
    async with grpc.aio.insecure_channel(cluster.node(node_id).address) as ch:
        resp = await broker_pb2_grpc.BrokerStub(ch).ReplicaState(
            broker_pb2.ReplicaStateRequest(), timeout=5
        )
    return {f"{p.topic}/{p.partition}" for p in resp.partitions}


async def moves_done(cluster: DevCluster) -> bool:
    async with AdminClient(cluster.bootstrap, timeout_ms=10_000) as admin:
        moves, _ = await admin.list_partition_moves()
    return not moves


async def test_move_under_acks_all_traffic_loses_nothing_and_hands_leadership_over(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster(4)
    async with AdminClient(cluster.bootstrap) as admin:
        await admin.create_topic("moving", 1, 3)
    tp = TopicPartition("moving", 0)
    before = (await describe(cluster, "moving")).partitions[0]
    spare = next(n for n in (1, 2, 3, 4) if n not in before.replicas)
    acked: dict[bytes, int] = {}
    stop = asyncio.Event()
    async with Producer(cluster.bootstrap, acks="all", delivery_timeout_ms=30_000) as producer:
        task = asyncio.create_task(produce_loop(producer, tp, acked, stop, b"mv"))
        await wait_for("100 acks", lambda: len(acked) >= 100)

        # 1. A follower's replica moves to the spare node: {a, b, c} -> {a, b, spare}.
        leader = before.leader
        going = next(n for n in reversed(before.replicas) if n != leader)
        target = [spare if n == going else n for n in before.replicas]
        async with AdminClient(cluster.bootstrap) as admin:
            started = await admin.move_partitions([("moving", 0, target)], throttle_bytes_s=1 << 20)
        assert [m.target for m in started] == [tuple(target)]
        await wait_for("the first move to finish", lambda: moves_done(cluster), 90)
        acked_mid = len(acked)
        await wait_for("traffic during the move", lambda: len(acked) > acked_mid + 20)

        async def shows(replicas: list[int]) -> bool:
            p = (await describe(cluster, "moving")).partitions[0]
            return list(p.replicas) == replicas and sorted(p.isr) == sorted(replicas)

        await wait_for(f"metadata to show {target}", lambda: shows(target), 30)
        await wait_for(
            f"node {going} to drop the replica",
            lambda: _not_in(cluster, going, "moving/0"),
            30,
        )

        # 2. The leader's own replica moves off: it hands leadership over first.
        now = (await describe(cluster, "moving")).partitions[0]
        old_leader = now.leader
        target2 = [going if n == old_leader else n for n in now.replicas]
        async with AdminClient(cluster.bootstrap) as admin:
            await admin.move_partitions([("moving", 0, target2)])
        await wait_for("the second move to finish", lambda: moves_done(cluster), 90)
        await wait_for(f"metadata to show {target2}", lambda: shows(target2), 30)
        after = (await describe(cluster, "moving")).partitions[0]
        assert after.leader != old_leader and after.leader in target2
        acked_now = len(acked)
        await wait_for("traffic after the moves", lambda: len(acked) > acked_now + 20)
        stop.set()
        await task
    await wait_for(
        f"node {old_leader} to drop the replica",
        lambda: _not_in(cluster, old_leader, "moving/0"),
        30,
    )
    # Every acknowledged record reads back exactly once, from the replicas it now has.
    check_log(acked, await read_all(cluster, tp, max(acked.values()) + 1))
    # The Kafka listener's metadata follows too, on every node.
    from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
    from kio.schema.metadata.v12.response import MetadataResponse

    for node in cluster.nodes.values():
        md = kafka_request(
            node.kafka_address,
            MetadataRequest(
                topics=(MetadataRequestTopic(topic_id=None, name="moving"),),
                allow_auto_topic_creation=False,
                include_topic_authorized_operations=False,
            ),
            MetadataResponse,
        )
        (part,) = md.topics[0].partitions
        assert list(part.replica_nodes) == target2 and part.leader_id == after.leader


async def _not_in(cluster: DevCluster, node_id: int, key: str) -> bool:
    return key not in await hosts(cluster, node_id)


async def test_decommission_empties_a_node_and_bad_plans_change_nothing(
    make_cluster: Callable[..., DevCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(4)
    async with AdminClient(cluster.bootstrap) as admin:
        await admin.create_topic("spread", 4, 3)
        async with Producer(cluster.bootstrap, acks="all") as producer:
            acked = {}
            for i in range(40):
                md = await producer.send_and_wait("spread", b"v%d" % i, partition=i % 4)
                acked[b"v%d" % i] = (md.partition, md.offset)
        before = await describe(cluster, "spread")
        # Bad input: a clear error, and nothing starts.
        bad = [
            ([("spread", 0, [1, 2, 9])], "not registered brokers"),
            ([("spread", 0, [1, 1, 2])], "name a node twice"),
            ([("spread", 0, [])], "replication factor 0"),
            ([("nope", 0, [1, 2, 3])], "does not exist"),
            ([("spread", 7, [1, 2, 3])], "partitions 0..3"),
            ([("spread", 0, [1, 2, 3]), ("spread", 1, [1, 2, 9])], "not registered brokers"),
        ]
        for plan, why in bad:
            with pytest.raises(LiferaftError, match=why):
                await admin.move_partitions(plan)
        moves, _ = await admin.list_partition_moves()
        assert moves == []
        assert [p.replicas for p in (await describe(cluster, "spread")).partitions] == [
            p.replicas for p in before.partitions
        ]
        with pytest.raises(LiferaftError, match="not a registered broker"):
            await admin.decommission_node(9)
        # The CLI: a plan file as kafka-reassign-partitions writes it, refused whole.
        plan = tmp_path / "plan.json"
        plan.write_text(
            json.dumps(
                {
                    "version": 1,
                    "partitions": [
                        {"topic": "spread", "partition": 0, "replicas": [2, 3, 4]},
                        {"topic": "spread", "partition": 1, "replicas": [2, 2, 3]},
                    ],
                }
            )
        )
        done = run(cluster.bootstrap, "partition", "move", "--plan", str(plan))
        assert done.returncode == 1 and b"name a node twice" in done.stderr
        assert (await admin.list_partition_moves())[0] == []

        victim = 4
        out = ok(cluster.bootstrap, "node", "decommission", str(victim), "--json")
        assert json.loads(out)["node_id"] == victim
        _, retired = await admin.list_partition_moves()
        assert victim in retired
        # Undoing it is possible (checked only here: it would cancel what is still moving off
        # the node) and each move it names is one taking a replica off the victim.
        undo = await admin.decommission_node(victim, cancel=True, validate_only=True)
        assert all(m.cancelled and victim in m.target for m in undo), undo
        assert victim in (await admin.list_partition_moves())[1]
    await wait_for("the decommission to finish", lambda: moves_done(cluster), 120)

    async def emptied() -> bool:
        return not await hosts(cluster, victim)

    await wait_for(f"node {victim} to hold nothing", emptied, 30)
    # Empty, it stops voting in the groups over every node (the controller, __groups): it
    # stays a learner there (a copy of the metadata while it runs), three voters remain.
    for group in ("controller", "__groups"):
        await wait_for(
            f"node {victim} a learner of {group}",
            lambda g=group: (
                _raft(cluster, 1, "liferaft_raft_voters", g) == 3
                and _raft(cluster, 1, "liferaft_raft_learners", g) == 1
            ),
            60,
        )
    after = await describe(cluster, "spread")
    assert all(victim not in p.replicas and len(p.replicas) == 3 for p in after.partitions)
    async with AdminClient(cluster.bootstrap) as admin:
        await admin.create_topic("fresh", 4, 3)
        fresh = await describe(cluster, "fresh")
        assert all(victim not in p.replicas for p in fresh.partitions)
        _, retired = await admin.list_partition_moves()
        assert retired == {victim: 0}
    for p in range(4):
        want = {v: o for v, (part, o) in acked.items() if part == p}
        check_log(
            want, await read_all(cluster, TopicPartition("spread", p), max(want.values()) + 1)
        )


async def test_a_move_resumes_after_its_leader_is_killed_and_a_rebalance_fills_an_empty_node(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster(4)
    async with AdminClient(cluster.bootstrap) as admin:
        await admin.create_topic("big", 1, 3)
        await admin.create_topic("even", 3, 3)
    tp = TopicPartition("big", 0)
    acked: dict[bytes, int] = {}
    value = b"x" * 20_000
    async with Producer(cluster.bootstrap, acks="all") as producer:
        for i in range(100):  # ~2 MB, so that a throttled learner takes seconds to catch up
            md = await producer.send_and_wait("big", value + b"%d" % i, partition=0)
            acked[value + b"%d" % i] = md.offset
    before = (await describe(cluster, "big")).partitions[0]
    spare = next(n for n in (1, 2, 3, 4) if n not in before.replicas)
    going = next(n for n in reversed(before.replicas) if n != before.leader)
    target = [spare if n == going else n for n in before.replicas]
    async with AdminClient(cluster.bootstrap) as admin:
        await admin.move_partitions([("big", 0, target)], throttle_bytes_s=200_000)

        async def learning() -> bool:
            moves, _ = await admin.list_partition_moves()
            return bool(moves) and spare in moves[0].learners

        await wait_for(f"node {spare} to be a learner", learning, 30)
    # The leader driving the move dies mid-catch-up; a new one carries the move on.
    cluster.kill(before.leader)
    await wait_for("the move to finish without the old leader", lambda: moves_done(cluster), 120)
    cluster.start_node(before.leader)
    cluster.wait_healthy(60)
    after = (await describe(cluster, "big")).partitions[0]
    assert sorted(after.replicas) == sorted(target)
    check_log(acked, await read_all(cluster, tp, max(acked.values()) + 1))

    # Empty node `spare` of the even topic's replicas by hand, then let a rebalance refill it.
    async with AdminClient(cluster.bootstrap) as admin:
        even = await describe(cluster, "even")
        others = [n for n in (1, 2, 3, 4) if n != spare]
        plan = [
            ("even", p.partition, [*(n for n in p.replicas if n != spare), *others][:3])
            for p in even.partitions
        ]
        plan = [(t, p, list(dict.fromkeys(r))) for t, p, r in plan]
        await admin.move_partitions(plan)
        await wait_for("the moves off the spare node", lambda: moves_done(cluster), 90)
        dry = await admin.rebalance()
        assert dry, "an empty broker should get replicas"
        assert await moves_done(cluster), "a dry run starts nothing"
        await admin.rebalance(execute=True)
        await wait_for("the rebalance", lambda: moves_done(cluster), 120)
        assert await admin.rebalance() == []
    counts = {n: 0 for n in (1, 2, 3, 4)}
    for topic in ("big", "even"):
        for p in (await describe(cluster, topic)).partitions:
            for n in p.replicas:
                counts[n] += 1
    assert max(counts.values()) - min(counts.values()) <= 1, counts


async def test_a_throttled_move_cancelled_mid_way_goes_back_and_loses_nothing(
    make_cluster: Callable[..., DevCluster],
) -> None:
    """Kafka's cancelled reassignment, `rpk cluster partitions move-cancel`: the learner the
    move added is removed, the replicas are the original set again, acks=all traffic runs on
    throughout and every acknowledged record reads back exactly once."""
    cluster = make_cluster(4)
    async with AdminClient(cluster.bootstrap) as admin:
        await admin.create_topic("undo", 1, 3)
    tp = TopicPartition("undo", 0)
    acked: dict[bytes, int] = {}
    value = b"u" * 20_000
    async with Producer(cluster.bootstrap, acks="all") as producer:
        for i in range(100):  # ~2 MB, so that a learner fed 200 KB/s takes seconds to catch up
            md = await producer.send_and_wait("undo", value + b"%d" % i, partition=0)
            acked[value + b"%d" % i] = md.offset
    before = (await describe(cluster, "undo")).partitions[0]
    spare = next(n for n in (1, 2, 3, 4) if n not in before.replicas)
    going = next(n for n in reversed(before.replicas) if n != before.leader)
    target = [spare if n == going else n for n in before.replicas]
    # Bad input first: nothing is being moved, so nothing is cancelled and nothing changes.
    async with AdminClient(cluster.bootstrap) as admin:
        with pytest.raises(NoReassignmentInProgressError, match="not being moved"):
            await admin.cancel_partition_moves([("undo", 0)])
        with pytest.raises(LiferaftError, match="does not exist"):
            await admin.cancel_partition_moves([("nope", 0)])
    done = run(cluster.bootstrap, "partition", "move", "undo", "0", "--cancel", "--replicas", "1")
    assert done.returncode == 2 and b"takes no --replicas" in done.stderr
    done = run(cluster.bootstrap, "node", "decommission", str(spare), "--cancel")
    assert done.returncode == 1 and b"not decommissioned" in done.stderr
    assert await moves_done(cluster)

    stop = asyncio.Event()
    async with Producer(cluster.bootstrap, acks="all", delivery_timeout_ms=30_000) as producer:
        task = asyncio.create_task(produce_loop(producer, tp, acked, stop, b"cx"))
        await wait_for("acks under traffic", lambda: len(acked) >= 120)
        async with AdminClient(cluster.bootstrap) as admin:
            await admin.move_partitions([("undo", 0, target)], throttle_bytes_s=200_000)

            async def learning() -> bool:
                moves, _ = await admin.list_partition_moves()
                return bool(moves) and spare in moves[0].learners

            await wait_for(f"node {spare} to be a learner", learning, 30)
        out = json.loads(
            ok(cluster.bootstrap, "partition", "move", "undo", "0", "--cancel", "--json")
        )
        (cancelled,) = out["cancelled"]
        assert cancelled["cancelled"] and cancelled["target"] == list(before.replicas), out
        await wait_for("the cancelled move to end", lambda: moves_done(cluster), 90)
        acked_mid = len(acked)
        await wait_for("traffic after the cancel", lambda: len(acked) > acked_mid + 20)
        stop.set()
        await task

    async def back() -> bool:
        p = (await describe(cluster, "undo")).partitions[0]
        return list(p.replicas) == list(before.replicas) and sorted(p.isr) == sorted(p.replicas)

    await wait_for(f"metadata to show {list(before.replicas)} again", back, 30)
    await wait_for(
        f"node {spare} to drop its learner", lambda: _not_in(cluster, spare, "undo/0"), 30
    )
    assert "undo/0" in await hosts(cluster, going)
    # Cancelling a move that is done is refused, and changes nothing.
    async with AdminClient(cluster.bootstrap) as admin:
        with pytest.raises(NoReassignmentInProgressError):
            await admin.cancel_partition_moves([("undo", 0)])
    check_log(acked, await read_all(cluster, tp, max(acked.values()) + 1))
