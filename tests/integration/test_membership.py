"""Membership on a real three-node cluster (issue 19): a fourth node joins under traffic, and a
wiped data directory comes back as a new incarnation, never as the same voter.

A node started with --join (DevCluster.add_node) learns the members from one of them; the
controller adds it as a learner and (controller_voters 5) promotes it, as the consumer-group
group does, every node lists it in Metadata, and a new topic of replication factor 3 places
replicas on it.

A node's data directory is deleted while acks=all traffic runs, and the node restarted on an empty
one. It must say hello as a new incarnation and stay silent (fenced) until the controller group
has removed its old incarnation and added it back; then it is refilled, promoted, and the
controller group (and the consumer-group group, also over every node) has its three voters again,
and so does the partition (its leader replaces the old replica the same way): ISR of three.
Every acknowledged record reads back exactly once. Waits are bounded and generous; nothing
asserts on timing.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from client import Producer, TopicPartition
from liferaft.launcher import DevCluster, DevClusterError
from tests.integration.test_metrics import scrape, value
from tests.integration.test_replication import (
    check_log,
    create_topic,
    describe,
    produce_loop,
    read_all,
    wait_for,
)

pytestmark = pytest.mark.asyncio


def _raft(cluster: DevCluster, node_id: int, name: str, group: str) -> float | None:
    try:
        return value(scrape(cluster.node(node_id).address), name, group=group)
    except OSError:
        return None  # the node is (re)starting


def _start(cluster: DevCluster, node_id: int) -> bool:
    try:
        cluster.start_node(node_id)
    except DevClusterError:
        return False  # a port still held by the killed process's connections
    return True


def _log_lines(cluster: DevCluster, node_id: int, needle: str) -> list[str]:
    text = cluster.log_path(node_id).read_text(errors="replace")
    return [line for line in text.splitlines() if needle in line]


async def test_wiped_node_comes_back_as_a_new_incarnation(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster(3)
    await create_topic(cluster, "ledger", partitions=1)
    tp = TopicPartition("ledger", 0)
    acked: dict[bytes, int] = {}
    stop = asyncio.Event()
    async with Producer(cluster.bootstrap, acks="all") as producer:
        task = asyncio.create_task(produce_loop(producer, tp, acked, stop, b"before"))
        await wait_for("100 acks", lambda: len(acked) >= 100, 60)
        first = _log_lines(cluster, 3, ": data directory ")
        assert first, "node 3 logged no incarnation"
        cluster.kill(3)
        shutil.rmtree(cluster.data_dir / "node-3")
        wiped_at = len(acked)
        await wait_for("30 acks with node 3 down", lambda: len(acked) >= wiped_at + 30, 60)
        await wait_for("node 3's ports free to restart it", lambda: _start(cluster, 3), 60)
        await wait_for("100 more acks with node 3 wiped", lambda: len(acked) >= wiped_at + 100, 60)

        def replaced() -> bool:
            # A new incarnation (another id in the log line), admitted and unfenced in both
            # groups over every node, each of which has its three voters again.
            lines = _log_lines(cluster, 3, ": data directory ")
            if (
                len(lines) < 2
                or lines[-1].split("incarnation ")[1] == first[-1].split("incarnation ")[1]
            ):
                return False
            for group in ("controller", "__groups"):
                if _raft(cluster, 3, "liferaft_raft_fenced", group) != 0:
                    return False
                for node in (1, 2, 3):
                    if _raft(cluster, node, "liferaft_raft_voters", group) != 3:
                        return False
            return True

        await wait_for("node 3 replaced in the controller group", replaced, 90)
        assert _log_lines(cluster, 3, "replaced our old incarnation"), "no fence was granted"
        removed = [
            line
            for node in (1, 2)
            for line in _log_lines(cluster, node, "group controller: remove node 3")
        ]
        assert removed, "the old incarnation was never removed from the controller group"

        async def full_isr() -> bool:
            # The partition group replaced the old incarnation too: a voter again, in sync.
            d = await describe(cluster, "ledger")
            return sorted(d.partitions[0].isr) == [1, 2, 3]

        await wait_for("ledger-0's ISR back to three replicas", full_isr, 90)
        readmitted = len(acked)
        await wait_for("100 acks after", lambda: len(acked) >= readmitted + 100, 60)
        stop.set()
        await task
    cluster.wait_healthy(60)
    log = await read_all(cluster, tp, max(acked.values()) + 1)
    check_log(acked, log)


async def test_a_fourth_node_joins_under_traffic_and_takes_replicas(
    make_cluster: Callable[..., DevCluster], tmp_path: Path
) -> None:
    # Five controller voters wanted: the joined node is promoted in the controller group and,
    # following it, in the consumer-group group (which used to keep it a learner).
    settings = tmp_path / "voters.toml"
    settings.write_text("controller_voters = 5\n")
    cluster = make_cluster(3, "--config", str(settings))
    await create_topic(cluster, "before", partitions=1)
    tp = TopicPartition("before", 0)
    acked: dict[bytes, int] = {}
    stop = asyncio.Event()
    async with Producer(cluster.bootstrap, acks="all") as producer:
        task = asyncio.create_task(produce_loop(producer, tp, acked, stop, b"grow"))
        await wait_for("50 acks", lambda: len(acked) >= 50, 60)
        node = cluster.add_node()
        assert node.node_id == 4 and node.join
        cluster.start_node(4)

        def in_metadata() -> bool:
            return all(
                sorted(b.node_id for b in cluster.metadata(n).brokers) == [1, 2, 3, 4]
                for n in (1, 2, 3, 4)
            )

        await wait_for("node 4 in every node's metadata", in_metadata, 90)
        assert _raft(cluster, 4, "liferaft_raft_fenced", "controller") == 0
        for group in ("controller", "__groups"):
            await wait_for(
                f"node 4 a voter of {group}",
                lambda g=group: (
                    _raft(cluster, 1, "liferaft_raft_voters", g) == 4
                    and _raft(cluster, 1, "liferaft_raft_learners", g) == 0
                ),
                90,
            )
        grown = len(acked)
        await wait_for("50 acks after the join", lambda: len(acked) >= grown + 50, 60)
        stop.set()
        await task
    check_log(acked, await read_all(cluster, tp, max(acked.values()) + 1))
    # A new topic of replication factor 3 places replicas on node 4, which serve.
    await create_topic(cluster, "after", partitions=4)
    desc = await describe(cluster, "after")
    on_4 = [p for p in desc.partitions if 4 in p.replicas]
    assert on_4, f"no replica on node 4: {[p.replicas for p in desc.partitions]}"
    new_acked: dict[TopicPartition, dict[bytes, int]] = {}
    async with Producer(cluster.bootstrap, acks="all") as producer:
        for i in range(80):
            md = await producer.send_and_wait("after", b"a-%d" % i, partition=i % 4)
            new_acked.setdefault(md.topic_partition, {})[b"a-%d" % i] = md.offset

    async def node_4_in_sync() -> bool:
        d = await describe(cluster, "after")
        return all(4 in p.isr for p in d.partitions if 4 in p.replicas)

    await wait_for("node 4 in the ISR of its partitions", node_4_in_sync, 60)
    for part, values in new_acked.items():
        check_log(values, await read_all(cluster, part, max(values.values()) + 1))
