"""A broker node's configuration: one dataclass, filled from flags, environment or a TOML file.

Validation happens here, once, with messages a person can act on; the rest of node/ trusts it.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from liferaft_proto import ports
from liferaft_proto.address import parse_address as _parse_address
from liferaft_proto.ports import RAFT_PORT_OFFSET as RAFT_PORT_OFFSET  # node/ reads it here
from node.limits import MAX_ADDRESS_CHARS, MAX_FRAME_BYTES_DEFAULT, MAX_HELLO_BYTES

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
"""Kafka's names for how a client connects (security.protocol)."""
EVENT_LOOPS = ("uvloop", "asyncio")
"""The loops a node runs on (`event_loop`); node/event_loop.py makes them."""


class ConfigError(ValueError):
    """A configuration value is wrong; the message says which and how to fix it."""


def parse_address(value: str, what: str = "address") -> tuple[str, int]:
    """HOST:PORT -> (host, port): liferaft_proto.address.parse_address, its ValueError as a
    ConfigError."""
    try:
        return _parse_address(value, what)
    except ValueError as e:
        raise ConfigError(str(e)) from None


_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?$"
)


def parse_advertised(value: str, what: str = "advertised address") -> tuple[str, int]:
    """An address a node gives for clients to dial (--advertise, a peer's Hello): HOST:PORT where
    HOST is a DNS name or an IP address that is not a wildcard, checked before anything stores
    it, as it ends up in cluster metadata that every client follows."""
    if len(value) > MAX_ADDRESS_CHARS:
        raise ConfigError(f"{what} of {len(value)} characters is not an address")
    host, port = parse_address(value, what)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_NAME.match(host):
            raise ConfigError(
                f"{what} {value!r}: {host!r} is not a host name or IP address"
            ) from None
    else:
        if ip.is_unspecified:
            raise ConfigError(f"{what} {value!r} is a wildcard; give the address clients can reach")
    return host, port


def parse_peers(value: str) -> dict[int, str]:
    """ "1@host:port,2@host:port" -> {1: "host:port", 2: "host:port"}."""
    peers: dict[int, str] = {}
    for item in filter(None, (p.strip() for p in value.split(","))):
        node_s, sep, addr = item.partition("@")
        if not sep:
            raise ConfigError(
                f"peer {item!r} must look like ID@HOST:PORT (for example 1@127.0.0.1:9092)"
            )
        try:
            node_id = int(node_s)
        except ValueError:
            raise ConfigError(f"peer {item!r}: node id {node_s!r} is not a number") from None
        if node_id < 1:
            raise ConfigError(f"peer {item!r}: node ids start at 1")
        if node_id in peers:
            raise ConfigError(f"peer id {node_id} appears twice in --peers")
        parse_address(addr, f"peer {node_id}'s address")
        peers[node_id] = addr
    return peers


def parse_super_users(value: str) -> list[str]:
    """ "User:a;User:CN=b,O=c" -> ["User:a", "User:CN=b,O=c"] (Kafka's super.users)."""
    return [p.strip() for p in value.split(";") if p.strip()]


KAFKA_PORT_OFFSET = ports.KAFKA.offset
"""A node's Kafka listener is on its gRPC port plus this (9092 -> 9292), on the same host, and
metadata advertises it at the advertised gRPC port plus this (docs/kafka.md). 0: no listener."""


STREAM_PORT_OFFSET = ports.STREAM.offset
"""A node's stream listener (ProduceStream and FetchStream over framed TCP, node/stream_listener.py)
is on its gRPC port plus this (9092 -> 9492), on the same host; metadata tells clients the
advertised gRPC port plus this (BrokerInfo.stream_port). 0: no listener, clients use gRPC."""


def raft_address(address: str, offset: int = RAFT_PORT_OFFSET) -> str:
    """The Raft transport's HOST:PORT of the node whose gRPC address is `address`.

    Peers are named by their gRPC address (--peers); their Raft transport is at a fixed offset
    from it (liferaft_proto.ports, the one table of a node's listeners), as Kafka's controller
    listener sits beside its client listener. One list of addresses thus says where to replicate
    and where to forward admin requests."""
    try:
        return ports.listener_address(address, offset)
    except ValueError as e:
        raise ConfigError(f"{e} (the Raft port; see --raft-port-offset)") from None


