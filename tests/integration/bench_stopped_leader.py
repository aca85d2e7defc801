"""What a stopped partition leader (SIGSTOP, as a paused VM) costs a producer and a consumer.

    python -m tests.integration.bench_stopped_leader --stop-s 20
    python -m tests.integration.bench_stopped_leader --stop-s 20 --grpc   # the gRPC transport

On a fresh local three-node cluster: topic `stopped` (one partition, RF 3); a producer sends one
record every --every-ms with acks=all (send_and_wait, one at a time), a consumer assigned to the
partition reads them; after --warm-s the partition's leader is SIGSTOPped for --stop-s, then
resumed, and both run --after-s more. Prints the producer's worst acknowledgement time (and
when that send began, from the stop) and the consumer's longest gap between two records.

A stopped process keeps its connections (its kernel takes the bytes and answers TCP
keepalives): without the stream transport's PING (client/stream_transport.py) both wait the
whole stop, or the request timeout (30 s) if that is shorter. A measurement, not a test: the
behaviour is asserted in tests/integration/test_produce_stream.py and
test_client_stream_transport.py; nothing here asserts on time. --json prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import tempfile
import time
from pathlib import Path

from client import AdminClient, Consumer, Producer, TopicPartition
from tests.clusters import running_cluster

TOPIC = "stopped"


async def measure(args: argparse.Namespace) -> dict[str, float]:
    with running_cluster(Path(tempfile.mkdtemp(prefix="stopped-leader-"))) as dev:
        async with AdminClient(dev.bootstrap) as admin:
            await admin.create_topic(TOPIC, 1, 3)
            leader = (await admin.describe_topics([TOPIC]))[TOPIC].partitions[0].leader
        transport = {"stream_transport": not args.grpc}
        tp = TopicPartition(TOPIC, 0)
        acks: list[tuple[float, float]] = []  # (sent at, seconds to the acknowledgement)
        seen: list[float] = []
        stop = asyncio.Event()
        async with (
            Producer(dev.bootstrap, acks="all", **transport) as producer,
            Consumer(dev.bootstrap, auto_offset_reset="earliest", **transport) as consumer,
        ):
            consumer.assign([tp])

            async def produce() -> None:
                i = 0
                while not stop.is_set():
                    t = time.monotonic()
                    await producer.send_and_wait(TOPIC, b"%d" % i, partition=0)
                    acks.append((t, time.monotonic() - t))
                    i += 1
                    await asyncio.sleep(args.every_ms / 1000)

            async def consume() -> None:
                while not stop.is_set():
                    for records in (await consumer.getmany(timeout_ms=100)).values():
                        seen.extend(time.monotonic() for _ in records)

            tasks = [asyncio.create_task(produce()), asyncio.create_task(consume())]
            await asyncio.sleep(args.warm_s)
            stopped_at = time.monotonic()
            dev.signal_node(leader, signal.SIGSTOP)
            try:
                await asyncio.sleep(args.stop_s)
            finally:
                dev.signal_node(leader, signal.SIGCONT)
            await asyncio.sleep(args.after_s)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
    sent_at, worst = max(acks, key=lambda a: a[1])
    gap, gap_at = max((b - a, a) for a, b in itertools.pairwise(seen))
    return {
        "stop_s": args.stop_s,
        "grpc": float(args.grpc),
        "records": float(len(acks)),
        "producer_worst_ack_s": round(worst, 3),
        "producer_worst_sent_after_stop_s": round(sent_at - stopped_at, 3),
        "consumer_longest_gap_s": round(gap, 3),
        "consumer_gap_from_stop_s": round(gap_at - stopped_at, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stop-s", type=float, default=20.0, help="how long the leader stops")
    parser.add_argument("--every-ms", type=float, default=20.0, help="one record per this")
    parser.add_argument("--warm-s", type=float, default=3.0, help="running before the stop")
    parser.add_argument("--after-s", type=float, default=5.0, help="running after the resume")
    parser.add_argument("--grpc", action="store_true", help="stream_transport=False")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args()
    result = asyncio.run(measure(args))
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"leader stopped {args.stop_s:.0f} s ({'gRPC' if args.grpc else 'stream listener'}): "
        f"producer's worst acknowledgement {result['producer_worst_ack_s']:.2f} s (sent "
        f"{result['producer_worst_sent_after_stop_s']:+.1f} s from the stop), consumer's "
        f"longest gap {result['consumer_longest_gap_s']:.2f} s "
        f"({result['consumer_gap_from_stop_s']:+.1f} s from the stop)"
    )


if __name__ == "__main__":
    main()
