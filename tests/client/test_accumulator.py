"""The producer's accumulator (client/accumulator.py), without a cluster: batching by size,
batches of their own for send_batch, and back-pressure when the buffer is full."""

from __future__ import annotations

import asyncio

import pytest

from client.accumulator import (
    BATCH_OVERHEAD,
    RecordAccumulator,
    estimate_records_size,
    estimate_size,
)
from client.errors import BufferFullError, RequestTimedOutError
from client.producer import Producer
from client.types import RecordMetadata, TopicPartition
from liferaft_proto.records import Record, ValueRecords

TP = TopicPartition("t", 0)
pytestmark = pytest.mark.asyncio


def acc(**kw: int) -> RecordAccumulator:
    settings = {"batch_size": 1000, "linger_ms": 50, "buffer_memory": 10_000}
    settings.update(kw)
    return RecordAccumulator(delivery_timeout_ms=60_000, **settings)


async def test_records_fill_a_batch_up_to_batch_size_then_open_the_next() -> None:
    a = acc()
    rec = Record(b"v" * 250)  # 274 bytes in a batch: three fit in 1000
    size = estimate_size(rec)
    wakes = []
    for _ in range(9):
        await a.reserve(size, 1)
        wakes.append(a.append(TP, rec, size)[1])
    batches = list(a.queues[TP])
    assert [b.count for b in batches] == [3, 3, 3]
    assert all(b.size <= 1000 for b in batches) and batches[0].closed
    assert wakes[0] and wakes[3]  # a new batch (its linger starts) wakes the sender
    assert a.ready_at(TP, closing=False) == 0.0  # a full batch waits for nobody
    a.take(TP)
    a.take(TP)
    assert a.ready_at(TP, closing=False) == batches[2].created + 0.05  # lingers


async def test_send_batch_records_travel_as_one_batch_in_order() -> None:
    a = acc()
    await a.reserve(50, 1)
    a.append(TP, Record(b"first"), 50)
    futures = a.append_batch(TP, [Record(b"a"), Record(b"b")], 100 + BATCH_OVERHEAD)
    assert len(futures) == 2
    assert [b.count for b in a.queues[TP]] == [1, 2]
    assert all(b.closed for b in a.queues[TP])


async def test_a_batch_queued_whole_has_one_future_with_its_first_records_metadata() -> None:
    """send_batch's path: one future for the batch, not one per record; it resolves with the
    first record's offset and timestamp and the batch's record count."""
    a = acc()
    recs = [Record(b"a", timestamp_ms=5), Record(b"b", timestamp_ms=9), Record(b"c")]
    whole = a.append_whole(TP, recs, 150)
    (batch,) = a.queues[TP]
    assert batch.closed and batch.whole is whole and batch.futures == [] and batch.count == 3
    batch.complete(40, 3, -1)
    assert whole.result() == RecordMetadata(
        topic="t", partition=0, offset=40, timestamp_ms=5, log_start_offset=3, record_count=3
    )
    assert batch.acked and batch.done.is_set()

    # LogAppendTime: the leader's time; acks=0 or a duplicate: offset unknown (-1).
    logged = a.append_whole(TP, recs, 150)
    a.queues[TP][-1].complete(-1, 0, 777)
    assert (logged.result().offset, logged.result().timestamp_ms) == (-1, 777)
    assert (logged.result().timestamp_type, logged.result().record_count) == (1, 3)


async def test_a_batch_queued_whole_fails_as_one_and_a_cancelled_future_is_left_alone() -> None:
    a = acc()
    whole = a.append_whole(TP, [Record(b"a"), Record(b"b")], 100)
    error = RequestTimedOutError(None, "no answer")
    a.queues[TP][-1].fail(error)
    assert whole.exception() is error

    cancelled = a.append_whole(TP, [Record(b"a")], 100)
    cancelled.cancel()  # the caller gave up waiting; the batch still completes
    a.queues[TP][-1].complete(7, 0, -1)
    assert cancelled.cancelled() and a.queues[TP][-1].done.is_set()


async def test_a_full_buffer_blocks_then_raises_and_frees_on_release() -> None:
    a = acc(buffer_memory=1000)
    rec = Record(b"x" * 400)
    size = estimate_size(rec)
    await a.reserve(size, 1)
    a.append(TP, rec, size)
    await a.reserve(size, 1)
    a.append(TP, rec, size)
    used = a.used
    assert not a.try_reserve(size)  # send()'s no-wait path: refused, and nothing reserved
    assert a.used == used
    with pytest.raises(BufferFullError, match="stayed full"):
        await a.reserve(size, 0.05)
    waiting = asyncio.ensure_future(a.reserve(size, 5))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    batch = a.take(TP)
    a.release(batch)  # the batch was written: its memory is free again
    await asyncio.wait_for(waiting, 5)
    assert a.try_reserve(size)  # the waiter's record and one more fit
    assert not a.try_reserve(size)  # and no third
    with pytest.raises(BufferFullError, match="can never fit"):
        await a.reserve(5000, 1)


async def test_send_batch_keeps_plain_bytes_as_values_and_counts_them_the_same() -> None:
    """send_batch's items: all plain bytes stay values (no Record each), sized as the Records
    would be; anything else (a Record, a str, a bytearray) gives Records, as before."""
    values = [b"a", b"bc" * 40, b""]
    plain = Producer._normalize(iter(values))
    assert isinstance(plain, ValueRecords) and plain.values == values
    assert list(plain) == [Record(v, None, (), plain.timestamp_ms) for v in values]
    assert estimate_records_size(plain) == sum(estimate_size(r) for r in plain)
    for mixed in ([b"a", "b"], [b"a", bytearray(b"b")], [Record(b"a", key=b"k"), b"b"]):
        recs = Producer._normalize(mixed)
        assert isinstance(recs, list) and [r.value for r in recs] == [b"a", b"b"]
        assert all(r.timestamp_ms is not None for r in recs)

    a = acc()
    whole = a.append_whole(TP, plain, estimate_records_size(plain) + BATCH_OVERHEAD)
    (batch,) = a.queues[TP]
    assert batch.records is plain and batch.count == 3
    batch.complete(10, 0, -1)
    assert (whole.result().offset, whole.result().timestamp_ms) == (10, plain.timestamp_ms)
