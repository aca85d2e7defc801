"""Durable Raft storage: every Raft group of one node in one RocksDB database.

Theory of operation. A node hosts many Raft groups (the controller and one per partition replica).
All of them live in ONE RocksDB database so that the driver can persist the Ready of every group
in ONE WriteBatch with ONE fsync (group commit): the number of syncs per second stays flat however
many groups are busy. `NodeStore.write` takes a list of `GroupUpdate`s and does exactly that;
`GroupStorage` is one group's view, implementing `raft.storage.Storage` for its RawNode with the
same semantics (and errors) as `raft.storage.MemoryStorage`.

Reads never wait for disk when they can help it. A group keeps in memory its log start (the
compaction point and its term), its last index, its hard state and snapshot, the terms of its log
as runs of (first index of the run, term) - terms change rarely, so a handful of runs covers
millions of entries and `term()` is a bisect - and a bounded tail of the newest entries, which is
what followers and the apply loop read all the time. Older entries are read from RocksDB with one
iterator over a key range. Memory state changes only after the batch that carries the change is
written, so a failed write leaves the group exactly as it was.

Key layout (one key space per first byte; integers are big-endian and fixed-width, so RocksDB's
byte order is index order):

    F                          format marker (FORMAT)
    M <key>                    host metadata (node identity, partition metadata, offsets, ...)
    R <group id>               registry: the group has state on disk (lists groups())
    G <u16 len> <group id> h   hard state
    G <u16 len> <group id> s   snapshot (meta and data)
    G <u16 len> <group id> o   log start: index and term of the last compacted entry
    G <u16 len> <group id> t <u64 index>   a term run starting at index
    G <u16 len> <group id> e <u64 index>   an entry

The length prefix makes group prefixes prefix-free ("p-1" never sees the keys of "p-10"), so a
group's keys are one contiguous range: a conflicting suffix, a compacted prefix or a whole
destroyed group goes with one range deletion.

Every value starts with a CRC-32C computed over the key and then the rest of the value. Covering
the key catches a value that landed under the wrong key as well as flipped or truncated bytes. A
mismatch, a malformed value or a log that contradicts itself (a hole, a term that disagrees with
the term index) raises CorruptStorageError: wrong data is never returned to Raft, whose safety
rests on it.

Threads. Nothing here locks: a NodeStore and its groups belong to the host's one thread (the
event loop's). Moving `write` to a worker thread would not free the loop anyway: rocksdict 0.3.29
holds the GIL for the whole of Rdict.write, fsync included. It does release it in flush_wal, so
the hot path writes unsynced on the loop and syncs the WAL from a worker thread (`sync_wal`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NoReturn, Protocol, cast

from crc32c import crc32c
from rocksdict import (
    DBCompressionType,
    DBRecoveryMode,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from raft.errors import CompactedError, UnavailableError
from raft.storage import limit_size
from raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta

__all__ = [
    "FORMAT",
    "CorruptStorageError",
    "GroupKeys",
    "GroupStorage",
    "GroupUpdate",
    "NodeStore",
    "StorageError",
]

FORMAT = b"liferaft-storage/1"
"""Stored under the key b"F"; a database with another marker is refused rather than misread."""

_FORMAT_KEY = b"F"
_META = b"M"
_REGISTRY = b"R"
_GROUP = b"G"

_CRC = struct.Struct(">I")
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_ENTRY_HEAD = struct.Struct(">IQB")  # crc, term, type; the data follows
_ENTRY_BODY = struct.Struct(">QB")  # the part of the head the CRC covers
_HARD = struct.Struct(">IQQQ")  # crc, term, vote, commit
_LOG_START = struct.Struct(">IQQ")  # crc, index, term
_RUN = struct.Struct(">IQ")  # crc, term
_SNAP_HEAD = struct.Struct(">IQQII")  # crc, index, term, voters, learners; ids then data follow

_ENTRY_OVERHEAD = Entry(index=0, term=0).size()
"""Entry.size() of an entry with no data: size() of a stored entry is len(value) - 13 + this."""

DEFAULT_TAIL_ENTRIES = 4096
BLOB_MIN_BYTES = 4096
DEFAULT_BACKGROUND_WRITE_MB_S = 100
MEMTABLE_BYTES = 32 << 20
"""How fast RocksDB's flushes and compactions may write (0: as fast as the disk goes)."""
"""Values at least this large (record batches, mostly) live in RocksDB blob files."""
DEFAULT_TAIL_BYTES = 1 << 20


class StorageError(Exception):
    """Base of the errors of the node's storage."""


class CorruptStorageError(StorageError):
    """A stored value failed its checksum, is malformed, or the log contradicts itself.

    The node cannot trust its copy of the data any more; the way out is to wipe its data directory
    and let it catch up from its peers (Raft replicates everything it held)."""

    def __init__(self, group: str | None, what: str, key: bytes, *, reason: str, path: str) -> None:
        where = f"group {group!r} {what}" if group is not None else f"host metadata {what}"
        super().__init__(
            f"{where}: {reason} — the database at {path} is corrupt; restore this node "
            "from its peers by wiping its data directory"
        )
        self.group = group
        self.what = what
        self.key = key
        self.reason = reason
        self.path = path


