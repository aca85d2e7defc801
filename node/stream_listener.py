"""The stream listener: the clients' ProduceStream and FetchStream over framed TCP, one stream
per connection (the bytes: liferaft_proto/stream_wire.py, whose docstring says why).

A connection is served by the SAME handlers the gRPC servicer runs (node/api/produce_stream.py,
node/api/fetch.py), so the two transports cannot drift apart in what they accept or answer;
only the envelope differs. Per connection: the OPEN frame (at most MAX_OPEN_BYTES, within
OPEN_DEADLINE_S of the TLS handshake), authenticated exactly as a gRPC call is (node/authn.py
GrpcAuth: the StreamOpen's credentials are the call's metadata, the TLS peer certificate is
gRPC's auth_context), node.principal.caller set for the connection's task and every task it
starts, READY, then the stream. At most MAX_UNAUTHENTICATED_CONNECTIONS may be between accept
and READY at once. A FetchStream's client ends it by closing the connection, or with CLOSE
(then the node answers END, as a ProduceStream's does).

Errors: a request's error on a ProduceStream is a value in its answer, as on gRPC. Whatever
ends the whole stream (a failed login, NOT_LEADER on a FetchStream, a bad frame, a protobuf that
does not parse, a bug) is one END frame with its ErrorDetail, then the connection closes;
nothing else changes and the listener serves on. A client that goes away is not an error.

Back-pressure: answers are written by the connection's one task; past WRITE_HIGH_WATER unsent
bytes it waits for the socket to drain, which holds the FetchStream generator at its yield and
the ProduceStream's reader behind its MAX_IN_FLIGHT, so a slow reader costs the node at most a
frame beyond the mark.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, suppress
from typing import Any, cast

from google.protobuf.message import DecodeError

from liferaft_proto import stream_wire as wire
from liferaft_proto.v1 import broker_pb2, errors_pb2
from node import principal
from node.api import fetch, produce_stream
from node.api.context import Api, cut, detail
from node.authn import AuthError, GrpcAuth
from node.errors import BrokerError, ErrorCode
from node.limits import HELLO_DEADLINE_S, MAX_UNAUTHENTICATED_CONNECTIONS
from node.metrics import NodeMetrics
from node.tasks import stop_listener

__all__ = ["StreamListener"]

log = logging.getLogger("liferaft.stream")

OPEN_DEADLINE_S = HELLO_DEADLINE_S
"""A connection that has not sent its whole OPEN within this (after TLS) is closed."""
WRITE_HIGH_WATER = 1 << 20
"""Unsent bytes on a connection above which its writer waits for the socket to drain."""
END_WRITE_TIMEOUT_S = 5.0
"""How long the END frame may take to leave before the connection is closed anyway."""
READ_LIMIT = 1 << 20
"""asyncio's read buffer high-water mark once the stream is open (before: MAX_OPEN_BYTES, so a
stranger can make the node buffer little): reading large PRODUCE frames does not pause and
resume the socket every 32 KiB."""


class StreamEnded(Exception):
    """The whole stream ends with this error (an END frame carrying it)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.error = BrokerError(code, message)


class ClientGone(Exception):
    """The client closed the connection (or it broke): nothing more can be said to it."""


def _bad(message: str) -> StreamEnded:
    return StreamEnded(ErrorCode.INVALID_REQUEST, message)


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> tuple[int, bytes]:
    """The next frame's kind and payload. StreamEnded for a frame over `limit` (nothing of it
    buffered), ClientGone at the end of the connection."""
    try:
        header = await reader.readexactly(wire.FRAME_HEADER.size)
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise _bad("the connection ended inside a frame header") from None
        raise ClientGone from None
    except OSError:  # reset, or a TLS record that does not decrypt
        raise ClientGone from None
    try:
        kind, size = wire.frame_header(header, limit)
    except ValueError as e:
        raise _bad(str(e)) from None
    try:
        return kind, await reader.readexactly(size) if size else b""
    except (asyncio.IncompleteReadError, OSError):
        raise ClientGone from None


def _kind(kind: int) -> str:
    return wire.KIND_NAMES.get(kind, f"unknown kind {kind}")


def _a(kind: int) -> str:
    """'a PRODUCE frame', 'an OPEN frame', 'a frame of unknown kind 9'."""
    name = wire.KIND_NAMES.get(kind)
    if name is None:
        return f"a frame of unknown kind {kind}"
    return f"{'an' if name[0] in 'AEIOU' else 'a'} {name} frame"


def _credentials(open_: broker_pb2.StreamOpen) -> list[tuple[str, str | bytes]]:
    """StreamOpen.credentials as gRPC metadata: values of keys not ending in -bin are text."""
    out: list[tuple[str, str | bytes]] = []
    for key, value in open_.credentials.items():
        if key.endswith("-bin"):
            out.append((key, value))
            continue
        try:
            out.append((key, value.decode()))
        except UnicodeDecodeError:
            raise AuthError(f"the credential {key!r} is not UTF-8") from None
    return out


