"""The Toxiproxy-compatible fault proxy (chaos/proxy.py), driven as the chaos suite drives it.

Everything runs in-process on free loopback ports: an upstream (an echo server, or a server whose
connections the test holds), our proxy server, and the real `toxiproxy-python` client (it is
synchronous, so it runs in a worker thread) or raw HTTP. Timing is only ever asserted as a lower
bound (a toxic that adds delay adds at least that much); every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from chaos.proxy import ToxiproxyServer, format_hostport, parse_hostport

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 15.0  # bound on any single wait for something that must happen


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    """Address of an echo server: echoes until EOF, then closes."""
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield format_hostport(*server.sockets[0].getsockname()[:2])
    server.close()


class HeldServer:
    """An upstream whose accepted connections the test gets to hold, read and write."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.server: asyncio.Server | None = None
        self.address = ""

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.accepted.put((reader, writer))

    async def next(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(self.accepted.get(), WAIT_S)


@pytest.fixture
async def held() -> AsyncIterator[HeldServer]:
    h = HeldServer()
    h.server = await asyncio.start_server(h._on_connect, "127.0.0.1", 0)
    h.address = format_hostport(*h.server.sockets[0].getsockname()[:2])
    yield h
    while not h.accepted.empty():
        h.accepted.get_nowait()[1].close()
    h.server.close()


@pytest.fixture
async def proxy_server() -> AsyncIterator[ToxiproxyServer]:
    async with ToxiproxyServer("127.0.0.1", 0, seed=7) as server:
        yield server


@pytest.fixture
def client(proxy_server: ToxiproxyServer) -> Toxiproxy:
    """The real toxiproxy-python client, pointed at our server."""
    c = Toxiproxy()
    c.update_api_consumer(*proxy_server.address)
    return c


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking toxiproxy-python call off the event loop (the proxy runs on it)."""
    return await asyncio.wait_for(asyncio.to_thread(fn, *args, **kwargs), WAIT_S)


def _http(
    address: tuple[str, int], method: str, path: str, body: Any, headers: dict[str, str]
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(*address, timeout=WAIT_S)
    try:
        payload = body if isinstance(body, bytes | None) else json.dumps(body).encode()
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            data = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            data = raw.decode()
        return resp.status, data
    finally:
        conn.close()


async def api(
    server: ToxiproxyServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One raw HTTP request to the API: (status, decoded JSON or text)."""
    return await asyncio.wait_for(
        asyncio.to_thread(_http, server.address, method, path, body, headers or {}), WAIT_S
    )


async def connect(listen: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = parse_hostport(listen)
    return await asyncio.wait_for(asyncio.open_connection(host, port), WAIT_S)


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), WAIT_S)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), WAIT_S)


