"""The bytes of the Raft transport: frames, and raft.types.Message inside them.

The transport (node/transport.py) carries the Raft messages of every group between two nodes on
one TCP connection. This module is the one place that knows how they look on that connection:

  frame    := length (u32, the bytes after it) · kind (u8) · payload
  HELLO    payload: liferaft.v1.Hello (protobuf), the first frame each way
  REFUSE   payload: liferaft.v1.ErrorDetail (protobuf); the acceptor then closes
  BATCH    payload: message*, in the order they were sent (an empty batch is a keepalive)
  LEADERS  payload: liferaft.v1.LeaderStates (protobuf), leader gossip for metadata
  message  := header · group name (UTF-8) · context · snapshot · entry*
  header   := type u8, flags u8 (1: reject, 2: has a snapshot), to u32, frm u32, term u64,
              log_term u64, index u64, commit u64, reject_hint u64, group name length u16,
              context length u32, snapshot length u32, entry count u32
  snapshot := liferaft.v1.RaftSnapshot (protobuf; voters and learners sorted)
  entry    := index u64, term u64, type u8, data length u32 · data

Integers are big-endian; the type numbers are raft.types.MessageType's and EntryType's. How
large a frame may be is the transport's decision (node/limits.py: a few KiB for the Hello, a
configured size after it).

Why not protobuf for the messages, as before: a record batch went from the log into a RaftEntry,
then into a serialized frame, then into gRPC's buffers, and back out the same way on the other
side, with Python objects for every step. Here an entry's data leaves as the very bytes object
the log holds (the transport hands the parts to the socket in one write) and arrives as one slice
of the frame: one header struct per message and per entry is all the Python work. Decoding
refuses what would crash the core later (an unknown message or entry type, a SNAP without its
snapshot, a truncated record) with ValueError, and the transport drops the connection.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from liferaft_proto.v1.raft_pb2 import RaftSnapshot
from raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

__all__ = [
    "BATCH",
    "FRAME_HEADER",
    "HELLO",
    "LEADERS",
    "REFUSE",
    "decode_batch",
    "decode_message",
    "encode_message",
    "frame",
]

HELLO, REFUSE, BATCH, LEADERS = 1, 2, 3, 4
FRAME_HEADER = struct.Struct(">IB")
"""length of what follows (kind + payload), kind."""

_MSG = struct.Struct(">BBIIQQQQQHIII")
_ENTRY = struct.Struct(">QQBI")
_REJECT, _HAS_SNAPSHOT = 1, 2

_MESSAGE_TYPES = {int(t): t for t in MessageType}
_ENTRY_TYPES = {int(t): t for t in EntryType}


def frame(kind: int, payload: bytes) -> bytes:
    """One whole frame (HELLO, REFUSE, LEADERS; batches are built in parts by the transport)."""
    return FRAME_HEADER.pack(len(payload) + 1, kind) + payload


def encode_message(group: str, m: Message, out: list[bytes]) -> int:
    """Append the parts of one message to `out`; returns their length in bytes.

    Raises ValueError for what the wire cannot carry (a negative or too large number)."""
    name = group.encode()
    snap = b""
    flags = _REJECT if m.reject else 0
    if m.snapshot is not None:
        snap = _snapshot_bytes(m.snapshot)
        flags |= _HAS_SNAPSHOT
    entries = m.entries
    try:
        out.append(
            _MSG.pack(
                m.type,
                flags,
                m.to,
                m.frm,
                m.term,
                m.log_term,
                m.index,
                m.commit,
                m.reject_hint,
                len(name),
                len(m.context),
                len(snap),
                len(entries),
            )
        )
        size = _MSG.size + len(name) + len(m.context) + len(snap)
        out.append(name)
        if m.context:
            out.append(m.context)
        if snap:
            out.append(snap)
        pack = _ENTRY.pack
        for e in entries:
            data = e.data
            out.append(pack(e.index, e.term, e.type, len(data)))
            out.append(data)
            size += _ENTRY.size + len(data)
    except struct.error as err:
        raise ValueError(f"group {group!r}: a {m.type.name} the wire cannot carry: {err}") from None
    return size


def decode_message(buf: bytes | memoryview, pos: int = 0) -> tuple[str, Message, int]:
    """The message at `pos` of `buf`: (group, message, position after it)."""
    end = len(buf)
    try:
        (
            mtype_n,
            flags,
            to,
            frm,
            term,
            log_term,
            index,
            commit,
            reject_hint,
            name_len,
            ctx_len,
            snap_len,
            n_entries,
        ) = _MSG.unpack_from(buf, pos)
    except struct.error:
        raise ValueError("Raft message: truncated header") from None
    pos += _MSG.size
    if pos + name_len + ctx_len + snap_len > end:
        raise ValueError("Raft message: its group name, context or snapshot runs past the end")
    try:
        group = bytes(buf[pos : pos + name_len]).decode()
    except UnicodeDecodeError:
        raise ValueError("Raft message: the group name is not UTF-8") from None
    pos += name_len
    mtype = _MESSAGE_TYPES.get(mtype_n)
    if mtype is None:
        raise ValueError(f"group {group!r}: unknown Raft message type {mtype_n}")
    context = bytes(buf[pos : pos + ctx_len])
    pos += ctx_len
    snapshot = None
    if flags & _HAS_SNAPSHOT:
        snapshot = _snapshot_from_bytes(buf[pos : pos + snap_len])
    elif mtype == MessageType.SNAP:
        raise ValueError(f"group {group!r}: SNAP message from {frm} carries no snapshot")
    pos += snap_len
    entries: tuple[Entry, ...] = ()
    if n_entries:
        got: list[Entry] = []
        unpack, size, etypes = _ENTRY.unpack_from, _ENTRY.size, _ENTRY_TYPES
        for _ in range(n_entries):
            try:
                e_index, e_term, e_type, n = unpack(buf, pos)
            except struct.error:
                raise ValueError(f"group {group!r}: truncated Raft entry") from None
            pos += size
            if pos + n > end:
                raise ValueError(f"group {group!r}: a Raft entry's data runs past the end")
            etype = etypes.get(e_type)
            if etype is None:
                raise ValueError(f"group {group!r}: unknown Raft entry type {e_type}")
            got.append(Entry(e_index, e_term, etype, bytes(buf[pos : pos + n])))
            pos += n
        entries = tuple(got)
    msg = Message(
        mtype,
        to,
        frm,
        term,
        log_term,
        index,
        entries,
        commit,
        bool(flags & _REJECT),
        reject_hint,
        snapshot,
        context,
    )
    return group, msg, pos


def decode_batch(payload: bytes | memoryview) -> Iterator[tuple[str, Message]]:
    """The (group, message) pairs of a BATCH payload, in order. Raises ValueError on garbage."""
    pos, end = 0, len(payload)
    while pos < end:
        group, msg, pos = decode_message(payload, pos)
        yield group, msg


def _snapshot_bytes(s: Snapshot) -> bytes:
    ps = RaftSnapshot()
    meta = ps.meta
    meta.index = s.meta.index
    meta.term = s.meta.term
    cs = meta.conf_state
    # Sorted so equal conf states encode to equal bytes.
    cs.voters.extend(sorted(s.meta.conf_state.voters))
    cs.learners.extend(sorted(s.meta.conf_state.learners))
    ps.data = s.data
    return ps.SerializeToString()


def _snapshot_from_bytes(data: bytes | memoryview) -> Snapshot:
    try:
        ps = RaftSnapshot.FromString(bytes(data))
    except Exception as e:  # protobuf's DecodeError
        raise ValueError(f"Raft snapshot does not parse: {e}") from None
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
