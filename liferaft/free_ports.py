"""Loopback ports for the processes that tests, benchmarks, the demo and chaos runs start.

Why not anywhere in 20000-60000: between choosing a free port and the process binding it, the
kernel may hand that very port to an outgoing connection (any client, the proxy's upstream
dials, an HTTP call to the proxy API) as its local port, and the node then fails to start with
"port in use". The kernel only picks those local ports from its ephemeral range
(net.ipv4.ip_local_port_range, 32768-60999 by default), so choosing below it closes the race.
"""

from __future__ import annotations

import socket
from pathlib import Path

__all__ = ["listen_port_range", "port_free"]

LOWEST_PORT = 10000
"""Below this live well-known services (and 8474, 9092, 9192 of a cluster someone runs by hand)."""

MIN_SPAN = 2000
"""A range narrower than this is not worth the squeeze: fall back to one above the ephemeral range."""

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's range of local ports for outgoing connections (Linux's default if unknown)."""
    try:
        low, high = (int(x) for x in path.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def listen_port_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """[start, stop) to draw listening ports from: clear of the ephemeral range."""
    low, high = ephemeral_range(path)
    if low - LOWEST_PORT >= MIN_SPAN:
        return LOWEST_PORT, low
    if 65536 - (high + 1) >= MIN_SPAN:
        return high + 1, 65536
    return LOWEST_PORT, 65536  # the kernel's range covers everything: no range is clear of it


def port_free(host: str, port: int) -> bool:
    """Whether a listener could bind host:port now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
