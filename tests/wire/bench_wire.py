"""Throughput of the wire contract's hot paths. Not a test: run it and read the numbers.

    python -m tests.wire.bench_wire

Prints, best of several runs (this machine is shared, so take the best, not the mean):
  - the broker's check of a 64 KiB batch of 1 KiB records: read_header (header + CRC-32C),
    read_header(deep=True) (plus the record framing walk), stamp_base_offset, split_batches;
  - the client's cost per record: build_batch and iter_records;
  - the Raft transport's codec (node/raft_wire.py): messages/s for an APP of 64 entries of 1 KiB,
    and for a heartbeat, encoded into frame parts and joined, and decoded from the frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from crc32c import crc32c

from liferaft_proto.records import (
    Record,
    build_batch,
    iter_records,
    read_header,
    split_batches,
    stamp_base_offset,
)
from node.raft_wire import decode_message, encode_message
from raft.types import Entry, EntryType, Message, MessageType

KIB = 1024


def best_seconds(fn: Callable[[], object], number: int, repeat: int = 5) -> float:
    """Seconds per call, best of `repeat` runs of `number` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def batch_of(record_size: int, max_bytes: int) -> tuple[bytes, int]:
    """The largest batch of record_size-byte values that fits max_bytes."""
    n = 1
    while len(build_batch([Record(bytes(record_size))] * (n + 1), timestamp_ms=0)) <= max_bytes:
        n += 1
    recs = [Record(bytes([i % 256]) * record_size, key=b"key-%d" % i) for i in range(n)]
    batch = build_batch(recs, timestamp_ms=1_700_000_000_000)
    while len(batch) > max_bytes:
        recs.pop()
        batch = build_batch(recs, timestamp_ms=1_700_000_000_000)
    return batch, len(recs)


def mb_per_s(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def bench_records() -> None:
    batch, n = batch_of(KIB, 64 * KIB)
    size = len(batch)
    print(f"batch: {n} records of 1 KiB (+ a short key), {size} bytes")
    t = best_seconds(lambda: crc32c(batch), 2000)
    print(f"  crc32c alone                 {t * 1e6:8.1f} us   {mb_per_s(size, t):9.0f} MB/s")
    t = best_seconds(lambda: read_header(batch), 2000)
    print(f"  read_header                  {t * 1e6:8.1f} us   {mb_per_s(size, t):9.0f} MB/s")
    t = best_seconds(lambda: read_header(batch, deep=True), 2000)
    print(f"  read_header(deep=True)       {t * 1e6:8.1f} us   {mb_per_s(size, t):9.0f} MB/s")
    t = best_seconds(lambda: stamp_base_offset(batch, 123_456, leader_epoch=3), 2000)
    print(f"  stamp_base_offset            {t * 1e6:8.1f} us   {mb_per_s(size, t):9.0f} MB/s")
    concat = b"".join([stamp_base_offset(batch, i * n) for i in range(16)])
    t = best_seconds(lambda: sum(1 for _ in split_batches(concat)), 200)
    print(
        f"  split_batches of 16 batches  {t * 1e6:8.1f} us   {mb_per_s(len(concat), t):9.0f} MB/s"
    )

    small, n_small = batch_of(100, 64 * KIB)
    t = best_seconds(lambda: read_header(small, deep=True), 500)
    print(
        f"  read_header(deep=True), {n_small} records of 100 B: {t * 1e6:.1f} us "
        f"({mb_per_s(len(small), t):.0f} MB/s)"
    )

    for record_size, count in ((KIB, n), (100, 500), (10, 1000)):
        recs = [Record(bytes(record_size), key=b"key-%d" % i) for i in range(count)]
        t = best_seconds(partial(build_batch, recs, timestamp_ms=0), 50)
        built = build_batch(recs, timestamp_ms=0)
        t2 = best_seconds(partial(drain, built), 50)
        print(
            f"  {record_size:>5} B records: build_batch {t / count * 1e6:5.2f} us/record, "
            f"iter_records {t2 / count * 1e6:5.2f} us/record"
        )


def drain(batches: bytes) -> int:
    return sum(1 for _ in iter_records(batches))


def encode(m: Message) -> bytes:
    parts: list[bytes] = []
    encode_message("orders-3", m, parts)
    return b"".join(parts)


def through_the_wire(m: Message) -> tuple[str, Message, int]:
    return decode_message(encode(m))


def bench_codec() -> None:
    app = Message(
        type=MessageType.APP,
        to=2,
        frm=1,
        term=5,
        log_term=5,
        index=1000,
        entries=tuple(Entry(1001 + i, 5, EntryType.NORMAL, bytes(KIB)) for i in range(64)),
        commit=999,
    )
    heartbeat = Message(type=MessageType.HEARTBEAT, to=2, frm=1, term=5, commit=999)
    for name, m, number in (("APP 64 x 1 KiB", app, 1000), ("HEARTBEAT", heartbeat, 50_000)):
        wire = encode(m)
        t_enc = best_seconds(partial(encode, m), number)
        t_dec = best_seconds(partial(decode_message, wire), number)
        t_all = best_seconds(partial(through_the_wire, m), number)
        print(
            f"{name} ({len(wire)} bytes on the wire): encode {1 / t_enc:10,.0f} msg/s, "
            f"decode {1 / t_dec:10,.0f} msg/s, both {1 / t_all:10,.0f} msg/s"
        )


if __name__ == "__main__":
    bench_records()
    bench_codec()
