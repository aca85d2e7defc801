"""Map raft.types.Message to the wire (liferaft.v1.GroupMessage) and back.

The Raft core speaks slotted dataclasses so it stays free of generated code (raft/types.py);
the transport speaks protobuf. This is the one place the two meet, field for field: the proto
enums carry the core's own numbers, so a type converts by table lookup.

It is on the replication hot path (every append and heartbeat of every group passes here), so
it sets only the fields that differ from their proto3 defaults (a set is a C call; a skipped
zero is a Python branch) and builds repeated entries with `add`, which constructs them in place
instead of copying finished messages. Decoding rejects what would otherwise crash the core
later: an unknown message or entry type, a SNAP without its snapshot.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from liferaft_proto.v1.raft_pb2 import GroupMessage, RaftEntry, RaftMessage, RaftSnapshot
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

__all__ = ["fill_proto", "from_proto", "pack_heartbeat", "to_proto", "unpack_heartbeats"]

_MESSAGE_TYPES = {int(t): t for t in MessageType}
_ENTRY_TYPES = {int(t): t for t in EntryType}

# The wire numbering is the core's: check it once, at import, rather than trust it.
if dict(RaftMessage.Type.items()) != {t.name: int(t) for t in MessageType} or dict(
    RaftEntry.Type.items()
) != {t.name: int(t) for t in EntryType}:
    raise ImportError("raft.proto's enums no longer mirror raft.types; regenerate or fix them")


def to_proto(group: str, m: Message) -> GroupMessage:
    """Encode one message of one Raft group for a RaftBatch."""
    gm = GroupMessage()
    fill_proto(gm, group, m)
    return gm


def fill_proto(gm: GroupMessage, group: str, m: Message) -> None:
    """Encode one message into a GroupMessage that already sits in a batch (`messages.add()`):
    building it in place saves copying its entries' bytes once more into the batch."""
    gm.group = group
    pm = gm.msg
    pm.type = m.type  # type: ignore[assignment]  # an IntEnum with the same numbers
    pm.to = m.to
    pm.frm = m.frm
    if m.term:
        pm.term = m.term
    if m.log_term:
        pm.log_term = m.log_term
    if m.index:
        pm.index = m.index
    if m.commit:
        pm.commit = m.commit
    if m.reject:
        pm.reject = True
    if m.reject_hint:
        pm.reject_hint = m.reject_hint
    if m.context:
        pm.context = m.context
    if m.entries:
        add = pm.entries.add
        for e in m.entries:
            add(index=e.index, term=e.term, type=e.type, data=e.data)
    if m.snapshot is not None:
        _snapshot_to_proto(m.snapshot, pm.snapshot)


def from_proto(gm: GroupMessage) -> tuple[str, Message]:
    """Decode a GroupMessage into its group name and the core's Message.

    Raises ValueError for what the core must never see: an unknown message or entry type, or a
    SNAP without a snapshot.
    """
    pm = gm.msg
    mtype = _MESSAGE_TYPES.get(pm.type)
    if mtype is None:
        raise ValueError(f"group {gm.group!r}: unknown Raft message type {pm.type}")
    entries: tuple[Entry, ...] = ()
    if pm.entries:
        etypes = _ENTRY_TYPES
        try:
            entries = tuple([Entry(e.index, e.term, etypes[e.type], e.data) for e in pm.entries])
        except KeyError as err:
            raise ValueError(f"group {gm.group!r}: unknown Raft entry type {err.args[0]}") from None
    snapshot = None
    if pm.HasField("snapshot"):
        snapshot = _snapshot_from_proto(pm.snapshot)
    elif mtype == MessageType.SNAP:
        raise ValueError(f"group {gm.group!r}: SNAP message from {pm.frm} carries no snapshot")
    return gm.group, Message(
        mtype,
        pm.to,
        pm.frm,
        pm.term,
        pm.log_term,
        pm.index,
        entries,
        pm.commit,
        pm.reject,
        pm.reject_hint,
        snapshot,
        pm.context,
    )


def _snapshot_to_proto(s: Snapshot, ps: RaftSnapshot) -> None:
    meta = ps.meta
    meta.index = s.meta.index
    meta.term = s.meta.term
    cs = meta.conf_state
    # Sorted so equal conf states encode to equal bytes.
    cs.voters.extend(sorted(s.meta.conf_state.voters))
    cs.learners.extend(sorted(s.meta.conf_state.learners))
    ps.data = s.data
    ps.SetInParent()  # present even when every field is a default


def _snapshot_from_proto(ps: RaftSnapshot) -> Snapshot:
    meta = ps.meta
    cs = meta.conf_state
    return Snapshot(
        meta=SnapshotMeta(
            index=meta.index,
            term=meta.term,
            conf_state=ConfState(voters=frozenset(cs.voters), learners=frozenset(cs.learners)),
        ),
        data=ps.data,
    )


# -- coalesced heartbeats (RaftBatch.heartbeats) ------------------------------------------------
_HB = struct.Struct(">BBQQH")  # type, flags, term, commit, group name length
_HB_QUIESCE = 1
_HB_TYPES = {
    int(MessageType.HEARTBEAT): MessageType.HEARTBEAT,
    int(MessageType.HEARTBEAT_RESP): MessageType.HEARTBEAT_RESP,
}


def pack_heartbeat(group: str, m: Message) -> bytes | None:
    """The packed record of a heartbeat or heartbeat reply, or None for a message that needs
    the full form (another type, or a field a packed record does not carry)."""
    if (
        m.type not in _HB_TYPES
        or m.index
        or m.log_term
        or m.entries
        or m.reject
        or m.reject_hint
        or m.snapshot is not None
        or m.context not in (b"", QUIESCE_CONTEXT)
    ):
        return None
    name = group.encode()
    flags = _HB_QUIESCE if m.context else 0
    return _HB.pack(m.type, flags, m.term, m.commit, len(name)) + name


def unpack_heartbeats(data: bytes, frm: int, to: int) -> Iterator[tuple[str, Message]]:
    """The (group, message) pairs of a RaftBatch's packed heartbeats, sent by frm to to.
    Raises ValueError on a malformed run (the stream is then dropped, like a bad message)."""
    pos, end, size = 0, len(data), _HB.size
    types = _HB_TYPES
    try:
        while pos < end:
            kind, flags, term, commit, n = _HB.unpack_from(data, pos)
            pos += size
            if pos + n > end:
                raise ValueError("packed heartbeats: a group name runs past the end")
            group = data[pos : pos + n].decode()
            pos += n
            yield (
                group,
                Message(
                    types[kind],
                    to,
                    frm,
                    term,
                    0,
                    0,
                    (),
                    commit,
                    False,
                    0,
                    None,
                    QUIESCE_CONTEXT if flags & _HB_QUIESCE else b"",
                ),
            )
    except (struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"packed heartbeats are malformed: {e}") from None
    except KeyError as e:
        raise ValueError(f"packed heartbeats: unknown message type {e.args[0]}") from None
