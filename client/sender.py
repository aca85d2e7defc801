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

What the leader's answers mean for the sequence numbers, and how every way they can go wrong
recovers (a new epoch, or a fresh producer id), is client/sequences.py's SequenceBook: plain
decisions that this module's loop asks for, then awaits. Two rules matter most: a batch keeps its
stamp for as long as a copy of it may be written (so it is never written twice), and the answer
DUPLICATE_SEQUENCE_NUMBER means written (the records are acknowledged with offset -1).

No silent hang: every batch ends at its delivery timeout at the latest, and if the loop or a
call's bookkeeping raises, every batch of the partition fails with the cause.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from client.accumulator import ProducerBatch, RecordAccumulator
from client.cluster import Cluster, FirstAttempt
from client.errors import DeliveryTimeoutError, LiferaftError, UnknownServerError
from client.sequences import (
    MAX_EPOCH,
    SEQ_MODULUS,
    Bump,
    Complete,
    Fail,
    SequenceBook,
    Stamp,
    Verdict,
)
from client.types import TopicPartition
from liferaft_proto import records
from liferaft_proto.v1 import broker_pb2

__all__ = [
    "ACKS_ALL",
    "MAX_EPOCH",
    "SEQ_MODULUS",
    "IdentitySource",
    "PartitionSender",
    "ProduceResult",
    "ProducerIdentity",
    "Sender",
    "parse_acks",
    "server_timeout_ms",
]

log = logging.getLogger("liferaft.producer")

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
        self,
        topic: str,
        partition: int,
        batch: bytes,
        *,
        timeout_ms: int | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
        failed_first: FirstAttempt | None = None,
    ) -> ProduceResult:
        """Deliver one record batch (bytes from records.build_batch) to a partition.

        Retries retriable failures within timeout_ms (default delivery_timeout_ms). Without
        idempotence a retry after a lost answer may write the batch twice (at-least-once, as in
        Kafka); an idempotent batch (producer id and sequence set) is written once.
        on_retry hears every failed attempt that is retried (the sequence book needs to know
        whether a copy may have been written).
        """
        response = await self.cluster.call_leader(
            topic,
            partition,
            "Produce",
            lambda attempt_ms: self.build_request(topic, partition, batch, attempt_ms),
            timeout_ms=timeout_ms if timeout_ms is not None else self.delivery_timeout_ms,
            on_retry=on_retry,
            failed_first=failed_first,
        )
        return self.handle_response(response)


@dataclass(slots=True)
class ProducerIdentity:
    """An idempotent producer's id (from InitProducerId) and its starting epoch."""

    producer_id: int
    epoch: int


_CALL_GRACE_S = 1.0
"""How long past its budget a Produce call may run before the sender gives up on it."""

IdentitySource = Callable[[], Awaitable[ProducerIdentity]]
"""Fetches a fresh producer id (InitProducerId), for a partition whose epoch cannot go on."""


