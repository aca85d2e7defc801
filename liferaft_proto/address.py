"""HOST:PORT, the one address format of liferaft: flags, --peers, bootstrap lists, metadata.

The node and the client parse it with the same function, so an address one side accepts the
other accepts too. An IPv6 host is written in brackets ([::1]:9092) and parsed without them.
"""

from __future__ import annotations

__all__ = ["format_address", "parse_address"]


def parse_address(value: str, what: str = "address") -> tuple[str, int]:
    """HOST:PORT -> (host, port), refusing anything a socket would choke on later.

    Raises ValueError whose message starts with `what` (a flag's name, "peer 2's address"), so a
    person can tell which setting to fix; the node wraps it as its ConfigError."""
    host, sep, port_s = value.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"{what} {value!r} must look like HOST:PORT (for example 127.0.0.1:9092)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_s)
    except ValueError:
        raise ValueError(f"{what} {value!r}: port {port_s!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{what} {value!r}: port {port} is outside 1..65535")
    return host, port


def format_address(host: str, port: int) -> str:
    """(host, port) -> HOST:PORT, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
