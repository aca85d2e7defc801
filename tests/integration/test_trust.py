"""Trust no one between nodes (issue 13), on three real NodeServers in this process.

Each attack comes over the real wire, from a real peer's link (node 2 of the cluster, as a
compromised or buggy node would) or from a stranger on the Raft port, and each must fail and
change nothing:
- a Raft message for a group whose members do not include its sender is dropped and counted
  (before, node 1 stepped a forged AppendEntries at term + 1000 for a partition only it hosts);
- leader gossip that names another node, or an absurd epoch (2^63-1 outranked every real epoch
  for good, 2^64-1 broke Metadata and DescribeTopics), is dropped: metadata stays as it was;
- a Hello whose advertised address has no port is refused, and the controller's housekeeping
  (gossip, registration, health) lives on (before, it died silently).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from liferaft.launcher import free_port_block
from liferaft_proto import records
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc, errors_pb2, raft_pb2
from node.config import RAFT_PORT_OFFSET, NodeConfig
from node.partition import group_id
from node.raft_wire import FRAME_HEADER, HELLO, REFUSE, frame
from node.server import NodeServer
from raft import Entry, Message, MessageType, Role
from tests.integration.conftest import MakeCluster

TOPIC = "solo"


async def _until(what: str, check: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _cluster(tmp_path: Path) -> tuple[dict[int, NodeServer], dict[int, str]]:
    base = free_port_block(3)
    peers = {i: f"127.0.0.1:{base + i - 1}" for i in (1, 2, 3)}
    servers = {
        i: NodeServer(
            NodeConfig(
                node_id=i,
                listen=peers[i],
                peers=peers,
                data_dir=tmp_path / f"n{i}",
                cluster_id="trust-test",
                # Plaintext on purpose: these are the checks behind authentication, which must
                # hold against a node whose certificate is real (a compromised or buggy node);
                # tests/node/test_transport.py shows TLS keeping strangers out before them.
                insecure_plaintext_between_nodes=True,
            )
        )
        for i in peers
    }
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
    return servers, peers


def _metadata_view(md: broker_pb2.MetadataResponse) -> list[tuple[str, int, int, int]]:
    return sorted(
        (t.name, p.partition, p.leader_id, p.leader_epoch) for t in md.topics for p in t.partitions
    )


@pytest.mark.asyncio
async def test_forged_messages_gossip_and_hellos_change_nothing(tmp_path: Path) -> None:
    servers, peers = await _cluster(tmp_path)
    channel = grpc.aio.insecure_channel(peers[1])
    try:
        stub = broker_pb2_grpc.BrokerStub(channel)
        created = await stub.CreateTopics(
            broker_pb2.CreateTopicsRequest(
                topics=[broker_pb2.NewTopic(name=TOPIC, partitions=3, replication_factor=1)]
            )
        )
        assert not created.topics[0].error.code
        info = servers[1].broker.controller.state.topics[TOPIC]  # type: ignore[union-attr]
        on = {info.replicas[p][0]: p for p in range(3)}  # node -> its one partition
        assert sorted(on) == [1, 2, 3]
        gid = {n: group_id(info.topic_id, p) for n, p in on.items()}
        await _until(
            "every partition led",
            lambda: all(
                servers[n].driver.groups[gid[n]].node.role == Role.LEADER  # type: ignore[union-attr]
                for n in (1, 2, 3)
            ),
        )
        batch = records.build_batch([records.Record(value=b"real")])
        await stub.Produce(
            broker_pb2.ProduceRequest(topic=TOPIC, partition=on[1], acks=-1, records=batch)
        )
        # Node 1 learns the other partitions' leaders by their gossip: wait until it knows all
        # three, or a late true gossip would pass for a lie taken in (a flaky run of CI did).
        async with asyncio.timeout(30):
            while True:
                before = _metadata_view(await stub.Metadata(broker_pb2.MetadataRequest()))
                if all(leader != 0 for _, _, leader, _ in before):
                    break
                await asyncio.sleep(0.05)

        # 1. Node 2 (a member of the cluster, not of the partition only node 1 hosts) sends node
        # 1 an AppendEntries for it at term + 1000 over its real link.
        g1 = servers[1].driver.groups[gid[1]]  # type: ignore[union-attr]
        term, last = g1.node.term, g1.node.last_index()
        hw = servers[1].broker.partitions[(TOPIC, on[1])].high_watermark  # type: ignore[union-attr]
        forged = records.build_batch([records.Record(value=b"forged")])
        t2 = servers[2].transport
        assert t2 is not None
        t2.send(
            1,
            gid[1],
            Message(
                MessageType.APP,
                to=1,
                frm=2,
                term=term + 1000,
                log_term=term,
                index=last,
                entries=(Entry(last + 1, term + 1000, data=forged),),
                commit=last + 1,
            ),
        )
        t2.flush()
        d1 = servers[1].driver
        assert d1 is not None
        await _until(
            "the forged message to be dropped",
            lambda: getattr(d1.stats, "messages_from_non_members", 0) >= 1 or g1.node.term != term,
            10,
        )
        await asyncio.sleep(0.2)
        assert g1.node.term == term and g1.node.role == Role.LEADER
        assert g1.node.last_index() == last
        assert servers[1].broker.partitions[(TOPIC, on[1])].high_watermark == hw  # type: ignore[union-attr]
        assert d1.stats.messages_from_non_members == 1

        # 2. Node 2 gossips lies: about a partition node 3 leads, and absurd epochs about its own.
        lies = raft_pb2.LeaderStates(from_node=2)
        lies.states.add(group=gid[3], leader=3, epoch=(1 << 63) - 1, isr=[3])
        lies.states.add(group=gid[3], leader=2, epoch=(1 << 64) - 1, isr=[2])
        lies.states.add(group=gid[2], leader=2, epoch=(1 << 64) - 1, isr=[2])
        lies.states.add(group=gid[2], leader=2, epoch=(1 << 63) - 1, isr=[2])
        lies.states.add(group=gid[2], leader=2, epoch=term + 1, isr=[2, (1 << 32) - 1])
        t2.broadcast_leaders(lies)
        b1 = servers[1].broker
        assert b1 is not None
        await _until("the lies to be dropped", lambda: getattr(b1, "gossip_dropped", 0) >= 5, 10)
        await asyncio.sleep(0.3)
        after = _metadata_view(await stub.Metadata(broker_pb2.MetadataRequest()))
        assert after == before
        described = await stub.DescribeTopics(broker_pb2.DescribeTopicsRequest(names=[TOPIC]))
        assert sorted((p.partition, p.leader_id) for p in described.topics[0].partitions) == sorted(
            (p, n) for n, p in on.items()
        )

        # 3. A stranger's Hello as node 3 to the controller leader, advertising no port.
        leader = servers[1].broker.controller_leader()  # type: ignore[union-attr]
        other = 3 if leader != 3 else 2
        host, port = peers[leader].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port) + RAFT_PORT_OFFSET)
        hello = raft_pb2.Hello(
            cluster_id="trust-test", from_node=other, to_node=leader, advertise="evil-host"
        )
        writer.write(frame(HELLO, hello.SerializeToString()))
        size, kind = FRAME_HEADER.unpack(await reader.readexactly(FRAME_HEADER.size))
        detail = errors_pb2.ErrorDetail.FromString(await reader.readexactly(size - 1))
        writer.close()
        assert kind == REFUSE and detail.code == errors_pb2.INVALID_REQUEST
        target = servers[leader]
        assert target.transport is not None and target.broker is not None
        assert other in target.transport.connected_peers()  # the real link was not replaced
        assert target.broker.advertised.get(other, peers[other]) == peers[other]
        await asyncio.sleep(1.5)  # registrations run every 25 ticks (0.5 s)
        assert target._housekeeping is not None and not target._housekeeping.done()
        md = await stub.Metadata(broker_pb2.MetadataRequest())
        assert {b.node_id: f"{b.host}:{b.port}" for b in md.brokers} == peers
    finally:
        await channel.close()
        for s in servers.values():
            await s.stop(graceful=False)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _flood(port: int, claimed: int, send_bytes: int) -> float:
    """Claim a `claimed`-byte first frame and try to send `send_bytes` of it; returns how many
    MiB the node took before it hung up."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(FRAME_HEADER.pack(claimed, HELLO))
            chunk = b"\0" * (1 << 20)
            while sent < send_bytes:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:  # reset or broken pipe: the node refused the frame
            pass
    return sent / (1 << 20)


