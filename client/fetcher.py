"""The consumer's fetcher: fills a buffer per assigned partition from its leader and hands the
records out in offset order (aiokafka's fetcher.py). It also finds positions: the group's
committed offset, auto_offset_reset, seeks, and the offset look-ups (beginning, end, by time).

Theory of operation. Each assigned partition has a position (client/subscription_state.py): the
offset of the next record to hand to the user. `getmany` returns buffered records first; a
partition that has a position and no reader gets one: a task that opens a FetchStream at the
partition's leader (through the cluster core: leader routing, failover, retries) from the next
offset not yet fetched, and puts each answer's records in the partition's buffer as it comes.
One long-lived stream per partition replaces a unary Fetch per answer: an answer on a stream
costs the leader a message, not a gRPC call (docs/performance.md, "The consumer on
FetchStream"). The reader keeps running between getmany calls (prefetch), but reads the next
answer only while the buffer holds less than `fetch_max_bytes`: beyond that it stops reading,
gRPC's flow control holds the node back, and memory stays bounded. The stream runs on the
node's stream listener when it has one (framed TCP, client/stream_transport.py: the same
answers, read(), EOF and cancel(); TCP's flow control holds the node back), else on gRPC.

A stream that breaks (the leader died, moved: NOT_LEADER, UNAVAILABLE) is reopened at once at
the next offset not yet fetched, after the cluster core has followed the leader hint or
refreshed the metadata, so no record is skipped or read twice. A node without FetchStream
(UNIMPLEMENTED: an older version) is read with one unary Fetch per answer, as before.

A fetch returns whole batches starting with the one that holds the offset asked for, so records
below it are skipped. A seek cancels the partition's stream and drops its buffer; pause cancels
the stream and keeps the buffer; an answer for an offset that is no longer the next one, or for
an earlier assignment of the partition (the TopicPartitionState it started for is not the
current one), is dropped and its stream closed.

Positions: a partition starts without one and gets one from the group's committed offset, else
from `auto_offset_reset` ("earliest": the log start, "latest": the high watermark, as in Kafka;
"none" (or its older liferaft name "error"): raise NoOffsetForPartitionError), or from a seek.
The same policy applies when a fetch answers OFFSET_OUT_OF_RANGE (the log start moved past us
under retention, say); with "none" that OffsetOutOfRangeError is raised to the caller.

Deserializers run as records are handed out, so one that raises does so from getmany/getone
(as in aiokafka), and the record it failed on stays next in line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import grpc

from client.cluster import Cluster
from client.errors import (
    BrokerUnavailableError,
    CorruptMessageError,
    InvalidRecordError,
    LiferaftError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
    RequestTimedOutError,
)
from client.offsets import OffsetSpec, list_offset
from client.subscription_state import SubscriptionState, TopicPartitionState
from client.types import ConsumerRecord, OffsetAndTimestamp, TopicPartition
from liferaft_proto import records
from liferaft_proto.v1 import broker_pb2

__all__ = ["AutoOffsetReset", "Deserializer", "Fetcher", "decode_fetch"]

AutoOffsetReset = Literal["earliest", "latest", "none", "error"]
RESETS: tuple[str, ...] = ("earliest", "latest", "none", "error")
Deserializer = Callable[[bytes | None], Any]

log = logging.getLogger("liferaft.consumer")

CommittedLookup = Callable[[list[TopicPartition]], Awaitable[dict[TopicPartition, int]]]


def decode_fetch(tp: TopicPartition, offset: int, data: bytes) -> list[ConsumerRecord[Any, Any]]:
    """Records of a Fetch answer at or after `offset`. The first batch may start earlier."""
    out: list[ConsumerRecord[Any, Any]] = []
    try:
        for r in records.iter_records(data):
            if r.offset < offset:
                continue
            out.append(
                ConsumerRecord(
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=r.offset,
                    timestamp=r.timestamp_ms,
                    timestamp_type=r.timestamp_type,
                    key=r.key,
                    value=r.value,
                    serialized_key_size=len(r.key) if r.key is not None else -1,
                    serialized_value_size=len(r.value) if r.value is not None else -1,
                    headers=r.headers,
                )
            )
    except records.UnsupportedBatchError as e:
        raise InvalidRecordError(None, f"{tp} at offset {offset}: {e}") from e
    except records.CorruptBatchError as e:
        raise CorruptMessageError(None, f"{tp} at offset {offset}: {e}") from e
    return out


RECORD_OVERHEAD_BYTES = 64
"""What a buffered record counts for beyond its key and value (so empty records count too)."""


def _size(rec: ConsumerRecord[Any, Any]) -> int:
    return (
        max(rec.serialized_key_size, 0) + max(rec.serialized_value_size, 0) + RECORD_OVERHEAD_BYTES
    )


class _Watchdog:
    """Gives up on a fetch stream's read that stays silent for `silent_s`: it cancels the
    reading task, and `barked()` tells that cancellation from anyone else's.

    One timer per stream, moved on lazily when it fires early, instead of an asyncio.timeout
    (a timer, a context object and a cancellation to undo) around every answer's read (issue 18:
    the consumer's work per answer). Only time spent in a read counts: a reader waiting for
    room in the buffer (flow control) is not silent."""

    __slots__ = ("_cancelled", "_handle", "_loop", "_since", "_task", "silent_s")

    def __init__(self, silent_s: float) -> None:
        self.silent_s = silent_s
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._since: float | None = None  # when the read under way began; None: no read
        self._cancelled = False
        self._handle = self._loop.call_later(silent_s, self._check)

    def reading(self) -> None:
        self._since = self._loop.time()

    def idle(self) -> None:
        self._since = None

    def _check(self) -> None:
        now = self._loop.time()
        since = self._since
        if since is None or now < since + self.silent_s:
            due = now + self.silent_s if since is None else since + self.silent_s
            self._handle = self._loop.call_at(due, self._check)
            return
        self._cancelled = True
        self._task.cancel()

    def barked(self) -> bool:
        """Whether the cancellation being handled is the watchdog's alone (it is undone)."""
        if not self._cancelled:
            return False
        self._cancelled = False
        return self._task.uncancel() == 0

    def stop(self) -> None:
        self._handle.cancel()


