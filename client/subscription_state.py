"""What a consumer reads: its subscription (topics, a pattern, or partitions chosen by hand) and,
per assigned partition, where it stands. Plain state, no I/O (aiokafka's subscription_state.py).

The consumer (client/consumer.py) is a facade over three parts: this state, the fetcher that
fills and drains buffers (client/fetcher.py) and the coordinator that follows the assignment a
consumer group's coordinator hands out and commits offsets (client/coordinator.py). Each method
here says who calls it ("Caller:") and what it changes ("Affects:"), so a change of state can be
traced to the one part that made it.

A subscription is one of three kinds, and a consumer has at most one at a time:

  - "user": partitions chosen with assign(); nothing moves them.
  - "topics": subscribe(topics=...); the group's coordinator (or, without a group, the
    consumer itself: every partition of the topics) chooses the partitions.
  - "pattern": subscribe(pattern=...); as "topics", over the topics whose names match, found
    again at every metadata refresh.

Positions: `position` is the offset of the next record to hand to the application; None until
the partition is reset (auto_offset_reset, or the group's committed offset) or seeked.
`committable` is the position as of the start of the latest poll: what earlier polls returned,
which the application has finished with; auto-commit commits that.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from client.types import TopicPartition

__all__ = ["SubscriptionKind", "SubscriptionState", "TopicPartitionState"]

SubscriptionKind = Literal["user", "topics", "pattern"]


@dataclass(slots=True)
class TopicPartitionState:
    """Where the consumer stands on one assigned partition. A new object per assignment, so a
    fetch started for an earlier assignment of the same partition is told apart by identity."""

    position: int | None = None
    """Offset of the next record to hand out; None until reset or seek."""
    paused: bool = False
    highwater: int | None = None
    """The high watermark as of the last fetch answer (None before one)."""
    log_start_offset: int | None = None
    last_poll_timestamp_ms: int | None = None
    """Wall-clock time of the last fetch answer for this partition."""
    committable: int | None = None
    """The position as of the start of the latest poll (what auto-commit commits)."""
    last_committed: int | None = None
    """The offset this consumer last committed (or found committed) for the partition."""


class SubscriptionState:
    """The consumer's subscription and assignment. One event loop's property."""

    def __init__(self) -> None:
        self.kind: SubscriptionKind | None = None
        self.topics: frozenset[str] = frozenset()
        """The topics subscribed to (for a pattern: the ones it matched at the last refresh)."""
        self.pattern: re.Pattern[str] | None = None
        self.listener: Any = None
        """A ConsumerRebalanceListener, or None."""
        self.version = 0
        """Bumped by every change of subscription, so a waiter can tell one happened."""
        self._assigned: dict[TopicPartition, TopicPartitionState] = {}

    # -- the subscription ------------------------------------------------------------------------
    def subscribe(self, topics: Iterable[str], listener: Any = None) -> None:
        """Subscribe to these topics, replacing any earlier topics or pattern.

        Caller: Consumer.
        Affects: kind, topics, pattern, listener (the assignment stays until the coordinator
        revokes what is no longer subscribed).
        """
        if self.kind == "user":
            raise RuntimeError("this consumer has a manual assignment: it cannot subscribe too")
        self.kind = "topics"
        self.topics = frozenset(topics)
        self.pattern = None
        self.listener = listener
        self.version += 1

    def subscribe_pattern(self, pattern: re.Pattern[str], listener: Any = None) -> None:
        """Subscribe to every topic whose name matches `pattern` (re.fullmatch, as Kafka's
        Java client and aiokafka do), now and as topics come and go.

        Caller: Consumer.
        Affects: kind, pattern, listener; topics is set by the coordinator's next refresh.
        """
        if self.kind == "user":
            raise RuntimeError("this consumer has a manual assignment: it cannot subscribe too")
        self.kind = "pattern"
        self.pattern = pattern
        self.topics = frozenset()
        self.listener = listener
        self.version += 1

    def match_topics(self, available: Iterable[str]) -> bool:
        """Take the topics the pattern matches among `available`; True if they changed.

        Caller: Coordinator (at every metadata refresh).
        Affects: topics.
        """
        assert self.kind == "pattern" and self.pattern is not None
        matched = frozenset(t for t in available if self.pattern.fullmatch(t))
        if matched == self.topics:
            return False
        self.topics = matched
        self.version += 1
        return True

    def unsubscribe(self) -> set[TopicPartition]:
        """Drop the subscription (or the manual assignment) and every assigned partition;
        returns the partitions dropped.

        Caller: Consumer.
        Affects: kind, topics, pattern, listener, the assignment.
        """
        dropped = set(self._assigned)
        self._assigned.clear()
        self.kind = None
        self.topics = frozenset()
        self.pattern = None
        self.listener = None
        self.version += 1
        return dropped

    @property
    def auto_assigned(self) -> bool:
        """The partitions are chosen for the consumer (topics or pattern), not by it."""
        return self.kind in ("topics", "pattern")

    # -- the assignment --------------------------------------------------------------------------
    def assign_from_user(self, partitions: Iterable[TopicPartition]) -> set[TopicPartition]:
        """Read exactly these partitions; those kept keep their state. Returns those dropped.

        Caller: Consumer.
        Affects: kind, the assignment.
        """
        if self.auto_assigned:
            raise RuntimeError("this consumer subscribed to a group: assign() is not for it")
        wanted = list(dict.fromkeys(partitions))
        for tp in wanted:
            if tp.partition < 0:
                raise ValueError(f"partition must be >= 0: {tp}")
        self.kind = "user" if wanted else None
        dropped = {tp for tp in self._assigned if tp not in wanted}
        for tp in dropped:
            del self._assigned[tp]
        for tp in wanted:
            self._assigned.setdefault(tp, TopicPartitionState())
        return dropped

    def assign_from_subscribed(self, added: Iterable[TopicPartition]) -> None:
        """Partitions given to this consumer by its group's coordinator (or, without a group,
        found in the subscribed topics' metadata).

        Caller: Coordinator.
        Affects: the assignment (new partitions start without a position).
        """
        for tp in added:
            self._assigned.setdefault(tp, TopicPartitionState())

    def revoke(self, revoked: Iterable[TopicPartition]) -> None:
        """Partitions taken away (moved to another member, or the topic left the subscription).

        Caller: Coordinator.
        Affects: the assignment.
        """
        for tp in revoked:
            self._assigned.pop(tp, None)

    def assigned_partitions(self) -> set[TopicPartition]:
        return set(self._assigned)

    def is_assigned(self, tp: TopicPartition) -> bool:
        return tp in self._assigned

    def state(self, tp: TopicPartition | tuple[str, int]) -> TopicPartitionState:
        """The state of an assigned partition; ValueError if it is not assigned."""
        st = self._assigned.get(TopicPartition(*tp))
        if st is None:
            raise ValueError(f"{TopicPartition(*tp)} is not assigned to this consumer")
        return st

    def state_or_none(self, tp: TopicPartition) -> TopicPartitionState | None:
        return self._assigned.get(tp)

    def items(self) -> list[tuple[TopicPartition, TopicPartitionState]]:
        return list(self._assigned.items())

    # -- positions -------------------------------------------------------------------------------
    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read `tp` from `offset` next.

        Caller: Fetcher (which also drops what it buffered for the old position).
        Affects: TopicPartitionState.position.
        """
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self.state(tp).position = offset

    def begin_poll(self) -> None:
        """A poll starts: what earlier polls returned is finished with, so committable.

        Caller: Fetcher.getmany.
        Affects: TopicPartitionState.committable.
        """
        for st in self._assigned.values():
            st.committable = st.position

    def pause(self, tp: TopicPartition) -> None:
        """Caller: Consumer. Affects: TopicPartitionState.paused."""
        self.state(tp).paused = True

    def resume(self, tp: TopicPartition) -> None:
        """Caller: Consumer. Affects: TopicPartitionState.paused."""
        self.state(tp).paused = False

    def paused_partitions(self) -> set[TopicPartition]:
        return {tp for tp, st in self._assigned.items() if st.paused}

    def fetchable(self, tps: Iterable[TopicPartition]) -> list[TopicPartition]:
        """Those of `tps` still assigned and not paused, in the order given."""
        return [tp for tp in tps if (st := self._assigned.get(tp)) is not None and not st.paused]

    def positions_to_commit(
        self, tps: Iterable[TopicPartition], *, use_committable: bool
    ) -> dict[TopicPartition, int]:
        """Positions (or committable positions) of these partitions that differ from what was
        last committed: what a commit of "everything consumed" must send."""
        out: dict[TopicPartition, int] = {}
        for tp in tps:
            st = self._assigned.get(tp)
            if st is None:
                continue
            pos = st.committable if use_committable else st.position
            if pos is not None and pos != st.last_committed:
                out[tp] = pos
        return out

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Caller: Coordinator, after a commit succeeded (or a committed offset was read).
        Affects: TopicPartitionState.last_committed."""
        for tp, offset in offsets.items():
            st = self._assigned.get(tp)
            if st is not None:
                st.last_committed = offset