class StreamListener:
    """The TCP server; one StreamConnection per accepted connection."""

    def __init__(
        self,
        api: Api,
        auth: GrpcAuth | None,
        metrics: NodeMetrics | None,
        host: str,
        port: int,
        *,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self.api = api
        self.auth = auth
        self.metrics = metrics
        self.host = host
        self.port = port
        self.ssl = ssl
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.opening = 0
        """Connections accepted whose OPEN has not been authenticated yet."""

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept,
            self.host,
            self.port,
            limit=wire.MAX_OPEN_BYTES,
            reuse_address=True,
            ssl=self.ssl,
            ssl_handshake_timeout=OPEN_DEADLINE_S if self.ssl is not None else None,
        )
        log.info(
            "stream listener on %s:%d (%s%s)",
            self.host,
            self.port,
            "TLS" if self.ssl is not None else "plaintext",
            ", SCRAM logins" if self.auth is not None and self.auth.sasl else "",
        )

    async def stop(self) -> None:
        await stop_listener(self._server, self._connections)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await StreamConnection(self, reader, writer).run()
        finally:
            self._connections.discard(task)


class StreamConnection:
    def __init__(
        self, listener: StreamListener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.listener = listener
        self.api = listener.api
        self.metrics = listener.metrics
        self.reader = reader
        self.writer = writer
        self.peer: Any = writer.get_extra_info("peername")

    async def run(self) -> None:
        end: errors_pb2.ErrorDetail | None = None
        try:
            self.writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
            method, request = await self._open()
            # asyncio has no public setter; the Raft transport does the same after a Hello.
            self.reader._limit = READ_LIMIT  # type: ignore[attr-defined]
            self.writer.write(wire.frame(wire.READY, bytes([wire.READY_PINGS])))
            if method == wire.PRODUCE_STREAM:
                await self._produce()
            else:
                assert request is not None
                await self._fetch(request)
        except StreamEnded as e:
            end = detail(e.error)
            if e.error.code != ErrorCode.SASL_AUTHENTICATION_FAILED:
                log.info("stream client %s: %s; ending the stream", self.peer, e)
        except BrokerError as e:
            end = detail(e)
        except ClientGone:
            await self._close()
            return
        except asyncio.CancelledError:
            await self._close()
            raise
        except Exception as e:  # a bug: this connection only, with the cause logged
            log.exception("stream client %s: serving the stream failed", self.peer)
            end = errors_pb2.ErrorDetail(
                code=errors_pb2.UNKNOWN_SERVER_ERROR,
                message=cut(f"{type(e).__name__}: {e}"),
                retriable=False,
            )
        await self._end(end)

    async def _open(self) -> tuple[str, broker_pb2.FetchRequest | None]:
        """Read and authenticate the OPEN; the stream's method and (FetchStream) request."""
        listener = self.listener
        if listener.opening >= MAX_UNAUTHENTICATED_CONNECTIONS:
            raise StreamEnded(  # retriable: a burst of connections, not this client's fault
                ErrorCode.BROKER_NOT_AVAILABLE,
                f"{MAX_UNAUTHENTICATED_CONNECTIONS} connections are opening already; try again",
            )
        listener.opening += 1
        try:
            try:
                kind, payload = await asyncio.wait_for(
                    _read_frame(self.reader, wire.MAX_OPEN_BYTES), OPEN_DEADLINE_S
                )
            except TimeoutError:
                raise _bad(f"no OPEN frame within {OPEN_DEADLINE_S:.0f} s") from None
            if kind != wire.OPEN:
                raise _bad(f"the first frame must be OPEN, not {_kind(kind)}")
            try:
                open_ = broker_pb2.StreamOpen.FromString(payload)
            except DecodeError:
                raise _bad("the OPEN frame is not a liferaft.v1.StreamOpen") from None
            method = open_.method
            if method not in (wire.PRODUCE_STREAM, wire.FETCH_STREAM):
                raise _bad(
                    f"unknown stream method {method[:64]!r}: "
                    f"{wire.PRODUCE_STREAM} or {wire.FETCH_STREAM}"
                )
            try:
                self._authenticate(open_, method)
            except StreamEnded:
                if self.metrics is not None:
                    self.metrics.observe_request(method, "SASL_AUTHENTICATION_FAILED", 0.0)
                raise
            return method, open_.fetch if method == wire.FETCH_STREAM else None
        finally:
            listener.opening -= 1

    def _authenticate(self, open_: broker_pb2.StreamOpen, method: str) -> None:
        """Set node.principal.caller for this connection's task (and the tasks it starts), as
        node/service.py's `authenticate` does for a gRPC call."""
        auth = self.listener.auth
        if auth is None:
            return
        auth_context: dict[str, list[bytes]] = {}
        ssl_object = self.writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)
            if der:
                auth_context["x509_pem_cert"] = [ssl_module.DER_cert_to_PEM_cert(der).encode()]
        try:
            who = auth.principal(_credentials(open_), auth_context, method)
        except AuthError as e:
            raise StreamEnded(ErrorCode.SASL_AUTHENTICATION_FAILED, str(e)) from None
        principal.caller.set(who)

    async def _send(self, kind: int, message: Any) -> None:
        await self._write(wire.frame(kind, message.SerializeToString()))

    async def _write(self, frame: bytes) -> None:
        writer = self.writer
        writer.write(frame)
        if writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            try:
                await writer.drain()
            except OSError:
                raise ClientGone from None

    async def _requests(self) -> AsyncIterator[broker_pb2.ProduceStreamRequest]:
        """The ProduceStream's requests from PRODUCE frames, until CLOSE."""
        while True:
            kind, payload = await _read_frame(self.reader, wire.MAX_FRAME_BYTES)
            if kind == wire.CLOSE:
                return
            if kind == wire.PING:
                await self._pong(payload)
                continue
            if kind != wire.PRODUCE:
                raise _bad(f"{_a(kind)} on a ProduceStream (PRODUCE, PING or CLOSE)")
            try:
                yield broker_pb2.ProduceStreamRequest.FromString(payload)
            except DecodeError:
                raise _bad("a PRODUCE frame is not a liferaft.v1.ProduceStreamRequest") from None

    async def _produce(self) -> None:
        observe = self.metrics.observe_request if self.metrics is not None else None
        # The handlers are async generators (typed as iterators): closed here however this ends.
        answers = cast(
            AsyncGenerator[broker_pb2.ProduceStreamResponse, None],
            produce_stream.produce_stream(self.api, self._requests(), observe),
        )
        async with aclosing(answers):
            async for answer in answers:
                await self._send(wire.PRODUCED, answer)

    async def _fetch(self, request: broker_pb2.FetchRequest) -> None:
        """FetchStream's answers, while a watcher reads the connection: the client ends the
        stream by closing it (or with CLOSE); any other frame is bad input."""
        watcher = asyncio.create_task(self._watch_fetch())
        feeder = asyncio.create_task(self._feed(request))
        try:
            await asyncio.wait({watcher, feeder}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watcher, feeder):
                task.cancel()
            for task in (watcher, feeder):
                with suppress(asyncio.CancelledError):
                    await task
        # The first to finish says how the stream ends (its exception, or a clean end).
        done = feeder if feeder.done() and not feeder.cancelled() else watcher
        if done.cancelled():
            raise ClientGone
        error = done.exception()
        if error is not None:
            raise error

    async def _watch_fetch(self) -> None:
        while True:
            kind, payload = await _read_frame(self.reader, wire.MAX_FRAME_BYTES)
            if kind == wire.CLOSE:
                return
            if kind != wire.PING:
                raise _bad(f"{_a(kind)} on a FetchStream (PING or CLOSE)")
            await self._pong(payload)

    async def _pong(self, payload: bytes) -> None:
        """A PING's answer, written as it is read: the client asks whether this process runs
        (client/stream_transport.py). Held back as any answer is, by the client's reading."""
        if len(payload) > wire.MAX_PING_BYTES:
            raise _bad(f"a PING of {len(payload)} bytes (at most {wire.MAX_PING_BYTES})")
        await self._write(wire.frame(wire.PONG, payload))

    async def _feed(self, request: broker_pb2.FetchRequest) -> None:
        """node/service.py's FetchStream: each answer counts as one FetchStream request (its
        time: from the previous answer); the open streams are a gauge."""
        metrics = self.metrics
        if metrics is not None:
            metrics.fetch_streams.inc()
        t0 = time.perf_counter()
        try:
            stream = cast(
                AsyncGenerator[broker_pb2.FetchResponse, None],
                fetch.fetch_stream(self.api, request),
            )
            async with aclosing(stream) as answers:
                async for answer in answers:
                    if metrics is not None:
                        metrics.observe_request("FetchStream", "OK", time.perf_counter() - t0)
                    await self._send(wire.FETCHED, answer)
                    t0 = time.perf_counter()
        except BrokerError as e:
            if metrics is not None:
                metrics.observe_request("FetchStream", e.code_name, time.perf_counter() - t0)
            raise
        finally:
            if metrics is not None:
                metrics.fetch_streams.dec()

    async def _end(self, error: errors_pb2.ErrorDetail | None) -> None:
        """The END frame (with `error`, or none: a clean end), then close."""
        end = broker_pb2.StreamEnd(error=error) if error is not None else broker_pb2.StreamEnd()
        with suppress(Exception):
            self.writer.write(wire.frame(wire.END, end.SerializeToString()))
            await asyncio.wait_for(self.writer.drain(), END_WRITE_TIMEOUT_S)
        await self._close()

    async def _close(self) -> None:
        self.writer.close()
        with suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), END_WRITE_TIMEOUT_S)
