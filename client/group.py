"""A consumer's membership in a consumer group: find the coordinator, heartbeat, follow the
assignment it hands out, commit offsets (docs/consumer-groups.md).

Theory of operation. The coordinator assigns partitions itself (server-side) and moves them
incrementally, so a member's whole protocol is one loop of heartbeats. Each heartbeat says what
the member holds; each answer says what it may hold:

  - a partition it holds that the answer leaves out is being moved: the member commits its
    position (when auto-commit is on), stops reading it, and heartbeats again at once to say so;
  - a partition new in the answer was given up by its previous owner (or that owner's session
    ended): the member reads it from the group's committed offset (or per auto_offset_reset).

So a rebalance stops only the partitions that move. The coordinator fences commits: only a live
member may commit, only for what it holds. If the member's session ends (UNKNOWN_MEMBER_ID), it
lost its partitions without a chance to commit; it drops them and joins again as a new member.
When the coordinator moves (NOT_COORDINATOR, or it is unreachable), the member finds the new one
and goes on with its member id and partitions; the new coordinator waits for it (Recovering).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.message import Message

from client.cluster import Cluster
from client.errors import (
    CommitFailedError,
    IllegalGenerationError,
    LiferaftError,
    NotCoordinatorError,
    UnknownMemberIdError,
)
from client.retry import RetryState
from client.types import TopicPartition
from liferaft_proto.v1 import broker_pb2

__all__ = ["ConsumerRebalanceListener", "GroupMembership", "OffsetAndMetadata", "tps_from_pb"]

log = logging.getLogger("liferaft.group")


@dataclass(frozen=True, slots=True, kw_only=True)
class OffsetAndMetadata:
    """A committed offset: the next offset the group will read, and the committer's note."""

    offset: int
    metadata: str = ""
    commit_timestamp_ms: int = -1


class ConsumerRebalanceListener(Protocol):
    """Called by a group consumer when partitions move (aiokafka's listener, async).

    on_partitions_revoked runs before the partitions are given up (their positions are committed
    right after it when auto-commit is on); on_partitions_assigned after new ones are ready."""

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None: ...

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None: ...


def tps_from_pb(items: Iterable[broker_pb2.TopicPartitions]) -> set[TopicPartition]:
    return {TopicPartition(t.topic, p) for t in items for p in t.partitions}


def tps_to_pb(tps: Iterable[TopicPartition]) -> list[broker_pb2.TopicPartitions]:
    by_topic: dict[str, list[int]] = {}
    for tp in sorted(tps):
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return [broker_pb2.TopicPartitions(topic=t, partitions=ps) for t, ps in by_topic.items()]


class CoordinatorClient:
    """Calls to a group's coordinator: found through any node, followed when it moves."""

    def __init__(self, cluster: Cluster, group_id: str) -> None:
        self.cluster = cluster
        self.group_id = group_id
        self.address: str | None = None
        self._rng = random.Random()

    async def find(self) -> str:
        resp = await self.cluster.call_any(
            "FindCoordinator",
            broker_pb2.FindCoordinatorRequest(group_id=self.group_id),
            prefer_controller=False,
            timeout_ms=self.cluster.config.request_timeout_ms,
        )
        host = f"[{resp.host}]" if ":" in resp.host else resp.host
        self.address = f"{host}:{resp.port}"
        return self.address

    async def call(self, rpc: str, request: Message, *, timeout_ms: int) -> Any:
        """Send to the coordinator, following it when it moves and retrying what the node marks
        retriable, within timeout_ms."""
        deadline = time.monotonic() + timeout_ms / 1000
        state = RetryState()
        while True:
            try:
                address = self.address or await self.find()
                remaining = max(10, int((deadline - time.monotonic()) * 1000))
                attempt_ms = min(self.cluster.config.request_timeout_ms, remaining)
                return await self.cluster.call_address(address, rpc, request, timeout_ms=attempt_ms)
            except LiferaftError as e:
                if isinstance(e, NotCoordinatorError) and e.leader_address:
                    self.address = e.leader_address
                    state.followed_hint = True
                elif e.retriable:
                    self.address = None
                    state.followed_hint = False
                else:
                    raise
                wait = self.cluster.policy.wait_s(e, state, self._rng)
                if time.monotonic() + wait >= deadline:
                    raise
                await asyncio.sleep(wait)


