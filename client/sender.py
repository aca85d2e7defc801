"""The Produce RPC as one handler: build the request, send it to the leader, read the answer.

Modelled on aiokafka's sender: the producer decides *what* to send (records, partition); this
module knows *how* one record batch travels and what its answer means. Retries and failover are
the cluster core's (client/cluster.py). The next producer (batching with linger, idempotence)
puts an accumulator in front of this and keeps the handler as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from client.cluster import Cluster
from liferaft_proto.v1 import broker_pb2

__all__ = ["ACKS_ALL", "ProduceResult", "Sender", "parse_acks", "server_timeout_ms"]

ACKS_ALL = -1


def parse_acks(value: str | int) -> int:
    """ "all" / -1 / 1 / 0 (or their strings) -> the wire value -1, 1 or 0."""
    text = str(value).strip().lower()
    if text in ("all", "-1"):
        return ACKS_ALL
    if text in ("0", "1"):
        return int(text)
    raise ValueError(f"acks must be 'all' (or -1), 1 or 0, got {value!r}")


def server_timeout_ms(attempt_ms: int) -> int:
    """The Produce request's own timeout: a little under the attempt's gRPC deadline, so a slow
    commit comes back as the node's clear REQUEST_TIMED_OUT rather than a bare deadline."""
    return max(1, attempt_ms - max(50, attempt_ms // 10))


@dataclass(frozen=True, slots=True, kw_only=True)
class ProduceResult:
    base_offset: int
    """-1 for acks=0."""
    log_append_time_ms: int
    """-1 unless the topic stamps LogAppendTime."""
    log_start_offset: int


class Sender:
    def __init__(self, cluster: Cluster, *, acks: int, delivery_timeout_ms: int) -> None:
        self.cluster = cluster
        self.acks = acks
        self.delivery_timeout_ms = delivery_timeout_ms

    def build_request(
        self, topic: str, partition: int, batch: bytes, attempt_ms: int
    ) -> broker_pb2.ProduceRequest:
        return broker_pb2.ProduceRequest(
            topic=topic,
            partition=partition,
            acks=self.acks,
            timeout_ms=server_timeout_ms(attempt_ms),
            records=batch,
        )

    @staticmethod
    def handle_response(response: broker_pb2.ProduceResponse) -> ProduceResult:
        return ProduceResult(
            base_offset=response.base_offset,
            log_append_time_ms=response.log_append_time_ms,
            log_start_offset=response.log_start_offset,
        )

    async def send(self, topic: str, partition: int, batch: bytes) -> ProduceResult:
        """Deliver one record batch (bytes from records.build_batch) to a partition.

        Retries retriable failures within delivery_timeout_ms. Without idempotence a retry
        after a lost answer may write the batch twice (at-least-once, as in Kafka).
        """
        response = await self.cluster.call_leader(
            topic,
            partition,
            "Produce",
            lambda attempt_ms: self.build_request(topic, partition, batch, attempt_ms),
            timeout_ms=self.delivery_timeout_ms,
        )
        return self.handle_response(response)
