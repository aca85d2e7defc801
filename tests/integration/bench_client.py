"""Throughput of the Python client on a local three-node cluster: the producer with batching
(1 KiB records, acks=all, idempotent) and a consumer reading them back.

    python -m tests.integration.bench_client --records 100000 [--compression zstd]

Starts its own cluster in a temporary directory (real node processes), prints one line per
figure and a JSON summary. A measurement, not a test: nothing asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from client import AdminClient, Consumer, Producer, TopicPartition
from liferaft.launcher import DevCluster, free_port_block


async def run(
    records: int, size: int, partitions: int, compression: str | None
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        dev = DevCluster.create(Path(tmp), 3, free_port_block(3))
        dev.start()
        try:
            dev.wait_healthy(60)
            async with AdminClient(dev.bootstrap) as admin:
                await admin.create_topic("bench", partitions, 3)
            value = os.urandom(size // 2).hex().encode()[:size]
            async with Producer(
                dev.bootstrap, acks="all", linger_ms=5, compression_type=compression
            ) as producer:
                t0 = time.perf_counter()
                for i in range(records):
                    await producer.send("bench", value, key=b"%d" % (i % 1000))
                await producer.flush()
                produce_s = time.perf_counter() - t0
            tps = [TopicPartition("bench", p) for p in range(partitions)]
            async with Consumer(
                dev.bootstrap, auto_offset_reset="earliest", max_poll_records=10_000
            ) as consumer:
                consumer.assign(tps)
                got = 0
                t0 = time.perf_counter()
                while got < records:
                    for recs in (await consumer.getmany(timeout_ms=1000)).values():
                        got += len(recs)
                consume_s = time.perf_counter() - t0
        finally:
            dev.stop()
    mb = records * size / 2**20
    return {
        "records": records,
        "record_bytes": size,
        "partitions": partitions,
        "compression": compression or "none",
        "produce_records_per_s": round(records / produce_s),
        "produce_mb_per_s": round(mb / produce_s, 2),
        "consume_records_per_s": round(records / consume_s),
        "consume_mb_per_s": round(mb / consume_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--record-size", type=int, default=1024)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--compression", choices=["zstd", "lz4"], default=None)
    args = parser.parse_args()
    out = asyncio.run(run(args.records, args.record_size, args.partitions, args.compression))
    print(
        f"produce: {out['produce_records_per_s']} records/s, {out['produce_mb_per_s']} MiB/s; "
        f"consume: {out['consume_records_per_s']} records/s, {out['consume_mb_per_s']} MiB/s"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
