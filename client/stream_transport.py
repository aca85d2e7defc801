"""ProduceStream and FetchStream over a node's stream listener: framed TCP, not gRPC.

Why: a grpc.aio stream message's round trip costs 0.22 ms on this machine against 0.015 ms for
asyncio over TCP, and gRPC's C core with its thread hand-offs is a good part of the CPU of a small
request on both ends (docs/performance.md, issue 18). The stream listener carries the same
protobuf messages the gRPC streams do, one stream per TCP connection
(liferaft_proto/stream_wire.py has the frames); everything else the client says stays on gRPC.

Theory of operation. `StreamDialer.open` connects to the address the node's metadata gives
(BrokerInfo.stream_port), with the TLS and credentials the client's gRPC channel has
(client/security.py: the same CA, client certificate and host-name check; the SASL username
and password under the same keys as the gRPC call metadata, in StreamOpen.credentials), sends
OPEN and waits for READY. Anything short of READY (refused, TLS failure, an END, silence) is
`StreamDialFailed`: the caller uses gRPC for that node instead, whose own attempt then says
what is wrong in the words a gRPC client always used; except a refused login (an END carrying
SASL_AUTHENTICATION_FAILED), which is raised as the gRPC path raises it.

Frames are read in an asyncio.Protocol (no task per frame, no read coroutine): each whole frame
goes straight to the stream's `StreamSink`, from the event loop's callback. One message is one
write. How a stream ends becomes the error the gRPC path raises: an END with an ErrorDetail is
`error_from_detail` of it (as `from_rpc_error` maps a status carrying one); a lost connection, a
clean END with requests unanswered, or a frame that breaks the protocol is a retriable
BrokerUnavailableError marked as a transport failure, as gRPC's UNAVAILABLE maps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import tempfile
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, cast

import grpc

from client.errors import (
    AuthorizationError,
    BrokerUnavailableError,
    LiferaftError,
    SaslAuthenticationFailedError,
    error_from_detail,
)
from client.security import Security
from liferaft_proto import stream_wire
from liferaft_proto.address import parse_address
from liferaft_proto.v1 import broker_pb2

__all__ = [
    "DIAL_TIMEOUT_S",
    "KEEPALIVE_IDLE_S",
    "USER_TIMEOUT_MS",
    "FetchStreamConnection",
    "StreamConnection",
    "StreamDialFailed",
    "StreamDialer",
    "StreamSink",
    "broken",
    "stream_ssl_context",
]

DIAL_TIMEOUT_S = 5.0
"""The longest a dial (connect, TLS handshake, OPEN answered by READY) may take; a node slower
than this is left to gRPC for the moment."""

_HEADER = stream_wire.FRAME_HEADER
_HEADER_SIZE = _HEADER.size


class StreamDialFailed(Exception):
    """The stream listener could not be reached or refused the stream before READY: nothing was
    sent on it; use gRPC for this node."""


def broken(message: str) -> LiferaftError:
    """A stream that failed below liferaft, as gRPC's UNAVAILABLE maps (client/errors.py)."""
    error = BrokerUnavailableError(None, message, retriable=True, invalid_metadata=True)
    error.transport = True
    return error


class StreamSink(Protocol):
    """Who a stream's frames go to, after READY."""

    def on_frame(self, kind: int, payload: bytes) -> None: ...

    def waiting(self) -> bool:
        """Whether answers are awaited (requests sent and not answered): while they are and
        the node says nothing, the connection asks whether it runs at all (PING)."""

    def on_end(self, failure: BaseException | None) -> None:
        """The stream ended: None after a clean END, else the error it ended with. Called once;
        no frame follows."""


