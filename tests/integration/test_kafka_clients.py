"""Unmodified Kafka clients and tools against a real three-node liferaft cluster (issue 15).

kcat (librdkafka, Debian's), confluent-kafka (librdkafka 2.x), kafka-python and aiokafka each
read metadata, create a topic, produce with acks=all and idempotence, and consume from the
beginning; a record written by kcat is read by liferaft's own client and the other way round;
bad frames close only their connection. One cluster serves the whole file (the tests use
their own topics); every wait is bounded.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from client import (
    AdminClient,
    Consumer,
    OffsetOutOfRangeError,
    Producer,
    TopicPartition,
    UnknownTopicOrPartitionError,
)
from liferaft.launcher import DevCluster
from tests.integration.closing import KafkaClients

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
needs_kcat = pytest.mark.skipif(KCAT is None, reason="kcat is not installed (apt-get install kcat)")


def kafka_bootstrap(dev: DevCluster) -> str:
    return dev.kafka_bootstrap


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_with_kafka_python(dev: DevCluster, name: str, partitions: int = 3) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap(dev), request_timeout_ms=20_000)
    try:
        result = admin.create_topics([NewTopic(name, partitions, 3)])
        assert [t["error_code"] for t in as_dict(result)["topics"]] == [0], result
    finally:
        admin.close()


def as_dict(response: object) -> dict[str, Any]:
    """kafka-python 3 answers admin calls with dicts; 2.x with response objects."""
    return response if isinstance(response, dict) else response.to_object()  # type: ignore[attr-defined]


def kcat(*args: str, stdin: str | None = None, timeout: float = 30) -> str:
    assert KCAT is not None
    done = subprocess.run(
        [KCAT, *args], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- metadata ----------------------------------------------------------------------------------
@needs_kcat
def test_kcat_lists_brokers_at_their_kafka_addresses(cluster: DevCluster) -> None:
    topic = unique("meta")
    create_with_kafka_python(cluster, topic, partitions=2)
    first = next(iter(cluster.nodes.values()))
    meta = json.loads(kcat("-b", first.kafka_address, "-L", "-J", "-t", topic))
    brokers = {b["id"]: b["name"] for b in meta["brokers"]}
    assert brokers == {n.node_id: n.kafka_address for n in cluster.nodes.values()}
    (t,) = meta["topics"]
    assert t["topic"] == topic and len(t["partitions"]) == 2
    for p in t["partitions"]:
        assert p["leader"] in brokers
        assert sorted(r["id"] for r in p["replicas"]) == sorted(brokers)


def test_confluent_kafka_metadata_has_topic_ids_and_the_controller(
    cluster: DevCluster, kafka_clients: KafkaClients
) -> None:
    from confluent_kafka.admin import AdminClient as CkAdmin

    topic = unique("ids")
    create_with_kafka_python(cluster, topic)
    admin = kafka_clients(CkAdmin({"bootstrap.servers": kafka_bootstrap(cluster)}))
    meta = admin.list_topics(topic, timeout=20)
    assert meta.topics[topic].error is None
    assert len(meta.topics[topic].partitions) == 3
    assert meta.controller_id in cluster.nodes
    described = admin.describe_topics(
        __import__("confluent_kafka").TopicCollection([topic]), request_timeout=20
    )[topic].result(timeout=20)
    assert described.topic_id is not None and str(described.topic_id) != "AAAAAAAAAAAAAAAAAAAAAA"


# -- produce and consume, per client ---------------------------------------------------------
@needs_kcat
def test_kcat_produces_idempotently_and_consumes_from_the_beginning(cluster: DevCluster) -> None:
    topic = unique("kcat")
    create_with_kafka_python(cluster, topic)
    b = kafka_bootstrap(cluster)
    lines = [f"k{i}:v{i}" for i in range(50)]
    kcat(
        "-b", b, "-P", "-t", topic, "-K:", "-X", "enable.idempotence=true", "-X", "acks=all",
        stdin="\n".join(lines) + "\n",
    )  # fmt: skip
    out = kcat("-b", b, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p %o %k=%s\\n")
    got = [line.split() for line in out.splitlines() if line]
    assert sorted(kv for _, _, kv in got) == sorted(line.replace(":", "=") for line in lines)
    per_partition: dict[str, list[int]] = {}
    for p, o, _ in got:
        per_partition.setdefault(p, []).append(int(o))
    for offsets in per_partition.values():
        assert offsets == list(range(len(offsets))), "offsets are dense from 0"


def test_kafka_python_idempotent_producer_and_consumer(
    cluster: DevCluster, kafka_clients: KafkaClients
) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    topic = unique("kp")
    create_with_kafka_python(cluster, topic)
    b = kafka_bootstrap(cluster)
    producer = kafka_clients(
        KafkaProducer(bootstrap_servers=b, acks="all", enable_idempotence=True)
    )
    futures = [producer.send(topic, key=b"k%d" % (i % 7), value=b"v%d" % i) for i in range(200)]
    producer.flush(30)
    acked = [f.get(timeout=30) for f in futures]
    producer.close()
    consumer = kafka_clients(
        KafkaConsumer(
            topic, bootstrap_servers=b, auto_offset_reset="earliest", consumer_timeout_ms=5000
        )
    )
    got = {(m.partition, m.offset): m.value for m in consumer}
    consumer.close()
    assert {(a.partition, a.offset) for a in acked} == set(got)
    assert sorted(got.values()) == sorted(b"v%d" % i for i in range(200))
    # One key's records stay in order (murmur2 puts them on one partition).
    by_key: dict[int, list[int]] = {}
    for _where, v in sorted(got.items()):  # in offset order per partition
        by_key.setdefault(int(v[1:]) % 7, []).append(int(v[1:]))
    assert all(vs == sorted(vs) for vs in by_key.values())


def test_confluent_kafka_idempotent_producer_and_consumer(
    cluster: DevCluster, kafka_clients: KafkaClients
) -> None:
    import confluent_kafka as ck

    topic = unique("ck")
    create_with_kafka_python(cluster, topic)
    b = kafka_bootstrap(cluster)
    delivered: list[tuple[int, int]] = []

    def on_delivery(err: object, msg: ck.Message) -> None:
        assert err is None, err
        delivered.append((msg.partition(), msg.offset()))

    producer = kafka_clients(
        ck.Producer({"bootstrap.servers": b, "enable.idempotence": True, "acks": "all"})
    )
    for i in range(300):
        producer.produce(topic, key=b"k%d" % i, value=b"v%d" % i, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert len(delivered) == 300
    consumer = kafka_clients(
        ck.Consumer({"bootstrap.servers": b, "group.id": unique("g"), "enable.auto.commit": False})
    )
    consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(3)])
    got: dict[tuple[int, int], bytes] = {}
    deadline = time.monotonic() + 30
    while len(got) < 300 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got[(msg.partition(), msg.offset())] = msg.value()
    consumer.close()
    assert set(got) == set(delivered)
    assert sorted(got.values()) == sorted(b"v%d" % i for i in range(300))


async def test_aiokafka_idempotent_producer_and_consumer(cluster: DevCluster) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = unique("aio")
    create_with_kafka_python(cluster, topic)
    b = kafka_bootstrap(cluster)
    producer = AIOKafkaProducer(bootstrap_servers=b, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        sent = [await producer.send_and_wait(topic, b"v%d" % i, key=b"k%d" % i) for i in range(100)]
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=b, auto_offset_reset="earliest")
    await consumer.start()
    got: dict[tuple[int, int], bytes | None] = {}
    try:
        deadline = time.monotonic() + 30
        while len(got) < 100 and time.monotonic() < deadline:
            for tp, msgs in (await consumer.getmany(timeout_ms=500)).items():
                for m in msgs:
                    got[(tp.partition, m.offset)] = m.value
    finally:
        await consumer.stop()
    assert set(got) == {(m.partition, m.offset) for m in sent}


def test_list_offsets_earliest_latest_and_by_time(
    cluster: DevCluster, kafka_clients: KafkaClients
) -> None:
    import confluent_kafka as ck

    topic = unique("lo")
    create_with_kafka_python(cluster, topic, partitions=1)
    b = kafka_bootstrap(cluster)
    producer = kafka_clients(ck.Producer({"bootstrap.servers": b, "enable.idempotence": True}))
    for i in range(10):
        producer.produce(topic, value=b"%d" % i, timestamp=1_000_000 + i * 1000)
    assert producer.flush(30) == 0
    consumer = kafka_clients(ck.Consumer({"bootstrap.servers": b, "group.id": unique("g")}))
    low, high = consumer.get_watermark_offsets(ck.TopicPartition(topic, 0), timeout=20)
    assert (low, high) == (0, 10)
    (found,) = consumer.offsets_for_times([ck.TopicPartition(topic, 0, 1_004_500)], timeout=20)
    assert found.error is None and found.offset == 5
    (after,) = consumer.offsets_for_times([ck.TopicPartition(topic, 0, 9_000_000)], timeout=20)
    assert after.offset == -1  # no record that late: the end, as Kafka answers
    consumer.close()


# -- one broker underneath ---------------------------------------------------------------------
@needs_kcat
async def test_kcat_and_the_liferaft_client_read_each_other(cluster: DevCluster) -> None:
    topic = unique("both")
    async with AdminClient(cluster.bootstrap) as admin:
        await admin.create_topic(topic, 1, 3)
    b = kafka_bootstrap(cluster)
    await asyncio.to_thread(kcat, "-b", b, "-P", "-t", topic, "-p", "0", stdin="from-kcat\n")
    async with Producer(cluster.bootstrap) as producer:
        meta = await producer.send_and_wait(topic, b"from-liferaft", partition=0)
    assert meta.offset == 1
    tp = TopicPartition(topic, 0)
    async with Consumer(cluster.bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        values: list[bytes | None] = []
        deadline = time.monotonic() + 20
        while len(values) < 2 and time.monotonic() < deadline:
            for rec in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                values.append(rec.value)
    assert values == [b"from-kcat", b"from-liferaft"]
    out = await asyncio.to_thread(
        kcat, "-b", b, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o %s\\n"
    )
    assert out.splitlines() == ["0 from-kcat", "1 from-liferaft"]


def test_topics_created_and_deleted_by_kafka_admin_are_the_clusters(cluster: DevCluster) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = unique("adm")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap(cluster), request_timeout_ms=20_000)
    try:
        admin.create_topics([NewTopic(topic, 2, 3)])
        assert topic in admin.list_topics()
        bad = as_dict(admin.create_topics([NewTopic(topic, 2, 3)], raise_errors=False))
        assert bad["topics"][0]["error_code"] == 36  # TOPIC_ALREADY_EXISTS
        admin.delete_topics([topic])
        deadline = time.monotonic() + 10
        while topic in admin.list_topics() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert topic not in admin.list_topics()
    finally:
        admin.close()


# -- bad input ---------------------------------------------------------------------------------
def _send_frame(address: str, payload: bytes, size: int | None = None) -> bytes:
    """Send one frame; return what came back before the node closed or 2 s passed."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(struct.pack(">i", len(payload) if size is None else size) + payload)
        s.settimeout(2)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except TimeoutError:
            pass
        return got


