"""Quiet partitions on real nodes: idle groups stop ticking, and still fail over.

The first test runs three NodeServers in this process (real gRPC, real RocksDB) so it can look
inside the drivers: after a write, every replica of every partition goes quiet; a write wakes its
partition and it goes quiet again. Then the node leading a quiet partition stops without a word
(no hand-off: its streams just break) and the others must elect a new leader. The second test
does the same to node processes with SIGKILL and checks the cluster takes acks=all writes again.
Waits are bounded and generous (a shared machine); nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from client import AdminClient, Producer
from liferaft.certs import create_certs
from liferaft.launcher import DevCluster, free_port_block
from node.config import NodeConfig
from node.partition import group_id
from node.server import NodeServer
from raft import Role
from tests.integration.conftest import MakeCluster

pytestmark = pytest.mark.asyncio

TOPIC = "quiet"


async def _until(what: str, check: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _groups(servers: dict[int, NodeServer], topic_id: int, partitions: int) -> list[str]:
    return [group_id(topic_id, p) for p in range(partitions)]


def _all_quiet(servers: dict[int, NodeServer], groups: list[str]) -> bool:
    return all(
        s.driver is not None and s.driver.is_quiesced(g) for s in servers.values() for g in groups
    )


def _leader(servers: dict[int, NodeServer], group: str) -> int:
    for node_id, s in servers.items():
        assert s.driver is not None
        g = s.driver.groups.get(group)
        if g is not None and g.node.role == Role.LEADER:
            return node_id
    return 0


async def test_idle_partitions_quiesce_and_fail_over_in_process(tmp_path: Path) -> None:
    base = free_port_block(3)
    peers = {i: f"127.0.0.1:{base + i - 1}" for i in (1, 2, 3)}
    create_certs(tmp_path / "tls", list(peers), cluster="quiet-test")
    servers = {
        i: NodeServer(
            NodeConfig(
                node_id=i,
                listen=peers[i],
                peers=peers,
                data_dir=tmp_path / f"n{i}",
                cluster_id="quiet-test",
                tls_dir=tmp_path / "tls",
            )
        )
        for i in peers
    }
    try:
        for s in servers.values():
            await s.start()

        def healthy() -> bool:
            return all(
                s.broker is not None
                and s.broker.controller_leader() != 0
                and len(s.broker.controller.state.brokers) == 3
                for s in servers.values()
            )

        await _until("a controller leader and three registered brokers", healthy, 60)
        bootstrap = ",".join(peers.values())
        async with AdminClient(bootstrap, timeout_ms=30_000) as admin:
            await admin.create_topic(TOPIC, partitions=3, replication_factor=3)
        topic_id = servers[1].broker.controller.state.topics[TOPIC].topic_id  # type: ignore[union-attr]
        groups = _groups(servers, topic_id, 3)
        async with Producer(bootstrap, acks="all") as producer:
            for p in range(3):
                await producer.send_and_wait(TOPIC, b"hello", partition=p)
        await _until(
            "every replica of every partition to go quiet", lambda: _all_quiet(servers, groups)
        )
        for s in servers.values():
            assert s.driver is not None and s.driver.stats.quiesces > 0

        # A write wakes its partition; afterwards it goes quiet again.
        async with Producer(bootstrap, acks="all") as producer:
            await producer.send_and_wait(TOPIC, b"again", partition=0)
        await _until("the partition to go quiet again", lambda: _all_quiet(servers, groups))

        # The leader of a quiet partition vanishes: no hand-off, its streams just break.
        victim = _leader(servers, groups[0])
        assert victim
        term = servers[victim].driver.groups[groups[0]].node.term  # type: ignore[union-attr]
        dead = servers.pop(victim)
        await dead.stop(graceful=False)
        t0 = time.monotonic()
        await _until("a new leader", lambda: _leader(servers, groups[0]) != 0)
        elected_s = time.monotonic() - t0
        new = _leader(servers, groups[0])
        assert new != victim
        assert servers[new].driver.groups[groups[0]].node.term > term  # type: ignore[union-attr]
        print(f"new leader of a quiet partition after {elected_s:.2f}s")
        async with Producer(",".join(peers[i] for i in servers), acks="all") as producer:
            md = await producer.send_and_wait(TOPIC, b"after", partition=0)
        assert md.offset == 2
    finally:
        for s in servers.values():
            await s.stop(graceful=False)


async def test_sigkill_the_leader_of_quiet_partitions(make_cluster: MakeCluster) -> None:
    cluster: DevCluster = make_cluster(3)
    async with AdminClient(cluster.bootstrap, timeout_ms=30_000) as admin:
        await admin.create_topic(TOPIC, partitions=3, replication_factor=3)
    async with Producer(cluster.bootstrap, acks="all") as producer:
        for p in range(3):
            await producer.send_and_wait(TOPIC, b"before", partition=p)
    await asyncio.sleep(2.0)  # idle: the partitions quiesce within a few ticks
    async with AdminClient(cluster.bootstrap, timeout_ms=30_000) as admin:
        desc = (await admin.describe_topics([TOPIC]))[TOPIC]
    victim = desc.partitions[0].leader
    cluster.kill(victim)
    survivors = ",".join(n.address for i, n in cluster.nodes.items() if i != victim)
    t0 = time.monotonic()
    async with Producer(survivors, acks="all", delivery_timeout_ms=60_000) as producer:
        for p in range(3):
            md = await producer.send_and_wait(TOPIC, b"after", partition=p)
            assert md.offset == 1
    print(f"all partitions took acks=all writes {time.monotonic() - t0:.2f}s after the kill")
