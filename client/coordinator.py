"""The consumer's coordinators: who decides which partitions it reads, and where commits go
(aiokafka's group_coordinator.py: GroupCoordinator and NoGroupCoordinator).

  - GroupCoordinator: a consumer with a group_id. Commits and committed-offset look-ups go to
    the group's coordinator node; once the consumer subscribes, a GroupMembership
    (client/group.py) heartbeats and follows the assignment the coordinator hands out. With
    auto-commit, the positions of what earlier polls returned are committed every
    auto_commit_interval_ms, before a partition is given up, and at close.
  - NoGroupCoordinator: a consumer without a group that subscribed to topics or a pattern reads
    every partition of those topics, and follows new partitions and topics as metadata shows them.

Both follow a pattern subscription: at every metadata refresh (metadata_max_age_ms) the topics
whose names match are found again and the subscription changes with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from client.cluster import Cluster
from client.errors import LiferaftError
from client.fetcher import Fetcher
from client.group import (
    ConsumerRebalanceListener,
    CoordinatorClient,
    GroupMembership,
    OffsetAndMetadata,
    fetch_committed,
)
from client.subscription_state import SubscriptionState
from client.types import TopicPartition
from liferaft_proto.v1 import broker_pb2

__all__ = ["GroupCoordinator", "NoGroupCoordinator", "as_offset_and_metadata"]

log = logging.getLogger("liferaft.consumer")


def as_offset_and_metadata(value: int | OffsetAndMetadata | tuple[int, str]) -> OffsetAndMetadata:
    """commit()'s accepted forms: an offset, OffsetAndMetadata, or aiokafka's (offset, metadata)."""
    if isinstance(value, OffsetAndMetadata):
        return value
    if isinstance(value, tuple):
        offset, metadata = value
        if not isinstance(metadata, str):
            raise ValueError(f"commit metadata must be a str, got {type(metadata).__name__}")
        return OffsetAndMetadata(offset=int(offset), metadata=metadata)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"an offset to commit must be an int, got {value!r}")
    return OffsetAndMetadata(offset=value)


async def _call_listener(
    method: Callable[[set[TopicPartition]], Any], tps: set[TopicPartition]
) -> None:
    """aiokafka's listeners may be plain or async methods: call either."""
    result = method(set(tps))
    if inspect.isawaitable(result):
        await result


