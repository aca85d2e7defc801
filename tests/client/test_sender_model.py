"""A model-based test of the idempotent producer's sequence bookkeeping (issue 12).

The real PartitionSender (client/sender.py) with a real RecordAccumulator sends real record
batches to a model partition leader whose producer state is the real node/producer_state.py
table (the committed one and the leader's, tail included, decided by `check_batch` exactly as
node/partition.py does). Between them a model network that hypothesis drives, step by step:

- requests are delivered in any order (a retry can overtake the copy it retries), lost, or
  delayed past the attempt's deadline (the client retries while the old copy is still on its
  way);
- answers are delivered in any order or lost;
- the leader commits some of its tail, or loses leadership: the new leader's log keeps the
  committed entries and any prefix of the uncommitted tail (the rest is forgotten, as after a
  restart of every node), and every waiting idempotent batch is answered NOT_LEADER;
- time passes (a model clock), so batches reach their delivery timeout;
- some batches hold a record every leader refuses on sight (INVALID_RECORD): a permanent gap.

The only seam is the `Sender` object, the part of the client that makes gRPC calls: here a model
that behaves as `Cluster.call_leader` does (retries what is retriable until the batch's time
is up, tells `on_retry` about each failed attempt). Everything above it is the client's code.

Checked after every step: a record acknowledged is in the committed log exactly once, at the
offset it was told (unless it was told -1, "written, offset unknown"); a record failed with any
error but a delivery timeout is in no log, now or later; no record is in the log twice; the
records of the log are in the order they were sent (after a fresh producer id: the acknowledged
ones; see client/sequences.py). At the end, with the network healed: every
record ends (acknowledged, or failed), and a new record is acknowledged without waiting for any
timeout: the producer makes progress.

Examples: 300 by default (CI); LIFERAFT_MODEL_EXAMPLES=5000 for a long run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import client.accumulator as accumulator_module
import client.sender as sender_module
import client.sequences as sequences_module
import node.producer_state as producer_state_module
from client.accumulator import RecordAccumulator
from client.errors import (
    DeliveryTimeoutError,
    LiferaftError,
    RequestTimedOutError,
    error_class,
)
from client.sender import PartitionSender, ProduceResult, ProducerIdentity
from client.types import RecordMetadata, TopicPartition
from liferaft_proto import records
from node.errors import BrokerError, ErrorCode
from node.producer_state import ProducerStateTable, check_batch

TP = TopicPartition("t", 0)
PID = 1
DELIVERY_TIMEOUT_S = 30.0
EXAMPLES = int(os.environ.get("LIFERAFT_MODEL_EXAMPLES", "300"))


def event(what: str) -> None:
    """Count what a history reached (--hypothesis-show-statistics); nothing outside a test."""
    with contextlib.suppress(InvalidArgument):
        hypothesis_event(what)


class Clock:
    """The model's time, put in place of the `time` module of client/sender.py and
    client/accumulator.py (the event loop keeps its own clock)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


@dataclass(slots=True)
class Entry:
    """A batch in the model leader's log."""

    producer_id: int
    epoch: int
    seq: int
    values: tuple[bytes, ...]
    term: int
    offset: int


@dataclass(eq=False, slots=True)
class Call:
    """One Sender.send: attempts until an answer that is not retriable, or its deadline."""

    deadline: float
    attempt: Copy | None = None
    future: asyncio.Future[Any] | None = None


@dataclass(eq=False, slots=True)
class Copy:
    """One attempt's request: the bytes, and the call that waits for its answer (if it still
    does: an attempt that timed out is abandoned, but its request may still arrive)."""

    data: bytes
    call: Call


EXPIRED = object()