def test_garbage_and_oversized_frames_close_only_their_connection(
    cluster: DevCluster, kafka_clients: KafkaClients
) -> None:
    address = next(iter(cluster.nodes.values())).kafka_address
    import random

    rng = random.Random(15)
    cases = [
        (b"", None),  # an empty frame
        (b"\x00\x03", None),  # shorter than any header
        (struct.pack(">hhi", 999, 0, 1), None),  # an API that does not exist
        (struct.pack(">hhi", 3, 99, 1) + b"\0\0", None),  # a Metadata version not served
        (struct.pack(">hhi", 3, 9, 1) + b"\xff" * 40, None),  # Metadata v9 with a garbage body
        (struct.pack(">hhi", 0, 9, 1) + b"\x00\x00" + b"\xff\xff\xff\x7f" * 8, None),
        # Arrays claiming 2^35 entries: kio's native reader would abort the node (frame_guard.py)
        (struct.pack(">hhi", 3, 9, 1) + b"\x00\x01c\x00" + b"\xf0\xff\xff\xff\x7f", None),
        (b"x" * 16, 1 << 30),  # a size far over the limit
        (b"x" * 16, -5),  # a negative size
    ]
    cases += [(bytes(rng.randrange(256) for _ in range(rng.randrange(8, 200))), None)] * 20
    for payload, size in cases:
        assert _send_frame(address, payload, size) == b"", (payload[:20], size)
    # Fuzz the bodies of real APIs and versions: never an answer that is not a whole frame.
    for _ in range(200):
        key = rng.choice([0, 1, 2, 3, 10, 19, 20, 22])
        version = rng.randrange(0, 6)
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
        got = _send_frame(address, struct.pack(">hhi", key, version, 7) + body)
        if got:
            assert struct.unpack(">i", got[:4])[0] == len(got) - 4
    # The node still serves everyone else.
    from confluent_kafka.admin import AdminClient as CkAdmin

    meta = kafka_clients(CkAdmin({"bootstrap.servers": address})).list_topics(timeout=10)
    assert set(meta.brokers) == set(cluster.nodes)


