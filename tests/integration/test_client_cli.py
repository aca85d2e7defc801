"""The Python client and the `liferaft` client commands against a real three-node cluster.

One cluster of real node processes (liferaft.launcher) serves the whole module; each test uses
its own topics. The tests go end to end: create a topic, produce with acks=all, consume it back
in order, describe, the errors bad input must raise (and must leave the cluster as it was),
the blocking facade, the CLI in-process and as a subprocess, and, last, failover when a
partition leader is killed. Every test body is bounded by a timeout; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner, Result

from client import (
    AdminClient,
    Consumer,
    CorruptMessageError,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    InvalidRequiredAcksError,
    InvalidTopicError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    Producer,
    Record,
    SyncAdminClient,
    SyncConsumer,
    SyncProducer,
    TopicAlreadyExistsError,
    TopicPartition,
    UnknownTopicOrPartitionError,
)
from client.errors import from_rpc_error
from client.partitioner import partition_for_key
from liferaft.cli import app
from liferaft.launcher import DevCluster
from liferaft_proto.records import build_batch
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
TEST_TIMEOUT_S = 30


@pytest.fixture
def bootstrap(cluster: DevCluster) -> str:
    return cluster.bootstrap


async def create(bootstrap: str, name: str, partitions: int = 3, **configs: str) -> None:
    async with AdminClient(bootstrap) as admin:
        await admin.create_topic(
            name, partitions, 3, {k.replace("_", "."): v for k, v in configs.items()}
        )


async def drain(consumer: Consumer, want: int) -> list:  # type: ignore[type-arg]
    """Read until `want` records came (the caller's timeout bounds it)."""
    got: list = []  # type: ignore[type-arg]
    while len(got) < want:
        batch = await consumer.getmany(timeout_ms=500)
        for records in batch.values():
            got.extend(records)
    return got


# -- the async client --------------------------------------------------------------------------
async def test_admin_create_describe_list_delete(bootstrap: str) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S), AdminClient(bootstrap) as admin:
        created = await admin.create_topic(
            "admin-t", 3, 3, {"min.insync.replicas": "2", "retention.ms": "3600000"}
        )
        assert (created.name, created.partitions, created.replication_factor) == ("admin-t", 3, 3)
        assert created.error is None

        desc = (await admin.describe_topics(["admin-t"]))["admin-t"]
        assert desc.replication_factor == 3
        assert [p.partition for p in desc.partitions] == [0, 1, 2]
        for p in desc.partitions:
            assert sorted(p.replicas) == [1, 2, 3]
            assert p.leader in p.replicas and p.leader_epoch >= 1
            assert p.leader in p.isr and set(p.isr) <= set(p.replicas)
            assert (p.high_watermark, p.log_start_offset) == (0, 0)
        assert desc.configs["min.insync.replicas"].value == "2"
        assert desc.configs["min.insync.replicas"].source == "topic"
        assert desc.configs["max.message.bytes"].source == "default"
        # Preferred leaders are spread: three partitions, three different first replicas.
        assert len({p.replicas[0] for p in desc.partitions}) == 3

        assert "admin-t" in await admin.list_topics()
        info = await admin.describe_cluster()
        assert [b.node_id for b in info.brokers] == [1, 2, 3]
        assert info.controller_id in (1, 2, 3)
        led = info.leaders_by_node()
        assert sum(tp.topic == "admin-t" for tps in led.values() for tp in tps) == 3

        await admin.delete_topic("admin-t")
        assert "admin-t" not in await admin.list_topics()
        with pytest.raises(UnknownTopicOrPartitionError):
            await admin.describe_topics(["admin-t"])


