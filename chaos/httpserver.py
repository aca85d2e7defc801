"""A tiny HTTP/1.1 server on asyncio streams, enough for a JSON control API.

It reads one request at a time per connection (keep-alive, no pipelining beyond that), bodies by
Content-Length only, and answers with whatever the handler returns. Everything is bounded: the
header block (64 KiB), the body (`max_body`), the time to receive a request once it has started
(`request_timeout_s`) and the time an idle keep-alive connection may wait (`idle_timeout_s`).
`stop()` closes the listener and every open connection, so nothing outlives the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["HttpServer", "Request", "Response"]

_log = logging.getLogger(__name__)

_MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    method: str  # upper case
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    path: str  # percent-decoded, without the query string
    query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpServer:
    """Serves `handler` on host:port (port 0 picks a free one; see `address`)."""

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        max_body: int = 1 << 20,
        request_timeout_s: float = 15.0,
        idle_timeout_s: float = 60.0,
    ) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self._max_body = max_body
        self._request_timeout_s = request_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.address: tuple[str, int] = (host, port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve_connection, self._host, self._port, limit=_MAX_HEADER_BYTES
        )
        sockname = self._server.sockets[0].getsockname()
        self.address = (sockname[0], sockname[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()  # since 3.12 this waits for the connections too

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve_requests(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # stop() cancels us; asyncio's stream callback would log a cancelled task
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            # Wait for the first byte of the next request as long as an idle connection may
            # stay open; then the whole request must arrive within request_timeout_s.
            async with asyncio.timeout(self._idle_timeout_s):
                first = await reader.read(1)
            if not first:
                return
            try:
                async with asyncio.timeout(self._request_timeout_s):
                    request = await self._read_request(first, reader)
            except _BadRequest as e:
                await self._write(writer, _error(e.status, str(e)), keep_alive=False)
                return
            keep_alive = _wants_keep_alive(request)
            try:
                response = await self._handler(request)
            except Exception:
                _log.exception("handler failed on %s %s", request.method, request.path)
                response = _error(500, "internal error")
            await self._write(writer, response, keep_alive=keep_alive)
            if not keep_alive:
                return

    async def _read_request(self, first: bytes, reader: asyncio.StreamReader) -> Request:
        try:
            head = first + await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as e:
            raise _BadRequest(431, "request header too large") from e
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "malformed request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(400, "malformed header line")
            headers[name.lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise _BadRequest(501, "chunked request bodies are not supported")
        length_raw = headers.get("content-length", "0")
        if not length_raw.isdigit():
            raise _BadRequest(400, "bad Content-Length")
        length = int(length_raw)
        if length > self._max_body:
            raise _BadRequest(413, "request body too large")
        body = await reader.readexactly(length) if length else b""
        url = urlsplit(target)
        return Request(
            method=method.upper(),
            version=version,
            path=unquote(url.path),
            query=url.query,
            headers=headers,
            body=body,
        )

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, response: Response, *, keep_alive: bool) -> None:
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = "Unknown"
        head = [f"HTTP/1.1 {response.status} {reason}"]
        if response.status != 204:
            head.append(f"Content-Type: {response.content_type}")
            head.append(f"Content-Length: {len(response.body)}")
        head.extend(f"{k}: {v}" for k, v in response.headers.items())
        if not keep_alive:
            head.append("Connection: close")
        payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        writer.write(payload + (response.body if response.status != 204 else b""))
        await writer.drain()


def _wants_keep_alive(request: Request) -> bool:
    connection = request.headers.get("connection", "").lower()
    if request.version == "HTTP/1.0":
        return connection == "keep-alive"
    return connection != "close"


def _error(status: int, message: str) -> Response:
    return Response(status=status, body=message.encode() + b"\n", content_type="text/plain")
