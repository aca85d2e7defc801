"""What an ErrorCode means to both sides: which failures a retry may cure.

The node puts `retriable` into every ErrorDetail it sends (node/errors.py), and the client falls
back on the same answer when it has only a code (client/errors.py), so the two cannot disagree.
The values follow Kafka's: a code is retriable when Kafka's exception for it is a
RetriableException (InvalidMetadataException included), that is, when the same request may
succeed once leadership, membership or a replica's state has moved on.

Not retriable although Kafka says so, on purpose: UNKNOWN_TOPIC_OR_PARTITION (liferaft creates no
topic on first use, so waiting does not make one appear) and CORRUPT_MESSAGE (the client built
the batch; sending the same bytes again fails again).
"""

from __future__ import annotations

from liferaft_proto.v1.errors_pb2 import ErrorCode

__all__ = ["RETRIABLE", "is_retriable"]

RETRIABLE: frozenset[int] = frozenset(
    {
        # Leadership moves: go to the new leader (after a metadata refresh).
        ErrorCode.NOT_LEADER,
        ErrorCode.LEADER_NOT_AVAILABLE,
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
        # A replica or node is down, slow or catching up.
        ErrorCode.BROKER_NOT_AVAILABLE,
        ErrorCode.REPLICA_NOT_AVAILABLE,
        ErrorCode.STORAGE_ERROR,
        ErrorCode.OFFSET_NOT_AVAILABLE,
        ErrorCode.REQUEST_TIMED_OUT,
        # The ISR is too small for acks=all right now.
        ErrorCode.NOT_ENOUGH_REPLICAS,
        ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        # The controller or group coordinator is moving: the same request works once it has.
        ErrorCode.NOT_CONTROLLER,
        ErrorCode.NOT_COORDINATOR,
        ErrorCode.COORDINATOR_NOT_AVAILABLE,
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
    }
)


def is_retriable(code: int) -> bool:
    """Whether the same request may succeed if sent again after a backoff."""
    return code in RETRIABLE
