"""One topic partition on one node: its Raft group's state machine, produce and fetch.

Theory of operation. The partition log IS the Raft log: each NORMAL entry holds one record batch
or several in a row, each stored as the producer sent it except for the base offset the leader
stamps in its header. Several when they arrived together (group commit): the produce requests
that reach the leader between two driver rounds are validated, given their offsets and producer
state at once, and proposed as ONE entry before the next round (`flush_proposals`), so k
requests cost one entry, one write, one fsync and one append and acknowledgement per follower
instead of k of each. Each batch keeps its own offsets, sequence checks and answer; fetch serves
the batches unchanged, from the one that holds the offset asked for; the offset index has a row
per entry, and retention drops whole entries. The leader
knows the next offset because offsets follow from the log prefix: every entry in its log, committed
or not, has a fixed offset range, and a new leader's log holds every committed entry (Raft's leader
completeness). Entries a deposed leader wrote but did not commit are overwritten with new
batches at the same offsets, so offsets stay dense and increase by one per record across leader
changes. No-op and membership entries take no offsets.

The high watermark is the end offset of the last applied (hence committed and persisted) batch:
nothing past it is served, so what a consumer reads is never taken back.

acks: 0 answers once the batch is handed to Raft; 1 once the leader has it on disk; all once it
is committed and every member of the ISR holds it. acks=all is refused with NOT_ENOUGH_REPLICAS
before anything is written while the ISR is smaller than min.insync.replicas.

Idempotent producers (node/producer_state.py): the producer state is built by `apply` from the
committed batches alone and carried in snapshots, so every replica has it. The leader checks a
batch against that state plus its uncommitted tail (`_leader_tail`, rebuilt on becoming leader
like the next offset): a retry of a batch already in the log is answered with the offset it was
written at, once that entry is committed, and is not written again.

The log start offset (node/partition_commands.py): retention moves it on each replica by itself
(whole batches, by size and age); DeleteRecords moves it on request through a command entry in
the log, so every replica, a restarted one and one rebuilt from a snapshot agree on it: applying
`DeleteRecords(offset)` raises `requested_log_start` to the offset, and the log start is the
higher of that and what retention left. The batches wholly below it are dropped from the offset
index at once and from the disk right after the round (a snapshot, then compaction, as for
retention). The snapshot carries `requested_log_start`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from liferaft_proto import records
from node.driver import Group, RaftDriver, take_snapshot
from node.errors import BrokerError, ErrorCode
from node.offset_index import BatchLocation, OffsetIndex
from node.partition_commands import DeleteRecords, is_command
from node.partition_commands import decode as decode_command
from node.partition_commands import encode as encode_command
from node.producer_state import PENDING_INDEX, BatchRecord, ProducerStateTable, check_batch
from node.topic_config import TopicConfig
from raft import (
    NONE,
    ConfState,
    Entry,
    EntryType,
    NotLeaderError,
    ProposalDroppedError,
    Role,
    Snapshot,
    SoftState,
)

log = logging.getLogger("liferaft.partition")

ACKS_NONE, ACKS_LEADER, ACKS_ALL = 0, 1, -1


@dataclass(slots=True)
class _Waiter:
    index: int
    term: int
    acks: int
    base_offset: int
    future: asyncio.Future[int]
    idempotent: bool = False
    """The producer stamped an id and sequence: a retry is deduplicated, so this waiter may be
    answered NOT_LEADER as soon as this node stops leading (its fate may stay unknown here for
    long, e.g. when the node is cut off) without risking a duplicate."""
    written: bool | None = None
    """Its fate, settled when the entry at its index is applied (or a snapshot covers it):
    whether that entry is the one proposed (the same term). Kept here, because retention may
    drop the entry from the log before the waiter is answered (acks=all waits for the ISR)."""


@dataclass(slots=True)
class _CommandWaiter:
    """A DeleteRecords proposed at `index` in `term`, answered with the log start once that
    entry is applied (or NOT_LEADER: a retry is harmless, the command is idempotent)."""

    index: int
    term: int
    future: asyncio.Future[int]


@dataclass(slots=True)
class _Pending:
    """A validated, stamped batch waiting to be proposed with its neighbours as one entry."""

    data: bytes
    term: int
    producer_id: int
    first_seq: int
    waiter: _Waiter | None


def _is_batch(e: Entry) -> bool:
    return e.type == EntryType.NORMAL and not is_command(e.data)


_BASE_AND_LENGTH = struct.Struct(">qi")
_RECORD_COUNT = struct.Struct(">i")
_RECORD_COUNT_AT = 57  # the last field of the 61-byte batch header
_LENGTH_END = 12  # batch_length counts the bytes after itself


def _batches(data: bytes) -> list[records.BatchHeader]:
    """The headers of the record batches in one entry of the log: one, or several proposed
    together (group commit), each validated (CRC) as apply always did."""
    first = records.read_header(data)
    if first.size == len(data):
        return [first]
    out = [first]
    pos = first.size
    while pos < len(data):
        h = records.read_header(data, pos)
        out.append(h)
        pos += h.size
    return out


def _from_offset(data: bytes, offset: int) -> bytes:
    """The batches of one entry from the one that holds `offset` on (the entry unchanged if
    that is its first): a fetch serves whole batches, never one that ends before `offset`.
    Reads two header fields per batch, no CRC (the entry was checked when it was written)."""
    pos = 0
    n = len(data)
    while pos < n:
        base, length = _BASE_AND_LENGTH.unpack_from(data, pos)
        (count,) = _RECORD_COUNT.unpack_from(data, pos + _RECORD_COUNT_AT)
        if offset < base + count:
            return data if pos == 0 else data[pos:]
        pos += length + _LENGTH_END
    return data


@dataclass(slots=True, frozen=True)
class FetchResult:
    records: bytes
    high_watermark: int
    log_start_offset: int


@dataclass(slots=True, frozen=True)
class PartitionState:
    """What metadata shows about a partition, as this node knows it."""

    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    high_watermark: int
    log_start_offset: int
    voters: tuple[int, ...] = ()
    """The group's membership as the leader applied it (empty elsewhere), as of conf_index:
    what the controller leader records in the metadata during a replica move."""
    learners: tuple[int, ...] = ()
    conf_index: int = 0


@dataclass(slots=True)
class ReplicaView:
    """One replica's log, in offsets and Raft indexes, and where one offset sits in it."""

    log_start_offset: int
    high_watermark: int
    log_end_offset: int
    commit_index: int
    applied_index: int
    persisted_index: int
    last_index: int
    found: bool = False
    batch_base_offset: int = -1
    batch_record_count: int = 0
    raft_index: int = 0
    raft_term: int = 0

    def found_in(self, base_offset: int, record_count: int, raft_index: int, term: int) -> None:
        self.found = True
        self.batch_base_offset, self.batch_record_count = base_offset, record_count
        self.raft_index, self.raft_term = raft_index, term

    @property
    def committed(self) -> bool:
        return self.found and self.raft_index <= self.commit_index

    @property
    def persisted(self) -> bool:
        return self.found and self.raft_index <= self.persisted_index


