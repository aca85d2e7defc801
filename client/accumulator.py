"""The producer's record accumulator: records in, one growing batch per partition, bounded memory.

`send()` appends a record to the open batch of its partition (a list of Record values and their
futures); `send_batch()` queues records as a batch of their own with one future for all of
them (Kafka's producer, too, resolves a batch's records from one result per batch), so a batch
of thousands of small records costs one future, not thousands. The partition's sender (client/sender.py) takes whole batches off the front when they
are full (`batch_size` bytes), old enough (`linger_ms`), or a flush asks. Everything after this
point is per batch: one build (and compression) per batch, one request per batch.

Memory is bounded: every record reserves its estimated size out of `buffer_memory` until its
batch is done (written or failed). When the buffer is full, `send()` waits for space, and raises
BufferFullError after `max_block_ms`: back-pressure on a producer that outruns the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field

from client.errors import BufferFullError
from client.types import RecordMetadata, TopicPartition
from liferaft_proto.records import Record, ValueRecords

__all__ = ["ProducerBatch", "RecordAccumulator", "estimate_records_size", "estimate_size"]

RECORD_OVERHEAD = 24
"""Bytes a record takes in a batch beyond its key, value and headers (varints, deltas)."""
BATCH_OVERHEAD = 61


def estimate_size(record: Record) -> int:
    size = RECORD_OVERHEAD + len(record.key or b"") + len(record.value or b"")
    for name, value in record.headers:
        size += len(name) + len(value or b"") + 4
    return size


def estimate_records_size(records: list[Record] | ValueRecords) -> int:
    """The sum of estimate_size over records (bare values: without a Record each)."""
    if isinstance(records, ValueRecords):
        return RECORD_OVERHEAD * len(records) + sum(map(len, records.values))
    return sum(estimate_size(r) for r in records)


@dataclass(slots=True, eq=False)
class ProducerBatch:
    """Records on their way to one partition, sent (and retried) as one record batch."""

    tp: TopicPartition
    created: float
    deadline: float
    """Monotonic time after which the batch fails with DeliveryTimeoutError."""
    records: list[Record] | ValueRecords = field(default_factory=list)
    """A list that send() appends to, or what send_batch queued whole (bare values: as they
    are, client/producer.py's _normalize)."""
    futures: list[asyncio.Future[RecordMetadata]] = field(default_factory=list)
    """One per record, in order (send()); empty for a batch queued whole."""
    whole: asyncio.Future[RecordMetadata] | None = None
    """A batch queued whole (send_batch): one future for all its records, resolved with the
    first record's metadata and record_count, or failed with the batch's error."""
    size: int = BATCH_OVERHEAD
    closed: bool = False
    """No more records may join (full, or sent whole by send_batch)."""
    # Set when the sender takes it:
    data: bytes | None = None
    """The built record batch (with producer id, epoch and sequence when idempotent)."""
    epoch: int = -1
    base_sequence: int = -1
    stamp: object = None
    """The sequence stamp `data` carries (client/sequences.py's Stamp), when idempotent."""
    version: int = 0
    """Bumped whenever the batch is renumbered, so an answer to an older copy is told apart."""
    acked: bool = False
    finished: bool = False
    """Acknowledged or failed."""
    _done: asyncio.Event | None = None

    @property
    def done(self) -> asyncio.Event:
        """Set once the batch is finished; made only when asked for (flush waits on it), not
        for every batch (issue 18: the producer's work per small batch)."""
        if self._done is None:
            self._done = asyncio.Event()
            if self.finished:
                self._done.set()
        return self._done

    def _finished(self) -> None:
        self.finished = True
        if self._done is not None:
            self._done.set()

    @property
    def count(self) -> int:
        return len(self.records)

    def complete(self, base_offset: int, log_start_offset: int, append_time_ms: int) -> None:
        whole = self.whole
        if whole is not None and not whole.done():
            ts = append_time_ms if append_time_ms >= 0 else self.records[0].timestamp_ms
            whole.set_result(
                RecordMetadata(
                    topic=self.tp.topic,
                    partition=self.tp.partition,
                    offset=base_offset,
                    timestamp_ms=ts if ts is not None else -1,
                    log_start_offset=log_start_offset,
                    record_count=len(self.records),
                    timestamp_type=1 if append_time_ms >= 0 else 0,
                )
            )
        records = self.records
        for i, fut in enumerate(self.futures):  # none for a batch queued whole
            if fut.done():
                continue
            ts = append_time_ms if append_time_ms >= 0 else records[i].timestamp_ms
            fut.set_result(
                RecordMetadata(
                    topic=self.tp.topic,
                    partition=self.tp.partition,
                    offset=base_offset + i if base_offset >= 0 else -1,
                    timestamp_ms=ts if ts is not None else -1,
                    log_start_offset=log_start_offset,
                    timestamp_type=1 if append_time_ms >= 0 else 0,
                )
            )
        self.acked = True
        self._finished()

    def fail(self, error: BaseException) -> None:
        if self.whole is not None and not self.whole.done():
            self.whole.set_exception(error)
        for fut in self.futures:
            if not fut.done():
                fut.set_exception(error)
        self._finished()


class RecordAccumulator:
    def __init__(
        self,
        *,
        batch_size: int,
        linger_ms: int,
        buffer_memory: int,
        delivery_timeout_ms: int,
    ) -> None:
        self.batch_size = batch_size
        self.linger_s = linger_ms / 1000
        self.buffer_memory = buffer_memory
        self.delivery_timeout_s = delivery_timeout_ms / 1000
        self.queues: dict[TopicPartition, deque[ProducerBatch]] = {}
        self.used = 0
        self.incomplete: set[ProducerBatch] = set()
        self.flushing = 0
        self._space = asyncio.Event()  # set when memory is released
        self.on_ready: asyncio.Event | None = None

    # -- memory --------------------------------------------------------------------------------
    def try_reserve(self, size: int) -> bool:
        """Reserve `size` bytes if they fit now (no waiting); False if reserve() must wait."""
        if self.used + size > self.buffer_memory:
            return False
        self.used += size
        return True

    async def reserve(self, size: int, max_block_s: float) -> None:
        """Wait until `size` bytes fit in the buffer (BufferFullError after max_block_s)."""
        if size > self.buffer_memory:
            raise BufferFullError(
                None,
                f"a record of {size} bytes can never fit buffer_memory={self.buffer_memory}",
            )
        deadline = time.monotonic() + max_block_s
        while self.used + size > self.buffer_memory:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BufferFullError(
                    None,
                    f"the producer's buffer ({self.buffer_memory} bytes) stayed full for "
                    f"{int(max_block_s * 1000)} ms (max_block_ms): the cluster is slower than "
                    "the producer, or unreachable",
                )
            self._space.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._space.wait(), remaining)
        self.used += size

    def release(self, batch: ProducerBatch) -> None:
        self.used -= batch.size
        self.incomplete.discard(batch)
        self._space.set()

    # -- batching ------------------------------------------------------------------------------
    def append(
        self, tp: TopicPartition, record: Record, size: int
    ) -> tuple[asyncio.Future[RecordMetadata], bool]:
        """Add a record (its size already reserved) to tp's open batch. Returns its future and
        whether the partition's sender should look again (a batch became full, or a new one
        was opened: its linger time starts now)."""
        q = self.queues.get(tp)
        if q is None:
            q = self.queues[tp] = deque()
        batch = q[-1] if q and not q[-1].closed else None
        if batch is not None and batch.size + size > self.batch_size and batch.records:
            batch.closed = True
            batch = None
        opened = batch is None
        if batch is None:
            batch = self._new_batch(tp)
            q.append(batch)
        fut: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        batch.records.append(record)  # type: ignore[union-attr]  # send()'s batches are lists
        batch.futures.append(fut)
        batch.size += size
        full = batch.size >= self.batch_size
        if full:
            batch.closed = True
        return fut, full or opened

    def append_batch(
        self, tp: TopicPartition, records: list[Record] | ValueRecords, size: int
    ) -> list[asyncio.Future[RecordMetadata]]:
        """Queue records as one batch of their own (all or nothing), a future for each."""
        batch = self._queue_whole(tp, records, size)
        loop = asyncio.get_running_loop()
        batch.futures = [loop.create_future() for _ in range(len(batch.records))]
        return batch.futures

    def append_whole(
        self, tp: TopicPartition, records: list[Record] | ValueRecords, size: int
    ) -> asyncio.Future[RecordMetadata]:
        """Queue records as one batch of their own (send_batch: all or nothing) with one future
        for all of them: the first record's metadata (offset, record_count), or the error."""
        batch = self._queue_whole(tp, records, size)
        batch.whole = asyncio.get_running_loop().create_future()
        return batch.whole

    def _queue_whole(
        self, tp: TopicPartition, records: list[Record] | ValueRecords, size: int
    ) -> ProducerBatch:
        q = self.queues.setdefault(tp, deque())
        if q and not q[-1].closed:
            q[-1].closed = True
        batch = self._new_batch(tp)
        batch.records = records if isinstance(records, ValueRecords) else list(records)
        batch.size += size - BATCH_OVERHEAD
        batch.closed = True
        q.append(batch)
        return batch

    def _new_batch(self, tp: TopicPartition) -> ProducerBatch:
        now = time.monotonic()
        batch = ProducerBatch(tp=tp, created=now, deadline=now + self.delivery_timeout_s)
        self.incomplete.add(batch)
        return batch

    def ready_at(self, tp: TopicPartition, closing: bool) -> float | None:
        """When tp's first batch may be sent: 0 now, a monotonic time, or None (no batch)."""
        q = self.queues.get(tp)
        if not q:
            return None
        head = q[0]
        if head.closed or len(q) > 1 or self.flushing or closing:
            return 0.0
        return head.created + self.linger_s

    def take(self, tp: TopicPartition) -> ProducerBatch:
        batch = self.queues[tp].popleft()
        batch.closed = True
        return batch

    def expired(self, tp: TopicPartition, now: float) -> list[ProducerBatch]:
        """Queued batches (never sent) whose delivery timeout passed."""
        q = self.queues.get(tp)
        out: list[ProducerBatch] = []
        while q and q[0].deadline <= now:
            out.append(q.popleft())
        return out