def stream_ssl_context(security: Security) -> ssl.SSLContext | None:
    """The TLS the client's gRPC channel has (Security.channel_credentials), as an SSLContext:
    the node's certificate chained to `ca` (the system's roots without one) and its host name
    checked; `cert` and `key` as the client certificate. None for plaintext."""
    if not security.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if security.ca is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # only the given CA, as gRPC does
        context.load_verify_locations(cadata=security.ca.decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if security.cert is not None and security.key is not None:
        # ssl loads a certificate chain from files only: a private directory for the moment.
        with tempfile.TemporaryDirectory(prefix="liferaft-tls-") as d:
            cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
            for path, data in ((cert, security.cert), (key, security.key)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            context.load_cert_chain(cert, key)
    return context


def open_credentials(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> dict[str, bytes]:
    """StreamOpen.credentials from what a gRPC call would carry in its metadata (the same keys,
    liferaft_proto/credentials.py)."""
    return {k: v.encode() if isinstance(v, str) else v for k, v in metadata or ()}


@dataclass(frozen=True, slots=True)
class StreamDialer:
    """How to reach stream listeners: TLS, credentials, the dial's time limit."""

    ssl: ssl.SSLContext | None = None
    credentials: dict[str, bytes] = field(default_factory=dict)
    timeout_s: float = DIAL_TIMEOUT_S

    @classmethod
    def from_security(
        cls,
        security: Security,
        metadata: Iterable[tuple[str, str | bytes]] | None = None,
    ) -> StreamDialer:
        """The dialer for a client with `security`; `metadata` overrides the credentials
        (a caller that passes its own call metadata, the raw bench)."""
        md = metadata if metadata is not None else security.call_metadata()
        return cls(stream_ssl_context(security), open_credentials(md))

    async def open(
        self,
        address: str,
        method: str,
        sink: StreamSink,
        *,
        fetch: broker_pb2.FetchRequest | None = None,
        timeout_s: float | None = None,
    ) -> StreamConnection:
        """A stream open at `address` (HOST:PORT of a stream listener), its frames going to
        `sink`. Raises StreamDialFailed (module docstring)."""
        loop = asyncio.get_running_loop()
        host, port = parse_address(address)
        opening = broker_pb2.StreamOpen(method=method, credentials=self.credentials)
        if fetch is not None:
            opening.fetch.CopyFrom(fetch)
        conn: StreamConnection | None = None
        try:
            async with asyncio.timeout(min(self.timeout_s, timeout_s or self.timeout_s)):
                _, conn = await loop.create_connection(
                    lambda: StreamConnection(address, sink, loop),
                    host,
                    port,
                    ssl=self.ssl,
                    server_hostname=host if self.ssl is not None else None,
                )
                conn.send(stream_wire.OPEN, opening.SerializeToString())
                await conn.ready
        except (SaslAuthenticationFailedError, AuthorizationError):
            raise  # the credentials: gRPC would refuse them too, in the same words
        except (OSError, TimeoutError, ssl.SSLError, ValueError, LiferaftError) as e:
            if conn is not None:
                conn.abort()
            raise StreamDialFailed(f"{method} stream to {address}: {_reason(e)}") from e
        except BaseException:
            if conn is not None:
                conn.abort()
            raise
        return conn


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no READY in time"
    return str(error) or type(error).__name__


class StreamConnection(asyncio.Protocol):
    """One connection to a stream listener, carrying one stream (StreamDialer.open)."""

    def __init__(self, address: str, sink: StreamSink, loop: asyncio.AbstractEventLoop) -> None:
        self.address = address
        self._sink = sink
        self.ready: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._limit = stream_wire.MAX_OPEN_BYTES  # until READY: nothing large before it
        self._ended = False
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self._now = loop.time
        self._heard = 0.0
        """When the node last sent anything (loop time)."""
        self._ping_at: float | None = None
        """When the unanswered PING went out; None: none is."""
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_due = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance(asyncio.Transport): uvloop's transports have its methods without
        # being its subclasses, and an application on uvloop is a client like any other.
        self._transport = cast("asyncio.Transport", transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            _keepalive(sock)

    def data_received(self, data: bytes) -> None:
        self._heard = self._now()
        buf = self._buf
        if buf:
            buf += data
            view: bytes | bytearray = buf
        else:
            view = data
        n, pos = len(view), 0
        while n - pos >= _HEADER_SIZE and not self._ended:
            length, kind = _HEADER.unpack_from(view, pos)
            if not 1 <= length <= self._limit + 1:  # stream_wire.frame_header's rule, inline
                self._fail(
                    broken(f"a frame of {length} bytes from the stream listener at {self.address}")
                )
                return
            end = pos + _HEADER_SIZE - 1 + length
            if end > n:
                break
            if view is data:
                payload = data[pos + _HEADER_SIZE : end]
            else:
                with memoryview(buf) as mv:
                    payload = bytes(mv[pos + _HEADER_SIZE : end])
            pos = end
            self._frame(kind, payload)
        if self._ended:
            return
        if view is data:
            if pos < n:
                buf += data[pos:]
        elif pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        why = f": {exc}" if exc is not None else ""
        self._fail(broken(f"the connection to the stream listener at {self.address} was lost{why}"))
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- frames --------------------------------------------------------------------------------
    def _frame(self, kind: int, payload: bytes) -> None:
        if kind == stream_wire.END:
            end = broker_pb2.StreamEnd()
            try:
                end.ParseFromString(payload)
            except Exception:
                self._fail(broken(f"an END the client cannot read from {self.address}"))
                return
            self._fail(error_from_detail(end.error) if end.HasField("error") else None)
            return
        if not self.ready.done():
            if kind != stream_wire.READY:
                self._fail(broken(f"{self.address} sent {_kind(kind)} before READY"))
                return
            self._limit = stream_wire.MAX_FRAME_BYTES
            if payload[:1] and payload[0] & stream_wire.READY_PINGS:
                self._arm_watchdog()
            self.ready.set_result(None)
            return
        if kind == stream_wire.PONG:
            return  # heard: that is all a PONG says
        try:
            self._sink.on_frame(kind, payload)
        except Exception as e:  # a frame the sink cannot take: the stream is broken
            self._fail(broken(f"{self.address} sent a {_kind(kind)} the client cannot take: {e}"))

    def _watch(self) -> None:
        """Every WATCH_EVERY_S while open: a node silent for SILENT_S while answers are awaited
        is asked (PING); one that does not answer within PONG_WITHIN_S is not running (stopped,
        or its loop stuck), and the stream fails as a lost connection would: its requests are
        retried where the metadata now says (the producer's sequence numbers keep a request the
        node did write from being written twice). A node slow to commit answers the PING."""
        self._watchdog = None
        if self._ended:
            return
        now = self._now()
        if now - self._watch_due > WATCH_EVERY_S:
            # This loop was held up (the application's own work): what the node sent meanwhile
            # may still wait in the socket (uvloop runs timers before it reads), so no verdict
            # on this round.
            self._arm_watchdog()
            return
        if self._ping_at is not None and self._heard >= self._ping_at:
            self._ping_at = None  # answered (or anything at all came)
        if not self._sink.waiting():
            self._ping_at = None
        elif self._ping_at is None:
            if now - self._heard >= SILENT_S:
                self._ping_at = now
                self.send(stream_wire.PING)
        elif now - self._ping_at >= PONG_WITHIN_S:
            self._fail(
                broken(
                    f"the node at {self.address} answered nothing for {now - self._heard:.1f} s, "
                    "not even a ping: its process is stopped or stuck"
                )
            )
            return
        self._arm_watchdog()

    def _arm_watchdog(self) -> None:
        self._watch_due = self._now() + WATCH_EVERY_S
        self._watchdog = asyncio.get_running_loop().call_later(WATCH_EVERY_S, self._watch)

    def _fail(self, failure: BaseException | None) -> None:
        """The stream is over (an END, a lost connection, a bad frame): tell the opener or the
        sink, once, and close the connection."""
        if self._ended:
            return
        self._ended = True
        self._stop_watching()
        if not self.ready.done():
            self.ready.set_exception(
                failure or broken(f"{self.address} ended the stream before READY")
            )
            self.ready.exception()  # retrieved: the opener may be gone
        else:
            self._sink.on_end(failure)
        if self._transport is not None:
            self._transport.abort()

    # -- the caller's side ---------------------------------------------------------------------
    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def writable(self) -> bool:
        """False while the socket's send buffer is full (wait for `drain`)."""
        return not self._paused and not self._ended

    def send(self, kind: int, payload: bytes = b"") -> None:
        """One frame, in one write."""
        if self._transport is None or self._ended:
            return
        self._transport.write(stream_wire.frame(kind, payload))

    async def drain(self) -> None:
        """Wait until the socket takes writes again (or the connection is gone)."""
        if not self._paused or self._ended:
            return
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()
        await self._drained

    def pause_reading(self) -> None:
        if self._transport is not None and not self._ended:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._ended:
            self._transport.resume_reading()

    def _stop_watching(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def abort(self) -> None:
        """Drop the connection now; the sink hears nothing more."""
        self._ended = True
        self._stop_watching()
        if not self.ready.done():
            self.ready.cancel()
        if self._transport is not None:
            self._transport.abort()


SILENT_S = 1.0
"""A node that has sent nothing this long while answers are awaited is asked whether it runs
(PING): longer than a healthy node's commit of a request, shorter than an election."""
PONG_WITHIN_S = 3.0
"""How long the PING may go unanswered before the stream is given up: a running node answers
it from its event loop at once; only a stopped process, or a loop stuck this long, does not.
A stopped leader holds its requests for about SILENT_S + PONG_WITHIN_S (against the request
timeout, 30 s, before); a false verdict costs a retry, which the idempotent producer's
sequence numbers keep from writing twice."""
WATCH_EVERY_S = 0.5

KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 2, 1, 2
"""TCP keepalive on a stream connection: a node whose host stopped answering at all (gone,
cut off) is noticed within about four seconds of silence, as a gRPC channel's pings were
meant to (client/connection.py); the stream then fails as a lost connection. A paused
process's kernel still answers these probes: that case is found by PING on the produce and
fetch streams (StreamConnection._watch); on gRPC it waits for the requests' deadlines and the
fetch stream's silence watchdog (tried: a SIGSTOPped leader kept its gRPC channel READY too)."""
USER_TIMEOUT_MS = 5_000
"""Data sent and not acknowledged by the node's kernel this long also ends the connection."""


def _keepalive(sock: socket.socket) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not TCP, or not Linux: as it is
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)


def _kind(kind: int) -> str:
    return stream_wire.KIND_NAMES.get(kind, f"frame kind {kind}")


class FetchStreamConnection:
    """A FetchStream on a stream listener, read as the grpc.aio call is (client/fetcher.py):
    `read()` gives the next FetchResponse or grpc.aio.EOF after a clean END, and raises the
    stream's error; `cancel()` closes it. Answers the reader has not taken yet are held (a few,
    then the socket stops being read: the node's own flow control holds it back, as HTTP/2's
    window does on the gRPC stream)."""

    HOLD = 4
    """Answers held before the socket stops being read."""

    def __init__(self) -> None:
        self._answers: deque[broker_pb2.FetchResponse] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._end: BaseException | None = None
        self._ended = False
        self._conn: StreamConnection | None = None
        self._reading_paused = False

    @classmethod
    async def open(
        cls,
        dialer: StreamDialer,
        address: str,
        request: broker_pb2.FetchRequest,
        timeout_s: float | None = None,
    ) -> FetchStreamConnection:
        call = cls()
        call._conn = await dialer.open(
            address, stream_wire.FETCH_STREAM, call, fetch=request, timeout_s=timeout_s
        )
        return call

    def on_frame(self, kind: int, payload: bytes) -> None:
        if kind != stream_wire.FETCHED:
            raise ValueError("not a FETCHED frame on a fetch stream")
        answer = broker_pb2.FetchResponse()
        answer.ParseFromString(payload)
        self._answers.append(answer)
        if len(self._answers) >= self.HOLD and self._conn is not None:
            self._reading_paused = True
            self._conn.pause_reading()
        self._wake()

    def on_end(self, failure: BaseException | None) -> None:
        self._ended = True
        self._end = failure
        self._wake()

    def waiting(self) -> bool:
        # While this side reads: a running node answers a FetchStream at least every
        # max_wait_ms (an empty answer with the high watermark), and a PING at once. Not while
        # the reader holds the socket (its silence is ours). client/fetcher.py's own watchdog,
        # far longer, stays for gRPC and for nodes that do not answer PING.
        return not self._ended and not self._reading_paused

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> broker_pb2.FetchResponse | object:
        while not self._answers:
            if self._ended:
                if self._end is not None:
                    raise self._end
                return grpc.aio.EOF
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        answer = self._answers.popleft()
        if self._reading_paused and len(self._answers) < self.HOLD // 2 and self._conn is not None:
            self._reading_paused = False
            self._conn.resume_reading()
        return answer

    def cancel(self) -> bool:
        """Close the stream (the node stops sending); a read under way is not woken."""
        if self._conn is not None and not self._ended:
            self._ended = True
            self._end = broken(f"the fetch stream to {self._conn.address} was closed")
            self._conn.abort()
            return True
        return False
