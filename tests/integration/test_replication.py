"""Replication semantics on a real three-node cluster: what liferaft promises about acks.

Each test starts its own cluster of node processes (they kill nodes). What is checked is the
promise, not the speed: every acknowledged record is there, once, in order, at the offset it was
acknowledged with; nothing past the high watermark is served; a killed node comes back into the
ISR; without enough replicas acks=all writes nothing. Waits are bounded (generous, for a shared
machine) and nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Callable

import grpc
import pytest

from client import (
    AdminClient,
    Consumer,
    DeliveryTimeoutError,
    LiferaftError,
    NotEnoughReplicasError,
    OffsetOutOfRangeError,
    Producer,
    TopicPartition,
)
from client.admin import TopicDescription
from liferaft.launcher import DevCluster
from liferaft_proto import records
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc
from tests.integration.replicas import assert_replicas_identical

pytestmark = pytest.mark.asyncio


async def describe(cluster: DevCluster, topic: str) -> TopicDescription:
    async with AdminClient(cluster.bootstrap, timeout_ms=10_000) as admin:
        return (await admin.describe_topics([topic]))[topic]


async def wait_for(what: str, check: Callable[[], object], timeout_s: float = 30.0) -> object:
    """Poll a check (plain or async) until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        with contextlib.suppress(LiferaftError, grpc.RpcError):
            last = check()
            if inspect.isawaitable(last):
                last = await last
            if last:
                return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def more_than(acked: dict[bytes, int], n: int) -> Callable[[], bool]:
    """A check that n more records than now have been acknowledged."""
    goal = len(acked) + n
    return lambda: len(acked) >= goal


async def read_all(
    cluster: DevCluster, tp: TopicPartition, end: int
) -> list[tuple[int, bytes | None]]:
    """Every (offset, value) of a partition from its start up to `end` (exclusive)."""
    out: list[tuple[int, bytes | None]] = []
    async with Consumer(cluster.bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + 60
        while (not out or out[-1][0] < end - 1) and time.monotonic() < deadline:
            got = await consumer.getmany(tp, timeout_ms=500)
            for rec in got.get(tp, []):
                out.append((rec.offset, rec.value))
    return out


async def create_topic(cluster: DevCluster, name: str, partitions: int = 1, **configs: str) -> None:
    async with AdminClient(cluster.bootstrap) as admin:
        await admin.create_topic(name, partitions, 3, configs)


def check_log(
    acked: dict[bytes, int], log: list[tuple[int, bytes | None]], *, once: bool = True
) -> None:
    """Offsets dense from the log start; every acknowledged value at its acked offset, and
    (once=True) nowhere else. A producer that is not idempotent may write a value twice when a
    leader dies after committing a batch but before answering (the retry writes it again, as
    with Kafka's non-idempotent producer): such runs pass once=False and check the rest. The
    default producer is idempotent, so the leader-kill tests here check once=True: that is the
    proof that a retry after a failover is written exactly once."""
    offsets = [o for o, _ in log]
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), "offsets are not dense"
    where: dict[bytes | None, list[int]] = {}
    for offset, value in log:
        where.setdefault(value, []).append(offset)
    lost = [v for v in acked if v not in where]
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:5]}"
    dup = {v: o for v, o in where.items() if len(o) > 1 and v in acked}
    assert not (once and dup), f"acknowledged records written twice: {list(dup.items())[:5]}"
    # -1: "written, offset unknown" (a retry answered DUPLICATE_SEQUENCE_NUMBER past the
    # broker's window of remembered batches, docs/semantics.md): in the log, anywhere.
    moved = {v: (o, where[v]) for v, o in acked.items() if o != -1 and o not in where[v]}
    assert not moved, f"records not at their acknowledged offset: {list(moved.items())[:5]}"


