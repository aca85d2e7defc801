"""What a chaos workload needs from a client library: send one value, read a partition in order.

The workload (chaos/workload.py) owns the history, the pacing and the final read; a client only
moves bytes. Two implement this: liferaft's own client over gRPC (chaos/clients_liferaft.py) and
confluent-kafka (librdkafka) over the nodes' Kafka listeners (chaos/clients_kafka.py). Both are
judged by one checker, so what each outcome means is fixed here, not per library:

  Acked(offset)   the broker acknowledged the record with acks=all at `offset` (None: written,
                  but the acknowledgement carried no offset, as for a retry the broker answered
                  DUPLICATE_SEQUENCE_NUMBER for beyond its window).
  Refused(error)  the broker (or the library, before sending) refused it for a reason that means
                  "not written": an unknown partition, an oversized or corrupt record. The
                  checker fails a run that reads a refused value.
  Unknown(error)  anything else: a delivery timeout, a lost connection, a fatal producer state.
                  The record may or may not be in the log; the checker allows both.

A read that raises `ReadFailed` changed nothing (a poll `fail` in the history).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from chaos.history import Value

if TYPE_CHECKING:
    from chaos.answers import AnswerDropper
    from chaos.workload import WorkloadConfig
    from client import TopicPartition

__all__ = [
    "CLIENT_KINDS",
    "Acked",
    "Clients",
    "ReadFailed",
    "Reader",
    "Refused",
    "Sender",
    "Sent",
    "Unknown",
    "make_clients",
]

CLIENT_KINDS = ("liferaft", "kafka")


@dataclass(frozen=True, slots=True)
class Acked:
    offset: int | None


@dataclass(frozen=True, slots=True)
class Refused:
    error: str


@dataclass(frozen=True, slots=True)
class Unknown:
    error: str


Sent = Acked | Refused | Unknown


def acked(offset: int) -> Acked:
    """Acked at `offset`, where a negative offset means "written, offset unknown"."""
    return Acked(offset if offset >= 0 else None)


class ReadFailed(Exception):
    """A read raised (a lost connection, no leader): nothing was read, nothing changed."""


class Sender(Protocol):
    """One producer, bound to one partition; several tasks may `send` through it at once."""

    async def send(self, value: bytes) -> Sent: ...

    async def close(self) -> None: ...


class Reader(Protocol):
    """One consumer, assigned one partition from its first offset."""

    async def position(self) -> int:
        """The offset the next `read` should start at."""
        ...

    async def read(self, timeout_s: float) -> list[tuple[int, Value]]:
        """The next (offset, value) rows, in offset order (maybe none); ReadFailed if it
        failed."""
        ...

    async def end_offset(self) -> int:
        """The partition's high watermark, asked of the cluster now; ReadFailed if it failed."""
        ...

    async def close(self) -> None: ...


class Clients(Protocol):
    """A client library's producers and readers for one run."""

    name: str
    answers: AnswerDropper | None
    """The `answers` fault's hook in the producers' gRPC channels (None: not supported)."""

    def sender(self, tp: TopicPartition) -> Sender: ...

    def reader(self, tp: TopicPartition, *, final: bool) -> Reader:
        """A reader for the polls during the run, or (`final`) for the read after it."""
        ...

    def notes(self) -> list[str]:
        """What the run should report about the clients themselves (replaced producers...)."""
        ...

    async def close(self) -> None: ...


def make_clients(kind: str, bootstrap: str, config: WorkloadConfig) -> Clients:
    """The clients of `kind` (CLIENT_KINDS) for a cluster whose nodes' gRPC addresses are
    `bootstrap` (a Kafka client finds each node's Kafka listener through the port table)."""
    if kind == "liferaft":
        from chaos.clients_liferaft import LiferaftClients

        return LiferaftClients(bootstrap, config)
    if kind == "kafka":
        from chaos.clients_kafka import KafkaClients

        return KafkaClients(bootstrap, config)
    raise ValueError(f"client must be one of {', '.join(CLIENT_KINDS)}, not {kind!r}")
