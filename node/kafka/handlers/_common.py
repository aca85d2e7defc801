"""What several handlers share: leader-epoch fencing, and the timeout of a request."""

from __future__ import annotations

import datetime

from node.errors import BrokerError, ErrorCode
from node.partition import Partition

NO_EPOCH = -1
MAX_TIMEOUT_MS = 300_000
"""A request's own timeout is honoured up to this (5 minutes)."""


def check_leader_epoch(part: Partition, current_leader_epoch: int) -> None:
    """Kafka's KIP-320 fencing: a client names the leader epoch its metadata shows; an older one
    is FENCED_LEADER_EPOCH (its metadata is stale: refresh), a newer one UNKNOWN_LEADER_EPOCH
    (this node has not caught up yet: retry). -1 asks for no check."""
    if current_leader_epoch == NO_EPOCH:
        return
    epoch = part.state().leader_epoch
    if current_leader_epoch < epoch:
        raise BrokerError(
            ErrorCode.FENCED_LEADER_EPOCH,
            f"{part.topic}-{part.index}: leader epoch {current_leader_epoch} is older than "
            f"the current {epoch}; refresh metadata",
        )
    if current_leader_epoch > epoch:
        raise BrokerError(
            ErrorCode.UNKNOWN_LEADER_EPOCH,
            f"{part.topic}-{part.index}: leader epoch {current_leader_epoch} is newer than "
            f"this leader's {epoch}; retry",
        )


def timeout_s(value: datetime.timedelta | int, default_ms: int) -> float:
    """A request's timeout in seconds: its own if positive (capped), else the default."""
    ms = int(value.total_seconds() * 1000) if isinstance(value, datetime.timedelta) else value
    if ms <= 0:
        ms = default_ms
    return min(ms, MAX_TIMEOUT_MS) / 1000
