"""What every API handler is given: this node's broker, and a way to reach another node."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from liferaft_proto.v1 import broker_pb2_grpc, errors_pb2
from node.broker import Broker
from node.errors import BrokerError
from node.limits import MAX_ADDRESS_CHARS, MAX_ERROR_MESSAGE_CHARS

ADMIN_TIMEOUT_MS = 15_000
"""How long an administrative request (and a forwarded one) may take when it names no timeout."""


@dataclass(frozen=True, slots=True)
class Api:
    broker: Broker
    forward: Callable[[int], broker_pb2_grpc.BrokerStub | None]
    """node id -> a stub to that node (controller requests, a leader's high watermark)."""


def cut(message: str) -> str:
    """Error messages leave the node at most MAX_ERROR_MESSAGE_CHARS long: a status trailer
    past a client's metadata limit (16 KiB by default) would hide the real error."""
    if len(message) <= MAX_ERROR_MESSAGE_CHARS:
        return message
    return message[: MAX_ERROR_MESSAGE_CHARS - 20] + f"... ({len(message)} chars)"


def detail(err: BrokerError) -> errors_pb2.ErrorDetail:
    """A BrokerError as the wire's ErrorDetail (a status's, or one result's in a batch)."""
    return errors_pb2.ErrorDetail(
        code=err.code,  # type: ignore[arg-type]
        message=cut(err.message),
        leader_id=err.leader_id,
        leader_address=err.leader_address[:MAX_ADDRESS_CHARS],
        retriable=err.retriable,
        leader_epoch=err.leader_epoch,
    )