async def test_produce_acks_all_then_consume_in_order(bootstrap: str) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        await create(bootstrap, "orders")
        sent: dict[int, list[tuple[bytes, bytes]]] = {0: [], 1: [], 2: []}
        async with Producer(bootstrap, acks="all") as producer:
            for i in range(30):
                key = f"customer-{i % 5}".encode()
                meta = await producer.send_and_wait(
                    "orders", f"order {i}".encode(), key=key, headers={"n": str(i)}
                )
                # One key, one partition: the one Kafka's Java client would choose.
                assert meta.partition == partition_for_key(key, 3)
                assert meta.offset == len(sent[meta.partition])
                sent[meta.partition].append((key, f"order {i}".encode()))
            batch = await producer.send_batch(
                "orders", [Record(b"b0", b"batch"), b"b1", "b2"], partition=1
            )
            assert (batch.partition, batch.offset, batch.record_count) == (1, len(sent[1]), 3)
            sent[1].extend([(b"batch", b"b0"), (b"", b"b1"), (b"", b"b2")])

        async with AdminClient(bootstrap) as admin:
            ends = await admin.list_offsets({("orders", p): "latest" for p in range(3)})
            starts = await admin.list_offsets({("orders", p): "earliest" for p in range(3)})
        assert {tp.partition: o.offset for tp, o in ends.items()} == {
            p: len(v) for p, v in sent.items()
        }
        assert all(o.offset == 0 for o in starts.values())

        async with Consumer(bootstrap, auto_offset_reset="earliest") as consumer:
            consumer.assign([("orders", p) for p in range(3)])
            records = await drain(consumer, sum(len(v) for v in sent.values()))
            for p in range(3):
                mine = [r for r in records if r.partition == p]
                assert [r.offset for r in mine] == list(range(len(sent[p])))
                assert [(r.key or b"", r.value) for r in mine] == sent[p]
                assert await consumer.position(("orders", p)) == len(sent[p])
                assert consumer.highwater(("orders", p)) == len(sent[p])
            first = next(r for r in records if r.value == b"order 0")
            assert first.headers == (("n", b"0"),)


async def test_latest_consumer_sees_only_new_records(bootstrap: str) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        await create(bootstrap, "news", partitions=1)
        async with Producer(bootstrap) as producer, Consumer(bootstrap) as consumer:
            await producer.send_and_wait("news", b"old")
            consumer.assign([("news", 0)])
            assert await consumer.position(("news", 0)) == 1
            await producer.send_and_wait("news", b"new")
            record = await consumer.getone()
            assert (record.offset, record.value) == (1, b"new")
            await consumer.seek_to_beginning()
            assert (await consumer.getone()).value == b"old"
            await consumer.seek_to_end()
            assert await consumer.position(TopicPartition("news", 0)) == 2


async def test_acks_0_and_validate_only(bootstrap: str) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with AdminClient(bootstrap) as admin:
            would = await admin.create_topic("dry", 4, 3, validate_only=True)
            assert (would.partitions, would.replication_factor, would.error) == (4, 3, None)
            assert "dry" not in await admin.list_topics()
        await create(bootstrap, "fire", partitions=1)
        async with Producer(bootstrap, acks=0) as producer:
            meta = await producer.send_and_wait("fire", b"and forget")
        assert (meta.partition, meta.offset) == (0, -1)  # nobody waited to learn it
        async with Consumer(bootstrap, auto_offset_reset="earliest") as consumer:
            consumer.assign([("fire", 0)])
            (record,) = await drain(consumer, 1)
        assert (record.offset, record.value) == (0, b"and forget")


async def test_offset_out_of_range_follows_auto_offset_reset(bootstrap: str) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        await create(bootstrap, "ranges", partitions=1)
        async with Producer(bootstrap) as producer:
            await producer.send_batch("ranges", [b"a", b"b", b"c"])
        async with Consumer(bootstrap, auto_offset_reset="error") as strict:
            strict.assign([("ranges", 0)])
            strict.seek(("ranges", 0), 100)
            with pytest.raises(OffsetOutOfRangeError, match="out of range"):
                await strict.getmany(timeout_ms=5000)
        async with Consumer(bootstrap, auto_offset_reset="earliest") as lenient:
            lenient.assign([("ranges", 0)])
            lenient.seek(("ranges", 0), 100)
            records = await drain(lenient, 3)
            assert [r.value for r in records] == [b"a", b"b", b"c"]


