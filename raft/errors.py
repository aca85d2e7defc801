"""Exceptions of the Raft core. The host maps them to error codes at its boundary."""

from __future__ import annotations


class RaftError(Exception):
    """Base of every error the core raises."""


class CompactedError(RaftError):
    """The requested index is below the storage's first index: it was compacted into a snapshot."""


class UnavailableError(RaftError):
    """The requested index is above the storage's last index."""


class SnapshotTemporarilyUnavailableError(RaftError):
    """Storage cannot produce a snapshot right now; the leader will try again later."""


class NotLeaderError(RaftError):
    """A proposal reached a node that is not the leader. `leader` is the best hint, 0 if unknown."""

    def __init__(self, leader: int, term: int) -> None:
        super().__init__(f"not the leader (leader hint: {leader or 'unknown'}, term {term})")
        self.leader = leader
        self.term = term


class ProposalDroppedError(RaftError):
    """The leader refuses proposals for now, e.g. while it transfers leadership away."""


class ConfChangeError(RaftError):
    """A membership change that would be unsafe or makes no sense (see the message)."""