def test_an_api_versions_request_newer_than_served_gets_the_table(cluster: DevCluster) -> None:
    from kio.schema.api_versions.v0.response import ApiVersionsResponse
    from kio.serial import entity_reader

    address = next(iter(cluster.nodes.values())).kafka_address
    # ApiVersions v9 (no such version yet): header v2, client id "t", no tagged fields, then
    # whatever a future body is.
    frame = struct.pack(">hhih", 18, 9, 42, 1) + b"t" + b"\x00" + b"\x00\x00"
    got = _send_frame(address, frame)
    assert struct.unpack(">ii", got[:8]) == (len(got) - 4, 42)
    resp, _ = entity_reader(ApiVersionsResponse)(got[8:], 0)
    assert resp.error_code == 35  # UNSUPPORTED_VERSION
    served = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}
    assert served[18] == (0, 3) and 0 in served and 1 in served


def test_confluent_admin_describes_topic_configs_and_the_cluster(
    cluster: DevCluster, kafka_clients: KafkaClients
) -> None:
    from confluent_kafka.admin import AdminClient as CkAdmin
    from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType

    topic = unique("cfg")
    from kafka.admin import KafkaAdminClient, NewTopic

    admin_kp = KafkaAdminClient(bootstrap_servers=kafka_bootstrap(cluster))
    try:
        admin_kp.create_topics([NewTopic(topic, 1, 3, topic_configs={"retention.ms": "3600000"})])
    finally:
        admin_kp.close()
    admin = kafka_clients(CkAdmin({"bootstrap.servers": kafka_bootstrap(cluster)}))
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource], request_timeout=20)[resource].result()
    assert configs["retention.ms"].value == "3600000"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["max.message.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    missing = ConfigResource(ResourceType.TOPIC, unique("none"))
    with pytest.raises(Exception, match="UNKNOWN_TOPIC_OR_PART"):
        admin.describe_configs([missing], request_timeout=20)[missing].result()
    described = admin.describe_cluster(request_timeout=20).result()
    assert described.cluster_id == cluster.cluster_id
    assert {n.id: f"{n.host}:{n.port}" for n in described.nodes} == {
        n.node_id: n.kafka_address for n in cluster.nodes.values()
    }
    assert described.controller.id in cluster.nodes


def test_kafka_admin_adds_partitions_that_take_records(
    cluster: DevCluster, kafka_clients: KafkaClients
) -> None:
    import confluent_kafka as ck
    from confluent_kafka.admin import AdminClient as CkAdmin
    from confluent_kafka.admin import NewPartitions

    topic = unique("grow")
    create_with_kafka_python(cluster, topic, partitions=1)
    b = kafka_bootstrap(cluster)
    admin = kafka_clients(CkAdmin({"bootstrap.servers": b}))
    admin.create_partitions([NewPartitions(topic, 3)], request_timeout=20)[topic].result()
    fewer = admin.create_partitions([NewPartitions(topic, 2)], request_timeout=20)[topic]
    with pytest.raises(ck.KafkaException, match="INVALID_PARTITIONS"):
        fewer.result()
    producer = kafka_clients(ck.Producer({"bootstrap.servers": b, "enable.idempotence": True}))
    for p in range(3):
        producer.produce(topic, value=b"p%d" % p, partition=p)
    assert producer.flush(30) == 0
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    assert sorted(meta.partitions) == [0, 1, 2]
    consumer = kafka_clients(ck.Consumer({"bootstrap.servers": b, "group.id": unique("g")}))
    for p in range(3):
        assert consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=20) == (0, 1)
    consumer.close()


