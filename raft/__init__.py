"""liferaft's Raft core: a pure, deterministic state machine (see raft/core.py).

Imports nothing of the project and does no I/O; the host drives it through RawNode.
"""

from raft.core import QUIESCE_CONTEXT, TRANSFER_CONTEXT, Config, Raft
from raft.errors import (
    CompactedError,
    ConfChangeError,
    NotLeaderError,
    ProposalDroppedError,
    RaftError,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from raft.progress import ProgressState
from raft.rawnode import PeerProgress, RawNode, Ready, Status
from raft.storage import MemoryStorage, Storage
from raft.tracker import IsrPolicy
from raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Fence,
    HardState,
    Message,
    MessageType,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

__all__ = [
    "NONE",
    "QUIESCE_CONTEXT",
    "TRANSFER_CONTEXT",
    "CompactedError",
    "ConfChange",
    "ConfChangeError",
    "ConfChangeType",
    "ConfState",
    "Config",
    "Entry",
    "EntryType",
    "Fence",
    "HardState",
    "IsrPolicy",
    "MemoryStorage",
    "Message",
    "MessageType",
    "NotLeaderError",
    "PeerProgress",
    "ProgressState",
    "ProposalDroppedError",
    "Raft",
    "RaftError",
    "RawNode",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SnapshotTemporarilyUnavailableError",
    "SoftState",
    "Status",
    "Storage",
    "UnavailableError",
]