@dataclass(slots=True)
class NodeConfig:
    node_id: int
    """This node's id, >= 1, unique in the cluster and listed in peers."""
    listen: str
    """Where this node's gRPC server binds (clients and peers), HOST:PORT."""
    peers: dict[int, str]
    """Every controller voter, this node included: id -> address peers dial."""
    data_dir: Path
    """Where this node keeps its RocksDB store (the Raft logs of every group it hosts)."""
    advertise: str = ""
    """The address clients are told to use; defaults to listen."""
    cluster_id: str = "liferaft"
    """The cluster's name: a peer of another cluster is refused at the Raft transport."""
    raft_port_offset: int = RAFT_PORT_OFFSET
    """The Raft transport of every node listens on its gRPC port plus this."""
    kafka_port_offset: int = KAFKA_PORT_OFFSET
    """The Kafka listener of every node is on its gRPC port plus this; 0 turns it off."""
    stream_port_offset: int = STREAM_PORT_OFFSET
    """The stream listener (the clients' ProduceStream and FetchStream over framed TCP) of every
    node is on its gRPC port plus this; 0 turns it off (clients then use gRPC's streams)."""
    tick_ms: int = 20
    """One Raft tick. Elections time out after election_ticks..2*election_ticks ticks."""
    election_ticks: int = 10
    """Ticks without a leader's word before a follower stands for election (more than heartbeat_ticks)."""
    heartbeat_ticks: int = 2
    """Ticks between a leader's heartbeats."""
    isr_max_lag_ms: int = 1000
    """A follower that has not caught up within this time leaves the ISR (replica.lag.time.max.ms)."""
    isr_max_lag_entries: int = 4000
    """A follower this many entries behind the leader's log end leaves the ISR."""
    max_raft_frame_bytes: int = MAX_FRAME_BYTES_DEFAULT
    """Largest frame a peer may send on the Raft transport once its Hello is accepted (the
    Hello itself may be at most a few KiB, node/limits.py)."""
    max_batch_bytes: int = 1 << 20
    """Largest record batch a producer may send (message.max.bytes)."""
    default_partitions: int = 3
    """Partitions of a topic created without a count (num.partitions)."""
    default_replication_factor: int = 3
    """Replicas per partition of a topic created without one, capped at the registered nodes."""
    join: str = ""
    """HOST:PORT (gRPC) of any member of a running cluster to join: the node learns the members
    from it (instead of --peers) and the controller adds it as a learner, promoting it to voter
    while the controller group has fewer than controller_voters (docs/operations.md)."""
    controller_voters: int = 3
    """How many voters the controller group keeps (3 or 5): a node that joins or comes back
    with a new data directory is promoted from learner to voter while there are fewer
    (node/membership.py)."""
    leader_rebalance_ms: int = 3000
    """How often a partition leader checks whether its preferred replica should lead instead."""
    retention_check_ms: int = 5000
    """How often each replica applies retention.ms / retention.bytes to its log."""
    background_write_mb_s: int = 100
    """How fast the storage's background flushes and compactions may write, MB/s (0: no cap).
    Keeps WAL fsyncs fast under load, and bounds what a node can ingest for long (every byte is
    flushed once): raise it on a disk faster than a shared VM's (docs/performance.md)."""
    metrics_listen: str = ""
    """Where GET /metrics is served, HOST:PORT; empty: the --listen host at its port + 300;
    "off": nowhere."""
    tls_dir: Path | None = None
    """Where this node's ca.crt, node.crt and node.key are (or DIR/node-N/): node/tls.py."""
    tls_ca: Path | None = None
    """The cluster CA's certificate(s), PEM; instead of tls_dir's ca.crt."""
    tls_cert: Path | None = None
    """This node's certificate, naming liferaft://node/N; instead of tls_dir's node.crt."""
    tls_key: Path | None = None
    """Its private key; instead of tls_dir's node.key."""
    client_tls: bool = False
    """TLS on the client listeners (gRPC and Kafka) with the node's certificate (node/tls.py:
    ClientTls); off, clients speak plaintext (docs/security.md says what that leaves open)."""
    client_tls_auth: str = "none"
    """With client_tls: `required` makes clients present a certificate signed by the cluster
    CA (mutual TLS); `none` asks for none."""
    authorizer: bool = False
    """ACLs decide who may do what on both client listeners (node/authorizer.py): with it on,
    a request no ACL allows is refused (`liferaft acl add`); off, every client may do
    everything."""
    super_users: list[str] = field(default_factory=list)
    """Principals the authorizer always allows (`User:admin`); on the command line separated
    by `;`, as Kafka's super.users (a certificate subject has commas)."""
    client_security_protocol: str = ""
    """How clients of both listeners (gRPC and Kafka) connect, in Kafka's names: PLAINTEXT,
    SSL (TLS; with client_tls_auth `required` the certificate is the credential), SASL_SSL
    (TLS and a SCRAM username/password) or SASL_PLAINTEXT (SCRAM without TLS: the gRPC
    listener then sees passwords in the clear). SSL and SASL_SSL turn client_tls on; empty:
    SSL if client_tls, else PLAINTEXT."""
    insecure_plaintext_between_nodes: bool = False
    """Run the Raft transport without TLS: any process that reaches the port can speak for any
    node. Only on a network where every process is trusted, and only when asked by name."""
    log_level: str = "info"
    """debug, info, warning or error."""
    log_format: str = "text"
    """"text" for people, "json" for log pipelines (one object a line: node, logger, partition
    and term where the message has them)."""
    event_loop: str = "uvloop"
    """The node's asyncio event loop: "uvloop" (libuv's loop, its TLS and sockets in C; about a
    tenth less CPU per produce request, docs/performance.md) or "asyncio" (the standard
    library's, to rule the loop out when something looks wrong)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """A table no setting of this release reads: a config file may carry keys for later ones."""

    def __post_init__(self) -> None:
        if not self.advertise:
            self.advertise = self.listen

    def validate(self) -> NodeConfig:
        if self.node_id < 1:
            raise ConfigError(f"--node-id must be >= 1, got {self.node_id}")
        parse_address(self.listen, "--listen")
        parse_advertised(self.advertise, "--advertise")
        if self.join:
            parse_address(self.join, "--join")
            if set(self.peers) - {self.node_id}:
                raise ConfigError(
                    "--join and --peers contradict each other: a joining node learns the "
                    "members from the one it joins through"
                )
            # Filled in at start from the member's metadata (node/server.py).
            self.peers = {self.node_id: self.advertise}
        if not self.peers:
            raise ConfigError(
                "--peers is empty: list every node, this one included (1@HOST:PORT,...), or "
                "--join HOST:PORT of a running cluster's member"
            )
        if self.node_id not in self.peers:
            raise ConfigError(
                f"--peers does not contain this node's id {self.node_id}: list every node, this one included"
            )
        if not 0 < self.raft_port_offset < 65535:
            raise ConfigError(f"raft_port_offset must be in 1..65534, got {self.raft_port_offset}")
        raft_address(self.listen, self.raft_port_offset)
        if self.kafka_port_offset:
            if self.kafka_port_offset == self.raft_port_offset:
                raise ConfigError("kafka_port_offset must differ from raft_port_offset")
            raft_address(self.listen, self.kafka_port_offset)
            raft_address(self.advertise, self.kafka_port_offset)
        if not 0 <= self.stream_port_offset < 65535:
            raise ConfigError(
                f"stream_port_offset must be in 0..65534 (0: off), got {self.stream_port_offset}"
            )
        if self.stream_port_offset:
            if self.stream_port_offset in (self.raft_port_offset, self.kafka_port_offset):
                raise ConfigError(
                    "stream_port_offset must differ from raft_port_offset and kafka_port_offset"
                )
            raft_address(self.listen, self.stream_port_offset)
            raft_address(self.advertise, self.stream_port_offset)
        for addr in self.peers.values():
            raft_address(addr, self.raft_port_offset)
        if self.metrics_listen not in ("", "off"):
            parse_address(self.metrics_listen, "--metrics-listen")
        else:
            self.metrics_address()
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"--log-format must be text or json, got {self.log_format!r}")
        if self.event_loop not in EVENT_LOOPS:
            raise ConfigError(
                f"--event-loop must be {' or '.join(EVENT_LOOPS)}, got {self.event_loop!r}"
            )
        tls_given = [
            f"--tls-{n}"
            for n in ("dir", "ca", "cert", "key")
            if getattr(self, f"tls_{n}") is not None
        ]
        if tls_given and self.insecure_plaintext_between_nodes:
            raise ConfigError(
                f"{', '.join(tls_given)} and --insecure-plaintext-between-nodes contradict each "
                "other: give one"
            )
        if not tls_given and not self.insecure_plaintext_between_nodes:
            raise ConfigError(
                "nodes talk to each other over mutual TLS: give --tls-dir DIR (make one with "
                "`liferaft certs create --dir DIR --nodes 1,2,3`), or, only on a network where "
                "every process is trusted, --insecure-plaintext-between-nodes"
            )
        if self.client_tls and self.insecure_plaintext_between_nodes:
            raise ConfigError(
                "--client-tls serves the node's certificate: give --tls-dir (not "
                "--insecure-plaintext-between-nodes)"
            )
        if self.client_tls_auth not in ("none", "required"):
            raise ConfigError(
                f"--client-tls-auth must be none or required, got {self.client_tls_auth!r}"
            )
        protocol = self.client_security_protocol.upper()
        if protocol and protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"--client-security-protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                f"got {self.client_security_protocol!r}"
            )
        if protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and self.client_tls:
            raise ConfigError(
                f"--client-security-protocol {protocol} and --client-tls contradict each other: "
                f"use {protocol.replace('PLAINTEXT', 'SSL')} for TLS"
            )
        if protocol in ("SSL", "SASL_SSL"):
            if self.insecure_plaintext_between_nodes:
                raise ConfigError(
                    f"--client-security-protocol {protocol} serves the node's certificate: give "
                    "--tls-dir (not --insecure-plaintext-between-nodes)"
                )
            self.client_tls = True
        if protocol.startswith("SASL") and self.insecure_plaintext_between_nodes:
            raise ConfigError(
                f"--client-security-protocol {protocol}: a node forwards requests to the "
                "controller on its caller's behalf and proves it with its certificate; give "
                "--tls-dir (not --insecure-plaintext-between-nodes)"
            )
        self.client_security_protocol = protocol or ("SSL" if self.client_tls else "PLAINTEXT")
        if self.client_tls_auth == "required" and not self.client_tls:
            raise ConfigError("--client-tls-auth required needs --client-tls")
        for principal in self.super_users:
            if not isinstance(principal, str) or not re.fullmatch(r"[^:\s]+:\S.*", principal):
                raise ConfigError(
                    f"super user {principal!r} must be a principal like User:admin "
                    "(separate several with ';')"
                )
        if self.super_users and not self.authorizer:
            raise ConfigError("--super-users needs --authorizer (without it everyone may do all)")
        if self.controller_voters not in (3, 5):
            raise ConfigError(
                f"controller_voters must be 3 or 5, got {self.controller_voters}: an odd count "
                "that survives one (3) or two (5) lost nodes"
            )
        if self.background_write_mb_s < 0:
            raise ConfigError("background_write_mb_s must be >= 0 (0: no cap)")
        if self.tick_ms < 1:
            raise ConfigError("tick_ms must be >= 1")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError("election_ticks must be greater than heartbeat_ticks")
        if not MAX_HELLO_BYTES <= self.max_raft_frame_bytes <= 1 << 30:
            raise ConfigError(
                f"max_raft_frame_bytes must be between {MAX_HELLO_BYTES} and {1 << 30}, "
                f"got {self.max_raft_frame_bytes}"
            )
        if self.max_batch_bytes < 1024:
            raise ConfigError("max_batch_bytes must be at least 1024")
        return self

    def metrics_address(self) -> str | None:
        """HOST:PORT of the metrics endpoint, or None when it is off."""
        if self.metrics_listen == "off":
            return None
        if self.metrics_listen:
            return self.metrics_listen
        try:
            return ports.listener_address(self.listen, ports.METRICS.offset)
        except ValueError as e:
            raise ConfigError(f"{e} (the metrics port; see --metrics-listen)") from None

    @property
    def sasl(self) -> bool:
        """Whether clients must authenticate with SCRAM (after validate)."""
        return self.client_security_protocol.startswith("SASL")

    @property
    def isr_max_lag_ticks(self) -> int:
        return max(1, self.isr_max_lag_ms // self.tick_ms)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into keyword arguments of NodeConfig (peers as a table or string)."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
    known = {f.name for f in fields(NodeConfig)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"config file {p}: unknown setting {key!r}")
        if name == "peers":
            if isinstance(value, str):
                value = parse_peers(value)
            elif isinstance(value, dict):
                value = {int(k): str(v) for k, v in value.items()}
            else:
                raise ConfigError(f"config file {p}: peers must be a string or a table")
        if name in ("data_dir", "tls_dir", "tls_ca", "tls_cert", "tls_key"):
            value = Path(value)
        if name == "super_users":
            value = parse_super_users(value) if isinstance(value, str) else value
            if not isinstance(value, list):
                raise ConfigError(f"config file {p}: super_users must be a list of principals")
        if name in ("insecure_plaintext_between_nodes", "authorizer") and not isinstance(
            value, bool
        ):
            raise ConfigError(f"config file {p}: {key} must be true or false")
        out[name] = value
    return out
