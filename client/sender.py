"""How record batches travel: the Produce handler, and one sender task per partition.

Modelled on aiokafka's sender: the producer decides *what* to send (records, partition) and the
accumulator (client/accumulator.py) groups them into batches; this module knows *how* a batch
travels and what its answer means. Failover is the cluster core's (client/cluster.py).

Theory of operation (one PartitionSender per partition, one asyncio task each). The task takes
ready batches off the partition's queue in order and keeps at most `max_in_flight` of them in
the air at once (Kafka's max.in.flight.requests.per.connection, 5). With idempotence each batch
is stamped, when it is taken, with the producer id, the partition's epoch and the next sequence
number; the same bytes are sent on every retry, so the leader writes a batch once however often
it arrives (it answers a known batch with the offset it was written at).

Order across retries is Kafka's rule: a batch that the leader refuses as out of order while an
earlier batch of the partition is still on its way waits for that one, then is sent again. A
batch the leader refused for good (too large, say) was not written: the batches behind it are
renumbered to close the gap. A batch whose fate is unknown when its delivery timeout ends (it may
have been written) fails, and the partition starts a new epoch at sequence 0 for what follows,
which the leader accepts as a reset of this producer on this partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from client.accumulator import ProducerBatch, RecordAccumulator
from client.cluster import Cluster
from client.errors import (
    DeliveryTimeoutError,
    InvalidProducerEpochError,
    LiferaftError,
    OutOfOrderSequenceNumberError,
    UnknownProducerIdError,
    UnknownServerError,
)
from client.types import TopicPartition
from liferaft_proto import records
from liferaft_proto.v1 import broker_pb2

__all__ = [
    "ACKS_ALL",
    "PartitionSender",
    "ProduceResult",
    "ProducerIdentity",
    "Sender",
    "parse_acks",
    "server_timeout_ms",
]

log = logging.getLogger("liferaft.producer")

SEQ_MODULUS = 1 << 31
MAX_EPOCH = (1 << 15) - 1

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

    async def send(
        self, topic: str, partition: int, batch: bytes, *, timeout_ms: int | None = None
    ) -> ProduceResult:
        """Deliver one record batch (bytes from records.build_batch) to a partition.

        Retries retriable failures within timeout_ms (default delivery_timeout_ms). Without
        idempotence a retry after a lost answer may write the batch twice (at-least-once, as in
        Kafka); an idempotent batch (producer id and sequence set) is written once.
        """
        response = await self.cluster.call_leader(
            topic,
            partition,
            "Produce",
            lambda attempt_ms: self.build_request(topic, partition, batch, attempt_ms),
            timeout_ms=timeout_ms if timeout_ms is not None else self.delivery_timeout_ms,
        )
        return self.handle_response(response)


@dataclass(slots=True)
class ProducerIdentity:
    """An idempotent producer's id (from InitProducerId) and its starting epoch."""

    producer_id: int
    epoch: int


# Errors after which the batch was certainly not written (the leader refused it on sight).
_NOT_WRITTEN = (
    "CORRUPT_MESSAGE",
    "MESSAGE_TOO_LARGE",
    "INVALID_RECORD",
    "UNSUPPORTED_COMPRESSION_TYPE",
    "INVALID_REQUIRED_ACKS",
    "INVALID_REQUEST",
    "UNKNOWN_TOPIC_OR_PARTITION",
    "DUPLICATE_SEQUENCE_NUMBER",
)