def test_huge_first_frames_and_idle_connections_against_a_node_process(
    make_cluster: MakeCluster,
) -> None:
    """A real node process: four first frames claiming 256 MiB each (the issue's attack took a
    node from 245 to 1,478 MiB), then 500 connections that never say Hello."""
    dev = make_cluster(1)
    node = dev.nodes[1]
    rss_before = _rss_mib(node.pid)
    with ThreadPoolExecutor(4) as pool:
        took = list(pool.map(lambda _: _flood(node.raft_port, 256 << 20, 256 << 20), range(4)))
    time.sleep(0.5)
    rss_after = _rss_mib(node.pid)
    print(
        f"RSS {rss_before:.0f} -> {rss_after:.0f} MiB; the node took {took} MiB before hanging up"
    )
    assert rss_after - rss_before < 64, (rss_before, rss_after)
    assert all(t < 256 for t in took)  # refused long before the claimed size
    dev.metadata(1, timeout_s=5)

    conns = [socket.create_connection(("127.0.0.1", node.raft_port)) for _ in range(500)]
    try:
        # The node still serves clients while they hang.
        with grpc.insecure_channel(node.address) as ch:
            stub = broker_pb2_grpc.BrokerStub(ch)
            created = stub.CreateTopics(
                broker_pb2.CreateTopicsRequest(topics=[broker_pb2.NewTopic(name="idle")]),
                timeout=30,
            )
            assert not created.topics[0].error.code
            batch = records.build_batch([records.Record(value=b"still here")])
            resp = stub.Produce(
                broker_pb2.ProduceRequest(topic="idle", partition=0, records=batch), timeout=30
            )
            assert resp.base_offset == 0
        # Every idle connection is closed by the handshake deadline (5 s), most of them at once.
        deadline = time.monotonic() + 15
        for c in conns:
            c.settimeout(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ConnectionResetError):
                assert c.recv(1) == b""
    finally:
        for c in conns:
            c.close()
    dev.metadata(1, timeout_s=5)
