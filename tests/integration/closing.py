"""Kafka clients that tests close whatever happens.

A confluent-kafka (librdkafka) client left to the garbage collector is destroyed wherever the
collector happens to run, and librdkafka's destroy can block there for good: a Consumer a failing
test dropped hung a whole CI run later, in `rd_kafka_destroy_app` under `gc_collect_main`. So
every client a test makes goes through `KafkaClients` (the `kafka_clients` fixture, or
`with KafkaClients() as clients:` in a helper), which closes them all, newest first, when the
test or the block ends, passed or failed, each with a bounded wait.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

# A kafka-python producer's close waits for its unsent records for ever unless told otherwise.
_KAFKA_PYTHON_CLOSE_S = 10


def closer(client: Any) -> Callable[[], object]:
    """How to close one client of confluent-kafka or kafka-python without waiting unboundedly.

    A confluent Producer's close flushes for as long as message.timeout.ms (5 minutes by
    default) when records are still queued, so what the test left unsent is purged first:
    the test is over and nobody waits for those records. Anything else is a TypeError.
    """
    import confluent_kafka as ck
    from confluent_kafka.admin import AdminClient

    if isinstance(client, ck.Producer):

        def purge_and_close() -> object:
            client.purge()
            return client.close()

        return purge_and_close
    if isinstance(client, ck.Consumer):
        return client.close  # type: ignore[no-any-return]
    if isinstance(client, AdminClient):  # no close(): its context exit destroys the handle
        return lambda: client.__exit__(None, None, None)
    if type(client).__module__.startswith("kafka."):
        if type(client).__name__ == "KafkaProducer":
            return lambda: client.close(timeout=_KAFKA_PYTHON_CLOSE_S)
        return client.close  # type: ignore[no-any-return]
    raise TypeError(f"not a confluent-kafka or kafka-python client: {client!r}")


class KafkaClients:
    """Keeps the clients handed to it and closes them all, newest first, at the end.

    One whose close fails (the test closed it already, or broke it) does not stop the others
    from being closed.
    """

    def __init__(self) -> None:
        self._closers: list[Callable[[], object]] = []

    def __call__(self, client: T) -> T:
        """Register `client` to be closed at the end and hand it back (TypeError, and nothing
        registered, if it is no client this knows how to close)."""
        self._closers.append(closer(client))
        return client

    def close_all(self) -> None:
        while self._closers:
            close = self._closers.pop()
            with contextlib.suppress(Exception):
                close()

    def __enter__(self) -> KafkaClients:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_all()
