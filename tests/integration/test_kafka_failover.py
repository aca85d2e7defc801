"""A Kafka client across a partition leader's death (issue 15): confluent-kafka's idempotent
producer keeps producing while the leader is killed with SIGKILL, and every acknowledged record
is read back exactly once, at the offset it was acknowledged at. The client fails over on its
own, from NOT_LEADER_OR_FOLLOWER, a dropped connection and fresh metadata, as with Kafka.
"""

from __future__ import annotations

import io
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liferaft.launcher import DevCluster
from tests.clusters import running_cluster
from tests.integration.closing import KafkaClients
from tests.integration.test_kafka_clients import create_with_kafka_python, kafka_bootstrap


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[DevCluster]:
    """A fresh cluster for each test: each kills or cuts off a partition leader."""
    with running_cluster(tmp_path) as dev:
        yield dev


def leader_of(bootstrap: str, topic: str) -> int:
    from confluent_kafka.admin import AdminClient

    with KafkaClients() as clients:
        admin = clients(AdminClient({"bootstrap.servers": bootstrap}))
        meta = admin.list_topics(topic, timeout=10)
    return int(meta.topics[topic].partitions[0].leader)


def test_idempotent_confluent_producer_survives_a_leader_kill(
    cluster: DevCluster, kafka_clients: KafkaClients
) -> None:
    import confluent_kafka as ck

    topic = "failover"
    create_with_kafka_python(cluster, topic, partitions=1)
    bootstrap = kafka_bootstrap(cluster)
    acked: dict[bytes, int] = {}
    failed: list[str] = []
    lock = threading.Lock()

    def on_delivery(err: ck.KafkaError | None, msg: ck.Message) -> None:
        with lock:
            if err is None:
                acked[msg.value()] = msg.offset()
            else:
                failed.append(str(err))

    producer = kafka_clients(
        ck.Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 60_000,
                "topic.metadata.refresh.interval.ms": 1000,
            }
        )
    )
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            try:
                producer.produce(topic, value=b"%d" % i, on_delivery=on_delivery)
                i += 1
            except BufferError:
                pass
            producer.poll(0.002)

    worker = threading.Thread(target=produce)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while len(acked) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acked) >= 300, "the producer did not get going"
        victim = leader_of(bootstrap, topic)
        cluster.kill(victim)  # SIGKILL: no hand-off
        before = len(acked)
        deadline = time.monotonic() + 60
        while len(acked) < before + 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acked) >= before + 300, "no records were acknowledged after the kill"
    finally:
        stop.set()
        worker.join(10)
    assert producer.flush(60) == 0
    assert not failed, failed[:5]
    assert leader_of(bootstrap, topic) != victim

    consumer = kafka_clients(
        ck.Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False}
        )
    )
    consumer.assign([ck.TopicPartition(topic, 0, ck.OFFSET_BEGINNING)])
    log: list[tuple[int, bytes]] = []
    epochs: dict[int, int] = {}  # offset -> the leader epoch stamped in its batch
    end = max(acked.values()) + 1
    deadline = time.monotonic() + 60
    while (not log or log[-1][0] < end - 1) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            log.append((msg.offset(), msg.value()))
            epochs[msg.offset()] = msg.leader_epoch()
    consumer.close()
    offsets = [o for o, _ in log]
    assert offsets == list(range(len(offsets))), "offsets are dense from 0"
    where: dict[bytes, list[int]] = {}
    for offset, value in log:
        where.setdefault(value, []).append(offset)
    assert not [v for v in acked if v not in where], "acknowledged records lost"
    assert not [v for v, o in where.items() if len(o) > 1], "records written twice"
    assert all(where[v] == [o] for v, o in acked.items()), "records not at their acked offset"

    # The batches carry the epoch of the leader that wrote them; the kill moved to a later one,
    # and OffsetForLeaderEpoch says where each epoch ended: where the next one's first batch is.
    seen = sorted(set(epochs.values()))
    assert len(seen) >= 2 and all(e > 0 for e in seen), seen
    hw = len(log)
    for epoch in seen:
        later = [o for o, e in epochs.items() if e > epoch]
        expected_end = min(later) if later else hw
        assert offset_for_leader_epoch(cluster, topic, epoch) == (epoch, expected_end)


