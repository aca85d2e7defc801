"""A bounds check of a request frame before kio decodes it.

kio's native (Rust) reader reserves room for an array as soon as it reads the array's length,
before it reads a single element. A flexible request that claims 2^35 elements in a 20-byte frame
(one unsigned varint) makes it ask for hundreds of GB, and Rust's allocator then aborts the
whole process: one crafted Metadata request would kill a node, with no exception to catch. So
every request is walked here first, by its kio schema, reading only lengths: any array, string
or byte string whose length claims more than the frame has left is refused (the connection is
closed, as for any malformed request). What passes can only make kio allocate in proportion to
the frame, which MAX_FRAME_BYTES bounds.

The walk follows Kafka's encoding: flexible versions have compact (unsigned varint, length + 1,
0 for null) arrays, strings and bytes and a tagged-field section at the end of every struct;
older versions have int32 array and bytes lengths and int16 string lengths (-1 for null). The
request header's client_id is a legacy string even in the flexible header v2, as Kafka has it.
Tagged fields are checked within the size they declare.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from typing import Any

from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveField,
    PrimitiveTupleField,
    classify_field,
)

__all__ = ["FrameError", "check_entity"]

_FIXED = {
    "bool": 1,
    "int8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "timedelta_i32": 4,
    "int64": 8,
    "uint64": 8,
    "timedelta_i64": 8,
    "datetime_i64": 8,
    "float64": 8,
    "uuid": 16,
}
_VARIABLE = frozenset({"string", "bytes", "records"})
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_MAX_VARINT_BYTES = 10


class FrameError(Exception):
    """The frame claims more than it holds (or is cut short): it cannot be decoded safely."""


class _Reader:
    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int, end: int) -> None:
        self.buf, self.pos, self.end = buf, pos, end

    def left(self) -> int:
        return self.end - self.pos

    def skip(self, n: int, what: str) -> None:
        if n < 0 or n > self.left():
            raise FrameError(f"{what} claims {n} bytes, {self.left()} are left")
        self.pos += n

    def uvarint(self, what: str) -> int:
        value = shift = 0
        for _ in range(_MAX_VARINT_BYTES):
            if self.pos >= self.end:
                raise FrameError(f"{what}: the frame ends inside a varint")
            b = self.buf[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
        raise FrameError(f"{what}: a varint longer than {_MAX_VARINT_BYTES} bytes")

    def fixed(self, s: struct.Struct, what: str) -> int:
        if s.size > self.left():
            raise FrameError(f"{what}: the frame ends inside it")
        (value,) = s.unpack_from(self.buf, self.pos)
        self.pos += s.size
        return int(value)

    def count(self, flexible: bool, min_item: int, what: str) -> int:
        """An array's element count (0 for null), no more than the bytes left allow."""
        n = self.uvarint(what) - 1 if flexible else self.fixed(_I32, what)
        if n < 0:
            if n < -1:
                raise FrameError(f"{what}: a negative length {n}")
            return 0
        if n * min_item > self.left():
            raise FrameError(f"{what} claims {n} elements, {self.left()} bytes are left")
        return n


Check = Callable[[_Reader], None]


def _primitive(kafka_type: str, flexible: bool, legacy_string: bool, what: str) -> Check:
    size = _FIXED.get(kafka_type)
    if size is not None:
        return lambda r: r.skip(size, what)
    if kafka_type not in _VARIABLE:
        raise FrameError(f"{what}: kio type {kafka_type!r} is unknown to the frame check")
    if flexible and not legacy_string:

        def compact(r: _Reader) -> None:
            n = r.uvarint(what) - 1
            if n > 0:
                r.skip(n, what)

        return compact
    length = _I16 if kafka_type == "string" else _I32

    def legacy(r: _Reader) -> None:
        n = r.fixed(length, what)
        if n < -1:
            raise FrameError(f"{what}: a negative length {n}")
        if n > 0:
            r.skip(n, what)

    return legacy


def _min_size(kafka_type: str) -> int:
    return _FIXED.get(kafka_type, 1)


_PLANS: dict[type[Any], tuple[Check, dict[int, Check]]] = {}


def _plan(cls: type[Any]) -> tuple[Check, dict[int, Check]]:
    """The checks of one struct: its fields in order, and its tagged fields by tag (made once
    per schema class)."""
    found = _PLANS.get(cls)
    if found is None:
        found = _PLANS[cls] = _make_plan(cls)
    return found


def _make_plan(cls: type[Any]) -> tuple[Check, dict[int, Check]]:
    flexible = bool(getattr(cls, "__flexible__", False))
    header = cls.__name__ == "RequestHeader"
    ordered: list[Check] = []
    tagged: dict[int, Check] = {}
    for f in dataclasses.fields(cls):
        what = f"{cls.__name__}.{f.name}"
        kind = classify_field(f)
        check: Check
        if isinstance(kind, PrimitiveField):
            legacy = header and f.name == "client_id"
            check = _primitive(f.metadata["kafka_type"], flexible, legacy, what)
        elif isinstance(kind, PrimitiveTupleField):
            kafka_type = f.metadata["kafka_type"]
            item = _primitive(kafka_type, flexible, False, what)
            check = _array(item, flexible, _min_size(kafka_type), what)
        elif isinstance(kind, EntityField):
            check = _entity(kind.type_)
        elif isinstance(kind, EntityTupleField):
            check = _array(_entity(kind.type_), flexible, 1, what)
        else:  # pragma: no cover - kio has four kinds of field
            raise FrameError(f"{what}: an unknown kind of field")
        if "tag" in f.metadata:
            tagged[int(f.metadata["tag"])] = check
        else:
            ordered.append(check)

    def run(r: _Reader) -> None:
        for c in ordered:
            c(r)
        if flexible:
            _tagged_fields(r, tagged, cls.__name__)

    return run, tagged


def _array(item: Check, flexible: bool, min_item: int, what: str) -> Check:
    def run(r: _Reader) -> None:
        for _ in range(r.count(flexible, min_item, what)):
            item(r)

    return run


def _entity(cls: type[Any]) -> Check:
    def run(r: _Reader) -> None:
        _plan(cls)[0](r)

    return run


def _tagged_fields(r: _Reader, known: dict[int, Check], name: str) -> None:
    for _ in range(_tag_count(r, name)):
        tag = r.uvarint(f"{name} tag")
        size = r.uvarint(f"{name} tag {tag} size")
        start = r.pos
        r.skip(size, f"{name} tag {tag}")
        check = known.get(tag)
        if check is not None:
            inner = _Reader(r.buf, start, start + size)
            check(inner)


def _tag_count(r: _Reader, name: str) -> int:
    n = r.uvarint(f"{name} tagged field count")
    if n * 2 > r.left():  # a tag and a size, a byte each at least
        raise FrameError(f"{name} claims {n} tagged fields, {r.left()} bytes are left")
    return n


def check_entity(cls: type[Any], frame: bytes, offset: int) -> int:
    """Walk `cls` (a kio request or header schema) in `frame` from `offset`; the offset after
    it. Raises FrameError where a length claims more than the frame holds."""
    r = _Reader(frame, offset, len(frame))
    _plan(cls)[0](r)
    return r.pos
