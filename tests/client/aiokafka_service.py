"""An order-pricing service written for aiokafka 0.14, as a team would write it.

It reads JSON orders from a topic as a member of a consumer group, prices each one, writes the
priced order to another topic under the same key (keeping the order's timestamp and adding a
header), and commits each partition's offset once its results are acknowledged. When it has
handled `--count` orders it stops, then reads back everything it wrote and prints one JSON
summary.

tests/client/test_aiokafka_port.py runs this file twice: as it is, with aiokafka against
liferaft's Kafka listener; and with only its imports and its bootstrap address changed, with
liferaft's own client against the gRPC port. Nothing below the imports knows which it is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

PRICES_CENTS = {"apple": 40, "pear": 55, "plum": 25}


class Tracker(ConsumerRebalanceListener):
    """Notes which partitions this member was given (a real service would warm caches here)."""

    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.assigned -= set(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assigned |= set(assigned)


def price(order: dict[str, Any]) -> dict[str, Any]:
    total = sum(PRICES_CENTS[item] * qty for item, qty in sorted(order["items"].items()))
    return {"order": order["id"], "total_cents": total, "items": len(order["items"])}


async def process(bootstrap: str, source: str, sink: str, group: str, count: int) -> dict[str, Any]:
    tracker = Tracker()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="pricer",
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        key_deserializer=lambda k: k.decode() if k is not None else None,
        value_deserializer=lambda v: json.loads(v) if v is not None else None,
        session_timeout_ms=10_000,
        max_poll_records=20,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="pricer",
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        key_serializer=lambda k: k.encode(),
        value_serializer=lambda v: json.dumps(v, sort_keys=True).encode(),
    )
    consumer.subscribe(topics=[source], listener=tracker)
    await consumer.start()
    await producer.start()
    handled = 0
    skipped = 0
    latest = 0  # the newest order's timestamp: the "done" marker carries it
    try:
        while handled < count:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                pending = []
                for record in records:
                    latest = max(latest, record.timestamp)
                    if record.value is None:  # a tombstone: nothing to price
                        skipped += 1
                        continue
                    pending.append(
                        await producer.send(
                            sink,
                            value=price(record.value),
                            key=record.key,
                            timestamp_ms=record.timestamp,
                            headers=[
                                ("priced-by", b"pricer"),
                                ("source-offset", b"%d" % record.offset),
                            ],
                        )
                    )
                for fut in pending:
                    await fut
                await consumer.commit({tp: records[-1].offset + 1})
                handled += len(records)
        source_tps = sorted(
            TopicPartition(source, p) for p in await producer.partitions_for(source)
        )
        committed = {
            f"{tp.topic}-{tp.partition}": await consumer.committed(tp) for tp in source_tps
        }
        ends = await consumer.end_offsets(source_tps)
        lag = {
            f"{tp.topic}-{tp.partition}": ends[tp] - (committed[f"{tp.topic}-{tp.partition}"] or 0)
            for tp in source_tps
        }
        done = await producer.send_and_wait(
            sink, value={"done": handled}, key="_control", partition=0, timestamp_ms=latest
        )
        sink_partitions = sorted(await producer.partitions_for(sink))
    except KafkaError as e:
        print(f"pricer failed: {e!r}", file=sys.stderr)
        raise
    finally:
        await producer.stop()
        await consumer.stop()
    return {
        "handled": handled,
        "skipped": skipped,
        "assigned": sorted(tp.partition for tp in tracker.assigned),
        "committed": committed,
        "lag": lag,
        "done_partition": done.partition,
        "sink_partitions": sink_partitions,
    }


async def read_back(bootstrap: str, sink: str, sink_partitions: list[int]) -> list[dict[str, Any]]:
    """Everything in the sink topic, by partition and offset."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        value_deserializer=lambda v: json.loads(v),
        enable_auto_commit=False,
    )
    await reader.start()
    out: list[dict[str, Any]] = []
    try:
        if sink not in await reader.topics():
            raise RuntimeError(f"no topic {sink!r}")
        partitions = [TopicPartition(sink, p) for p in sink_partitions]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)
        while [tp for tp in partitions if await reader.position(tp) < ends[tp]]:
            for tp, records in (await reader.getmany(*partitions, timeout_ms=1000)).items():
                for r in records:
                    out.append(
                        {
                            "partition": tp.partition,
                            "offset": r.offset,
                            "key": r.key.decode() if r.key is not None else None,
                            "value": r.value,
                            "timestamp": r.timestamp,
                            "timestamp_type": r.timestamp_type,
                            "headers": [[k, v.decode()] for k, v in r.headers],
                            "serialized_value_size": r.serialized_value_size,
                        }
                    )
    finally:
        await reader.stop()
    return sorted(out, key=lambda r: (r["partition"], r["offset"]))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    summary = await asyncio.wait_for(
        process(args.bootstrap, args.source, args.sink, args.group, args.count), 90
    )
    summary["results"] = await asyncio.wait_for(
        read_back(args.bootstrap, args.sink, summary["sink_partitions"]), 60
    )
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    asyncio.run(main())