def test_kafka_admins_delete_records_and_consumers_move_to_the_new_start(
    cluster: DevCluster,
    kafka_clients: KafkaClients,
) -> None:
    """DeleteRecords from confluent-kafka (librdkafka) and kafka-python: the answer is the new
    low watermark; ListOffsets earliest shows it; a group whose committed offset is now below it
    resumes at it (auto.offset.reset=earliest), as in Kafka; a bad offset changes nothing; a
    node that does not lead the partition answers NOT_LEADER_OR_FOLLOWER."""
    import confluent_kafka as ck
    import kafka
    import kafka.errors
    from confluent_kafka.admin import AdminClient as CkAdmin

    topic = unique("trim")
    create_with_kafka_python(cluster, topic, partitions=2)
    b = kafka_bootstrap(cluster)
    producer = kafka_clients(
        ck.Producer({"bootstrap.servers": b, "enable.idempotence": True, "acks": "all"})
    )
    for i in range(10):
        producer.produce(topic, value=b"v%d" % i, partition=0)
    for i in range(4):
        producer.produce(topic, value=b"w%d" % i, partition=1)
    assert producer.flush(30) == 0
    group = unique("g")
    committer = kafka_clients(
        ck.Consumer({"bootstrap.servers": b, "group.id": group, "enable.auto.commit": False})
    )
    committer.commit(offsets=[ck.TopicPartition(topic, 0, 2)], asynchronous=False)
    committer.close()

    admin = kafka_clients(CkAdmin({"bootstrap.servers": b}))
    tp0 = ck.TopicPartition(topic, 0, 6)
    (done,) = admin.delete_records([tp0], request_timeout=20).values()
    assert done.result().low_watermark == 6
    too_far = admin.delete_records([ck.TopicPartition(topic, 1, 99)], request_timeout=20)
    with pytest.raises(ck.KafkaException, match="OFFSET_OUT_OF_RANGE"):
        next(iter(too_far.values())).result()

    kp = kafka.KafkaAdminClient(bootstrap_servers=b, request_timeout_ms=20_000)
    try:
        out = kp.delete_records({kafka.TopicPartition(topic, 1): -1})
        assert out[kafka.TopicPartition(topic, 1)]["low_watermark"] == 4
        leader = admin.list_topics(topic, timeout=10).topics[topic].partitions[0].leader
        other = next(n for n in cluster.nodes if n != leader)
        with pytest.raises(kafka.errors.NotLeaderForPartitionError):
            kp.delete_records({kafka.TopicPartition(topic, 0): 8}, partition_leader_id=other)
    finally:
        kp.close()

    consumer = kafka_clients(
        ck.Consumer(
            {
                "bootstrap.servers": b,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
    )
    try:
        assert consumer.get_watermark_offsets(ck.TopicPartition(topic, 0), timeout=20) == (6, 10)
        assert consumer.get_watermark_offsets(ck.TopicPartition(topic, 1), timeout=20) == (4, 4)
        consumer.assign([ck.TopicPartition(topic, 0)])  # from the group's committed offset 2
        got: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + 30
        while len(got) < 4 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append((msg.offset(), msg.value()))
    finally:
        consumer.close()
    assert got == [(6, b"v6"), (7, b"v7"), (8, b"v8"), (9, b"v9")]


async def test_aiokafka_and_the_liferaft_admin_delete_records(cluster: DevCluster) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
    from aiokafka.structs import TopicPartition as AioTP

    topic = unique("trim-aio")
    create_with_kafka_python(cluster, topic, partitions=1)
    async with Producer(cluster.bootstrap, acks="all") as producer:
        for i in range(6):
            await producer.send_and_wait(topic, b"v%d" % i, partition=0)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap(cluster))
    await admin.start()
    try:
        lows = await admin.delete_records({AioTP(topic, 0): RecordsToDelete(before_offset=2)})
        assert lows == {AioTP(topic, 0): 2}
    finally:
        await admin.close()
    async with AdminClient(cluster.bootstrap) as ours:
        assert await ours.delete_records({(topic, 0): 4}) == {TopicPartition(topic, 0): 4}
        assert (await ours.list_offsets({(topic, 0): "earliest"}))[
            TopicPartition(topic, 0)
        ].offset == 4
        # Bad input: a clear error, and the log start stays where it was.
        with pytest.raises(OffsetOutOfRangeError, match="nothing was deleted"):
            await ours.delete_records({(topic, 0): 100})
        with pytest.raises(OffsetOutOfRangeError):
            await ours.delete_records({(topic, 0): -2})
        with pytest.raises(UnknownTopicOrPartitionError):
            await ours.delete_records({(topic, 5): 1}, timeout_ms=3_000)
        assert (await ours.list_offsets({(topic, 0): "earliest"}))[
            TopicPartition(topic, 0)
        ].offset == 4
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap(cluster), auto_offset_reset="earliest"
    )
    await consumer.start()
    got: list[tuple[int, bytes | None]] = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                got.extend((m.offset, m.value) for m in msgs)
    finally:
        await consumer.stop()
    assert got == [(4, b"v4"), (5, b"v5")]


