"""The Kafka listener: a TCP server speaking Kafka's framing, one reader and one writer per
connection.

Kafka answers the requests of one connection in the order they were sent; clients pipeline
(librdkafka keeps several produce requests in flight). Here the reader decodes each frame and
starts its handler at once, in arrival order, and the writer sends the answers in that same order
as each one finishes: a long-polling Fetch does not hold up the Produce behind it on another
partition, but its answer does go out first. At most MAX_IN_FLIGHT requests per connection are
started and unanswered; past that the reader stops reading (TCP pushes back on the client).

A request the node cannot parse, or one it does not serve, closes the connection, as Kafka does;
an unexpected exception in a handler is logged and closes that connection only. The listener
never dies of a client.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import time
from contextlib import suppress
from typing import Any

from node import principal
from node.authn import der_principal
from node.kafka.handlers import APIS
from node.kafka.handlers.api_versions import unsupported_version_response
from node.kafka.sasl import SaslLogin
from node.kafka.wire import (
    MAX_FRAME_BYTES,
    CloseConnection,
    Ctx,
    ProtocolError,
    Request,
    UnsupportedApiVersions,
    decode_request,
    encode_response,
)
from node.tasks import stop_listener

log = logging.getLogger("liferaft.kafka")

SWEEP_EVERY_S = 0.1
MAX_IN_FLIGHT = 32
LOGIN_TIMEOUT_S = 30.0
"""A connection that must log in (SASL) and has not within this is closed."""
MAX_LOGIN_FRAME_BYTES = 512 << 10
"""Before the login a request may be at most this (Kafka's sasl.server.max.receive.size), so
an unknown client cannot make the node buffer MAX_FRAME_BYTES."""
"""Requests of one connection started and not yet answered (Kafka clients keep <= 5 in flight
per partition leader; librdkafka's default max.in.flight is 1000000 but it is bounded here)."""


class KafkaListener:
    def __init__(
        self, ctx: Ctx, host: str, port: int, *, ssl: ssl_module.SSLContext | None = None
    ) -> None:
        self.ctx = ctx
        self.ssl = ssl
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True, ssl=self.ssl
        )
        self._sweeper = asyncio.create_task(self._sweep())
        log.info(
            "Kafka listener on %s:%d (%s)",
            self.host,
            self.port,
            ("SASL_SSL" if self.ctx.sasl else "SSL")
            if self.ssl
            else ("SASL_PLAINTEXT" if self.ctx.sasl else "PLAINTEXT"),
        )

    async def _sweep(self) -> None:
        """End the sessions and rebalances of classic groups that ran out of time."""
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            try:
                self.ctx.classic.sweep()
            except Exception:  # a bug: say so, and keep sweeping
                log.exception("sweeping the classic consumer groups failed")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await stop_listener(self._server, self._connections)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        try:
            await Connection(self.ctx, reader, writer, peer).run()
        finally:
            self._connections.discard(task)


class Connection:
    def __init__(
        self,
        ctx: Ctx,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Any,
    ) -> None:
        self.ctx = ctx
        self.reader = reader
        self.writer = writer
        self.peer = peer
        # (correlation id, handler task or an already encoded answer) in arrival order.
        self._pending: asyncio.Queue[tuple[Request | None, asyncio.Task[Any] | bytes]] = (
            asyncio.Queue(MAX_IN_FLIGHT)
        )

    async def run(self) -> None:
        # A client certificate (mutual TLS) names the connection's principal until a SASL
        # login, if the listener asks for one, names another; the reader's task copies this
        # context, and the request tasks it starts copy the reader's.
        ssl_object = self.writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            principal.caller.set(der_principal(ssl_object.getpeercert(binary_form=True)))
        reading = asyncio.create_task(self._read_then_drain())
        writing = asyncio.create_task(self._write_loop())
        try:
            # Either side may end the connection: the client closing (after its answers went
            # out), a protocol error, or a write that failed.
            await asyncio.wait({reading, writing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reading, writing):
                task.cancel()
            for task in (reading, writing):
                with suppress(asyncio.CancelledError):
                    await task
            await self._cancel_pending()
            self.writer.close()
            with suppress(Exception):
                await self.writer.wait_closed()

    async def _read_then_drain(self) -> None:
        try:
            await self._read_loop()
            await self._pending.join()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except ProtocolError as e:
            log.warning("Kafka client %s: %s; closing the connection", self.peer, e)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug in reading or logging in: this connection only, with the cause logged.
            log.exception("Kafka client %s: reading failed; closing the connection", self.peer)

    async def _read_loop(self) -> None:
        reader = self.reader
        login = SaslLogin(self.ctx) if self.ctx.sasl else None
        login_by = time.monotonic() + LOGIN_TIMEOUT_S
        while True:
            try:
                if login is None:
                    prefix = await reader.readexactly(4)
                else:
                    prefix = await asyncio.wait_for(
                        reader.readexactly(4), max(0.0, login_by - time.monotonic())
                    )
            except asyncio.IncompleteReadError as e:
                if e.partial:
                    raise ProtocolError("the connection ended inside a size prefix") from None
                return
            except TimeoutError:
                raise ProtocolError(f"no SASL login within {LOGIN_TIMEOUT_S:.0f} s") from None
            size = int.from_bytes(prefix, "big", signed=True)
            limit = MAX_FRAME_BYTES if login is None else MAX_LOGIN_FRAME_BYTES
            if not 0 < size <= limit:
                raise ProtocolError(
                    f"request size {size} is outside 1..{limit} bytes"
                    + (" before the SASL login" if login is not None else "")
                )
            frame = await reader.readexactly(size)
            try:
                request = decode_request(frame, APIS)
            except UnsupportedApiVersions as e:
                answer = encode_response(e.correlation_id, unsupported_version_response())
                await self._pending.put((None, answer))
                continue
            if login is not None:
                step = login.step(request)
                if step is not None:
                    await self._pending.put(
                        (None, encode_response(request.correlation_id, step.response))
                    )
                    if step.close:
                        log.info("Kafka client %s: SASL login failed; closing", self.peer)
                        return
                    if step.principal is not None:
                        principal.caller.set(step.principal)
                        login = None
                    continue
            task: asyncio.Task[Any] = asyncio.create_task(
                request.api.handle(self.ctx, request.body, request.version)
            )
            await self._pending.put((request, task))

    async def _write_loop(self) -> None:
        try:
            while True:
                request, item = await self._pending.get()
                try:
                    if isinstance(item, bytes):
                        data: bytes | None = item
                    else:
                        assert request is not None
                        data = await self._answer(request, item)
                    if data is not None:
                        self.writer.write(data)
                        await self.writer.drain()
                finally:
                    self._pending.task_done()
        except (ConnectionError, ProtocolError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            # One client's connection, not the node's state: storage failures stop the node in
            # the driver (fail-stop); here the connection is closed, with the cause logged.
            log.exception("Kafka client %s: answering failed; closing the connection", self.peer)

    async def _answer(self, request: Request, task: asyncio.Task[Any]) -> bytes | None:
        try:
            response = await task
        except asyncio.CancelledError:
            raise
        except CloseConnection as e:
            log.info("Kafka client %s: %s; closing the connection", self.peer, e)
            raise ProtocolError(str(e)) from None
        except Exception:
            log.exception(
                "Kafka %s v%d from %s (client %r) failed; closing the connection",
                request.api.name,
                request.version,
                self.peer,
                request.client_id,
            )
            raise ProtocolError("handler failed") from None
        if response is None:
            return None
        return encode_response(request.correlation_id, response)

    async def _cancel_pending(self) -> None:
        while not self._pending.empty():
            _, item = self._pending.get_nowait()
            if isinstance(item, asyncio.Task):
                item.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await item
