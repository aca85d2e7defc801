"""One table of retriable codes (liferaft_proto.codes), and both sides answer from it."""

from __future__ import annotations

import pytest

from client.errors import LiferaftError, error_class
from liferaft_proto.codes import RETRIABLE, is_retriable
from liferaft_proto.v1.errors_pb2 import ErrorCode
from node.errors import BrokerError

CODES = [c for c in ErrorCode.values() if c != ErrorCode.NONE]


@pytest.mark.parametrize("code", CODES, ids=ErrorCode.Name)
def test_node_and_client_agree_whether_a_code_is_retriable(code: int) -> None:
    """The node's ErrorDetail flag and the client's default for the same code are one answer."""
    assert BrokerError(code, "x").retriable == is_retriable(code)
    cls = error_class(code)
    if cls is not LiferaftError:
        assert cls.retriable == is_retriable(code)
        assert cls(code, "x").retriable == is_retriable(code)


@pytest.mark.parametrize(
    "name",
    [
        # Kafka: retriable (InvalidMetadataException or RetriableException); the node used to
        # call them final while the client retried them.
        "REPLICA_NOT_AVAILABLE",
        "STORAGE_ERROR",
        "FENCED_LEADER_EPOCH",
        "UNKNOWN_LEADER_EPOCH",
        "OFFSET_NOT_AVAILABLE",
    ],
)
def test_kafkas_retriable_codes_are_retriable(name: str) -> None:
    assert ErrorCode.Value(name) in RETRIABLE


@pytest.mark.parametrize(
    "name", ["INVALID_TOPIC", "MESSAGE_TOO_LARGE", "TOPIC_ALREADY_EXISTS", "UNKNOWN_SERVER_ERROR"]
)
def test_a_request_that_is_wrong_stays_wrong(name: str) -> None:
    assert not is_retriable(ErrorCode.Value(name))


def test_the_give_up_errors_are_final_whatever_their_code() -> None:
    from client.errors import BufferFullError, DeliveryTimeoutError

    assert is_retriable(ErrorCode.REQUEST_TIMED_OUT)
    assert not DeliveryTimeoutError("gave up").retriable
    assert not BufferFullError(None, "full").retriable
