"""Idempotent producers: the per-partition state that tells a retry from a new batch.

Theory of operation. An idempotent producer stamps every batch with its producer id, an epoch
and the sequence number of its first record; sequences count records per (producer, partition)
from 0. The partition remembers, per producer id, the epoch and the last few batches it wrote
(first sequence, last sequence, base offset). A batch that arrives is then exactly one of:

  - the next one (first sequence = last sequence + 1): append it;
  - one of the remembered batches again (a retry whose first answer was lost): do not append,
    answer with the offset it was written at (Kafka's behaviour: the producer sees success);
  - older than what is remembered: DUPLICATE_SEQUENCE_NUMBER (written, offset forgotten; the
    producer counts it as written, with offset -1, as Kafka's does). For acks=all the leader
    says so only once the batch is committed (`check_batch`): the tail that proves it may
    still be overwritten;
  - further ahead (a gap: a batch in between was lost): OUT_OF_ORDER_SEQUENCE_NUMBER;
  - of an older epoch: INVALID_PRODUCER_EPOCH. A newer epoch must start at sequence 0 and
    replaces the old one (the producer reset its sequences).

This state is derived ONLY from the replicated log: `record` is called as committed batches are
applied, in log order, identically on every replica, and the table travels in the partition's
snapshots. So every replica, and so every future leader, knows what was written. The leader checks
a new batch against the committed table plus its own uncommitted tail (a copy it keeps while it
leads, rebuilt from its log when it becomes leader), so a retry of a batch that is in flight is
recognised as well.

Bounded by count: at most `max_producers` producer ids per partition; past that the one whose last
batch is oldest is forgotten (the same one on every replica: the order is the log's). A forgotten
producer that sends again with a sequence other than 0 gets UNKNOWN_PRODUCER_ID.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from node.errors import BrokerError, ErrorCode

__all__ = [
    "PENDING_INDEX",
    "BatchRecord",
    "Decision",
    "ProducerEntry",
    "ProducerStateTable",
    "check_batch",
]

SEQ_MODULUS = 1 << 31
"""Sequences are int32 >= 0 and wrap to 0 after 2**31 - 1, as in Kafka."""
BATCHES_KEPT = 5
"""Batches remembered per producer: a producer keeps at most 5 in flight per partition."""
MAX_PRODUCERS = 2048
PENDING_INDEX = 0
"""The Raft index of a batch in the leader's tail that is not proposed yet (log indexes start
at 1)."""


def last_sequence(first: int, count: int) -> int:
    return (first + count - 1) % SEQ_MODULUS


@dataclass(slots=True, frozen=True)
class BatchRecord:
    first_seq: int
    last_seq: int
    base_offset: int
    record_count: int
    raft_index: int
    """Where the batch sits in the Raft log (to wait for an in-flight one's commit)."""
    term: int


@dataclass(slots=True)
class ProducerEntry:
    epoch: int
    batches: deque[BatchRecord] = field(default_factory=lambda: deque(maxlen=BATCHES_KEPT))

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1

    @property
    def last_offset(self) -> int:
        return self.batches[-1].base_offset if self.batches else -1


@dataclass(slots=True, frozen=True)
class Decision:
    """What to do with a batch: append it (duplicate None), or answer with `duplicate`."""

    duplicate: BatchRecord | None = None


APPEND = Decision()


class ProducerStateTable:
    def __init__(self, max_producers: int = MAX_PRODUCERS) -> None:
        self.max_producers = max_producers
        self.producers: dict[int, ProducerEntry] = {}

    def __len__(self) -> int:
        return len(self.producers)

    # -- checking (the leader, before it proposes) ---------------------------------------------
    def check(
        self, producer_id: int, epoch: int, first_seq: int, count: int, where: str
    ) -> Decision:
        """Decide on a batch of `count` records from (producer_id, epoch) starting at first_seq.
        Raises BrokerError for the refusals; `where` names the partition in messages."""
        if first_seq < 0 or epoch < 0:
            raise BrokerError(
                ErrorCode.INVALID_RECORD,
                f"idempotent batch to {where} has producer id {producer_id} but epoch {epoch} "
                f"and base sequence {first_seq}; both must be >= 0",
            )
        entry = self.producers.get(producer_id)
        if entry is None:
            if first_seq != 0:
                raise BrokerError(
                    ErrorCode.UNKNOWN_PRODUCER_ID,
                    f"{where} has no state for producer {producer_id} (never seen, or forgotten "
                    f"after {self.max_producers} newer producers) and its batch starts at "
                    f"sequence {first_seq}, not 0",
                )
            return APPEND
        if epoch < entry.epoch:
            raise BrokerError(
                ErrorCode.INVALID_PRODUCER_EPOCH,
                f"producer {producer_id} sent epoch {epoch} to {where}, which has seen epoch "
                f"{entry.epoch}: this batch is from a fenced-off instance",
            )
        if epoch > entry.epoch:
            if first_seq != 0:
                raise BrokerError(
                    ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                    f"producer {producer_id} began epoch {epoch} on {where} at sequence "
                    f"{first_seq}; a new epoch starts at 0",
                )
            return APPEND
        last = last_sequence(first_seq, count)
        for b in entry.batches:
            if b.first_seq == first_seq and b.last_seq == last:
                return Decision(duplicate=b)
        expected = (entry.last_seq + 1) % SEQ_MODULUS
        if first_seq == expected:
            return APPEND
        # Older than every remembered batch, or a gap. Sequences wrap, so "older" means within
        # 2**30 behind the expected one.
        behind = (expected - first_seq) % SEQ_MODULUS
        if 0 < behind <= SEQ_MODULUS // 2:
            raise BrokerError(
                ErrorCode.DUPLICATE_SEQUENCE_NUMBER,
                f"producer {producer_id} resent sequences {first_seq}..{last} to {where}: they "
                f"were written already (the next expected is {expected}), at an offset no longer "
                "remembered",
            )
        raise BrokerError(
            ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
            f"producer {producer_id} sent sequence {first_seq} to {where}, which expects "
            f"{expected}: a batch in between is missing",
        )

    # -- recording (applying committed batches; the leader's tail too) -------------------------
    def record(
        self,
        producer_id: int,
        epoch: int,
        first_seq: int,
        count: int,
        base_offset: int,
        raft_index: int,
        term: int,
    ) -> None:
        """A batch is in the log (committed, or in the leader's tail). Never refuses: what the
        log holds is the truth, and every replica must reach the same table."""
        entry = self.producers.get(producer_id)
        if entry is None or epoch != entry.epoch:
            entry = ProducerEntry(epoch)
            self.producers.pop(producer_id, None)
            self.producers[producer_id] = entry
            self._evict()
        else:
            # Most recently written last: dict order is the eviction order.
            self.producers[producer_id] = self.producers.pop(producer_id)
        entry.batches.append(
            BatchRecord(
                first_seq,
                last_sequence(first_seq, count),
                base_offset,
                count,
                raft_index,
                term,
            )
        )

    def assign_index(self, producer_id: int, first_seq: int, raft_index: int, term: int) -> None:
        """A batch recorded before it had a place in the Raft log (the leader's tail, with
        `raft_index` PENDING_INDEX: it waits to be proposed with its neighbours as one entry,
        node/partition.py) now has one. Unknown or already placed batches are left alone."""
        entry = self.producers.get(producer_id)
        if entry is None:
            return
        for i, b in enumerate(entry.batches):
            if b.first_seq == first_seq and b.raft_index == PENDING_INDEX:
                entry.batches[i] = BatchRecord(
                    b.first_seq, b.last_seq, b.base_offset, b.record_count, raft_index, term
                )
                return

    def _evict(self) -> None:
        while len(self.producers) > self.max_producers:
            oldest = next(iter(self.producers))
            del self.producers[oldest]

    def copy(self) -> ProducerStateTable:
        out = ProducerStateTable(self.max_producers)
        for pid, e in self.producers.items():
            out.producers[pid] = ProducerEntry(e.epoch, deque(e.batches, maxlen=BATCHES_KEPT))
        return out

    # -- snapshots -----------------------------------------------------------------------------
    def to_json(self) -> list[Any]:
        """[[producer id, epoch, [[first, last, base offset, count, index, term], ...]], ...]
        in eviction order."""
        return [
            [
                pid,
                e.epoch,
                [
                    [b.first_seq, b.last_seq, b.base_offset, b.record_count, b.raft_index, b.term]
                    for b in e.batches
                ],
            ]
            for pid, e in self.producers.items()
        ]

    @classmethod
    def from_json(cls, raw: list[Any], max_producers: int = MAX_PRODUCERS) -> ProducerStateTable:
        table = cls(max_producers)
        for pid, epoch, batches in raw:
            entry = ProducerEntry(int(epoch))
            for first, last, base, count, index, term in batches:
                entry.batches.append(
                    BatchRecord(int(first), int(last), int(base), int(count), int(index), int(term))
                )
            table.producers[int(pid)] = entry
        return table


def check_batch(
    leader: ProducerStateTable,
    committed: ProducerStateTable,
    producer_id: int,
    epoch: int,
    first_seq: int,
    count: int,
    where: str,
    *,
    need_commit: bool,
) -> Decision:
    """The leader's decision on a batch: `leader` is its whole log's table (uncommitted tail
    included), `committed` the applied one.

    DUPLICATE_SEQUENCE_NUMBER tells the producer "written" (it completes the records), so with
    need_commit (acks=all) it is said only when the committed table says it too. When only the
    uncommitted tail proves it (the batch sits further back than the tail's remembered window),
    the answer is a retriable REQUEST_TIMED_OUT: the retry gets the right answer once the tail
    commits, or is written again (or refused as out of order) if a new leader overwrote it."""
    try:
        return leader.check(producer_id, epoch, first_seq, count, where)
    except BrokerError as e:
        if e.code != ErrorCode.DUPLICATE_SEQUENCE_NUMBER or not need_commit:
            raise
    try:
        decision = committed.check(producer_id, epoch, first_seq, count, where)
    except BrokerError as e:
        if e.code == ErrorCode.DUPLICATE_SEQUENCE_NUMBER:
            raise
    else:
        if decision.duplicate is not None:
            return decision  # committed, and its offset still remembered there
    raise BrokerError(
        ErrorCode.REQUEST_TIMED_OUT,
        f"producer {producer_id} resent sequences {first_seq}..{last_sequence(first_seq, count)} "
        f"to {where}: they are in its log but not yet committed; retry to learn their fate",
    )