# -- value codecs --------------------------------------------------------------------------------
def _seal(key: bytes, payload: bytes) -> bytes:
    return _CRC.pack(crc32c(payload, crc32c(key))) + payload


def _unseal(value: bytes, key: bytes) -> str | None:
    """Why value is not a sealed value of key, or None when its checksum holds."""
    if len(value) < _CRC.size:
        return f"value of {len(value)} bytes is too short for its checksum"
    (stored,) = _CRC.unpack_from(value)
    if crc32c(memoryview(value)[_CRC.size :], crc32c(key)) != stored:
        return "checksum mismatch"
    return None


def _encode_entry(key: bytes, e: Entry) -> bytes:
    body = _ENTRY_BODY.pack(e.term, int(e.type))
    crc = crc32c(e.data, crc32c(body, crc32c(key)))
    return _ENTRY_HEAD.pack(crc, e.term, int(e.type)) + e.data


def _encode_hard_state(key: bytes, hs: HardState) -> bytes:
    return _seal(key, struct.pack(">QQQ", hs.term, hs.vote, hs.commit))


def _encode_log_start(key: bytes, index: int, term: int) -> bytes:
    return _seal(key, struct.pack(">QQ", index, term))


def _encode_run(key: bytes, term: int) -> bytes:
    return _seal(key, _U64.pack(term))


def _encode_snapshot(key: bytes, snap: Snapshot) -> bytes:
    cs = snap.meta.conf_state
    voters, learners = sorted(cs.voters), sorted(cs.learners)
    ids = struct.pack(f">{len(voters) + len(learners)}Q", *voters, *learners)
    head = struct.pack(">QQII", snap.meta.index, snap.meta.term, len(voters), len(learners))
    return _seal(key, head + ids + snap.data)


def _collect(
    db: Rdict,
    start: bytes,
    upper: bytes | None = None,
    *,
    backwards: bool = False,
    limit: int | None = None,
    accept: Callable[[bytes, bytes], bool] | None = None,
    verify: bool = True,
) -> list[tuple[bytes, bytes]]:
    """Items from start on: forward and below upper, or backwards from start (no lower bound:
    rocksdict 0.3.29's set_iterate_lower_bound sets the upper bound). At most limit of them;
    accept(key, value) returning False ends the scan before that item. Keys and values are bytes
    in raw mode. verify=False skips RocksDB's own checksums of what it reads (for values that
    carry a checksum of ours; GroupStorage.entries says why).

    The iterator lives only inside this call. While one lives, the database stays open (and
    locked) even after close(), so none may outlive a call through an exception's traceback.
    And it must not outlive its ReadOptions either: rocksdict's iterator reads its upper bound
    from there, and a dropped ReadOptions lets the scan run past its bound."""
    ro = ReadOptions()
    if not verify:
        ro.set_verify_checksums(False)
    if upper is not None:
        ro.set_iterate_upper_bound(upper)
    out: list[tuple[bytes, bytes]] = []
    it = cast(
        "Iterator[tuple[bytes, bytes]]", db.items(backwards=backwards, from_key=start, read_opt=ro)
    )
    try:
        for k, v in it:
            if accept is not None and not accept(k, v):
                break
            out.append((k, v))
            if limit is not None and len(out) >= limit:
                break
    finally:
        del it  # before ro, which it points into
        del ro
    return out


# -- keys ----------------------------------------------------------------------------------------
class GroupKeys:
    """The keys of one group (public so tools and tests can inspect a raw database)."""

    __slots__ = (
        "end",
        "entries_end",
        "entry_prefix",
        "hard_state",
        "log_start",
        "prefix",
        "registry",
        "run_prefix",
        "runs_end",
        "snapshot",
    )

    def __init__(self, group_id: str) -> None:
        raw = group_id.encode()
        if not raw or len(raw) > 0xFFFF:
            raise ValueError(f"group id must be 1 to 65535 bytes of UTF-8, got {group_id!r}")
        self.prefix = _GROUP + _U16.pack(len(raw)) + raw
        self.registry = _REGISTRY + raw
        self.hard_state = self.prefix + b"h"
        self.snapshot = self.prefix + b"s"
        self.log_start = self.prefix + b"o"
        self.run_prefix = self.prefix + b"t"
        self.runs_end = self.prefix + b"u"
        self.entry_prefix = self.prefix + b"e"
        self.entries_end = self.prefix + b"f"
        self.end = self.prefix + b"\xff"  # every key of the group is below: kinds are ASCII

    def entry(self, index: int) -> bytes:
        return self.entry_prefix + _U64.pack(index)

    def run(self, index: int) -> bytes:
        return self.run_prefix + _U64.pack(index)


# -- writes --------------------------------------------------------------------------------------
class Batch(Protocol):
    """A write batch as the store builds it (rocksdict's WriteBatch in raw mode): applied whole
    or not at all, range deletions before the puts that follow them."""

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def delete_range(self, begin: bytes, end: bytes) -> None: ...

    def is_empty(self) -> bool: ...


