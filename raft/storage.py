"""The narrow read interface the core uses to see what the host has persisted.

The core only reads stable state through this interface; all writes go the other way, through the
Ready bundle, and the host applies them to its storage before calling `advance`. That keeps the
core free of I/O and makes the host the one place that decides how and when bytes reach disk.

Indexes: storage holds a snapshot at (snapshot_index, snapshot_term) and the entries after it.
`first_index()` is snapshot_index + 1 and `last_index()` may equal snapshot_index when no entry
follows. `term(snapshot_index)` must answer even though that entry itself is gone.
"""

from __future__ import annotations

from typing import Protocol

from raft.errors import CompactedError, UnavailableError
from raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]:
        """The hard state and membership to restart from."""
        ...

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in [lo, hi). At least one entry is returned when any is in range, even if it
        alone exceeds max_size. Raises CompactedError below first_index and UnavailableError
        above last_index."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at index, for first_index()-1 <= index <= last_index()."""
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot, sent to followers that are behind first_index()."""
        ...


def limit_size(entries: list[Entry], max_size: int | None) -> list[Entry]:
    """Longest prefix within max_size bytes, but never empty when entries is not."""
    if max_size is None or not entries:
        return entries
    total = 0
    for i, e in enumerate(entries):
        total += e.size()
        if total > max_size and i > 0:
            return entries[:i]
    return entries


class MemoryStorage:
    """Storage kept in a list; used by tests and the simulation, where "durable" means "held
    here" and a crash keeps exactly what was written into it."""

    def __init__(self, conf_state: ConfState | None = None) -> None:
        """conf_state bootstraps a new group's membership (as a snapshot at index 0)."""
        self.hard_state = HardState()
        self._snapshot = Snapshot(meta=SnapshotMeta(conf_state=conf_state or ConfState()))
        # _ents[0] is a dummy standing for the snapshot point: index and term of the snapshot.
        self._ents: list[Entry] = [Entry(index=0, term=0)]

    # -- reads -------------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self._snapshot.meta.conf_state

    def _offset(self) -> int:
        return self._ents[0].index

    def first_index(self) -> int:
        return self._offset() + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, index: int) -> int:
        offset = self._offset()
        if index < offset:
            raise CompactedError(f"index {index} is compacted (snapshot at {offset})")
        if index - offset >= len(self._ents):
            raise UnavailableError(f"index {index} is past the last index {self.last_index()}")
        return self._ents[index - offset].term

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        offset = self._offset()
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (snapshot at {offset})")
        if hi > self.last_index() + 1:
            raise UnavailableError(
                f"entries up to {hi - 1} asked, last index is {self.last_index()}"
            )
        return limit_size(self._ents[lo - offset : hi - offset], max_size)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes (the host's side) ------------------------------------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace everything with the snapshot (a follower installing the leader's snapshot)."""
        if snap.meta.index <= self._snapshot.meta.index:
            raise ValueError(
                f"snapshot at {snap.meta.index} is older than the one held at {self._snapshot.meta.index}"
            )
        self._snapshot = snap
        self._ents = [Entry(index=snap.meta.index, term=snap.meta.term)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record the host's state as of applied index `index` (which must be held here)."""
        if index <= self._snapshot.meta.index:
            return self._snapshot
        if index > self.last_index():
            raise ValueError(f"snapshot index {index} is past the last index {self.last_index()}")
        meta = SnapshotMeta(index=index, term=self.term(index), conf_state=conf_state)
        self._snapshot = Snapshot(meta=meta, data=data)
        return self._snapshot

    def compact(self, index: int) -> None:
        """Drop entries up to and including index; index must be covered by a snapshot or the
        host must be fine with followers needing one."""
        offset = self._offset()
        if index <= offset:
            return
        if index > self.last_index():
            raise ValueError(f"compact {index} is past the last index {self.last_index()}")
        term = self._ents[index - offset].term
        self._ents = [Entry(index=index, term=term), *self._ents[index - offset + 1 :]]

    def append(self, entries: list[Entry]) -> None:
        """Append, truncating any conflicting suffix first (entries must be contiguous)."""
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._offset()
        if offset > len(self._ents):
            raise ValueError(
                f"missing log entry: last index {self.last_index()}, appending at {entries[0].index}"
            )
        del self._ents[offset:]
        self._ents.extend(entries)
