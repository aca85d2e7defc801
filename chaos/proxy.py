"""A small Toxiproxy-compatible TCP fault proxy: `python -m chaos.proxy --listen 127.0.0.1:8474`.

Why: the chaos suite cuts, delays and partitions the links between liferaft nodes and clients
through Toxiproxy's HTTP API. Where no real Toxiproxy server runs (none is packaged on PyPI or
Debian here), this one takes its place; the same client code (for example the `toxiproxy-python`
library) drives either, unchanged.

The API (JSON over HTTP/1.1, default 127.0.0.1:8474) follows Toxiproxy 2.x: GET /version,
GET|POST /proxies, POST /populate, GET|POST|PATCH|DELETE /proxies/{proxy}, POST /reset,
GET|POST /proxies/{proxy}/toxics and GET|POST|PATCH|DELETE /proxies/{proxy}/toxics/{toxic}, with
the same JSON shapes and status codes (201 on create, 204 on delete and reset, 400 bad input,
404 unknown, 409 duplicate; errors are {"error": text, "status": code}).

Theory of operation
-------------------
Each enabled proxy owns one TCP listener. Every accepted client gets its own upstream connection
and two *links*, one per direction: "upstream" carries client -> server bytes and "downstream"
server -> client bytes. A link is two tasks joined by a small bounded queue:

  pump     reads the source in chunks of at most CHUNK_BYTES, stamps each with the time it was
           read, and puts it on the queue (at most QUEUE_CHUNKS chunks; when full, the pump stops
           reading and TCP flow control pushes back on the sender);
  deliver  takes one chunk at a time, runs it through the link's toxics, writes what survives to
           the destination and waits for the destination to drain.

So memory is bounded per connection (queue + the stream and transport buffers), whatever the
toxics do. The toxics of a link are re-read whenever the proxy's toxic set changes: a waiting
chunk is re-decided at once, which is how adding a toxic affects live connections and how
removing one heals them without a reconnect. Per connection and toxic, `toxicity` is rolled once
(when the connection starts, or when the toxic is added or updated), as Toxiproxy does.

What each toxic does to a chunk, in this order:
  timeout     holds the chunk (and an EOF behind it) while the toxic exists; with timeout > 0 the
              whole connection is closed that many ms after the toxic took effect.
  reset_peer  on the first chunk, waits `timeout` ms, then resets both sockets (RST).
  latency     holds the chunk until read time + latency +/- jitter (a pipe, not a throttle).
  limit_data  passes at most `bytes` in total, then closes the connection.
  slicer      writes the chunk in pieces of average_size +/- size_variation, `delay` us apart.
  bandwidth   paces the writes to `rate` KB/s (KB = 1000 bytes), in pieces of at most 100 ms.
  slow_close  delays passing an EOF on by `delay` ms.

One deliberate difference from Toxiproxy: its `timeout` toxic *discards* the bytes it stops,
which corrupts the byte stream once the toxic is removed (an HTTP/2 or gRPC peer then sees
garbage). Ours *holds* them, as a real network partition does (TCP keeps retransmitting): after
the heal the stream resumes intact, and while it lasts the sender's writes back up. A timeout of
0 on one stream is therefore a clean one-way partition.

Disabling a proxy (POST /proxies/{proxy} {"enabled": false}) closes its listener and every one of
its connections: new connections are refused. Enabling it listens again on the same address.

Addresses: a listen address without a host ("":port) binds 127.0.0.1, never all interfaces, and a
proxy created without `listen` gets 127.0.0.1 and a free port; only an address given explicitly
is bound elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from chaos.httpserver import HttpServer, Request, Response
from chaos.toxics import (
    STREAMS,
    ApiError,
    Stream,
    Toxic,
    parse_new_toxic,
    parse_toxic_update,
)

__all__ = [
    "DEFAULT_API_ADDRESS",
    "VERSION",
    "ToxiproxyServer",
    "format_hostport",
    "main",
    "parse_hostport",
]

_log = logging.getLogger(__name__)

VERSION = "2.12.0+liferaft"  # the Toxiproxy API version we follow, marked as ours
DEFAULT_API_ADDRESS = "127.0.0.1:8474"
DEFAULT_LISTEN = "127.0.0.1:0"

CHUNK_BYTES = 32 * 1024  # largest read from a socket
QUEUE_CHUNKS = 16  # chunks a link may hold between its pump and its delivery
CONNECT_TIMEOUT_S = 10.0  # to open the upstream connection of an accepted client
MAX_CONNECTIONS = 1024  # per proxy; more clients are refused


def parse_hostport(text: object, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """("host", port) from "host:port", "[v6]:port" or ":port" (which means `default_host`)."""
    if not isinstance(text, str):
        raise ValueError("address must be a string")
    host, sep, port_raw = text.rpartition(":")
    if not sep or not port_raw.isdigit() or int(port_raw) > 65535:
        raise ValueError(f"address {text!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"address {text!r}: an IPv6 host needs brackets")
    return host or default_host, int(port_raw)


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---------------------------------------------------------------------------------------------
# Links and connections


@dataclass(slots=True)
class _Chunk:
    data: bytes
    read_at: float  # loop.time() when the pump read it
    delays: dict[tuple[str, int, int], float] = field(default_factory=dict)  # latency memo


class _ToxicState:
    """One toxic as applied to one link: whether it is active there, and its counters."""

    __slots__ = ("active", "sent", "timer", "toxic")

    def __init__(self, toxic: Toxic, active: bool) -> None:
        self.toxic = toxic
        self.active = active  # the toxicity roll for this link
        self.sent = 0  # limit_data: bytes passed so far
        self.timer: asyncio.TimerHandle | None = None  # timeout > 0: closes the connection

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Link:
    """One direction of one proxied connection: source -> toxics -> destination."""

    def __init__(
        self,
        conn: _Connection,
        stream: Stream,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        toxics: Sequence[Toxic],
        rng: random.Random,
    ) -> None:
        self._conn = conn
        self.stream = stream
        self._src = src
        self._dst = dst
        self._rng = rng
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[_Chunk | None] = asyncio.Queue(maxsize=QUEUE_CHUNKS)
        self._states: dict[str, _ToxicState] = {}
        self._changed = asyncio.Event()  # set whenever the toxic chain changes
        self._paced_until = 0.0  # bandwidth: when the next piece may be written
        self.set_toxics(toxics)

    # -- toxic chain

    def set_toxics(self, toxics: Sequence[Toxic]) -> None:
        """Adopt the proxy's toxics for this stream; unchanged toxics keep their state."""
        states: dict[str, _ToxicState] = {}
        for toxic in toxics:
            old = self._states.get(toxic.name)
            if old is not None and old.toxic is toxic:
                states[toxic.name] = old
                continue
            if old is not None:
                old.cancel()
            states[toxic.name] = self._new_state(toxic)
        for name, old in self._states.items():
            if name not in states:
                old.cancel()
        self._states = states
        self._changed.set()

    def _new_state(self, toxic: Toxic) -> _ToxicState:
        state = _ToxicState(toxic, self._rng.random() < toxic.toxicity)
        if state.active and toxic.type == "timeout" and toxic.attr("timeout") > 0:
            state.timer = self._loop.call_later(toxic.attr("timeout") / 1000, self._conn.abort)
        return state

    def _chain(self) -> list[Toxic]:
        return [s.toxic for s in self._states.values() if s.active]

    def cancel_timers(self) -> None:
        for state in self._states.values():
            state.cancel()

    async def _wait_changed(self, timeout_s: float | None) -> bool:
        """Wait until the chain changes (True) or `timeout_s` passes (False)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()
        except TimeoutError:
            return False
        return True

    # -- data path

    async def run(self) -> None:
        """Forward until the source's EOF has been passed on (or the connection dies)."""
        pump = asyncio.create_task(self._pump())
        try:
            while True:
                chunk = await self._queue.get()
                if chunk is None:
                    await self._pass_eof()
                    return
                if not await self._deliver(chunk):
                    return
        except (ConnectionError, OSError, RuntimeError) as e:
            _log.debug("%s link: %r", self.stream, e)
            self._conn.abort()
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _pump(self) -> None:
        try:
            while True:
                data = await self._src.read(CHUNK_BYTES)
                if not data:
                    await self._queue.put(None)
                    return
                await self._queue.put(_Chunk(data, self._loop.time()))
        except (ConnectionError, OSError) as e:
            _log.debug("%s pump: %r", self.stream, e)
            self._conn.abort()

    async def _hold(self, chunk: _Chunk | None) -> bool:
        """Wait while the gate toxics hold this chunk (None: the EOF). False: connection ends."""
        while True:
            self._changed.clear()
            chain = self._chain()
            if any(t.type == "timeout" for t in chain):
                await self._changed.wait()
                continue
            if chunk is None:
                return True
            reset = next((t for t in chain if t.type == "reset_peer"), None)
            if reset is not None:
                await asyncio.sleep(reset.attr("timeout") / 1000)
                self._conn.abort(reset=True)
                return False
            delay = max(
                (self._latency_s(t, chunk) for t in chain if t.type == "latency"), default=0
            )
            wait = chunk.read_at + delay - self._loop.time()
            if wait > 0 and await self._wait_changed(wait):
                continue
            return True

    def _latency_s(self, toxic: Toxic, chunk: _Chunk) -> float:
        # Memoized per chunk so that re-deciding a held chunk does not re-roll its jitter.
        key = (toxic.name, toxic.attr("latency"), toxic.attr("jitter"))
        if key not in chunk.delays:
            jitter = toxic.attr("jitter")
            ms = toxic.attr("latency") + (self._rng.uniform(-jitter, jitter) if jitter else 0)
            chunk.delays[key] = max(0.0, ms / 1000)
        return chunk.delays[key]

    async def _deliver(self, chunk: _Chunk) -> bool:
        if not await self._hold(chunk):
            return False
        data = chunk.data
        close_after = False
        for state in self._states.values():
            if state.active and state.toxic.type == "limit_data":
                room = max(0, state.toxic.attr("bytes") - state.sent)
                if len(data) >= room:
                    data, close_after = data[:room], True
                state.sent += len(data)
        while data:
            self._changed.clear()
            chain = self._chain()
            rates = [t.attr("rate") for t in chain if t.type == "bandwidth" and t.attr("rate") > 0]
            rate = min(rates, default=0) * 1000  # bytes per second
            if rate:
                wait = self._paced_until - self._loop.time()
                if wait > 0:
                    await self._wait_changed(wait)
                    continue  # re-read the chain: the toxic may be gone or changed
            size = len(data)
            slicer = next((t for t in chain if t.type == "slicer" and t.attr("average_size")), None)
            if slicer is not None:
                variation = slicer.attr("size_variation")
                piece = slicer.attr("average_size") + self._rng.randint(-variation, variation)
                size = min(size, max(1, piece))
            if rate:
                size = min(size, max(1, rate // 10))  # at most 100 ms worth at a time
            piece_bytes, data = data[:size], data[size:]
            self._dst.write(piece_bytes)
            await self._dst.drain()
            if rate:
                self._paced_until = max(self._paced_until, self._loop.time()) + size / rate
            if slicer is not None and data and slicer.attr("delay"):
                await self._wait_changed(slicer.attr("delay") / 1_000_000)
        if close_after:
            self._conn.close()
            return False
        return True

    async def _pass_eof(self) -> None:
        if not await self._hold(None):
            return
        eof_at = self._loop.time()
        while True:
            self._changed.clear()
            delays = [t.attr("delay") for t in self._chain() if t.type == "slow_close"]
            wait = eof_at + max(delays, default=0) / 1000 - self._loop.time()
            if wait > 0 and await self._wait_changed(wait):
                continue
            break
        if self._dst.can_write_eof():
            self._dst.write_eof()  # half-close: the other direction may still flow
        else:
            self._conn.close()


class _Connection:
    """A client connection and its upstream connection, joined by two links."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        toxics: dict[Stream, list[Toxic]],
        rng: random.Random,
    ) -> None:
        self._writers = (client[1], upstream[1])
        self._task: asyncio.Task[Any] | None = None
        self._ending = False
        self.links: dict[Stream, _Link] = {
            "upstream": _Link(self, "upstream", client[0], upstream[1], toxics["upstream"], rng),
            "downstream": _Link(
                self, "downstream", upstream[0], client[1], toxics["downstream"], rng
            ),
        }

    async def run(self) -> None:
        self._task = asyncio.current_task()
        try:
            await asyncio.gather(*(link.run() for link in self.links.values()))
        finally:
            for link in self.links.values():
                link.cancel_timers()
            if not self._ending:
                self._ending = True
                for writer in self._writers:
                    writer.close()

    def close(self) -> None:
        """End the connection after flushing what was already written (FIN)."""
        self._end(lambda w: w.close())

    def abort(self, *, reset: bool = False) -> None:
        """End the connection now, dropping buffered bytes; with `reset`, send RST."""

        def kill(writer: asyncio.StreamWriter) -> None:
            if reset:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
            writer.transport.abort()

        self._end(kill)

    def _end(self, how: Any) -> None:
        if self._ending:
            return
        self._ending = True
        for writer in self._writers:
            how(writer)
        for link in self.links.values():
            link.cancel_timers()
        if self._task is not None and not self._task.done():
            self._task.cancel()


# ---------------------------------------------------------------------------------------------
# Proxies


class _Proxy:
    """One named proxy: a listener, its connections and its toxics."""

    def __init__(self, name: str, listen: str, upstream: str, rng: random.Random) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.toxics: dict[str, Toxic] = {}  # in the order they were added
        self._rng = rng
        self._listener: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self._toxics_by_stream_order()],
        }

    def _toxics_by_stream_order(self) -> list[Toxic]:
        return [t for stream in STREAMS for t in self.toxics.values() if t.stream == stream]

    async def start(self) -> None:
        if self.enabled:
            return
        host, port = parse_hostport(self.listen)
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            if not infos:
                raise OSError(f"cannot resolve {host!r}")
            # One socket, IPv4 first: "localhost" must not silently become two listeners.
            infos.sort(key=lambda info: info[0] != socket.AF_INET)
            ip = str(infos[0][4][0])
            self._listener = await asyncio.start_server(self._accept, ip, port)
        except OSError as e:
            raise ApiError(500, f"listen {self.listen}: {e.strerror or e}") from e
        bound = self._listener.sockets[0].getsockname()
        self.listen = format_hostport(bound[0], bound[1])
        self.enabled = True
        _log.info("proxy %s listening on %s -> %s", self.name, self.listen, self.upstream)

    async def stop(self) -> None:
        """Stop listening and close every connection (a full cut)."""
        if not self.enabled:
            return
        self.enabled = False
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        for conn in list(self._connections):
            conn.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if listener is not None:
            await listener.wait_closed()
        _log.info("proxy %s stopped", self.name)

    async def update(self, *, listen: str, upstream: str, enabled: bool) -> None:
        if listen != self.listen or upstream != self.upstream:
            await self.stop()  # a new address drops every connection, as in Toxiproxy
            self.listen, self.upstream = listen, upstream
        if enabled:
            await self.start()
        else:
            await self.stop()

    def set_toxic(self, toxic: Toxic) -> None:
        self.toxics[toxic.name] = toxic
        self._push_toxics(toxic.stream)

    def remove_toxic(self, name: str) -> None:
        toxic = self.toxics.pop(name)
        self._push_toxics(toxic.stream)

    def reset_toxics(self) -> None:
        self.toxics.clear()
        for stream in STREAMS:
            self._push_toxics(stream)

    def _stream_toxics(self) -> dict[Stream, list[Toxic]]:
        return {s: [t for t in self.toxics.values() if t.stream == s] for s in STREAMS}

    def _push_toxics(self, stream: Stream) -> None:
        toxics = self._stream_toxics()[stream]
        for conn in self._connections:
            conn.links[stream].set_toxics(toxics)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn: _Connection | None = None
        try:
            if not self.enabled or len(self._connections) >= MAX_CONNECTIONS:
                return
            host, port = parse_hostport(self.upstream)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    upstream = await asyncio.open_connection(host, port)
            except (OSError, TimeoutError) as e:
                _log.info("proxy %s: upstream %s unreachable: %r", self.name, self.upstream, e)
                return
            if not self.enabled:  # disabled while we were connecting
                upstream[1].transport.abort()
                return
            conn = _Connection((reader, writer), upstream, self._stream_toxics(), self._rng)
            self._connections.add(conn)
            await conn.run()
        except asyncio.CancelledError:
            # We cancel these tasks ourselves (abort, stop). End quietly: asyncio's stream
            # callback would log a cancelled task as an error.
            pass
        finally:
            if conn is None:
                writer.transport.abort()
            else:
                self._connections.discard(conn)
            self._tasks.discard(task)


# ---------------------------------------------------------------------------------------------
# The API server


def _json_response(status: int, payload: object) -> Response:
    return Response(status=status, body=json.dumps(payload).encode() + b"\n")


def _api_error(e: ApiError) -> Response:
    return _json_response(e.status, {"error": e.message, "status": e.status})


def _decode(body: bytes) -> object:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError.bad_body(str(e) if body else "EOF") from e


_NOT_FOUND = Response(status=404, body=b"404 page not found\n", content_type="text/plain")
_BAD_METHOD = Response(status=405, body=b"method not allowed\n", content_type="text/plain")


@dataclass(frozen=True, slots=True)
class _ProxyInput:
    name: str
    listen: str
    upstream: str
    enabled: bool


class ToxiproxyServer:
    """The proxy server: its HTTP API and all its proxies.

    Use `async with ToxiproxyServer(port=0) as server:` (or `start()` / `stop()`); `server.url`
    is the API's base URL. `stop()` closes the API and every proxy and connection.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 8474, *, seed: int | None = None
    ) -> None:
        self._http = HttpServer(self._handle, host, port)
        self._rng = random.Random(seed)
        self._proxies: dict[str, _Proxy] = {}
        self._lock = asyncio.Lock()  # one API mutation at a time

    @property
    def address(self) -> tuple[str, int]:
        return self._http.address

    @property
    def url(self) -> str:
        return "http://" + format_hostport(*self.address)

    def proxy_listen(self, name: str) -> str:
        """The listen address of proxy `name` (for in-process callers)."""
        return self._proxies[name].listen

    async def start(self) -> None:
        await self._http.start()
        _log.info("toxiproxy API listening on %s", self.url)

    async def stop(self) -> None:
        await self._http.stop()
        async with self._lock:
            for proxy in list(self._proxies.values()):
                await proxy.stop()
            self._proxies.clear()

    async def __aenter__(self) -> ToxiproxyServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def populate(self, body: object) -> list[dict[str, Any]]:
        """Create or replace the proxies of a /populate body; returns them as JSON."""
        async with self._lock:
            return await self._populate(body)

    # -- routing

    async def _handle(self, request: Request) -> Response:
        if request.headers.get("user-agent", "").startswith("Mozilla/"):
            # As Toxiproxy: a web page must not be able to drive a local fault proxy.
            return Response(status=403, body=b"User agent not allowed\n", content_type="text/plain")
        parts = [p for p in request.path.split("/") if p]
        method = request.method
        try:
            async with self._lock:
                return await self._route(method, parts, request.body)
        except ApiError as e:
            return _api_error(e)

    async def _route(self, method: str, parts: list[str], body: bytes) -> Response:
        match parts:
            case ["version"]:
                if method != "GET":
                    return _BAD_METHOD
                return Response(
                    status=200,
                    body=json.dumps({"version": VERSION}).encode() + b"\n",
                    content_type="application/json;charset=utf-8",
                )
            case ["reset"]:
                if method != "POST":
                    return _BAD_METHOD
                for proxy in self._proxies.values():
                    await proxy.start()
                    proxy.reset_toxics()
                return Response(status=204)
            case ["populate"]:
                if method != "POST":
                    return _BAD_METHOD
                return _json_response(201, {"proxies": await self._populate(_decode(body))})
            case ["proxies"]:
                if method == "GET":
                    return _json_response(
                        200, {name: p.to_json() for name, p in self._proxies.items()}
                    )
                if method == "POST":
                    return _json_response(201, await self._create(_decode(body)))
                return _BAD_METHOD
            case ["proxies", name]:
                proxy = self._proxy(name)
                if method == "GET":
                    return _json_response(200, proxy.to_json())
                if method in ("POST", "PATCH"):
                    await self._update(proxy, _decode(body))
                    return _json_response(200, proxy.to_json())
                if method == "DELETE":
                    await proxy.stop()
                    del self._proxies[name]
                    return Response(status=204)
                return _BAD_METHOD
            case ["proxies", name, "toxics"]:
                proxy = self._proxy(name)
                if method == "GET":
                    return _json_response(
                        200, [t.to_json() for t in proxy._toxics_by_stream_order()]
                    )
                if method == "POST":
                    added = parse_new_toxic(_decode(body), proxy.toxics)
                    proxy.set_toxic(added)
                    _log.info("proxy %s: added toxic %s", name, added)
                    return _json_response(200, added.to_json())
                return _BAD_METHOD
            case ["proxies", name, "toxics", toxic_name]:
                proxy = self._proxy(name)
                toxic = proxy.toxics.get(toxic_name)
                if toxic is None:
                    raise ApiError(404, "toxic not found")
                if method == "GET":
                    return _json_response(200, toxic.to_json())
                if method in ("POST", "PATCH"):
                    updated = parse_toxic_update(toxic, _decode(body))
                    proxy.set_toxic(updated)
                    _log.info("proxy %s: updated toxic %s", name, updated)
                    return _json_response(200, updated.to_json())
                if method == "DELETE":
                    proxy.remove_toxic(toxic_name)
                    _log.info("proxy %s: removed toxic %s", name, toxic_name)
                    return Response(status=204)
                return _BAD_METHOD
        return _NOT_FOUND

    def _proxy(self, name: str) -> _Proxy:
        proxy = self._proxies.get(name)
        if proxy is None:
            raise ApiError(404, "proxy not found")
        return proxy

    # -- handlers

    @staticmethod
    def _proxy_input(
        raw: object, *, where: str = "", defaults: _Proxy | None = None
    ) -> _ProxyInput:
        """Validate a proxy object of a create, update or populate body."""
        if not isinstance(raw, dict):
            raise ApiError.bad_body("expected a JSON object" + where)
        name = defaults.name if defaults else raw.get("name", "")
        upstream = raw.get("upstream", defaults.upstream if defaults else "")
        listen = raw.get("listen", defaults.listen if defaults else DEFAULT_LISTEN)
        enabled = raw.get("enabled", defaults.enabled if defaults else True)
        if not isinstance(name, str) or not isinstance(upstream, str):
            raise ApiError.bad_body("name and upstream must be strings" + where)
        if not isinstance(listen, str) or not isinstance(enabled, bool):
            raise ApiError.bad_body("listen must be a string and enabled a boolean" + where)
        if not name:
            raise ApiError(400, "missing required field: name" + where)
        if not upstream:
            raise ApiError(400, "missing required field: upstream" + where)
        listen = listen or DEFAULT_LISTEN
        try:
            parse_hostport(listen)
            if parse_hostport(upstream)[1] == 0:
                raise ValueError("upstream port must not be 0")
        except ValueError as e:
            raise ApiError.bad_body(str(e) + where) from e
        return _ProxyInput(name=name, listen=listen, upstream=upstream, enabled=enabled)

    async def _create(self, body: object) -> dict[str, Any]:
        spec = self._proxy_input(body)
        if spec.name in self._proxies:
            raise ApiError(409, "proxy already exists")
        proxy = await self._new_proxy(spec)
        return proxy.to_json()

    async def _new_proxy(self, spec: _ProxyInput) -> _Proxy:
        proxy = _Proxy(spec.name, spec.listen, spec.upstream, self._rng)
        if spec.enabled:
            await proxy.start()  # only a proxy that could listen is added
        self._proxies[spec.name] = proxy
        return proxy

    async def _update(self, proxy: _Proxy, body: object) -> None:
        spec = self._proxy_input(body, defaults=proxy)  # a name in the body is ignored
        await proxy.update(listen=spec.listen, upstream=spec.upstream, enabled=spec.enabled)

    async def _populate(self, body: object) -> list[dict[str, Any]]:
        if not isinstance(body, list):
            raise ApiError.bad_body("expected a JSON array of proxies")
        # Validate the whole request before changing anything.
        specs = [self._proxy_input(raw, where=f" at proxy {i + 1}") for i, raw in enumerate(body)]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ApiError.bad_body("duplicate proxy name in populate request")
        result: list[_Proxy] = []
        for spec in specs:
            existing = self._proxies.get(spec.name)
            if existing is not None and (
                existing.listen != spec.listen or existing.upstream != spec.upstream
            ):
                await existing.stop()
                del self._proxies[spec.name]
                existing = None
            result.append(existing if existing is not None else await self._new_proxy(spec))
        return [p.to_json() for p in result]


# ---------------------------------------------------------------------------------------------
# Command line


async def _serve(listen: str, config: str | None, seed: int | None) -> None:
    host, port = parse_hostport(listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ToxiproxyServer(host, port, seed=seed) as server:
        if config is not None:
            with open(config, encoding="utf-8") as f:
                proxies = await server.populate(json.load(f))
            _log.info("populated %d proxies from %s", len(proxies), config)
        print(f"toxiproxy API listening on {format_hostport(*server.address)}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaos.proxy",
        description="A Toxiproxy-compatible TCP fault proxy (HTTP API as Toxiproxy 2.x). "
        "Runs in the foreground until SIGINT or SIGTERM.",
    )
    parser.add_argument(
        "--listen",
        default=DEFAULT_API_ADDRESS,
        help=f"address of the HTTP API (default {DEFAULT_API_ADDRESS}; port 0 picks a free one)",
    )
    parser.add_argument("--config", help="a JSON array of proxies to create at start, as /populate")
    parser.add_argument("--seed", type=int, help="seed for toxicity and jitter rolls")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(_serve(args.listen, args.config, args.seed))
    except (ValueError, OSError, ApiError) as e:
        print(f"chaos.proxy: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
