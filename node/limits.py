"""The bounds on what a node accepts from clients and peers, in one place, with names that say them.

Why one module: a bound is only useful if every path that takes the input applies it, and the
people who tune or review them need to see them side by side. Request handlers (node/api/)
check every field against these before anything changes; the transport checks frames and Hellos;
the replicated logs store nothing the checks did not bound. Client-facing messages that echo a
name use `shown`, so an error's trailer stays far below a gRPC client's 16 KiB metadata limit.
"""

from __future__ import annotations

from node.errors import BrokerError, ErrorCode

__all__ = [
    "HELLO_DEADLINE_S",
    "MAX_ACLS",
    "MAX_ACLS_PER_REQUEST",
    "MAX_ADDRESS_CHARS",
    "MAX_CLIENT_ID_CHARS",
    "MAX_COMMIT_OFFSETS",
    "MAX_ERROR_MESSAGE_CHARS",
    "MAX_FRAME_BYTES_DEFAULT",
    "MAX_GENERATION",
    "MAX_GOSSIP_EPOCH",
    "MAX_GOSSIP_EPOCH_STEP",
    "MAX_GOSSIP_UNKNOWN_GROUPS",
    "MAX_GROUPS_PER_REQUEST",
    "MAX_GROUP_ID_CHARS",
    "MAX_HELLO_BYTES",
    "MAX_MEMBER_ID_CHARS",
    "MAX_NODE_ID",
    "MAX_OFFSET_METADATA_BYTES",
    "MAX_OWNED_PARTITIONS",
    "MAX_PARTITION",
    "MAX_SESSION_TIMEOUT_MS",
    "MAX_SHOWN_CHARS",
    "MAX_SUBSCRIBED_TOPICS",
    "MAX_TIMEOUT_MS",
    "MAX_TOPICS_PER_REQUEST",
    "MAX_TOPIC_CONFIGS",
    "MAX_TOPIC_CONFIG_CHARS",
    "MAX_UNAUTHENTICATED_CONNECTIONS",
    "MIN_SESSION_TIMEOUT_MS",
    "check_count",
    "check_offset",
    "check_partition",
    "check_text",
    "check_timeout_ms",
    "shown",
]

# -- the Raft transport (node/transport.py) ---------------------------------------------------
MAX_HELLO_BYTES = 4096
"""The first frame of a connection (its Hello) may claim at most this: nothing is buffered for a
peer that has not said who it is beyond a few KiB."""
MAX_FRAME_BYTES_DEFAULT = 64 << 20
"""Frames after the Hello (NodeConfig.max_raft_frame_bytes): one round's messages to one peer.
Entries are cut at 1 MiB per message and 64 in flight, so 64 MiB is well above a real round."""
MAX_UNAUTHENTICATED_CONNECTIONS = 64
"""Connections accepted whose Hello has not arrived yet; more are closed at once."""
HELLO_DEADLINE_S = 5.0
"""A connection that has not completed its Hello within this is closed."""
MAX_ADDRESS_CHARS = 261
"""HOST:PORT with a 255-character DNS name (RFC 1035) and brackets for IPv6."""
MAX_GOSSIP_EPOCH = (1 << 31) - 1
"""Leader epochs are Raft terms; Kafka's are int32. A term past this took 68 years of an
election every second: a gossip claim above it is a lie (or a bug), not news."""
MAX_GOSSIP_EPOCH_STEP = 1 << 20
"""How far a gossiped epoch may run ahead of what this node knows of that group (its own
replica's term, or the last gossip): terms grow by one per election, so a million elections
between two gossips of one group do not happen."""
MAX_NODE_ID = (1 << 31) - 1
"""Node ids are int32 in the client API."""
MAX_GOSSIP_UNKNOWN_GROUPS = 10_000
"""Gossip kept for groups this node's metadata does not know yet (a topic still being created)."""