def test_a_failed_acks0_produce_closes_the_connection(
    cluster: DevCluster, kafka_clients: KafkaClients
) -> None:
    """acks=0 gets no answer, so Kafka tells a producer its batch failed by closing the
    connection (the client reconnects and refreshes metadata); a good one stays open."""
    from confluent_kafka.admin import AdminClient as CkAdmin
    from kio.schema.produce.v9 import request as q
    from kio.schema.request_header.v2.header import RequestHeader
    from kio.serial import entity_writer

    from liferaft_proto.records import Record, build_batch

    topic = unique("acks0")
    create_with_kafka_python(cluster, topic, partitions=1)
    meta = kafka_clients(CkAdmin({"bootstrap.servers": kafka_bootstrap(cluster)})).list_topics(
        topic, timeout=10
    )
    leader = meta.topics[topic].partitions[0].leader
    batch = build_batch([Record(key=None, value=b"x")])

    def produce_acks0(address: str) -> bytes:
        request = q.ProduceRequest(
            transactional_id=None,
            acks=0,
            timeout=__import__("datetime").timedelta(seconds=5),
            topic_data=(
                q.TopicProduceData(
                    name=topic, partition_data=(q.PartitionProduceData(index=0, records=batch),)
                ),
            ),
        )
        buf = io.BytesIO()
        entity_writer(RequestHeader)(
            buf,
            RequestHeader(
                request_api_key=0, request_api_version=9, correlation_id=1, client_id="t"
            ),
        )
        entity_writer(q.ProduceRequest)(buf, request)
        return _send_frame(address, buf.getvalue())

    follower = next(n for n in cluster.nodes.values() if n.node_id != leader)
    assert produce_acks0(follower.kafka_address) == b""
    text = cluster.log_path(follower.node_id).read_text(errors="replace")
    assert "acks=0 produce failed on 1 partitions" in text
    # To the leader: written, no answer, and the connection stays open until the client goes.
    assert produce_acks0(cluster.nodes[leader].kafka_address) == b""
    import confluent_kafka as ck

    consumer = kafka_clients(
        ck.Consumer({"bootstrap.servers": kafka_bootstrap(cluster), "group.id": "x"})
    )
    assert consumer.get_watermark_offsets(ck.TopicPartition(topic, 0), timeout=20) == (0, 1)
    consumer.close()


