"""Topic configuration: the settings a user may give at creation, validated once, with defaults.

Names follow Kafka's so its users need no new vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.errors import BrokerError, ErrorCode
from node.limits import shown

DAY_MS = 24 * 3600 * 1000


@dataclass(slots=True, frozen=True)
class TopicConfig:
    retention_ms: int = 7 * DAY_MS
    """Batches older than this are dropped from the log start (-1: keep forever)."""
    retention_bytes: int = -1
    """A partition's log is cut from the start to stay under this size (-1: no limit)."""
    min_insync_replicas: int = 0
    """acks=all fails with NOT_ENOUGH_REPLICAS below this ISR size; 0 means a majority of the
    replicas, which is what a Raft commit needs anyway."""
    max_message_bytes: int = 1 << 20
    """Largest record batch accepted."""

    def effective_min_insync(self, replication_factor: int) -> int:
        if self.min_insync_replicas > 0:
            return self.min_insync_replicas
        return replication_factor // 2 + 1

    def to_dict(self) -> dict[str, str]:
        return {
            "retention.ms": str(self.retention_ms),
            "retention.bytes": str(self.retention_bytes),
            "min.insync.replicas": str(self.min_insync_replicas),
            "max.message.bytes": str(self.max_message_bytes),
        }


_KEYS = {
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "min.insync.replicas": "min_insync_replicas",
    "max.message.bytes": "max_message_bytes",
}


def parse_topic_config(raw: dict[str, str], replication_factor: int) -> TopicConfig:
    """Validate user-given settings; raise INVALID_CONFIG naming the bad one."""
    values: dict[str, int] = {}
    for key, text in raw.items():
        field_name = _KEYS.get(key)
        if field_name is None:
            known = ", ".join(sorted(_KEYS))
            raise BrokerError(
                ErrorCode.INVALID_CONFIG, f"unknown topic config {shown(key)}; known: {known}"
            )
        try:
            value = int(str(text).strip())
        except ValueError:
            raise BrokerError(
                ErrorCode.INVALID_CONFIG, f"topic config {key}={shown(text)} is not a whole number"
            ) from None
        if not -(1 << 63) <= value < 1 << 63:
            raise BrokerError(
                ErrorCode.INVALID_CONFIG, f"topic config {key}={shown(text)} is not a 64-bit number"
            )
        values[field_name] = value
    cfg = TopicConfig(**values)
    if cfg.retention_ms == 0 or cfg.retention_ms < -1:
        raise BrokerError(ErrorCode.INVALID_CONFIG, "retention.ms must be -1 (forever) or > 0")
    if cfg.retention_bytes == 0 or cfg.retention_bytes < -1:
        raise BrokerError(ErrorCode.INVALID_CONFIG, "retention.bytes must be -1 (no limit) or > 0")
    if cfg.min_insync_replicas < 0 or cfg.min_insync_replicas > replication_factor:
        raise BrokerError(
            ErrorCode.INVALID_CONFIG,
            f"min.insync.replicas={cfg.min_insync_replicas} must be between 1 and the "
            f"replication factor {replication_factor}",
        )
    if not 1024 <= cfg.max_message_bytes <= 64 << 20:
        raise BrokerError(
            ErrorCode.INVALID_CONFIG, "max.message.bytes must be between 1024 and 67108864"
        )
    return cfg
