"""The consumer: read partitions from their leaders, in order; alone, or in a consumer group.

    async with Consumer("127.0.0.1:9092", group_id="billing", auto_offset_reset="earliest") as c:
        c.subscribe(["orders"])              # the group's coordinator assigns partitions
        async for record in c:               # offsets are committed every 5 s (auto-commit)
            print(record.partition, record.offset, record.value)

    async with Consumer("127.0.0.1:9092") as consumer:   # no group: choose partitions yourself
        consumer.assign([("orders", 0), ("orders", 1)])
        print(await consumer.getmany(timeout_ms=1000))

Groups (client/group.py): queue semantics within a group (each partition, so each record, is
read by one member), pub-sub across groups (each group reads everything). With auto-commit, the
position of what earlier getmany calls (or iterations) returned is committed every
auto_commit_interval_ms, before a partition is given up, and at close: a record is committed
only after the call that returned it is followed by another, so a member that dies never has a
record committed that it had not finished with (at-least-once). commit() commits the positions
of everything returned so far, or the offsets given.

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
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Unpack

from client.cluster import ClientConfig, Cluster
from client.errors import (
    CorruptMessageError,
    InvalidRecordError,
    LiferaftError,
    OffsetOutOfRangeError,
)
from client.group import (
    ConsumerRebalanceListener,
    CoordinatorClient,
    GroupMembership,
    OffsetAndMetadata,
    fetch_committed,
)
from client.offsets import list_offset
from client.security import Security, SecurityOptions
from client.types import ConsumerRecord, Lag, TopicPartition
from liferaft_proto import records
from liferaft_proto.v1 import broker_pb2

__all__ = ["AutoOffsetReset", "Consumer", "partition_lag"]

log = logging.getLogger("liferaft.consumer")

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
    paused: bool = False
    committable: int | None = None
    """The position as of the start of the latest getmany: what earlier calls returned, which
    the application has finished with. Auto-commit commits this."""
    last_committed: int | None = None

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
        group_id: str | None = None,
        client_id: str = "liferaft-consumer",
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5_000,
        session_timeout_ms: int = 10_000,
        **security: Unpack[SecurityOptions],
    ) -> None:
        if group_id is not None and not group_id:
            raise ValueError("group_id must be a non-empty string (or None: no group)")
        if auto_commit_interval_ms < 1:
            raise ValueError("auto_commit_interval_ms must be >= 1")
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
            security=Security.from_options(security),
        )
        self._cluster: Cluster | None = None
        self._parts: dict[TopicPartition, _PartitionState] = {}
        self._wakeup = asyncio.Event()
        self._rotation = 0  # which partition getmany drains first, for fairness
        self._closed = False
        self.group_id = group_id
        self.client_id = client_id
        self.enable_auto_commit = enable_auto_commit and group_id is not None
        self.auto_commit_interval_ms = auto_commit_interval_ms
        self.session_timeout_ms = session_timeout_ms
        self._coordinator: CoordinatorClient | None = None
        self._membership: GroupMembership | None = None
        self._listener: ConsumerRebalanceListener | None = None
        self._auto_commit_task: asyncio.Task[None] | None = None

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

    async def close(self, *, commit: bool = True) -> None:
        """Stop. In a group with auto-commit (and commit=True), first commit the positions of
        everything returned, then leave the group so its partitions move at once."""
        if self._closed:
            return
        if self._auto_commit_task is not None:
            self._auto_commit_task.cancel()
        if self._cluster is not None and self.group_id is not None:
            if commit and self.enable_auto_commit:
                try:
                    await self._commit_positions(use_committable=False)
                except LiferaftError as e:
                    log.warning("group %s: final commit failed: %s", self.group_id, e)
            if self._membership is not None:
                await self._membership.leave()
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
        Partitions kept from the earlier assignment keep their positions. Not with subscribe():
        a group member's partitions are the coordinator's to choose. With a group_id, a
        partition without a position starts at the group's committed offset."""
        if self._membership is not None:
            raise RuntimeError("this consumer subscribed to a group: assign() is not for it")
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
        todo = [tp for tp in tps if tp in self._parts and self._parts[tp].position is None]
        if not todo:
            return
        if self.group_id is not None:
            committed = await fetch_committed(
                self._coordinator_client(cluster), todo, self.config.request_timeout_ms
            )
            for tp, om in committed.items():
                st = self._parts.get(tp)
                if st is not None and st.position is None and st.reset is None:
                    st.position = om.offset
                    st.last_committed = om.offset
            todo = [tp for tp in todo if tp in self._parts and self._parts[tp].position is None]
            if not todo:
                return
        specs: list[Literal["earliest", "latest"]] = []
        todo = [tp for tp in todo if tp in self._parts]
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
        explicit = [TopicPartition(*tp) for tp in partitions]
        for tp in explicit:
            self._state(tp)
        limit = max_records if max_records is not None else self.max_poll_records
        if limit < 1:
            raise ValueError("max_records must be >= 1")
        for st in self._parts.values():
            st.committable = st.position  # what earlier calls returned is processed now
        deadline = time.monotonic() + max(0, timeout_ms) / 1000
        while True:
            self._wakeup.clear()
            # A group member's partitions may change while it waits: look again each time.
            tps = [
                tp
                for tp in (explicit or list(self._parts))
                if tp in self._parts and not self._parts[tp].paused
            ]
            drained = self._drain(tps, limit)
            if drained:
                return drained
            self._raise_errors(tps)
            if self._closed:
                return {}
            await self._resolve_positions(tps)
            tps = [tp for tp in tps if tp in self._parts]
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

    # -- pausing ---------------------------------------------------------------------------------
    def pause(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        """Stop returning (and fetching) records of these partitions until resume(); their
        positions stay. A group member keeps paused partitions (its heartbeats go on)."""
        for tp in partitions:
            st = self._state(tp)
            st.paused = True
            st.cancel_fetch()

    def resume(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        for tp in partitions:
            self._state(tp).paused = False
        self._wakeup.set()

    def paused(self) -> set[TopicPartition]:
        return {tp for tp, st in self._parts.items() if st.paused}

    # -- groups --------------------------------------------------------------------------------
    def subscribe(
        self, topics: Iterable[str], *, listener: ConsumerRebalanceListener | None = None
    ) -> None:
        """Join the consumer group (group_id) reading these topics: its coordinator assigns the
        partitions, and moves them as members come and go. Call before reading."""
        if self.group_id is None:
            raise ValueError("subscribe() needs a group_id (or use assign() without a group)")
        names = sorted(set(topics))
        if not names:
            raise ValueError("subscribe to at least one topic")
        if self._membership is None and self._parts:
            raise RuntimeError("this consumer has a manual assignment: it cannot subscribe too")
        self._listener = listener
        if self._membership is None:
            self._membership = GroupMembership(
                self._cluster_or_raise(),
                self.group_id,
                client_id=self.client_id,
                session_timeout_ms=self.session_timeout_ms,
                on_assign=self._on_assigned,
                on_revoke=self._on_revoked,
            )
            if self.enable_auto_commit:
                self._auto_commit_task = asyncio.ensure_future(self._auto_commit())
        self._membership.start(names)

    def subscription(self) -> set[str]:
        return set(self._membership.topics) if self._membership is not None else set()

    @property
    def member_id(self) -> str | None:
        """This member's id in its group (None before it joined, or without a group)."""
        m = self._membership
        return m.member_id if m is not None and m.member_id else None

    async def wait_for_assignment(self, timeout_ms: int = 30_000) -> set[TopicPartition]:
        """Wait until the coordinator has given this member something (or answered that it has
        nothing for it); returns the assignment."""
        if self._membership is None:
            return self.assignment()
        await asyncio.wait_for(self._membership.joined.wait(), timeout_ms / 1000)
        return self.assignment()

    def _cluster_or_raise(self) -> Cluster:
        if self._cluster is None:
            raise RuntimeError("start the consumer first (async with, or await start())")
        return self._cluster

    def _coordinator_client(self, cluster: Cluster) -> CoordinatorClient:
        if self._membership is not None:
            return self._membership.coordinator
        if self._coordinator is None:
            assert self.group_id is not None
            self._coordinator = CoordinatorClient(cluster, self.group_id)
        return self._coordinator

    async def _on_assigned(self, added: set[TopicPartition]) -> None:
        for tp in added:
            self._parts.setdefault(tp, _PartitionState())
        self._wakeup.set()
        if self._listener is not None:
            await self._listener.on_partitions_assigned(set(added))

    async def _on_revoked(self, revoked: set[TopicPartition], may_commit: bool) -> None:
        if self._listener is not None:
            try:
                await self._listener.on_partitions_revoked(set(revoked))
            except Exception:
                log.exception("on_partitions_revoked failed")
        if may_commit and self.enable_auto_commit and self._membership is not None:
            offsets = self._positions(revoked, use_committable=True)
            try:
                await self._membership.commit(
                    offsets, timeout_ms=self.config.request_timeout_ms, retry=False
                )
            except LiferaftError as e:
                log.warning(
                    "group %s: commit before giving up partitions failed: %s", self.group_id, e
                )
        for tp in revoked:
            st = self._parts.pop(tp, None)
            if st is not None:
                st.cancel_fetch()
        self._wakeup.set()

    def _positions(
        self, tps: Iterable[TopicPartition], *, use_committable: bool
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        out: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp in tps:
            st = self._parts.get(tp)
            if st is None:
                continue
            pos = st.committable if use_committable else st.position
            if pos is not None and pos != st.last_committed:
                out[tp] = OffsetAndMetadata(offset=pos)
        return out

    async def _commit_positions(self, *, use_committable: bool) -> None:
        offsets = self._positions(list(self._parts), use_committable=use_committable)
        if offsets:
            await self._commit(offsets)

    async def _auto_commit(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.auto_commit_interval_ms / 1000)
            try:
                await self._commit_positions(use_committable=True)
            except LiferaftError as e:
                log.info("group %s: auto-commit failed (will retry): %s", self.group_id, e)

    async def commit(
        self, offsets: dict[TopicPartition | tuple[str, int], int | OffsetAndMetadata] | None = None
    ) -> None:
        """Commit offsets to the group: the given ones (the NEXT offset to read per partition),
        or the positions of every assigned partition (everything returned so far).

        Raises CommitFailedError when the partitions are no longer this member's (its session
        ended, or they moved), OffsetOutOfRangeError for an offset past the high watermark."""
        if self.group_id is None:
            raise ValueError("commit() needs a group_id")
        await self._ready()
        if offsets is None:
            todo = self._positions(list(self._parts), use_committable=False)
        else:
            todo = {}
            for tp, o in offsets.items():
                om = o if isinstance(o, OffsetAndMetadata) else OffsetAndMetadata(offset=int(o))
                todo[TopicPartition(*tp)] = om
        await self._commit(todo)

    async def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        if not offsets:
            return
        cluster = await self._ready()
        if self._membership is not None:
            await self._membership.commit(offsets, timeout_ms=self.config.request_timeout_ms)
        else:
            request = broker_pb2.CommitOffsetsRequest(
                group_id=self.group_id,
                member_id="",
                generation=-1,
                offsets=[
                    broker_pb2.OffsetCommit(
                        topic=tp.topic, partition=tp.partition, offset=o.offset, metadata=o.metadata
                    )
                    for tp, o in sorted(offsets.items())
                ],
            )
            await self._coordinator_client(cluster).call(
                "CommitOffsets", request, timeout_ms=self.config.request_timeout_ms
            )
        for tp, o in offsets.items():
            st = self._parts.get(tp)
            if st is not None:
                st.last_committed = o.offset

    async def committed(self, tp: TopicPartition | tuple[str, int]) -> int | None:
        """The group's committed offset of `tp` (the next offset it will read), or None."""
        om = await self.committed_offsets([tp])
        found = om.get(TopicPartition(*tp))
        return found.offset if found is not None else None

    async def committed_offsets(
        self, partitions: Iterable[TopicPartition | tuple[str, int]] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """The group's committed offsets (with metadata) of these partitions, or of all."""
        if self.group_id is None:
            raise ValueError("committed() needs a group_id")
        cluster = await self._ready()
        tps = [TopicPartition(*tp) for tp in partitions] if partitions is not None else None
        return await fetch_committed(
            self._coordinator_client(cluster), tps, self.config.request_timeout_ms
        )

    # -- lag -----------------------------------------------------------------------------------
    async def lag(self, tp: TopicPartition | tuple[str, int], *, committed: bool = False) -> Lag:
        """How far this consumer is behind on `tp`, as the partition leader computes it: records
        between its position (or, committed=True, the group's committed offset) and the high
        watermark, and the age of the oldest of them."""
        cluster = await self._ready()
        tp = TopicPartition(*tp)
        if committed:
            offset = await self.committed(tp)
            if offset is None:
                offset = (await list_offset(cluster, tp, "earliest")).offset
        else:
            offset = await self.position(tp)
        return await partition_lag(cluster, tp, offset)

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
            if (
                st.fetch is not None
                or st.buffer
                or st.error is not None
                or st.position is None
                or st.paused
            ):
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


async def partition_lag(cluster: Cluster, tp: TopicPartition, offset: int) -> Lag:
    """Ask the partition leader how far `offset` is behind its high watermark."""
    resp = await cluster.call_leader(
        tp.topic,
        tp.partition,
        "PartitionLag",
        broker_pb2.PartitionLagRequest(topic=tp.topic, partition=tp.partition, offset=offset),
    )
    return Lag(
        offset=offset,
        high_watermark=resp.high_watermark,
        records=resp.lag_records,
        ms=resp.lag_ms,
        first_unconsumed_timestamp_ms=resp.first_unconsumed_timestamp_ms,
        leader_epoch=resp.leader_epoch,
    )
