"""The producer, consumer and consumer groups of issue 5, on real three-node clusters.

Each test starts its own cluster of node processes (several kill nodes or consumers). What is
checked is the promise, never the speed: an idempotent producer's records are written exactly
once and in order across leader kills; one key's records stay in order; a group moves a dead
member's partitions to the living and no committed record is skipped; committed offsets survive
the members and resume reading; lag is the same whichever node leads; a full buffer pushes back;
compressed batches round-trip; bad input gets a clear error and changes nothing. Every wait is
bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner, Result

from client import (
    AdminClient,
    BufferFullError,
    Consumer,
    GroupIdNotFoundError,
    MessageTooLargeError,
    OffsetMetadataTooLargeError,
    OffsetOutOfRangeError,
    Producer,
    RecordMetadata,
    TopicPartition,
)
from client.group import OffsetAndMetadata
from liferaft.cli import app
from liferaft.launcher import DevCluster
from liferaft_proto import records
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc
from tests.integration.replicas import assert_replicas_identical
from tests.integration.test_replication import (
    check_log,
    create_topic,
    describe,
    read_all,
    wait_for,
)

pytestmark = pytest.mark.asyncio

REPO = Path(__file__).resolve().parents[2]


async def test_idempotent_pipelined_producer_survives_leader_kills(
    make_cluster: Callable[..., DevCluster],
) -> None:
    """Many batches in flight, the leader killed twice: every record is written exactly once,
    in the order it was sent, with no gap (the retries after each kill are recognised)."""
    cluster = make_cluster(3)
    await create_topic(cluster, "exactly", partitions=1)
    tp = TopicPartition("exactly", 0)
    sent: list[bytes] = []
    futures: list[asyncio.Future[RecordMetadata]] = []
    stop = asyncio.Event()
    async with Producer(
        cluster.bootstrap, linger_ms=2, batch_size=2048, delivery_timeout_ms=60_000
    ) as producer:
        assert producer.producer_id is not None

        async def pump() -> None:
            i = 0
            while not stop.is_set():
                value = b"rec-%06d" % i
                i += 1
                futures.append(await producer.send("exactly", value, partition=0))
                sent.append(value)
                if i % 20 == 0:
                    await asyncio.sleep(0.005)  # keep the pipeline full, not the buffer

        task = asyncio.create_task(pump())
        for _ in range(2):
            await wait_for("records acknowledged", lambda: sum(f.done() for f in futures) > 300)
            old = (await describe(cluster, "exactly")).partitions[0]
            cluster.kill(old.leader)

            async def new_leader(
                old_leader: int = old.leader, epoch: int = old.leader_epoch
            ) -> bool:
                p = (await describe(cluster, "exactly")).partitions[0]
                return p.leader not in (0, old_leader) and p.leader_epoch > epoch

            await wait_for("a new leader", new_leader)
            done_at = sum(f.done() for f in futures)
            await wait_for(
                "acks after the kill", lambda n=done_at: sum(f.done() for f in futures) > n + 300
            )
            cluster.start_node(old.leader)
            cluster.wait_healthy(60)
        stop.set()
        await asyncio.wait_for(task, 30)
        await asyncio.wait_for(producer.flush(), 60)
    metas = [f.result() for f in futures]  # none failed: a failure would raise here
    acked = dict(zip(sent, (m.offset for m in metas), strict=True))
    high_watermark = (await describe(cluster, "exactly")).partitions[0].high_watermark
    log = await read_all(cluster, tp, high_watermark)
    check_log(acked, log, once=True)
    assert [v for _, v in log] == sent, "the log is not exactly the records sent, in order"
    known = [o for o in acked.values() if o != -1]
    assert len(known) > len(acked) // 2, "most acknowledgements carry their offset"


async def test_a_consumer_stream_follows_a_leader_kill_and_reads_every_record_once_in_order(
    make_cluster: Callable[..., DevCluster],
) -> None:
    """The consumer reads the partition on a FetchStream while records are produced; the
    leader is killed under the stream: the consumer finds the new leader and reopens the
    stream at the next offset, so it reads every record once, in order (the idempotent
    producer writes each exactly once: the log is exactly what was sent)."""
    cluster = make_cluster(3)
    await create_topic(cluster, "follow", partitions=1)
    tp = TopicPartition("follow", 0)
    sent: list[bytes] = []
    futures: list[asyncio.Future[RecordMetadata]] = []
    got: list[tuple[int, bytes | None]] = []
    stop = asyncio.Event()
    async with (
        Producer(cluster.bootstrap, linger_ms=2, delivery_timeout_ms=60_000) as producer,
        Consumer(cluster.bootstrap, fetch_max_wait_ms=200) as consumer,
    ):
        consumer.assign([tp])
        consumer.seek(tp, 0)

        async def pump() -> None:
            i = 0
            while not stop.is_set():
                value = b"rec-%06d" % i
                i += 1
                futures.append(await producer.send("follow", value, partition=0))
                sent.append(value)
                if i % 10 == 0:
                    await asyncio.sleep(0.005)

        async def read() -> None:
            while True:
                batch = await consumer.getmany(tp, timeout_ms=200)
                got.extend((r.offset, r.value) for r in batch.get(tp, []))

        pumping = asyncio.create_task(pump())
        reading = asyncio.create_task(read())
        try:
            await wait_for("records read", lambda: len(got) > 300)
            old = (await describe(cluster, "follow")).partitions[0]
            cluster.kill(old.leader)

            async def new_leader() -> bool:
                p = (await describe(cluster, "follow")).partitions[0]
                return p.leader not in (0, old.leader) and p.leader_epoch > old.leader_epoch

            await wait_for("a new leader", new_leader)
            n = len(got)
            await wait_for("records read after the kill", lambda: len(got) > n + 300, 60)
            stop.set()
            await asyncio.wait_for(pumping, 30)
            await asyncio.wait_for(producer.flush(), 60)
            assert all(f.done() and f.exception() is None for f in futures)
            await wait_for("every record read", lambda: len(got) >= len(sent), 60)
            await asyncio.sleep(0.5)  # nothing more may come: no record twice
        finally:
            for task in (pumping, reading):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        assert consumer._cluster is not None and not consumer._cluster.streams_unsupported
    assert [o for o, _ in got] == list(range(len(sent))), "a record skipped or read twice"
    assert [v for _, v in got] == sent


async def test_per_key_order_and_compressed_round_trips(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster(3)
    await create_topic(cluster, "keyed", partitions=3)
    for codec in ("zstd", "lz4"):
        pytest.importorskip("zstandard" if codec == "zstd" else "lz4")
    sent: dict[bytes, list[bytes]] = {}
    for codec in (None, "zstd", "lz4"):
        async with Producer(
            cluster.bootstrap, linger_ms=20, compression_type=codec, batch_size=4096
        ) as producer:
            futures = []
            for i in range(600):
                key = b"key-%d" % (i % 7)
                value = b"%s-%d-" % (str(codec).encode(), i) + b"payload " * 20
                sent.setdefault(key, []).append(value)
                futures.append(
                    await producer.send(
                        "keyed", value, key=key, headers={"codec": str(codec), "i": str(i)}
                    )
                )
            await producer.flush()
            for f in futures:
                f.result()
    got: dict[bytes, list[bytes]] = {}
    headers_ok = 0
    async with Consumer(cluster.bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([("keyed", p) for p in range(3)])
        deadline = time.monotonic() + 60
        while sum(map(len, got.values())) < 1800 and time.monotonic() < deadline:
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                for r in recs:
                    assert r.key is not None and r.value is not None
                    got.setdefault(r.key, []).append(r.value)
                    hdr = dict(r.headers)
                    assert r.value.startswith((hdr["codec"] or b"") + b"-" + (hdr["i"] or b""))
                    headers_ok += 1
    assert got == sent, "a key's records are not all there, once, in the order they were sent"
    assert headers_ok == 1800

    # The broker stored the compressed batches as they were sent.
    leaders = {p.partition: p.leader for p in (await describe(cluster, "keyed")).partitions}
    codecs = set()
    for p, leader in leaders.items():
        async with grpc.aio.insecure_channel(cluster.node(leader).address) as channel:
            resp = await broker_pb2_grpc.BrokerStub(channel).Fetch(
                broker_pb2.FetchRequest(topic="keyed", partition=p, offset=0, max_bytes=64 << 20)
            )
        codecs |= {h.compression for h, _ in records.split_batches(resp.records)}
    assert codecs == {0, records.COMPRESSION_ZSTD, records.COMPRESSION_LZ4}

    # Keyless records are sticky (Kafka's uniform sticky partitioner): batch_size bytes to one
    # partition before the next is chosen; never scattered record by record.
    async with Producer(cluster.bootstrap, linger_ms=5, batch_size=4096) as producer:
        futures = [await producer.send("keyed", b"k%04d-" % i + b"." * 200) for i in range(300)]
        placed = [(await f).partition for f in futures]
    runs = [len(list(g)) for _, g in itertools.groupby(placed)]
    assert len(runs) >= 2, placed
    assert min(runs[:-1]) >= 4096 // 260, runs  # a record here is ~210-260 bytes in a batch


_DYING_MEMBER = textwrap.dedent(
    """
    import sys, time
    from client import SyncConsumer
    c = SyncConsumer(sys.argv[1], group_id=sys.argv[2], auto_offset_reset="earliest",
                     session_timeout_ms=2000, auto_commit_interval_ms=100, max_poll_records=5)
    c.start()
    c.subscribe([sys.argv[3]])
    while True:
        for tp, recs in c.getmany(timeout_ms=200).items():
            for r in recs:
                print(tp.partition, r.offset, flush=True)
        time.sleep(0.05)  # a slow worker
    """
)


async def test_group_moves_a_dead_members_partitions_and_skips_no_committed_record(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster(3)
    topic, group = "jobs", "workers"
    await create_topic(cluster, topic, partitions=4)
    async with Producer(cluster.bootstrap) as producer:
        for i in range(400):
            await producer.send(topic, b"job-%d" % i, key=b"%d" % i)
        await producer.flush()
    ends = {p.partition: p.high_watermark for p in (await describe(cluster, topic)).partitions}
    assert sum(ends.values()) == 400

    env = dict(os.environ, PYTHONPATH=str(REPO))
    member_a = subprocess.Popen(
        [sys.executable, "-c", _DYING_MEMBER, cluster.bootstrap, group, topic],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    seen_a: list[tuple[int, int]] = []
    seen_b: dict[int, list[int]] = {}
    try:
        assert member_a.stdout is not None
        loop = asyncio.get_running_loop()

        async def read_a(n: int) -> None:
            while len(seen_a) < n:
                line = await asyncio.wait_for(
                    loop.run_in_executor(None, member_a.stdout.readline), 60
                )
                assert line, "the first member exited"
                p, o = line.split()
                seen_a.append((int(p), int(o)))

        await read_a(40)
        async with Consumer(
            cluster.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            session_timeout_ms=2000,
            auto_commit_interval_ms=200,
        ) as member_b:
            member_b.subscribe([topic])

            async def b_reads() -> bool:
                for tp, recs in (await member_b.getmany(timeout_ms=200)).items():
                    seen_b.setdefault(tp.partition, []).extend(r.offset for r in recs)
                return len(member_b.assignment()) == 2

            # Incremental rebalance: B gets half of the partitions, A keeps the other half.
            await wait_for("B to get two partitions", b_reads, 60)
            await read_a(len(seen_a) + 20)
            held_by_a = {p for p in ends if TopicPartition(topic, p) not in member_b.assignment()}
            assert len(held_by_a) == 2
            member_a.send_signal(signal.SIGKILL)
            member_a.wait(10)
            # What A committed before it died (its partitions are not B's before its session
            # ends, so nobody commits them meanwhile).
            committed_at_death = await member_b.committed_offsets()
            # Drain what A printed before it died.
            assert member_a.stdout is not None
            for line in member_a.stdout.read().splitlines():
                p, o = line.split()
                seen_a.append((int(p), int(o)))

            async def b_has_everything() -> bool:
                await b_reads()
                return len(member_b.assignment()) == 4

            await wait_for("A's partitions to move to B", b_has_everything, 60)

            async def b_caught_up() -> bool:
                await b_reads()
                positions = [await member_b.position(TopicPartition(topic, p)) for p in ends]
                return positions == [ends[p] for p in ends]

            await wait_for("B to read to the end", b_caught_up, 60)
            await member_b.commit()
            async with AdminClient(cluster.bootstrap) as admin:
                desc = await admin.describe_group(group)
            assert len(desc.members) == 1 and desc.members[0].member_id == member_b.member_id
            assert {p.partition: p.committed for p in desc.partitions} == ends
            assert all(p.lag_records == 0 for p in desc.partitions)
    finally:
        if member_a.poll() is None:
            member_a.kill()
            member_a.wait(10)

    a_by_partition: dict[int, set[int]] = {}
    for p, o in seen_a:
        a_by_partition.setdefault(p, set()).add(o)
    for p, end in ends.items():
        read = a_by_partition.get(p, set()) | set(seen_b.get(p, []))
        missing = sorted(set(range(end)) - read)
        assert not missing, f"partition {p}: records {missing[:10]} were read by no member"
        # B starts a partition it took over from the dead A exactly at the group's committed
        # offset, which is never past what A had read.
        if p in held_by_a:
            committed = committed_at_death.get(TopicPartition(topic, p))
            first_b = min(seen_b[p])
            assert first_b == (committed.offset if committed is not None else 0)
            assert first_b <= max(a_by_partition.get(p, {-1})) + 1, f"{p}: B skipped records"


async def test_commit_resume_and_bad_input(make_cluster: Callable[..., DevCluster]) -> None:
    cluster = make_cluster(3)
    await create_topic(cluster, "ledger", partitions=1, **{"max.message.bytes": "2048"})
    tp = TopicPartition("ledger", 0)
    async with Producer(cluster.bootstrap) as producer:
        for i in range(10):
            await producer.send("ledger", b"entry-%d" % i)
        await producer.flush()

        # Oversized: refused by the client before anything is queued...
        small = Producer(cluster.bootstrap, max_request_size=4096)
        async with small:
            with pytest.raises(MessageTooLargeError, match="max_request_size"):
                await small.send("ledger", b"x" * 10_000)
        # ...and by the node (max.message.bytes), leaving the log as it was; the next record
        # still lands right after (the producer closed its sequence gap).
        with pytest.raises(MessageTooLargeError, match=r"max\.message\.bytes=2048"):
            await producer.send_and_wait("ledger", b"y" * 3000)
        after = await producer.send_and_wait("ledger", b"entry-10")
        assert after.offset == 10

    # Read 6 in a group, commit, leave; a new member of the group resumes at 6.
    async with Consumer(cluster.bootstrap, group_id="books", auto_offset_reset="earliest") as c:
        c.subscribe(["ledger"])
        got: list[int] = []
        deadline = time.monotonic() + 60
        while len(got) < 6 and time.monotonic() < deadline:
            for recs in (await c.getmany(timeout_ms=1000, max_records=6 - len(got))).values():
                got += [r.offset for r in recs]
        await c.commit()
        assert await c.committed(tp) == 6
        # Bad input: an offset past the high watermark, or metadata that is too large, is
        # refused with a clear error and the committed offset stays.
        with pytest.raises(OffsetOutOfRangeError, match="past the high watermark 11"):
            await c.commit({tp: 500})
        with pytest.raises(OffsetMetadataTooLargeError):
            await c.commit({tp: OffsetAndMetadata(offset=7, metadata="m" * 5000)})
        assert await c.committed(tp) == 6
    async with Consumer(
        cluster.bootstrap, group_id="books", auto_offset_reset="earliest", enable_auto_commit=False
    ) as c:
        c.subscribe(["ledger"])
        first = None
        deadline = time.monotonic() + 30
        while first is None and time.monotonic() < deadline:
            for recs in (await c.getmany(timeout_ms=500)).values():
                first = recs[0]
        assert first is not None and first.offset == 6 and first.value == b"entry-6"

    async with AdminClient(cluster.bootstrap) as admin:
        with pytest.raises(GroupIdNotFoundError, match="'no-such-group' does not exist"):
            await admin.describe_group("no-such-group")
        groups = {g.group_id for g in await admin.list_groups()}
        assert "books" in groups and "no-such-group" not in groups
        desc = await admin.describe_group("books")
        assert [(p.committed, p.lag_records) for p in desc.partitions] == [(6, 5)]

    # The CLI: describe, reset (a dry run first, refused while a member is alive).
    def cli(*args: str) -> Result:
        return CliRunner().invoke(app, [*args, "--bootstrap", cluster.bootstrap])

    loop = asyncio.get_running_loop()
    out = await loop.run_in_executor(None, cli, "group", "describe", "books", "--json")
    assert out.exit_code == 0, out.output
    (row,) = json.loads(out.output)["partitions"]
    assert (row["committed"], row["lag"], row["high_watermark"]) == (6, 5, 11)
    out = await loop.run_in_executor(None, cli, "group", "describe", "nope")
    assert out.exit_code == 1 and "GROUP_ID_NOT_FOUND" in out.output
    reset = ("group", "reset-offsets", "books", "--topic", "ledger", "--to-offset", "2")
    out = await loop.run_in_executor(None, cli, *reset)
    assert out.exit_code == 0 and "dry run" in out.output, out.output
    async with Consumer(cluster.bootstrap, group_id="books") as member:
        member.subscribe(["ledger"])
        await member.wait_for_assignment()
        out = await loop.run_in_executor(None, cli, *reset, "--execute")
        assert out.exit_code == 1 and "NON_EMPTY_GROUP" in out.output, out.output
        assert await member.committed(tp) == 6
    out = await loop.run_in_executor(None, cli, *reset, "--execute", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["offsets"] == [
        {"topic": "ledger", "partition": 0, "current": 6, "new": 2}
    ]
    async with AdminClient(cluster.bootstrap) as admin:
        (part,) = (await admin.describe_group("books")).partitions
        assert (part.committed, part.lag_records) == (2, 9)
    await assert_replicas_identical(cluster)  # the group's commits too, on every node


async def test_lag_is_the_same_across_a_leader_change(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster(3)
    await create_topic(cluster, "metrics", partitions=1)
    tp = TopicPartition("metrics", 0)
    base = int(time.time() * 1000) - 600_000  # ten minutes ago, a second apart
    async with Producer(cluster.bootstrap) as producer:
        for i in range(10):
            await producer.send("metrics", b"m%d" % i, partition=0, timestamp_ms=base + i * 1000)
        await producer.flush()
    async with Consumer(cluster.bootstrap, group_id="dash", enable_auto_commit=False) as c:
        c.assign([tp])
        await c.commit({tp: 4})
        before = await c.lag(tp, committed=True)
        assert (before.records, before.first_unconsumed_timestamp_ms) == (6, base + 4000)
        assert before.ms >= 600_000 - 4000

        old = (await describe(cluster, "metrics")).partitions[0]
        cluster.kill(old.leader)

        async def moved() -> bool:
            p = (await describe(cluster, "metrics")).partitions[0]
            return p.leader not in (0, old.leader)

        await wait_for("a new leader", moved)
        after = await c.lag(tp, committed=True)
        assert after.leader_epoch > before.leader_epoch
        assert (after.records, after.first_unconsumed_timestamp_ms) == (6, base + 4000)
        assert after.ms >= before.ms - 1000  # another node's clock; time only moved on
        c.seek(tp, 10)
        caught_up = await c.lag(tp)
        assert (caught_up.records, caught_up.ms, caught_up.first_unconsumed_timestamp_ms) == (
            0,
            0,
            -1,
        )
    async with AdminClient(cluster.bootstrap) as admin:
        desc = await admin.describe_group("dash")
    (part,) = desc.partitions
    assert (part.committed, part.lag_records) == (4, 6) and part.lag_ms >= 596_000


async def test_back_pressure_when_the_cluster_cannot_keep_up(
    make_cluster: Callable[..., DevCluster],
) -> None:
    """With acks=all impossible (an in-sync replica missing, min.insync.replicas=3), records
    pile up in the buffer; once it is full, send() waits and then raises BufferFullError. When
    the replica is back, everything that was accepted is written, once, in order."""
    cluster = make_cluster(3)
    await create_topic(cluster, "slow", partitions=1, **{"min.insync.replicas": "3"})
    leader = (await describe(cluster, "slow")).partitions[0].leader
    follower = next(n for n in cluster.nodes if n != leader)
    cluster.kill(follower)

    async def isr_shrank() -> bool:
        return len((await describe(cluster, "slow")).partitions[0].isr) == 2

    await wait_for("the ISR to drop the dead replica", isr_shrank)
    accepted: list[tuple[bytes, asyncio.Future[RecordMetadata]]] = []
    async with Producer(
        cluster.bootstrap,
        buffer_memory=20_000,
        batch_size=4_000,
        linger_ms=0,
        max_block_ms=1_000,
        delivery_timeout_ms=90_000,
    ) as producer:
        with pytest.raises(BufferFullError, match="stayed full"):
            for i in range(100):
                value = b"%03d-" % i + b"z" * 1000
                accepted.append((value, await producer.send("slow", value, partition=0)))
        assert 5 < len(accepted) < 20
        assert not any(f.done() for _, f in accepted)
        cluster.start_node(follower)
        metas = await asyncio.wait_for(asyncio.gather(*(f for _, f in accepted)), 90)
    offsets = [m.offset for m in metas]
    assert offsets == list(range(len(accepted)))
    log = await read_all(cluster, TopicPartition("slow", 0), len(accepted))
    assert [v for _, v in log] == [v for v, _ in accepted]