class PartitionSender:
    """Sends one partition's batches, in order, at most max_in_flight at a time."""

    def __init__(
        self,
        tp: TopicPartition,
        sender: Sender,
        accumulator: RecordAccumulator,
        *,
        max_in_flight: int,
        compression: int,
        identity: ProducerIdentity | None,
    ) -> None:
        self.tp = tp
        self.sender = sender
        self.acc = accumulator
        self.max_in_flight = max_in_flight
        self.compression = compression
        self.identity = identity
        self.epoch = identity.epoch if identity is not None else records.NO_PRODUCER_EPOCH
        self.next_seq = 0
        self.in_flight: list[ProducerBatch] = []  # taken, not yet done; in sequence order
        self.wakeup = asyncio.Event()
        self.closing = False
        self.task: asyncio.Task[None] | None = None
        self._reset_needed = False

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    def wake(self) -> None:
        self.wakeup.set()

    @property
    def idle(self) -> bool:
        return not self.in_flight and self.acc.ready_at(self.tp, self.closing) is None

    async def _run(self) -> None:
        while True:
            self.wakeup.clear()
            now = time.monotonic()
            for batch in self.acc.expired(self.tp, now):
                self._finish(batch, DeliveryTimeoutError(self._expired_message(batch, sent=False)))
            ready = self.acc.ready_at(self.tp, self.closing)
            if ready is not None and ready <= now and len(self.in_flight) < self.max_in_flight:
                batch = self.acc.take(self.tp)
                self._seal(batch)
                self.in_flight.append(batch)
                task = asyncio.ensure_future(self._deliver(batch))
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
                continue
            if self.closing and self.idle:
                return
            timeout = None
            if ready is not None and len(self.in_flight) < self.max_in_flight:
                timeout = max(0.0, ready - now)
            q = self.acc.queues.get(self.tp)
            if q:
                expiry = max(0.0, q[0].deadline - now)
                timeout = expiry if timeout is None else min(timeout, expiry)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout)

    # -- stamping ------------------------------------------------------------------------------
    def _seal(self, batch: ProducerBatch) -> None:
        """Build the batch's bytes once; an idempotent one takes the next sequence numbers."""
        if self.identity is None:
            batch.data = records.build_batch(batch.records, compression=self.compression)
            return
        batch.epoch = self.epoch
        batch.base_sequence = self.next_seq
        self.next_seq = (self.next_seq + batch.count) % SEQ_MODULUS
        batch.data = records.build_batch(
            batch.records,
            producer_id=self.identity.producer_id,
            producer_epoch=batch.epoch,
            base_sequence=batch.base_sequence,
            compression=self.compression,
        )

    def _renumber(self, start: int, epoch: int, batches: list[ProducerBatch]) -> None:
        """Give batches that were never written new sequences from `start` (restamp: one
        re-hash each, no re-encoding)."""
        assert self.identity is not None
        seq = start
        for b in batches:
            assert b.data is not None
            b.epoch, b.base_sequence = epoch, seq
            b.data = records.restamp_producer(
                b.data,
                producer_id=self.identity.producer_id,
                producer_epoch=epoch,
                base_sequence=seq,
            )
            b.version += 1
            seq = (seq + b.count) % SEQ_MODULUS
        self.next_seq = seq
        self.epoch = epoch

    # -- delivering ----------------------------------------------------------------------------
    async def _deliver(self, batch: ProducerBatch) -> None:
        try:
            while True:
                remaining_ms = int((batch.deadline - time.monotonic()) * 1000)
                if remaining_ms <= 0:
                    raise DeliveryTimeoutError(self._expired_message(batch, sent=True))
                version = batch.version
                assert batch.data is not None
                try:
                    result = await self.sender.send(
                        self.tp.topic, self.tp.partition, batch.data, timeout_ms=remaining_ms
                    )
                except (OutOfOrderSequenceNumberError, UnknownProducerIdError) as e:
                    if batch.version != version:
                        continue  # renumbered while this copy was on its way: send the new one
                    earlier = self._earlier(batch)
                    if earlier:
                        # Kafka's rule: an earlier batch is still on its way (being retried);
                        # this one follows it, then goes again.
                        await asyncio.wait([asyncio.ensure_future(b.done.wait()) for b in earlier])
                        continue
                    if self._reset_needed:
                        self._start_new_epoch()
                        continue
                    raise e
                self._finish(batch, None, result)
                return
        except LiferaftError as e:
            self._failed(batch, e)
        except Exception as e:  # a bug: fail the records rather than hang their futures
            log.exception("sending a batch to %s failed", self.tp)
            self._failed(batch, UnknownServerError(None, f"{type(e).__name__}: {e}"))

    def _earlier(self, batch: ProducerBatch) -> list[ProducerBatch]:
        out = []
        for b in self.in_flight:
            if b is batch:
                break
            if not b.done.is_set():
                out.append(b)
        return out

    def _failed(self, batch: ProducerBatch, error: LiferaftError) -> None:
        later: list[ProducerBatch] = []
        if batch in self.in_flight:
            later = self.in_flight[self.in_flight.index(batch) + 1 :]
        self._finish(batch, error)
        if self.identity is None or batch.epoch != self.epoch:
            return
        if error.code_name in _NOT_WRITTEN and not isinstance(error, DeliveryTimeoutError):
            # Certainly not written: close the gap it leaves.
            self._renumber(batch.base_sequence, self.epoch, later)
        elif not isinstance(error, InvalidProducerEpochError):
            # It may have been written: what follows starts a new epoch at sequence 0, as soon
            # as nothing earlier is in the air (at once if nothing is).
            self._reset_needed = True
            if not later:
                self._start_new_epoch()

    def _start_new_epoch(self) -> None:
        self._reset_needed = False
        pending = [b for b in self.in_flight if not b.done.is_set()]
        epoch = self.epoch + 1 if self.epoch < MAX_EPOCH else 0
        log.info("%s: starting producer epoch %d at sequence 0", self.tp, epoch)
        self._renumber(0, epoch, pending)

    def _finish(
        self, batch: ProducerBatch, error: BaseException | None, result: ProduceResult | None = None
    ) -> None:
        if error is not None:
            batch.fail(error)
        else:
            assert result is not None
            batch.complete(result.base_offset, result.log_start_offset, result.log_append_time_ms)
            if batch.epoch == self.epoch and not self._earlier(batch):
                self._reset_needed = False  # what went before it was written after all
        if batch in self.in_flight:
            self.in_flight.remove(batch)
        self.acc.release(batch)
        self.wake()

    def _expired_message(self, batch: ProducerBatch, *, sent: bool) -> str:
        where = "sent but not acknowledged" if sent else "not sent"
        return (
            f"{batch.count} records for {self.tp} were {where} within delivery_timeout_ms="
            f"{int(self.acc.delivery_timeout_s * 1000)}"
        )