def group_id(topic_id: int, partition: int) -> str:
    return f"p{topic_id}.{partition}"


class Partition:
    def __init__(
        self,
        *,
        node_id: int,
        topic: str,
        topic_id: int,
        index: int,
        replicas: list[int],
        config: TopicConfig,
        driver: RaftDriver,
        rebalance_ticks: int,
        retention_ticks: int = 250,
        address_of: Callable[[int], str] = lambda _node: "",
        bootstrap: ConfState | None = None,
    ) -> None:
        """`bootstrap`: the membership a new group starts with if it has none on disk; by
        default `replicas` as voters (a new partition). A replica joining in a move starts as
        a learner of the current voters (Broker.sync_partitions), so it can never campaign
        before the leader's log has told it the real membership."""
        self.node_id = node_id
        self.topic = topic
        self.topic_id = topic_id
        self.index = index
        self.replicas = list(replicas)
        self.config = config
        self.driver = driver
        self.rebalance_ticks = rebalance_ticks
        self.retention_every = max(1, retention_ticks)
        self.address_of = address_of
        self.group_id = group_id(topic_id, index)
        self.offsets = OffsetIndex()
        self._waiters: deque[_Waiter] = deque()
        self._pending: list[_Pending] = []
        """Leader only: batches validated, given offsets and stamped, not yet proposed (group
        commit: the driver proposes them as one entry before its next round). Their offsets
        are in `_next_offset` and their producer state in `_leader_producers` already."""
        self._next_offset: int | None = None  # leader only: offset for the next batch
        self.producers = ProducerStateTable()  # from committed batches only (apply, snapshots)
        # Batches below this offset are already reflected in `producers` (it came from a
        # snapshot taken after them): applying them again must not record them twice.
        self._producers_as_of = 0
        # Leader only: `producers` plus the uncommitted tail; None until needed in this term.
        self._leader_producers: ProducerStateTable | None = None
        self._hw_changed = asyncio.Event()
        self._applied_term = 0  # the term of the last entry applied (or of the snapshot)
        self.applied_index = 0  # the index of the last entry applied (or of the snapshot)
        self.requested_log_start = 0
        """The highest offset a committed DeleteRecords asked the log to start at: the same on
        every replica at the same applied index (retention's start is each replica's own)."""
        self.restored_as_of_index = 0
        """The applied index the last restored snapshot's data reflects (its producer table and
        requested log start are those of a later index than the snapshot's own)."""
        self._command_waiters: list[_CommandWaiter] = []
        self._reclaim: BatchLocation | None = None  # dropped from the index, not yet from disk
        self._ticks = 0
        self._retention_ticks = 0
        self.group: Group = driver.add_group(
            self.group_id,
            self,
            bootstrap=bootstrap or ConfState(voters=frozenset(replicas)),
        )
        if self.preferred_leader == node_id:
            # Speed the first election up: the preferred replica asks for votes right away.
            self._campaign_soon = True
        else:
            self._campaign_soon = False

    # -- views ---------------------------------------------------------------------------------
    @property
    def preferred_leader(self) -> int:
        return self.replicas[0]

    @property
    def is_leader(self) -> bool:
        """Whether this replica leads and may serve: it has applied an entry of its own term
        (its no-op), so it has applied every entry a previous leader committed and its high
        watermark is at least any one reported before. A new leader that has not is not one
        yet to clients (LEADER_NOT_AVAILABLE, retriable): its high watermark may still be
        behind the previous leader's, and positions consumers hold would look out of range."""
        node = self.group.node
        return node.role == Role.LEADER and self._applied_term == node.term

    @property
    def high_watermark(self) -> int:
        return self.offsets.end_offset

    @property
    def log_start_offset(self) -> int:
        return self.offsets.start_offset

    def state(self) -> PartitionState:
        node = self.group.node
        leading = self.is_leader
        isr = tuple(sorted(node.in_sync_replicas())) if leading else ()
        leader = node.leader
        if leader == self.node_id and not leading:
            leader = NONE  # elected, not serving yet (see is_leader)
        if not leading:
            return PartitionState(
                leader=leader,
                leader_epoch=node.term,
                isr=isr,
                high_watermark=self.high_watermark,
                log_start_offset=self.log_start_offset,
            )
        cs = self.group.conf_state
        return PartitionState(
            leader=leader,
            leader_epoch=node.term,
            isr=isr,
            high_watermark=self.high_watermark,
            log_start_offset=self.log_start_offset,
            voters=tuple(sorted(cs.voters)),
            learners=tuple(sorted(cs.learners)),
            conf_index=self.group.conf_index,
        )

    def _not_leader(self) -> BrokerError:
        node = self.group.node
        leader = node.leader if node.leader != self.node_id else NONE
        return BrokerError(
            ErrorCode.NOT_LEADER if leader != NONE else ErrorCode.LEADER_NOT_AVAILABLE,
            f"node {self.node_id} is not the leader of {self.topic}-{self.index}"
            + (f"; node {leader} is" if leader != NONE else "; an election is under way"),
            leader_id=leader,
            leader_address=self.address_of(leader),
            leader_epoch=node.term if leader != NONE else 0,
        )

    # -- produce -------------------------------------------------------------------------------
    def produce(self, batch: bytes, acks: int) -> tuple[int, asyncio.Future[int] | None]:
        """Validate and propose one record batch. Returns the base offset and, for acks 1/all,
        a future that resolves (to the base offset) when the batch is as durable as asked."""
        if acks not in (ACKS_NONE, ACKS_LEADER, ACKS_ALL):
            raise BrokerError(
                ErrorCode.INVALID_REQUEST, f"acks must be 0, 1 or -1 (all), got {acks}"
            )
        if not self.is_leader:
            raise self._not_leader()
        if len(batch) > self.config.max_message_bytes:
            raise BrokerError(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"record batch of {len(batch)} bytes exceeds max.message.bytes="
                f"{self.config.max_message_bytes} of topic {self.topic}",
            )
        try:
            header = records.read_header(batch, deep=True)
        except records.UnsupportedCompressionError as e:
            raise BrokerError(
                ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, f"record batch refused: {e}"
            ) from None
        except records.UnsupportedBatchError as e:
            raise BrokerError(ErrorCode.INVALID_RECORD, f"record batch refused: {e}") from None
        except records.CorruptBatchError as e:
            raise BrokerError(ErrorCode.CORRUPT_MESSAGE, f"record batch refused: {e}") from None
        if header.size != len(batch):
            raise BrokerError(
                ErrorCode.CORRUPT_MESSAGE,
                f"request carries {len(batch)} bytes but the batch header says {header.size}: "
                "send exactly one record batch",
            )
        if header.record_count <= 0:
            raise BrokerError(ErrorCode.INVALID_REQUEST, "record batch has no records")
        if header.producer_id < records.NO_PRODUCER_ID:
            raise BrokerError(
                ErrorCode.INVALID_REQUEST,
                f"record batch carries producer id {header.producer_id}: producer ids are >= 0 "
                f"(or {records.NO_PRODUCER_ID} for a producer that is not idempotent)",
            )
        node = self.group.node
        if acks == ACKS_ALL:
            isr = node.in_sync_replicas()
            # The group's voters now, not the metadata's list (a move changes them one at a
            # time, and the metadata follows a moment later): by default a majority of them.
            need = self.config.effective_min_insync(len(self.group.conf_state.voters))
            if len(isr) < need:
                raise BrokerError(
                    ErrorCode.NOT_ENOUGH_REPLICAS,
                    f"{self.topic}-{self.index} has {len(isr)} in-sync replicas {sorted(isr)}, "
                    f"min.insync.replicas is {need}; nothing was written",
                )
        base, table = self._leader_tail()
        if header.is_idempotent:
            decision = check_batch(
                table,
                self.producers,
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                header.record_count,
                f"{self.topic}-{self.index}",
                need_commit=acks == ACKS_ALL,
            )
            if decision.duplicate is not None:
                if decision.duplicate.raft_index == PENDING_INDEX:
                    # A retry of a batch not proposed yet: propose it now, so that the retry
                    # can wait on its entry like on any other.
                    self.flush_proposals()
                    return self.produce(batch, acks)
                return self._answer_duplicate(decision.duplicate, acks)
        # The leader epoch (the Raft term) goes into the batch, as Kafka stamps it: consumers
        # validate their position with it after a leader change (KIP-320).
        stamped = records.stamp_base_offset(batch, base, leader_epoch=node.term)
        if self.driver.timing.coalesce_proposals:
            return self._queue_proposal(stamped, header, base, acks, table)
        try:
            index = node.propose(stamped)
        except NotLeaderError:
            raise self._not_leader() from None
        except ProposalDroppedError as e:
            raise BrokerError(ErrorCode.NOT_LEADER, f"leadership is moving: {e}") from None
        self._next_offset = base + header.record_count
        if header.is_idempotent:
            table.record(
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                header.record_count,
                base,
                index,
                node.term,
            )
        self.driver.touched(self.group_id)
        if acks == ACKS_NONE:
            return base, None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(index, node.term, acks, base, fut, header.is_idempotent))
        return base, fut

    def _queue_proposal(
        self,
        stamped: bytes,
        header: records.BatchHeader,
        base: int,
        acks: int,
        table: ProducerStateTable,
    ) -> tuple[int, asyncio.Future[int] | None]:
        """Group commit: the batch joins the ones waiting for the driver's next round, which
        proposes them all as one entry (`flush_proposals`). Its offsets and producer state
        are taken now, so the next batch is checked and placed after it at once."""
        term = self.group.node.term
        self._next_offset = base + header.record_count
        if header.is_idempotent:
            table.record(
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                header.record_count,
                base,
                PENDING_INDEX,
                term,
            )
        waiter = None
        fut: asyncio.Future[int] | None = None
        if acks != ACKS_NONE:
            fut = asyncio.get_running_loop().create_future()
            waiter = _Waiter(PENDING_INDEX, term, acks, base, fut, header.is_idempotent)
        self._pending.append(
            _Pending(stamped, term, header.producer_id, header.base_sequence, waiter)
        )
        self.driver.will_propose(self.group_id, self.flush_proposals, busy=bool(self._waiters))
        return base, fut

    def flush_proposals(self) -> None:
        """Propose the waiting batches, as few entries as `coalesce_max_bytes` allows (one,
        mostly; a batch that large alone, uncopied): each entry is the batches one after the other, each with its own base offset,
        producer id and sequence, as fetch serves them. Called by the driver before it steps
        or ticks, so the term and leadership they were checked in still hold; if the node
        cannot propose after all (a leadership transfer under way), none was written, and each
        waiter hears NOT_LEADER."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        node = self.group.node
        limit = self.driver.timing.coalesce_max_bytes
        entries: list[list[_Pending]] = [[]]
        size = 0
        for p in pending:
            if entries[-1] and size + len(p.data) > limit:
                entries.append([])
                size = 0
            entries[-1].append(p)
            size += len(p.data)
        datas = [b"".join(p.data for p in ps) if len(ps) > 1 else ps[0].data for ps in entries]
        try:
            if any(p.term != node.term for p in pending):
                raise NotLeaderError(node.leader, node.term)
            first = node.propose_many(datas)
        except (NotLeaderError, ProposalDroppedError) as e:
            # Nothing of them is in the log: forget their offsets and producer state too.
            self._next_offset = None
            self._leader_producers = None
            err = (
                BrokerError(ErrorCode.NOT_LEADER, f"leadership is moving: {e}")
                if isinstance(e, ProposalDroppedError)
                else self._not_leader()
            )
            for p in pending:
                if p.waiter is not None and not p.waiter.future.done():
                    p.waiter.future.set_exception(err)
            return
        table = self._leader_producers
        for i, ps in enumerate(entries):
            index = first + i
            for p in ps:
                if table is not None and p.producer_id != records.NO_PRODUCER_ID:
                    table.assign_index(p.producer_id, p.first_seq, index, p.term)
                if p.waiter is not None:
                    p.waiter.index = index
                    self._waiters.append(p.waiter)
        self.driver.touched(self.group_id)

    def _drop_pending(self, err: BrokerError) -> None:
        """This node stopped leading before its waiting batches were proposed: none of them
        was written."""
        pending, self._pending = self._pending, []
        for p in pending:
            if p.waiter is not None and not p.waiter.future.done():
                p.waiter.future.set_exception(err)

    def _answer_duplicate(
        self, dup: BatchRecord, acks: int
    ) -> tuple[int, asyncio.Future[int] | None]:
        """A retry of a batch already in the log: answer with the offset it was written at, at
        once if it is committed, else once its entry is (a waiter on the original entry, which
        learns its fate like any other: overwritten means NOT_LEADER, and the retry goes on)."""
        log.debug(
            "%s-%d: duplicate batch (sequences %d..%d) answered with offset %d",
            self.topic,
            self.index,
            dup.first_seq,
            dup.last_seq,
            dup.base_offset,
        )
        loop = asyncio.get_running_loop()
        if acks == ACKS_NONE:
            return dup.base_offset, None
        fut: asyncio.Future[int] = loop.create_future()
        if dup.base_offset + dup.record_count <= self.high_watermark:
            fut.set_result(dup.base_offset)
        else:
            # Wait on the original entry (index and the term it was written in), in index order:
            # _resolve_waiters answers them from the front.
            self._waiters.append(
                _Waiter(dup.raft_index, dup.term, acks, dup.base_offset, fut, idempotent=True)
            )
            if len(self._waiters) > 1 and self._waiters[-2].index > dup.raft_index:
                self._waiters = deque(sorted(self._waiters, key=lambda w: w.index))
            self.driver.touched(self.group_id)
        return dup.base_offset, fut

    def _leader_next_offset(self) -> int:
        """The offset after the last batch in the leader's log, committed or not."""
        return self._leader_tail()[0]

    def _leader_tail(self) -> tuple[int, ProducerStateTable]:
        """The next offset and the producer state as of the leader's whole log, committed or
        not: the committed state plus every batch of the uncommitted tail, computed once per
        term and then kept up to date by produce()."""
        if self._next_offset is None or self._leader_producers is None:
            if self._pending:
                self.flush_proposals()  # into the log, where the rebuild below finds them
            offset = self.offsets.end_offset
            table = self.producers.copy()
            for e in self.group.node.unapplied_entries():
                if not _is_batch(e):
                    continue
                for h in _batches(e.data):
                    if h.base_offset < offset:
                        continue  # covered by a snapshot
                    offset = h.base_offset + h.record_count
                    if h.is_idempotent and h.base_offset >= self._producers_as_of:
                        # Below that, the restored snapshot's table has it already (as apply
                        # knows): recording it again would push a remembered batch out.
                        table.record(
                            h.producer_id,
                            h.producer_epoch,
                            h.base_sequence,
                            h.record_count,
                            h.base_offset,
                            e.index,
                            e.term,
                        )
            self._next_offset = offset
            self._leader_producers = table
        return self._next_offset, self._leader_producers

    def describe_offset(self, offset: int) -> ReplicaView:
        """This replica's own view of its log and of `offset` in it (`liferaft trace`).
        Read-only: it looks at the uncommitted tail's headers and changes nothing."""
        node = self.group.node
        view = ReplicaView(
            log_start_offset=self.offsets.start_offset,
            high_watermark=self.offsets.end_offset,
            log_end_offset=self.offsets.end_offset,
            commit_index=node.committed,
            applied_index=node.applied,
            persisted_index=node.persisted_index(),
            last_index=node.last_index(),
        )
        at = self.offsets.locate(offset)
        if at is not None:
            view.found_in(
                at.base_offset, at.record_count, at.raft_index, node.term_at(at.raft_index)
            )
        for e in node.unapplied_entries():
            if not _is_batch(e):
                continue
            hs = _batches(e.data)
            base, end = hs[0].base_offset, hs[-1].base_offset + hs[-1].record_count
            if end <= view.log_end_offset:
                continue  # already counted (covered by a snapshot or the index)
            view.log_end_offset = end
            if base <= offset < end and at is None:
                view.found_in(base, end - base, e.index, e.term)
        return view

    def cancel_waiter(self, fut: asyncio.Future[int]) -> None:
        for w in list(self._waiters):
            if w.future is fut:
                self._waiters.remove(w)
        for p in self._pending:
            if p.waiter is not None and p.waiter.future is fut:
                p.waiter = None

    def _resolve_waiters(self) -> None:
        """Answer produce requests whose batch is as durable as they asked.

        A batch proposed in term T at index i is written exactly when the entry committed at
        i has term T. So when this node stops leading, its waiters are not failed at once: it
        keeps applying committed entries as a follower, and each waiter learns its fate from
        the entry applied at its index (a graceful hand-off commits them all). Only an entry of
        another term at that index, i.e. a new leader overwrote the batch, answers NOT_LEADER;
        a waiter that never learns its fate times out in the handler (REQUEST_TIMED_OUT: the
        outcome is unknown). Waiters of idempotent batches are the exception: they are answered
        NOT_LEADER at once, since their retry cannot write the batch twice."""
        if not self._waiters:
            return
        node = self.group.node
        leading = node.role == Role.LEADER
        term = node.term
        persisted = node.persisted_index()
        isr_floor: int | None = None
        if not leading and any(w.idempotent for w in self._waiters):
            # An idempotent producer's retry is deduplicated by the new leader (or answered with
            # the original offset): send it there now rather than wait to learn the outcome here.
            err = self._not_leader()
            kept: deque[_Waiter] = deque()
            for w in self._waiters:
                if w.idempotent and w.written is None and not w.future.done():
                    w.future.set_exception(err)
                else:
                    kept.append(w)
            self._waiters = kept
        while self._waiters:
            w = self._waiters[0]
            if w.future.done():
                self._waiters.popleft()
                continue
            if w.written is not None:
                if not w.written:
                    self._waiters.popleft()
                    w.future.set_exception(
                        BrokerError(
                            ErrorCode.NOT_LEADER,
                            f"the batch proposed at offset {w.base_offset} was overwritten by a "
                            f"new leader of {self.topic}-{self.index}; it was not written",
                            leader_id=node.leader if node.leader != self.node_id else 0,
                            leader_address=self.address_of(node.leader),
                            leader_epoch=node.term,
                        )
                    )
                    continue
                if leading and w.term == term and w.acks == ACKS_ALL:
                    if isr_floor is None:
                        isr_floor = node.in_sync_durable_index()
                    if isr_floor < w.index:
                        break
            elif not (
                leading
                and w.term == term
                and w.acks == ACKS_LEADER
                and persisted >= w.index
                and node.term_at(w.index) == w.term
            ):
                break
            self._waiters.popleft()
            w.future.set_result(w.base_offset)

    def _fail_waiters(self, err: BrokerError) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.future.done():
                w.future.set_exception(err)

    # -- delete records ------------------------------------------------------------------------
    def delete_records(self, offset: int) -> tuple[int, asyncio.Future[int] | None]:
        """Kafka's DeleteRecords on the leader: move the log start offset up to `offset` (-1:
        the high watermark). Returns the log start now and, when a command was proposed, a
        future that resolves to the new log start (the low watermark) once it is applied.
        An offset at or below the log start changes nothing (no future); one above the high
        watermark, or negative but -1, is OFFSET_OUT_OF_RANGE, as in Kafka."""
        if not self.is_leader:
            raise self._not_leader()
        hw = self.high_watermark
        start = self.log_start_offset
        target = hw if offset == -1 else offset
        if target < 0 or target > hw:
            raise BrokerError(
                ErrorCode.OFFSET_OUT_OF_RANGE,
                f"cannot delete records of {self.topic}-{self.index} before offset {offset}: "
                f"give an offset between its log start {start} and its high watermark {hw}, "
                "or -1 for the high watermark; nothing was deleted",
            )
        if target <= start:
            return start, None
        self.flush_proposals()  # the batches produced before it go first
        node = self.group.node
        try:
            index = node.propose(encode_command(DeleteRecords(offset=target)))
        except NotLeaderError:
            raise self._not_leader() from None
        except ProposalDroppedError as e:
            raise BrokerError(ErrorCode.NOT_LEADER, f"leadership is moving: {e}") from None
        self.driver.touched(self.group_id)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._command_waiters.append(_CommandWaiter(index, node.term, fut))
        return start, fut

    async def delete_records_and_wait(self, offset: int, timeout_s: float) -> int:
        """delete_records, then wait (up to timeout_s: REQUEST_TIMED_OUT) until it is applied
        here; returns the low watermark (the new log start). Shared by the gRPC and Kafka
        handlers."""
        start, fut = self.delete_records(offset)
        if fut is None:
            return start
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except TimeoutError:
            raise BrokerError(
                ErrorCode.REQUEST_TIMED_OUT,
                f"the delete-records request on {self.topic}-{self.index} was not committed "
                f"within {timeout_s:g} s; it may still be (retrying it is safe)",
            ) from None
        finally:
            if not fut.done():
                self.cancel_command_waiter(fut)

    def cancel_command_waiter(self, fut: asyncio.Future[int]) -> None:
        self._command_waiters = [w for w in self._command_waiters if w.future is not fut]

    def _fail_command_waiters(self, err: BrokerError, up_to: int | None = None) -> None:
        kept = []
        for w in self._command_waiters:
            if up_to is None or w.index <= up_to:
                if not w.future.done():
                    w.future.set_exception(err)
            else:
                kept.append(w)
        self._command_waiters = kept

    def _settle_command_waiters(self, entries: list[Entry]) -> None:
        lo, hi = entries[0].index, entries[-1].index
        kept = []
        for w in self._command_waiters:
            if w.future.done():
                continue
            if not lo <= w.index <= hi:
                kept.append(w)
            elif entries[w.index - lo].term == w.term:
                w.future.set_result(self.log_start_offset)
            else:
                w.future.set_exception(
                    BrokerError(
                        ErrorCode.NOT_LEADER,
                        f"the delete-records request on {self.topic}-{self.index} was "
                        "overwritten by a new leader; retry (it is safe to)",
                    )
                )
        self._command_waiters = kept

    def _apply_command(self, e: Entry) -> None:
        try:
            cmd = decode_command(e.data)
        except BrokerError as err:
            # Only a leader of this code writes these; one it cannot read is applied as
            # nothing on every replica alike (as the controller does with a refused command).
            log.error("%s-%d: entry %d skipped: %s", self.topic, self.index, e.index, err)
            return
        if isinstance(cmd, DeleteRecords) and cmd.offset > self.requested_log_start:
            self.requested_log_start = cmd.offset
            self._advance_log_start()
            log.info(
                "%s-%d: records before offset %d deleted on request; log now starts at %d",
                self.topic,
                self.index,
                cmd.offset,
                self.log_start_offset,
            )

    def _advance_log_start(self) -> None:
        """Raise the log start to the requested one (as far as the applied log reaches): the
        batches now wholly below it leave the index, and the disk after this round."""
        dropped = self.offsets.advance_start(self.requested_log_start)
        if dropped is not None:
            self._reclaim = dropped

    # -- fetch ---------------------------------------------------------------------------------
    async def fetch(
        self, offset: int, max_bytes: int, max_wait_ms: int, min_bytes: int = 1
    ) -> FetchResult:
        deadline = time.monotonic() + max_wait_ms / 1000
        while True:
            result = self.read(offset, max_bytes)
            remaining = deadline - time.monotonic()
            if len(result.records) >= max(1, min_bytes) or remaining <= 0:
                return result
            event = self._hw_changed
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return self.read(offset, max_bytes)

    def read(self, offset: int, max_bytes: int) -> FetchResult:
        """Committed batches from the one holding offset, up to max_bytes (at least one)."""
        if not self.is_leader:
            raise self._not_leader()
        hw = self.high_watermark
        start = self.log_start_offset
        if offset < start or offset > self._leader_next_offset():
            raise BrokerError(
                ErrorCode.OFFSET_OUT_OF_RANGE,
                f"offset {offset} is out of range for {self.topic}-{self.index}: "
                f"log start {start}, high watermark {hw}",
            )
        if offset >= hw:
            return FetchResult(b"", hw, start)
        loc = self.offsets.locate(offset)
        assert loc is not None
        last = self.offsets.last_index()
        storage = self.group.storage
        ents = storage.entries(loc.raft_index, last + 1, max(1, max_bytes))
        data = [e.data for e in ents if _is_batch(e)]
        if data and offset > loc.base_offset:
            # An entry of several batches (group commit): from the one holding `offset`.
            data[0] = _from_offset(data[0], offset)
        return FetchResult(b"".join(data), hw, start)

    def lag(self, offset: int) -> tuple[int, int]:
        """(records from `offset` to the high watermark, timestamp of the first of them or -1).

        Asked of the leader, from the committed log only: every replica holds the same records
        with the same timestamps, so the answer does not change with the leader."""
        if not self.is_leader:
            raise self._not_leader()
        return self.local_lag(offset)

    def local_lag(self, offset: int) -> tuple[int, int]:
        """`lag` as this replica sees it, leader or not: from its own applied log (a follower's
        high watermark may trail the leader's by a round; metrics take that)."""
        hw = self.high_watermark
        if offset < 0 or offset > hw:
            raise BrokerError(
                ErrorCode.OFFSET_OUT_OF_RANGE,
                f"offset {offset} is out of range for {self.topic}-{self.index}: it must be "
                f"between 0 and the high watermark {hw}",
            )
        start = max(offset, self.log_start_offset)
        if start >= hw:
            return 0, -1
        return hw - start, self._timestamp_at(start)

    def _timestamp_at(self, offset: int) -> int:
        """The timestamp of the committed record at `offset`. One batch is read; a compressed
        one is decoded only if this node has its codec, else its first timestamp stands in (at
        most the batch's time span earlier: lag is never under-reported)."""
        loc = self.offsets.locate(offset)
        if loc is None:
            return -1
        data = self.group.storage.entries(loc.raft_index, loc.raft_index + 1)[0].data
        data = _from_offset(data, offset)
        header = records.read_header(data)
        if header.timestamp_type == records.LOG_APPEND_TIME:
            return header.max_timestamp
        if offset == header.base_offset:
            return header.first_timestamp
        try:
            for rec in records.iter_records(data):
                if rec.offset == offset:
                    return int(rec.timestamp_ms)
        except ImportError:
            pass
        return header.first_timestamp

    def offset_for_time(self, timestamp_ms: int) -> tuple[int, int] | None:
        """The first (offset, timestamp) whose record timestamp is >= timestamp_ms, or None.

        Batches are found by their max timestamp (no record decoding); only the one batch that
        holds the answer is decoded, to find the exact record in it."""
        if not self.is_leader:
            raise self._not_leader()
        start = self.log_start_offset  # the first batch may begin below it (DeleteRecords)
        loc = self.offsets.first_at_or_after_time(timestamp_ms)
        while loc is not None:
            ents = self.group.storage.entries(loc.raft_index, loc.raft_index + 1)
            try:
                for rec in records.iter_records(ents[0].data):
                    if rec.timestamp_ms >= timestamp_ms and rec.offset >= start:
                        return int(rec.offset), int(rec.timestamp_ms)
            except ImportError:
                # A compressed batch and no codec here: its first offset is a safe answer (a
                # reader starting there sees every record at or after the time, and a few
                # before it).
                return max(start, loc.base_offset), loc.max_timestamp_ms
            # Every record at or after the time in this batch is below the log start.
            loc = self.offsets.first_at_or_after_time(timestamp_ms, after=loc.end_offset)
        return None

    # -- the state machine (called by the driver) ---------------------------------------------
    def apply(self, entries: list[Entry]) -> None:
        if not entries:
            return
        if self._waiters:
            self._settle_waiters(entries)
        self._applied_term = entries[-1].term
        self.applied_index = entries[-1].index
        advanced = False
        for e in entries:
            if e.type != EntryType.NORMAL:
                continue
            if is_command(e.data):
                self._apply_command(e)
                advanced = True
                continue
            hs = _batches(e.data)
            first = hs[0]
            if first.base_offset < self.offsets.end_offset:
                continue  # replayed after a restart from a snapshot that already covers it
            # One index row per entry (the batches of one entry go and stay together).
            if len(hs) == 1:
                count, max_ts = first.record_count, first.max_timestamp
            else:
                count = hs[-1].base_offset + hs[-1].record_count - first.base_offset
                max_ts = max(h.max_timestamp for h in hs)
            self.offsets.append(first.base_offset, count, e.index, len(e.data), max_ts)
            if self.requested_log_start > self.offsets.start_offset:
                # Replayed after a snapshot whose requested start lies past its own entries.
                self._advance_log_start()
            for h in hs:
                if h.is_idempotent and h.base_offset >= self._producers_as_of:
                    self.producers.record(
                        h.producer_id,
                        h.producer_epoch,
                        h.base_sequence,
                        h.record_count,
                        h.base_offset,
                        e.index,
                        e.term,
                    )
            advanced = True
        if self._command_waiters:
            self._settle_command_waiters(entries)
        if advanced:
            self._hw_changed.set()
            self._hw_changed = asyncio.Event()

    def _settle_waiters(self, entries: list[Entry]) -> None:
        """Record the fate of the waiters whose index these (consecutive) entries cover."""
        lo, hi = entries[0].index, entries[-1].index
        for w in self._waiters:
            if w.written is None and lo <= w.index <= hi:
                w.written = entries[w.index - lo].term == w.term

    def _settle_waiters_by_snapshot(self, snapshot: Snapshot) -> None:
        """A snapshot from the leader covers entries this replica never applied. A waiter at
        or below its index was written if its term is the snapshot's (the leader of that term
        made the snapshot's last entry after it, and its log is the committed one up to there),
        not written if newer (no committed entry there can have a newer term); if older, its
        fate is unknown here: REQUEST_TIMED_OUT, as for a deadline (never NOT_LEADER, "not
        written", which a plain producer would retry into a duplicate)."""
        meta = snapshot.meta
        for w in self._waiters:
            if w.written is not None or w.index > meta.index or w.future.done():
                continue
            if w.index == meta.index or w.term >= meta.term:
                w.written = w.term == meta.term
            else:
                w.future.set_exception(
                    BrokerError(
                        ErrorCode.REQUEST_TIMED_OUT,
                        f"the batch proposed at offset {w.base_offset} of {self.topic}-"
                        f"{self.index} may or may not have been written: this replica caught "
                        "up from a snapshot that covers it",
                    )
                )

    def restore(self, snapshot: Snapshot) -> None:
        self._settle_waiters_by_snapshot(snapshot)
        self._fail_command_waiters(
            BrokerError(
                ErrorCode.NOT_LEADER,
                f"{self.topic}-{self.index} caught up from a snapshot; retry the delete-records "
                "request (it is safe to)",
            ),
            up_to=snapshot.meta.index,
        )
        if self._pending:
            self._drop_pending(self._not_leader())
        self._applied_term = snapshot.meta.term
        self.applied_index = snapshot.meta.index
        state = json.loads(snapshot.data or b"{}")
        next_offset = int(state.get("next_offset", 0))
        self.offsets.reset(next_offset)
        self._reclaim = None
        self.requested_log_start = int(state.get("log_start_offset", 0))
        self.restored_as_of_index = int(state.get("as_of_index", snapshot.meta.index))
        self._advance_log_start()
        self.producers = ProducerStateTable.from_json(state.get("producers", []))
        self._producers_as_of = int(state.get("producers_as_of", next_offset))
        self._next_offset = None
        self._leader_producers = None
        self._hw_changed.set()
        self._hw_changed = asyncio.Event()

    def on_soft_state(self, soft: SoftState, term: int) -> None:
        if self._pending:
            self._drop_pending(self._not_leader())
        self._next_offset = None
        self._leader_producers = None
        if soft.role != Role.LEADER and self._command_waiters:
            self._fail_command_waiters(self._not_leader())
        if soft.role != Role.LEADER:
            # Waiting fetches (a consumer's FetchStream) learn at once that this node no longer
            # leads (NOT_LEADER with the hint), not at the end of their max_wait_ms.
            self._hw_changed.set()
            self._hw_changed = asyncio.Event()
        if soft.role == Role.LEADER:
            log.info("node %d leads %s-%d (term %d)", self.node_id, self.topic, self.index, term)

    def on_round(self) -> None:
        self._resolve_waiters()
        if self._reclaim is not None:
            self._compact()

    def on_tick(self) -> None:
        self._ticks += 1
        if self._campaign_soon:
            self._campaign_soon = False
            if self.group.node.leader == NONE:
                self.group.node.campaign()
        if self.is_leader and self._ticks % self.rebalance_ticks == 0:
            self._maybe_hand_back_leadership()
        self._retention_ticks += 1
        if self._retention_ticks >= self.retention_every:
            self._retention_ticks = 0
            self.enforce_retention(int(time.time() * 1000))

    def _maybe_hand_back_leadership(self) -> None:
        """Leaders are spread by making each partition's first replica its preferred leader;
        when that replica is back and in sync, give leadership back to it."""
        preferred = self.preferred_leader
        if preferred == self.node_id:
            return
        status = self.group.node.status()
        pr = status.progress.get(preferred)
        recently = 2 * self.driver.timing.heartbeat_ticks  # it answered the last heartbeats
        if (
            pr is not None
            and preferred in status.in_sync
            and pr.match >= status.last_index
            and pr.ticks_since_ack <= recently
        ):
            log.info(
                "%s-%d: handing leadership back to preferred replica %d",
                self.topic,
                self.index,
                preferred,
            )
            self.group.node.transfer_leader(preferred)

    # -- retention -----------------------------------------------------------------------------
    def enforce_retention(self, now_ms: int) -> int:
        """Drop whole batches from the log start per retention.ms / retention.bytes. Each
        replica does this on its own; a follower that falls behind the new log start gets a
        snapshot (the log start offset) from the leader. Returns batches dropped."""
        drop = self.offsets.batches_to_drop(
            self.config.retention_bytes, self.config.retention_ms, now_ms
        )
        if drop <= 0:
            return 0
        self._reclaim = self.offsets.drop_prefix(drop)
        self._compact()
        log.info(
            "%s-%d: retention dropped %d batches; log now starts at offset %d",
            self.topic,
            self.index,
            drop,
            self.log_start_offset,
        )
        return drop

    def _compact(self) -> None:
        """Free the disk below the batches dropped from the index (retention, DeleteRecords):
        a snapshot at the last one dropped, then the log cut there. RocksDB frees the space as
        it compacts the deleted range."""
        last, self._reclaim = self._reclaim, None
        if last is None:
            return
        # The producer state is the applied one, newer than the snapshot's index: it says up to
        # which offset it reflects, so a replica that restores it skips those batches' updates.
        # So is the requested log start (applying it again changes nothing).
        data = json.dumps(
            {
                "next_offset": last.end_offset,
                "producers": self.producers.to_json(),
                "producers_as_of": self.offsets.end_offset,
                "log_start_offset": self.requested_log_start,
                "as_of_index": self.applied_index,
            }
        ).encode()
        take_snapshot(self.group, last.raft_index, data)
        self.group.storage.compact(last.raft_index)

    def close(self, reason: BrokerError) -> None:
        self._drop_pending(reason)
        self._fail_waiters(reason)
        self._fail_command_waiters(reason)
