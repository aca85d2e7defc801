"""The record batch format (liferaft_proto/records.py, proto/README.md).

Round trips are property tests; every corruption the broker must refuse is planted on purpose
and must be caught with a message that says what is wrong. The format is Kafka's RecordBatch v2,
so kafka-python's independent implementation is the oracle: each side must read the other's
bytes, and both must write the same bytes.
"""

from __future__ import annotations

import struct

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from liferaft_proto.records import (
    COMPRESSION_LZ4,
    COMPRESSION_ZSTD,
    CREATE_TIME,
    HEADER_SIZE,
    LOG_APPEND_TIME,
    BatchHeader,
    CorruptBatchError,
    LogRecord,
    Record,
    UnsupportedBatchError,
    UnsupportedCompressionError,
    ValueRecords,
    build_batch,
    iter_records,
    read_header,
    restamp_producer,
    split_batches,
    stamp_base_offset,
)

SETTINGS = settings(derandomize=True, deadline=None, max_examples=150, database=None)

INT64 = st.integers(-(2**63), 2**63 - 1)
# Record timestamps: deltas from the first must fit a varlong, so keep them in a sane range.
TIMESTAMPS = st.integers(0, 2**50)
BLOBS = st.binary(max_size=300)

records_st = st.builds(
    Record,
    value=st.none() | BLOBS,
    key=st.none() | st.binary(max_size=40),
    headers=st.lists(
        st.tuples(st.text(max_size=12), st.none() | st.binary(max_size=20)), max_size=3
    ).map(tuple),
    timestamp_ms=st.none() | TIMESTAMPS,
)
record_lists = st.lists(records_st, min_size=1, max_size=30)


def recrc(batch: bytes | bytearray) -> bytes:
    """Recompute the CRC, as a buggy client that hashes whatever it wrote would."""
    out = bytearray(batch)
    struct.pack_into(">I", out, 17, crc32c(bytes(out[21:])))
    return bytes(out)


def patch(batch: bytes, fmt: str, at: int, value: int) -> bytes:
    out = bytearray(batch)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


SAMPLE = build_batch(
    [
        Record(b"first value", key=b"k1", headers=(("trace", b"abc"), ("empty", None))),
        Record(None, key=b"k2", timestamp_ms=1_700_000_000_500),
        Record(b"x" * 200),
    ],
    timestamp_ms=1_700_000_000_000,
)


# -- round trips --------------------------------------------------------------------------------


@SETTINGS
@given(
    recs=record_lists,
    base_offset=st.integers(0, 2**62),
    producer_id=st.integers(-1, 2**62),
    producer_epoch=st.integers(-1, 2**15 - 1),
    base_sequence=st.integers(-1, 2**31 - 1),
    now=TIMESTAMPS,
)
def test_build_then_read_round_trips(
    recs: list[Record],
    base_offset: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    now: int,
) -> None:
    batch = build_batch(
        recs,
        base_offset=base_offset,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        timestamp_ms=now,
    )
    h = read_header(batch, deep=True)
    timestamps = [now if r.timestamp_ms is None else r.timestamp_ms for r in recs]
    assert h == BatchHeader(
        base_offset=base_offset,
        batch_length=len(batch) - 12,
        partition_leader_epoch=-1,
        magic=2,
        crc=h.crc,
        attributes=0,
        last_offset_delta=len(recs) - 1,
        first_timestamp=timestamps[0],
        max_timestamp=max(timestamps),
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        record_count=len(recs),
    )
    assert h.size == len(batch)
    assert h.next_offset == base_offset + len(recs)
    assert list(iter_records(batch)) == [
        LogRecord(base_offset + i, ts, r.key, r.value, r.headers, CREATE_TIME)
        for i, (r, ts) in enumerate(zip(recs, timestamps, strict=True))
    ]


def test_build_takes_any_iterable_and_refuses_nothing() -> None:
    batch = build_batch((Record(bytes([i])) for i in range(3)), timestamp_ms=5)
    assert [r.value for r in iter_records(batch)] == [b"\x00", b"\x01", b"\x02"]
    with pytest.raises(ValueError, match="at least one record"):
        build_batch([])


