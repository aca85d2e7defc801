"""A node's own replicas, summed up so that they can be compared across nodes (read-only).

Answers the debug RPC ReplicaState (node/api/replicas.py): per partition replica, its log start, high
watermark, applied index and a SHA-256 of its committed record batches over an offset range; for
the controller and the consumer groups, the applied index and a SHA-256 of the applied state.
Replicas of one Raft group that applied the same prefix of one log must give the same digests;
the chaos run and the integration tests ask every node and compare (chaos/replicas.py).

Why live, from the running node, and not from each node's RocksDB after stopping the cluster:
the controller's and the groups' state exist only in memory (rebuilt at start from the snapshot
and the log), so only a running node can say what it applied; rebuilding them offline would be a
second implementation of the restart path, blind to the bugs of the real one. And the same
call works against the compose cluster.

The digests are of canonical forms: a batch is hashed as its base offset, its length and the
bytes every replica stores (the leader stamped the base offset before replicating it); a state
as JSON with sorted keys, and its collections sorted by their key, so that two replicas that
built one state in a different insertion order (one from a snapshot) agree.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

from liferaft_proto import records
from node.partition import Partition
from raft import EntryType

__all__ = ["canonical_digest", "controller_canonical", "groups_canonical", "partition_digest"]

_HEAD = struct.Struct(">QI")
READ_CHUNK_BYTES = 1 << 20


def partition_digest(part: Partition, from_offset: int, to_offset: int) -> tuple[int, int, str]:
    """(from, to, sha256 hex) of the committed batches that lie wholly in [from_offset,
    to_offset), clamped to [log start, high watermark). `from`/`to` are the offsets actually
    covered: the base of the first batch hashed and the end of the last."""
    index = part.offsets
    lo = max(from_offset, index.start_offset)
    hi = min(to_offset, index.end_offset)
    h = hashlib.sha256()
    if lo >= hi or len(index) == 0:
        return lo, lo, h.hexdigest()
    pos = max(0, index.position(lo))
    wanted: dict[int, tuple[int, int]] = {}  # raft index -> (base offset, end offset)
    while pos < len(index):
        loc = index.at(pos)
        if loc.base_offset >= hi:
            break
        if loc.base_offset >= lo and loc.end_offset <= hi:
            wanted[loc.raft_index] = (loc.base_offset, loc.end_offset)
        pos += 1
    if not wanted:
        return lo, lo, h.hexdigest()
    storage = part.group.storage
    first, last = min(wanted), max(wanted)
    covered_from = wanted[first][0]
    covered_to = covered_from
    at = first
    while at <= last:
        ents = storage.entries(at, last + 1, READ_CHUNK_BYTES)
        for e in ents:
            span = wanted.get(e.index)
            if span is None or e.type != EntryType.NORMAL:
                continue
            if records.read_header(e.data).base_offset != span[0]:
                raise ValueError(f"{part.group_id}: entry {e.index} is not the batch at {span[0]}")
            h.update(_HEAD.pack(span[0], len(e.data)))
            h.update(e.data)
            covered_to = span[1]
        at = ents[-1].index + 1
    return covered_from, covered_to, h.hexdigest()


def canonical_digest(state: Any) -> str:
    text = json.dumps(state, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def controller_canonical(state_json: bytes) -> dict[str, Any]:
    raw = json.loads(state_json or b"{}")
    raw["brokers"] = sorted(raw.get("brokers", []), key=lambda b: int(b["node_id"]))
    raw["topics"] = sorted(raw.get("topics", []), key=lambda t: str(t["name"]))
    return dict(raw)


def groups_canonical(state_json: bytes) -> dict[str, Any]:
    raw = json.loads(state_json or b"{}")
    for g in raw.values():
        g["offsets"] = sorted(g.get("offsets", []), key=lambda o: (str(o[0]), int(o[1])))
    return dict(raw)
