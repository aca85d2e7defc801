"""The consumer: read partitions from their leaders, in order; alone, or in a consumer group.

    async with Consumer("127.0.0.1:9092", group_id="billing", auto_offset_reset="earliest") as c:
        c.subscribe(["orders"])              # the group's coordinator assigns partitions
        async for record in c:               # offsets are committed every 5 s (auto-commit)
            print(record.partition, record.offset, record.value)

    async with Consumer("127.0.0.1:9092") as consumer:   # no group: choose partitions yourself
        consumer.assign([("orders", 0), ("orders", 1)])
        print(await consumer.getmany(timeout_ms=1000))

It is shaped like aiokafka's AIOKafkaConsumer (docs/client.md has the table): the same method
names and options (bootstrap_servers=, client_id, key_deserializer/value_deserializer, *_ms,
subscribe(topics=, pattern=, listener=), start()/stop()), with liferaft's extras kept (lag,
wait_for_assignment, committed_offsets, SyncConsumer). AIOKafkaConsumer (client/compat.py) takes
aiokafka's constructor exactly, topics first.

Groups (docs/consumer-groups.md): queue semantics within a group (each partition, so each
record, is read by one member), pub-sub across groups (each group reads everything). With
auto-commit, the position of what earlier getmany calls (or iterations) returned is committed
every auto_commit_interval_ms, before a partition is given up, and at close: a record is
committed only after the call that returned it is followed by another, so a member that dies
never has a record committed that it had not finished with (at-least-once). commit() commits the
positions of everything returned so far, or the offsets given.

This class is a facade (aiokafka's consumer.py is one too) over three parts, each in its module:
  - client/subscription_state.py: what is subscribed or assigned, and each partition's position;
  - client/fetcher.py: fetching, buffering, handing out records, finding positions;
  - client/coordinator.py: the consumer group (membership, commits) or, without a group, the
    partitions of subscribed topics.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, Unpack

from client.cluster import ClientConfig, Cluster, resolve_bootstrap
from client.coordinator import GroupCoordinator, NoGroupCoordinator, as_offset_and_metadata
from client.fetcher import RESETS, AutoOffsetReset, Deserializer, Fetcher, decode_fetch
from client.group import ConsumerRebalanceListener, OffsetAndMetadata
from client.offsets import OffsetSpec, list_offset
from client.security import Security, SecurityOptions
from client.subscription_state import SubscriptionState
from client.types import ConsumerRecord, Lag, OffsetAndTimestamp, TopicPartition
from liferaft_proto.v1 import broker_pb2

__all__ = ["AutoOffsetReset", "Consumer", "decode_fetch", "partition_lag"]

log = logging.getLogger("liferaft.consumer")

TP = TopicPartition | tuple[str, int]
CommitValue = int | OffsetAndMetadata | tuple[int, str]


class Consumer:
    """Reads records from assigned partitions. Use `async with`, or start() and stop()/close().

    Options are Kafka's (and aiokafka's) consumer settings, in milliseconds and bytes. A few of
    aiokafka's are accepted for porting and have nothing to change here; docs/client.md says
    which and why (isolation_level: no transactions, so read_committed reads the same;
    check_crcs: batches are always checked; heartbeat_interval_ms: the coordinator sets it).
    stream_transport (default True): tail partitions on the nodes' stream listeners where they
    have one (framed TCP instead of gRPC); False: always gRPC.
    """

    def __init__(
        self,
        bootstrap: str | Iterable[str] | None = None,
        *,
        bootstrap_servers: str | Iterable[str] | None = None,
        client_id: str = "liferaft-consumer",
        group_id: str | None = None,
        key_deserializer: Deserializer | None = None,
        value_deserializer: Deserializer | None = None,
        auto_offset_reset: AutoOffsetReset = "latest",
        fetch_max_wait_ms: int = 500,
        fetch_max_bytes: int = 1 << 20,
        fetch_min_bytes: int = 1,
        max_partition_fetch_bytes: int | None = None,
        max_poll_records: int | None = 500,
        request_timeout_ms: int = 30_000,
        delivery_timeout_ms: int = 120_000,
        retry_backoff_ms: int = 100,
        retry_backoff_max_ms: int = 1_000,
        metadata_max_age_ms: int = 300_000,
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5_000,
        session_timeout_ms: int = 10_000,
        exclude_internal_topics: bool = True,
        stream_transport: bool = True,
        # aiokafka's, accepted for porting; nothing to change here (docs/client.md):
        heartbeat_interval_ms: int | None = None,
        max_poll_interval_ms: int | None = None,
        rebalance_timeout_ms: int | None = None,
        consumer_timeout_ms: int | None = None,
        isolation_level: str = "read_uncommitted",
        check_crcs: bool = True,
        api_version: str | None = None,
        **security: Unpack[SecurityOptions],
    ) -> None:
        if group_id is not None and not group_id:
            raise ValueError("group_id must be a non-empty string (or None: no group)")
        if auto_commit_interval_ms < 1:
            raise ValueError("auto_commit_interval_ms must be >= 1")
        if auto_offset_reset not in RESETS:
            raise ValueError(
                f"auto_offset_reset must be one of {RESETS}, not {auto_offset_reset!r}"
            )
        if fetch_max_wait_ms < 1 or fetch_max_bytes < 1 or fetch_min_bytes < 0:
            raise ValueError(
                "fetch_max_wait_ms and fetch_max_bytes must be >= 1, fetch_min_bytes >= 0"
            )
        if max_partition_fetch_bytes is not None:
            if max_partition_fetch_bytes < 1:
                raise ValueError("max_partition_fetch_bytes must be >= 1")
            # One Fetch here reads one partition: the tighter of the two caps applies.
            fetch_max_bytes = min(fetch_max_bytes, max_partition_fetch_bytes)
        if max_poll_records is not None and max_poll_records < 1:
            raise ValueError("max_poll_records must be >= 1 (or None: no limit)")
        if isolation_level not in ("read_uncommitted", "read_committed"):
            raise ValueError(
                "isolation_level must be 'read_uncommitted' or 'read_committed', "
                f"not {isolation_level!r}"
            )
        for key, deserializer in (("key", key_deserializer), ("value", value_deserializer)):
            if deserializer is not None and not callable(deserializer):
                raise TypeError(f"{key}_deserializer must be callable")
        self.max_poll_records = max_poll_records if max_poll_records is not None else 1 << 30
        self.config = ClientConfig.build(
            resolve_bootstrap(bootstrap, bootstrap_servers),
            request_timeout_ms=request_timeout_ms,
            delivery_timeout_ms=delivery_timeout_ms,
            retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms,
            metadata_max_age_ms=metadata_max_age_ms,
            stream_transport=stream_transport,
            security=Security.from_options(security),
        )
        self.group_id = group_id
        self.client_id = client_id
        self.enable_auto_commit = enable_auto_commit and group_id is not None
        self.auto_commit_interval_ms = auto_commit_interval_ms
        self.session_timeout_ms = session_timeout_ms
        self.exclude_internal_topics = exclude_internal_topics
        self._cluster: Cluster | None = None
        self._subscription = SubscriptionState()
        self._fetcher = Fetcher(
            self._ready,
            self._subscription,
            auto_offset_reset=auto_offset_reset,
            fetch_max_wait_ms=fetch_max_wait_ms,
            fetch_max_bytes=fetch_max_bytes,
            fetch_min_bytes=fetch_min_bytes,
            max_poll_records=self.max_poll_records,
            request_timeout_ms=request_timeout_ms,
            key_deserializer=key_deserializer,
            value_deserializer=value_deserializer,
        )
        self._coordinator: GroupCoordinator | NoGroupCoordinator | None = None
        self._closed = False

    # -- settings read by callers --------------------------------------------------------------------
    @property
    def auto_offset_reset(self) -> AutoOffsetReset:
        return self._fetcher.auto_offset_reset

    @property
    def fetch_max_wait_ms(self) -> int:
        return self._fetcher.fetch_max_wait_ms

    @property
    def fetch_max_bytes(self) -> int:
        return self._fetcher.fetch_max_bytes

    @property
    def fetch_min_bytes(self) -> int:
        return self._fetcher.fetch_min_bytes

    # -- life cycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (metadata from a bootstrap node). If the consumer subscribed before start
        (or was given topics, as AIOKafkaConsumer is), join the group now and wait (up to
        request_timeout_ms) for its first assignment, as aiokafka's start() does."""
        if self._closed:
            raise RuntimeError("the consumer is closed")
        if self._cluster is not None:
            return
        cluster = Cluster(self.config)
        try:
            await cluster.start()
        except BaseException:
            await cluster.close()
            raise
        self._cluster = cluster
        coordinator: GroupCoordinator | NoGroupCoordinator
        if self.group_id is not None:
            coordinator = GroupCoordinator(
                cluster,
                self._subscription,
                self._fetcher,
                group_id=self.group_id,
                client_id=self.client_id,
                session_timeout_ms=self.session_timeout_ms,
                enable_auto_commit=self.enable_auto_commit,
                auto_commit_interval_ms=self.auto_commit_interval_ms,
                request_timeout_ms=self.config.request_timeout_ms,
                metadata_max_age_ms=self.config.metadata_max_age_ms,
                exclude_internal_topics=self.exclude_internal_topics,
            )
        else:
            coordinator = NoGroupCoordinator(
                cluster,
                self._subscription,
                self._fetcher,
                metadata_max_age_ms=self.config.metadata_max_age_ms,
                exclude_internal_topics=self.exclude_internal_topics,
            )
        self._coordinator = coordinator
        if self._subscription.auto_assigned:
            coordinator.subscription_changed()
            with contextlib.suppress(TimeoutError):
                await coordinator.wait_for_assignment(self.config.request_timeout_ms)

    async def close(self, *, commit: bool = True) -> None:
        """Stop. In a group with auto-commit (and commit=True), first commit the positions of
        everything returned, then leave the group so its partitions move at once."""
        if self._closed:
            return
        if self._coordinator is not None:
            await self._coordinator.close(commit=commit)
        self._closed = True
        await self._fetcher.close()
        if self._cluster is not None:
            await self._cluster.close()

    async def stop(self) -> None:
        """aiokafka's name for close()."""
        await self.close()

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

    async def _group(self, what: str) -> GroupCoordinator:
        if self.group_id is None:
            raise ValueError(f"{what} needs a group_id")
        await self._ready()
        assert isinstance(self._coordinator, GroupCoordinator)
        return self._coordinator

    # -- metadata --------------------------------------------------------------------------------
    async def partitions_for(self, topic: str) -> tuple[int, ...]:
        """The topic's partition numbers (raises UnknownTopicOrPartitionError)."""
        cluster = await self._ready()
        return await cluster.partitions_for(topic)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """aiokafka's: the topic's partition numbers from the metadata already known, without
        asking (None if the topic is not known, or before start())."""
        if self._cluster is None:
            return None
        found = self._cluster.metadata.partitions_for(topic)
        return set(found) if found is not None else None

    async def topics(self) -> set[str]:
        """Every topic's name, from fresh metadata (internal ones only if
        exclude_internal_topics=False)."""
        cluster = await self._ready()
        metadata = await cluster.refresh_metadata()
        return {
            name
            for name, tm in metadata.topics.items()
            if not (tm.is_internal and self.exclude_internal_topics)
        }

    # -- assignment and positions ----------------------------------------------------------------
    def assign(self, partitions: Iterable[TP]) -> None:
        """Read exactly these partitions from now on (replacing any earlier assignment).
        Partitions kept from the earlier assignment keep their positions. Not with subscribe():
        a group member's partitions are the coordinator's to choose. With a group_id, a
        partition without a position starts at the group's committed offset."""
        self._subscription.assign_from_user([TopicPartition(*tp) for tp in partitions])
        self._fetcher.prune()

    def assignment(self) -> set[TopicPartition]:
        return self._subscription.assigned_partitions()

    def seek(self, tp: TP, offset: int) -> None:
        """Read `tp` from `offset` next."""
        self._fetcher.seek(TopicPartition(*tp), offset)

    async def seek_to_beginning(self, *partitions: TP) -> None:
        """Move to the log start of these partitions (all assigned ones if none given)."""
        await self._fetcher.seek_to("earliest", self._partitions_or_all(partitions))

    async def seek_to_end(self, *partitions: TP) -> None:
        """Move to the high watermark: only records produced from now on will be read."""
        await self._fetcher.seek_to("latest", self._partitions_or_all(partitions))

    async def seek_to_committed(self, *partitions: TP) -> dict[TopicPartition, int | None]:
        """Move to the group's committed offsets (all assigned partitions if none given);
        returns them, None where nothing is committed (that partition does not move)."""
        group = await self._group("seek_to_committed()")
        tps = self._partitions_or_all(partitions)
        for tp in tps:
            self._subscription.state(tp)
        found = await group.fetch_committed(tps)
        out: dict[TopicPartition, int | None] = {}
        for tp in tps:
            om = found.get(tp)
            out[tp] = om.offset if om is not None else None
            if om is not None and self._subscription.is_assigned(tp):
                self._fetcher.seek(tp, om.offset)
        return out

    def _partitions_or_all(self, partitions: tuple[TP, ...]) -> list[TopicPartition]:
        return [TopicPartition(*tp) for tp in partitions] or sorted(self.assignment())

    async def position(self, tp: TP) -> int:
        """The offset of the next record getmany would return for `tp` (resolving the
        auto_offset_reset policy first if the partition has no position yet)."""
        return await self._fetcher.position(TopicPartition(*tp))

    def highwater(self, tp: TP) -> int | None:
        """The partition's high watermark as of the last fetch answer (None before one)."""
        return self._subscription.state(tp).highwater

    def last_stable_offset(self, tp: TP) -> int | None:
        """aiokafka's: the offset below which every transaction has ended. liferaft has no
        transactions, so it is the high watermark (None before the first fetch answer)."""
        return self.highwater(tp)

    def last_poll_timestamp(self, tp: TP) -> int | None:
        """When (ms since the epoch) the last fetch answer for `tp` arrived (None before one)."""
        return self._subscription.state(tp).last_poll_timestamp_ms

    # -- offset look-ups (positions do not move) -------------------------------------------------
    async def beginning_offsets(self, partitions: Iterable[TP]) -> dict[TopicPartition, int]:
        """The first offset still in each partition's log (its log start)."""
        found = await self._fetcher.list_offsets(
            {TopicPartition(*tp): "earliest" for tp in partitions}
        )
        return {tp: o.offset for tp, o in found.items()}

    async def end_offsets(self, partitions: Iterable[TP]) -> dict[TopicPartition, int]:
        """Each partition's high watermark: the offset the next record written will get."""
        found = await self._fetcher.list_offsets(
            {TopicPartition(*tp): "latest" for tp in partitions}
        )
        return {tp: o.offset for tp, o in found.items()}

    async def offsets_for_times(
        self, timestamps: Mapping[TP, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """For each partition, the first record whose timestamp is at or after the one given
        (ms since the epoch): its offset and timestamp; None if there is no such record."""
        specs: dict[TopicPartition, OffsetSpec] = {}
        for tp, ts in timestamps.items():
            if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
                raise ValueError(
                    f"the timestamp for {TopicPartition(*tp)} must be an int >= 0, not {ts!r}"
                )
            specs[TopicPartition(*tp)] = ts
        found = await self._fetcher.list_offsets(specs)
        return {tp: (o if o.offset >= 0 else None) for tp, o in found.items()}

    # -- fetching --------------------------------------------------------------------------------
    async def getmany(
        self,
        *partitions: TP,
        timeout_ms: int = 0,
        max_records: int | None = None,
    ) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        """Records from these partitions (all assigned ones if none given), in offset order per
        partition: what is buffered at once, else what arrives within `timeout_ms`; {} if
        nothing did. Raises the error of a partition whose fetch failed for good."""
        explicit = [TopicPartition(*tp) for tp in partitions]
        return await self._fetcher.getmany(explicit, timeout_ms, max_records)

    async def getone(self, *partitions: TP) -> ConsumerRecord[Any, Any]:
        """The next record, waiting as long as it takes."""
        while True:
            got = await self.getmany(*partitions, timeout_ms=self.fetch_max_wait_ms, max_records=1)
            for recs in got.values():
                return recs[0]

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> ConsumerRecord[Any, Any]:
        while not self._closed:
            got = await self.getmany(timeout_ms=self.fetch_max_wait_ms, max_records=1)
            for recs in got.values():
                return recs[0]
        raise StopAsyncIteration

    # -- pausing ---------------------------------------------------------------------------------
    def pause(self, *partitions: TP) -> None:
        """Stop returning (and fetching) records of these partitions until resume(); their
        positions stay. A group member keeps paused partitions (its heartbeats go on)."""
        for tp in partitions:
            self._subscription.pause(TopicPartition(*tp))
            self._fetcher.pause(TopicPartition(*tp))

    def resume(self, *partitions: TP) -> None:
        for tp in partitions:
            self._subscription.resume(TopicPartition(*tp))
        self._fetcher.wakeup.set()

    def paused(self) -> set[TopicPartition]:
        return self._subscription.paused_partitions()

    # -- subscriptions ---------------------------------------------------------------------------
    def subscribe(
        self,
        topics: Iterable[str] = (),
        pattern: str | re.Pattern[str] | None = None,
        listener: ConsumerRebalanceListener | None = None,
    ) -> None:
        """Read these topics, or every topic whose whole name matches `pattern` (a regex; the
        topics are found again at every metadata refresh, metadata_max_age_ms). With a
        group_id, the group's coordinator assigns the partitions and moves them as members come
        and go; without one, this consumer reads every partition of the topics. Replaces any
        earlier subscription. Before start() too: start() then joins and waits."""
        if isinstance(topics, str):
            raise TypeError("topics must be a list of names, not one str")
        names = set(topics)
        if bool(names) == (pattern is not None):
            raise ValueError("subscribe to topics or to a pattern (one of the two)")
        if pattern is not None:
            try:
                compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
            except re.error as e:
                raise ValueError(f"{pattern!r} is not a valid pattern: {e}") from e
            self._subscription.subscribe_pattern(compiled, listener)
        else:
            self._subscription.subscribe(names, listener)
        if self._coordinator is not None:
            self._coordinator.subscription_changed()

    def subscription(self) -> set[str]:
        """The topics subscribed to (for a pattern: those it matched at the last refresh)."""
        return set(self._subscription.topics)

    def unsubscribe(self) -> None:
        """Stop reading: drop the subscription (or manual assignment) and every partition. A
        group member commits what it consumed (with auto-commit) and leaves the group, in the
        background (close() waits for it)."""
        positions = self._subscription.positions_to_commit(
            self._subscription.assigned_partitions(), use_committable=False
        )
        self._subscription.unsubscribe()
        self._fetcher.prune()
        if isinstance(self._coordinator, GroupCoordinator):
            self._coordinator.unsubscribed(positions)
        elif self._coordinator is not None:
            self._coordinator.subscription_changed()

    @property
    def member_id(self) -> str | None:
        """This member's id in its group (None before it joined, or without a group)."""
        if isinstance(self._coordinator, GroupCoordinator):
            return self._coordinator.member_id
        return None

    async def wait_for_assignment(self, timeout_ms: int = 30_000) -> set[TopicPartition]:
        """Wait until the coordinator has given this member something (or answered that it has
        nothing for it); returns the assignment."""
        await self._ready()
        if self._coordinator is not None:
            await self._coordinator.wait_for_assignment(timeout_ms)
        return self.assignment()

    # -- commits ---------------------------------------------------------------------------------
    async def commit(self, offsets: Mapping[TP, CommitValue] | None = None) -> None:
        """Commit offsets to the group: the given ones (the NEXT offset to read per partition:
        an int, OffsetAndMetadata, or aiokafka's (offset, metadata)), or the positions of every
        assigned partition (everything returned so far).

        Raises CommitFailedError when the partitions are no longer this member's (its session
        ended, or they moved), OffsetOutOfRangeError for an offset past the high watermark."""
        group = await self._group("commit()")
        if offsets is None:
            sub = self._subscription
            todo = {
                tp: OffsetAndMetadata(offset=o)
                for tp, o in sub.positions_to_commit(
                    sub.assigned_partitions(), use_committable=False
                ).items()
            }
        else:
            todo = {TopicPartition(*tp): as_offset_and_metadata(o) for tp, o in offsets.items()}
        await group.commit(todo)

    async def committed(self, tp: TP) -> int | None:
        """The group's committed offset of `tp` (the next offset it will read), or None."""
        om = await self.committed_offsets([tp])
        found = om.get(TopicPartition(*tp))
        return found.offset if found is not None else None

    async def committed_offsets(
        self, partitions: Iterable[TP] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """The group's committed offsets (with metadata) of these partitions, or of all."""
        group = await self._group("committed()")
        tps = [TopicPartition(*tp) for tp in partitions] if partitions is not None else None
        return await group.fetch_committed(tps)

    # -- lag -------------------------------------------------------------------------------------
    async def lag(self, tp: TP, *, committed: bool = False) -> Lag:
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

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._cluster else "new"
        parts = len(self._subscription.assigned_partitions())
        return f"<Consumer {','.join(self.config.bootstrap)} {parts} partitions {state}>"


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