# -- client requests (node/api/) -------------------------------------------------------------
MAX_SHOWN_CHARS = 64
"""A client's name echoed in an error message is cut to this many characters."""
MAX_ERROR_MESSAGE_CHARS = 2048
"""Any error message that leaves the node is cut to this (the trailer also holds the rest)."""
MAX_TOPICS_PER_REQUEST = 10_000
"""Topics named in one Metadata, CreateTopics, DeleteTopics or DescribeTopics request."""
MAX_ACLS_PER_REQUEST = 1000
"""ACLs one CreateAcls names, or filters one DeleteAcls does."""
MAX_ACLS = 100_000
"""ACLs the cluster keeps: every node holds them all in memory and in each controller snapshot
(about 200 bytes each as JSON)."""
MAX_GROUPS_PER_REQUEST = 10_000
"""Groups named in one DeleteGroups request."""
MAX_TOPIC_CONFIGS = 64
MAX_TOPIC_CONFIG_CHARS = 1024
"""Per config name and per value."""
MAX_PARTITION = (1 << 31) - 1
MAX_TIMEOUT_MS = 3_600_000
"""Request timeouts (timeout_ms, max_wait_ms): one hour; 0 means the node's default."""
MAX_GROUP_ID_CHARS = 249
MAX_MEMBER_ID_CHARS = 300
"""Member ids are made by the coordinator: a client id, '-', 12 hex digits."""
MAX_CLIENT_ID_CHARS = 255
MAX_SUBSCRIBED_TOPICS = 1000
"""Topics one group member may subscribe to (its subscription is stored in the `__groups` log)."""
MAX_OWNED_PARTITIONS = 100_000
"""Partitions a member may report holding, or one FetchOffsets may name."""
MAX_COMMIT_OFFSETS = 100_000
MAX_OFFSET_METADATA_BYTES = 4096
MAX_GENERATION = 1 << 30
"""Group generations grow by one per rebalance; a client claiming more is wrong."""
MIN_SESSION_TIMEOUT_MS = 500
MAX_SESSION_TIMEOUT_MS = 300_000


def shown(name: str) -> str:
    """`name` quoted for an error message, cut to MAX_SHOWN_CHARS characters."""
    if len(name) <= MAX_SHOWN_CHARS:
        return repr(name)
    return f"{name[:MAX_SHOWN_CHARS]!r}... ({len(name)} characters)"


def check_text(
    value: str,
    what: str,
    max_chars: int,
    *,
    code: int = ErrorCode.INVALID_REQUEST,
    allow_empty: bool = True,
) -> None:
    """A client string: bounded, printable (it ends up in logs and `describe` output)."""
    if not value and not allow_empty:
        raise BrokerError(code, f"{what} must not be empty")
    if len(value) > max_chars or not value.isprintable():
        raise BrokerError(
            code, f"{what} {shown(value)} must be at most {max_chars} printable characters"
        )


def check_count(n: int, what: str, max_n: int) -> None:
    if n > max_n:
        raise BrokerError(ErrorCode.INVALID_REQUEST, f"{n} {what} in one request; at most {max_n}")


def check_partition(partition: int, topic: str) -> None:
    if not 0 <= partition <= MAX_PARTITION:
        raise BrokerError(
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            f"partition {partition} of {shown(topic)} is negative: partitions count from 0",
        )


def check_offset(offset: int, what: str = "offset") -> None:
    if offset < 0:
        raise BrokerError(ErrorCode.OFFSET_OUT_OF_RANGE, f"{what} {offset} is negative")


def check_timeout_ms(value: int, what: str = "timeout_ms") -> None:
    """0 is the node's default; negative and absurd values are refused before anything is done
    (a negative Produce timeout used to write the batch and answer a retriable timeout)."""
    if not 0 <= value <= MAX_TIMEOUT_MS:
        raise BrokerError(
            ErrorCode.INVALID_REQUEST,
            f"{what} {value} must be between 0 (the node's default) and {MAX_TIMEOUT_MS}",
        )
