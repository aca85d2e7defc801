"""KafkaClients closes every client it holds, whatever state each is in (no cluster needed:
the clients point at a closed port)."""

from __future__ import annotations

import pytest

from tests.integration.closing import KafkaClients

NOWHERE = "127.0.0.1:1"


def test_every_client_is_closed_even_when_one_close_fails() -> None:
    import confluent_kafka as ck
    from confluent_kafka.admin import AdminClient

    quiet = {"bootstrap.servers": NOWHERE, "log_level": 0}
    with KafkaClients() as clients:
        # Queued for a broker that never answers: a plain close() would wait for it for
        # message.timeout.ms (an hour here, so pytest-timeout would fail this test).
        producer = clients(ck.Producer({**quiet, "message.timeout.ms": 3_600_000}))
        producer.produce("t", b"never sent")
        consumer = clients(ck.Consumer({**quiet, "group.id": "g"}))
        consumer.subscribe(["t"])
        # Closed by the test already: its purge raises, and the others are closed all the same.
        already = clients(ck.Producer(quiet))
        already.close()
        admin = clients(AdminClient(quiet))
    with pytest.raises(RuntimeError, match="closed"):
        producer.produce("t", b"after")
    with pytest.raises(RuntimeError, match="closed"):
        consumer.poll(0)
    with pytest.raises(RuntimeError, match="closed"):
        admin.list_topics(timeout=0.1)


def test_the_kafka_clients_fixture_closes_at_the_end(kafka_clients: KafkaClients) -> None:
    import confluent_kafka as ck

    consumer = kafka_clients(ck.Consumer({"bootstrap.servers": NOWHERE, "group.id": "g"}))
    kafka_clients.close_all()
    with pytest.raises(RuntimeError, match="closed"):
        consumer.poll(0)


def test_something_else_is_refused_and_not_kept() -> None:
    clients = KafkaClients()
    with pytest.raises(TypeError, match="not a confluent-kafka or kafka-python client"):
        clients(object())
    clients.close_all()