async def test_bad_input_raises_the_right_error_and_changes_nothing(bootstrap: str) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        await create(bootstrap, "strict", partitions=1, max_message_bytes="1024")
        async with AdminClient(bootstrap) as admin:
            with pytest.raises(TopicAlreadyExistsError):
                await admin.create_topic("strict", 1, 3)
            with pytest.raises(InvalidConfigError, match=r"retention\.ms"):
                await admin.create_topic("cfg", 1, 3, {"retention.ms": "soon"})
            with pytest.raises(InvalidConfigError, match="unknown topic config"):
                await admin.create_topic("cfg", 1, 3, {"no.such.setting": "1"})
            with pytest.raises(InvalidReplicationFactorError):
                await admin.create_topic("rf", 1, 5)
            with pytest.raises(InvalidPartitionsError):
                await admin.create_topic("parts", 100_000, 3)
            with pytest.raises(InvalidTopicError):
                await admin.create_topic("no spaces allowed", 1, 3)
            results = await admin.create_topics([], raise_on_error=False)
            assert results == {}
            topics = await admin.list_topics()
            assert not {"cfg", "rf", "parts", "no spaces allowed"} & set(topics)

        async with Producer(bootstrap) as producer:
            with pytest.raises(UnknownTopicOrPartitionError, match="'missing' does not exist"):
                await producer.send_and_wait("missing", b"x")
            with pytest.raises(UnknownTopicOrPartitionError, match="not 7"):
                await producer.send_and_wait("strict", b"x", partition=7)
            with pytest.raises(MessageTooLargeError, match=r"max\.message\.bytes=1024"):
                await producer.send_and_wait("strict", b"x" * 4096)

        async with Consumer(bootstrap) as consumer:
            consumer.assign([("missing", 0)])
            with pytest.raises(UnknownTopicOrPartitionError):
                await consumer.getmany(timeout_ms=2000)

        # Raw stubs: what a broken or hostile client could send.
        async with AdminClient(bootstrap) as admin:
            leader = (await admin.describe_topics(["strict"]))["strict"].partitions[0].leader
            address = (await admin.describe_cluster()).brokers[leader - 1].address
        good = build_batch([Record(b"v")])
        corrupt = good[:-1] + bytes([good[-1] ^ 0x01])
        async with grpc.aio.insecure_channel(address) as channel:
            stub = broker_pb2_grpc.BrokerStub(channel)
            for records, acks, expected in [
                (corrupt, -1, CorruptMessageError),
                (good[:40], -1, CorruptMessageError),
                (good, 5, InvalidRequiredAcksError),
            ]:
                request = broker_pb2.ProduceRequest(
                    topic="strict", partition=0, acks=acks, records=records
                )
                with pytest.raises(grpc.RpcError) as caught:
                    await stub.Produce(request, timeout=10)
                err = from_rpc_error(caught.value)
                assert type(err) is expected, err
                assert not err.retriable

        async with AdminClient(bootstrap) as admin:
            part = (await admin.describe_topics(["strict"]))["strict"].partitions[0]
        assert part.high_watermark == 0  # nothing of the above was written


