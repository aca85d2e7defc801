"""Values that flow in and out of the Raft core.

Everything here is a plain value: the core never owns a socket, a clock or a disk, so what it
exchanges with its host (node/ in production, tests/sim in simulation) must be data the host can
persist, send and compare. Messages are slotted dataclasses rather than protobufs so the core
stays importable without generated code; node/ maps them to the wire.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

NONE = 0
"""The node id that means "nobody": no vote cast, no leader known. Real node ids are >= 1."""


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class EntryType(IntEnum):
    NORMAL = 0
    """Application data (a record batch, a controller command)."""
    NOOP = 1
    """Appended by every new leader so it can commit entries of earlier terms (Raft §5.4.2)."""
    CONF_CHANGE = 2
    """A single-voter membership change; data is an encoded ConfChange."""


class MessageType(IntEnum):
    APP = 0
    APP_RESP = 1
    VOTE = 2
    VOTE_RESP = 3
    PRE_VOTE = 4
    PRE_VOTE_RESP = 5
    HEARTBEAT = 6
    HEARTBEAT_RESP = 7
    SNAP = 8
    TIMEOUT_NOW = 9


@dataclass(slots=True, frozen=True)
class Entry:
    index: int
    term: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Bytes counted against message and ready size limits (data plus a fixed header)."""
        return len(self.data) + 24


@dataclass(slots=True, frozen=True)
class HardState:
    """What must be on disk before any message that depends on it leaves the node."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(slots=True, frozen=True)
class SoftState:
    """Volatile state the host may want to show (metadata, logs); never persisted."""

    leader: int = NONE
    role: Role = Role.FOLLOWER


@dataclass(slots=True, frozen=True)
class ConfState:
    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()


@dataclass(slots=True, frozen=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(slots=True, frozen=True)
class Snapshot:
    """A point in the log below which entries may be gone; data is the host's state at index."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.meta.index == 0


class ConfChangeType(IntEnum):
    ADD_VOTER = 0
    ADD_LEARNER = 1
    REMOVE_NODE = 2


_CONF_CHANGE = struct.Struct(">BQ")


@dataclass(slots=True, frozen=True)
class ConfChange:
    """One membership step. Changing one voter at a time keeps old and new majorities
    overlapping, so no joint consensus is needed (Raft thesis §4.1)."""

    type: ConfChangeType
    node_id: int

    def encode(self) -> bytes:
        return _CONF_CHANGE.pack(int(self.type), self.node_id)

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        if len(data) != _CONF_CHANGE.size:
            raise ValueError(f"conf change must be {_CONF_CHANGE.size} bytes, got {len(data)}")
        kind, node_id = _CONF_CHANGE.unpack(data)
        return cls(ConfChangeType(kind), node_id)


@dataclass(slots=True)
class Message:
    """One Raft RPC or reply. Field meaning depends on type, as in the Raft paper:

    APP: index/log_term name the entry preceding `entries`; commit is the leader's commit.
    APP_RESP: index is the follower's last matching index; on reject, reject_hint is the
      follower's guess of where the logs agree and log_term the term it has at that index.
    VOTE/PRE_VOTE: index/log_term describe the candidate's last entry; context=b"transfer"
      marks a leadership transfer campaign, which bypasses the leader lease.
    HEARTBEAT: commit is min(leader commit, follower match).
    SNAP: snapshot carries the leader's latest snapshot.
    """

    type: MessageType
    to: int
    frm: int
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""


@dataclass(slots=True, frozen=True)
class Fence:
    """What keeps a node whose disk was wiped from speaking as its old self (a new incarnation
    of a node id; see "Rejoining after a lost disk" in raft/core.py), and a replica added back
    to a group it was removed from from voting below what its old replica promised (the floor;
    "Coming back after a removal" in raft/core.py).

    min_term: 0 while the group has not yet replaced the old incarnation: the node steps no
      message at all and never campaigns (to the group it is a node that crashed for good).
      Once the group has removed the old incarnation and added the node back as a learner
      (entry `index`), the term of a node that had applied that entry: the node then steps only
      messages of this term or later, which only leaders and candidates holding that entry send.
    index: the index of the entry that added the node back. Until the node's commit index
      reaches it, it neither grants a vote (nor a pre-vote) nor campaigns: its log may still
      lack the entries the old incarnation acknowledged. Past it, and at min_term or later, the
      fence lifts itself (RawNode.fence becomes None): from then on its durable state is its own.
    floor_term, floor_index: the last entry of the node's earlier replica of this group (0, 0:
      none). Until the node's own log is at least as up to date as that entry (Raft §5.4.1's
      order), it neither grants a vote (nor a pre-vote) nor campaigns: what the old replica
      acknowledged may have been counted toward a commit. Past it (and past the two above),
      the fence lifts itself. A fence with only a floor has min_term >= 1 (the old replica's
      term, which the new one starts at): min_term 0 would hold the node silent.
    """

    min_term: int = 0
    index: int = 0
    floor_term: int = 0
    floor_index: int = 0