@dataclass(slots=True)
class _PartitionFetch:
    """The fetcher's part of one assigned partition (its position lives in `owner`)."""

    owner: TopicPartitionState
    buffer: deque[ConsumerRecord[Any, Any]] = field(default_factory=deque)
    """Fetched records not yet handed out, contiguous from owner.position."""
    buffered_bytes: int = 0
    room: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while the buffer has room for another answer (the reader waits for it)."""
    task: asyncio.Task[None] | None = None
    """The reader: the partition's stream (or unary fetches), while it runs."""
    error: BaseException | None = None
    """A fetch's failure, raised by the next getmany for this partition."""
    out_of_range: bool = False
    """The next offset was out of range: reset the position (auto_offset_reset) once the
    buffer is handed out."""

    def __post_init__(self) -> None:
        self.room.set()

    def next_fetch_offset(self) -> int | None:
        if self.buffer:
            return self.buffer[-1].offset + 1
        return self.owner.position

    def add(self, recs: list[ConsumerRecord[Any, Any]], limit: int) -> None:
        self.buffer.extend(recs)
        self.buffered_bytes += sum(map(_size, recs))
        if self.buffered_bytes >= limit:
            self.room.clear()

    def taken(self, rec: ConsumerRecord[Any, Any], limit: int) -> None:
        self.buffered_bytes -= _size(rec)
        if self.buffered_bytes < limit:
            self.room.set()

    def clear(self) -> None:
        self.buffer.clear()
        self.buffered_bytes = 0
        self.room.set()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None


