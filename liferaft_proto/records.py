"""Record batches: the bytes that carry records from a producer to the log to a consumer.

The layout is Kafka's RecordBatch v2 (magic 2), byte for byte; proto/README.md has the table.
A producer builds a batch (`build_batch`), the leader checks it without decoding a single record
(`read_header`), stamps the offset it assigns (`stamp_base_offset`) and stores the bytes as
they are; followers and consumers get those same bytes, and only the consumer decodes records
(`iter_records`).

Why the broker never decodes records: Python is slow per object and fast per byte. The CRC-32C
covers everything from the attributes field to the end of the batch, which is every byte the
producer chose, and leaves out the base offset and the partition leader epoch, the two fields
the leader fills in. So `read_header` proves a batch whole with one C call over its bytes, and
stamping it is a copy of the first bytes, not a re-hash.

What `read_header` does not prove: that the record framing inside agrees with the header (a
client that computed a right CRC over wrong records). `read_header(..., deep=True)` walks the
record lengths to prove that too, still without building a record, and `iter_records` checks
every field as it decodes.

Compression (Kafka's codecs 3 lz4 and 4 zstd). The records section, everything after the 61
header bytes, is compressed as a whole; the header stays plain and the CRC covers the compressed
bytes. So the broker checks and stores a compressed batch exactly like a plain one and never
decompresses it: the codec packages (`lz4`, `zstandard`) are needed by clients only, imported on
first use. `read_header(deep=True)` cannot walk the record framing of a compressed batch without
decompressing it; for those it checks the outer framing instead (the payload starts with its
codec's frame magic number), and `iter_records` checks every record after decompressing.

This module is part of the wire contract, imported by both the node and the client: it imports
struct and crc32c and nothing of the project.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

from crc32c import crc32c

__all__ = [
    "COMPRESSION_CODECS",
    "COMPRESSION_LZ4",
    "COMPRESSION_NONE",
    "COMPRESSION_ZSTD",
    "CREATE_TIME",
    "HEADER_SIZE",
    "LOG_APPEND_TIME",
    "MAGIC",
    "NO_PRODUCER_EPOCH",
    "NO_PRODUCER_ID",
    "NO_SEQUENCE",
    "BatchHeader",
    "CorruptBatchError",
    "LogRecord",
    "Record",
    "RecordBatchError",
    "UnsupportedBatchError",
    "UnsupportedCompressionError",
    "ValueRecords",
    "build_batch",
    "compress",
    "compression_codec",
    "decompress",
    "iter_records",
    "read_header",
    "restamp_producer",
    "split_batches",
    "stamp_base_offset",
]

MAGIC = 2
"""The record batch format version (Kafka's v2)."""

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1

CREATE_TIME = 0
"""Timestamp type: record timestamps are the producer's."""
LOG_APPEND_TIME = 1
"""Timestamp type: every record's timestamp is the batch's max timestamp, set by the leader."""

# base_offset q, batch_length i, partition_leader_epoch i, magic b, crc I, attributes h,
# last_offset_delta i, first_timestamp q, max_timestamp q, producer_id q, producer_epoch h,
# base_sequence i, record_count i.
_HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = _HEADER.size
"""Bytes of the batch header (61), from base offset to record count."""
assert HEADER_SIZE == 61

_LENGTH_END = 12
"""batch_length counts the bytes after itself: a batch is batch_length + 12 bytes long."""
_EPOCH_AT = 12
_MAGIC_AT = 16
_CRC_AT = 17
_CRC_FROM = 21
"""The CRC covers [attributes, end of batch): everything the producer chose."""
_TAIL = struct.Struct(">hiqqqhii")  # attributes .. record_count: the CRC'd part of the header
_I64 = struct.Struct(">q")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")

_MIN_RECORD_SIZE = 7
"""The smallest record: length, attributes, timestamp delta, offset delta, key length (null),
value length (null), header count, each one byte."""

# Attributes bits.
_COMPRESSION_MASK = 0x07
_TIMESTAMP_TYPE_BIT = 0x08
_TRANSACTIONAL_BIT = 0x10
_CONTROL_BIT = 0x20
_DELETE_HORIZON_BIT = 0x40
_COMPRESSION_NAMES = {1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

COMPRESSION_NONE = 0
COMPRESSION_LZ4 = 3
COMPRESSION_ZSTD = 4
COMPRESSION_CODECS = {"none": COMPRESSION_NONE, "lz4": COMPRESSION_LZ4, "zstd": COMPRESSION_ZSTD}
"""The codecs liferaft serves, by the name a producer option uses (Kafka's compression.type)."""
_SUPPORTED_CODECS = frozenset((COMPRESSION_LZ4, COMPRESSION_ZSTD))
# The first bytes of a codec's frame: what deep=True checks of a compressed records section.
_FRAME_MAGIC = {
    COMPRESSION_LZ4: b"\x04\x22\x4d\x18",  # LZ4 frame format, 0x184D2204 little-endian
    COMPRESSION_ZSTD: b"\x28\xb5\x2f\xfd",  # zstd frame, 0xFD2FB528 little-endian
}
MAX_DECOMPRESSED_BYTES = 256 << 20
"""A consumer refuses a batch that inflates past this (a decompression bomb, not a batch)."""


class RecordBatchError(ValueError):
    """A record batch liferaft cannot accept. The message says where and what."""


class CorruptBatchError(RecordBatchError):
    """The bytes are not a well-formed batch: truncated, a bad CRC, magic, length or count.
    The broker answers CORRUPT_MESSAGE."""


class UnsupportedBatchError(RecordBatchError):
    """A well-formed batch that uses a feature liferaft does not serve (transactions, control
    batches, unknown attribute bits). The broker answers INVALID_RECORD."""


class UnsupportedCompressionError(UnsupportedBatchError):
    """A well-formed batch compressed with a codec liferaft does not serve yet. The broker
    answers UNSUPPORTED_COMPRESSION_TYPE."""


@dataclass(slots=True, frozen=True)
class Record:
    """A record as a producer gives it. timestamp_ms None: the batch's timestamp."""

    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_ms: int | None = None


class ValueRecords(Sequence[Record]):
    """Records that are bare values with one timestamp (no key, no headers), kept as the values.

    What a producer's send_batch of plain bytes queues: a batch of thousands of small records
    would otherwise cost a Record object each (about half of the client's time per record with
    100-byte values). build_batch encodes these straight from the values; anything else that
    reads them sees the same Records it would have been given (each made when asked for).
    """

    __slots__ = ("_values", "timestamp_ms")

    def __init__(self, values: list[bytes], timestamp_ms: int) -> None:
        self._values = values
        """Owned: the caller hands over a list it will not change."""
        self.timestamp_ms = timestamp_ms

    @property
    def values(self) -> list[bytes]:
        return self._values

    def __len__(self) -> int:
        return len(self._values)

    @overload
    def __getitem__(self, i: int) -> Record: ...

    @overload
    def __getitem__(self, i: slice) -> list[Record]: ...

    def __getitem__(self, i: int | slice) -> Record | list[Record]:
        ts = self.timestamp_ms
        if isinstance(i, slice):
            return [Record(v, None, (), ts) for v in self._values[i]]
        return Record(self._values[i], None, (), ts)

    def __repr__(self) -> str:
        return f"ValueRecords({len(self._values)} values, timestamp_ms={self.timestamp_ms})"


@dataclass(slots=True, frozen=True)
class LogRecord:
    """A record as a consumer reads it back: with the offset the leader gave it."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_type: int = CREATE_TIME


@dataclass(slots=True, frozen=True)
class BatchHeader:
    """The fixed 61 bytes in front of a batch's records, as read_header found them valid."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    first_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Bytes of the whole batch, header included."""
        return self.batch_length + _LENGTH_END

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        """The offset after this batch's last record."""
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & _COMPRESSION_MASK

    @property
    def timestamp_type(self) -> int:
        return LOG_APPEND_TIME if self.attributes & _TIMESTAMP_TYPE_BIT else CREATE_TIME

    @property
    def is_idempotent(self) -> bool:
        return self.producer_id != NO_PRODUCER_ID


# -- reading -----------------------------------------------------------------------------------


def read_header(
    buf: bytes | bytearray | memoryview, pos: int = 0, *, deep: bool = False
) -> BatchHeader:
    """Validate the batch that starts at buf[pos] and return its header.

    Checks, in this order, with the cost of one C call over the bytes: there is a whole header;
    magic is 2; batch_length covers at least the header and the buffer holds that many bytes;
    the CRC-32C matches; the attributes ask for nothing unsupported; the record count agrees with
    the last offset delta and fits the bytes. With deep=True it also walks the record lengths
    (one varint per record, no object per record) and proves they tile the batch exactly.

    The batch may be followed by more bytes (the next batch); `header.size` says where it ends.
    Raises CorruptBatchError or UnsupportedBatchError, naming the byte position.
    """
    avail = len(buf) - pos
    if avail < HEADER_SIZE:
        raise CorruptBatchError(
            f"batch at byte {pos} is truncated: {avail} bytes left, a batch header needs "
            f"{HEADER_SIZE}"
        )
    (
        base_offset,
        batch_length,
        leader_epoch,
        magic,
        crc,
        attributes,
        last_offset_delta,
        first_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        record_count,
    ) = _HEADER.unpack_from(buf, pos)
    if magic != MAGIC:
        raise CorruptBatchError(
            f"batch at byte {pos} has magic {magic}, expected {MAGIC} (record batch v2)"
        )
    size = batch_length + _LENGTH_END
    if size < HEADER_SIZE:
        raise CorruptBatchError(
            f"batch at byte {pos} claims a length of {batch_length}, less than the "
            f"{HEADER_SIZE - _LENGTH_END} header bytes it must cover"
        )
    if size > avail:
        raise CorruptBatchError(
            f"batch at byte {pos} claims {size} bytes but only {avail} are there "
            "(truncated, or its length lies)"
        )
    end = pos + size
    actual = crc32c(memoryview(buf)[pos + _CRC_FROM : end])
    if actual != crc:
        raise CorruptBatchError(
            f"batch at byte {pos} fails its CRC-32C: header says {crc:#010x}, its {size - _CRC_FROM} "
            f"bytes from the attributes on hash to {actual:#010x} (damaged, or its length lies)"
        )
    _check_attributes(attributes, pos)
    if record_count < 1:
        raise CorruptBatchError(f"batch at byte {pos} has a record count of {record_count}")
    if last_offset_delta != record_count - 1:
        raise CorruptBatchError(
            f"batch at byte {pos} has {record_count} records but a last offset delta of "
            f"{last_offset_delta} (offsets in a batch are dense: it must be {record_count - 1})"
        )
    records_bytes = size - HEADER_SIZE
    codec = attributes & _COMPRESSION_MASK
    if codec:
        # Compressed records may take less than 7 bytes each; only the frame can be checked.
        if deep:
            _check_compressed_frame(buf, pos, end, codec)
    else:
        if record_count > records_bytes // _MIN_RECORD_SIZE:
            raise CorruptBatchError(
                f"batch at byte {pos} claims {record_count} records in {records_bytes} bytes; "
                f"a record takes at least {_MIN_RECORD_SIZE}"
            )
        if deep:
            _check_framing(buf, pos, end, record_count)
    return BatchHeader(
        base_offset,
        batch_length,
        leader_epoch,
        magic,
        crc,
        attributes,
        last_offset_delta,
        first_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        record_count,
    )


def _check_attributes(attributes: int, pos: int) -> None:
    codec = attributes & _COMPRESSION_MASK
    if codec:
        name = _COMPRESSION_NAMES.get(codec)
        if name is None:
            raise CorruptBatchError(
                f"batch at byte {pos} names compression codec {codec}, which does not exist"
            )
        if codec not in _SUPPORTED_CODECS:
            raise UnsupportedCompressionError(
                f"batch at byte {pos} is compressed with {name}; liferaft accepts uncompressed, "
                "lz4 and zstd batches"
            )
    if attributes & _TRANSACTIONAL_BIT:
        raise UnsupportedBatchError(
            f"batch at byte {pos} is transactional; liferaft has no transactions"
        )
    if attributes & _CONTROL_BIT:
        raise UnsupportedBatchError(
            f"batch at byte {pos} is a control batch; liferaft has no transactions"
        )
    if attributes & ~(_COMPRESSION_MASK | _TIMESTAMP_TYPE_BIT | _TRANSACTIONAL_BIT | _CONTROL_BIT):
        raise UnsupportedBatchError(
            f"batch at byte {pos} sets unknown attribute bits {attributes:#06x}"
        )


def _check_framing(
    buf: bytes | bytearray | memoryview, pos: int, end: int, record_count: int
) -> None:
    """Prove the record lengths tile [header end, batch end) in exactly record_count steps."""
    p = pos + HEADER_SIZE
    for i in range(record_count):
        if p >= end:
            raise CorruptBatchError(
                f"batch at byte {pos}: its bytes end after {i} of {record_count} records "
                "(its record count lies)"
            )
        length, p = _read_varint(buf, p, end)
        if length < _MIN_RECORD_SIZE - 1:
            raise CorruptBatchError(f"batch at byte {pos}: record {i} claims a length of {length}")
        p += length
        if p > end:
            raise CorruptBatchError(
                f"batch at byte {pos}: record {i} of {record_count} runs {p - end} bytes past "
                "the end of the batch (its record count or a record length lies)"
            )
    if p != end:
        raise CorruptBatchError(
            f"batch at byte {pos}: {end - p} bytes follow its {record_count} records "
            "(its record count or a record length lies)"
        )


def _check_compressed_frame(
    buf: bytes | bytearray | memoryview, pos: int, end: int, codec: int
) -> None:
    """The outer framing of a compressed records section: its codec's frame magic number."""
    magic = _FRAME_MAGIC[codec]
    start = pos + HEADER_SIZE
    if bytes(buf[start : start + len(magic)]) != magic:
        raise CorruptBatchError(
            f"batch at byte {pos} says it is compressed with {_COMPRESSION_NAMES[codec]} but its "
            f"records do not start with a {_COMPRESSION_NAMES[codec]} frame"
        )


def compression_codec(name: str | int | None) -> int:
    """ "zstd" / "lz4" / "none" / None (or the codec number) -> the codec number; ValueError
    for a codec liferaft does not serve."""
    if name is None:
        return COMPRESSION_NONE
    if isinstance(name, int) and not isinstance(name, bool):
        if name == COMPRESSION_NONE or name in _SUPPORTED_CODECS:
            return name
    elif isinstance(name, str) and name.strip().lower() in COMPRESSION_CODECS:
        return COMPRESSION_CODECS[name.strip().lower()]
    raise ValueError(f"compression must be one of {sorted(COMPRESSION_CODECS)}, not {name!r}")


def compress(codec: int, data: bytes) -> bytes:
    """Compress a records section with a codec (its PyPI package is imported on first use)."""
    if codec == COMPRESSION_ZSTD:
        return bytes(_zstd().ZstdCompressor(level=3).compress(data))
    if codec == COMPRESSION_LZ4:
        return bytes(_lz4().compress(data))
    raise ValueError(f"cannot compress with codec {codec}")


def decompress(codec: int, data: bytes | memoryview) -> bytes:
    """Inflate a records section. Raises CorruptBatchError when the bytes do not inflate."""
    try:
        if codec == COMPRESSION_ZSTD:
            # A streaming decompressor: frames without a content size (Kafka's Java producer
            # writes those) inflate too.
            reader = _zstd().ZstdDecompressor().decompressobj()
            out = bytes(reader.decompress(bytes(data)))
        elif codec == COMPRESSION_LZ4:
            out = bytes(_lz4().decompress(bytes(data)))
        else:
            raise CorruptBatchError(f"unknown compression codec {codec}")
    except CorruptBatchError:
        raise
    except ImportError:
        raise
    except Exception as e:  # each codec raises its own error type
        raise CorruptBatchError(
            f"{_COMPRESSION_NAMES.get(codec, codec)} records do not decompress: {e}"
        ) from None
    if len(out) > MAX_DECOMPRESSED_BYTES:
        raise CorruptBatchError(f"records inflate to {len(out)} bytes, over the limit")
    return out


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:
        raise ImportError(
            "zstd batches need the 'zstandard' package: pip install zstandard"
        ) from None
    return zstandard


def _lz4() -> Any:
    try:
        import lz4.frame
    except ImportError:
        raise ImportError("lz4 batches need the 'lz4' package: pip install lz4") from None
    return lz4.frame


def split_batches(buf: bytes | bytearray | memoryview) -> Iterator[tuple[BatchHeader, memoryview]]:
    """Walk a concatenation of whole batches (a Fetch response, a log segment), validating each.

    Yields each batch's header and a view of its bytes (no copy). A trailing partial batch is an
    error, not something to skip: liferaft only ever sends whole batches.
    """
    view = memoryview(buf)
    pos = 0
    n = len(view)
    while pos < n:
        header = read_header(view, pos)
        end = pos + header.size
        yield header, view[pos:end]
        pos = end


def iter_records(buf: bytes | bytearray | memoryview) -> Iterator[LogRecord]:
    """Decode every record of one batch or of a concatenation of whole batches.

    The client-side path: validates each batch (read_header), then every record's framing and
    fields as it goes, and raises CorruptBatchError on the first defect. A consumer that
    fetched from offset X should skip records below X (a batch is returned whole).
    """
    data = bytes(buf) if not isinstance(buf, bytes) else buf
    pos = 0
    n = len(data)
    while pos < n:
        header = read_header(data, pos)
        end = pos + header.size
        if header.compression:
            body = decompress(header.compression, memoryview(data)[pos + HEADER_SIZE : end])
            yield from _decode_records(body, 0, len(body), header, pos)
        else:
            yield from _decode_records(data, pos + HEADER_SIZE, end, header, pos)
        pos = end


def _decode_records(data: bytes, p: int, end: int, h: BatchHeader, pos: int) -> Iterator[LogRecord]:
    """Decode h.record_count records from data[p:end] (the batch at byte `pos` of the input)."""
    append_time = h.timestamp_type == LOG_APPEND_TIME
    base_offset = h.base_offset
    first_ts = h.first_timestamp
    count = h.record_count
    rv = _read_varint
    for i in range(count):
        if p >= end:
            raise CorruptBatchError(
                f"batch at byte {pos}: its bytes end after {i} of {count} records "
                "(its record count lies)"
            )
        try:
            length, p = rv(data, p, end)
            rec_end = p + length
            if length < _MIN_RECORD_SIZE - 1 or rec_end > end:
                raise CorruptBatchError(
                    f"batch at byte {pos}: record {i} of {count} claims {length} bytes, "
                    f"{end - p} are left in the batch (its record count or a record length lies)"
                )
            p += 1  # record attributes: unused in v2
            ts_delta, p = rv(data, p, rec_end)
            offset_delta, p = rv(data, p, rec_end)
            if offset_delta != i:
                raise CorruptBatchError(
                    f"batch at byte {pos}: record {i} has offset delta {offset_delta}, expected {i}"
                )
            key, p = _read_bytes(data, p, rec_end)
            value, p = _read_bytes(data, p, rec_end)
            n_headers, p = rv(data, p, rec_end)
            if n_headers < 0 or n_headers > (rec_end - p) // 2:
                raise CorruptBatchError(
                    f"batch at byte {pos}: record {i} claims {n_headers} headers in "
                    f"{rec_end - p} bytes"
                )
            headers: tuple[tuple[str, bytes | None], ...] = ()
            if n_headers:
                hs = []
                for _ in range(n_headers):
                    hkey, p = _read_bytes(data, p, rec_end)
                    if hkey is None:
                        raise CorruptBatchError(
                            f"batch at byte {pos}: record {i} has a null header key"
                        )
                    hval, p = _read_bytes(data, p, rec_end)
                    hs.append((hkey.decode("utf-8"), hval))
                headers = tuple(hs)
        except IndexError:
            raise CorruptBatchError(
                f"batch at byte {pos}: record {i} runs past the end of its bytes"
            ) from None
        except UnicodeDecodeError as e:
            raise CorruptBatchError(
                f"batch at byte {pos}: record {i} has a header key that is not UTF-8: {e}"
            ) from None
        if p != rec_end:
            raise CorruptBatchError(
                f"batch at byte {pos}: record {i} claims {length} bytes but its fields "
                f"take {length + p - rec_end}"
            )
        yield LogRecord(
            base_offset + i,
            h.max_timestamp if append_time else first_ts + ts_delta,
            key,
            value,
            headers,
            LOG_APPEND_TIME if append_time else CREATE_TIME,
        )
    if p != end:
        raise CorruptBatchError(
            f"batch at byte {pos}: {end - p} bytes follow its {count} records "
            "(its record count or a record length lies)"
        )


def _read_varint(data: bytes | bytearray | memoryview, p: int, limit: int) -> tuple[int, int]:
    """A zigzag varint (Kafka's varint and varlong) at data[p], ending before limit."""
    b = data[p]
    if b < 0x80 and p < limit:  # deltas, small lengths
        return (b >> 1) ^ -(b & 1), p + 1
    if p + 1 < limit:
        b2 = data[p + 1]
        if b2 < 0x80:  # lengths up to 8 KiB: a record of 1 KiB, its value
            raw = (b & 0x7F) | (b2 << 7)
            return (raw >> 1) ^ -(raw & 1), p + 2
    raw = 0
    shift = 0
    while True:
        if p >= limit or shift > 63:
            raise CorruptBatchError(f"a varint at byte {p} runs past its record or over 10 bytes")
        b = data[p]
        p += 1
        raw |= (b & 0x7F) << shift
        if b < 0x80:
            return (raw >> 1) ^ -(raw & 1), p
        shift += 7


def _read_bytes(data: bytes, p: int, limit: int) -> tuple[bytes | None, int]:
    """A varint length (-1: null) and that many bytes, all before limit."""
    n, p = _read_varint(data, p, limit)
    if n < 0:
        if n == -1:
            return None, p
        raise CorruptBatchError(f"a field at byte {p} has a length of {n}")
    end = p + n
    if end > limit:
        raise CorruptBatchError(f"a field at byte {p} of {n} bytes runs past the end of its record")
    return data[p:end], end


# -- writing -----------------------------------------------------------------------------------
#
# The encoder runs once per record on the producer, so its cost per record is the client's
# ceiling with small records. It builds no object per record beyond the bytes it must: the
# varints of small numbers (offset deltas, lengths up to 8 KiB, timestamp deltas) come from one
# table of ready-made bytes, a record's fixed fields are one concatenation, and the batch is one
# b"".join of the pieces at the end (and one CRC over it), instead of a bytearray per record.

_TABLE_LIMIT = 1 << 14
"""Zigzag values below this (numbers -8192..8191: one or two varint bytes) come from the table."""
_VARINTS: list[bytes] = []
"""_VARINTS[z]: the varint bytes of the zigzag value z, filled on the first build_batch (about
0.7 MB: a broker that never builds a batch never pays for it)."""


def _varint_table() -> list[bytes]:
    if not _VARINTS:
        _VARINTS.extend(
            bytes((z,)) if z < 0x80 else bytes(((z & 0x7F) | 0x80, z >> 7))
            for z in range(_TABLE_LIMIT)
        )
    return _VARINTS


def _uvarint(z: int) -> bytes:
    """The varint bytes of a zigzag value z >= 0 (7 bits a byte, low first)."""
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _zigzag_varint(n: int) -> bytes:
    """Kafka's varint (varlong) of n: zigzag, so small negatives stay short."""
    z = (n << 1) ^ (n >> 63)
    return _varint_table()[z] if z < _TABLE_LIMIT else _uvarint(z)


def _encode_headers(headers: tuple[tuple[str, bytes | None], ...]) -> bytes:
    zz = _zigzag_varint
    parts = [zz(len(headers))]
    for hkey, hval in headers:
        kb = hkey.encode("utf-8")
        parts.append(zz(len(kb)))
        parts.append(kb)
        if hval is None:
            parts.append(b"\x01")  # zigzag(-1): null
        else:
            parts.append(zz(len(hval)))
            parts.append(hval)
    return b"".join(parts)


def build_batch(
    records: Iterable[Record],
    *,
    base_offset: int = 0,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
    timestamp_ms: int | None = None,
    compression: int = COMPRESSION_NONE,
) -> bytes:
    """Encode records as one batch, CRC included, ready for Produce.

    Records without a timestamp get timestamp_ms, or the wall clock now if that is None too.
    Leave base_offset at 0: the leader stamps the real one. compression: COMPRESSION_NONE,
    COMPRESSION_LZ4 or COMPRESSION_ZSTD (the records section is compressed as a whole).
    """
    if isinstance(records, ValueRecords):
        if not records.values:
            raise ValueError("a record batch needs at least one record")
        first_ts = max_ts = records.timestamp_ms
        count = len(records)
        body = _encode_values(records.values)
    else:
        recs = records if isinstance(records, (list, tuple)) else list(records)
        if not recs:
            raise ValueError("a record batch needs at least one record")
        default_ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        first_ts = recs[0].timestamp_ms
        if first_ts is None:
            first_ts = default_ts
        count = len(recs)
        body, max_ts = _encode_records(recs, first_ts, default_ts)
    return _finish_batch(
        body,
        count,
        first_ts,
        max_ts,
        base_offset=base_offset,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        compression=compression,
    )


def _encode_values(values: list[bytes]) -> bytes:
    """The records section of ValueRecords: every record has timestamp delta 0, a null key and
    no headers, so only its offset delta and value length vary."""
    table = _varint_table()
    limit = _TABLE_LIMIT
    uvarint = _uvarint
    parts: list[bytes] = []
    append = parts.append
    for i, value in enumerate(values):
        n = len(value)
        z = i << 1
        off = table[z] if z < limit else uvarint(z)
        z = n << 1
        vlen = table[z] if z < limit else uvarint(z)
        # attributes 0, timestamp delta 0, offset delta, null key, value length; after the
        # value, no headers.
        z = (4 + len(off) + len(vlen) + n) << 1
        append((table[z] if z < limit else uvarint(z)) + b"\x00\x00" + off + b"\x01" + vlen)
        append(value)
        append(b"\x00")
    return b"".join(parts)


def _encode_records(recs: Sequence[Record], first_ts: int, default_ts: int) -> tuple[bytes, int]:
    """The records section and the batch's max timestamp."""
    max_ts = first_ts
    table = _varint_table()
    limit = _TABLE_LIMIT
    uvarint = _uvarint
    parts: list[bytes] = []
    append = parts.append
    # Each record: length, then attributes (always 0), timestamp delta, offset delta, key,
    # value, headers. The zigzag of i >= 0 is 2 * i; of a length n, 2 * n; of null (-1), 1.
    for i, r in enumerate(recs):
        ts = r.timestamp_ms
        if ts is None:
            ts = default_ts
        if ts > max_ts:
            max_ts = ts
        d = ts - first_ts
        z = (d << 1) ^ (d >> 63)
        fixed = b"\x00" + (table[z] if z < limit else uvarint(z))
        z = i << 1
        fixed += table[z] if z < limit else uvarint(z)
        key = r.key
        if key is None:
            fixed += b"\x01"
        else:
            z = len(key) << 1
            fixed += table[z] if z < limit else uvarint(z)
            fixed += key
        value = r.value
        if value is None:
            fixed += b"\x01"
            n = 0
        else:
            n = len(value)
            z = n << 1
            fixed += table[z] if z < limit else uvarint(z)
        headers = r.headers
        tail = _encode_headers(headers) if headers else b"\x00"
        z = (len(fixed) + n + len(tail)) << 1
        append(table[z] if z < limit else uvarint(z))
        append(fixed)
        if n:
            append(value)  # type: ignore[arg-type]  # n > 0: not None
        append(tail)
    return b"".join(parts), max_ts


def _finish_batch(
    body: bytes,
    count: int,
    first_ts: int,
    max_ts: int,
    *,
    base_offset: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    compression: int,
) -> bytes:
    """The header in front of a records section: compression, lengths, CRC."""
    if compression:
        body = compress(compression_codec(compression), body)
    try:
        tail_header = _TAIL.pack(
            compression,  # attributes: the codec, CreateTime, not transactional
            count - 1,
            first_ts,
            max_ts,
            producer_id,
            producer_epoch,
            base_sequence,
            count,
        )
        batch_length = HEADER_SIZE - _LENGTH_END + len(body)
        crc = crc32c(body, crc32c(tail_header))
        head = struct.pack(">qiibI", base_offset, batch_length, -1, MAGIC, crc)
    except struct.error as e:
        raise ValueError(f"a batch field is out of range: {e}") from None
    return b"".join((head, tail_header, body))


def restamp_producer(
    batch: bytes | bytearray | memoryview,
    *,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
) -> bytes:
    """Return one batch with new producer id, epoch and base sequence, CRC recomputed.

    These fields are under the CRC (the producer chose them), so this re-hashes the batch: one C
    call. An idempotent producer uses it to renumber batches that were never written."""
    if len(batch) < HEADER_SIZE or batch[_MAGIC_AT] != MAGIC:
        raise CorruptBatchError("not a record batch v2: cannot restamp its producer fields")
    out = bytearray(batch)
    struct.pack_into(">qhi", out, 43, producer_id, producer_epoch, base_sequence)
    struct.pack_into(">I", out, _CRC_AT, crc32c(memoryview(out)[_CRC_FROM:]))
    return bytes(out)


def stamp_base_offset(
    batch: bytes | bytearray | memoryview, base_offset: int, *, leader_epoch: int | None = None
) -> bytes:
    """Return one batch with its base offset (and, if given, partition leader epoch) set.

    Neither field is under the CRC, so the result is valid without re-hashing: this is a single
    copy. The batch should have passed read_header; only its magic is checked again here.
    """
    if len(batch) < HEADER_SIZE or batch[_MAGIC_AT] != MAGIC:
        raise CorruptBatchError("not a record batch v2: cannot stamp its base offset")
    view = memoryview(batch)
    if leader_epoch is None:
        return b"".join((_I64.pack(base_offset), view[8:]))
    return b"".join(
        (_I64.pack(base_offset), view[8:_EPOCH_AT], _I32.pack(leader_epoch), view[_MAGIC_AT:])
    )