async def assert_silent(reader: asyncio.StreamReader, for_s: float = 0.3) -> None:
    """Nothing arrives on `reader` for `for_s` (the connection stays open, too)."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), for_s)


async def create(client: Toxiproxy, name: str, upstream: str) -> Any:
    return await call(client.create, upstream=upstream, name=name, listen="127.0.0.1:0")


def refused(listen: str) -> bool:
    host, port = parse_hostport(listen)
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


# ---------------------------------------------------------------------------------------------
# Forwarding and the API through the real client


async def test_client_creates_a_proxy_that_forwards(
    proxy_server: ToxiproxyServer, client: Toxiproxy, echo: str
) -> None:
    version = await call(client.version)
    assert json.loads(version)["version"].startswith("2.")
    proxy = await create(client, "echo", echo)
    assert proxy.name == "echo" and proxy.upstream == echo and proxy.enabled
    host, port = parse_hostport(proxy.listen)
    assert host == "127.0.0.1" and port != 0  # port 0 resolved to the real one

    reader, writer = await connect(proxy.listen)
    payload = os.urandom(200_000)  # several chunks each way
    assert await roundtrip(reader, writer, payload) == payload
    writer.write_eof()  # half-close passes through; the echo server then closes
    assert await read_to_eof(reader) == b""
    writer.close()

    proxies = await call(client.proxies)
    assert set(proxies) == {"echo"} and proxies["echo"].listen == proxy.listen
    assert (await call(client.get_proxy, "echo")).upstream == echo
    assert await call(client.get_proxy, "missing") is None


async def test_disable_cuts_every_connection_and_enable_heals(
    proxy_server: ToxiproxyServer, client: Toxiproxy, echo: str
) -> None:
    proxy = await create(client, "echo", echo)
    reader, writer = await connect(proxy.listen)
    assert await roundtrip(reader, writer, b"before") == b"before"

    await call(proxy.disable)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        # The open connection is closed (EOF or reset), not left hanging.
        await roundtrip(reader, writer, b"x")
    assert refused(proxy.listen)  # and new connections are refused
    assert (await call(client.get_proxy, "echo")).enabled is False
    writer.close()

    await call(proxy.enable)
    again = await call(client.get_proxy, "echo")
    assert again.enabled and again.listen == proxy.listen  # same address after the heal
    reader, writer = await connect(proxy.listen)
    assert await roundtrip(reader, writer, b"after") == b"after"
    writer.close()


async def test_destroy_removes_the_proxy_and_its_listener(
    proxy_server: ToxiproxyServer, client: Toxiproxy, echo: str
) -> None:
    proxy = await create(client, "echo", echo)
    assert await call(proxy.destroy)
    assert refused(proxy.listen)
    assert await call(client.proxies) == {}
    status, _ = await api(proxy_server, "GET", "/proxies/echo")
    assert status == 404


async def test_client_populate_creates_keeps_and_replaces(
    proxy_server: ToxiproxyServer, client: Toxiproxy, echo: str, held: HeldServer
) -> None:
    created = await call(
        client.populate, [{"name": "a", "upstream": echo, "listen": "127.0.0.1:0"}]
    )
    assert [p.name for p in created] == ["a"]
    listen = created[0].listen
    await call(created[0].add_toxic, type="latency", attributes={"latency": 10})

    # Same name, listen and upstream: left alone (its toxic stays).
    status, body = await api(
        proxy_server, "POST", "/populate", [{"name": "a", "upstream": echo, "listen": listen}]
    )
    assert status == 201
    assert [p["name"] for p in body["proxies"]] == ["a"]
    assert [t["name"] for t in body["proxies"][0]["toxics"]] == ["latency_downstream"]

    # A new upstream replaces the proxy (toxics gone), on the same listen address.
    status, body = await api(
        proxy_server,
        "POST",
        "/populate",
        [{"name": "a", "upstream": held.address, "listen": listen}],
    )
    assert status == 201
    (proxy,) = body["proxies"]
    assert proxy["upstream"] == held.address and proxy["toxics"] == [] and proxy["enabled"]
    assert proxy["listen"] == listen


async def test_reset_enables_all_proxies_and_removes_all_toxics(
    proxy_server: ToxiproxyServer, client: Toxiproxy, echo: str
) -> None:
    a = await create(client, "a", echo)
    b = await create(client, "b", echo)
    await call(a.disable)
    await call(b.add_toxic, type="timeout", stream="upstream", attributes={"timeout": 0})
    reader, writer = await connect(b.listen)
    writer.write(b"held")
    await writer.drain()
    await assert_silent(reader)

    assert await call(client.reset)
    proxies = await call(client.proxies)
    assert all(p.enabled for p in proxies.values())
    assert await call(proxies["b"].toxics) == {}
    # The held bytes go through on the existing connection once the toxic is gone.
    assert await asyncio.wait_for(reader.readexactly(4), WAIT_S) == b"held"
    writer.close()
    reader_a, writer_a = await connect(a.listen)
    assert await roundtrip(reader_a, writer_a, b"a") == b"a"
    writer_a.close()


# ---------------------------------------------------------------------------------------------
# Toxics


async def test_latency_delays_each_direction_by_at_least_its_value(
    proxy_server: ToxiproxyServer, client: Toxiproxy, echo: str
) -> None:
    proxy = await create(client, "echo", echo)
    reader, writer = await connect(proxy.listen)  # opened before the toxic: it applies anyway
    assert await roundtrip(reader, writer, b"warm") == b"warm"

    await call(proxy.add_toxic, type="latency", stream="downstream", attributes={"latency": 300})
    await call(proxy.add_toxic, type="latency", stream="upstream", attributes={"latency": 200})
    toxics = await call(proxy.toxics)
    assert set(toxics) == {"latency_downstream", "latency_upstream"}
    assert toxics["latency_downstream"].attributes == {"latency": 300, "jitter": 0}

    start = time.monotonic()
    assert await roundtrip(reader, writer, b"ping") == b"ping"
    assert time.monotonic() - start >= 0.5 - 0.01  # 200 ms up + 300 ms down, at least

    await call(proxy.destroy_toxic, "latency_upstream")
    await call(proxy.destroy_toxic, "latency_downstream")
    assert await call(proxy.toxics) == {}
    assert await roundtrip(reader, writer, b"pong") == b"pong"
    writer.close()


async def test_latency_with_jitter_stays_above_latency_minus_jitter(
    proxy_server: ToxiproxyServer, client: Toxiproxy, echo: str
) -> None:
    proxy = await create(client, "echo", echo)
    await call(proxy.add_toxic, type="latency", attributes={"latency": 300, "jitter": 100})
    reader, writer = await connect(proxy.listen)
    for _ in range(3):
        start = time.monotonic()
        assert await roundtrip(reader, writer, b"j") == b"j"
        assert time.monotonic() - start >= 0.2 - 0.01
    writer.close()


async def test_bandwidth_limits_throughput(
    proxy_server: ToxiproxyServer, client: Toxiproxy, echo: str
) -> None:
    proxy = await create(client, "echo", echo)
    await call(proxy.add_toxic, type="bandwidth", attributes={"rate": 100})  # 100 KB/s down
    reader, writer = await connect(proxy.listen)
    payload = os.urandom(100_000)
    start = time.monotonic()
    assert await roundtrip(reader, writer, payload) == payload
    # 100 kB at 100 kB/s, of which at most one 100 ms slice goes out at once: >= 0.9 s.
    # Asserted loosely: only that the limit holds back the data.
    assert time.monotonic() - start >= 0.7
    writer.close()


async def test_timeout_zero_on_one_stream_is_a_one_way_partition(
    proxy_server: ToxiproxyServer, client: Toxiproxy, held: HeldServer
) -> None:
    proxy = await create(client, "p", held.address)
    c_reader, c_writer = await connect(proxy.listen)
    s_reader, s_writer = await held.next()

    await call(proxy.add_toxic, type="timeout", stream="upstream", attributes={"timeout": 0})
    c_writer.write(b"client->server")
    await c_writer.drain()
    await assert_silent(s_reader)  # client -> server stopped...
    s_writer.write(b"server->client")
    await s_writer.drain()
    got = await asyncio.wait_for(c_reader.readexactly(14), WAIT_S)
    assert got == b"server->client"  # ...server -> client still flows, same connection

    await call(proxy.destroy_toxic, "timeout_upstream")  # heal without reconnecting
    got = await asyncio.wait_for(s_reader.readexactly(14), WAIT_S)
    assert got == b"client->server"  # held, not dropped: the stream is intact
    c_writer.write(b"more")
    await c_writer.drain()
    assert await asyncio.wait_for(s_reader.readexactly(4), WAIT_S) == b"more"
    c_writer.close()
    s_writer.close()


async def test_timeout_downstream_blocks_only_server_to_client(
    proxy_server: ToxiproxyServer, client: Toxiproxy, held: HeldServer
) -> None:
    proxy = await create(client, "p", held.address)
    await call(proxy.add_toxic, type="timeout", stream="downstream", attributes={"timeout": 0})
    c_reader, c_writer = await connect(proxy.listen)  # toxic applies to new connections too
    s_reader, s_writer = await held.next()
    s_writer.write(b"down")
    await s_writer.drain()
    await assert_silent(c_reader)
    c_writer.write(b"up")
    await c_writer.drain()
    assert await asyncio.wait_for(s_reader.readexactly(2), WAIT_S) == b"up"
    await call(proxy.destroy_toxic, "timeout_downstream")
    assert await asyncio.wait_for(c_reader.readexactly(4), WAIT_S) == b"down"
    c_writer.close()
    s_writer.close()


async def test_timeout_with_a_duration_closes_the_connection(
    proxy_server: ToxiproxyServer, client: Toxiproxy, held: HeldServer
) -> None:
    proxy = await create(client, "p", held.address)
    c_reader, c_writer = await connect(proxy.listen)
    s_reader, s_writer = await held.next()
    start = time.monotonic()
    await call(proxy.add_toxic, type="timeout", stream="upstream", attributes={"timeout": 200})
    c_writer.write(b"lost")
    await c_writer.drain()
    assert await read_to_eof(s_reader) == b""  # the upstream side is closed, data never came
    with contextlib.suppress(ConnectionResetError):  # unread bytes at close may mean a reset
        assert await read_to_eof(c_reader) == b""  # the client side is closed as well
    assert time.monotonic() - start >= 0.2 - 0.01
    c_writer.close()
    s_writer.close()


async def test_reset_peer_resets_on_data(
    proxy_server: ToxiproxyServer, client: Toxiproxy, echo: str
) -> None:
    proxy = await create(client, "echo", echo)
    await call(proxy.add_toxic, type="reset_peer", stream="upstream", attributes={"timeout": 0})
    reader, writer = await connect(proxy.listen)
    writer.write(b"boom")
    await writer.drain()
    with pytest.raises(ConnectionResetError):
        await read_to_eof(reader)
    writer.close()


async def test_limit_data_closes_after_the_limit(
    proxy_server: ToxiproxyServer, client: Toxiproxy, echo: str
) -> None:
    proxy = await create(client, "echo", echo)
    await call(proxy.add_toxic, type="limit_data", attributes={"bytes": 10})
    reader, writer = await connect(proxy.listen)
    writer.write(bytes(range(100)))
    await writer.drain()
    assert await read_to_eof(reader) == bytes(range(10))
    writer.close()


async def test_slicer_keeps_the_stream_intact(
    proxy_server: ToxiproxyServer, client: Toxiproxy, echo: str
) -> None:
    proxy = await create(client, "echo", echo)
    await call(
        proxy.add_toxic,
        type="slicer",
        attributes={"average_size": 7, "size_variation": 3, "delay": 50},
    )
    reader, writer = await connect(proxy.listen)
    payload = os.urandom(3000)
    assert await roundtrip(reader, writer, payload) == payload
    writer.close()


async def test_slow_close_delays_the_eof(
    proxy_server: ToxiproxyServer, client: Toxiproxy, held: HeldServer
) -> None:
    proxy = await create(client, "p", held.address)
    await call(proxy.add_toxic, type="slow_close", attributes={"delay": 300})
    c_reader, c_writer = await connect(proxy.listen)
    _, s_writer = await held.next()
    s_writer.write(b"bye")
    await s_writer.drain()
    start = time.monotonic()
    s_writer.close()
    assert await read_to_eof(c_reader) == b"bye"
    assert time.monotonic() - start >= 0.3 - 0.01
    c_writer.close()


async def test_toxicity_zero_never_applies_and_one_always_does(
    proxy_server: ToxiproxyServer, client: Toxiproxy, echo: str
) -> None:
    proxy = await create(client, "echo", echo)
    await call(
        proxy.add_toxic,
        type="timeout",
        name="never",
        stream="upstream",
        toxicity=0.0,
        attributes={"timeout": 0},
    )
    reader, writer = await connect(proxy.listen)
    assert await roundtrip(reader, writer, b"flows") == b"flows"
    status, toxic = await api(proxy_server, "POST", "/proxies/echo/toxics/never", {"toxicity": 1.0})
    assert status == 200 and toxic["toxicity"] == 1.0
    assert toxic["attributes"] == {"timeout": 0}  # an update keeps what it does not name
    writer.write(b"stops")
    await writer.drain()
    await assert_silent(reader)
    writer.close()


async def test_update_toxic_changes_only_what_is_given(
    proxy_server: ToxiproxyServer, client: Toxiproxy, echo: str
) -> None:
    proxy = await create(client, "echo", echo)
    await call(
        proxy.add_toxic, type="latency", toxicity=0.5, attributes={"latency": 10, "jitter": 5}
    )
    status, toxic = await api(
        proxy_server,
        "PATCH",
        "/proxies/echo/toxics/latency_downstream",
        {"attributes": {"latency": 300}},
    )
    assert status == 200
    assert toxic == {
        "attributes": {"latency": 300, "jitter": 5},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 0.5,
    }
    status, shown = await api(proxy_server, "GET", "/proxies/echo/toxics/latency_downstream")
    assert status == 200 and shown == toxic


async def test_partition_holds_bytes_in_bounded_memory_and_heals_intact(
    proxy_server: ToxiproxyServer, client: Toxiproxy, held: HeldServer
) -> None:
    """A writer into a partition is pushed back by TCP instead of filling the proxy's memory."""
    proxy = await create(client, "p", held.address)
    _, c_writer = await connect(proxy.listen)
    s_reader, s_writer = await held.next()
    await call(proxy.add_toxic, type="timeout", stream="upstream", attributes={"timeout": 0})

    sent = hashlib.sha256()
    total, block, cap = 0, 1 << 20, 64 << 20
    while total < cap:
        data = total.to_bytes(8, "big") * (block // 8)
        c_writer.write(data)
        sent.update(data)
        total += len(data)
        try:
            await asyncio.wait_for(c_writer.drain(), 1.0)
        except TimeoutError:
            break  # pushed back: the proxy stopped reading
    assert total < cap, "the proxy kept reading into a partition: unbounded buffering"

    await call(proxy.destroy_toxic, "timeout_upstream")
    received = hashlib.sha256()
    count = 0
    async with asyncio.timeout(60):
        while count < total:
            chunk = await s_reader.read(1 << 20)
            assert chunk, "upstream connection closed before all held bytes arrived"
            received.update(chunk)
            count += len(chunk)
    assert count == total and received.digest() == sent.digest()
    c_writer.close()
    s_writer.close()


# ---------------------------------------------------------------------------------------------
# Errors


async def test_client_sees_toxiproxy_errors(
    proxy_server: ToxiproxyServer, client: Toxiproxy, echo: str
) -> None:
    proxy = await create(client, "echo", echo)
    with pytest.raises(ProxyExists):
        await create(client, "echo", echo)
    with pytest.raises(InvalidToxic):
        await call(proxy.add_toxic, type="gremlins")
    await call(proxy.add_toxic, type="latency")
    with pytest.raises(ProxyExists):  # the client maps every 409 to ProxyExists
        await call(proxy.add_toxic, type="latency")
    with pytest.raises(NotFound):
        await call(proxy.destroy_toxic, "nope")
    await call(proxy.destroy)
    with pytest.raises(NotFound):
        await call(proxy.destroy)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("GET", "/proxies/nope", None, 404, "proxy not found"),
        ("DELETE", "/proxies/nope", None, 404, "proxy not found"),
        ("GET", "/proxies/nope/toxics", None, 404, "proxy not found"),
        (
            "POST",
            "/proxies",
            {"name": "echo", "upstream": "127.0.0.1:1"},
            409,
            "proxy already exists",
        ),
        ("POST", "/proxies", {"upstream": "127.0.0.1:1"}, 400, "missing required field: name"),
        ("POST", "/proxies", {"name": "x"}, 400, "missing required field: upstream"),
        ("POST", "/proxies", b"{not json", 400, "bad request body"),
        ("POST", "/proxies", b"", 400, "bad request body"),
        ("POST", "/proxies", [1, 2], 400, "bad request body"),
        ("POST", "/proxies", {"name": "x", "upstream": "nowhere"}, 400, "bad request body"),
        (
            "POST",
            "/proxies",
            {"name": "x", "upstream": "127.0.0.1:1", "listen": "1.2.3.4"},
            400,
            "bad request body",
        ),
        (
            "POST",
            "/proxies",
            {"name": "x", "upstream": "127.0.0.1:1", "enabled": "yes"},
            400,
            "bad",
        ),
        ("POST", "/proxies/echo", b"[", 400, "bad request body"),
        ("POST", "/proxies/echo/toxics", {"type": "gremlins"}, 400, "invalid toxic type"),
        ("POST", "/proxies/echo/toxics", {"type": "latency", "stream": "sideways"}, 400, "stream"),
        ("POST", "/proxies/echo/toxics", {"type": "latency", "name": "dup"}, 409, "toxic already"),
        (
            "POST",
            "/proxies/echo/toxics",
            {"type": "latency", "attributes": {"latency": "slow"}},
            400,
            "bad request body",
        ),
        (
            "POST",
            "/proxies/echo/toxics",
            {"type": "latency", "attributes": {"latency": 1.5}},
            400,
            "bad request body",
        ),
        (
            "POST",
            "/proxies/echo/toxics",
            {"type": "latency", "attributes": {"latency": -1}},
            400,
            "bad request body",
        ),
        ("POST", "/proxies/echo/toxics", {"type": "latency", "toxicity": 2}, 400, "toxicity"),
        ("GET", "/proxies/echo/toxics/nope", None, 404, "toxic not found"),
        ("POST", "/proxies/echo/toxics/nope", {}, 404, "toxic not found"),
        ("DELETE", "/proxies/echo/toxics/nope", None, 404, "toxic not found"),
        ("POST", "/populate", {"name": "x"}, 400, "bad request body"),
        ("POST", "/populate", [{"name": "x"}], 400, "missing required field: upstream at proxy 1"),
        (
            "POST",
            "/populate",
            [{"name": "x", "upstream": "127.0.0.1:1"}, {"name": "x", "upstream": "127.0.0.1:2"}],
            400,
            "duplicate",
        ),
    ],
)
async def test_bad_requests_get_toxiproxy_status_codes(
    proxy_server: ToxiproxyServer,
    client: Toxiproxy,
    echo: str,
    method: str,
    path: str,
    body: Any,
    status: int,
    error: str,
) -> None:
    proxy = await create(client, "echo", echo)
    await call(proxy.add_toxic, type="latency", name="dup")
    before = await api(proxy_server, "GET", "/proxies")
    got_status, got = await api(proxy_server, method, path, body)
    assert got_status == status
    assert got["status"] == status and error in got["error"]
    assert await api(proxy_server, "GET", "/proxies") == before  # nothing changed
    assert "x" not in before[1]


