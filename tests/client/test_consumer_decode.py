"""client/consumer.py's decoding of a Fetch answer: whole batches in, records from the offset on.

A Fetch returns the batch that holds the requested offset whole, so it may start earlier; the
consumer must hand out nothing below the offset it asked for, and must turn a damaged batch into
CorruptMessageError rather than a crash or a silent skip.
"""

from __future__ import annotations

import pytest

from client.errors import CorruptMessageError
from client.fetcher import decode_fetch
from client.types import TopicPartition
from liferaft_proto.records import Record, build_batch, stamp_base_offset

TP = TopicPartition("orders", 2)


def log_bytes() -> bytes:
    """Two batches as a leader stores them: offsets 10..12 and 13..14."""
    first = build_batch([Record(b"a", b"k"), Record(b"b"), Record(b"c")], timestamp_ms=1000)
    second = build_batch([Record(b"d", headers=(("h", b"v"),)), Record(None)], timestamp_ms=2000)
    return stamp_base_offset(first, 10) + stamp_base_offset(second, 13)


def test_records_below_the_requested_offset_are_skipped() -> None:
    records = decode_fetch(TP, 12, log_bytes())
    assert [r.offset for r in records] == [12, 13, 14]
    assert [r.value for r in records] == [b"c", b"d", None]
    assert records[1].headers == (("h", b"v"),)
    assert {(r.topic, r.partition) for r in records} == {("orders", 2)}
    assert records[0].timestamp_ms == 1000 and records[1].timestamp_ms == 2000


def test_from_the_batch_start_everything_comes_back() -> None:
    records = decode_fetch(TP, 10, log_bytes())
    assert [(r.offset, r.key, r.value) for r in records][:2] == [(10, b"k", b"a"), (11, None, b"b")]
    assert len(records) == 5


def test_empty_answer() -> None:
    assert decode_fetch(TP, 0, b"") == []


def test_damaged_batch_is_a_corrupt_message_error() -> None:
    data = bytearray(log_bytes())
    data[-3] ^= 0xFF  # flip bits inside the second batch's last record
    with pytest.raises(CorruptMessageError, match="orders-2 at offset 10"):
        decode_fetch(TP, 10, bytes(data))
