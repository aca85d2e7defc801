"""The idempotent producer's per-partition state (node/producer_state.py): what is a retry, what
is new, what is refused; and that replicas rebuilding it from the log or a snapshot agree."""

from __future__ import annotations

import pytest

from node.errors import BrokerError, ErrorCode
from node.producer_state import BATCHES_KEPT, SEQ_MODULUS, ProducerStateTable, check_batch

PID = 7


def write(table: ProducerStateTable, first: int, count: int, base: int, epoch: int = 0) -> None:
    assert table.check(PID, epoch, first, count, "t-0").duplicate is None
    table.record(PID, epoch, first, count, base, raft_index=base + 1, term=1)


def refused(table: ProducerStateTable, first: int, count: int, epoch: int = 0) -> int:
    with pytest.raises(BrokerError) as err:
        table.check(PID, epoch, first, count, "t-0")
    return err.value.code


def test_next_batch_is_appended_and_a_retry_answers_the_original_offset() -> None:
    t = ProducerStateTable()
    write(t, 0, 3, base=100)
    write(t, 3, 2, base=103)
    dup = t.check(PID, 0, 0, 3, "t-0").duplicate
    assert dup is not None and dup.base_offset == 100
    dup = t.check(PID, 0, 3, 2, "t-0").duplicate
    assert dup is not None and dup.base_offset == 103


def test_gaps_old_batches_and_old_epochs_are_refused() -> None:
    t = ProducerStateTable()
    assert refused(t, 5, 1) == ErrorCode.UNKNOWN_PRODUCER_ID  # a new producer starts at 0
    write(t, 0, 1, base=0)
    assert refused(t, 2, 1) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    for i in range(1, BATCHES_KEPT + 2):
        write(t, i, 1, base=i)
    # Sequence 0 was written, but is no longer among the remembered batches.
    assert refused(t, 0, 1) == ErrorCode.DUPLICATE_SEQUENCE_NUMBER
    # A new epoch starts at 0 and fences the old one.
    assert refused(t, 3, 1, epoch=1) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    write(t, 0, 1, base=50, epoch=1)
    assert refused(t, BATCHES_KEPT + 2, 1, epoch=0) == ErrorCode.INVALID_PRODUCER_EPOCH


def test_sequences_wrap() -> None:
    t = ProducerStateTable()
    write(t, 0, 1, base=0)
    t.producers[PID].batches.clear()
    t.record(PID, 0, SEQ_MODULUS - 2, 2, 10, 11, 1)  # ends at 2**31 - 1
    write(t, 0, 5, base=12)  # the next sequence after the largest is 0


def test_bounded_by_count_forgetting_the_least_recently_written() -> None:
    t = ProducerStateTable(max_producers=3)
    for pid in (1, 2, 3):
        t.record(pid, 0, 0, 1, pid, pid, 1)
    t.record(1, 0, 1, 1, 10, 10, 1)  # producer 1 wrote again: 2 is now the oldest
    t.record(4, 0, 0, 1, 11, 11, 1)
    assert sorted(t.producers) == [1, 3, 4]


def test_snapshot_round_trip_is_the_same_table() -> None:
    t = ProducerStateTable()
    for i in range(8):
        t.record(i % 3, 0, i // 3 * 2, 2, 100 + i, 200 + i, 4)
    again = ProducerStateTable.from_json(t.to_json())
    assert again.to_json() == t.to_json()
    assert list(again.producers) == list(t.producers)  # eviction order survives


def test_written_long_ago_is_said_for_acks_all_only_once_committed() -> None:
    """DUPLICATE_SEQUENCE_NUMBER makes the producer count its records written, so with acks=all
    the leader says it only when the committed table proves it; a batch that only the
    uncommitted tail proves gets a retriable answer (the tail may still be overwritten)."""
    committed = ProducerStateTable()
    write(committed, 0, 1, base=0)
    leader = committed.copy()
    for i in range(1, BATCHES_KEPT + 2):  # uncommitted: sequence 0 leaves the tail's window
        write(leader, i, 1, base=i)

    def decide(table: ProducerStateTable, first: int, need_commit: bool) -> int:
        try:
            d = check_batch(leader, table, PID, 0, first, 1, "t-0", need_commit=need_commit)
        except BrokerError as e:
            return e.code
        assert d.duplicate is not None
        return -d.duplicate.base_offset - 1

    # Committed and still in the committed table's window: answered with its offset.
    assert decide(committed, 0, need_commit=True) == -1
    assert decide(committed, 0, need_commit=False) == ErrorCode.DUPLICATE_SEQUENCE_NUMBER
    # Only the tail knows sequence 1 (and no longer remembers it): not yet "written" for acks=all.
    assert decide(committed, 1, need_commit=True) == ErrorCode.REQUEST_TIMED_OUT
    assert decide(committed, 1, need_commit=False) == ErrorCode.DUPLICATE_SEQUENCE_NUMBER
    # Once committed past the window: DUPLICATE_SEQUENCE_NUMBER.
    for i in range(1, BATCHES_KEPT + 2):
        committed.record(PID, 0, i, 1, i, raft_index=i + 1, term=1)
    assert decide(committed, 0, need_commit=True) == ErrorCode.DUPLICATE_SEQUENCE_NUMBER
