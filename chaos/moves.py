"""The nemesis's `move` fault: a partition of the workload's topic moved onto other replicas.

Replica moves (docs/operations.md, node/moves.py) are membership changes made one Raft change at
a time by the partition's leader while it serves traffic. The chaos run checks that they keep
every acknowledged record while the other faults kill and cut off nodes around them: a move
started between two faults goes on in the background, so a kill or a partition may land in the
middle of it (the nemesis's settle check waits for voters in sync, not for moves to finish).

A move goes through the real admin API (AdminClient.move_partitions, the MovePartitions RPC),
as an operator's `liferaft partition move` would. The target is drawn from the partition's
replicas at that moment: one of them (the planned `pick` chooses which, in id order) is
replaced by a node that holds none of the partition (so the cluster needs more nodes than the
replication factor). A request that fails (no controller while nodes are down, the partition
already moving) is recorded as such and is not a run failure: the cluster refused, nothing
acknowledged can be lost by that. The heal step, when the plan says `back` and the move has
finished, moves the partition back to where it was; otherwise it leaves it.

Each move's end is seen by polling: it has finished when the controller lists no move of the
partition and the partition's replicas are the target. The summary counts moves started and
finished; a run waits for every move to finish before it compares replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from client import AdminClient, LiferaftError

__all__ = ["MoveRecord", "ReplicaMover", "move_target"]

log = logging.getLogger("liferaft.chaos")

POLL_S = 0.5


def move_target(replicas: Sequence[int], nodes: Sequence[int], pick: int) -> tuple[int, ...]:
    """`replicas` with one of them (the `pick`-th in id order, modulo) replaced by a node of
    `nodes` that is not among them (the `pick`-th of those, modulo), in the same position (the
    preferred leader stays first unless it is the one replaced). ValueError when no node is
    free."""
    current = list(replicas)
    free = sorted(set(nodes) - set(current))
    if not current:
        raise ValueError("the partition has no replicas")
    if not free:
        raise ValueError(
            f"no node outside replicas {current} among nodes {sorted(nodes)}: a move needs "
            "more nodes than the replication factor"
        )
    out = sorted(current)[pick % len(current)]
    current[current.index(out)] = free[pick % len(free)]
    return tuple(current)


@dataclass(slots=True, kw_only=True)
class MoveRecord:
    """One move request and what became of it."""

    partition: int
    origin: tuple[int, ...]
    target: tuple[int, ...]
    throttle_bytes_s: int = 0
    back: bool = False
    """A move back to where an earlier move found the partition."""
    requested_ns: int = 0
    """History time of the request."""
    started: bool = False
    """The controller accepted it."""
    finished_ns: int = 0
    """History time the move was seen finished (0: not seen)."""
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.finished_ns > 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        what = f"move{' back' if self.back else ''} partition {self.partition} "
        what += f"{list(self.origin)} -> {list(self.target)}"
        if self.throttle_bytes_s:
            what += f" at {self.throttle_bytes_s / 1e6:g} MB/s"
        return what


class ReplicaMover:
    """Starts moves of `topic`'s partitions among `nodes` and watches them finish."""

    def __init__(
        self,
        admin: Callable[[], Any],
        topic: str,
        nodes: Sequence[int],
        now_ns: Callable[[], int],
    ) -> None:
        self._admin = admin
        """An async callable giving the run's AdminClient (Workload.admin)."""
        self.topic = topic
        self.nodes = tuple(sorted(nodes))
        self._now_ns = now_ns
        self.records: list[MoveRecord] = []
        self._watch: asyncio.Task[None] | None = None

    async def admin(self) -> AdminClient:
        admin: AdminClient = await self._admin()
        return admin

    async def replicas(self, partition: int) -> tuple[int, ...]:
        admin = await self.admin()
        desc = (await admin.describe_topics([self.topic]))[self.topic]
        return tuple(desc.partitions[partition].replicas)

    async def start(
        self,
        partition: int,
        pick: int,
        throttle_bytes_s: int,
        *,
        to: Sequence[int] | None = None,
        back: bool = False,
    ) -> MoveRecord:
        """Ask for one move (to `to`, or a target drawn with `pick`). Never raises for what the
        cluster answers: the record says whether it started, or why not."""
        record = MoveRecord(
            partition=partition,
            origin=(),
            target=tuple(to or ()),
            throttle_bytes_s=throttle_bytes_s,
            back=back,
            requested_ns=self._now_ns(),
        )
        self.records.append(record)
        try:
            record.origin = await self.replicas(partition)
            if to is None:
                record.target = move_target(record.origin, self.nodes, pick)
            admin = await self.admin()
            await admin.move_partitions(
                [(self.topic, partition, record.target)], throttle_bytes_s=throttle_bytes_s
            )
        except (LiferaftError, ValueError, IndexError, KeyError) as e:
            record.error = f"{type(e).__name__}: {e}"
            return record
        record.started = True
        if self._watch is None or self._watch.done():
            self._watch = asyncio.create_task(self._watch_loop())
        return record

    async def heal(self, record: MoveRecord, back: bool) -> MoveRecord | None:
        """The heal step of a move fault: move the partition back when asked to and the move
        has finished (the new move's record), else leave it (None)."""
        await self.refresh()
        if not back or not record.finished:
            return None
        return await self.start(
            record.partition, 0, record.throttle_bytes_s, to=record.origin, back=True
        )

    def unfinished(self) -> list[MoveRecord]:
        return [r for r in self.records if r.started and not r.finished]

    async def refresh(self) -> None:
        """Mark the moves that have finished (module docstring). Errors: try again later."""
        pending = self.unfinished()
        if not pending:
            return
        try:
            admin = await self.admin()
            moving, _ = await admin.list_partition_moves()
            desc = (await admin.describe_topics([self.topic]))[self.topic]
        except LiferaftError as e:
            log.debug("move check failed: %r", e)
            return
        under_way = {m.partition for m in moving if m.topic == self.topic}
        now = self._now_ns()
        for r in pending:
            if r.partition in under_way or r.partition >= len(desc.partitions):
                continue
            if set(desc.partitions[r.partition].replicas) == set(r.target):
                r.finished_ns = now

    async def wait_finished(self, timeout_s: float) -> list[MoveRecord]:
        """Wait (bounded) until every started move finished; the ones that did not."""
        deadline = time.monotonic() + timeout_s
        while True:
            await self.refresh()
            if not self.unfinished() or time.monotonic() >= deadline:
                return self.unfinished()
            await asyncio.sleep(POLL_S)

    async def _watch_loop(self) -> None:
        """Marks moves finished as they finish (their time in the summary). A failed check is
        logged and tried again: the final wait_finished decides."""
        while self.unfinished():
            try:
                await self.refresh()
            except Exception as e:
                log.warning("move watch: %r", e)
            await asyncio.sleep(POLL_S)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
