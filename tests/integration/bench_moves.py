"""What a throttled replica move costs produce traffic, on a local four-node cluster.

    python -m tests.integration.bench_moves --size-mb 50 --throttle-mb-s 5 --rate 100

Fills partition big-0 with --size-mb of 100 kB records, then measures acks=all produce latency
to another topic at --rate records/s: for 8 s without a move, then while big-0 moves one replica
to the fourth node at --throttle-mb-s (0: no limit). Prints the move's duration and rate and
both latency distributions. A measurement, not a test: nothing asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from client import AdminClient, Producer
from liferaft.launcher import DevCluster, free_port_block


async def latencies(producer: Producer, seconds: float, rate: int) -> list[float]:
    out: list[float] = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        t0 = time.perf_counter()
        await producer.send_and_wait("load", b"v" * 200 + b"%d" % i, partition=0)
        out.append(time.perf_counter() - t0)
        i += 1
        await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - t0)))
    return out


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


async def run(size_mb: float, throttle_mb_s: float, rate: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dev = DevCluster.create(Path(tmp), 4, free_port_block(4))
        dev.start()
        try:
            dev.wait_healthy(60)
            async with AdminClient(dev.bootstrap) as admin:
                await admin.create_topic("big", 1, 3)
                await admin.create_topic("load", 1, 3)
                md = (await admin.describe_topics(["big"]))["big"].partitions[0]
            chunk = b"x" * 100_000
            async with Producer(dev.bootstrap, acks=1, linger_ms=5) as prod:
                sent = [
                    await prod.send("big", chunk, partition=0) for _ in range(int(size_mb * 10))
                ]
                await asyncio.gather(*sent)
            spare = next(n for n in (1, 2, 3, 4) if n not in md.replicas)
            going = next(n for n in reversed(md.replicas) if n != md.leader)
            target = [spare if n == going else n for n in md.replicas]
            async with Producer(dev.bootstrap, acks="all") as producer:
                base = await latencies(producer, 8, rate)
                async with AdminClient(dev.bootstrap) as admin:
                    t0 = time.monotonic()
                    await admin.move_partitions(
                        [("big", 0, target)], throttle_bytes_s=int(throttle_mb_s * 1e6)
                    )
                    during: list[float] = []
                    while True:
                        during += await latencies(producer, 1, rate)
                        moves, _ = await admin.list_partition_moves()
                        if not moves:
                            break
                    took = time.monotonic() - t0
            print(
                f"partition of {size_mb:g} MB, throttle {throttle_mb_s:g} MB/s: the move took "
                f"{took:.1f} s ({size_mb / took:.2f} MB/s)"
            )
            print(
                f"acks=all produce at {rate}/s: without a move p50 {pct(base, 0.5):.1f} ms, "
                f"p99 {pct(base, 0.99):.1f} ms (n={len(base)}); during it p50 "
                f"{pct(during, 0.5):.1f} ms, p99 {pct(during, 0.99):.1f} ms (n={len(during)})"
            )
        finally:
            dev.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=50)
    ap.add_argument("--throttle-mb-s", type=float, default=5)
    ap.add_argument("--rate", type=int, default=100)
    a = ap.parse_args()
    asyncio.run(run(a.size_mb, a.throttle_mb_s, a.rate))


if __name__ == "__main__":
    main()