class GroupMembership:
    """The heartbeat loop of one group member (one per subscribed Consumer)."""

    def __init__(
        self,
        cluster: Cluster,
        group_id: str,
        *,
        client_id: str,
        session_timeout_ms: int,
        on_assign: Callable[[set[TopicPartition]], Awaitable[None]],
        on_revoke: Callable[[set[TopicPartition], bool], Awaitable[None]],
    ) -> None:
        self.coordinator = CoordinatorClient(cluster, group_id)
        self.cluster = cluster
        self.group_id = group_id
        self.client_id = client_id
        self.session_timeout_ms = session_timeout_ms
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self.topics: list[str] = []
        self.member_id = ""
        self.generation = 0
        self.owned: set[TopicPartition] = set()
        self.pending_partitions = 0
        self.task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._last_ok = time.monotonic()
        self.joined = asyncio.Event()
        """Set once the first heartbeat answered (the member has an id)."""
        self._lock = asyncio.Lock()  # one heartbeat at a time (the loop's, or a commit's)

    def start(self, topics: list[str]) -> None:
        self.topics = sorted(set(topics))
        if self.task is None:
            self.task = asyncio.ensure_future(self._run())
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        backoff = self.cluster.policy.backoff_ms / 1000
        while not self._stopping:
            interval = 1.0
            try:
                interval = await self._heartbeat_once()
                backoff = self.cluster.policy.backoff_ms / 1000
            except UnknownMemberIdError as e:
                log.info("group %s: %s; rejoining", self.group_id, e.message)
                await self._lose_all()
                interval = 0
            except LiferaftError as e:
                # Coordinator unreachable or moving: keep the partitions while the session may
                # still be alive; past it they are surely someone else's.
                elapsed_ms = (time.monotonic() - self._last_ok) * 1000
                if self.owned and elapsed_ms > self.session_timeout_ms:
                    log.warning(
                        "group %s: no heartbeat answered for %d ms (%s): giving up partitions",
                        self.group_id,
                        elapsed_ms,
                        e,
                    )
                    await self._lose_all()
                if not e.retriable:
                    log.warning("group %s: heartbeat refused: %s", self.group_id, e)
                interval = backoff
                backoff = min(backoff * 2, self.cluster.policy.backoff_max_ms / 1000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("group %s: heartbeat failed", self.group_id)
            if interval > 0 and not self._stopping:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval)

    async def _heartbeat_once(self) -> float:
        """One heartbeat and what its answer asks for. Returns seconds until the next."""
        async with self._lock:
            return await self._heartbeat_locked()

    async def _heartbeat_locked(self) -> float:
        request = broker_pb2.GroupHeartbeatRequest(
            group_id=self.group_id,
            member_id=self.member_id,
            generation=self.generation,
            client_id=self.client_id,
            topics=self.topics,
            owned=tps_to_pb(self.owned),
            session_timeout_ms=self.session_timeout_ms,
        )
        resp = await self.coordinator.call(
            "GroupHeartbeat", request, timeout_ms=max(1000, self.session_timeout_ms // 2)
        )
        self._last_ok = time.monotonic()
        self.member_id = resp.member_id
        self.generation = resp.generation
        self.pending_partitions = resp.pending_partitions
        self.joined.set()
        assigned = tps_from_pb(resp.assignment)
        revoked = self.owned - assigned
        added = assigned - self.owned
        if revoked:
            await self.on_revoke(revoked, True)
            self.owned -= revoked
        if added:
            self.owned |= added
            await self.on_assign(added)
        if revoked:
            return 0  # say at once that they are given up
        return resp.heartbeat_interval_ms / 1000

    async def _lose_all(self) -> None:
        """Our session ended: what we held is someone else's now; no commits for it."""
        lost, self.owned = self.owned, set()
        self.member_id, self.generation = "", 0
        if lost:
            await self.on_revoke(lost, False)

    async def commit(
        self,
        offsets: dict[TopicPartition, OffsetAndMetadata],
        *,
        timeout_ms: int,
        retry: bool = True,
    ) -> None:
        """Commit as this member. A partition no longer ours raises CommitFailedError.
        retry: after a refusal, heartbeat once and try again if the partitions are still ours
        (not from inside a heartbeat's own revocation)."""
        if not offsets:
            return
        for attempt in range(2 if retry else 1):
            request = broker_pb2.CommitOffsetsRequest(
                group_id=self.group_id,
                member_id=self.member_id,
                generation=self.generation if self.member_id else -1,
                offsets=[
                    broker_pb2.OffsetCommit(
                        topic=tp.topic, partition=tp.partition, offset=o.offset, metadata=o.metadata
                    )
                    for tp, o in sorted(offsets.items())
                ],
            )
            try:
                await self.coordinator.call("CommitOffsets", request, timeout_ms=timeout_ms)
                return
            except (IllegalGenerationError, UnknownMemberIdError) as e:
                if attempt == 0 and self.member_id and set(offsets) <= self.owned:
                    # Our generation may just be older than a change that did not touch these
                    # partitions (or the coordinator moved): heartbeat, then try once more.
                    with contextlib.suppress(LiferaftError):
                        await self._heartbeat_once()
                    if set(offsets) <= self.owned:
                        continue
                raise CommitFailedError(
                    e.code,
                    f"commit refused for group {self.group_id!r}: {e.message}",
                ) from e

    async def leave(self) -> None:
        self._stopping = True
        self.wake()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.member_id:
            with contextlib.suppress(LiferaftError):
                await self.coordinator.call(
                    "LeaveGroup",
                    broker_pb2.LeaveGroupRequest(group_id=self.group_id, member_id=self.member_id),
                    timeout_ms=3000,
                )
        self.member_id = ""
        self.owned = set()


async def fetch_committed(
    coordinator: CoordinatorClient, tps: Iterable[TopicPartition] | None, timeout_ms: int
) -> dict[TopicPartition, OffsetAndMetadata]:
    """The group's committed offsets (of these partitions, or all); -1 offsets left out."""
    request = broker_pb2.FetchOffsetsRequest(
        group_id=coordinator.group_id, partitions=tps_to_pb(tps) if tps is not None else []
    )
    resp = await coordinator.call("FetchOffsets", request, timeout_ms=timeout_ms)
    return {
        TopicPartition(o.topic, o.partition): OffsetAndMetadata(
            offset=o.offset, metadata=o.metadata, commit_timestamp_ms=o.commit_timestamp_ms
        )
        for o in resp.offsets
        if o.offset >= 0
    }