async def test_produce_all_and_read_back(make_cluster: Callable[..., DevCluster]) -> None:
    cluster = make_cluster(3)
    await create_topic(cluster, "orders", partitions=3)
    acked: dict[TopicPartition, dict[bytes, int]] = {}
    async with Producer(cluster.bootstrap, acks="all") as producer:
        for i in range(300):
            value = b"order-%d" % i
            md = await producer.send_and_wait("orders", value, key=b"customer-%d" % (i % 17))
            acked.setdefault(md.topic_partition, {})[value] = md.offset
    assert sum(map(len, acked.values())) == 300
    desc = await describe(cluster, "orders")
    for p in desc.partitions:
        assert p.leader in (1, 2, 3) and sorted(p.replicas) == [1, 2, 3]
        assert sorted(p.isr) == [1, 2, 3]
    for tp, values in acked.items():
        check_log(values, await read_all(cluster, tp, max(values.values()) + 1))
    report = await assert_replicas_identical(cluster)
    assert report.partitions == 3
    # The debug RPC refuses a bad range with a clear error (and, read-only, changes nothing).
    bad = broker_pb2.ReplicaStateRequest()
    bad.ranges["orders/0"].from_offset = 5
    bad.ranges["orders/0"].to_offset = 2
    async with grpc.aio.insecure_channel(cluster.node(1).address) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await broker_pb2_grpc.BrokerStub(ch).ReplicaState(bad, timeout=5)
    assert "bad range [5, 2) for orders/0" in str(err.value.details())


async def produce_loop(
    producer: Producer,
    tp: TopicPartition,
    acked: dict[bytes, int],
    stop: asyncio.Event,
    prefix: bytes,
) -> None:
    """Send unique values one at a time (acks=all) until told to stop; record what was acked."""
    i = 0
    while not stop.is_set():
        value = prefix + b"-%d" % i
        i += 1
        try:
            md = await producer.send_and_wait(tp.topic, value, partition=tp.partition)
        except LiferaftError:
            continue  # not acknowledged: may or may not be in the log, never counted as acked
        acked[value] = md.offset


