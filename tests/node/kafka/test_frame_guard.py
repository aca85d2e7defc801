"""The bounds check before kio decodes a request (node/kafka/frame_guard.py).

kio's native reader reserves an array's room from its claimed length, and Rust aborts the
process when that allocation fails: these frames killed a node (SIGABRT, "memory allocation of
274877906808 bytes failed") before the check. The crafted frames are decoded in a child process,
so the old code fails the test instead of killing the test run."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.index import load_request_schema
from kio.serial import entity_writer
from kio.static.primitive import Records, i16, i32

from node.kafka.frame_guard import FrameError, check_entity
from node.kafka.handlers import APIS


def uvarint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([b])
        out += bytes([b | 0x80])


HEADER_V2 = b"\x00\x01c\x00"  # client_id "c" (a legacy string even in header v2), no tags

# A Metadata v9 request whose topics array claims 2^35 entries; a CreateTopics v5 request whose
# one topic's assignment claims 2^35 broker ids (an array of int32).
METADATA = struct.pack(">hhi", 3, 9, 7) + HEADER_V2 + uvarint(0x7FFFFFFF0) + b"\x00" * 16
CREATE_TOPICS = (
    struct.pack(">hhi", 19, 5, 7)
    + HEADER_V2
    + uvarint(2)
    + uvarint(2)
    + b"t"
    + struct.pack(">ih", 1, 1)
    + uvarint(2)
    + struct.pack(">i", 0)
    + uvarint(0x7FFFFFFF0)
    + b"\x00" * 16
)

_CHILD = """
import sys
from node.kafka.handlers import APIS
from node.kafka.wire import ProtocolError, decode_request
try:
    decode_request(bytes.fromhex(sys.argv[1]), APIS)
except ProtocolError as e:
    print("refused:", e)
"""


@pytest.mark.parametrize("frame", [METADATA, CREATE_TOPICS], ids=["metadata", "create_topics"])
def test_an_absurd_array_length_is_refused_and_the_process_lives(frame: bytes) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, frame.hex()], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-500:]
    assert "refused:" in done.stdout and "claims" in done.stdout, done.stdout


def test_lengths_past_the_frame_are_refused_for_strings_and_bytes() -> None:
    cls = load_request_schema(3, 9)
    body = uvarint(2) + uvarint(1000) + b"x"  # one topic whose name claims 999 bytes
    with pytest.raises(FrameError, match="claims 999 bytes"):
        check_entity(cls, body, 0)
    legacy = load_request_schema(3, 1)
    with pytest.raises(FrameError, match="claims"):
        check_entity(legacy, struct.pack(">i", 1) + struct.pack(">h", 500) + b"x", 0)
    with pytest.raises(FrameError, match="negative"):
        check_entity(legacy, struct.pack(">i", -7), 0)


st.register_type_strategy(Records, st.binary(max_size=64).map(Records))

SERVED = [
    (api.key, v) for api in APIS.values() for v in range(api.min_version, api.max_version + 1)
]


@pytest.mark.parametrize(("key", "version"), SERVED, ids=[f"{k}v{v}" for k, v in SERVED])
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_request_kio_writes_passes_and_ends_where_its_frame_ends(
    key: int, version: int, data: st.DataObject
) -> None:
    """The check and kio agree on Kafka's encoding: whatever kio writes for a served API and
    version (drawn field by field from its schema) passes, and the walk ends at its last byte."""
    cls = load_request_schema(key, version)
    header_cls = cls.__header_schema__
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        body = data.draw(st.from_type(cls))
    fields = {"request_api_key": i16(key), "request_api_version": i16(version)}
    fields |= {"correlation_id": i32(1), "client_id": "c"}
    header = header_cls(**{k: v for k, v in fields.items() if k in header_cls.__slots__})
    buf = io.BytesIO()
    entity_writer(header_cls)(buf, header)
    entity_writer(cls)(buf, body)
    frame = buf.getvalue()
    assert check_entity(cls, frame, check_entity(header_cls, frame, 0)) == len(frame)
