"""Where each committed record batch of a partition sits in its Raft log.

A partition's log is its Raft log: one entry per record batch, or per run of batches proposed
together (node/partition.py: a row here is an entry, its offsets those of all its batches), plus
no-ops and membership entries, which take no offsets. Consumers ask by record offset, Raft reads
by entry index; this index maps one to the other. It only ever holds committed batches, so it
grows at the end and is cut at the start (retention, DeleteRecords) but never rewritten: a
committed entry is never taken back. The log start offset may fall inside the first batch held (DeleteRecords to an offset in
the middle of a batch, as in Kafka): that batch is still served whole, and readers skip the
records before the offset they asked for.

Kept in memory as parallel lists (bisect on base offsets), rebuilt on restart by re-applying the
committed log. A few dozen bytes per batch: a million batches of 64 KiB (64 GiB) cost ~50 MB.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class BatchLocation:
    base_offset: int
    record_count: int
    raft_index: int
    size: int
    max_timestamp_ms: int

    @property
    def end_offset(self) -> int:
        return self.base_offset + self.record_count


class OffsetIndex:
    def __init__(self, start_offset: int = 0) -> None:
        self.start_offset = start_offset  # log start offset: first offset still held
        self.end_offset = start_offset  # one past the last committed record (the high watermark)
        self._bases: list[int] = []
        self._counts: list[int] = []
        self._indexes: list[int] = []
        self._sizes: list[int] = []
        self._max_ts: list[int] = []
        self.total_bytes = 0

    def __len__(self) -> int:
        return len(self._bases)

    def append(
        self, base_offset: int, record_count: int, raft_index: int, size: int, max_ts: int
    ) -> None:
        if base_offset != self.end_offset:
            raise ValueError(
                f"batch at offset {base_offset} does not follow the log end {self.end_offset}: "
                "offsets must be dense"
            )
        self._bases.append(base_offset)
        self._counts.append(record_count)
        self._indexes.append(raft_index)
        self._sizes.append(size)
        self._max_ts.append(max_ts)
        self.end_offset = base_offset + record_count
        self.total_bytes += size

    def reset(self, start_offset: int) -> None:
        """Forget everything: the log now starts (and ends) at start_offset (a snapshot)."""
        self.__init__(start_offset)  # type: ignore[misc]

    def position(self, offset: int) -> int:
        """Position of the batch holding offset (offset in [start_offset, end_offset))."""
        return bisect_right(self._bases, offset) - 1

    def locate(self, offset: int) -> BatchLocation | None:
        if not self.start_offset <= offset < self.end_offset or not self._bases:
            return None
        return self.at(max(0, self.position(offset)))

    def at(self, pos: int) -> BatchLocation:
        return BatchLocation(
            self._bases[pos],
            self._counts[pos],
            self._indexes[pos],
            self._sizes[pos],
            self._max_ts[pos],
        )

    def first_at_or_after_time(self, timestamp_ms: int, after: int = 0) -> BatchLocation | None:
        """The first batch from offset `after` on whose max timestamp is >= timestamp_ms
        (ListOffsets by time)."""
        if after >= self.end_offset:
            return None
        first = max(0, self.position(after)) if after > self.start_offset else 0
        for pos in range(first, len(self._max_ts)):
            if self._max_ts[pos] >= timestamp_ms:
                return self.at(pos)
        return None

    def last_index(self) -> int:
        return self._indexes[-1] if self._indexes else 0

    def drop_prefix(self, count: int) -> BatchLocation | None:
        """Drop the first count batches (retention). Returns the last dropped one."""
        if count <= 0 or not self._bases:
            return None
        count = min(count, len(self._bases))
        last = self.at(count - 1)
        self.total_bytes -= sum(self._sizes[:count])
        for lst in (self._bases, self._counts, self._indexes, self._sizes, self._max_ts):
            del lst[:count]
        self.start_offset = last.end_offset
        return last

    def advance_start(self, offset: int) -> BatchLocation | None:
        """Move the log start up to `offset` (at most the end; never down), dropping the batches
        now wholly below it (DeleteRecords). Returns the last batch dropped, if any."""
        start = max(self.start_offset, min(offset, self.end_offset))
        count = 0
        while count < len(self._bases) and self._bases[count] + self._counts[count] <= start:
            count += 1
        last = self.drop_prefix(count)
        self.start_offset = start
        return last

    def batches_to_drop(self, retention_bytes: int, retention_ms: int, now_ms: int) -> int:
        """How many leading batches retention removes. The newest batch is always kept so the
        log's end stays addressable."""
        n = len(self._bases)
        drop = 0
        if retention_ms > 0:
            cutoff = now_ms - retention_ms
            while drop < n - 1 and self._max_ts[drop] < cutoff:
                drop += 1
        if retention_bytes > 0:
            size = self.total_bytes - sum(self._sizes[:drop])
            while drop < n - 1 and size > retention_bytes:
                size -= self._sizes[drop]
                drop += 1
        return drop
