"""node/raft_wire.py: every raft.types.Message survives the Raft transport's bytes unchanged,
and bytes that are not a message are refused rather than handed to the core."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.raft_wire import (
    BATCH,
    FRAME_HEADER,
    decode_batch,
    decode_message,
    encode_message,
)
from raft import QUIESCE_CONTEXT
from raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

SETTINGS = settings(derandomize=True, deadline=None, max_examples=300, database=None)

U64 = st.integers(0, 2**64 - 1)
NODE = st.integers(0, 2**32 - 1)
GROUP = st.text(max_size=40)

entries_st = st.lists(
    st.builds(
        Entry,
        index=U64,
        term=U64,
        type=st.sampled_from(EntryType),
        data=st.binary(max_size=64),
    ),
    max_size=8,
).map(tuple)

snapshots_st = st.builds(
    Snapshot,
    meta=st.builds(
        SnapshotMeta,
        index=U64,
        term=U64,
        conf_state=st.builds(
            ConfState,
            voters=st.frozensets(NODE, max_size=5),
            learners=st.frozensets(NODE, max_size=3),
        ),
    ),
    data=st.binary(max_size=64),
)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    mtype = draw(st.sampled_from(MessageType))
    snapshot = draw(snapshots_st) if mtype == MessageType.SNAP else draw(st.none() | snapshots_st)
    return Message(
        type=mtype,
        to=draw(NODE),
        frm=draw(NODE),
        term=draw(U64),
        log_term=draw(U64),
        index=draw(U64),
        entries=draw(entries_st),
        commit=draw(U64),
        reject=draw(st.booleans()),
        reject_hint=draw(U64),
        snapshot=snapshot,
        context=draw(st.binary(max_size=16)),
    )


def encode(group: str, m: Message) -> bytes:
    parts: list[bytes] = []
    size = encode_message(group, m, parts)
    data = b"".join(parts)
    assert len(data) == size
    return data


@SETTINGS
@given(group=GROUP, m=messages())
def test_round_trip(group: str, m: Message) -> None:
    data = encode(group, m)
    got_group, got, end = decode_message(data)
    assert (got_group, got) == (group, m)
    assert end == len(data)
    assert type(got.type) is MessageType
    assert all(type(e.type) is EntryType for e in got.entries)


@SETTINGS
@given(batch=st.lists(st.tuples(GROUP, messages()), max_size=5))
def test_round_trip_in_a_batch(batch: list[tuple[str, Message]]) -> None:
    payload = b"".join(encode(g, m) for g, m in batch)
    assert list(decode_batch(memoryview(payload))) == batch


def test_heartbeats_and_their_quiesce_context_round_trip() -> None:
    sent = [
        ("p1.0", Message(MessageType.HEARTBEAT, to=2, frm=1, term=7, commit=42)),
        ("pé.2", Message(MessageType.HEARTBEAT_RESP, to=2, frm=1, term=4, context=QUIESCE_CONTEXT)),
    ]
    payload = b"".join(encode(g, m) for g, m in sent)
    assert list(decode_batch(payload)) == sent


def test_entry_data_is_sent_as_the_same_object() -> None:
    # The record batch in the log goes to the socket as it is: no copy into a message object.
    data = b"x" * 4096
    parts: list[bytes] = []
    encode_message(
        "g", Message(MessageType.APP, to=2, frm=1, entries=(Entry(1, 1, data=data),)), parts
    )
    assert any(p is data for p in parts)


def test_an_empty_snapshot_stays_present() -> None:
    # None and Snapshot() mean different things to the core; the wire must keep them apart.
    m = Message(type=MessageType.SNAP, to=2, frm=1, snapshot=Snapshot())
    assert decode_message(encode("g", m))[1].snapshot == Snapshot()
    plain = Message(type=MessageType.APP, to=2, frm=1)
    assert decode_message(encode("g", plain))[1].snapshot is None


def test_equal_conf_states_encode_to_equal_bytes() -> None:
    def enc(voters: list[int]) -> bytes:
        snap = Snapshot(SnapshotMeta(1, 1, ConfState(voters=frozenset(voters))))
        return encode("g", Message(type=MessageType.SNAP, to=2, frm=1, snapshot=snap))

    assert enc([3, 1, 2]) == enc([2, 3, 1])


def _retype(data: bytes, mtype: int) -> bytes:
    return bytes([mtype]) + data[1:]


def test_unknown_message_type_is_refused() -> None:
    data = _retype(encode("orders-0", Message(type=MessageType.APP, to=1, frm=2)), 42)
    with pytest.raises(ValueError, match="'orders-0': unknown Raft message type 42"):
        decode_message(data)


def test_unknown_entry_type_is_refused() -> None:
    data = bytearray(
        encode("g", Message(type=MessageType.APP, to=1, frm=2, entries=(Entry(1, 1),)))
    )
    data[-5] = 9  # the entry header's type byte (data is empty: the header ends the message)
    with pytest.raises(ValueError, match="unknown Raft entry type 9"):
        decode_message(bytes(data))


def test_snap_without_snapshot_is_refused() -> None:
    data = _retype(encode("g", Message(type=MessageType.APP, to=1, frm=2)), int(MessageType.SNAP))
    with pytest.raises(ValueError, match="SNAP message from 2 carries no snapshot"):
        decode_message(data)


def test_truncated_messages_are_refused_at_every_length() -> None:
    m = Message(
        type=MessageType.APP, to=1, frm=2, context=b"c", entries=(Entry(1, 1, data=b"abc"),)
    )
    data = encode("group", m)
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            list(decode_batch(data[:cut] if cut else data[:1]))


def test_a_garbled_snapshot_is_refused() -> None:
    snap = Snapshot(SnapshotMeta(1, 1, ConfState(voters=frozenset({1}))), data=b"d")
    data = bytearray(encode("g", Message(type=MessageType.SNAP, to=1, frm=2, snapshot=snap)))
    data[-3:] = b"\xff\xff\xff"  # inside the snapshot's protobuf (no entries follow)
    with pytest.raises(ValueError, match="snapshot"):
        decode_message(bytes(data))


def test_values_the_wire_cannot_carry_are_refused_when_encoding() -> None:
    with pytest.raises(ValueError):
        encode("g", Message(type=MessageType.APP, to=2**32, frm=1))
    with pytest.raises(ValueError):
        encode("g", Message(type=MessageType.APP, to=1, frm=1, term=-1))


def test_frame_header_is_length_then_kind() -> None:
    assert FRAME_HEADER.pack(1, BATCH) == struct.pack(">IB", 1, BATCH)