def test_kafka_admin_alters_topic_configs_and_the_partitions_follow(
    cluster: DevCluster, kafka_clients: KafkaClients
) -> None:
    import confluent_kafka as ck
    from confluent_kafka.admin import AdminClient as CkAdmin
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    topic = unique("alter")
    create_with_kafka_python(cluster, topic, partitions=1)
    b = kafka_bootstrap(cluster)
    admin = kafka_clients(CkAdmin({"bootstrap.servers": b}))

    def alter(*entries: ConfigEntry) -> None:
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=list(entries))
        admin.incremental_alter_configs([resource], request_timeout=20)[resource].result()

    def described() -> dict[str, str]:
        resource = ConfigResource(ResourceType.TOPIC, topic)
        got = admin.describe_configs([resource], request_timeout=20)[resource].result()
        return {k: v.value for k, v in got.items()}

    alter(ConfigEntry("max.message.bytes", "2048", incremental_operation=AlterConfigOpType.SET))
    assert described()["max.message.bytes"] == "2048"
    with pytest.raises(ck.KafkaException, match="INVALID_CONFIG"):
        alter(ConfigEntry("retention.ms", "-7", incremental_operation=AlterConfigOpType.SET))
    assert described()["retention.ms"] == "604800000"  # unchanged by the refused request
    # The leader now refuses a batch over the new limit.
    producer = kafka_clients(ck.Producer({"bootstrap.servers": b, "enable.idempotence": True}))
    errors: list[str] = []
    producer.produce(topic, value=b"x" * 4000, on_delivery=lambda e, m: errors.append(str(e)))
    producer.flush(30)
    assert errors and "MSG_SIZE_TOO_LARGE" in errors[0]
    alter(ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE))
    assert described()["max.message.bytes"] == str(1 << 20)
    errors.clear()
    producer.produce(topic, value=b"x" * 4000, on_delivery=lambda e, m: errors.append(str(e)))
    producer.flush(30)
    assert errors == ["None"]


# Last in the file: the tests above ran on this cluster.
def test_the_node_log_shows_no_handler_failure(cluster: DevCluster) -> None:
    for node_id in cluster.nodes:
        text = Path(cluster.log_path(node_id)).read_text(errors="replace")
        assert "failed; closing the connection" not in text, text[-3000:]
