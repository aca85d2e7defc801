"""Every port a node opens, in one table: where each listener sits relative to the node's port.

A node is named by one address, HOST:PORT: its --listen, its entry in every --peers list, what
clients bootstrap from. That PORT is the node's *base port*; each listener binds the same host at
base + its offset. So one address says everything about a node, and a dev cluster gives node N
base + N - 1: up to NODE_SPACING nodes on one host before one node's listener would land on
another node's.

    listener   offset   with base 9092   dialled by
    grpc           +0   9092             liferaft clients; peers forwarding admin requests
    raft         +100   9192             the other nodes' Raft transports (node/transport.py)
    kafka        +200   9292 (reserved)  Kafka clients, once "Speak Kafka" lands
    metrics      +300   9392             Prometheus (GET /metrics; node/metrics.py)
    stream       +400   9492             liferaft clients' ProduceStream and FetchStream
                                         (framed TCP: liferaft_proto/stream_wire.py)

Kafka's users expect 9092 for the Kafka protocol. When the Kafka listener lands it takes the
base port and gRPC moves to +200, the slot reserved here: the two rows trade offsets, so every
caller of this table follows, and the files that cannot import it (docker-compose.yml,
deploy/Dockerfile, deploy/toxiproxy.json, the README) are held to it by tests/wire/test_ports.py.
docs/architecture.md has the plan in full.
"""

from __future__ import annotations

from dataclasses import dataclass

from liferaft_proto.address import format_address, parse_address

__all__ = [
    "DEFAULT_BASE_PORT",
    "GRPC",
    "KAFKA",
    "LISTENERS",
    "METRICS",
    "NODE_SPACING",
    "RAFT",
    "RAFT_PORT_OFFSET",
    "STREAM",
    "Listener",
    "bound_offsets",
    "listener_address",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    name: str
    offset: int
    """Above the node's base port, on the same host."""
    dialled_by: str
    reserved: bool = False
    """The slot is kept for a listener not built yet: no node binds it today."""


NODE_SPACING = 100
"""Offsets are multiples of this, so nodes on one host may take consecutive base ports (a dev
cluster's), up to this many nodes."""

DEFAULT_BASE_PORT = 9092
"""A node's base port unless told otherwise (the container's, a dev cluster's first node)."""

GRPC = Listener(
    name="grpc", offset=0, dialled_by="liferaft clients; peers forwarding admin requests"
)
RAFT = Listener(name="raft", offset=1 * NODE_SPACING, dialled_by="the other nodes' Raft transports")
KAFKA = Listener(name="kafka", offset=2 * NODE_SPACING, dialled_by="Kafka clients (node/kafka/)")
METRICS = Listener(name="metrics", offset=3 * NODE_SPACING, dialled_by="Prometheus")
STREAM = Listener(
    name="stream",
    offset=4 * NODE_SPACING,
    dialled_by="liferaft clients' ProduceStream and FetchStream (liferaft_proto/stream_wire.py)",
)
LISTENERS = (GRPC, RAFT, KAFKA, METRICS, STREAM)

RAFT_PORT_OFFSET = RAFT.offset
"""A node's Raft transport listens on its base (gRPC) port plus this: 9092 -> 9192."""


def bound_offsets() -> tuple[int, ...]:
    """The offsets a node binds today: a block of base ports is free only if these all are."""
    return tuple(listener.offset for listener in LISTENERS if not listener.reserved)


def listener_address(address: str, offset: int) -> str:
    """HOST:PORT of the listener `offset` above the node whose address is `address`.

    ValueError if `address` is not HOST:PORT or the port would leave 1..65535."""
    host, port = parse_address(address)
    if not 0 < port + offset < 65536:
        raise ValueError(
            f"{address!r}: the port {port} + {offset} is outside 1..65535; "
            "pick another port or offset"
        )
    return format_address(host, port + offset)