async def test_routing_errors_and_browsers(proxy_server: ToxiproxyServer) -> None:
    assert (await api(proxy_server, "GET", "/nope"))[0] == 404
    assert (await api(proxy_server, "PUT", "/proxies"))[0] == 405
    assert (await api(proxy_server, "POST", "/version"))[0] == 405
    status, _ = await api(
        proxy_server, "GET", "/proxies", headers={"User-Agent": "Mozilla/5.0 (X11)"}
    )
    assert status == 403


async def test_raw_http_keep_alive_and_malformed_requests(proxy_server: ToxiproxyServer) -> None:
    host, port = proxy_server.address
    reader, writer = await asyncio.open_connection(host, port)
    body = json.dumps({"name": "raw", "upstream": "127.0.0.1:9", "enabled": False}).encode()
    writer.write(
        b"POST /proxies HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    writer.write(b"GET /proxies/raw HTTP/1.1\r\nHost: x\r\n\r\n")  # same connection
    await writer.drain()
    for expected_status in (b"201", b"200"):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
        assert head.split(b" ")[1] == expected_status
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        proxy = json.loads(await reader.readexactly(length))
        assert proxy == {
            "name": "raw",
            "listen": "127.0.0.1:0",
            "upstream": "127.0.0.1:9",
            "enabled": False,
            "toxics": [],
        }
    writer.write(b"garbage\r\n\r\n")
    await writer.drain()
    reply = await read_to_eof(reader)
    assert reply.startswith(b"HTTP/1.1 400 ")  # and the connection is closed
    writer.close()


# ---------------------------------------------------------------------------------------------
# Lifecycle


async def test_stop_leaves_nothing_listening_or_running(echo: str) -> None:
    server = ToxiproxyServer("127.0.0.1", 0)
    await server.start()
    api_address = format_hostport(*server.address)
    status, proxy = await api(server, "POST", "/proxies", {"name": "e", "upstream": echo})
    assert status == 201
    reader, writer = await connect(proxy["listen"])
    assert await roundtrip(reader, writer, b"x") == b"x"
    idle_api = await asyncio.open_connection(*server.address)  # an idle keep-alive client

    await asyncio.wait_for(server.stop(), WAIT_S)
    assert refused(api_address) and refused(proxy["listen"])
    assert await read_to_eof(reader) == b""  # live connections are closed
    assert await read_to_eof(idle_api[0]) == b""
    ours = str(REPO / "chaos")
    leftover = [
        t
        for t in asyncio.all_tasks()
        if not t.done() and t.get_coro().cr_code.co_filename.startswith(ours)  # type: ignore[union-attr]
    ]
    assert leftover == []
    writer.close()
    idle_api[1].close()


async def test_command_line_serves_until_sigterm(tmp_path: Path, echo: str) -> None:
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "cfg", "upstream": echo, "listen": "127.0.0.1:0"}]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chaos.proxy",
        "--listen",
        "127.0.0.1:0",
        "--config",
        str(config),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.startswith(b"toxiproxy API listening on "), line
        host, port = parse_hostport(line.decode().split()[-1])
        status, proxies = await asyncio.to_thread(_http, (host, port), "GET", "/proxies", None, {})
        assert status == 200 and proxies["cfg"]["upstream"] == echo
        reader, writer = await connect(proxies["cfg"]["listen"])
        assert await roundtrip(reader, writer, b"cli") == b"cli"
        writer.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
