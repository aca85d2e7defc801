"""The Raft log as the core sees it: the host's stable storage plus an unstable tail.

Theory of operation. Entries the core has accepted but the host has not yet persisted live in
`Unstable` (and possibly a snapshot received from the leader). The host drains them through a
Ready, writes them, and calls `stable_to` so they leave the unstable tail. Reads look in the
unstable part first and fall back to storage. A conflicting append truncates the unstable tail
and may reach back below it; then `offset` moves back and the host overwrites the stale suffix it
already holds (every storage append truncates what follows it).

Writes in flight. A host may take the next Ready before the previous one is durable (etcd's
asynchronous storage writes): handing entries to the host moves `offset_in_progress` past them
(and marks a snapshot in progress), so the next Ready carries only newer ones, and handing out
committed entries moves `applying`, so none is applied twice. Entries stay in the unstable tail
until the host reports them durable (`stable_to`); a report for an entry that a newer leader's
append has replaced since is ignored, and that append moved `offset_in_progress` back so its
entries go out in a later Ready.

Invariants: applied <= applying <= committed <= last_index(); first_index() - 1 <= committed;
offset <= offset_in_progress <= last_index() + 1.
"""

from __future__ import annotations

from raft.errors import CompactedError, RaftError, UnavailableError
from raft.storage import Storage, limit_size
from raft.types import Entry, Snapshot