class _Base(ABC):
    """What both coordinators share: following the subscription through metadata."""

    def __init__(
        self,
        cluster: Cluster,
        subscription: SubscriptionState,
        fetcher: Fetcher,
        *,
        metadata_max_age_ms: int,
        exclude_internal_topics: bool = True,
    ) -> None:
        self.cluster = cluster
        self.subscription = subscription
        self.fetcher = fetcher
        self.metadata_max_age_ms = metadata_max_age_ms
        self.exclude_internal_topics = exclude_internal_topics
        self._applied = asyncio.Event()  # the subscription met metadata at least once
        self._follow_task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()  # apply the subscription now, not at the next refresh

    @abstractmethod
    def subscription_changed(self) -> None:
        """The consumer subscribed (or unsubscribed): act on it now."""

    def _ensure_following(self) -> None:
        self._kick.set()
        if self._follow_task is None or self._follow_task.done():
            self._follow_task = asyncio.ensure_future(self._follow_metadata())

    async def _follow_metadata(self) -> None:
        """Refresh metadata every metadata_max_age_ms and apply it to the subscription. Errors
        are logged and retried: a consumer must outlive a node's absence."""
        while self.subscription.auto_assigned:
            self._kick.clear()
            try:
                await self.cluster.refresh_metadata()
                await self.metadata_changed()
                self._applied.set()
            except asyncio.CancelledError:
                raise
            except LiferaftError as e:
                log.info("consumer: metadata refresh failed (will retry): %s", e)
            except Exception:
                log.exception("consumer: applying metadata to the subscription failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.metadata_max_age_ms / 1000)

    def _available_topics(self) -> list[str]:
        return [
            n
            for n, tm in self.cluster.metadata.topics.items()
            if not (tm.is_internal and self.exclude_internal_topics)
        ]

    @abstractmethod
    async def metadata_changed(self) -> None:
        """New metadata: match the subscription against it (a pattern may take new topics)."""

    async def stop_following(self) -> None:
        if self._follow_task is not None:
            self._follow_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._follow_task


class NoGroupCoordinator(_Base):
    """Without a group, a subscription means every partition of the subscribed topics."""

    def subscription_changed(self) -> None:
        if self.subscription.auto_assigned:
            self._ensure_following()
        else:
            self._kick.set()

    async def wait_for_assignment(self, timeout_ms: int) -> None:
        if self.subscription.auto_assigned:
            await asyncio.wait_for(self._applied.wait(), timeout_ms / 1000)

    async def close(self, *, commit: bool = True) -> None:
        await self.stop_following()

    async def metadata_changed(self) -> None:
        sub = self.subscription
        if sub.kind == "pattern":
            sub.match_topics(self._available_topics())
        if not sub.auto_assigned:
            return
        wanted = {
            TopicPartition(t, p)
            for t in sub.topics
            if (ps := self.cluster.metadata.partitions_for(t)) is not None
            for p in ps
        }
        held = sub.assigned_partitions()
        revoked, added = held - wanted, wanted - held
        if revoked:
            if sub.listener is not None:
                await _call_listener(sub.listener.on_partitions_revoked, revoked)
            sub.revoke(revoked)
            self.fetcher.prune()
        if added:
            sub.assign_from_subscribed(added)
            self.fetcher.wakeup.set()
            if sub.listener is not None:
                await _call_listener(sub.listener.on_partitions_assigned, added)


class GroupCoordinator(_Base):
    """A consumer group member's side: membership, commits, auto-commit, the listener."""

    def __init__(
        self,
        cluster: Cluster,
        subscription: SubscriptionState,
        fetcher: Fetcher,
        *,
        group_id: str,
        client_id: str,
        session_timeout_ms: int,
        enable_auto_commit: bool,
        auto_commit_interval_ms: int,
        request_timeout_ms: int,
        metadata_max_age_ms: int,
        exclude_internal_topics: bool = True,
    ) -> None:
        super().__init__(
            cluster,
            subscription,
            fetcher,
            metadata_max_age_ms=metadata_max_age_ms,
            exclude_internal_topics=exclude_internal_topics,
        )
        self.group_id = group_id
        self.client_id = client_id
        self.session_timeout_ms = session_timeout_ms
        self.enable_auto_commit = enable_auto_commit
        self.auto_commit_interval_ms = auto_commit_interval_ms
        self.request_timeout_ms = request_timeout_ms
        self._client = CoordinatorClient(cluster, group_id)
        self.membership: GroupMembership | None = None
        self._auto_commit_task: asyncio.Task[None] | None = None
        self._leaving: set[asyncio.Task[None]] = set()
        fetcher.committed_lookup = self.committed_positions

    # -- membership --------------------------------------------------------------------------------
    def subscription_changed(self) -> None:
        sub = self.subscription
        if sub.kind == "pattern":
            self._ensure_following()
        elif sub.kind == "topics":
            self._join(sub.topics)

    async def metadata_changed(self) -> None:
        sub = self.subscription
        if sub.kind == "pattern":
            sub.match_topics(self._available_topics())
            self._join(sub.topics)

    def _join(self, topics: Iterable[str]) -> None:
        """Be a member reading `topics` (none: not a member; the coordinator refuses a member
        without topics)."""
        names = sorted(set(topics))
        if not names:
            if self.membership is not None:
                self._leave_in_background(self.membership, {})
                self.membership = None
            return
        if self.membership is None:
            self.membership = GroupMembership(
                self.cluster,
                self.group_id,
                client_id=self.client_id,
                session_timeout_ms=self.session_timeout_ms,
                on_assign=self._on_assigned,
                on_revoke=self._on_revoked,
            )
            if self.enable_auto_commit and self._auto_commit_task is None:
                self._auto_commit_task = asyncio.ensure_future(self._auto_commit())
        self.membership.start(names)

    def unsubscribed(self, positions: dict[TopicPartition, int]) -> None:
        """The consumer unsubscribed (its partitions are already dropped): commit what it had
        consumed (with auto-commit), then leave the group, in the background (unsubscribe() is
        not async, as in aiokafka); close() waits for it."""
        if self.membership is not None:
            offsets = positions if self.enable_auto_commit else {}
            self._leave_in_background(self.membership, offsets)
            self.membership = None

    def _leave_in_background(
        self, membership: GroupMembership, offsets: dict[TopicPartition, int]
    ) -> None:
        async def leave() -> None:
            if offsets:
                try:
                    await membership.commit(
                        {tp: OffsetAndMetadata(offset=o) for tp, o in offsets.items()},
                        timeout_ms=self.request_timeout_ms,
                        retry=False,
                    )
                except LiferaftError as e:
                    log.warning("group %s: commit before leaving failed: %s", self.group_id, e)
            await membership.leave()

        task = asyncio.ensure_future(leave())
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)

    @property
    def member_id(self) -> str | None:
        m = self.membership
        return m.member_id if m is not None and m.member_id else None

    async def wait_for_assignment(self, timeout_ms: int) -> None:
        if self.membership is not None:
            await asyncio.wait_for(self.membership.joined.wait(), timeout_ms / 1000)

    async def _on_assigned(self, added: set[TopicPartition]) -> None:
        self.subscription.assign_from_subscribed(added)
        self.fetcher.wakeup.set()
        listener: ConsumerRebalanceListener | None = self.subscription.listener
        if listener is not None:
            await _call_listener(listener.on_partitions_assigned, added)

    async def _on_revoked(self, revoked: set[TopicPartition], may_commit: bool) -> None:
        listener: ConsumerRebalanceListener | None = self.subscription.listener
        if listener is not None:
            try:
                await _call_listener(listener.on_partitions_revoked, revoked)
            except Exception:
                log.exception("on_partitions_revoked failed")
        if may_commit and self.enable_auto_commit and self.membership is not None:
            offsets = self.subscription.positions_to_commit(revoked, use_committable=True)
            try:
                await self.membership.commit(
                    {tp: OffsetAndMetadata(offset=o) for tp, o in offsets.items()},
                    timeout_ms=self.request_timeout_ms,
                    retry=False,
                )
            except LiferaftError as e:
                log.warning(
                    "group %s: commit before giving up partitions failed: %s", self.group_id, e
                )
        self.subscription.revoke(revoked)
        self.fetcher.prune()

    # -- commits -----------------------------------------------------------------------------------
    async def _auto_commit(self) -> None:
        while True:
            await asyncio.sleep(self.auto_commit_interval_ms / 1000)
            try:
                await self.commit_positions(use_committable=True)
            except LiferaftError as e:
                log.info("group %s: auto-commit failed (will retry): %s", self.group_id, e)

    async def commit_positions(self, *, use_committable: bool) -> None:
        sub = self.subscription
        offsets = sub.positions_to_commit(
            sub.assigned_partitions(), use_committable=use_committable
        )
        if offsets:
            await self.commit({tp: OffsetAndMetadata(offset=o) for tp, o in offsets.items()})

    async def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit as this member (fenced: CommitFailedError if the partitions moved), or, for a
        consumer that assigned its partitions itself, as a simple consumer of the group."""
        if not offsets:
            return
        if self.membership is not None:
            await self.membership.commit(dict(offsets), timeout_ms=self.request_timeout_ms)
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
            await self._client_for_commits().call(
                "CommitOffsets", request, timeout_ms=self.request_timeout_ms
            )
        self.subscription.mark_committed({tp: o.offset for tp, o in offsets.items()})

    def _client_for_commits(self) -> CoordinatorClient:
        return self.membership.coordinator if self.membership is not None else self._client

    async def fetch_committed(
        self, tps: Iterable[TopicPartition] | None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        return await fetch_committed(
            self._client_for_commits(),
            list(tps) if tps is not None else None,
            self.request_timeout_ms,
        )

    async def committed_positions(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The fetcher's look-up when a partition has no position yet."""
        return {tp: om.offset for tp, om in (await self.fetch_committed(tps)).items()}

    async def close(self, *, commit: bool = True) -> None:
        """Commit the positions of everything returned (auto-commit and commit=True), then
        leave the group so its partitions move at once."""
        await self.stop_following()
        if self._auto_commit_task is not None:
            self._auto_commit_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._auto_commit_task
        if commit and self.enable_auto_commit:
            try:
                await self.commit_positions(use_committable=False)
            except LiferaftError as e:
                log.warning("group %s: final commit failed: %s", self.group_id, e)
        if self.membership is not None:
            await self.membership.leave()
        if self._leaving:
            await asyncio.gather(*self._leaving, return_exceptions=True)