class ModelLeader:
    """The partition leader: its log (committed prefix and tail), the two producer tables, and
    the produce requests waiting for their batch to commit."""

    def __init__(self) -> None:
        self.committed: list[Entry] = []
        self.tail: list[Entry] = []
        self.table = ProducerStateTable()  # from committed entries
        self.leader_table = ProducerStateTable()  # plus the tail
        self.term = 1
        self.waiting: list[tuple[Copy, int]] = []  # (copy, log index of the entry it waits on)

    @property
    def log(self) -> list[Entry]:
        return self.committed + self.tail

    def next_offset(self) -> int:
        return sum(len(e.values) for e in self.log)

    def produce(self, copy: Copy) -> object | None:
        """An answer now (a ProduceResult or an error), or None: it waits for a commit."""
        header = records.read_header(copy.data, deep=True)
        values = tuple(r.value or b"" for r in records.iter_records(copy.data))
        if any(v.startswith(b"bad") for v in values):
            return _client_error(ErrorCode.INVALID_RECORD, "a record every leader refuses")
        try:
            decision = check_batch(
                self.leader_table,
                self.table,
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                header.record_count,
                "t-0",
                need_commit=True,
            )
        except BrokerError as e:
            event(f"leader refused: {e.code_name}")
            return _client_error(e.code, e.message)
        if decision.duplicate is not None:
            dup = decision.duplicate
            index = dup.raft_index - 1
            if index < len(self.committed):
                return ProduceResult(
                    base_offset=dup.base_offset, log_append_time_ms=-1, log_start_offset=0
                )
            self.waiting.append((copy, index))
            return None
        offset = self.next_offset()
        index = len(self.log)
        entry = Entry(
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            values,
            self.term,
            offset,
        )
        self.tail.append(entry)
        self.leader_table.record(
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            len(values),
            offset,
            index + 1,
            self.term,
        )
        self.waiting.append((copy, index))
        return None

    def commit(self, n: int) -> list[tuple[Copy, object]]:
        for entry in self.tail[:n]:
            self.committed.append(entry)
            self.table.record(
                entry.producer_id,
                entry.epoch,
                entry.seq,
                len(entry.values),
                entry.offset,
                len(self.committed),
                entry.term,
            )
        del self.tail[:n]
        answers: list[tuple[Copy, object]] = []
        kept = []
        for copy, index in self.waiting:
            if index < len(self.committed):
                result = ProduceResult(
                    base_offset=self.committed[index].offset,
                    log_append_time_ms=-1,
                    log_start_offset=0,
                )
                answers.append((copy, result))
            else:
                kept.append((copy, index))
        self.waiting = kept
        return answers

    def change(self, keep: int) -> list[tuple[Copy, object]]:
        """A new leader: the committed log, and the first `keep` entries of the tail."""
        del self.tail[keep:]
        self.term += 1
        self.leader_table = self.table.copy()
        base = len(self.committed)
        for i, entry in enumerate(self.tail):
            self.leader_table.record(
                entry.producer_id,
                entry.epoch,
                entry.seq,
                len(entry.values),
                entry.offset,
                base + i + 1,
                entry.term,
            )
        err = _client_error(ErrorCode.NOT_LEADER, "leadership moved")
        answers = [(copy, err) for copy, _ in self.waiting]
        self.waiting = []
        return answers


def _client_error(code: int, message: str) -> LiferaftError:
    retriable = code in (ErrorCode.NOT_LEADER, ErrorCode.REQUEST_TIMED_OUT)
    return error_class(code)(code, message, retriable=retriable)


class ModelSender:
    """Stands where client/sender.py's Sender stands: send() is Cluster.call_leader's loop over
    the model network."""

    def __init__(self, machine: SenderModel) -> None:
        self.m = machine
        self.delivery_timeout_ms = int(DELIVERY_TIMEOUT_S * 1000)

    async def send(
        self,
        topic: str,
        partition: int,
        batch: bytes,
        *,
        timeout_ms: int | None = None,
        on_retry: Any = None,
    ) -> ProduceResult:
        m = self.m
        budget = timeout_ms if timeout_ms is not None else self.delivery_timeout_ms
        call = Call(deadline=m.clock.now + budget / 1000)
        m.calls.append(call)
        last: LiferaftError | None = None
        try:
            while True:
                if m.clock.now >= call.deadline:
                    raise DeliveryTimeoutError("model: the call's time is up", last)
                copy = Copy(batch, call)
                call.attempt = copy
                call.future = asyncio.get_running_loop().create_future()
                m.requests.append(copy)
                outcome = await call.future
                if outcome is EXPIRED:
                    raise DeliveryTimeoutError("model: the call's time is up", last)
                if isinstance(outcome, ProduceResult):
                    return outcome
                assert isinstance(outcome, LiferaftError)
                if not outcome.retriable:
                    raise outcome
                last = outcome
                if on_retry is not None:
                    on_retry(outcome)
        finally:
            m.calls.remove(call)


class SenderModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self._saved = (sender_module.time, accumulator_module.time)
        self._saved_kept = producer_state_module.BATCHES_KEPT
        self._saved_max_epoch = sequences_module.MAX_EPOCH
        sender_module.time = self.clock  # type: ignore[assignment]
        accumulator_module.time = self.clock  # type: ignore[assignment]
        self.loop = asyncio.new_event_loop()
        self.leader = ModelLeader()
        self.requests: list[Copy] = []
        self.answers: list[tuple[Copy, object]] = []
        self.calls: list[Call] = []
        self.outcomes: dict[bytes, object] = {}  # record value -> RecordMetadata or exception
        self.sent: list[bytes] = []  # record values in send order
        self.next_value = 0
        self.pids = PID
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        self.acc = RecordAccumulator(
            batch_size=1 << 20,
            linger_ms=0,
            buffer_memory=1 << 30,
            delivery_timeout_ms=int(DELIVERY_TIMEOUT_S * 1000),
        )
        self.psender = PartitionSender(
            TP,
            ModelSender(self),  # type: ignore[arg-type]
            self.acc,
            max_in_flight=5,
            compression=records.COMPRESSION_NONE,
            identity=ProducerIdentity(PID, 0),
            fresh_identity=self._fresh_identity,
        )
        self.psender.start()

    async def _fresh_identity(self) -> ProducerIdentity:
        """InitProducerId: a producer id never used before."""
        self.pids += 1
        event("fresh producer id")
        return ProducerIdentity(self.pids, 0)

    # -- plumbing ------------------------------------------------------------------------------
    def settle(self) -> None:
        async def spin() -> None:
            for _ in range(40):
                await asyncio.sleep(0)

        self.loop.run_until_complete(spin())
        if self.psender.book is not None:
            event(f"epochs started: {min(self.psender.book.epochs_started, 3)}+")

    def _answer(self, copy: Copy, outcome: object) -> None:
        call = copy.call
        if call.attempt is copy and call.future is not None and not call.future.done():
            call.future.set_result(outcome)

    def _time_out(self, copy: Copy) -> None:
        self._answer(copy, RequestTimedOutError(None, "model: no answer in time", retriable=True))

    def _record_outcome(self, value: bytes, fut: asyncio.Future[RecordMetadata]) -> None:
        assert value not in self.outcomes, f"record {value!r} resolved twice"
        self.outcomes[value] = fut.exception() if fut.exception() else fut.result()

    def _enqueue(self, count: int, poison: bool) -> None:
        values = []
        for i in range(count):
            self.next_value += 1
            bad = poison and i == 0
            values.append(b"%s%d" % (b"bad" if bad else b"r", self.next_value))

        async def add() -> None:
            recs = [records.Record(value=v, timestamp_ms=0) for v in values]
            futures = self.acc.append_batch(TP, recs, 100)
            for v, f in zip(values, futures, strict=True):
                f.add_done_callback(lambda fut, v=v: self._record_outcome(v, fut))
            self.psender.wake()

        self.loop.run_until_complete(add())
        self.sent.extend(values)

    # -- rules ---------------------------------------------------------------------------------
    @initialize(kept=st.sampled_from([5, 2, 1]), max_epoch=st.sampled_from([32767, 2]))
    def limits(self, kept: int, max_epoch: int) -> None:
        """How many batches per producer the leader remembers (5 in the broker), and the last
        epoch. Fewer batches make "written long ago, offset forgotten" (DUPLICATE_SEQUENCE_NUMBER)
        reachable in a short history, as the real leader answers after 5 newer batches; a low
        last epoch makes the producer fetch a fresh id (KIP-360) after a few new epochs."""
        producer_state_module.BATCHES_KEPT = kept
        sequences_module.MAX_EPOCH = max_epoch

    @rule(count=st.integers(1, 3))
    def send(self, count: int) -> None:
        self._enqueue(count, False)
        self.settle()

    @rule(count=st.integers(1, 2))
    def send_poison(self, count: int) -> None:
        self._enqueue(count, True)
        self.settle()

    @rule(i=st.integers(0, 1 << 16))
    def deliver_request(self, i: int) -> None:
        if not self.requests:
            return
        copy = self.requests.pop(i % len(self.requests))
        outcome = self.leader.produce(copy)
        if outcome is not None:
            self.answers.append((copy, outcome))
        self.settle()

    @rule(i=st.integers(0, 1 << 16), lose=st.booleans())
    def attempt_times_out(self, i: int, lose: bool) -> None:
        """The attempt's deadline passes: its request is lost, or still on its way."""
        pending = [c for c in self.calls if c.future is not None and not c.future.done()]
        if not pending:
            return
        copy = pending[i % len(pending)].attempt
        assert copy is not None
        if lose and copy in self.requests:
            self.requests.remove(copy)
        self._time_out(copy)
        self.settle()

    @rule(i=st.integers(0, 1 << 16), lose=st.booleans())
    def deliver_answer(self, i: int, lose: bool) -> None:
        if not self.answers:
            return
        copy, outcome = self.answers.pop(i % len(self.answers))
        if lose:
            self._time_out(copy)
        else:
            self._answer(copy, outcome)
        self.settle()

    @rule(n=st.integers(1, 4))
    def commit(self, n: int) -> None:
        self.answers.extend(self.leader.commit(n))
        self.settle()

    @rule(keep=st.integers(0, 4))
    def change_leader(self, keep: int) -> None:
        self.answers.extend(self.leader.change(keep))
        self.settle()

    @rule(dt=st.sampled_from([0.5, 2.0, 5.0, 15.0]))
    def time_passes(self, dt: float) -> None:
        self._advance(dt)

    def _advance(self, dt: float) -> None:
        self.clock.now += dt
        for call in self.calls:
            if call.deadline <= self.clock.now and call.future and not call.future.done():
                call.future.set_result(EXPIRED)
        self.psender.wake()
        self.settle()

    # -- what must hold ------------------------------------------------------------------------
    @invariant()
    def records_end_as_they_are(self) -> None:
        self.check_log()

    def check_log(self) -> None:
        committed = {}
        for e in self.leader.committed:
            for k, v in enumerate(e.values):
                assert v not in committed, f"record {v!r} written twice"
                committed[v] = e.offset + k
        in_log = list(committed)
        for e in self.leader.tail:
            for v in e.values:
                assert v not in committed, f"record {v!r} written twice (once in the tail)"
                in_log.append(v)
        assert len(set(in_log)) == len(in_log), "a record is in the log twice"
        order = {v: i for i, v in enumerate(self.sent)}
        book = self.psender.book
        if book is not None and book.ids_adopted:
            # Under a fresh producer id nothing fences a copy of a batch that failed as "may
            # have been written" under the old one: it may still land, once, after newer
            # records. Acknowledged records keep their order.
            in_order = [v for v in in_log if isinstance(self.outcomes.get(v), RecordMetadata)]
        else:
            in_order = in_log
        positions = [order[v] for v in in_order]
        assert positions == sorted(positions), "records are in the log out of send order"
        for value, outcome in self.outcomes.items():
            if isinstance(outcome, RecordMetadata):
                assert value in committed, (
                    f"record {value!r} was acknowledged but is not in the committed log"
                )
                assert outcome.offset in (-1, committed[value]), (
                    f"record {value!r} was told offset {outcome.offset}, it is at "
                    f"{committed[value]}"
                )
            elif not isinstance(outcome, DeliveryTimeoutError):
                assert value not in in_log, (
                    f"record {value!r} failed with {outcome!r} but is in the log"
                )

    def heal(self, *, may_wait: bool) -> None:
        """Deliver everything, commit everything, until every record has ended. With may_wait
        the clock moves on when nothing else does (batches stuck until their timeout)."""
        for _ in range(200):
            self.settle()
            idle = True
            while self.requests:
                copy = self.requests.pop(0)
                outcome = self.leader.produce(copy)
                if outcome is not None:
                    self.answers.append((copy, outcome))
                idle = False
            self.answers.extend(self.leader.commit(len(self.leader.tail)))
            while self.answers:
                copy, outcome = self.answers.pop(0)
                self._answer(copy, outcome)
                idle = False
            self.settle()
            if all(v in self.outcomes for v in self.sent) and not self.calls:
                return
            if idle:
                if not may_wait:
                    break
                self._advance(DELIVERY_TIMEOUT_S / 3)
        unresolved = [v for v in self.sent if v not in self.outcomes]
        raise AssertionError(f"the producer is stuck: records {unresolved[:10]} never ended")

    def teardown(self) -> None:
        try:
            if not self.loop.is_closed():
                self.heal(may_wait=True)
                self.check_log()
                first_new = len(self.sent)
                self._enqueue(2, False)
                self.heal(may_wait=False)
                self.check_log()
                for v in self.sent[first_new:]:
                    assert isinstance(self.outcomes[v], RecordMetadata), (
                        f"a new record after the faults was not acknowledged: {self.outcomes[v]!r}"
                    )
        finally:
            sender_module.time, accumulator_module.time = self._saved  # type: ignore[assignment]
            producer_state_module.BATCHES_KEPT = self._saved_kept
            sequences_module.MAX_EPOCH = self._saved_max_epoch
            self.psender.closing = True
            if self.psender.task is not None:
                self.psender.task.cancel()
            self.settle()
            self.loop.close()


TestSenderModel = SenderModel.TestCase
TestSenderModel.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=int(os.environ.get("LIFERAFT_MODEL_STEPS", "60")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_model_is_wired() -> None:
    """The model's own parts, one history by hand: a batch sent, committed, acknowledged."""
    m = SenderModel()
    m.send(2)
    m.deliver_request(0)
    m.commit(1)
    m.deliver_answer(0, False)
    assert all(isinstance(m.outcomes[v], RecordMetadata) for v in m.sent)
    m.teardown()