class Unstable:
    """Entries and a snapshot not yet persisted. entries[i] has index offset + i."""

    __slots__ = ("entries", "offset", "offset_in_progress", "snapshot", "snapshot_in_progress")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset
        self.offset_in_progress = offset
        """Entries below this index were handed to the host in a Ready (writes in flight)."""
        self.snapshot_in_progress = False

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.meta.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.meta.index
        return None

    def maybe_term(self, index: int) -> int | None:
        if index < self.offset:
            if self.snapshot is not None and self.snapshot.meta.index == index:
                return self.snapshot.meta.term
            return None
        last = self.maybe_last_index()
        if last is None or index > last:
            return None
        return self.entries[index - self.offset].term

    def stable_to(self, index: int, term: int) -> None:
        t = self.maybe_term(index)
        if t is None or t != term:
            # The entry was replaced after the host started persisting it; the newer version
            # will come in a later Ready.
            return
        if index >= self.offset:
            del self.entries[: index + 1 - self.offset]
            self.offset = index + 1
            self.offset_in_progress = max(self.offset_in_progress, self.offset)

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.meta.index == index:
            self.snapshot = None
            self.snapshot_in_progress = False

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.meta.index + 1
        self.offset_in_progress = self.offset
        self.entries = []
        self.snapshot = snap
        self.snapshot_in_progress = False

    def has_next_entries(self) -> bool:
        return self.offset_in_progress < self.offset + len(self.entries)

    def next_entries(self) -> list[Entry]:
        """The entries not yet handed to the host."""
        return self.entries[self.offset_in_progress - self.offset :]

    def next_snapshot(self) -> Snapshot | None:
        """The snapshot, unless it was already handed to the host."""
        return None if self.snapshot_in_progress else self.snapshot

    def accept_in_progress(self) -> None:
        """The host took everything unstable in a Ready: it is being written now."""
        self.offset_in_progress = self.offset + len(self.entries)
        if self.snapshot is not None:
            self.snapshot_in_progress = True

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replace everything unstable; the host's stored suffix from `after` is stale and
            # will be overwritten when these are persisted.
            self.offset = after
            self.offset_in_progress = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)
            self.offset_in_progress = min(self.offset_in_progress, after)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    def __init__(self, storage: Storage, max_applying_size: int | None = None) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(offset=last + 1)
        self.committed = first - 1  # committed <= last_index()
        self.applied = first - 1  # applied <= committed: the host applied these and said so
        self.applying = first - 1  # applied <= applying <= committed: handed out in a Ready
        self.max_applying_size = max_applying_size

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applying={self.applying}, "
            f"applied={self.applied}, unstable.offset={self.unstable.offset}, "
            f"in_progress={self.unstable.offset_in_progress}, "
            f"len(unstable)={len(self.unstable.entries)})"
        )

    # -- bounds ------------------------------------------------------------------------------
    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def last_term(self) -> int:
        return self.term(self.last_index())

    def last_persisted_index(self) -> int:
        """The last index known to be on disk and agreeing with this log (0 while a received
        snapshot is still unpersisted). A leader counts itself only up to here."""
        if self.unstable.snapshot is not None:
            return 0
        return min(self.unstable.offset - 1, self.storage.last_index())

    def term(self, index: int) -> int:
        """Term at index; 0 past the last index; CompactedError below the snapshot point."""
        dummy = self.first_index() - 1
        if index < dummy:
            raise CompactedError(f"index {index} is compacted (log starts at {dummy + 1})")
        if index > self.last_index():
            return 0
        t = self.unstable.maybe_term(index)
        if t is not None:
            return t
        try:
            return self.storage.term(index)
        except UnavailableError:
            return 0

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except CompactedError:
            return False

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """Raft §5.4.1: a candidate's log is at least as up-to-date as ours."""
        our_term = self.last_term()
        return term > our_term or (term == our_term and last_index >= self.last_index())

    # -- appends -----------------------------------------------------------------------------
    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise RaftError(f"append after {after} is below the commit index {self.committed}")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: tuple[Entry, ...] | list[Entry]) -> int:
        """Index of the first entry that is new or disagrees with ours; 0 when all match."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest index <= `index` whose term is <= `term`, with that term. Lets a rejected
        append skip a whole term of mismatching entries in one round trip."""
        while index > 0:
            try:
                our = self.term(index)
            except CompactedError:
                return index, 0
            if our <= term:
                return index, our
            index -= 1
        return 0, 0

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: tuple[Entry, ...]
    ) -> int | None:
        """The follower side of AppendEntries (Raft §5.3). Returns the last index the leader's
        message proves we share, or None when our log does not contain (index, log_term)."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise RaftError(
                    f"entry {ci} conflicts with a committed entry (committed {self.committed})"
                )
            self.append(list(ents[ci - index - 1 :]))
        self.commit_to(min(committed, last_new))
        return last_new

    # -- commit and apply --------------------------------------------------------------------
    def commit_to(self, to: int) -> None:
        if to > self.committed:
            if to > self.last_index():
                raise RaftError(f"commit {to} is past the last index {self.last_index()}")
            self.committed = to

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Commit up to max_index only if that entry is from `term` (Raft §5.4.2: a leader
        commits entries of earlier terms only by committing one of its own)."""
        if max_index > self.committed and self.term_or_zero(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except CompactedError:
            return 0

    def applied_to(self, index: int) -> None:
        if index == 0:
            return
        if index > self.committed or index < self.applied:
            raise RaftError(
                f"applied {index} is out of range [applied {self.applied}, committed {self.committed}]"
            )
        self.applied = index
        self.applying = max(self.applying, index)

    def applying_to(self, index: int) -> None:
        """The host took the committed entries up to index in a Ready (or a snapshot to it)."""
        self.applying = max(self.applying, index)

    def has_next_committed_entries(self) -> bool:
        return self.committed > max(self.applying, self.first_index() - 1)

    def next_committed_entries(self) -> list[Entry]:
        lo = max(self.applying + 1, self.first_index())
        if self.committed < lo:
            return []
        return self.slice(lo, self.committed + 1, self.max_applying_size)

    # -- persistence feedback ----------------------------------------------------------------
    def unstable_entries(self) -> list[Entry]:
        """Every entry not yet durable (handed out or not)."""
        return list(self.unstable.entries)

    def stable_to(self, index: int, term: int) -> None:
        self.unstable.stable_to(index, term)

    def stable_snap_to(self, index: int) -> None:
        self.unstable.stable_snap_to(index)

    def has_pending_snapshot(self) -> bool:
        return self.unstable.snapshot is not None

    # -- reads -------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def entries(self, lo: int, max_size: int | None) -> list[Entry]:
        if lo > self.last_index():
            return []
        return self.slice(lo, self.last_index() + 1, max_size)

    def slice(self, lo: int, hi: int, max_size: int | None) -> list[Entry]:
        """Entries in [lo, hi) within max_size (at least one). CompactedError below the log."""
        if lo >= hi:
            return []
        first = self.first_index()
        if lo < first:
            raise CompactedError(f"index {lo} is compacted (log starts at {first})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"slice [{lo}, {hi}) is past the last index {self.last_index()}")
        ents: list[Entry] = []
        off = self.unstable.offset
        if lo < off:
            stored = self.storage.entries(lo, min(hi, off), max_size)
            if len(stored) < min(hi, off) - lo:
                return stored  # cut by size
            ents = stored
        if hi > off:
            ents = ents + self.unstable.slice(max(lo, off), hi)
        return limit_size(ents, max_size)

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.meta.index
        self.unstable.restore(snap)
