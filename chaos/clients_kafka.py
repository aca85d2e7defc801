"""The chaos workload's clients through confluent-kafka (librdkafka): `--client kafka`.

Unmodified Kafka clients against the nodes' Kafka listeners (found from each node's address by
the port table, liferaft_proto/ports.py), judged by the same checker as liferaft's own client.

Senders. One `confluent_kafka.Producer` per sender, idempotent (enable.idempotence=true, so
acks=all and at most 5 requests in flight), message.timeout.ms = the workload's delivery
timeout. A send is `produce()` plus the delivery report of that one message:

  - A report without an error is the acknowledgement: acks=all, after however many attempts
    librdkafka made inside. Its retries are the idempotent kind (same producer id, epoch and
    sequence), so an attempt written before its answer was lost is answered "duplicate" on the
    retry, and librdkafka reports success with the offset the broker gave (negative when the
    broker no longer knew it: written, offset unknown).
  - A report with an error is *not* an acknowledgement. It is a definite failure only for the
    errors a broker gives before it writes anything (unknown partition, invalid or oversized
    record: DEFINITE_FAILURES). Every other error is unknown, above all _MSG_TIMED_OUT: a
    message that timed out while a request carrying it was in flight may be in the log
    (librdkafka calls it "possibly persisted", and moves its producer to a new epoch).
  - `produce()` raising (a full queue, a producer in a fatal state) means librdkafka never took
    the message: a definite failure. A fatal producer is replaced by a new one (a new
    producer id), and the run's notes say how often.

librdkafka serves delivery reports from `poll()`; each sender has one thread that polls and
hands each report to the event loop (`call_soon_threadsafe`), so the workload's tasks await a
send like any other.

Readers. One `confluent_kafka.Consumer` per reader, assigned its partition at OFFSET_BEGINNING
(no group membership, nothing committed); its blocking calls run on the clients' thread pool.
The high watermark is asked of the leader (`get_watermark_offsets(cached=False)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import confluent_kafka as ck

from chaos.clients import ReadFailed, Refused, Sent, Unknown, acked
from chaos.history import Value
from liferaft_proto.ports import KAFKA, listener_address

if TYPE_CHECKING:
    from collections.abc import Callable

    from chaos.answers import AnswerDropper
    from chaos.workload import WorkloadConfig
    from client import TopicPartition

__all__ = ["DEFINITE_FAILURES", "KafkaClients", "kafka_bootstrap", "outcome"]

log = logging.getLogger("liferaft.chaos.kafka")
"""librdkafka's own log lines (connection refused to a killed node, and so on) go here."""

T = TypeVar("T")

DEFINITE_FAILURES = frozenset(
    {
        ck.KafkaError.UNKNOWN_TOPIC_OR_PART,
        ck.KafkaError._UNKNOWN_PARTITION,
        ck.KafkaError._UNKNOWN_TOPIC,
        ck.KafkaError.TOPIC_EXCEPTION,
        ck.KafkaError.MSG_SIZE_TOO_LARGE,
        ck.KafkaError.INVALID_RECORD,
        ck.KafkaError.INVALID_MSG,
        ck.KafkaError.INVALID_REQUIRED_ACKS,
    }
)
"""Delivery errors that mean the broker (or librdkafka) refused the record before writing it:
the same list as liferaft's client's (chaos/clients_liferaft.py), in Kafka's codes."""


def kafka_bootstrap(bootstrap: str) -> str:
    """The nodes' Kafka listeners, from their gRPC addresses (the port table's offset)."""
    return ",".join(
        listener_address(a.strip(), KAFKA.offset) for a in bootstrap.split(",") if a.strip()
    )


def error_text(err: ck.KafkaError) -> str:
    return f"{err.name()}: {err.str()}"[:300]


def outcome(err: ck.KafkaError | None, offset: int) -> Sent:
    """What one delivery report says about its message (module docstring)."""
    if err is None:
        return acked(offset)
    if err.code() in DEFINITE_FAILURES:
        return Refused(error_text(err))
    return Unknown(error_text(err))


def _common(bootstrap: str, cfg: WorkloadConfig) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "client.id": "liferaft-chaos",
        # A paused node keeps its connections open and answers nothing: give up on a request
        # to it (metadata included) after this, not librdkafka's 60 s.
        "socket.timeout.ms": max(10_000, 2 * cfg.request_timeout_ms),
        "socket.connection.setup.timeout.ms": 5_000,
        "topic.metadata.refresh.interval.ms": 2_000,
        "reconnect.backoff.ms": cfg.retry_backoff_ms,
        "reconnect.backoff.max.ms": cfg.retry_backoff_max_ms,
        "retry.backoff.ms": cfg.retry_backoff_ms,
        "retry.backoff.max.ms": cfg.retry_backoff_max_ms,
        "logger": log,
    }


