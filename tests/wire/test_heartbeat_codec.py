"""Coalesced heartbeats (RaftBatch.heartbeats): packed records that decode to the same messages."""

from __future__ import annotations

import pytest

from liferaft_proto.v1 import raft_pb2
from node.raft_codec import pack_heartbeat, unpack_heartbeats
from raft import QUIESCE_CONTEXT, Entry, Message, MessageType


def test_heartbeats_and_replies_round_trip() -> None:
    sent = [
        ("p1.0", Message(MessageType.HEARTBEAT, to=2, frm=1, term=7, commit=42)),
        (
            "p1.1",
            Message(MessageType.HEARTBEAT, to=2, frm=1, term=3, commit=9, context=QUIESCE_CONTEXT),
        ),
        ("__controller", Message(MessageType.HEARTBEAT_RESP, to=2, frm=1, term=4)),
        ("pé.2", Message(MessageType.HEARTBEAT_RESP, to=2, frm=1, term=4, context=QUIESCE_CONTEXT)),
    ]
    packed = [pack_heartbeat(g, m) for g, m in sent]
    assert all(p is not None for p in packed)
    frame = raft_pb2.RaftFrame(batch=raft_pb2.RaftBatch(from_node=1, seq=1))
    frame.batch.heartbeats = b"".join(p for p in packed if p is not None)
    wire = raft_pb2.RaftFrame.FromString(frame.SerializeToString())
    assert list(unpack_heartbeats(wire.batch.heartbeats, frm=1, to=2)) == sent


@pytest.mark.parametrize(
    "msg",
    [
        Message(MessageType.APP, to=2, frm=1, term=1, entries=(Entry(1, 1),)),
        Message(MessageType.HEARTBEAT_RESP, to=2, frm=1, term=1, reject=True),
        Message(MessageType.HEARTBEAT, to=2, frm=1, term=1, context=b"other"),
        Message(MessageType.VOTE, to=2, frm=1, term=1),
    ],
)
def test_what_a_packed_record_cannot_carry_goes_in_full(msg: Message) -> None:
    assert pack_heartbeat("g", msg) is None


@pytest.mark.parametrize(
    "data",
    [
        b"\x06\x00" + b"\x00" * 10,  # truncated record
        b"\x02\x00" + b"\x00" * 16 + b"\x00\x00",  # not a heartbeat type
        b"\x06\x00" + b"\x00" * 16 + b"\x00\x05ab",  # name runs past the end
        b"\x06\x00" + b"\x00" * 16 + b"\x00\x01\xff",  # name is not UTF-8
    ],
)
def test_malformed_runs_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        list(unpack_heartbeats(data, frm=1, to=2))
