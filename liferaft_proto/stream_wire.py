"""The bytes of the stream listener: ProduceStream and FetchStream over framed TCP.

Why a second way to call two RPCs: on this machine a grpc.aio stream message's round trip is
0.22 ms against 0.015 ms for asyncio over TCP, and gRPC (its C core, its completion-queue
thread's hand-offs) is about a quarter of the leader's CPU per small produce request
(docs/performance.md, issue 18). The Raft links left gRPC for framed TCP in the first session
for the same reason. The messages stay the protobuf ones the gRPC streams carry (decoded in C);
only the envelope changes. Everything else (metadata, admin, groups) stays on gRPC.

One connection carries one stream, as one gRPC call does:

  frame := length (u32, the bytes after it) · kind (u8) · payload

  client -> node                               node -> client
  OPEN     liferaft.v1.StreamOpen (first)      READY    flags (u8; none from older nodes):
                                                        authenticated, the stream is open
  PRODUCE  liferaft.v1.ProduceStreamRequest    PRODUCED liferaft.v1.ProduceStreamResponse
  CLOSE    empty: no more requests             FETCHED  liferaft.v1.FetchResponse
  PING     up to 8 bytes (after READY)         PONG     the PING's bytes, at once
                                               END      liferaft.v1.StreamEnd (last), then close

PING and PONG: a node whose READY has the READY_PINGS flag answers each PING with a PONG as soon
as it reads it. A client that has waited for answers a while and heard nothing asks, so that a
node whose process is stopped (SIGSTOP, a VM paused: its kernel still acknowledges the bytes and
answers TCP keepalives) is told from one that is only slow to commit; a client never pings a
node whose READY lacks the flag.

A ProduceStream connection behaves as the gRPC ProduceStream call: requests answered by
correlation_id as they complete; after CLOSE the node answers what it has read, sends END and
closes. A FetchStream connection behaves as the gRPC FetchStream call: the StreamOpen's fetch
request, then FETCHED frames; the client ends it by closing the connection. An error that
concerns the whole stream (authentication, NOT_LEADER for a FetchStream, a bad frame) is an END
with its ErrorDetail, where gRPC would end the call with a status. Integers are big-endian.

The listener is at the node's base port + STREAM.offset (liferaft_proto/ports.py); TLS and who
may connect are the gRPC client listener's (same certificate, same client-certificate rule,
same credentials, checked once per connection as a Kafka connection's login is).
"""

from __future__ import annotations

import struct

__all__ = [
    "CLOSE",
    "END",
    "FETCHED",
    "FETCH_STREAM",
    "FRAME_HEADER",
    "KIND_NAMES",
    "MAX_FRAME_BYTES",
    "MAX_OPEN_BYTES",
    "MAX_PING_BYTES",
    "OPEN",
    "PING",
    "PONG",
    "PRODUCE",
    "PRODUCED",
    "PRODUCE_STREAM",
    "READY",
    "READY_PINGS",
    "frame",
    "frame_header",
]

OPEN, READY, PRODUCE, PRODUCED, FETCHED, CLOSE, END, PING, PONG = 1, 2, 3, 4, 5, 6, 7, 8, 9
KIND_NAMES = {
    OPEN: "OPEN",
    READY: "READY",
    PRODUCE: "PRODUCE",
    PRODUCED: "PRODUCED",
    FETCHED: "FETCHED",
    CLOSE: "CLOSE",
    END: "END",
    PING: "PING",
    PONG: "PONG",
}

READY_PINGS = 0x01
"""READY's flag: this node answers PING with PONG."""
MAX_PING_BYTES = 8
"""A PING's payload at most (the client's own marker, echoed)."""

PRODUCE_STREAM = "ProduceStream"
FETCH_STREAM = "FetchStream"
"""StreamOpen.method: the gRPC method whose stream the connection carries."""

FRAME_HEADER = struct.Struct(">IB")
"""length of what follows (kind + payload), kind."""

MAX_OPEN_BYTES = 16 << 10
"""The OPEN frame may claim at most this: nothing larger is buffered for a caller not yet known
(credentials are a few hundred bytes; a forwarded principal carries a node's certificate)."""
MAX_FRAME_BYTES = 64 << 20
"""Any later frame, either way: the gRPC listener's message limit (node/server.py,
client/connection.py), so a request either transport carries the other does too."""


def frame(kind: int, payload: bytes = b"") -> bytes:
    """One whole frame."""
    return FRAME_HEADER.pack(len(payload) + 1, kind) + payload


def frame_header(header: bytes, limit: int) -> tuple[int, int]:
    """(kind, payload length) of a frame from its FRAME_HEADER.size bytes.

    ValueError if the frame is empty (no kind) or claims more than `limit` bytes of payload:
    the reader must drop the connection before buffering anything of it."""
    length, kind = FRAME_HEADER.unpack(header)
    if length < 1:
        raise ValueError("a frame without a kind")
    if length - 1 > limit:
        raise ValueError(f"a frame of {length - 1} bytes, over the limit of {limit}")
    return kind, length - 1