async def test_leader_kill_failover_loses_nothing_and_node_rejoins_isr(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster(3)
    await create_topic(cluster, "payments", partitions=1)
    tp = TopicPartition("payments", 0)
    acked: dict[bytes, int] = {}
    stop = asyncio.Event()
    async with Producer(cluster.bootstrap, acks="all", delivery_timeout_ms=30_000) as producer:
        task = asyncio.create_task(produce_loop(producer, tp, acked, stop, b"pay"))
        await wait_for("100 acks", lambda: len(acked) >= 100)
        old = (await describe(cluster, "payments")).partitions[0]
        cluster.kill(old.leader)
        killed_at = len(acked)

        async def new_leader() -> bool:
            p = (await describe(cluster, "payments")).partitions[0]
            return p.leader not in (0, old.leader) and p.leader_epoch > old.leader_epoch

        await wait_for("a new leader in the metadata", new_leader)
        await wait_for("100 more acks after the kill", lambda: len(acked) >= killed_at + 100)
        stop.set()
        await asyncio.wait_for(task, 60)

    log = await read_all(cluster, tp, max(acked.values()) + 1)
    check_log(acked, log, once=True)

    cluster.start_node(old.leader)

    async def back_in_isr() -> bool:
        return old.leader in (await describe(cluster, "payments")).partitions[0].isr

    await wait_for(f"node {old.leader} back in the ISR", back_in_isr, 60)
    await assert_replicas_identical(cluster)


async def test_two_of_three_down_acks_all_writes_nothing(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster(3)
    await create_topic(cluster, "ledger", partitions=1, **{"min.insync.replicas": "2"})
    tp = TopicPartition("ledger", 0)
    async with Producer(cluster.bootstrap, acks="all") as producer:
        first = await producer.send_and_wait("ledger", b"before", partition=0)
    survivor = (await describe(cluster, "ledger")).partitions[0].leader
    for node_id in cluster.nodes:
        if node_id != survivor:
            cluster.kill(node_id)

    # "Two of three down" is the state after the survivor noticed: it stepped down (CheckQuorum)
    # or dropped the dead from the ISR. A write sent in the instant before that is appended and
    # then times out, and REQUEST_TIMED_OUT promises nothing (it may yet be committed).
    async def noticed() -> bool:
        async with AdminClient([cluster.node(survivor).address], timeout_ms=2000) as admin:
            p = (await admin.describe_topics(["ledger"]))["ledger"].partitions[0]
        return p.leader == 0 or len(p.isr) == 1

    await wait_for("the survivor to notice", noticed)

    # acks=all: refused, with NOT_ENOUGH_REPLICAS as the reason, and retried only within the
    # delivery timeout. (Not idempotent: an idempotent producer first needs a producer id from
    # the controller, which has lost its majority too; this checks the partition's own answer.)
    async with Producer(
        [cluster.node(survivor).address],
        acks="all",
        enable_idempotence=False,
        delivery_timeout_ms=4000,
        request_timeout_ms=1000,
    ) as producer:
        with pytest.raises((NotEnoughReplicasError, DeliveryTimeoutError)) as err:
            await producer.send_and_wait("ledger", b"never", partition=0)
    cause = err.value if isinstance(err.value, NotEnoughReplicasError) else err.value.last_error
    assert isinstance(cause, NotEnoughReplicasError), f"expected NOT_ENOUGH_REPLICAS, got {cause!r}"

    # acks=1 needs a leader, and a Raft leader needs a majority: refused the same way
    # (documented in docs/semantics.md).
    async with Producer(
        [cluster.node(survivor).address], acks=1, delivery_timeout_ms=3000, request_timeout_ms=1000
    ) as producer:
        with pytest.raises((NotEnoughReplicasError, DeliveryTimeoutError)):
            await producer.send_and_wait("ledger", b"never-1", partition=0)

    for node_id in cluster.nodes:
        if node_id != survivor:
            cluster.start_node(node_id)
    cluster.wait_healthy(60)

    async def full_isr() -> bool:
        return len((await describe(cluster, "ledger")).partitions[0].isr) == 3

    await wait_for("the ISR to heal", full_isr, 60)
    async with Producer(cluster.bootstrap, acks="all") as producer:
        after = await producer.send_and_wait("ledger", b"after", partition=0)
    log = await read_all(cluster, tp, after.offset + 1)
    assert [v for _, v in log] == [b"before", b"after"], "a refused write reached the log"
    assert log[0][0] == first.offset and log[1][0] == first.offset + 1
    await assert_replicas_identical(cluster)


async def test_acks_1_with_one_node_down(make_cluster: Callable[..., DevCluster]) -> None:
    cluster = make_cluster(3)
    await create_topic(cluster, "events", partitions=1)
    leader = (await describe(cluster, "events")).partitions[0].leader
    follower = next(n for n in cluster.nodes if n != leader)
    cluster.kill(follower)
    async with Producer(cluster.bootstrap, acks=1, delivery_timeout_ms=30_000) as producer:
        offsets = [
            (await producer.send_and_wait("events", b"e%d" % i, partition=0)).offset
            for i in range(20)
        ]
    assert offsets == list(range(offsets[0], offsets[0] + 20))
    log = await read_all(cluster, TopicPartition("events", 0), offsets[-1] + 1)
    assert [v for _, v in log] == [b"e%d" % i for i in range(20)]


async def test_consumer_never_sees_past_the_high_watermark(
    make_cluster: Callable[..., DevCluster],
) -> None:
    """Raw fetches racing a producer: every record returned is below the high watermark
    returned with it, and the high watermark a reader sees never goes back."""
    cluster = make_cluster(3)
    await create_topic(cluster, "hw", partitions=1)
    leader = (await describe(cluster, "hw")).partitions[0].leader
    stop = asyncio.Event()

    async def produce() -> None:
        async with Producer(cluster.bootstrap, acks=1) as producer:
            i = 0
            while not stop.is_set():
                await producer.send_batch("hw", [b"x%d" % (i + j) for j in range(10)], partition=0)
                i += 10

    task = asyncio.create_task(produce())
    seen_hw = 0
    checked = 0
    async with grpc.aio.insecure_channel(cluster.node(leader).address) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            resp = await stub.Fetch(
                broker_pb2.FetchRequest(
                    topic="hw", partition=0, offset=max(0, seen_hw - 5), max_wait_ms=50
                )
            )
            assert resp.high_watermark >= seen_hw, "the high watermark went back"
            seen_hw = resp.high_watermark
            for rec in records.iter_records(resp.records):
                assert rec.offset < resp.high_watermark, (
                    f"offset {rec.offset} served past hw {resp.high_watermark}"
                )
                checked += 1
    stop.set()
    await asyncio.wait_for(task, 30)
    assert checked > 0


async def test_offsets_stay_dense_across_leader_changes(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster(3)
    await create_topic(cluster, "dense", partitions=1)
    tp = TopicPartition("dense", 0)
    acked: dict[bytes, int] = {}
    stop = asyncio.Event()
    async with Producer(cluster.bootstrap, acks="all", delivery_timeout_ms=30_000) as producer:
        task = asyncio.create_task(produce_loop(producer, tp, acked, stop, b"d"))
        for round_ in range(3):
            await wait_for("acks", more_than(acked, 30))
            leader = (await describe(cluster, "dense")).partitions[0].leader
            if round_ % 2 == 0:
                cluster.stop_node(leader)  # graceful: leadership handed off first
            else:
                cluster.kill(leader)
            await wait_for("acks after the change", more_than(acked, 30))
            cluster.start_node(leader)
            cluster.wait_healthy(60)
        stop.set()
        await asyncio.wait_for(task, 60)
    log = await read_all(cluster, tp, max(acked.values()) + 1)
    check_log(acked, log, once=True)
    assert log[0][0] == 0
    await assert_replicas_identical(cluster)


async def test_retention_drops_the_log_start_and_a_lagging_replica_catches_up(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster(3, "--retention-check-ms", "200")
    await create_topic(cluster, "logs", partitions=1, **{"retention.bytes": "20000"})
    tp = TopicPartition("logs", 0)
    leader = (await describe(cluster, "logs")).partitions[0].leader
    lagging = next(n for n in cluster.nodes if n != leader)
    cluster.kill(lagging)
    async with Producer(cluster.bootstrap, acks="all", delivery_timeout_ms=30_000) as producer:
        for i in range(60):
            await producer.send_batch("logs", [b"%d-" % i + b"x" * 1000], partition=0)

    async def log_start_moved() -> bool:
        return (await describe(cluster, "logs")).partitions[0].log_start_offset > 0

    await wait_for("retention to move the log start", log_start_moved)
    async with Consumer(cluster.bootstrap, auto_offset_reset="error") as consumer:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        with pytest.raises(OffsetOutOfRangeError):
            await consumer.getmany(tp, timeout_ms=2000)

    # The replica that was down is now behind the leader's log start: it must catch up from a
    # snapshot and rejoin the ISR.
    cluster.start_node(lagging)

    async def rejoined() -> bool:
        return lagging in (await describe(cluster, "logs")).partitions[0].isr

    await wait_for(f"node {lagging} back in the ISR", rejoined, 60)
    start = (await describe(cluster, "logs")).partitions[0].log_start_offset
    log = await read_all(cluster, tp, 60)
    assert log[0][0] == start and log[-1][0] == 59
    assert log[-1][1] is not None and log[-1][1].startswith(b"59-")
    await assert_replicas_identical(cluster)  # compared from the largest log start on