class PartitionSender:
    """Sends one partition's batches, in order, at most max_in_flight at a time.

    The loop in `_run` decides (with client/sequences.py's SequenceBook for an idempotent
    producer) and starts each send call: its first attempt straight onto the leader's open
    produce stream when it can (`_try_at_once`, the answer handled in the stream's callback),
    else, and for whatever follows a failed first attempt, one task per call (`_call`); each
    call's answer goes back to the book, which says what it means, and wakes the loop when it
    has something to do. Every batch ends: acknowledged, or failed
    with its cause, at the latest at its delivery timeout; if the loop itself dies, every
    batch of the partition fails with the cause (no future is left pending).
    """

    def __init__(
        self,
        tp: TopicPartition,
        sender: Sender,
        accumulator: RecordAccumulator,
        *,
        max_in_flight: int,
        compression: int,
        identity: ProducerIdentity | None,
        fresh_identity: IdentitySource | None = None,
    ) -> None:
        self.tp = tp
        self.sender = sender
        self._at_once = isinstance(sender, Sender)  # (tests' stand-ins: only send())
        self.acc = accumulator
        self.max_in_flight = max_in_flight
        self.compression = compression
        self.identity = identity
        self.fresh_identity = fresh_identity
        self.book = (
            SequenceBook(identity.producer_id, identity.epoch, max_in_flight)
            if identity is not None
            else None
        )
        self.in_flight: list[ProducerBatch] = []  # taken, not yet done; in order
        self.wakeup = asyncio.Event()
        self._alarms: list[tuple[float, asyncio.TimerHandle]] = []  # a heap (_alarm)
        self.closing = False
        self.task: asyncio.Task[None] | None = None
        # The call under way per batch: its task, or its first attempt's answer (_try_at_once).
        self._calls: dict[ProducerBatch, asyncio.Future[Any]] = {}
        self._late: set[asyncio.Future[Any]] = set()  # calls cancelled by their deadline
        self._sending: set[ProducerBatch] = set()  # without idempotence: a call under way
        self._renewing: asyncio.Task[None] | None = None
        self._renew_after = 0.0
        self._error: LiferaftError | None = None  # what batches fail with once it died
        self.failure: BaseException | None = None
        """Why the loop died, if it did (every batch of the partition failed with it)."""

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())
        self.task.add_done_callback(self._loop_ended)

    def wake(self) -> None:
        self.wakeup.set()

    def look_again(self) -> None:
        """send() opened a batch or filled one. A batch that lingers needs the loop only when
        its linger time is up: set the loop's alarm for then instead of a turn now that would
        only set it (issue 18: one loop turn per batch fewer with linger_ms > 0)."""
        if self.task is None or self.task.done():
            self.wake()
            return
        ready = self.acc.ready_at(self.tp, self.closing)
        if ready is not None and ready > time.monotonic():
            self._alarm(ready)
        else:
            self.wake()

    @property
    def idle(self) -> bool:
        return not self.in_flight and self.acc.ready_at(self.tp, self.closing) is None

    # -- the loop: decide, then start what was decided -----------------------------------------
    async def _run(self) -> None:
        while True:
            self.wakeup.clear()
            now = time.monotonic()
            for batch in self.acc.expired(self.tp, now):
                self._finish(batch, DeliveryTimeoutError(self._expired_message(batch, sent=False)))
            self._expire_held(now)
            self._cancel_overdue(now)
            self._maybe_bump(now)
            ready = self.acc.ready_at(self.tp, self.closing)
            while ready is not None and ready <= now and self._may_take():
                batch = self.acc.take(self.tp)
                self.in_flight.append(batch)  # first: if sealing fails, _die fails it too
                self._seal(batch)
                ready = self.acc.ready_at(self.tp, self.closing)
            for batch in self._to_send():
                self._start_call(batch)
            if self.closing and self.idle:
                return
            timeout = None
            if ready is not None and self._may_take():
                timeout = max(0.0, ready - now)
            # A batch with a call under way: its call's grace deadline (_cancel_overdue);
            # without one, its delivery deadline (_expire_held).
            calls = self._calls
            deadlines = [
                b.deadline + _CALL_GRACE_S if b in calls else b.deadline for b in self.in_flight
            ]
            q = self.acc.queues.get(self.tp)
            if q:
                deadlines.append(q[0].deadline)
            if self._renew_after > now:
                deadlines.append(self._renew_after)
            if deadlines:
                expiry = max(0.0, min(deadlines) - now)
                timeout = expiry if timeout is None else min(timeout, expiry)
            if self.wakeup.is_set():
                await asyncio.sleep(0)  # woken meanwhile: go round again, after the others
                continue
            if timeout is not None:
                self._alarm(now + timeout)
            await self.wakeup.wait()

    def _alarm(self, when: float) -> None:
        """Wake the loop at monotonic time `when` at the latest. A timer already due by then
        does (the loop wakes early, looks and sets another), so one long timer (the delivery
        deadline, minutes out) serves every batch until it fires, instead of a timer made and
        cancelled per loop turn (issue 18: asyncio.timeout per wait, a timer and a context
        object, cost the sender more than the rest of its loop turn)."""
        alarms = self._alarms
        if alarms and alarms[0][0] <= when:
            return
        loop = asyncio.get_running_loop()
        handle = loop.call_later(max(0.0, when - time.monotonic()), self._ring, when)
        heapq.heappush(alarms, (when, handle))

    def _ring(self, when: float) -> None:
        alarms = self._alarms
        while alarms and alarms[0][0] <= when:
            heapq.heappop(alarms)
        self.wakeup.set()

    def _silence(self) -> None:
        alarms, self._alarms = self._alarms, []
        for _, handle in alarms:
            handle.cancel()

    def _cancel_overdue(self, now: float) -> None:
        """Calls still under way past their batch's delivery deadline and grace (a call keeps to
        its budget by itself; this only makes sure of it): cancel them, and _call turns that
        into a timeout. The loop's own alarm times this, not a timer per call (issue 18)."""
        for batch, task in self._calls.items():
            if batch.deadline + _CALL_GRACE_S <= now and task not in self._late:
                self._late.add(task)
                task.cancel()

    def _may_take(self) -> bool:
        if self.book is not None:
            return self.book.may_stamp()
        return len(self.in_flight) < self.max_in_flight

    def _to_send(self) -> list[ProducerBatch]:
        if self.book is not None:
            return self.book.to_send()
        return [b for b in self.in_flight if b not in self._sending]

    def _expire_held(self, now: float) -> None:
        """Batches past their delivery timeout with no call under way (a call ends by itself
        at the deadline)."""
        if self.book is None:
            return
        for batch in list(self.in_flight):
            if batch.deadline <= now and batch in self.book.to_expire():
                sent = self.book.is_ambiguous(batch)
                err = DeliveryTimeoutError(self._expired_message(batch, sent=sent))
                self._apply(batch, self.book.expire(batch, err))

    def _maybe_bump(self, now: float) -> None:
        book = self.book
        if book is None:
            return
        step = book.maybe_bump()
        if step is Bump.EPOCH:
            log.info("%s: starting producer epoch %d at sequence 0", self.tp, book.epoch)
        elif step is Bump.FRESH_ID and self._renewing is None and now >= self._renew_after:
            self._renewing = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        """KIP-360: a fresh producer id for this partition, when its epoch cannot go on."""
        assert self.book is not None
        try:
            if self.fresh_identity is None:
                raise UnknownServerError(None, "no way to fetch a fresh producer id")
            identity = await self.fresh_identity()
        except Exception as e:  # retried from the loop after a pause; batches time out meanwhile
            log.warning("%s: could not get a fresh producer id: %s", self.tp, e)
            self._renew_after = time.monotonic() + 1.0
        else:
            if not self.book.sending:
                log.info(
                    "%s: producer id %d, epoch %d (fresh)",
                    self.tp,
                    identity.producer_id,
                    identity.epoch,
                )
                self.book.adopt(identity.producer_id, identity.epoch)
        finally:
            self._renewing = None
            self.wake()

    # -- stamping ------------------------------------------------------------------------------
    def _seal(self, batch: ProducerBatch) -> None:
        """Build the batch's bytes once; an idempotent one takes the next sequence numbers."""
        if self.book is None:
            batch.data = records.build_batch(batch.records, compression=self.compression)
            return
        stamp = self.book.stamp(batch)
        batch.epoch, batch.base_sequence = stamp.epoch, stamp.base_sequence
        batch.data = records.build_batch(
            batch.records,
            producer_id=stamp.producer_id,
            producer_epoch=stamp.epoch,
            base_sequence=stamp.base_sequence,
            compression=self.compression,
        )
        batch.stamp = stamp

    def _bytes(self, batch: ProducerBatch, stamp: Stamp | None) -> bytes:
        """The batch's bytes with its current stamp (restamped, one re-hash, when renumbered)."""
        assert batch.data is not None
        if stamp is not None and stamp != batch.stamp:
            batch.data = records.restamp_producer(
                batch.data,
                producer_id=stamp.producer_id,
                producer_epoch=stamp.epoch,
                base_sequence=stamp.base_sequence,
            )
            batch.epoch, batch.base_sequence, batch.stamp = stamp.epoch, stamp.base_sequence, stamp
            batch.version += 1
        return batch.data

    # -- sending -------------------------------------------------------------------------------
    def _start_call(self, batch: ProducerBatch) -> None:
        stamp = self.book.started(batch) if self.book is not None else None
        if self.book is None:
            self._sending.add(batch)
        if not self._try_at_once(batch, stamp):
            self._spawn(batch, stamp, None, 0)

    def _spawn(
        self, batch: ProducerBatch, stamp: Stamp | None, first: FirstAttempt | None, budget_ms: int
    ) -> None:
        task = asyncio.ensure_future(self._call(batch, stamp, first, budget_ms))
        self._calls[batch] = task
        task.add_done_callback(functools.partial(self._call_ended, batch))

    def _try_at_once(self, batch: ProducerBatch, stamp: Stamp | None) -> bool:
        """The call's first attempt straight onto the leader's open produce stream, its answer
        handled in the stream's callback (_answered): no task, no coroutines, no wake-up per
        batch when it succeeds (issue 18: the client's task switches per request). Anything
        else (a failure, nothing open to send on) goes the way of `_call`, which carries on
        from the failed attempt exactly as if it had made it."""
        remaining_ms = int((batch.deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0 or not self._at_once:
            return False
        try:
            data = self._bytes(batch, stamp)
        except Exception:
            return False  # _call fails the batch with it
        sender, tp = self.sender, self.tp

        def build(attempt_ms: int) -> broker_pb2.ProduceRequest:
            return sender.build_request(tp.topic, tp.partition, data, attempt_ms)

        def done(outcome: Any) -> None:
            self._answered(batch, stamp, tried, remaining_ms, outcome)

        tried = sender.cluster.try_produce(
            tp.topic, tp.partition, build, time.monotonic() + remaining_ms / 1000, done
        )
        if tried is None:
            return False
        self._calls[batch] = tried[0]
        return True

    def _answered(
        self,
        batch: ProducerBatch,
        stamp: Stamp | None,
        tried: tuple[asyncio.Future[Any], FirstAttempt] | None,
        budget_ms: int,
        outcome: Any,
    ) -> None:
        """The answer to a batch's first attempt sent by _try_at_once."""
        assert tried is not None
        fut, first = tried
        if self._calls.get(batch) is fut:
            del self._calls[batch]
        late = fut in self._late
        self._late.discard(fut)
        if self.failure is not None or batch.finished:
            return  # the sender died (the batch failed with it), or the batch ended otherwise
        if isinstance(outcome, broker_pb2.ProduceResponse):
            result = self.sender.handle_response(outcome)
            self._conclude(
                batch,
                Complete(result.base_offset, result.log_start_offset, result.log_append_time_ms),
            )
            return
        if isinstance(outcome, asyncio.CancelledError):
            if not late:
                return  # cancelled by _die: the batch failed with its cause
            self._conclude(
                batch,
                DeliveryTimeoutError(
                    f"{self._expired_message(batch, sent=True)}: the Produce call did not end"
                ),
            )
            return
        if not isinstance(outcome, Exception):
            outcome = UnknownServerError(None, f"{type(outcome).__name__}: {outcome}")
        go_on = self.sender.cluster.produce_attempt_failed(
            self.tp.topic, self.tp.partition, first, outcome
        )
        # The rest of the call: retries as call_leader makes them, or the failure as it
        # raises it (go_on None: no stream there after all, nothing sent: a call anew).
        self._spawn(batch, stamp, go_on, budget_ms)

    async def _call(
        self,
        batch: ProducerBatch,
        stamp: Stamp | None,
        first: FirstAttempt | None = None,
        budget_ms: int = 0,
    ) -> None:
        outcome: Complete | LiferaftError
        try:
            if first is not None:
                remaining_ms = budget_ms  # the call's budget, its clock from first.started
            else:
                remaining_ms = int((batch.deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or batch.deadline <= time.monotonic():
                raise DeliveryTimeoutError(self._expired_message(batch, sent=True))
            data = self._bytes(batch, stamp)
            book = self.book
            on_retry = (lambda e: book.attempt_failed(batch, e)) if book is not None else None
            # The call keeps to its budget by itself; the loop makes sure of it: past the
            # batch's deadline and grace it cancels this task (_cancel_overdue), as
            # asyncio.timeout would, without a timer or a context object per batch (issue 18).
            try:
                more = {"failed_first": first} if first is not None else {}
                result = await self.sender.send(
                    self.tp.topic,
                    self.tp.partition,
                    data,
                    timeout_ms=remaining_ms,
                    on_retry=on_retry,
                    **more,
                )
            except asyncio.CancelledError:
                # Ours (the deadline) and no one else's: the call did not end in time.
                task = asyncio.current_task()
                if task is None or task not in self._late or task.uncancel() > 0:
                    raise
                raise TimeoutError from None
            outcome = Complete(
                result.base_offset, result.log_start_offset, result.log_append_time_ms
            )
        except LiferaftError as e:
            outcome = e
        except TimeoutError:
            outcome = DeliveryTimeoutError(
                f"{self._expired_message(batch, sent=True)}: the Produce call did not end"
            )
        except Exception as e:  # a bug: fail the records with it rather than hang their futures
            log.exception("sending a batch to %s failed", self.tp)
            outcome = UnknownServerError(None, f"{type(e).__name__}: {e}")
        self._conclude(batch, outcome)

    def _conclude(self, batch: ProducerBatch, outcome: Complete | LiferaftError) -> None:
        """A send call ended: what its outcome means for the batch (the book decides)."""
        if isinstance(outcome, DeliveryTimeoutError) and not outcome.message.startswith(
            f"{batch.count} records"
        ):
            outcome = DeliveryTimeoutError(
                f"{self._expired_message(batch, sent=True)}: {outcome.message}",
                outcome.last_error,
            )
        if self.book is None:
            self._sending.discard(batch)
            verdict: Verdict = outcome if isinstance(outcome, Complete) else Fail(outcome)
        else:
            verdict = self.book.answered(batch, outcome)
        self._apply(batch, verdict)

    def _apply(self, batch: ProducerBatch, verdict: Verdict) -> None:
        if isinstance(verdict, Complete):
            self._finish(batch, None, verdict, wake=False)
            if self._turn_needed():
                self.wake()
            return
        if isinstance(verdict, Fail):
            self._finish(batch, verdict.error)
        self.wake()

    def _turn_needed(self) -> bool:
        """After a batch was acknowledged: whether the loop has anything to do that its alarm
        would not wake it for. Not when every batch in flight has its call under way and none
        waits to be taken (one record per request: the usual case), so the answer costs no
        loop turn (issue 18: the client's task switches per request)."""
        if self.closing or self.acc.queues.get(self.tp):
            return True  # a batch may be taken now (a slot is free), or the loop may end
        book = self.book
        if book is None:
            return False  # without idempotence every batch in flight has its call
        return book.bump_needed or book.fresh_id_needed or not all(s.sending for s in book.slots)

    def _finish(
        self,
        batch: ProducerBatch,
        error: BaseException | None,
        result: Complete | None = None,
        *,
        wake: bool = True,
    ) -> None:
        if error is not None:
            batch.fail(error)
        else:
            assert result is not None
            batch.complete(result.base_offset, result.log_start_offset, result.log_append_time_ms)
        if batch in self.in_flight:
            self.in_flight.remove(batch)
        self.acc.release(batch)
        if wake:
            self.wake()

    def _call_ended(self, batch: ProducerBatch, task: asyncio.Task[None]) -> None:
        if self._calls.get(batch) is task:
            del self._calls[batch]
        self._late.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._die(task.exception())

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        self._silence()
        if task.cancelled():
            self._die(asyncio.CancelledError("the producer's send loop was cancelled"))
        elif task.exception() is not None:
            self._die(task.exception())

    def _die(self, cause: BaseException | None, *, quiet: bool = False) -> None:
        """The loop (or a call's bookkeeping) failed: fail every batch of the partition with the
        cause, so that no future waits forever, and stop."""
        if self.failure is not None:
            return
        self.failure = cause
        if isinstance(cause, LiferaftError) and quiet:
            err = cause
        else:
            if not isinstance(cause, asyncio.CancelledError):
                log.error("the sender of %s died: %r", self.tp, cause, exc_info=cause)
            err = UnknownServerError(
                None,
                f"the producer's sender for {self.tp} failed: {type(cause).__name__}: {cause}",
            )
            err.__cause__ = cause
        self._error = err
        for batch in list(self.in_flight):
            self._finish(batch, err)
        self.fail_queued_if_dead()
        for task in list(self._calls.values()):
            task.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def fail_queued_if_dead(self) -> None:
        """Records queued for a sender that died (while their send() waited for buffer space)
        fail with what killed it."""
        if self._error is None:
            return
        q = self.acc.queues.get(self.tp)
        while q:
            self._finish(q.popleft(), self._error)

    def abandon(self, error: LiferaftError) -> None:
        """Fail every batch of the partition with `error` and stop (the producer's close ran
        out of time)."""
        self._die(error, quiet=True)

    def _expired_message(self, batch: ProducerBatch, *, sent: bool) -> str:
        where = "sent but not acknowledged (they may have been written)" if sent else "not written"
        return (
            f"{batch.count} records for {self.tp} were {where} within delivery_timeout_ms="
            f"{int(self.acc.delivery_timeout_s * 1000)}"
        )
