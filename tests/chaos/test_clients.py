"""What a client library's answer means to the checker (chaos/clients.py), decided in plain
functions: a delivery report is an acknowledgement only without an error; an error is a definite
failure only when the broker refused the record before writing it."""

from __future__ import annotations

import confluent_kafka as ck
import pytest

from chaos.clients import Acked, Refused, Unknown, make_clients
from chaos.clients_kafka import kafka_bootstrap, outcome
from chaos.workload import WorkloadConfig


def test_a_delivery_report_without_error_is_the_acknowledgement() -> None:
    assert outcome(None, 41) == Acked(41)
    # Written, offset unknown (a retry the broker answered "duplicate" beyond its window).
    assert outcome(None, -1) == Acked(None)


@pytest.mark.parametrize(
    "code",
    [
        ck.KafkaError._MSG_TIMED_OUT,  # possibly persisted: it may have been in flight
        ck.KafkaError.NOT_ENOUGH_REPLICAS,
        ck.KafkaError.NOT_LEADER_FOR_PARTITION,
        ck.KafkaError.REQUEST_TIMED_OUT,
        ck.KafkaError._TRANSPORT,
        ck.KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        ck.KafkaError._FATAL,
    ],
)
def test_an_error_that_may_hide_a_write_is_unknown(code: int) -> None:
    sent = outcome(ck.KafkaError(code), -1)
    assert isinstance(sent, Unknown) and sent.error


@pytest.mark.parametrize(
    "code",
    [
        ck.KafkaError.UNKNOWN_TOPIC_OR_PART,
        ck.KafkaError.MSG_SIZE_TOO_LARGE,
        ck.KafkaError.INVALID_RECORD,
        ck.KafkaError.INVALID_MSG,
    ],
)
def test_a_refusal_before_writing_is_a_definite_failure(code: int) -> None:
    assert isinstance(outcome(ck.KafkaError(code), -1), Refused)


def test_kafka_clients_dial_the_kafka_listeners() -> None:
    assert kafka_bootstrap("127.0.0.1:9092, 127.0.0.1:9093") == "127.0.0.1:9292,127.0.0.1:9293"


def test_an_unknown_client_library_is_refused() -> None:
    with pytest.raises(ValueError, match="client must be one of liferaft, kafka"):
        WorkloadConfig(client="rdkafka")
    with pytest.raises(ValueError, match="client must be one of"):
        make_clients("rdkafka", "127.0.0.1:9092", WorkloadConfig())
    with pytest.raises(ValueError, match="sends in flight must be >= 1"):
        WorkloadConfig(sends_in_flight=0)