# -- the blocking facade -----------------------------------------------------------------------
def test_sync_facade_roundtrip(bootstrap: str) -> None:
    with SyncAdminClient(bootstrap) as admin:
        admin.create_topic("sync-t", 2, 3)
        assert "sync-t" in admin.list_topics()
    with SyncProducer(bootstrap, acks=1) as producer:
        metas = [producer.send_and_wait("sync-t", f"v{i}", partition=i % 2) for i in range(6)]
        assert [m.offset for m in metas] == [0, 0, 1, 1, 2, 2]
        with pytest.raises(UnknownTopicOrPartitionError):
            producer.send_and_wait("sync-missing", b"x")
    with SyncConsumer(bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([("sync-t", 0), ("sync-t", 1)])
        seen = []
        for record in consumer:
            seen.append((record.partition, record.offset, record.value))
            if len(seen) == 6:
                break
        assert sorted(seen) == [(p, o, f"v{2 * o + p}".encode()) for p in (0, 1) for o in range(3)]
        assert consumer.position(("sync-t", 0)) == 3


# -- the CLI -----------------------------------------------------------------------------------
def cli(command: str, *, input: str | None = None, bootstrap: str | None = None) -> Result:
    """Run `liferaft COMMAND` in-process (with LIFERAFT_BOOTSTRAP set, if given), bounded."""
    runner = CliRunner()
    env = {"LIFERAFT_BOOTSTRAP": bootstrap}
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(runner.invoke, app, shlex.split(command), input=input, env=env)
        return call.result(timeout=TEST_TIMEOUT_S)


def test_cli_topic_commands(bootstrap: str) -> None:
    b = bootstrap
    done = cli(
        "topic create cli-t --partitions 2 --replication-factor 3 "
        "--config retention.ms=600000 --json",
        bootstrap=b,
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {
        "name": "cli-t",
        "partitions": 2,
        "replication_factor": 3,
        "validate_only": False,
    }

    listed = cli("topic list --json", bootstrap=b)
    assert "cli-t" in json.loads(listed.stdout)

    described = cli(f"topic describe cli-t --json --bootstrap {b}")  # the flag, not the env
    assert described.exit_code == 0, described.output
    doc = json.loads(described.stdout)
    assert set(doc) == {"name", "replication_factor", "partitions", "configs"}
    assert doc["name"] == "cli-t" and doc["replication_factor"] == 3
    # The config the text shows is in the JSON too, with where each value comes from.
    assert doc["configs"]["retention.ms"] == {"value": "600000", "source": "topic"}
    assert doc["configs"]["max.message.bytes"]["source"] == "default"
    assert [p["partition"] for p in doc["partitions"]] == [0, 1]
    for p in doc["partitions"]:
        assert set(p) == {
            "partition",
            "leader",
            "leader_epoch",
            "replicas",
            "isr",
            "high_watermark",
            "log_start_offset",
        }
        assert type(p["leader"]) is int and p["leader"] in p["replicas"]
        assert all(type(n) is int for n in p["replicas"] + p["isr"])
        assert sorted(p["replicas"]) == [1, 2, 3]

    table = cli("topic describe cli-t", bootstrap=b)
    assert table.exit_code == 0 and "high watermark" in table.stdout
    assert "retention.ms=600000" in table.stdout

    info = cli("cluster info --json", bootstrap=b)
    nodes = json.loads(info.stdout)["nodes"]
    assert [n["node_id"] for n in nodes] == [1, 2, 3]
    assert sum(n["is_controller"] for n in nodes) == 1
    led = [tp for n in nodes for tp in n["leader_of"] if tp.startswith("cli-t-")]
    assert sorted(led) == ["cli-t-0", "cli-t-1"]
    assert cli("cluster info", bootstrap=b).exit_code == 0

    deleted = cli("topic delete cli-t", bootstrap=b)
    assert deleted.exit_code == 0 and "deleted topic cli-t" in deleted.stdout


def test_cli_produce_and_consume(bootstrap: str) -> None:
    b = bootstrap
    assert cli("topic create cli-io -p 2 -r 3", bootstrap=b).exit_code == 0
    produced = cli("produce cli-io --key k --json", input="one\ntwo\nthree\n", bootstrap=b)
    assert produced.exit_code == 0, produced.output
    metas = [json.loads(line) for line in produced.stdout.splitlines()]
    home = partition_for_key(b"k", 2)
    assert [(m["partition"], m["offset"]) for m in metas] == [(home, 0), (home, 1), (home, 2)]

    other = 1 - home
    to_other = cli(f"produce cli-io --partition {other} --acks 1 -v", input="four\n", bootstrap=b)
    assert to_other.stdout.strip() == f"cli-io partition {other} offset 0"

    consumed = cli("consume cli-io --from-beginning --count 4", bootstrap=b)
    assert consumed.exit_code == 0, consumed.output
    values = consumed.stdout.splitlines()
    assert sorted(values) == ["four", "one", "three", "two"]
    assert [v for v in values if v != "four"] == ["one", "two", "three"]

    full = cli(f"consume cli-io --partition {home} --offset 1 --count 2 --json", bootstrap=b)
    docs = [json.loads(line) for line in full.stdout.splitlines()]
    assert [(d["offset"], d["key"], d["value"]) for d in docs] == [
        (1, "k", "two"),
        (2, "k", "three"),
    ]

    idle = cli("consume cli-io --timeout-ms 300", bootstrap=b)
    assert idle.exit_code == 0 and idle.stdout == ""  # from the end: nothing new came


def test_cli_errors_are_one_line_and_exit_1(bootstrap: str) -> None:
    b = bootstrap
    missing = cli("topic describe no-such-topic", bootstrap=b)
    assert missing.exit_code == 1
    assert missing.stderr.strip().splitlines() == [
        "error: UNKNOWN_TOPIC_OR_PARTITION: topic 'no-such-topic' does not exist"
    ]
    bad = cli("topic create bad-cfg --config retention.ms=soon", bootstrap=b)
    assert bad.exit_code == 1 and "INVALID_CONFIG" in bad.stderr
    assert cli("produce no-such-topic", input="x\n", bootstrap=b).exit_code == 1
    malformed = cli("topic create x --config novalue", bootstrap=b)
    assert malformed.exit_code == 2 and "NAME=VALUE" in malformed.stderr
    nowhere = cli("topic list")
    assert nowhere.exit_code == 2 and "LIFERAFT_BOOTSTRAP" in nowhere.stderr


def test_cli_as_a_process(bootstrap: str) -> None:
    env = {**os.environ, "LIFERAFT_BOOTSTRAP": bootstrap}

    def liferaft(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "liferaft", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=TEST_TIMEOUT_S,
        )

    assert liferaft("topic", "create", "proc-t", "-p", "1", "-r", "3").returncode == 0
    produced = liferaft("produce", "proc-t", "--acks", "all", "-v", stdin="alpha\nbeta\n")
    assert produced.returncode == 0, produced.stderr
    assert produced.stdout.splitlines() == [
        "proc-t partition 0 offset 0",
        "proc-t partition 0 offset 1",
    ]
    consumed = liferaft("consume", "proc-t", "--from-beginning", "--count", "2")
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == ["alpha", "beta"]


# -- failover (last: it kills and restarts a node of the shared cluster) -----------------------
async def test_produce_and_consume_fail_over_when_the_leader_dies(
    cluster: DevCluster, bootstrap: str
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        await create(bootstrap, "failover", partitions=1)
        async with Producer(bootstrap, acks="all") as producer:
            before = [await producer.send_and_wait("failover", f"a{i}") for i in range(3)]
            async with AdminClient(bootstrap) as admin:
                leader = (
                    (await admin.describe_topics(["failover"]))["failover"].partitions[0].leader
                )
            cluster.kill(leader)
            try:
                after = [await producer.send_and_wait("failover", f"b{i}") for i in range(3)]
                async with Consumer(bootstrap, auto_offset_reset="earliest") as consumer:
                    consumer.assign([("failover", 0)])
                    records = await drain(consumer, 6)
            finally:
                await asyncio.to_thread(cluster.start_node, leader)
        assert [m.offset for m in before + after] == list(range(6))
        assert [r.value for r in records] == [b"a0", b"a1", b"a2", b"b0", b"b1", b"b2"]
        await asyncio.to_thread(cluster.wait_healthy, 30.0)