@dataclass(slots=True, frozen=True)
class GroupUpdate:
    """What one group's Ready asks to persist, applied in this order: snapshot, entries, hard
    state. Host metadata puts (value) and deletes (None) ride in the same batch."""

    group: GroupStorage
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    """Appended; a conflicting suffix held on disk (indexes >= entries[0].index) is removed."""
    snapshot: Snapshot | None = None
    """Installed: replaces the whole log (a follower receiving the leader's snapshot)."""
    meta: list[tuple[bytes, bytes | None]] = field(default_factory=list)


@dataclass(slots=True)
class _Plan:
    """One group's part of a write: what its memory becomes once the batch is on disk."""

    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    truncate_at: int | None = None  # first index of the old log that the entries replace
    new_runs: list[tuple[int, int]] = field(default_factory=list)
    hard_state: HardState | None = None
    register: bool = False


# -- one group -----------------------------------------------------------------------------------
class GroupStorage:
    """One Raft group's durable log; implements raft.storage.Storage.

    Writes go through `NodeStore.write` (the Ready path) or the methods below that write and
    sync at once (bootstrap, create_snapshot, compact, destroy)."""

    def __init__(self, store: NodeStore, group_id: str) -> None:
        self._store = store
        self._id = group_id
        self._keys = GroupKeys(group_id)
        self._destroyed = False
        self._reset()

    def _reset(self) -> None:
        """The state of a group with nothing on disk."""
        self._hard = HardState()
        self._snap = Snapshot()
        # The log holds entries (offset, last]; offset is the compaction point ("log start" on
        # disk), whose term is still answered. offset <= snapshot index.
        self._offset = 0
        self._offset_term = 0
        self._last = 0
        # Term runs covering (offset, last]: _run_starts[0] == offset + 1 whenever last > offset,
        # strictly increasing; the term of index i is that of the last run starting <= i.
        self._run_starts: list[int] = []
        self._run_terms: list[int] = []
        # The newest entries, [tail_start, last]: tail_start + len(tail) == last + 1 and
        # tail_start > offset. Bounded by the store's tail_entries and tail_bytes.
        self._tail: list[Entry] = []
        self._tail_start = 1
        self._tail_bytes = 0
        self._registered = False  # the registry key is on disk

    @property
    def group_id(self) -> str:
        return self._id

    @property
    def hard_state(self) -> HardState:
        return self._hard

    # -- reads (raft.storage.Storage) ---------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard, self._snap.meta.conf_state

    def first_index(self) -> int:
        return self._offset + 1

    def last_index(self) -> int:
        return self._last

    def snapshot(self) -> Snapshot:
        return self._snap

    def term(self, index: int) -> int:
        if index < self._offset:
            raise CompactedError(f"index {index} is compacted (log starts after {self._offset})")
        if index > self._last:
            raise UnavailableError(f"index {index} is past the last index {self._last}")
        if index == self._offset:
            return self._offset_term
        return self._run_terms[bisect_right(self._run_starts, index) - 1]

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        if lo <= self._offset:
            raise CompactedError(f"index {lo} is compacted (log starts after {self._offset})")
        if hi > self._last + 1:
            raise UnavailableError(f"entries up to {hi - 1} asked, last index is {self._last}")
        if lo >= hi:
            return []
        ts = self._tail_start
        if lo >= ts:
            return limit_size(self._tail[lo - ts : hi - ts], max_size)
        out, total, full = self._read_disk(lo, min(hi, ts), max_size)
        if full or hi <= ts:
            return out
        for e in self._tail[: hi - ts]:
            total += e.size()
            if max_size is not None and total > max_size:  # out is not empty here
                break
            out.append(e)
        return out

    def _read_disk(self, lo: int, hi: int, max_size: int | None) -> tuple[list[Entry], int, bool]:
        """Entries [lo, hi) from RocksDB within max_size (at least one): (entries, their total
        size, whether max_size cut the read short)."""
        keys = self._keys
        total, full = 0, False

        def within_size(_: bytes, value: bytes) -> bool:
            # The size is known from the raw value, so nothing past the limit is decoded.
            nonlocal total, full
            size = len(value) - _ENTRY_HEAD.size + _ENTRY_OVERHEAD
            if max_size is not None and total and total + size > max_size:
                full = True
                return False
            total += size
            return True

        # RocksDB's own checksums off: each entry carries a CRC32C of ours over its key and
        # value, checked below, so a damaged value (or one under the wrong key) is still caught,
        # and reported as CorruptStorageError rather than RocksDB's error. RocksDB in rocksdict's
        # wheel computes its CRC32C in software ("Fast CRC32 supported: Not supported on x86"
        # in the database's LOG): about 0.9 ms per MiB read from blob files, held under the
        # GIL, of the 2.2 ms a leader spends reading 1 MiB of old log for a catching-up
        # replica (issue 19: the leader of a partition being moved reads it at the throttle
        # rate while it serves produce traffic). Ours (the crc32c package) takes 0.04 ms.
        raw = self._store._scan(keys.entry(lo), keys.entry(hi), accept=within_size, verify=False)
        out: list[Entry] = []
        run = bisect_right(self._run_starts, lo) - 1
        next_run = self._run_starts[run + 1] if run + 1 < len(self._run_starts) else None
        index = lo
        for k, v in raw:
            if k != keys.entry(index):
                self._corrupt(f"entry {index}", keys.entry(index), "missing (the log has a hole)")
            if index == next_run:
                run += 1
                next_run = self._run_starts[run + 1] if run + 1 < len(self._run_starts) else None
            out.append(self._decode_entry(index, k, v, self._run_terms[run]))
            index += 1
        if not full and index < hi:
            self._corrupt(f"entry {index}", keys.entry(index), "missing (the log has a hole)")
        return out, total, full

    def _decode_entry(self, index: int, key: bytes, value: bytes, term: int | None) -> Entry:
        what = f"entry {index}"
        if len(value) < _ENTRY_HEAD.size:
            self._corrupt(what, key, f"value of {len(value)} bytes is shorter than its header")
        crc, stored_term, kind = _ENTRY_HEAD.unpack_from(value)
        body = memoryview(value)[_CRC.size :]
        if crc32c(body, crc32c(key)) != crc:
            self._corrupt(what, key, "checksum mismatch")
        if term is not None and stored_term != term:
            self._corrupt(what, key, f"term {stored_term} disagrees with the term index ({term})")
        try:
            etype = EntryType(kind)
        except ValueError:
            self._corrupt(what, key, f"unknown entry type {kind}")
        return Entry(index=index, term=stored_term, type=etype, data=value[_ENTRY_HEAD.size :])

    # -- writes that go to disk at once -----------------------------------------------------------
    def bootstrap(self, conf_state: ConfState) -> None:
        """Give a new group its membership: a snapshot at index 0 carrying conf_state.
        Every replica of a new group bootstraps the same one, so none needs another to start.

        Not synced by itself: a host that creates a thousand partitions at once would otherwise
        hold the event loop for a thousand fsyncs (rocksdict keeps the GIL through a synced
        write). It becomes durable with the next synced write of the node (the WAL is one
        ordered stream), which comes before this group can promise anything (a vote, an
        acknowledged entry); lost in a crash before that, it is simply bootstrapped again."""
        self._check_writable()
        if self._registered:
            raise ValueError(
                f"group {self._id!r} already has state on disk (last index {self._last}, "
                f"{self._snap.meta.conf_state}); bootstrap is for new groups only"
            )
        snap = Snapshot(meta=SnapshotMeta(conf_state=conf_state))
        batch = self._store._new_batch()
        batch.put(self._keys.snapshot, _encode_snapshot(self._keys.snapshot, snap))
        self._put_registry(batch)
        self._store._write_batch(batch, sync=False)
        self._snap = snap
        self._registered = True

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record (durably) the host's state as of applied index `index`, which must be held
        here. A snapshot at or below the current one is not taken; the current one is returned."""
        self._check_writable()
        if index <= self._snap.meta.index:
            return self._snap
        if index > self._last:
            raise ValueError(f"snapshot index {index} is past the last index {self._last}")
        snap = Snapshot(
            SnapshotMeta(index=index, term=self.term(index), conf_state=conf_state), data
        )
        batch = self._store._new_batch()
        batch.put(self._keys.snapshot, _encode_snapshot(self._keys.snapshot, snap))
        self._put_registry(batch)
        self._store._write_batch(batch, sync=True)
        self._snap = snap
        self._registered = True
        return snap

    def compact(self, index: int) -> None:
        """Drop the entries up to and including index (retention), synced.

        Unlike MemoryStorage, the cut is clamped to the snapshot: entries that no snapshot covers
        are never dropped, or a follower behind the log start could never catch up (the snapshot
        it would be sent stops short of the first entry left)."""
        self._check_writable()
        if index <= self._offset:
            return
        if index > self._last:
            raise ValueError(f"compact {index} is past the last index {self._last}")
        index = min(index, self._snap.meta.index)
        if index <= self._offset:
            return
        keys = self._keys
        term = self.term(index)
        batch = self._store._new_batch()
        batch.delete_range(keys.entry_prefix, keys.entry(index + 1))
        # Runs must start at the new first index: drop those starting at or before it and put
        # one back there (same term as before) if any entry is left.
        batch.delete_range(keys.run_prefix, keys.run(index + 2))
        next_term = self.term(index + 1) if index < self._last else None
        if next_term is not None:
            batch.put(keys.run(index + 1), _encode_run(keys.run(index + 1), next_term))
        batch.put(keys.log_start, _encode_log_start(keys.log_start, index, term))
        self._store._write_batch(batch, sync=True)

        self._offset, self._offset_term = index, term
        k = bisect_right(self._run_starts, index + 1)
        del self._run_starts[:k], self._run_terms[:k]
        if next_term is not None:
            self._run_starts.insert(0, index + 1)
            self._run_terms.insert(0, next_term)
        if self._tail_start <= index:
            drop = index + 1 - self._tail_start
            self._tail_bytes -= sum(e.size() for e in self._tail[:drop])
            del self._tail[:drop]
            self._tail_start = index + 1

    def destroy(self) -> None:
        """Delete the whole group from disk, synced (topic deletion). This object is dead
        afterwards; `NodeStore.group` of the same id gives a new, empty group."""
        self._check_writable()
        batch = self._store._new_batch()
        batch.delete_range(self._keys.prefix, self._keys.end)
        batch.delete(self._keys.registry)
        self._store._write_batch(batch, sync=True)
        self._store._forget(self)
        self._reset()
        self._destroyed = True

    # -- the Ready path (NodeStore.write) -------------------------------------------------------
    def _plan(self, u: GroupUpdate, batch: Batch) -> _Plan:
        """Put u's writes into batch and say what memory becomes after the batch is written.
        Raises ValueError (with batch to be thrown away) on an update that makes no sense."""
        keys = self._keys
        plan = _Plan(hard_state=u.hard_state)
        offset, last = self._offset, self._last
        if u.snapshot is not None:
            s = u.snapshot
            if s.meta.index <= self._snap.meta.index:
                raise ValueError(
                    f"snapshot at {s.meta.index} is older than the one held at "
                    f"{self._snap.meta.index}"
                )
            batch.delete_range(keys.entry_prefix, keys.entries_end)
            batch.delete_range(keys.run_prefix, keys.runs_end)
            batch.put(keys.snapshot, _encode_snapshot(keys.snapshot, s))
            batch.put(keys.log_start, _encode_log_start(keys.log_start, s.meta.index, s.meta.term))
            plan.snapshot = s
            offset = last = s.meta.index
        ents = u.entries
        if ents and ents[-1].index > offset:
            for a, b in itertools.pairwise(ents):
                if b.index != a.index + 1:
                    raise ValueError(f"entries are not contiguous: {a.index} then {b.index}")
            if ents[0].index <= offset:
                ents = ents[offset + 1 - ents[0].index :]
            at = ents[0].index
            if at > last + 1:
                raise ValueError(f"missing log entry: last index {last}, appending at {at}")
            if at <= last:
                # A conflicting suffix: it goes from disk in the same batch (range deletions
                # are applied before the puts that follow them in a batch).
                plan.truncate_at = at
                batch.delete_range(keys.entry(at), keys.entries_end)
                batch.delete_range(keys.run(at), keys.runs_end)
            # With a snapshot in this update, at == offset + 1 and a new run starts there.
            prev_term = self.term(at - 1) if at - 1 > offset else None
            for e in ents:
                if e.term != prev_term:
                    plan.new_runs.append((e.index, e.term))
                    batch.put(keys.run(e.index), _encode_run(keys.run(e.index), e.term))
                    prev_term = e.term
                key = keys.entry(e.index)
                batch.put(key, _encode_entry(key, e))
            plan.entries = ents
        if u.hard_state is not None:
            batch.put(keys.hard_state, _encode_hard_state(keys.hard_state, u.hard_state))
        if not self._registered and (plan.snapshot or plan.entries or plan.hard_state):
            self._put_registry(batch)
            plan.register = True
        return plan

    def _apply(self, plan: _Plan) -> None:
        if plan.snapshot is not None:
            s = plan.snapshot
            self._snap = s
            self._offset = self._last = s.meta.index
            self._offset_term = s.meta.term
            self._run_starts.clear()
            self._run_terms.clear()
            self._tail.clear()
            self._tail_bytes = 0
            self._tail_start = s.meta.index + 1
        if plan.entries:
            at = plan.entries[0].index
            if plan.truncate_at is not None:
                k = bisect_left(self._run_starts, at)
                del self._run_starts[k:], self._run_terms[k:]
                if at <= self._tail_start:
                    self._tail.clear()
                    self._tail_bytes = 0
                    self._tail_start = at
                else:
                    cut = at - self._tail_start
                    self._tail_bytes -= sum(e.size() for e in self._tail[cut:])
                    del self._tail[cut:]
            for start, term in plan.new_runs:
                self._run_starts.append(start)
                self._run_terms.append(term)
            self._tail.extend(plan.entries)
            self._tail_bytes += sum(e.size() for e in plan.entries)
            self._last = plan.entries[-1].index
            self._trim_tail()
        if plan.hard_state is not None:
            self._hard = plan.hard_state
        if plan.register:
            self._registered = True

    def _trim_tail(self) -> None:
        max_entries, max_bytes = self._store.tail_entries, self._store.tail_bytes
        tail = self._tail
        if len(tail) <= max_entries and self._tail_bytes <= max_bytes:
            return
        drop = max(0, len(tail) - max_entries)
        dropped = sum(e.size() for e in tail[:drop])
        while drop < len(tail) and self._tail_bytes - dropped > max_bytes:
            dropped += tail[drop].size()
            drop += 1
        del tail[:drop]
        self._tail_start += drop
        self._tail_bytes -= dropped

    # -- loading -------------------------------------------------------------------------------
    def _load(self) -> None:
        """Read the group's state from disk, checking every value read and that the pieces agree:
        the log start, the term runs, the first and the last entry."""
        keys, store = self._keys, self._store
        self._registered = self._get(keys.registry, "registration") is not None
        hard = self._get(keys.hard_state, "hard state")
        if hard is not None:
            if len(hard) != _HARD.size:
                self._corrupt("hard state", keys.hard_state, f"{len(hard)} bytes, not {_HARD.size}")
            _, term, vote, commit = _HARD.unpack(hard)
            self._hard = HardState(term=term, vote=vote, commit=commit)
        snap = self._get(keys.snapshot, "snapshot")
        if snap is not None:
            self._snap = self._decode_snapshot(snap)
        start = self._get(keys.log_start, "log start")
        if start is not None:
            if len(start) != _LOG_START.size:
                self._corrupt(
                    "log start", keys.log_start, f"{len(start)} bytes, not {_LOG_START.size}"
                )
            _, self._offset, self._offset_term = _LOG_START.unpack(start)
        if self._offset > self._snap.meta.index:
            self._corrupt(
                "log start",
                keys.log_start,
                f"the log starts after {self._offset}, past its snapshot at {self._snap.meta.index}",
            )

        runs = store._scan(keys.run_prefix, keys.runs_end)
        for k, v in runs:
            start_index = _U64.unpack_from(k, len(keys.run_prefix))[0]
            why = _unseal(v, k) or (
                None if len(v) == _RUN.size else f"{len(v)} bytes, not {_RUN.size}"
            )
            if why is not None:
                self._corrupt(f"term run at {start_index}", k, why)
            self._run_starts.append(start_index)
            self._run_terms.append(_RUN.unpack(v)[1])

        first_kv = self._first_in(store, keys.entry_prefix, keys.entries_end)
        last_kv = self._last_in(store, keys.entry_prefix, keys.entries_end)
        anything = bool(hard or snap or start or runs or first_kv)
        if anything and not self._registered:
            self._corrupt("registration", keys.registry, "missing, yet the group has state")
        if first_kv is None or last_kv is None:
            if runs:
                self._corrupt(f"term run at {self._run_starts[0]}", runs[0][0], "run of no entry")
            self._last = self._offset
        else:
            first = _U64.unpack_from(first_kv[0], len(keys.entry_prefix))[0]
            last = _U64.unpack_from(last_kv[0], len(keys.entry_prefix))[0]
            if first != self._offset + 1:
                self._corrupt(
                    f"entry {first}",
                    first_kv[0],
                    f"the log should start at {self._offset + 1} (after its log start)",
                )
            if not runs or self._run_starts[0] != first or self._run_starts[-1] > last:
                self._corrupt(
                    "term index",
                    keys.run_prefix,
                    f"term runs {list(zip(self._run_starts, self._run_terms, strict=True))} "
                    f"do not cover the log [{first}, {last}]",
                )
            self._last = last
            self._decode_entry(first, first_kv[0], first_kv[1], self.term(first))
            self._decode_entry(last, last_kv[0], last_kv[1], self.term(last))
        self._tail_start = self._last + 1

    def _decode_snapshot(self, value: bytes) -> Snapshot:
        key = self._keys.snapshot
        if len(value) < _SNAP_HEAD.size:
            self._corrupt("snapshot", key, f"{len(value)} bytes, shorter than its header")
        _, index, term, nv, nl = _SNAP_HEAD.unpack_from(value)
        ids_end = _SNAP_HEAD.size + 8 * (nv + nl)
        if len(value) < ids_end:
            self._corrupt("snapshot", key, f"{len(value)} bytes, too short for {nv + nl} members")
        ids = struct.unpack_from(f">{nv + nl}Q", value, _SNAP_HEAD.size)
        cs = ConfState(voters=frozenset(ids[:nv]), learners=frozenset(ids[nv:]))
        return Snapshot(SnapshotMeta(index=index, term=term, conf_state=cs), value[ids_end:])

    def _get(self, key: bytes, what: str) -> bytes | None:
        value = self._store._get_raw(key)
        if value is not None:
            why = _unseal(value, key)
            if why is not None:
                self._corrupt(what, key, why)
        return value

    @staticmethod
    def _first_in(store: NodeStore, lo: bytes, hi: bytes) -> tuple[bytes, bytes] | None:
        found = store._scan(lo, hi, limit=1)
        return found[0] if found else None

    @staticmethod
    def _last_in(store: NodeStore, lo: bytes, hi: bytes) -> tuple[bytes, bytes] | None:
        # The last key at or below hi (never a key itself). A backwards scan has no lower bound
        # (see _collect): what it finds may belong to another range.
        found = store._scan(hi, backwards=True, limit=1)
        if not found or not lo <= found[0][0] < hi:
            return None
        return found[0]

    # -- helpers -------------------------------------------------------------------------------
    def _put_registry(self, batch: Batch) -> None:
        if not self._registered:
            batch.put(self._keys.registry, _seal(self._keys.registry, b""))

    def _check_writable(self) -> None:
        if self._destroyed:
            raise StorageError(f"group {self._id!r} was destroyed")
        self._store._live_db()

    def _corrupt(self, what: str, key: bytes, reason: str) -> NoReturn:
        raise CorruptStorageError(self._id, what, key, reason=reason, path=self._store.path)

    def __repr__(self) -> str:
        return (
            f"GroupStorage({self._id!r}, first={self._offset + 1}, last={self._last}, "
            f"snapshot={self._snap.meta.index})"
        )


# -- the node's database -------------------------------------------------------------------------
def _supports_direct_io(directory: str) -> bool:
    """Whether files in `directory` can be opened with O_DIRECT (tmpfs, and some overlay
    filesystems, cannot: RocksDB would open and then fail its first flush)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    probe = os.path.join(directory, ".direct-io-probe")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | flag, 0o600)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return True