def test_build_refuses_out_of_range_fields() -> None:
    with pytest.raises(ValueError, match="out of range"):
        build_batch([Record(b"v")], producer_epoch=2**15)
    with pytest.raises(ValueError, match="out of range"):
        build_batch([Record(b"v")], base_sequence=2**31)


def test_records_accept_memoryviews_and_bytearrays() -> None:
    view = memoryview(SAMPLE)
    assert read_header(view) == read_header(bytearray(SAMPLE)) == read_header(SAMPLE)
    assert list(iter_records(view)) == list(iter_records(SAMPLE))


# -- kafka-python as the oracle -------------------------------------------------------------------


@SETTINGS
@given(recs=record_lists, now=TIMESTAMPS)
def test_same_bytes_as_kafka(recs: list[Record], now: int) -> None:
    default_records = pytest.importorskip("kafka.record.default_records")
    builder = default_records.DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 30,
    )
    for i, r in enumerate(recs):
        ts = now if r.timestamp_ms is None else r.timestamp_ms
        builder.append(i, timestamp=ts, key=r.key, value=r.value, headers=list(r.headers))
    # kafka-python leaves the partition leader epoch at 0, Kafka's Java producer (and we) at -1;
    # it is outside the CRC, the leader's to stamp.
    theirs = stamp_base_offset(bytes(builder.build()), 0, leader_epoch=-1)
    ours = build_batch(recs, timestamp_ms=now)
    assert ours == theirs

    stamped = stamp_base_offset(ours, 1000, leader_epoch=3)
    kbatch = default_records.DefaultRecordBatch(stamped)
    assert kbatch.validate_crc()
    assert kbatch.base_offset == 1000
    decoded = [(r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in kbatch]
    assert decoded == [
        (rec.offset, rec.timestamp_ms, rec.key, rec.value, rec.headers)
        for rec in iter_records(stamped)
    ]


# -- the encoder's fast paths against a naive one -------------------------------------------------
#
# build_batch takes the varints of small numbers from a table (zigzag values below 2**14: one or
# two bytes) and falls back to a loop above it. The reference below is the format written out
# the slow, obvious way (one bytearray per record, a varint loop for every number); the edges of
# the table (lengths 63/64 and 8191/8192, offset deltas past 8191, timestamp deltas of either
# sign) are where a fast path would go wrong.


def _ref_varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        if z < 0x80:
            out.append(z)
            return bytes(out)
        out.append((z & 0x7F) | 0x80)
        z >>= 7


def _ref_build(recs: list[Record], now: int, producer_id: int, base_sequence: int) -> bytes:
    stamps = [now if r.timestamp_ms is None else r.timestamp_ms for r in recs]
    body = bytearray()
    for i, (r, ts) in enumerate(zip(recs, stamps, strict=True)):
        rec = bytearray(b"\x00") + _ref_varint(ts - stamps[0]) + _ref_varint(i)
        for field in (r.key, r.value):
            rec += b"\x01" if field is None else _ref_varint(len(field)) + field
        rec += _ref_varint(len(r.headers))
        for hkey, hval in r.headers:
            kb = hkey.encode("utf-8")
            rec += _ref_varint(len(kb)) + kb
            rec += b"\x01" if hval is None else _ref_varint(len(hval)) + hval
        body += _ref_varint(len(rec)) + rec
    tail = struct.pack(
        ">hiqqqhii",
        0,
        len(recs) - 1,
        stamps[0],
        max(stamps),
        producer_id,
        0,
        base_sequence,
        len(recs),
    )
    head = struct.pack(">qiibI", 0, 49 + len(body), -1, 2, crc32c(bytes(body), crc32c(tail)))
    return head + tail + bytes(body)


EDGE_SIZES = st.sampled_from([0, 1, 62, 63, 64, 65, 127, 128, 8190, 8191, 8192, 8193, 20000])
edge_records = st.builds(
    Record,
    value=st.none() | EDGE_SIZES.map(lambda n: b"v" * n),
    key=st.none() | EDGE_SIZES.map(lambda n: b"k" * n),
    headers=st.lists(
        st.tuples(st.text(max_size=3), st.none() | EDGE_SIZES.map(lambda n: b"h" * n)),
        max_size=2,
    ).map(tuple),
    timestamp_ms=st.none()
    | st.sampled_from([0, 1, 4095, 4096, 8191, 8192, 8193, 2**40])
    | st.integers(0, 2**50),
)


@SETTINGS
@given(
    recs=st.lists(edge_records, min_size=1, max_size=8),
    now=st.sampled_from([0, 4096, 8192, 2**40]) | TIMESTAMPS,
    producer_id=st.integers(-1, 2**62),
    base_sequence=st.integers(-1, 2**31 - 1),
)
def test_the_varint_table_edges_give_the_same_bytes_as_the_naive_encoder(
    recs: list[Record], now: int, producer_id: int, base_sequence: int
) -> None:
    ours = build_batch(
        recs,
        timestamp_ms=now,
        producer_id=producer_id,
        producer_epoch=0,
        base_sequence=base_sequence,
    )
    assert ours == _ref_build(recs, now, producer_id, base_sequence)


def test_offset_deltas_past_the_table_give_the_same_bytes() -> None:
    """8,200 records: offset deltas 8,192 and up (zigzag 16,384+) take three varint bytes."""
    recs = [Record(b"x" * (i % 3), timestamp_ms=1_000 + i % 5) for i in range(8_200)]
    ours = build_batch(recs, timestamp_ms=7, producer_id=5, producer_epoch=0, base_sequence=0)
    assert ours == _ref_build(recs, 7, 5, 0)
    assert [r.offset for r in iter_records(ours)][8_190:8_195] == list(range(8_190, 8_195))


@SETTINGS
@given(
    values=st.lists(st.binary(max_size=40) | EDGE_SIZES.map(lambda n: b"v" * n), min_size=1),
    ts=st.sampled_from([0, 8192, 2**40]) | TIMESTAMPS,
    producer_id=st.integers(-1, 2**62),
)
def test_bare_values_encode_to_the_bytes_of_their_records(
    values: list[bytes], ts: int, producer_id: int
) -> None:
    """ValueRecords (send_batch's plain bytes) take a path of their own through build_batch:
    the same bytes as the Records they stand for, and they read back as those Records."""
    recs = [Record(v, None, (), ts) for v in values]
    ours = build_batch(
        ValueRecords(list(values), ts), producer_id=producer_id, producer_epoch=0, base_sequence=0
    )
    assert ours == _ref_build(recs, 0, producer_id, 0)
    assert ours == build_batch(recs, producer_id=producer_id, producer_epoch=0, base_sequence=0)


def test_bare_values_past_the_table_and_as_a_sequence() -> None:
    values = [b"x" * (i % 70) for i in range(8_200)]
    vr = ValueRecords(values, 11)
    recs = [Record(v, None, (), 11) for v in values]
    assert build_batch(vr, producer_epoch=0) == _ref_build(recs, 0, -1, -1)
    assert len(vr) == 8_200 and vr[5] == recs[5] and vr[-1] == recs[-1]
    assert vr[2:4] == recs[2:4] and list(vr) == recs and recs[9] in vr
    with pytest.raises(ValueError, match="at least one record"):
        build_batch(ValueRecords([], 11))


# -- stamping -------------------------------------------------------------------------------------


@SETTINGS
@given(base_offset=st.integers(0, 2**63 - 1), epoch=st.none() | st.integers(-1, 2**31 - 1))
def test_stamping_keeps_the_crc_valid(base_offset: int, epoch: int | None) -> None:
    before = read_header(SAMPLE, deep=True)
    stamped = stamp_base_offset(memoryview(SAMPLE), base_offset, leader_epoch=epoch)
    after = read_header(stamped, deep=True)
    assert isinstance(stamped, bytes)
    assert after.crc == before.crc
    assert after.base_offset == base_offset
    assert after.partition_leader_epoch == (-1 if epoch is None else epoch)
    assert stamped[21:] == SAMPLE[21:]  # nothing under the CRC moved
    assert [r.offset for r in iter_records(stamped)] == [base_offset + i for i in range(3)]


def test_stamping_refuses_what_is_not_a_batch() -> None:
    with pytest.raises(CorruptBatchError, match="not a record batch"):
        stamp_base_offset(SAMPLE[:20], 1)
    with pytest.raises(CorruptBatchError, match="not a record batch"):
        stamp_base_offset(patch(SAMPLE, ">b", 16, 1), 1)


# -- concatenations -------------------------------------------------------------------------------


@SETTINGS
@given(batches=st.lists(record_lists, min_size=0, max_size=6))
def test_concatenations_split_right(batches: list[list[Record]]) -> None:
    stamped = []
    offset = 0
    for recs in batches:
        stamped.append(stamp_base_offset(build_batch(recs, timestamp_ms=1), offset))
        offset += len(recs)
    buf = b"".join(stamped)
    split = list(split_batches(buf))
    assert [bytes(view) for _, view in split] == stamped
    assert [h.base_offset for h, _ in split] == [read_header(b).base_offset for b in stamped]
    assert [r.offset for r in iter_records(buf)] == list(range(offset))


def test_split_refuses_a_trailing_partial_batch() -> None:
    buf = SAMPLE + SAMPLE[:-1]
    it = split_batches(buf)
    assert bytes(next(it)[1]) == SAMPLE
    with pytest.raises(CorruptBatchError, match=f"batch at byte {len(SAMPLE)} claims"):
        next(it)
    with pytest.raises(CorruptBatchError, match="truncated"):
        list(split_batches(SAMPLE + SAMPLE[:30]))


def test_split_refuses_garbage_between_batches() -> None:
    with pytest.raises(CorruptBatchError, match=f"batch at byte {len(SAMPLE)} has magic"):
        list(split_batches(SAMPLE + b"\x00" * 100 + SAMPLE))


# -- corruption caught by read_header -------------------------------------------------------------


def test_a_flipped_byte_anywhere_from_the_crc_on_is_caught() -> None:
    for at in range(17, len(SAMPLE)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(SAMPLE)
            damaged[at] ^= mask
            with pytest.raises(CorruptBatchError, match="batch at byte 0 fails its CRC-32C"):
                read_header(bytes(damaged))
            with pytest.raises(CorruptBatchError, match="fails its CRC-32C"):
                list(iter_records(bytes(damaged)))


def test_offset_and_epoch_are_outside_the_crc_by_design() -> None:
    # The leader stamps them; the CRC must not change. Damage there is the leader's to prevent.
    for at in (*range(8), *range(12, 16)):
        damaged = bytearray(SAMPLE)
        damaged[at] ^= 0x01
        read_header(bytes(damaged))


@pytest.mark.parametrize("magic", [0, 1, 3, -1])
def test_wrong_magic(magic: int) -> None:
    with pytest.raises(CorruptBatchError, match=f"has magic {magic}, expected 2"):
        read_header(patch(SAMPLE, ">b", 16, magic))


def test_every_truncation_is_caught() -> None:
    for n in range(len(SAMPLE)):
        with pytest.raises(CorruptBatchError, match=r"truncated|claims .* bytes but only"):
            read_header(SAMPLE[:n])
    for n in range(1, len(SAMPLE)):  # no bytes at all is an empty concatenation, not an error
        with pytest.raises(CorruptBatchError, match=r"truncated|claims .* bytes but only"):
            list(iter_records(SAMPLE[:n]))
    assert list(iter_records(b"")) == []


def test_a_length_longer_than_the_buffer() -> None:
    with pytest.raises(CorruptBatchError, match=r"claims \d+ bytes but only \d+ are there"):
        read_header(patch(SAMPLE, ">i", 8, len(SAMPLE)))


def test_a_length_shorter_than_a_header() -> None:
    for length in (-5, 0, 48):
        with pytest.raises(CorruptBatchError, match="less than the 49 header bytes"):
            read_header(patch(SAMPLE, ">i", 8, length))


def test_a_lying_length_breaks_the_crc() -> None:
    # Longer (into the next batch) or shorter than the truth, the CRC covers other bytes.
    for delta in (-1, -20, 1, 30):
        buf = patch(SAMPLE, ">i", 8, len(SAMPLE) - 12 + delta) + SAMPLE
        with pytest.raises(CorruptBatchError, match="fails its CRC-32C"):
            read_header(buf)


def test_a_lying_length_with_a_matching_crc_is_caught_deep() -> None:
    # A client that hashed what its wrong length covers: only the record framing can tell.
    short = recrc(patch(SAMPLE, ">i", 8, len(SAMPLE) - 12 - 3)[:-3])
    read_header(short)  # the cheap check cannot know
    with pytest.raises(CorruptBatchError, match=r"runs .* past the end of the batch"):
        read_header(short, deep=True)
    with pytest.raises(CorruptBatchError, match="record 2 of 3 claims"):
        list(iter_records(short))

    longer = recrc(patch(SAMPLE, ">i", 8, len(SAMPLE) - 12 + 4) + b"\x00" * 4)
    read_header(longer)
    with pytest.raises(CorruptBatchError, match="4 bytes follow its 3 records"):
        read_header(longer, deep=True)
    with pytest.raises(CorruptBatchError, match="4 bytes follow its 3 records"):
        list(iter_records(longer))


def test_a_record_count_that_disagrees_with_the_offsets() -> None:
    with pytest.raises(CorruptBatchError, match="has 4 records but a last offset delta of 2"):
        read_header(recrc(patch(SAMPLE, ">i", 57, 4)))
    with pytest.raises(CorruptBatchError, match="record count of 0"):
        read_header(recrc(patch(patch(SAMPLE, ">i", 57, 0), ">i", 23, -1)))


def test_a_record_count_too_large_for_the_bytes() -> None:
    lying = recrc(patch(patch(SAMPLE, ">i", 57, 2**31 - 1), ">i", 23, 2**31 - 2))
    with pytest.raises(CorruptBatchError, match=r"claims 2147483647 records in \d+ bytes"):
        read_header(lying)


@pytest.mark.parametrize("count", [2, 4])
def test_a_lying_record_count_with_a_matching_crc(count: int) -> None:
    lying = recrc(patch(patch(SAMPLE, ">i", 57, count), ">i", 23, count - 1))
    read_header(lying)  # consistent header, right CRC: only the records can tell
    with pytest.raises(CorruptBatchError, match="record count"):
        read_header(lying, deep=True)
    with pytest.raises(CorruptBatchError, match="record count"):
        list(iter_records(lying))


def test_gzip_snappy_and_transactional_batches_are_unsupported() -> None:
    for codec, name in ((1, "gzip"), (2, "snappy")):
        with pytest.raises(UnsupportedCompressionError, match=f"compressed with {name}"):
            read_header(recrc(patch(SAMPLE, ">h", 21, codec)))
    with pytest.raises(CorruptBatchError, match="codec 5, which does not exist"):
        read_header(recrc(patch(SAMPLE, ">h", 21, 5)))
    with pytest.raises(UnsupportedBatchError, match="transactional"):
        read_header(recrc(patch(SAMPLE, ">h", 21, 0x10)))
    with pytest.raises(UnsupportedBatchError, match="control batch"):
        read_header(recrc(patch(SAMPLE, ">h", 21, 0x20)))
    with pytest.raises(UnsupportedBatchError, match="unknown attribute bits"):
        read_header(recrc(patch(SAMPLE, ">h", 21, 0x100)))


def test_log_append_time_gives_every_record_the_max_timestamp() -> None:
    appended = recrc(patch(patch(SAMPLE, ">h", 21, 0x08), ">q", 35, 1_800_000_000_000))
    h = read_header(appended)
    assert h.timestamp_type == LOG_APPEND_TIME
    recs = list(iter_records(appended))
    assert {r.timestamp_ms for r in recs} == {1_800_000_000_000}
    assert {r.timestamp_type for r in recs} == {LOG_APPEND_TIME}


# -- corruption inside records (valid CRC: a client bug), caught by iter_records ------------------

# SAMPLE's first record starts right after the header: length varint, attributes, timestamp
# delta, offset delta, key length, key...
FIRST = HEADER_SIZE


def test_a_record_length_that_lies() -> None:
    damaged = bytearray(SAMPLE)
    damaged[FIRST] += 2  # zigzag: one more byte than the record has
    with pytest.raises(CorruptBatchError, match=r"record 0 claims .* bytes but its fields take"):
        list(iter_records(recrc(damaged)))
    with pytest.raises(CorruptBatchError):
        read_header(recrc(damaged), deep=True)


def test_an_offset_delta_out_of_order() -> None:
    damaged = bytearray(SAMPLE)
    assert damaged[FIRST + 3] == 0  # record 0's offset delta
    damaged[FIRST + 3] = 4  # zigzag 2
    with pytest.raises(CorruptBatchError, match="record 0 has offset delta 2, expected 0"):
        list(iter_records(recrc(damaged)))


def test_a_key_length_that_lies() -> None:
    for bad, message in ((0x7E, "runs past the end of its record"), (0x03, "length of -2")):
        damaged = bytearray(SAMPLE)
        assert damaged[FIRST + 4] == 4  # key b"k1": zigzag 2
        damaged[FIRST + 4] = bad
        with pytest.raises(CorruptBatchError, match=message):
            list(iter_records(recrc(damaged)))


def test_a_header_key_that_is_not_utf8() -> None:
    batch = build_batch([Record(b"v", headers=(("ab", b"c"),))], timestamp_ms=0)
    at = batch.index(b"ab")
    damaged = batch[:at] + b"\xff\xfe" + batch[at + 2 :]
    with pytest.raises(CorruptBatchError, match="not UTF-8"):
        list(iter_records(recrc(damaged)))


def test_a_header_count_that_lies() -> None:
    batch = build_batch([Record(b"v")], timestamp_ms=0)
    assert batch[-1] == 0  # header count of the only record
    with pytest.raises(CorruptBatchError, match="claims 63 headers"):
        list(iter_records(recrc(batch[:-1] + b"\x7e")))


@SETTINGS
@given(recs=record_lists, data=st.data())
def test_any_flipped_byte_is_caught_or_harmless(recs: list[Record], data: st.DataObject) -> None:
    """Flip a random byte and re-hash it (so only the decoder stands guard): reading either
    fails with CorruptBatchError or, if the flip landed somewhere that still parses (a value
    byte), yields the same number of records. It never raises anything else."""
    batch = build_batch(recs, timestamp_ms=7)
    at = data.draw(st.integers(HEADER_SIZE, len(batch) - 1))
    damaged = bytearray(batch)
    damaged[at] ^= data.draw(st.integers(1, 255))
    try:
        out = list(iter_records(recrc(damaged)))
    except CorruptBatchError:
        return
    assert len(out) == len(recs)


@pytest.mark.parametrize("codec", [COMPRESSION_LZ4, COMPRESSION_ZSTD])
def test_compressed_batches_round_trip_and_are_checked_by_their_frame(codec: int) -> None:
    pytest.importorskip("zstandard" if codec == COMPRESSION_ZSTD else "lz4")
    recs = [
        Record(b"value-%d" % i * 20, key=b"k%d" % i, headers=(("h", b"%d" % i),))
        for i in range(200)
    ]
    batch = build_batch(recs, timestamp_ms=1_700_000_000_000, compression=codec)
    plain = build_batch(recs, timestamp_ms=1_700_000_000_000)
    assert len(batch) < len(plain) // 4
    h = read_header(batch, deep=True)
    assert h.compression == codec and h.record_count == 200 and h.size == len(batch)
    got = list(iter_records(stamp_base_offset(batch, 500)))
    assert [(r.offset, r.key, r.value, r.headers) for r in got] == [
        (500 + i, r.key, r.value, r.headers) for i, r in enumerate(recs)
    ]
    # The plain records under a codec's flag: the CRC is right, the frame is not.
    fake = recrc(patch(plain, ">h", 21, codec))
    read_header(fake)
    with pytest.raises(CorruptBatchError, match="frame"):
        read_header(fake, deep=True)
    with pytest.raises(CorruptBatchError, match="decompress"):
        list(iter_records(fake))


def test_restamp_producer_rehashes() -> None:
    batch = restamp_producer(SAMPLE, producer_id=42, producer_epoch=3, base_sequence=17)
    h = read_header(batch, deep=True)
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (42, 3, 17)
    assert list(iter_records(batch)) == list(iter_records(SAMPLE))
