"""A Kafka client across a partition leader's death (issue 15): confluent-kafka's idempotent
producer keeps producing while the leader is killed with SIGKILL, and every acknowledged record
is read back exactly once, at the offset it was acknowledged at. The client fails over on its
own, from NOT_LEADER_OR_FOLLOWER, a dropped connection and fresh metadata, as with Kafka.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from node.devcluster import DevCluster, free_port_block
from tests.integration.test_kafka_clients import create_with_kafka_python, kafka_bootstrap


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    dev = DevCluster.create(tmp_path_factory.mktemp("kafka-failover"), 3, free_port_block(3), [])
    dev.start()
    try:
        dev.wait_healthy(60)
        yield dev
    finally:
        dev.stop()


def leader_of(bootstrap: str, topic: str) -> int:
    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return int(meta.topics[topic].partitions[0].leader)


def test_idempotent_confluent_producer_survives_a_leader_kill(cluster: DevCluster) -> None:
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

    producer = ck.Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 60_000,
            "topic.metadata.refresh.interval.ms": 1000,
        }
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

    consumer = ck.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False}
    )
    consumer.assign([ck.TopicPartition(topic, 0, ck.OFFSET_BEGINNING)])
    log: list[tuple[int, bytes]] = []
    end = max(acked.values()) + 1
    deadline = time.monotonic() + 60
    while (not log or log[-1][0] < end - 1) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            log.append((msg.offset(), msg.value()))
    consumer.close()
    offsets = [o for o, _ in log]
    assert offsets == list(range(len(offsets))), "offsets are dense from 0"
    where: dict[bytes, list[int]] = {}
    for offset, value in log:
        where.setdefault(value, []).append(offset)
    assert not [v for v in acked if v not in where], "acknowledged records lost"
    assert not [v for v, o in where.items() if len(o) > 1], "records written twice"
    assert all(where[v] == [o] for v, o in acked.items()), "records not at their acked offset"