def _make_dirs_durable(path: str) -> None:
    """mkdir -p `path`, and fsync it and every directory above it, so that its name survives a
    power cut. RocksDB fsyncs its own directory for the files it creates in it, never the
    directory's parent: without this, a node that lost power soon after its first start came
    back with no database at all (its name was never synced; chaos/lazyfs.py showed it), and a
    Raft member that forgets its log and vote can un-commit what a majority acknowledged."""
    os.makedirs(path, exist_ok=True)
    here = os.path.abspath(path)
    while True:
        fd = os.open(here, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        parent = os.path.dirname(here)
        if parent == here:
            return
        here = parent


class NodeStore:
    """The one RocksDB database of a node: every group's log, and host metadata.

    tail_entries and tail_bytes bound the in-memory tail of each group (reads of older entries
    go to RocksDB); their product with the number of groups is what the tails may cost."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        tail_entries: int = DEFAULT_TAIL_ENTRIES,
        tail_bytes: int = DEFAULT_TAIL_BYTES,
        background_write_mb_s: int = DEFAULT_BACKGROUND_WRITE_MB_S,
    ) -> None:
        self.path = os.fspath(path)
        self.tail_entries = tail_entries
        self.tail_bytes = tail_bytes
        self.on_sync: Callable[[float], None] | None = None
        """Told each WAL sync's duration in seconds (the node's metrics); any thread."""
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        # The log's values are record batches, stored as producers sent them (compressed by
        # the producer if at all): keep the large ones out of the LSM tree in blob files, so
        # compactions move keys rather than rewrite megabytes, and do not try to compress
        # them again. Together these cut the CPU of a write by about half and, more to the
        # point, the time Rdict.write holds the GIL (measured: 5.5 -> 1.9 ms per MB).
        opts.set_compression_type(DBCompressionType.none())
        opts.set_enable_blob_files(True)
        opts.set_min_blob_size(BLOB_MIN_BYTES)
        opts.set_blob_file_size(256 << 20)
        # No blob garbage collection: it relocates the live blobs of the oldest quarter of the
        # blob files at every compaction, and in a log nearly every blob is live, so it rewrote
        # gigabytes for nothing (compactions of a 100 KB index took 2 s and produce latency
        # doubled as the log grew). A blob file is deleted once retention has removed every
        # batch in it (the keys that point into it are compacted away).
        opts.set_enable_blob_gc(False)
        # Memtable flushes write blob files of tens of MB. Through the page cache, that pile of
        # dirty pages is written back while the WAL is fsynced, and on ext4 (data=ordered) the
        # fsync waits for it: produce latency had 20-100 ms spikes every few seconds, at each
        # flush. Written with O_DIRECT, flushes leave nothing for an fsync to wait on
        # (measured on three databases written at 66 MB/s in all: WAL sync p99.9 20 -> 5.5 ms).
        _make_dirs_durable(self.path)
        if _supports_direct_io(self.path):
            opts.set_use_direct_io_for_flush_and_compaction(True)
        # Reuse old WAL files instead of growing new ones: an fdatasync of an append inside an
        # existing file changes no metadata, so it need not wait for a journal commit (same
        # harness: WAL sync p50 0.32 -> 0.21 ms, p99 2.1 -> 1.3 ms, p99.9 7 -> 2.5 ms). The
        # recyclable record format carries the log number, so after a crash point-in-time
        # recovery stops at the first record of the file's previous life.
        opts.set_recycle_log_file_num(4)
        # Even with O_DIRECT, a flush writes its memtable as fast as the disk takes it, and the
        # WAL fsyncs of all three replicas queue behind it at once (they flush together, being
        # written at the same rate): acks=all waits for the slowest, so produce p99 at half load
        # was 66 ms. Paced at `background_write_mb_s`, flushes and compactions leave the disk
        # room for the WAL (docs/performance.md). The pace also bounds what a node can ingest
        # for long (every byte is flushed once): 100 MB/s left 80 MB/s of produce here.
        if background_write_mb_s > 0:
            opts.set_ratelimiter(background_write_mb_s << 20, 10_000, 10)
        # Smaller memtables make smaller flushes: with the pacing above, 32 MB against the
        # default 64 took produce p99 at ~48k records/s from 34-40 to 14-26 ms on a noisy day.
        opts.set_write_buffer_size(MEMTABLE_BYTES)
        # After a crash, replay the WAL up to the first damaged record and stop: a batch torn by
        # the crash is dropped whole, everything synced before it is kept.
        opts.set_wal_recovery_mode(DBRecoveryMode.point_in_time())
        self._db: Rdict | None = Rdict(self.path, opts)
        self._sync = WriteOptions()
        self._sync.sync = True
        self._nosync = WriteOptions()
        self._nosync.sync = False
        self._groups: dict[str, GroupStorage] = {}
        try:
            self._check_format()
        except BaseException:
            self.close()
            raise

    def _check_format(self) -> None:
        db = self._live_db()
        marker = db.get(_FORMAT_KEY)
        if marker == FORMAT:
            return
        if marker is None:
            if not _collect(db, b"", limit=1):
                db.put(_FORMAT_KEY, FORMAT, self._sync)
                return
            raise StorageError(
                f"the database at {self.path} is not a liferaft node store (no format marker)"
            )
        raise StorageError(
            f"the database at {self.path} has format {marker!r}; this liferaft reads {FORMAT!r}"
        )

    # -- groups --------------------------------------------------------------------------------
    def group(self, group_id: str) -> GroupStorage:
        """The group's storage, loaded from disk (empty if it has none); one object per id."""
        g = self._groups.get(group_id)
        if g is None:
            g = GroupStorage(self, group_id)
            g._load()
            self._groups[group_id] = g
        return g

    def groups(self) -> list[str]:
        """Ids of the groups that have state on disk, sorted."""
        out = []
        for k, v in self._scan(_REGISTRY, bytes([_REGISTRY[0] + 1])):
            group_id = k[len(_REGISTRY) :].decode(errors="replace")
            why = _unseal(v, k)
            if why is not None:
                raise CorruptStorageError(group_id, "registration", k, reason=why, path=self.path)
            out.append(group_id)
        return out

    def _forget(self, group: GroupStorage) -> None:
        if self._groups.get(group.group_id) is group:
            del self._groups[group.group_id]

    # -- writes --------------------------------------------------------------------------------
    def write(self, updates: list[GroupUpdate], *, sync: bool = True) -> None:
        """Persist every update in ONE WriteBatch and ONE write, fsync'd when sync. All or
        nothing: a crash leaves either the whole batch or none of it."""
        self._live_db()
        batch = self._new_batch()
        plans: list[tuple[GroupStorage, _Plan]] = []
        seen: set[str] = set()
        for u in updates:
            g = u.group
            if g._store is not self:
                raise ValueError(f"group {g.group_id!r} belongs to another NodeStore")
            if g.group_id in seen:
                raise ValueError(f"two updates for group {g.group_id!r} in one write")
            seen.add(g.group_id)
            g._check_writable()
            plans.append((g, g._plan(u, batch)))
            for key, value in u.meta:
                if value is None:
                    batch.delete(_META + key)
                else:
                    batch.put(_META + key, _seal(_META + key, value))
        # Memory follows only once the batch is written: a bad update (ValueError above) or a
        # failed write leaves every group as it was.
        if not batch.is_empty():
            self._write_batch(batch, sync=sync)
        for g, plan in plans:
            g._apply(plan)

    # -- the database seam: every read and write of the database goes through these five,
    # which a simulation overrides with a disk of its own (tests/brokersim/disk.py) --------
    def _new_batch(self) -> Batch:
        return WriteBatch(raw_mode=True)

    def _write_batch(self, batch: Batch, *, sync: bool) -> None:
        self._live_db().write(cast("WriteBatch", batch), self._sync if sync else self._nosync)

    def _scan(
        self,
        start: bytes,
        upper: bytes | None = None,
        *,
        backwards: bool = False,
        limit: int | None = None,
        accept: Callable[[bytes, bytes], bool] | None = None,
        verify: bool = True,
    ) -> list[tuple[bytes, bytes]]:
        return _collect(
            self._live_db(),
            start,
            upper,
            backwards=backwards,
            limit=limit,
            accept=accept,
            verify=verify,
        )

    def _get_raw(self, key: bytes) -> bytes | None:
        value: bytes | None = self._live_db().get(key)
        return value

    def _flush_wal(self) -> None:
        self._live_db().flush_wal(True)

    def sync_wal(self) -> None:
        """Make every write so far durable: fsync RocksDB's write-ahead log.

        `write(updates, sync=False)` followed by this is as durable as `write(updates,
        sync=True)` once this returns (the WAL is one ordered stream; syncing it covers every
        earlier write), with one difference that matters: rocksdict holds the GIL for the whole
        of a synced Rdict.write, fsync included, but releases it in flush_wal. So the driver
        writes inline (a memcpy into the WAL's page cache) and runs this in a thread, and the
        event loop goes on moving bytes while the disk syncs. Safe to call from another thread
        than the loop's while the loop reads and writes (RocksDB allows it); not while closing."""
        if self.on_sync is None:
            self._flush_wal()
            return
        t0 = time.perf_counter()
        self._flush_wal()
        self.on_sync(time.perf_counter() - t0)

    # -- host metadata -------------------------------------------------------------------------
    def get_meta(self, key: bytes) -> bytes | None:
        """A host key's value, written through GroupUpdate.meta; None if absent."""
        full = _META + key
        value = self._get_raw(full)
        if value is None:
            return None
        why = _unseal(value, full)
        if why is not None:
            raise CorruptStorageError(None, repr(key), full, reason=why, path=self.path)
        return value[_CRC.size :]

    # -- lifecycle -----------------------------------------------------------------------------
    def _live_db(self) -> Rdict:
        if self._db is None:
            raise StorageError(f"the node store at {self.path} is closed")
        return self._db

    def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            db.close()

    def __enter__(self) -> NodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
