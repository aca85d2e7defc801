"""node/raft_codec.py: every raft.types.Message survives the wire unchanged."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liferaft_proto.v1.raft_pb2 import GroupMessage, RaftBatch, RaftMessage
from node.raft_codec import from_proto, to_proto
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


@SETTINGS
@given(group=GROUP, m=messages())
def test_round_trip(group: str, m: Message) -> None:
    gm = to_proto(group, m)
    assert from_proto(gm) == (group, m)
    # And through bytes, as the transport sends it.
    wire = GroupMessage.FromString(gm.SerializeToString())
    got_group, got = from_proto(wire)
    assert (got_group, got) == (group, m)
    assert type(got.type) is MessageType
    assert all(type(e.type) is EntryType for e in got.entries)


@SETTINGS
@given(batch=st.lists(st.tuples(GROUP, messages()), max_size=5))
def test_round_trip_in_a_batch(batch: list[tuple[str, Message]]) -> None:
    rb = RaftBatch(from_node=1, seq=7)
    rb.messages.extend(to_proto(g, m) for g, m in batch)
    wire = RaftBatch.FromString(rb.SerializeToString())
    assert [from_proto(gm) for gm in wire.messages] == batch


def test_an_empty_snapshot_stays_present() -> None:
    # None and Snapshot() mean different things to the core; the wire must keep them apart.
    m = Message(type=MessageType.SNAP, to=2, frm=1, snapshot=Snapshot())
    wire = GroupMessage.FromString(to_proto("g", m).SerializeToString())
    assert from_proto(wire)[1].snapshot == Snapshot()
    plain = Message(type=MessageType.APP, to=2, frm=1)
    wire = GroupMessage.FromString(to_proto("g", plain).SerializeToString())
    assert from_proto(wire)[1].snapshot is None


def test_equal_conf_states_encode_to_equal_bytes() -> None:
    def encode(voters: list[int]) -> bytes:
        snap = Snapshot(SnapshotMeta(1, 1, ConfState(voters=frozenset(voters))))
        m = Message(type=MessageType.SNAP, to=2, frm=1, snapshot=snap)
        return to_proto("g", m).SerializeToString()

    assert encode([3, 1, 2]) == encode([2, 3, 1])


def test_unknown_message_type_is_refused() -> None:
    gm = GroupMessage(group="orders-0", msg=RaftMessage(type=42, to=1, frm=2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'orders-0': unknown Raft message type 42"):
        from_proto(gm)


def test_unknown_entry_type_is_refused() -> None:
    gm = to_proto("g", Message(type=MessageType.APP, to=1, frm=2, entries=(Entry(1, 1),)))
    gm.msg.entries[0].type = 9  # type: ignore[assignment]
    with pytest.raises(ValueError, match="unknown Raft entry type 9"):
        from_proto(gm)


def test_snap_without_snapshot_is_refused() -> None:
    gm = GroupMessage(group="g", msg=RaftMessage(type=RaftMessage.SNAP, to=1, frm=2))
    with pytest.raises(ValueError, match="SNAP message from 2 carries no snapshot"):
        from_proto(gm)


def test_values_the_wire_cannot_carry_are_refused_when_encoding() -> None:
    with pytest.raises(ValueError):
        to_proto("g", Message(type=MessageType.APP, to=2**32, frm=1))
    with pytest.raises(ValueError):
        to_proto("g", Message(type=MessageType.APP, to=1, frm=1, term=-1))