class KafkaSender:
    def __init__(self, bootstrap: str, tp: TopicPartition, cfg: WorkloadConfig, notes: list[str]):
        self.tp = tp
        self._conf = {
            **_common(bootstrap, cfg),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 1,
            "message.timeout.ms": cfg.delivery_timeout_ms,
            "request.timeout.ms": cfg.request_timeout_ms,
            "error_cb": self._on_error,
        }
        self._report_wait_s = cfg.delivery_timeout_ms / 1000 + 30
        self._notes = notes
        self._lock = threading.Lock()
        self._fatal: str | None = None
        self._producer = ck.Producer(self._conf)
        self._polled = [self._producer]  # the current producer, and replaced ones draining
        self._stop = threading.Event()
        self._poller = threading.Thread(
            target=self._poll_loop, name=f"chaos-kafka-{tp.partition}", daemon=True
        )
        self._poller.start()

    def _on_error(self, err: ck.KafkaError) -> None:
        """librdkafka's global errors (on the poller thread); only a fatal one matters."""
        if err.fatal():
            with self._lock:
                self._fatal = error_text(err)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                producers = list(self._polled)
            for p in producers:
                p.poll(0.05)
            with self._lock:
                self._polled = [p for p in self._polled if p is self._producer or len(p) > 0]

    def _replace_if_fatal(self) -> None:
        with self._lock:
            if self._fatal is None:
                return
            self._notes.append(f"{self.tp.topic}/{self.tp.partition}: {self._fatal}; replaced")
            log.warning("fatal producer error (%s): a new producer replaces it", self._fatal)
            self._fatal = None
            self._producer = ck.Producer(self._conf)
            self._polled.append(self._producer)

    async def send(self, value: bytes) -> Sent:
        self._replace_if_fatal()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Sent] = loop.create_future()

        def on_delivery(err: ck.KafkaError | None, msg: ck.Message) -> None:
            if err is not None and err.fatal():
                with self._lock:
                    self._fatal = error_text(err)
            result = outcome(err, _offset(msg) if err is None else -1)
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(_settle, done, result)

        try:
            self._producer.produce(
                self.tp.topic, value=value, partition=self.tp.partition, on_delivery=on_delivery
            )
        except BufferError as e:
            return Refused(f"BufferError: {e}")
        except ck.KafkaException as e:
            err = e.args[0]
            if err.fatal():
                with self._lock:
                    self._fatal = error_text(err)
            return Refused(error_text(err))
        try:
            return await asyncio.wait_for(asyncio.shield(done), self._report_wait_s)
        except TimeoutError:
            return Unknown(f"no delivery report within {self._report_wait_s:.0f}s")

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self._stop.set()
        self._poller.join(10)
        for p in self._polled:
            p.flush(2.0)
            p.purge()
            p.flush(0)


def _offset(msg: ck.Message) -> int:
    offset = msg.offset()
    return -1 if offset is None else int(offset)


def _settle(done: asyncio.Future[Sent], result: Sent) -> None:
    if not done.done():
        done.set_result(result)


class KafkaReader:
    def __init__(
        self,
        bootstrap: str,
        tp: TopicPartition,
        cfg: WorkloadConfig,
        pool: ThreadPoolExecutor,
        final: bool,
    ):
        self.tp = tp
        self._pool = pool
        self._lock = threading.Lock()  # one blocking call at a time (close waits for a read)
        self._consumer = ck.Consumer(
            {
                **_common(bootstrap, cfg),
                "group.id": f"liferaft-chaos-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                "fetch.wait.max.ms": 100 if final else 200,
                "check.crcs": True,
            }
        )
        self._ktp = ck.TopicPartition(tp.topic, tp.partition)
        self._consumer.assign([ck.TopicPartition(tp.topic, tp.partition, ck.OFFSET_BEGINNING)])
        self._next = 0
        """Right after the last record read: where the next read should start."""

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def locked() -> T:
            with self._lock:
                return fn(*args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self._pool, locked)

    async def position(self) -> int:
        return self._next

    async def read(self, timeout_s: float) -> list[tuple[int, Value]]:
        try:
            msgs = await self._call(self._consumer.consume, 1000, timeout_s)
        except ck.KafkaException as e:
            raise ReadFailed(error_text(e.args[0])) from e
        rows: list[tuple[int, Value]] = []
        errors: list[ck.KafkaError] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                errors.append(err)
                continue
            raw = m.value()
            rows.append((_offset(m), raw.decode("utf-8", "replace") if raw else ""))
        if rows:
            self._next = rows[-1][0] + 1
        elif errors:
            raise ReadFailed(error_text(errors[0]))
        return rows

    async def end_offset(self) -> int:
        try:
            marks = await self._call(
                self._consumer.get_watermark_offsets, self._ktp, timeout=5.0, cached=False
            )
        except ck.KafkaException as e:
            raise ReadFailed(error_text(e.args[0])) from e
        if marks is None:
            raise ReadFailed("no answer to the high-watermark look-up within 5s")
        return int(marks[1])

    async def close(self) -> None:
        await self._call(self._consumer.close)


class KafkaClients:
    name = "kafka"

    def __init__(self, bootstrap: str, config: WorkloadConfig) -> None:
        self.bootstrap = kafka_bootstrap(bootstrap)
        self.config = config
        self.answers: AnswerDropper | None = None
        self._notes: list[str] = []
        self._pool = ThreadPoolExecutor(
            max_workers=config.partitions + 4, thread_name_prefix="chaos-kafka-read"
        )

    def sender(self, tp: TopicPartition) -> KafkaSender:
        return KafkaSender(self.bootstrap, tp, self.config, self._notes)

    def reader(self, tp: TopicPartition, *, final: bool) -> KafkaReader:
        return KafkaReader(self.bootstrap, tp, self.config, self._pool, final)

    def notes(self) -> list[str]:
        return list(self._notes)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
