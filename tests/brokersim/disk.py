"""A node's disk as the page cache makes it: what was written is read back at once, what was
synced survives a crash, and what was not may or may not.

`MemDisk` is an ordered key-value store (the database under NodeStore) that keeps, beside the
state every read sees, the state that is on the platter: writes land in the first and wait in
`pending` (in write order) until a sync moves them to the second. Faults, all chosen by the
simulation's seed:

- crash: the page cache is gone. What survives is the synced state plus a prefix of the
  pending writes (none, all, or some: the kernel writes back dirty pages in its own time, but a
  database's write-ahead log is a stream, so what survives of it is a prefix);
- a torn write: the last surviving write is damaged (a value cut short), as a write cut by power
  loss mid-sector is. The real storage layer's CRCs must find it when it is read, and the node
  must stop rather than serve it;
- a failed sync (EIO): the sync raises, and the pending writes it was to make durable are lost
  for good (after a failed fsync Linux marks the pages clean: "fsyncgate"), though reads still
  see them until the crash. The node must stop (fail-stop) and acknowledge nothing after;
- a stall: syncs take long (the worker-thread path waits in virtual time).

`SimStore` is the real NodeStore over a MemDisk: the real GroupStorage, codecs, checksums and
load checks, with only the five database methods replaced (node/storage.py's seam).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field

from sortedcontainers import SortedDict

from node.storage import Batch, NodeStore, StorageError

Op = tuple[int, bytes, bytes | None]
"""(kind, key, value or range end): PUT, DELETE or DELETE_RANGE."""
PUT, DELETE, DELETE_RANGE = 0, 1, 2
_ENTRY_KIND = b"e"


class MemBatch:
    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.ops.append((PUT, bytes(key), bytes(value)))

    def delete(self, key: bytes) -> None:
        self.ops.append((DELETE, bytes(key), None))

    def delete_range(self, begin: bytes, end: bytes) -> None:
        self.ops.append((DELETE_RANGE, bytes(begin), bytes(end)))

    def is_empty(self) -> bool:
        return not self.ops


def _apply(kv: SortedDict, ops: list[Op]) -> None:
    for kind, key, value in ops:
        if kind == PUT:
            kv[key] = value
        elif kind == DELETE:
            kv.pop(key, None)
        else:
            assert value is not None
            for k in list(kv.irange(key, value, inclusive=(True, False))):
                del kv[k]


@dataclass
class DiskFaults:
    """What the disk will do next (the nemesis sets these)."""

    fail_next_sync: bool = False
    stall_s: float = 0.0
    """Each worker-thread sync takes this long (virtual seconds) while set."""


@dataclass
class DiskStats:
    writes: int = 0
    syncs: int = 0
    failed_syncs: int = 0
    crashes: int = 0
    lost_writes: int = 0
    torn: int = 0


@dataclass
class MemDisk:
    node_id: int
    seen: SortedDict = field(default_factory=SortedDict)
    """What reads see: the synced state plus every pending write."""
    durable: SortedDict = field(default_factory=SortedDict)
    """What a crash keeps for sure."""
    pending: list[list[Op]] = field(default_factory=list)
    faults: DiskFaults = field(default_factory=DiskFaults)
    stats: DiskStats = field(default_factory=DiskStats)
    sync_failed: bool = False
    """A sync failed since the node last started: it must have stopped."""
    torn_key: bytes | None = None
    """The key a torn write damaged, while it is still on disk."""
    torn_read: bool = False
    """Whether the damaged value was read back (then the node must have stopped)."""
    on_sync_failure: Callable[[], None] | None = None

    # -- the database -------------------------------------------------------------------------
    def write(self, ops: list[Op], *, sync: bool) -> None:
        self.stats.writes += 1
        _apply(self.seen, ops)
        self.pending.append(ops)
        if self.torn_key is not None:
            self._forget_torn(ops)
        if sync:
            self.sync()

    def sync(self) -> None:
        self.stats.syncs += 1
        if self.faults.fail_next_sync:
            self.faults.fail_next_sync = False
            self.stats.failed_syncs += 1
            self.sync_failed = True
            self.stats.lost_writes += len(self.pending)
            self.pending = []  # never to reach the platter (fsyncgate)
            if self.on_sync_failure is not None:
                self.on_sync_failure()
            raise OSError(errno.EIO, f"simulated EIO syncing node {self.node_id}'s disk")
        for ops in self.pending:
            _apply(self.durable, ops)
        self.pending = []

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.seen.get(key)
        if value is not None and key == self.torn_key:
            self.torn_read = True
        return value

    def scan(
        self,
        start: bytes,
        upper: bytes | None,
        *,
        backwards: bool,
        limit: int | None,
        accept: Callable[[bytes, bytes], bool] | None,
    ) -> list[tuple[bytes, bytes]]:
        if backwards:
            keys = self.seen.irange(maximum=start, reverse=True)
        else:
            keys = self.seen.irange(start, upper, inclusive=(True, False))
        out: list[tuple[bytes, bytes]] = []
        for k in keys:
            v = self.seen[k]
            if accept is not None and not accept(k, v):
                break
            if k == self.torn_key:
                self.torn_read = True
            out.append((k, v))
            if limit is not None and len(out) >= limit:
                break
        return out

    # -- faults -------------------------------------------------------------------------------
    def crash(self, keep: int, *, tear: bool) -> None:
        """Power is lost: keep the first `keep` pending writes (clamped), the last of them torn
        if `tear`; everything else unsynced is gone."""
        self.stats.crashes += 1
        keep = max(0, min(keep, len(self.pending)))
        kept = self.pending[:keep]
        self.stats.lost_writes += len(self.pending) - keep
        for ops in kept:
            _apply(self.durable, ops)
        if tear and kept:
            self._tear(kept[-1])
        self.pending = []
        self.seen = SortedDict(self.durable)
        self.sync_failed = False

    def _tear(self, ops: list[Op]) -> None:
        """Cut short the value of the last log entry this write put (a torn sector)."""
        for kind, key, value in reversed(ops):
            if kind == PUT and value is not None and _is_entry_key(key) and key in self.durable:
                if self.durable[key] != value:
                    continue
                self.durable[key] = value[: max(1, len(value) // 2)]
                self.torn_key = key
                self.torn_read = False
                self.stats.torn += 1
                return

    def _forget_torn(self, ops: list[Op]) -> None:
        """A write that replaces or deletes the damaged value repairs it."""
        key = self.torn_key
        assert key is not None
        for kind, k, value in ops:
            if (kind in (PUT, DELETE) and k == key) or (
                kind == DELETE_RANGE and value is not None and k <= key < value
            ):
                self.torn_key = None
                return


def _is_entry_key(key: bytes) -> bool:
    # G <u16 len> <group id> e <u64 index> (node/storage.py's layout)
    if not key.startswith(b"G") or len(key) < 3 + 1 + 8:
        return False
    n = int.from_bytes(key[1:3], "big")
    return len(key) == 3 + n + 1 + 8 and key[3 + n : 4 + n] == _ENTRY_KIND


class SimStore(NodeStore):
    """The real NodeStore (and GroupStorage) over a MemDisk. One per start of a node; a crash
    closes it, so nothing of the old process touches the disk again."""

    def __init__(self, disk: MemDisk, *, tail_entries: int = 64, tail_bytes: int = 64 << 10):
        # Not NodeStore.__init__: it opens RocksDB. These are the fields the rest reads.
        self.path = f"sim:node{disk.node_id}"
        self.tail_entries = tail_entries
        self.tail_bytes = tail_bytes
        self.on_sync = None
        self._groups = {}
        self.disk = disk
        self._db = disk  # type: ignore[assignment]  # "open": _live_db() checks it

    def _new_batch(self) -> Batch:
        return MemBatch()

    def _write_batch(self, batch: Batch, *, sync: bool) -> None:
        self._live_db()
        assert isinstance(batch, MemBatch)
        if batch.ops:
            self.disk.write(batch.ops, sync=sync)

    def _scan(
        self,
        start: bytes,
        upper: bytes | None = None,
        *,
        backwards: bool = False,
        limit: int | None = None,
        accept: Callable[[bytes, bytes], bool] | None = None,
        verify: bool = True,  # the simulated disk has no checksums of its own to skip
    ) -> list[tuple[bytes, bytes]]:
        self._live_db()
        return self.disk.scan(start, upper, backwards=backwards, limit=limit, accept=accept)

    def _get_raw(self, key: bytes) -> bytes | None:
        self._live_db()
        return self.disk.get(key)

    def _flush_wal(self) -> None:
        self._live_db()
        self.disk.sync()

    def close(self) -> None:
        self._db = None

    @property
    def closed(self) -> bool:
        return self._db is None


__all__ = ["DiskFaults", "MemBatch", "MemDisk", "SimStore", "StorageError"]
