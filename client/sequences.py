"""An idempotent producer's sequence numbers on one partition: plain decisions, no I/O.

The partition's sender task (client/sender.py) asks this book what to do and awaits the sends it
says; every answer comes back here and the book says what it means. Nothing in here awaits,
reads a clock or builds bytes, so a model-based test can drive it through any interleaving
(tests/client/test_sender_model.py).

Theory of operation. Each batch, when first taken, gets (producer id, epoch, base sequence):
sequences count records from 0 in each epoch, and a stamp once sent is never given to another
batch of the same epoch. The leader keeps, per producer, the epoch and the last sequences it
wrote, and answers a copy of a batch with exactly one of: written now or before (with its
offset), DUPLICATE_SEQUENCE_NUMBER (written long ago, offset forgotten), OUT_OF_ORDER or
UNKNOWN_PRODUCER_ID (not written: the batch before it is missing), INVALID_PRODUCER_EPOCH (not
written: it has a newer epoch), a refusal on sight (too large, corrupt, ...), or no answer at
all (lost, timed out, NOT_LEADER while the batch waited for its commit: it may yet be written).

What each means here:

- Written, or DUPLICATE_SEQUENCE_NUMBER: the records are acknowledged (with offset -1 for the
  duplicate: written, where unknown; Kafka's producer does the same). Since a stamp is never
  reused within an epoch, "the leader is past this sequence" can only mean this batch.
- No answer: the batch is *ambiguous* from then on: some copy may be (or become) written. An
  ambiguous batch keeps its stamp until it is acknowledged or its delivery timeout ends
  ("may have been written"): giving it a new stamp could write it twice.
- OUT_OF_ORDER / UNKNOWN_PRODUCER_ID: this copy was not written. With an earlier batch still in
  flight the batch is *held* and sent again when that one ends (Kafka's rule). With none, the
  leader will never take the next sequence: the partition needs a new epoch.
- A batch that fails (refused for good, or out of time) leaves a gap in the epoch: the batches
  after it could never be written in this epoch either, so the partition needs a new epoch.
- INVALID_PRODUCER_EPOCH: the leader knows a newer epoch of our id than ours; only a fresh
  producer id (InitProducerId) gets past it, as after the epoch runs out (KIP-360).

A new epoch (or id) is started when nothing is being sent and every batch in flight may take a
new stamp: it is not ambiguous, or it comes after a batch that can never be written (a *hole*:
a batch refused for good, or one that this very renumbering retires; the leader takes an
epoch's sequences only in order, so nothing after a hole was written). Until then new batches
wait, the batches that may be written are sent again to learn their fate, and the others wait.
Then every batch in flight is renumbered from 0 in the new epoch, in order, and sending goes on.

A fresh producer id has one cost an epoch does not: the leader fences a late copy of an old
epoch's batch (INVALID_PRODUCER_EPOCH), but nothing fences another id. So a batch that failed at
its delivery timeout as "may have been written" can still land after newer records if a copy of
it arrives late; it is written at most once, and acknowledged records keep their order. This
happens only after INVALID_PRODUCER_EPOCH or 32767 epochs on one partition.

So no record is acknowledged unless the leader said it was written; no record is failed as "not
written" unless it certainly was not; no batch is written twice; and a lost answer, a leader
that forgot us, a gap or an exhausted epoch each recover by themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from client.accumulator import ProducerBatch
from client.errors import (
    DeliveryTimeoutError,
    LiferaftError,
)

__all__ = [
    "MAX_EPOCH",
    "SEQ_MODULUS",
    "Bump",
    "Complete",
    "Fail",
    "Hold",
    "SequenceBook",
    "Stamp",
    "Verdict",
]

SEQ_MODULUS = 1 << 31
MAX_EPOCH = (1 << 15) - 1

# Retriable failures of an attempt that prove the copy was refused before anything was written.
# Everything else that fails an attempt (NOT_LEADER, deadlines, lost connections) may hide a
# copy that is, or will be, in the log.
_REFUSED_BEFORE_WRITING = frozenset({"NOT_ENOUGH_REPLICAS", "LEADER_NOT_AVAILABLE"})
# Final answers that mean "this copy was not written, and the batch is not wrong".
_SEQUENCE_REFUSALS = frozenset({"OUT_OF_ORDER_SEQUENCE_NUMBER", "UNKNOWN_PRODUCER_ID"})


@dataclass(frozen=True, slots=True)
class Stamp:
    producer_id: int
    epoch: int
    base_sequence: int


@dataclass(frozen=True, slots=True)
class Complete:
    """The batch is written: resolve its records (offset -1: written, offset unknown)."""

    base_offset: int
    log_start_offset: int = -1
    log_append_time_ms: int = -1


@dataclass(frozen=True, slots=True)
class Fail:
    error: LiferaftError


@dataclass(frozen=True, slots=True)
class Hold:
    """Not written this time; the book sends it again when it may."""


Verdict = Complete | Fail | Hold


class Bump(Enum):
    """What the book needs before it can go on."""

    NONE = "none"
    EPOCH = "epoch"  # renumbered already (maybe_bump did it)
    FRESH_ID = "fresh id"  # call adopt() with a new identity from InitProducerId


@dataclass(eq=False, slots=True)
class _Slot:
    """A batch in flight: stamped, not yet acknowledged or failed."""

    batch: ProducerBatch
    stamp: Stamp
    ambiguous: bool = False
    """Some copy went unanswered: it may be, or become, written."""
    sending: bool = False
    """A send call is under way."""
    held: bool = False
    """Refused as out of order; sent again when an earlier batch ends or the epoch changes."""
    after_hole: bool = False
    """An earlier batch of this epoch can never be written, so this one never was."""


class SequenceBook:
    """One partition's stamps and what the leader's answers mean for them.

    Caller: client/sender.py's PartitionSender (one task per partition) and the model test.
    The batches in flight are kept in sequence order; at most `max_in_flight` of them.
    """

    def __init__(self, producer_id: int, epoch: int, max_in_flight: int) -> None:
        self.producer_id = producer_id
        self.epoch = epoch
        self.next_seq = 0
        self.max_in_flight = max_in_flight
        self.slots: list[_Slot] = []  # sequence order
        self.bump_needed = False
        """The current epoch has (or may have) a gap: renumber what is in flight."""
        self.fresh_id_needed = False
        """Only a new producer id can go on (the leader has a newer epoch of ours, or the
        epoch would pass MAX_EPOCH)."""
        self.epochs_started = 0
        self.ids_adopted = 0

    # -- questions -----------------------------------------------------------------------------
    def may_stamp(self) -> bool:
        """May the next batch be taken and stamped now?"""
        return (
            not self.bump_needed
            and not self.fresh_id_needed
            and len(self.slots) < self.max_in_flight
        )

    def to_send(self) -> list[ProducerBatch]:
        """Batches to start a send call for now."""
        if self.bump_needed or self.fresh_id_needed:
            # Only learn the fate of batches that may be written; the rest wait for new stamps.
            return [
                s.batch
                for s in self.slots
                if not s.sending and not s.held and s.ambiguous and not s.after_hole
            ]
        return [s.batch for s in self.slots if not s.sending and not s.held]

    def to_expire(self) -> list[ProducerBatch]:
        """Batches with no send call under way (a call ends by itself at the deadline)."""
        return [s.batch for s in self.slots if not s.sending]

    def stamp_of(self, batch: ProducerBatch) -> Stamp:
        return self._slot(batch).stamp

    def is_ambiguous(self, batch: ProducerBatch) -> bool:
        return self._slot(batch).ambiguous

    @property
    def idle(self) -> bool:
        return not self.slots

    @property
    def sending(self) -> bool:
        return any(s.sending for s in self.slots)

    # -- events --------------------------------------------------------------------------------
    def stamp(self, batch: ProducerBatch) -> Stamp:
        """Give a batch just taken the next sequences of the current epoch."""
        assert self.may_stamp()
        stamp = Stamp(self.producer_id, self.epoch, self.next_seq)
        self.next_seq = (self.next_seq + batch.count) % SEQ_MODULUS
        self.slots.append(_Slot(batch, stamp))
        return stamp

    def started(self, batch: ProducerBatch) -> Stamp:
        """A send call for the batch begins; returns the stamp it must carry."""
        slot = self._slot(batch)
        assert not slot.sending
        slot.sending = True
        return slot.stamp

    def attempt_failed(self, batch: ProducerBatch, error: BaseException) -> None:
        """One attempt of a send call failed and the call retries (Cluster's on_retry)."""
        code = error.code_name if isinstance(error, LiferaftError) else ""
        if code not in _REFUSED_BEFORE_WRITING:
            self._slot(batch).ambiguous = True

    def answered(self, batch: ProducerBatch, outcome: Complete | LiferaftError) -> Verdict:
        """The send call ended: with the leader's answer, or an error (the call's own
        DeliveryTimeoutError when the batch's time ran out)."""
        slot = self._slot(batch)
        slot.sending = False
        if isinstance(outcome, Complete):
            return self._written(slot, outcome)
        code = outcome.code_name
        if code == "DUPLICATE_SEQUENCE_NUMBER":
            return self._written(slot, Complete(-1))
        if isinstance(outcome, DeliveryTimeoutError):
            slot.ambiguous = True
            return self._failed(slot, outcome)
        if code in _SEQUENCE_REFUSALS:
            slot.held = True
            if not self._earlier_in_flight(slot):
                self.bump_needed = True
            return Hold()
        if code == "INVALID_PRODUCER_EPOCH":
            slot.held = True
            self.bump_needed = self.fresh_id_needed = True
            return Hold()
        if outcome.retriable:
            # The call gave up on a retriable error without running out of time (it should
            # not); the copy may be in the log.
            slot.ambiguous = True
            return Hold()
        return self._failed(slot, outcome)

    def expire(self, batch: ProducerBatch, error: LiferaftError) -> Fail:
        """The batch's delivery timeout ended while no call was under way (it was held)."""
        return self._failed(self._slot(batch), error)

    def maybe_bump(self) -> Bump:
        """Start a new epoch if one is needed and every batch in flight may be renumbered.
        Returns EPOCH when it did, FRESH_ID when the caller must fetch a new identity and call
        adopt(), NONE otherwise."""
        if not self.bump_needed or self.sending:
            return Bump.NONE
        hole = False
        for s in self.slots:
            if s.ambiguous and not s.after_hole and not hole:
                return Bump.NONE  # it may be written: learn its fate first
            hole = True  # this one is renumbered: its old stamp is never written
        if self.fresh_id_needed or self.epoch >= MAX_EPOCH:
            self.fresh_id_needed = True
            return Bump.FRESH_ID
        self._renumber(self.producer_id, self.epoch + 1)
        return Bump.EPOCH

    def adopt(self, producer_id: int, epoch: int) -> None:
        """A fresh identity (InitProducerId) for this partition: everything in flight is
        renumbered under it. Call only after maybe_bump() returned FRESH_ID and while nothing
        is being sent."""
        assert not self.sending
        self.ids_adopted += 1
        self._renumber(producer_id, epoch)

    # -- inside --------------------------------------------------------------------------------
    def _renumber(self, producer_id: int, epoch: int) -> None:
        self.producer_id, self.epoch, self.next_seq = producer_id, epoch, 0
        self.epochs_started += 1
        slots = self.slots
        self.slots = []
        self.bump_needed = self.fresh_id_needed = False
        for s in slots:
            stamp = Stamp(producer_id, epoch, self.next_seq)
            self.next_seq = (self.next_seq + s.batch.count) % SEQ_MODULUS
            self.slots.append(_Slot(s.batch, stamp))

    def _written(self, slot: _Slot, result: Complete) -> Complete:
        self._remove(slot)
        return result

    def _failed(self, slot: _Slot, error: LiferaftError) -> Fail:
        i = self._remove(slot)
        if slot.stamp.epoch == self.epoch and slot.stamp.producer_id == self.producer_id:
            # A gap at its sequences (or maybe one): what follows needs a new epoch.
            self.bump_needed = True
            if not slot.ambiguous or slot.after_hole:
                for later in self.slots[i:]:
                    later.after_hole = True
        return Fail(error)

    def _remove(self, slot: _Slot) -> int:
        i = self.slots.index(slot)
        del self.slots[i]
        for later in self.slots[i:]:
            later.held = False  # what the leader expects may have changed: try again
        return i

    def _earlier_in_flight(self, slot: _Slot) -> bool:
        return self.slots.index(slot) > 0

    def _slot(self, batch: ProducerBatch) -> _Slot:
        for s in self.slots:
            if s.batch is batch:
                return s
        raise KeyError(f"batch {batch!r} is not in flight")
