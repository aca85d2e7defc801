"""The leader's view of the group: membership, each member's Progress, votes and the ISR."""

from __future__ import annotations

from dataclasses import dataclass

from raft.progress import Progress
from raft.quorum import VoteResult, committed_index, majority, vote_result
from raft.types import ConfState


@dataclass(slots=True, frozen=True)
class IsrPolicy:
    """When a follower counts as in sync (Kafka's replica.lag.*): it has acknowledged within
    max_lag_ticks ticks and its match is within max_lag_entries of the leader's last index."""

    max_lag_entries: int = 1000
    max_lag_ticks: int = 10


class ProgressTracker:
    def __init__(self, max_inflight: int) -> None:
        self.voters: set[int] = set()
        self.learners: set[int] = set()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.max_inflight = max_inflight

    def conf_state(self) -> ConfState:
        return ConfState(voters=frozenset(self.voters), learners=frozenset(self.learners))

    def members(self) -> list[int]:
        return sorted(self.voters | self.learners)

    def is_voter(self, node: int) -> bool:
        return node in self.voters

    # -- quorum questions ----------------------------------------------------------------------
    def committed(self) -> int:
        return committed_index(self.voters, {v: self.progress[v].match for v in self.voters})

    def record_vote(self, node: int, granted: bool) -> None:
        self.votes.setdefault(node, granted)

    def reset_votes(self) -> None:
        self.votes = {}

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        granted = sum(1 for v in self.voters if self.votes.get(v) is True)
        rejected = sum(1 for v in self.voters if self.votes.get(v) is False)
        return granted, rejected, vote_result(self.voters, self.votes)

    def quorum_active(self, self_id: int, now: int, window: int) -> bool:
        """CheckQuorum: a majority of voters (counting the leader) answered within `window`."""
        active = sum(
            1 for v in self.voters if v == self_id or self.progress[v].last_ack_tick > now - window
        )
        return active >= majority(len(self.voters))

    def in_sync(self, self_id: int, last_index: int, now: int, policy: IsrPolicy) -> set[int]:
        """The in-sync replica set among voters, the leader included."""
        isr = {self_id} if self_id in self.voters else set()
        for v in self.voters:
            if v == self_id:
                continue
            pr = self.progress[v]
            if (
                pr.responded
                and last_index - pr.match <= policy.max_lag_entries
                and now - pr.last_ack_tick <= policy.max_lag_ticks
            ):
                isr.add(v)
        return isr