class Fetcher:
    """Fetches, buffers and hands out records of the assigned partitions; finds positions."""

    def __init__(
        self,
        ready: Callable[[], Awaitable[Cluster]],
        subscription: SubscriptionState,
        *,
        auto_offset_reset: AutoOffsetReset,
        fetch_max_wait_ms: int,
        fetch_max_bytes: int,
        fetch_min_bytes: int,
        max_poll_records: int,
        request_timeout_ms: int = 30_000,
        key_deserializer: Deserializer | None = None,
        value_deserializer: Deserializer | None = None,
    ) -> None:
        self._ready = ready
        self._subscription = subscription
        self.auto_offset_reset: AutoOffsetReset = auto_offset_reset
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_max_bytes = fetch_max_bytes
        self.fetch_min_bytes = fetch_min_bytes
        self.max_poll_records = max_poll_records
        self._key_deserializer = key_deserializer
        self._value_deserializer = value_deserializer
        self.committed_lookup: CommittedLookup | None = None
        """How to read the group's committed offsets (set by the consumer when it has a group)."""
        self._parts: dict[TopicPartition, _PartitionFetch] = {}
        self.wakeup = asyncio.Event()
        """Set when a fetch lands, the assignment changes, or the consumer closes."""
        self._silence_ms = request_timeout_ms
        """How much longer than fetch_max_wait_ms a stream may stay silent before it is
        given up and reopened."""
        self._rotation = 0  # which partition getmany drains first, for fairness
        self.closed = False

    # -- keeping up with the assignment ----------------------------------------------------------
    def _part(self, tp: TopicPartition) -> _PartitionFetch | None:
        """tp's fetch state for its current assignment (None if not assigned)."""
        owner = self._subscription.state_or_none(tp)
        if owner is None:
            return None
        pf = self._parts.get(tp)
        if pf is None or pf.owner is not owner:
            if pf is not None:
                pf.cancel()
            pf = self._parts[tp] = _PartitionFetch(owner)
        return pf

    def prune(self) -> None:
        """Drop the fetches and buffers of partitions no longer assigned (or assigned anew)."""
        for tp, pf in list(self._parts.items()):
            if self._subscription.state_or_none(tp) is not pf.owner:
                pf.cancel()
                del self._parts[tp]
        self.wakeup.set()

    def pause(self, tp: TopicPartition) -> None:
        """Stop fetching tp (what is buffered stays for resume)."""
        pf = self._part(tp)
        if pf is not None:
            pf.cancel()

    async def close(self) -> None:
        self.closed = True
        tasks = [pf.task for pf in self._parts.values() if pf.task is not None]
        for pf in self._parts.values():
            pf.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.wakeup.set()

    # -- positions -------------------------------------------------------------------------------
    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read `tp` from `offset` next: drop what was fetched for the old position."""
        self._subscription.seek(tp, offset)
        pf = self._part(tp)
        assert pf is not None
        pf.cancel()
        pf.clear()
        pf.error = None
        pf.out_of_range = False
        self.wakeup.set()

    async def seek_to(
        self, where: Literal["earliest", "latest"], tps: Iterable[TopicPartition]
    ) -> None:
        todo = list(tps)
        for tp in todo:
            self._subscription.state(tp)
        cluster = await self._ready()
        found = await asyncio.gather(*(list_offset(cluster, tp, where) for tp in todo))
        for tp, answer in zip(todo, found, strict=True):
            if self._subscription.is_assigned(tp):
                self.seek(tp, answer.offset)

    async def position(self, tp: TopicPartition) -> int:
        st = self._subscription.state(tp)
        if st.position is None:
            await self.resolve_positions([tp])
        st = self._subscription.state(tp)
        assert st.position is not None
        return st.position

    async def resolve_positions(self, tps: Iterable[TopicPartition]) -> None:
        """Give a position to each of `tps` that has none: the group's committed offset, else
        per auto_offset_reset."""
        sub = self._subscription

        def unresolved() -> list[TopicPartition]:
            return [tp for tp in tps if (st := sub.state_or_none(tp)) and st.position is None]

        todo = unresolved()
        if not todo:
            return
        cluster = await self._ready()
        if self.committed_lookup is not None:
            committed = await self.committed_lookup(todo)
            for tp, offset in committed.items():
                st = sub.state_or_none(tp)
                if st is not None and st.position is None:
                    st.position = offset
                    st.last_committed = offset
            todo = unresolved()
            if not todo:
                return
        policy = self.auto_offset_reset
        if policy in ("none", "error"):
            raise NoOffsetForPartitionError(
                None,
                f"{', '.join(map(str, todo))}: no committed offset and auto_offset_reset is "
                f"{policy!r}: seek first (or commit an offset for the group)",
            )
        spec: Literal["earliest", "latest"] = "earliest" if policy == "earliest" else "latest"
        found = await asyncio.gather(*(list_offset(cluster, tp, spec) for tp in todo))
        for tp, answer in zip(todo, found, strict=True):
            st = sub.state_or_none(tp)
            if st is not None and st.position is None:  # not re-seeked meanwhile
                st.position = answer.offset

    # -- offset look-ups (no change of position) -------------------------------------------------
    async def list_offsets(
        self, specs: Mapping[TopicPartition, OffsetSpec]
    ) -> dict[TopicPartition, OffsetAndTimestamp]:
        cluster = await self._ready()
        tps = list(specs)
        found = await asyncio.gather(*(list_offset(cluster, tp, specs[tp]) for tp in tps))
        return dict(zip(tps, found, strict=True))

    # -- fetching --------------------------------------------------------------------------------
    async def getmany(
        self, explicit: list[TopicPartition], timeout_ms: int, max_records: int | None
    ) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        cluster = await self._ready()
        for tp in explicit:
            self._subscription.state(tp)
        limit = max_records if max_records is not None else self.max_poll_records
        if limit < 1:
            raise ValueError("max_records must be >= 1")
        self._subscription.begin_poll()
        deadline = time.monotonic() + max(0, timeout_ms) / 1000
        while True:
            self.prune()
            self.wakeup.clear()
            # A group member's partitions may change while it waits: look again each time.
            tps = self._subscription.fetchable(
                explicit or [tp for tp, _ in self._subscription.items()]
            )
            drained = self._drain(tps, limit)
            if drained:
                return drained
            self._raise_errors(tps)
            if self.closed:
                return {}
            self._reset_out_of_range(tps)
            await self.resolve_positions(tps)
            self._start_fetches(cluster, self._subscription.fetchable(tps))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {}
            # A timer that sets the wake-up event, not asyncio.timeout (a context object and a
            # cancellation to undo per wait) nor wait_for (a task): the loop above returns {}
            # once the time is up (issue 18: the consumer's work per answer).
            alarm = asyncio.get_running_loop().call_later(remaining, self.wakeup.set)
            try:
                await self.wakeup.wait()
            finally:
                alarm.cancel()

    def _deserialize(self, rec: ConsumerRecord[Any, Any]) -> ConsumerRecord[Any, Any]:
        kd, vd = self._key_deserializer, self._value_deserializer
        if kd is None and vd is None:
            return rec
        # As aiokafka: a deserializer sees every key (value), None included.
        key = kd(rec.key) if kd is not None else rec.key
        value = vd(rec.value) if vd is not None else rec.value
        return dataclasses.replace(rec, key=key, value=value)

    def _drain(
        self, tps: list[TopicPartition], limit: int
    ) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        out: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = {}
        if not tps:
            return out
        start = self._rotation % len(tps)
        self._rotation += 1
        for tp in tps[start:] + tps[:start]:
            pf = self._part(tp)
            if pf is None or not pf.buffer:
                continue
            taken: list[ConsumerRecord[Any, Any]] = []
            failed = False
            while pf.buffer and limit > 0:
                try:
                    rec = self._deserialize(pf.buffer[0])
                except Exception:
                    if out or taken:
                        failed = True  # hand out what came before; the next call raises
                        break
                    raise
                pf.taken(pf.buffer.popleft(), self.fetch_max_bytes)
                taken.append(rec)
                limit -= 1
            if taken:
                pf.owner.position = taken[-1].offset + 1
                out[tp] = taken
            if limit == 0 or failed:
                break
        return out

    def _raise_errors(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            pf = self._part(tp)
            if pf is not None and pf.error is not None:
                error, pf.error = pf.error, None
                raise error

    def _reset_out_of_range(self, tps: list[TopicPartition]) -> None:
        """Partitions whose next offset was out of range and whose buffer is handed out: no
        position, so resolve_positions applies auto_offset_reset."""
        for tp in tps:
            pf = self._part(tp)
            if pf is not None and pf.out_of_range and not pf.buffer:
                pf.out_of_range = False
                pf.owner.position = None

    def _start_fetches(self, cluster: Cluster, tps: list[TopicPartition]) -> None:
        for tp in tps:
            pf = self._part(tp)
            if (
                pf is None
                or pf.task is not None
                or pf.error is not None
                or pf.out_of_range
                or pf.owner.position is None
            ):
                continue
            task = asyncio.ensure_future(self._read(cluster, tp, pf))
            pf.task = task
            task.add_done_callback(functools.partial(self._reader_done, tp, pf))

    def _current(self, tp: TopicPartition, pf: _PartitionFetch) -> bool:
        return self._parts.get(tp) is pf and self._subscription.state_or_none(tp) is pf.owner

    async def _read(self, cluster: Cluster, tp: TopicPartition, pf: _PartitionFetch) -> None:
        """The partition's reader: a FetchStream from the next offset not yet fetched, its
        answers into the buffer while there is room; reopened where it broke if it breaks.
        Ends when the partition moves on (seek, new assignment: cancelled), or with an error
        for getmany to raise."""
        while True:
            await pf.room.wait()
            offset = pf.next_fetch_offset()
            if offset is None or not self._current(tp, pf):
                return
            request = broker_pb2.FetchRequest(
                topic=tp.topic,
                partition=tp.partition,
                offset=offset,
                max_bytes=self.fetch_max_bytes,
                max_wait_ms=self.fetch_max_wait_ms,
                min_bytes=self.fetch_min_bytes,
            )
            try:
                opened = await cluster.open_leader_stream(
                    tp.topic,
                    tp.partition,
                    "FetchStream",
                    "Fetch",
                    request,
                    extra_attempt_ms=self.fetch_max_wait_ms,
                )
            except LiferaftError as e:
                self._failed(tp, pf, e)
                return
            call, answer = opened.call, opened.first
            watch = (
                _Watchdog((self.fetch_max_wait_ms + self._silence_ms) / 1000)
                if call is not None
                else None
            )
            try:
                while True:
                    next_offset = self._take(tp, pf, offset, answer)
                    if next_offset is None:
                        return  # stale, or a bad batch (pf.error says)
                    offset = next_offset
                    if call is None or watch is None:
                        break  # a unary answer: the next one is a new call
                    await pf.room.wait()
                    answer = await self._next_answer(call, watch)
            except grpc.RpcError as e:
                err = cluster.leader_call_failed(opened.address, tp.topic, tp.partition, e)
                if not err.retriable:
                    self._failed(tp, pf, err)
                    return
                log.debug("the fetch stream of %s broke (%s): reopening at %d", tp, err, offset)
            except LiferaftError as e:  # the stream ended (on a stream listener: its END) or
                # went silent
                cluster.leader_call_failed(opened.address, tp.topic, tp.partition, e)
                if not e.retriable:
                    self._failed(tp, pf, e)
                    return
                log.debug("the fetch stream of %s broke (%s): reopening at %d", tp, e, offset)
            finally:
                if watch is not None:
                    watch.stop()
                if call is not None:
                    call.cancel()

    async def _next_answer(self, call: Any, watch: _Watchdog) -> broker_pb2.FetchResponse:
        """The stream's next answer. The node sends one at least every fetch_max_wait_ms (an
        empty one with the high watermark when there is nothing new): one that stays silent
        much longer is as good as gone (the stream's watchdog cancels the read)."""
        watch.reading()
        try:
            answer = await call.read()
        except asyncio.CancelledError:
            if not watch.barked():
                raise  # someone else's cancellation (a seek, pause, close)
            error = RequestTimedOutError(
                None,
                f"the fetch stream was silent for {int(watch.silent_s * 1000)} ms",
                retriable=True,
                invalid_metadata=True,
            )
            error.transport = True
            raise error from None
        finally:
            watch.idle()
        if answer is grpc.aio.EOF:
            ended = BrokerUnavailableError(
                None, "the node ended the fetch stream", retriable=True, invalid_metadata=True
            )
            ended.transport = True
            raise ended
        return cast(broker_pb2.FetchResponse, answer)

    def _take(
        self,
        tp: TopicPartition,
        pf: _PartitionFetch,
        offset: int,
        response: broker_pb2.FetchResponse,
    ) -> int | None:
        """Buffer an answer fetched from `offset`: the next offset to expect, or None if the
        answer is no longer wanted (the partition moved on) or failed to decode."""
        if not self._current(tp, pf) or offset != pf.next_fetch_offset():
            return None
        pf.owner.highwater = response.high_watermark
        pf.owner.log_start_offset = response.log_start_offset
        pf.owner.last_poll_timestamp_ms = int(time.time() * 1000)
        try:
            recs = decode_fetch(tp, offset, response.records)
        except LiferaftError as e:
            pf.error = e
            self.wakeup.set()
            return None
        if not recs:
            return offset
        pf.add(recs, self.fetch_max_bytes)
        self.wakeup.set()
        return recs[-1].offset + 1

    def _failed(self, tp: TopicPartition, pf: _PartitionFetch, error: BaseException) -> None:
        """The reader ended with `error`: getmany raises it, or resets the position."""
        if not self._current(tp, pf):
            return
        self.wakeup.set()
        if isinstance(error, OffsetOutOfRangeError) and self.auto_offset_reset in (
            "earliest",
            "latest",
        ):
            pf.out_of_range = True  # getmany resolves it per the policy, once the buffer is out
        else:
            pf.error = error

    def _reader_done(
        self, tp: TopicPartition, pf: _PartitionFetch, task: asyncio.Task[None]
    ) -> None:
        if pf.task is task:
            pf.task = None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:  # a bug: raise it from getmany rather than hang the partition
            log.error("the reader of %s failed", tp, exc_info=error)
            self._failed(tp, pf, error)
        elif self._current(tp, pf):
            self.wakeup.set()
