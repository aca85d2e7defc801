"""What the leader knows about one follower's log, and how it paces sends to it.

A follower is in one of three states (as in etcd):
  PROBE      the leader does not know where the logs agree; one append in flight at a time,
             next moves back on every rejection (by whole terms, see RaftLog.find_conflict_by_term).
  REPLICATE  the logs agree up to match; appends are pipelined, next moves ahead optimistically,
             bounded by the in-flight window so a slow follower cannot eat the leader's memory.
             A full window stays full until acknowledgments free it; if they were lost, the
             follower's heartbeat answer makes the leader send one empty append (no new data),
             whose answer frees the window or sends the leader back to probing (etcd#14633).
  SNAPSHOT   the follower is behind the log start; a snapshot is on its way and nothing else is
             sent until the follower acknowledges an index at or past it.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """The last index of each append sent but not yet acknowledged, oldest first."""

    __slots__ = ("_q", "capacity")

    def __init__(self, capacity: int) -> None:
        self._q: deque[int] = deque()
        self.capacity = capacity

    def add(self, last_index: int) -> None:
        self._q.append(last_index)

    def free_le(self, index: int) -> None:
        q = self._q
        while q and q[0] <= index:
            q.popleft()

    def free_first_one(self) -> None:
        if self._q:
            self._q.popleft()

    def full(self) -> bool:
        return len(self._q) >= self.capacity

    def count(self) -> int:
        return len(self._q)

    def reset(self) -> None:
        self._q.clear()


class Progress:
    __slots__ = (
        "inflights",
        "is_learner",
        "last_ack_tick",
        "match",
        "max_msg_bytes",
        "next",
        "pending_snapshot",
        "probe_sent",
        "responded",
        "sent_commit",
        "snapshot_sent_tick",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool = False) -> None:
        self.match = 0  # highest index known to be replicated on the follower; match < next
        self.next = next_index  # next index to send
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0  # index of the snapshot in flight, in SNAPSHOT state
        self.probe_sent = False  # in PROBE: an append is in flight, wait for its answer
        self.inflights = Inflights(max_inflight)
        # Entry bytes per append to this follower (0: the configured max_size_per_msg); the
        # host narrows it for a throttled follower (Raft.set_inflight_limit).
        self.max_msg_bytes = 0
        self.is_learner = is_learner
        self.last_ack_tick = -(1 << 62)  # leader tick of the follower's last response
        # Whether the follower has answered this leader at all. A new leader must not count a
        # follower as in sync on faith: it may be the node whose crash caused the election.
        self.responded = False
        self.snapshot_sent_tick = 0  # leader tick when the pending snapshot was sent
        # The highest commit index sent to the follower (in an append, heartbeat or snapshot),
        # so the leader sends a commit-only append when it tells the follower something new,
        # not after every acknowledgment. Lowered when appends may have been lost (probing).
        self.sent_commit = 0

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
            f"inflight={self.inflights.count()}, learner={self.is_learner})"
        )

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            # The snapshot (if it arrived) put the follower at least at pending_snapshot.
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1
        self.sent_commit = min(self.sent_commit, self.next - 1)

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index
        self.sent_commit = snapshot_index  # a snapshot is committed state

    def maybe_update(self, index: int) -> bool:
        """An acknowledgment up to index. Returns whether match moved."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append that followed `rejected`. Returns False when the rejection
        is stale (an answer to an append we already moved past)."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            self.sent_commit = min(self.sent_commit, self.next - 1)
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1, 1)
        self.sent_commit = min(self.sent_commit, self.next - 1)
        self.probe_sent = False
        return True

    def can_bump_commit(self, commit: int) -> bool:
        """Whether an append carrying `commit` could move the follower's commit index: it is
        more than we sent, and what we sent does not already reach the end of what the
        follower has or is being sent (next - 1), as far as a commit index can go there."""
        return commit > self.sent_commit and self.sent_commit < self.next - 1

    def sent_entries(self, last_index: int) -> None:
        """Record an append of entries up to last_index."""
        if self.state == ProgressState.REPLICATE:
            self.next = last_index + 1
            self.inflights.add(last_index)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True
