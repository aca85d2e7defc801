"""Throughput of confluent-kafka (librdkafka) through the Kafka listener on a local three-node
cluster: the idempotent producer (1 KiB records, acks=all, linger 5 ms), then a consumer reading
them back; and, on the same cluster, `liferaft bench produce` for the liferaft client beside it.

    python -m tests.integration.bench_kafka --records 200000 --runs 3

Starts its own cluster in a temporary directory (real node processes), prints one line per run
and a JSON summary of medians. A measurement, not a test: nothing asserts on speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from liferaft.launcher import DevCluster, free_port_block


def produce(bootstrap: str, topic: str, records: int, size: int) -> float:
    import confluent_kafka as ck

    producer = ck.Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "batch.size": 1 << 20,
        }
    )
    value = b"x" * size
    failed: list[object] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failed.append(err)

    start = time.perf_counter()
    for i in range(records):
        while True:
            try:
                producer.produce(topic, value=value, key=b"%d" % i, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(120) != 0 or failed:
        raise SystemExit(f"produce failed: {failed[:3]}")
    return records * size / (time.perf_counter() - start) / 1e6


def consume(bootstrap: str, topic: str, records: int, partitions: int) -> float:
    import confluent_kafka as ck

    consumer = ck.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "fetch.max.bytes": 64 << 20}
    )
    consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(partitions)])
    got = nbytes = 0
    start = time.perf_counter()
    while got < records:
        for msg in consumer.consume(10_000, 1.0):
            if msg.error() is None:
                got += 1
                nbytes += len(msg.value())
    elapsed = time.perf_counter() - start
    consumer.close()
    return nbytes / elapsed / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--record-size", type=int, default=1024)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from kafka.admin import KafkaAdminClient, NewTopic

    with tempfile.TemporaryDirectory() as tmp:
        dev = DevCluster.create(Path(tmp), 3, free_port_block(3))
        dev.start()
        try:
            dev.wait_healthy(60)
            out: dict[str, list[float]] = {"kafka_produce": [], "kafka_consume": [], "grpc": []}
            for run in range(args.runs):
                topic = f"bench-{uuid.uuid4().hex[:6]}"
                admin = KafkaAdminClient(bootstrap_servers=dev.kafka_bootstrap)
                admin.create_topics([NewTopic(topic, args.partitions, 3)])
                admin.close()
                mbs = produce(dev.kafka_bootstrap, topic, args.records, args.record_size)
                cmbs = consume(dev.kafka_bootstrap, topic, args.records, args.partitions)
                ours = subprocess.run(
                    [sys.executable, "-m", "node", "bench", "produce", "--bootstrap",
                     dev.bootstrap, "--records", str(args.records), "--record-size",
                     str(args.record_size), "--partitions", str(args.partitions), "--json"],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                grpc_mbs = float(json.loads(ours.stdout)["mb_per_s"])
                out["kafka_produce"].append(mbs)
                out["kafka_consume"].append(cmbs)
                out["grpc"].append(grpc_mbs)
                print(
                    f"run {run + 1}: confluent-kafka produce {mbs:.1f} MB/s, consume "
                    f"{cmbs:.1f} MB/s; liferaft client produce {grpc_mbs:.1f} MB/s"
                )
            print(json.dumps({k: round(statistics.median(v), 1) for k, v in out.items()}))
        finally:
            dev.stop()


if __name__ == "__main__":
    main()
