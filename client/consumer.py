"""The consumer (without groups for now): read assigned partitions from their leaders, in order.

    async with Consumer("127.0.0.1:9092", auto_offset_reset="earliest") as consumer:
        consumer.assign([("orders", 0), ("orders", 1)])
        async for record in consumer:
            print(record.offset, record.value)

Theory of operation. Each assigned partition has a position: the offset of the next record to
hand to the user. `getmany` returns buffered records first; when a partition's buffer is empty it
starts one Fetch for it at the partition's next offset, through the cluster core (leader
routing, failover, retries). A fetch that is still running when `getmany` times out keeps
running and fills the buffer for the next call (prefetch), so at most one fetch per partition is
in flight and at most one fetch's worth of records is buffered: backpressure for free.

A fetch returns whole batches starting with the one that holds the offset asked for, so records
below it are skipped. `seek*` cancels the partition's fetch and drops its buffer; a fetch that
finishes for an offset that is no longer the next one is discarded.

Positions: a partition starts without one, and gets one from `auto_offset_reset` ("earliest":
the log start, "latest": the high watermark, as in Kafka; "error": raise) or from seek. The
same policy applies when a fetch answers OFFSET_OUT_OF_RANGE (the log start moved past us under
retention, say).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from client.cluster import ClientConfig, Cluster
from client.errors import (
    CorruptMessageError,
    InvalidRecordError,
    LiferaftError,
    OffsetOutOfRangeError,
)
from client.offsets import list_offset
from client.types import ConsumerRecord, TopicPartition
from liferaft_proto import records
from liferaft_proto.v1 import broker_pb2

__all__ = ["AutoOffsetReset", "Consumer"]

AutoOffsetReset = Literal["earliest", "latest", "error"]
_RESETS = ("earliest", "latest", "error")

_FetchResult = tuple[int, broker_pb2.FetchResponse]


@dataclass(slots=True)
class _PartitionState:
    position: int | None = None
    """Offset of the next record to hand out; None until reset or seek."""
    reset: AutoOffsetReset | None = None
    """How to find a position when it is None (None: the consumer's auto_offset_reset)."""
    buffer: deque[ConsumerRecord] = field(default_factory=deque)
    """Fetched records not yet handed out, contiguous from `position`."""
    fetch: asyncio.Task[_FetchResult] | None = None
    error: BaseException | None = None
    """A fetch's failure, raised by the next getmany for this partition."""
    high_watermark: int = -1
    log_start_offset: int = -1

    def next_fetch_offset(self) -> int | None:
        if self.buffer:
            return self.buffer[-1].offset + 1
        return self.position

    def cancel_fetch(self) -> None:
        if self.fetch is not None:
            self.fetch.cancel()
            self.fetch = None


def decode_fetch(tp: TopicPartition, offset: int, data: bytes) -> list[ConsumerRecord]:
    """Records of a Fetch answer at or after `offset`. The first batch may start earlier."""
    out: list[ConsumerRecord] = []
    try:
        for r in records.iter_records(data):
            if r.offset < offset:
                continue
            out.append(
                ConsumerRecord(
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=r.offset,
                    timestamp_ms=r.timestamp_ms,
                    key=r.key,
                    value=r.value,
                    headers=r.headers,
                    timestamp_type=r.timestamp_type,
                )
            )
    except records.UnsupportedBatchError as e:
        raise InvalidRecordError(None, f"{tp} at offset {offset}: {e}") from e
    except records.CorruptBatchError as e:
        raise CorruptMessageError(None, f"{tp} at offset {offset}: {e}") from e
    return out


class Consumer:
    """Reads records from assigned partitions. Use `async with`, or start() and close()."""

    def __init__(
        self,
        bootstrap: str | Iterable[str],
        *,
        auto_offset_reset: AutoOffsetReset = "latest",
        fetch_max_wait_ms: int = 500,
        fetch_max_bytes: int = 1 << 20,
        fetch_min_bytes: int = 1,
        max_poll_records: int = 500,
        request_timeout_ms: int = 30_000,
        delivery_timeout_ms: int = 120_000,
        retry_backoff_ms: int = 100,
        retry_backoff_max_ms: int = 1_000,
        metadata_max_age_ms: int = 300_000,
    ) -> None:
        if auto_offset_reset not in _RESETS:
            raise ValueError(
                f"auto_offset_reset must be one of {_RESETS}, not {auto_offset_reset!r}"
            )
        if fetch_max_wait_ms < 1 or fetch_max_bytes < 1 or fetch_min_bytes < 0:
            raise ValueError(
                "fetch_max_wait_ms and fetch_max_bytes must be >= 1, fetch_min_bytes >= 0"
            )
        if max_poll_records < 1:
            raise ValueError("max_poll_records must be >= 1")
        self.auto_offset_reset: AutoOffsetReset = auto_offset_reset
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_max_bytes = fetch_max_bytes
        self.fetch_min_bytes = fetch_min_bytes
        self.max_poll_records = max_poll_records
        self.config = ClientConfig.build(
            bootstrap,
            request_timeout_ms=request_timeout_ms,
            delivery_timeout_ms=delivery_timeout_ms,
            retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms,
            metadata_max_age_ms=metadata_max_age_ms,
        )
        self._cluster: Cluster | None = None
        self._parts: dict[TopicPartition, _PartitionState] = {}
        self._wakeup = asyncio.Event()
        self._rotation = 0  # which partition getmany drains first, for fairness
        self._closed = False

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("the consumer is closed")
        if self._cluster is None:
            cluster = Cluster(self.config)
            try:
                await cluster.start()
            except BaseException:
                await cluster.close()
                raise
            self._cluster = cluster

    async def close(self) -> None:
        self._closed = True
        fetches = [st.fetch for st in self._parts.values() if st.fetch is not None]
        for st in self._parts.values():
            st.cancel_fetch()
        await asyncio.gather(*fetches, return_exceptions=True)
        self._wakeup.set()
        if self._cluster is not None:
            await self._cluster.close()

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _ready(self) -> Cluster:
        if self._cluster is None:
            await self.start()
        assert self._cluster is not None
        if self._closed:
            raise RuntimeError("the consumer is closed")
        return self._cluster

    # -- assignment and positions --------------------------------------------------------------
    async def partitions_for(self, topic: str) -> tuple[int, ...]:
        """The topic's partition numbers (raises UnknownTopicOrPartitionError)."""
        cluster = await self._ready()
        return await cluster.partitions_for(topic)

    def assign(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> None:
        """Read exactly these partitions from now on (replacing any earlier assignment).
        Partitions kept from the earlier assignment keep their positions."""
        wanted = [TopicPartition(*tp) for tp in partitions]
        for tp in wanted:
            if tp.partition < 0:
                raise ValueError(f"partition must be >= 0: {tp}")
        for tp in list(self._parts):
            if tp not in wanted:
                self._parts.pop(tp).cancel_fetch()
        for tp in wanted:
            self._parts.setdefault(tp, _PartitionState())

    def assignment(self) -> set[TopicPartition]:
        return set(self._parts)

    def _state(self, tp: TopicPartition | tuple[str, int]) -> _PartitionState:
        st = self._parts.get(TopicPartition(*tp))
        if st is None:
            raise ValueError(f"{TopicPartition(*tp)} is not assigned to this consumer")
        return st

    def seek(self, tp: TopicPartition | tuple[str, int], offset: int) -> None:
        """Read `tp` from `offset` next."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        st = self._state(tp)
        st.cancel_fetch()
        st.buffer.clear()
        st.error = None
        st.reset = None
        st.position = offset

    async def seek_to_beginning(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        """Move to the log start of these partitions (all assigned ones if none given)."""
        await self._seek_to("earliest", partitions)

    async def seek_to_end(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        """Move to the high watermark: only records produced from now on will be read."""
        await self._seek_to("latest", partitions)

    async def _seek_to(
        self,
        where: Literal["earliest", "latest"],
        partitions: tuple[TopicPartition | tuple[str, int], ...],
    ) -> None:
        cluster = await self._ready()
        tps = [TopicPartition(*tp) for tp in partitions] or list(self._parts)
        for tp in tps:
            self._state(tp)
        found = await asyncio.gather(*(list_offset(cluster, tp, where) for tp in tps))
        for tp, answer in zip(tps, found, strict=True):
            self.seek(tp, answer.offset)

    async def position(self, tp: TopicPartition | tuple[str, int]) -> int:
        """The offset of the next record getmany would return for `tp` (resolving the
        auto_offset_reset policy first if the partition has no position yet)."""
        tp = TopicPartition(*tp)
        st = self._state(tp)
        if st.position is None:
            await self._resolve_positions([tp])
        assert st.position is not None
        return st.position

    def highwater(self, tp: TopicPartition | tuple[str, int]) -> int | None:
        """The partition's high watermark as of the last fetch answer (None before one)."""
        hw = self._state(tp).high_watermark
        return hw if hw >= 0 else None

    async def _resolve_positions(self, tps: Iterable[TopicPartition]) -> None:
        cluster = await self._ready()
        todo = [tp for tp in tps if self._parts[tp].position is None]
        if not todo:
            return
        specs: list[Literal["earliest", "latest"]] = []
        for tp in todo:
            policy = self._parts[tp].reset or self.auto_offset_reset
            if policy == "error":
                raise OffsetOutOfRangeError(
                    None,
                    f"{tp} has no valid position and auto_offset_reset is 'error': seek first",
                )
            specs.append(policy)
        found = await asyncio.gather(
            *(list_offset(cluster, tp, spec) for tp, spec in zip(todo, specs, strict=True))
        )
        for tp, answer in zip(todo, found, strict=True):
            st = self._parts.get(tp)
            if st is not None and st.position is None:  # not re-seeked meanwhile
                st.position = answer.offset
                st.reset = None

    # -- fetching ------------------------------------------------------------------------------
    async def getmany(
        self,
        *partitions: TopicPartition | tuple[str, int],
        timeout_ms: int = 0,
        max_records: int | None = None,
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Records from these partitions (all assigned ones if none given), in offset order per
        partition: what is buffered at once, else what arrives within `timeout_ms`; {} if
        nothing did. Raises the error of a partition whose fetch failed for good."""
        cluster = await self._ready()
        tps = [TopicPartition(*tp) for tp in partitions] or list(self._parts)
        for tp in tps:
            self._state(tp)
        limit = max_records if max_records is not None else self.max_poll_records
        if limit < 1:
            raise ValueError("max_records must be >= 1")
        deadline = time.monotonic() + max(0, timeout_ms) / 1000
        while True:
            self._wakeup.clear()
            drained = self._drain(tps, limit)
            if drained:
                return drained
            self._raise_errors(tps)
            if self._closed:
                return {}
            await self._resolve_positions(tps)
            self._start_fetches(cluster, tps)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    async def getone(self, *partitions: TopicPartition | tuple[str, int]) -> ConsumerRecord:
        """The next record, waiting as long as it takes."""
        while True:
            got = await self.getmany(*partitions, timeout_ms=self.fetch_max_wait_ms, max_records=1)
            for recs in got.values():
                return recs[0]

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> ConsumerRecord:
        while not self._closed:
            got = await self.getmany(timeout_ms=self.fetch_max_wait_ms, max_records=1)
            for recs in got.values():
                return recs[0]
        raise StopAsyncIteration

    def _drain(
        self, tps: list[TopicPartition], limit: int
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        if not tps:
            return out
        start = self._rotation % len(tps)
        self._rotation += 1
        for tp in tps[start:] + tps[:start]:
            st = self._parts[tp]
            if not st.buffer:
                continue
            taken: list[ConsumerRecord] = []
            while st.buffer and limit > 0:
                taken.append(st.buffer.popleft())
                limit -= 1
            st.position = taken[-1].offset + 1
            out[tp] = taken
            if limit == 0:
                break
        return out

    def _raise_errors(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            st = self._parts[tp]
            if st.error is not None:
                error, st.error = st.error, None
                raise error

    def _start_fetches(self, cluster: Cluster, tps: list[TopicPartition]) -> None:
        for tp in tps:
            st = self._parts[tp]
            if st.fetch is not None or st.buffer or st.error is not None or st.position is None:
                continue
            offset = st.position
            task = asyncio.ensure_future(self._fetch(cluster, tp, offset))
            st.fetch = task
            task.add_done_callback(functools.partial(self._on_fetched, tp, st))

    async def _fetch(self, cluster: Cluster, tp: TopicPartition, offset: int) -> _FetchResult:
        request = broker_pb2.FetchRequest(
            topic=tp.topic,
            partition=tp.partition,
            offset=offset,
            max_bytes=self.fetch_max_bytes,
            max_wait_ms=self.fetch_max_wait_ms,
            min_bytes=self.fetch_min_bytes,
        )
        response = await cluster.call_leader(
            tp.topic, tp.partition, "Fetch", request, extra_attempt_ms=self.fetch_max_wait_ms
        )
        return offset, response

    def _on_fetched(
        self, tp: TopicPartition, st: _PartitionState, task: asyncio.Task[_FetchResult]
    ) -> None:
        """A fetch finished: keep its records if they are still wanted; wake getmany."""
        if st.fetch is task:
            st.fetch = None
        if task.cancelled() or self._parts.get(tp) is not st:
            return  # seeked, unassigned or closed meanwhile
        self._wakeup.set()
        error = task.exception()
        if error is not None:
            policy = st.reset or self.auto_offset_reset
            if isinstance(error, OffsetOutOfRangeError) and policy != "error":
                st.position = None  # getmany resolves it per the policy
                st.buffer.clear()
            else:
                st.error = error
            return
        offset, response = task.result()
        if offset != st.next_fetch_offset() or st.buffer:
            return  # a stale answer: the partition moved on
        st.high_watermark = response.high_watermark
        st.log_start_offset = response.log_start_offset
        try:
            st.buffer.extend(decode_fetch(tp, offset, response.records))
        except LiferaftError as e:
            st.error = e

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._cluster else "new"
        return f"<Consumer {','.join(self.config.bootstrap)} {len(self._parts)} partitions {state}>"