def partition_metadata(address: str, topic: str) -> Any:
    from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
    from kio.schema.metadata.v12.response import MetadataResponse

    md = kafka_request(
        address,
        MetadataRequest(
            topics=(MetadataRequestTopic(topic_id=None, name=topic),),
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False,
        ),
        MetadataResponse,
    )
    return md.topics[0].partitions[0]


def test_a_cut_off_leader_sends_kafka_clients_to_another_replica(cluster: DevCluster) -> None:
    """The old leader of a partition, cut off from the others (they are paused here), steps
    down and knows no leader: its Metadata names another replica, epoch -1 (unknown), so a
    client that only talks to it goes there (node/kafka/cut_off.py). It used to answer leader
    -1 until the fault healed, and librdkafka kept asking it. Once healed it names the real
    leader with its epoch again."""
    from kio.schema.errors import ErrorCode as KafkaError

    topic = "cutoff"
    create_with_kafka_python(cluster, topic, partitions=1)
    victim = leader_of(kafka_bootstrap(cluster), topic)
    address = cluster.node(victim).kafka_address
    others = [n for n in cluster.nodes if n != victim]
    for n in others:
        cluster.signal_node(n, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 30
        part = partition_metadata(address, topic)
        while part.leader_id not in others and time.monotonic() < deadline:
            time.sleep(0.2)
            part = partition_metadata(address, topic)
        assert part.leader_id in others, part
        assert part.leader_epoch == -1 and part.error_code == KafkaError.not_leader_or_follower
        assert sorted(part.replica_nodes) == sorted(cluster.nodes)
    finally:
        for n in others:
            cluster.signal_node(n, signal.SIGCONT)
    deadline = time.monotonic() + 60
    part = partition_metadata(address, topic)
    while (part.leader_epoch < 0 or part.error_code != 0) and time.monotonic() < deadline:
        time.sleep(0.2)
        part = partition_metadata(address, topic)
    assert part.error_code == 0 and part.leader_epoch > 0 and part.leader_id in cluster.nodes


def offset_for_leader_epoch(cluster: DevCluster, topic: str, epoch: int) -> tuple[int, int]:
    """Ask every live node (one leads the partition) with a request kio encodes."""
    from kio.schema.offset_for_leader_epoch.v4 import request as q
    from kio.schema.offset_for_leader_epoch.v4.response import OffsetForLeaderEpochResponse

    req = q.OffsetForLeaderEpochRequest(
        replica_id=-1,
        topics=(
            q.OffsetForLeaderTopic(
                topic=topic,
                partitions=(
                    q.OffsetForLeaderPartition(
                        partition=0, current_leader_epoch=-1, leader_epoch=epoch
                    ),
                ),
            ),
        ),
    )
    for node_id, node in cluster.nodes.items():
        if not cluster.is_running(node_id):
            continue
        resp = kafka_request(node.kafka_address, req, OffsetForLeaderEpochResponse)
        (part,) = resp.topics[0].partitions
        if part.error_code == 0:
            return int(part.leader_epoch), int(part.end_offset)
    raise AssertionError("no node answered OffsetForLeaderEpoch")


def kafka_request(address: str, request: Any, response_type: type[Any]) -> Any:
    """One request over a fresh connection, encoded and decoded by kio."""
    from kio.schema.request_header.v2.header import RequestHeader
    from kio.serial import entity_reader, entity_writer

    buf = io.BytesIO()
    header = RequestHeader(
        request_api_key=request.__api_key__,
        request_api_version=request.__version__,
        correlation_id=1,
        client_id="test",
    )
    entity_writer(RequestHeader)(buf, header)
    entity_writer(type(request))(buf, request)
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(struct.pack(">i", buf.tell()) + buf.getvalue())
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
            chunk = s.recv(65536)
            assert chunk, "the node closed the connection"
            data += chunk
    # Size, correlation id, the empty tagged fields of a flexible response header, the body.
    resp, _ = entity_reader(response_type)(data[9:], 0)
    return resp
