"""The chaos workload's clients through liferaft's own client (gRPC): `--client liferaft`.

Each sender is one `client.Producer` (acks=all, idempotent, the workload's timeouts and
backoffs) whose gRPC channels pass through the `answers` fault's interceptor; each reader one
`client.Consumer` assigned its partition from offset 0. Errors become outcomes here, at the
boundary (chaos/clients.py says what each means).

Transports (issue 18): in a run that injects the `answers` fault the senders keep to gRPC
(`stream_transport=False`, WorkloadConfig.senders_on_grpc), so that the fault's interceptor
sees every Produce; otherwise they produce on the nodes' stream listeners (framed TCP), the
client's default, as the readers always tail there. No client traffic goes
through the fault proxies or the iptables cuts (they sit on the node-to-node links only,
chaos/network.py), so neither transport is a way around a fault.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from chaos.answers import AnswerDropper
from chaos.clients import ReadFailed, Refused, Sent, Unknown, acked
from chaos.history import Value
from client import (
    AdminClient,
    Consumer,
    ConsumerRecord,
    CorruptMessageError,
    InvalidRecordError,
    InvalidRequiredAcksError,
    InvalidTopicError,
    LiferaftError,
    MessageTooLargeError,
    Producer,
    TopicPartition,
    UnknownTopicOrPartitionError,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from chaos.workload import WorkloadConfig

__all__ = ["DEFINITE_FAILURES", "LiferaftClients"]

DEFINITE_FAILURES = (
    UnknownTopicOrPartitionError,
    InvalidTopicError,
    MessageTooLargeError,
    InvalidRecordError,
    CorruptMessageError,
    InvalidRequiredAcksError,
)
"""Errors that a send raises only when the broker refused the batch before writing it."""


def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:300]


class LiferaftSender:
    def __init__(
        self,
        bootstrap: str,
        tp: TopicPartition,
        cfg: WorkloadConfig,
        answers: AnswerDropper | None,
    ):
        self.tp = tp
        self._producer = Producer(
            bootstrap,
            acks="all",
            delivery_timeout_ms=cfg.delivery_timeout_ms,
            request_timeout_ms=cfg.request_timeout_ms,
            retry_backoff_ms=cfg.retry_backoff_ms,
            retry_backoff_max_ms=cfg.retry_backoff_max_ms,
            grpc_interceptors=answers.interceptors() if answers is not None else (),
            stream_transport=answers is None,
            **dict(cfg.security),  # type: ignore[arg-type]
        )

    async def send(self, value: bytes) -> Sent:
        try:
            meta = await self._producer.send_and_wait(
                self.tp.topic, value, partition=self.tp.partition
            )
        except DEFINITE_FAILURES as e:
            return Refused(error_text(e))
        except LiferaftError as e:
            return Unknown(error_text(e))
        return acked(meta.offset)

    async def close(self) -> None:
        await self._producer.close()


class LiferaftReader:
    def __init__(
        self, bootstrap: str, tp: TopicPartition, cfg: WorkloadConfig, admin: _Admin, final: bool
    ):
        self.tp = tp
        self._admin = admin
        self._consumer = Consumer(
            bootstrap,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100 if final else 200,
            request_timeout_ms=5_000 if final else cfg.request_timeout_ms,
            delivery_timeout_ms=30_000 if final else cfg.delivery_timeout_ms,
            retry_backoff_ms=cfg.retry_backoff_ms,
            retry_backoff_max_ms=cfg.retry_backoff_max_ms,
            **dict(cfg.security),  # type: ignore[arg-type]
        )
        self._consumer.assign([tp])
        self._consumer.seek(tp, 0)

    async def position(self) -> int:
        try:
            return await self._consumer.position(self.tp)
        except LiferaftError as e:
            raise ReadFailed(error_text(e)) from e

    async def read(self, timeout_s: float) -> list[tuple[int, Value]]:
        try:
            got = await self._consumer.getmany(self.tp, timeout_ms=int(timeout_s * 1000))
        except LiferaftError as e:
            raise ReadFailed(error_text(e)) from e
        return _rows(got.get(self.tp, []))

    async def end_offset(self) -> int:
        try:
            admin = await self._admin.get()
            return (await admin.list_offsets({self.tp: "latest"}))[self.tp].offset
        except LiferaftError as e:
            raise ReadFailed(error_text(e)) from e

    async def close(self) -> None:
        await self._consumer.close()


class _Admin:
    """One AdminClient for the readers' high-watermark look-ups, made on first use."""

    def __init__(self, bootstrap: str, cfg: WorkloadConfig) -> None:
        self.bootstrap = bootstrap
        self.cfg = cfg
        self._admin: AdminClient | None = None

    async def get(self) -> AdminClient:
        if self._admin is None:
            admin = AdminClient(
                self.bootstrap,
                timeout_ms=10_000,
                request_timeout_ms=5_000,
                **dict(self.cfg.security),  # type: ignore[arg-type]
            )
            await admin.start()
            self._admin = admin
        return self._admin

    async def close(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()
            self._admin = None


class LiferaftClients:
    name = "liferaft"

    def __init__(self, bootstrap: str, config: WorkloadConfig) -> None:
        self.bootstrap = bootstrap
        self.config = config
        # Only a run that injects the `answers` fault has the dropper (and senders on gRPC).
        self.answers: AnswerDropper | None = AnswerDropper() if config.senders_on_grpc else None
        self._admin = _Admin(bootstrap, config)

    def sender(self, tp: TopicPartition) -> LiferaftSender:
        return LiferaftSender(self.bootstrap, tp, self.config, self.answers)

    def reader(self, tp: TopicPartition, *, final: bool) -> LiferaftReader:
        return LiferaftReader(self.bootstrap, tp, self.config, self._admin, final)

    def notes(self) -> list[str]:
        return []

    async def close(self) -> None:
        await self._admin.close()


def _rows(records: Sequence[ConsumerRecord]) -> list[tuple[int, Value]]:
    """(offset, value) pairs; the workload's values are UTF-8 text."""
    return [(r.offset, r.value.decode("utf-8", "replace") if r.value else "") for r in records]
