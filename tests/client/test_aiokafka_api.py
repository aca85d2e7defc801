"""aiokafka's API on liferaft's clients, against a real three-node cluster (issue 16, part 6):
offset look-ups, pattern subscriptions that follow new topics, unsubscribe, auto_offset_reset
"none", seek_to_committed, deserializers and serializers, aiokafka-shaped records and batches.
Bad input is refused with a clear error and changes nothing. One cluster serves the file.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from client import (
    AdminClient,
    AIOKafkaConsumer,
    AIOKafkaProducer,
    Consumer,
    NewTopic,
    NoOffsetForPartitionError,
    OffsetAndTimestamp,
    Producer,
    TopicPartition,
)
from client.cluster import resolve_bootstrap
from liferaft.launcher import DevCluster

BASE_TS = 1_700_000_000_000


@pytest.fixture
async def admin(cluster: DevCluster) -> AsyncIterator[AdminClient]:
    async with AdminClient(bootstrap_servers=cluster.bootstrap) as a:
        yield a


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def fill(bootstrap: str, topic: str, n: int, partition: int = 0) -> None:
    async with Producer(bootstrap) as p:
        for i in range(n):
            await p.send(
                topic,
                b"v%d" % i,
                key=b"k%d" % i,
                partition=partition,
                timestamp_ms=BASE_TS + i * 10,
            )
        await p.flush()


async def until(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# -- no cluster needed ---------------------------------------------------------------------------
def test_bootstrap_names_and_bad_input() -> None:
    assert resolve_bootstrap(None, "localhost") == ("localhost:9092",)
    assert resolve_bootstrap(None, ["a:1", "b"]) == ("a:1", "b:9092")
    assert resolve_bootstrap("a:1,b:2", None) == ("a:1", "b:2")
    with pytest.raises(ValueError, match="once"):
        Consumer("a:1", bootstrap_servers="b:2")
    with pytest.raises(ValueError, match="auto_offset_reset"):
        Consumer(bootstrap_servers="a:1", auto_offset_reset="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="security_protocol"):
        AIOKafkaProducer(bootstrap_servers="a:1", security_protocol="SASL_SSL")
    with pytest.raises(TypeError, match="value_serializer"):
        Producer("a:1", value_serializer="json")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="once"):
        NewTopic("t", 3, partitions=3)
    with pytest.raises(ValueError, match="replica_assignments"):
        NewTopic("t", 3, 1, replica_assignments={0: [1]})
    t = NewTopic("t", 3, 2, topic_configs={"retention.ms": "1000"})
    assert (t.partitions, t.num_partitions, t.replication_factor) == (3, 3, 2)
    assert t.configs == t.topic_configs == {"retention.ms": "1000"}
    assert NewTopic("t", -1, -1) == NewTopic(name="t")


def test_subscribe_refuses_bad_arguments_and_changes_nothing() -> None:
    c = Consumer("a:1", group_id="g")
    with pytest.raises(ValueError, match="one of the two"):
        c.subscribe(["a"], pattern="a.*")
    with pytest.raises(ValueError, match="one of the two"):
        c.subscribe()
    with pytest.raises(TypeError, match="list"):
        c.subscribe("orders")
    with pytest.raises(ValueError, match="not a valid pattern"):
        c.subscribe(pattern="(")
    assert c.subscription() == set() and c.assignment() == set()
    c.assign([("x", 0)])
    with pytest.raises(RuntimeError, match="manual assignment"):
        c.subscribe(["x"])
    assert c.assignment() == {TopicPartition("x", 0)}


# -- against the cluster ---------------------------------------------------------------------------
async def test_offset_lookups(cluster: DevCluster, admin: AdminClient) -> None:
    topic = unique("look")
    await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=3)])
    await fill(cluster.bootstrap, topic, 5)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    async with Consumer(bootstrap_servers=cluster.bootstrap) as c:
        assert await c.beginning_offsets([tp0, tp1]) == {tp0: 0, tp1: 0}
        assert await c.end_offsets([tp0, tp1]) == {tp0: 5, tp1: 0}
        found = await c.offsets_for_times({tp0: BASE_TS + 25, tp1: BASE_TS})
        assert found[tp1] is None  # no record at or after it
        assert isinstance(found[tp0], OffsetAndTimestamp)
        assert (found[tp0].offset, found[tp0].timestamp) == (3, BASE_TS + 30)
        assert (await c.offsets_for_times({tp0: BASE_TS + 10_000}))[tp0] is None
        with pytest.raises(ValueError, match=">= 0"):
            await c.offsets_for_times({tp0: -1})
        assert c.assignment() == set()  # look-ups assign nothing
        assert topic in await c.topics()
        assert c.partitions_for_topic(topic) == {0, 1}
        assert c.partitions_for_topic(unique("nope")) is None


async def test_records_deserializers_and_aiokafka_fields(
    cluster: DevCluster, admin: AdminClient
) -> None:
    topic = unique("ser")
    await admin.create_topics([NewTopic(topic, 1, 3)])
    async with AIOKafkaProducer(
        bootstrap_servers=cluster.bootstrap,
        key_serializer=lambda k: k.encode() if k is not None else None,
        value_serializer=lambda v: json.dumps(v).encode(),
    ) as p:
        meta = await p.send_and_wait(
            topic, {"n": 1}, key="a", headers=[("h", b"1")], timestamp_ms=BASE_TS
        )
        assert (meta.timestamp, meta.timestamp_type, meta.offset) == (BASE_TS, 0, 0)
        batch = p.create_batch()
        for i in range(3):
            assert batch.append(key=f"b{i}", value={"n": i}, timestamp=BASE_TS + i) is not None
        assert batch.record_count() == 3
        first = await (await p.send_batch(batch, topic, partition=0))
        assert (first.offset, first.record_count) == (1, 3)
        await p.send_and_wait(topic, None, key=None)  # the serializer sees None: json "null"
    c = AIOKafkaConsumer(
        bootstrap_servers=cluster.bootstrap,
        key_deserializer=lambda k: k.decode() if k is not None else None,
        value_deserializer=lambda v: json.loads(v) if v is not None else None,
        auto_offset_reset="earliest",
    )
    await c.start()
    try:
        c.assign([TopicPartition(topic, 0)])
        got = []
        while len(got) < 5:
            for recs in (await c.getmany(timeout_ms=2000)).values():
                got.extend(recs)
    finally:
        await c.stop()
    r = got[0]
    assert (r.key, r.value, r.timestamp, r.timestamp_ms, r.checksum) == (
        "a",
        {"n": 1},
        BASE_TS,
        BASE_TS,
        None,
    )
    assert (r.serialized_key_size, r.serialized_value_size, r.headers) == (1, 8, (("h", b"1"),))
    assert [x.key for x in got[1:4]] == ["b0", "b1", "b2"] and got[3].timestamp == BASE_TS + 2
    assert (got[4].key, got[4].value, got[4].serialized_key_size) == (None, None, -1)


async def test_a_deserializer_that_raises_does_so_from_getmany_and_the_record_stays_next(
    cluster: DevCluster, admin: AdminClient
) -> None:
    topic = unique("poison")
    await admin.create_topics([NewTopic(topic, 1, 3)])
    async with Producer(cluster.bootstrap) as p:
        for v in (b"1", b"oops", b"3"):
            await p.send_and_wait(topic, v, partition=0)
    tp = TopicPartition(topic, 0)
    async with Consumer(cluster.bootstrap, value_deserializer=lambda v: int(v)) as c:
        c.assign([tp])
        c.seek(tp, 0)
        first = await c.getone()
        assert first.value == 1
        with pytest.raises(ValueError, match="oops"):
            await c.getmany(timeout_ms=2000)
        assert await c.position(tp) == 1  # the poison pill is still next
        c.seek(tp, 2)
        assert (await c.getone()).value == 3


async def test_auto_offset_reset_none_and_seek_to_committed(
    cluster: DevCluster, admin: AdminClient
) -> None:
    topic, group = unique("none"), unique("g")
    await admin.create_topics([NewTopic(topic, 1, 3)])
    await fill(cluster.bootstrap, topic, 4)
    tp = TopicPartition(topic, 0)
    async with Consumer(cluster.bootstrap, group_id=group, auto_offset_reset="none") as c:
        c.assign([tp])
        with pytest.raises(NoOffsetForPartitionError, match="no committed offset"):
            await c.getmany(timeout_ms=500)
        await c.commit({tp: (2, "from the test")})
        assert (await c.committed_offsets([tp]))[tp].metadata == "from the test"
        assert (await c.getone()).offset == 2
        c.seek(tp, 0)
        assert await c.seek_to_committed() == {tp: 2}
        assert await c.position(tp) == 2
        assert c.highwater(tp) == c.last_stable_offset(tp) == 4
        assert c.last_poll_timestamp(tp) is not None


async def test_pattern_subscription_follows_new_topics(
    cluster: DevCluster, admin: AdminClient
) -> None:
    prefix = unique("pat")
    await admin.create_topics([NewTopic(f"{prefix}-a", 1, 3), NewTopic(f"other-{prefix}", 1, 3)])
    await fill(cluster.bootstrap, f"{prefix}-a", 2)
    await fill(cluster.bootstrap, f"other-{prefix}", 2)
    seen: set[str] = set()
    async with Consumer(
        cluster.bootstrap,
        group_id=unique("g"),
        auto_offset_reset="earliest",
        metadata_max_age_ms=300,
    ) as c:
        c.subscribe(pattern=f"{prefix}-.*")

        def read_until(topic: str) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                for tp in await c.getmany(timeout_ms=200):
                    seen.add(tp.topic)
                return topic in seen

            return check

        await until(read_until(f"{prefix}-a"), 30, "the first topic's records")
        await admin.create_topics([NewTopic(f"{prefix}-b", 1, 3)])
        await fill(cluster.bootstrap, f"{prefix}-b", 2)
        await until(read_until(f"{prefix}-b"), 30, "the new topic's records")
        assert c.subscription() == {f"{prefix}-a", f"{prefix}-b"}
        assert f"other-{prefix}" not in seen


async def test_subscribe_without_a_group_reads_every_partition(
    cluster: DevCluster, admin: AdminClient
) -> None:
    topic = unique("nog")
    await admin.create_topics([NewTopic(topic, 3, 3)])
    for p in range(3):
        await fill(cluster.bootstrap, topic, 1, partition=p)
    c = AIOKafkaConsumer(topic, bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest")
    await c.start()
    try:
        assert c.assignment() == {TopicPartition(topic, p) for p in range(3)}
        got = 0
        deadline = time.monotonic() + 20
        while got < 3 and time.monotonic() < deadline:
            got += sum(len(r) for r in (await c.getmany(timeout_ms=500)).values())
        assert got == 3
    finally:
        await c.stop()


async def test_unsubscribe_leaves_the_group_and_commits(
    cluster: DevCluster, admin: AdminClient
) -> None:
    topic, group = unique("unsub"), unique("g")
    await admin.create_topics([NewTopic(topic, 2, 3)])
    await fill(cluster.bootstrap, topic, 3, partition=0)
    a = AIOKafkaConsumer(
        topic,
        bootstrap_servers=cluster.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        session_timeout_ms=30_000,
    )
    await a.start()
    b = Consumer(cluster.bootstrap, group_id=group, session_timeout_ms=30_000)
    try:
        assert len(a.assignment()) == 2
        got = 0
        while got < 3:
            got += sum(len(r) for r in (await a.getmany(timeout_ms=1000)).values())
        a.unsubscribe()
        assert a.assignment() == set() and a.subscription() == set()
        await b.start()
        b.subscribe([topic])
        # a left the group (no 30 s session to wait out), so b holds both partitions at once.
        await until(lambda: _len_is(b, 2), 15, "the remaining member to hold both partitions")
        assert await b.committed(TopicPartition(topic, 0)) == 3  # a committed what it read
        a.subscribe([topic])  # and may come back
    finally:
        await a.stop()
        await b.stop()


async def _len_is(c: Consumer, n: int) -> bool:
    await c.getmany(timeout_ms=100)
    return len(c.assignment()) == n


def test_a_partitioner_of_either_shape_is_accepted() -> None:
    """aiokafka calls partitioner(key, all_partitions, available); liferaft adds the topic."""
    from client.producer import _adapt_partitioner

    ours = Producer("a:1", partitioner=lambda topic, key, parts, avail: parts[0]).partitioner
    theirs = Producer("a:1", partitioner=lambda key, parts, avail: parts[-1]).partitioner
    assert ours("t", b"k", (0, 1, 2), ()) == 0
    assert theirs("t", b"k", (0, 1, 2), ()) == 2
    assert _adapt_partitioner(None) is None
