"""The chaos workload: producers and consumers on a replicated topic, a nemesis, and the check.

In the spirit of Jepsen's Kafka queue workload. One run:

  1. create a topic (default 6 partitions, replication factor 3) and wait until every partition
     is led and fully in sync;
  2. start producers (one Producer client each, bound to one partition) that send unique values
     ("p<i>-<seq>") with acks=all, one at a time, and consumers (one per partition) that poll
     from offset 0 on; every operation goes into a History as invoke + ok / fail / info;
  3. meanwhile the nemesis (chaos/nemesis.py) injects its plan of faults;
  4. at the end: stop the clients, undo every fault (heal, resume, restart), wait until every
     replica is back in sync, and read every partition back from offset 0 to its high watermark
     (the final read);
  5. check the history (chaos/checker.py), and compare the replicas of every partition, of the
     controller and of the groups across the nodes (chaos/replicas.py).

Outcomes. A send is `ok` with the offset the broker acknowledged; `fail` only when the broker
refused it for a reason that means "not written" (an unknown topic, a bad record); `info`
(unknown) otherwise: a delivery timeout may hide an attempt that was written. A poll that raises
is `fail` (a read changes nothing). An operation still running when the run ends stays without a
completion, which the checker reads as `info`.

Without an idempotent producer a retried send may be written twice: the checker counts that as
`duplicated`, which does not fail a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from chaos.answers import AnswerDropper
from chaos.checker import Report, check_history
from chaos.faults import Faults
from chaos.history import History, Value
from chaos.nemesis import FaultEvent, Nemesis, PlannedFault
from chaos.replicas import ReplicaReport, compare_replicas
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

__all__ = ["RunResult", "Workload", "WorkloadConfig", "run_chaos"]

log = logging.getLogger("liferaft.chaos")

STUCK_AFTER_HEAL_S = 10.0
"""After the final heal, every producer must have a new record acknowledged within this."""

DEFINITE_FAILURES = (
    UnknownTopicOrPartitionError,
    InvalidTopicError,
    MessageTooLargeError,
    InvalidRecordError,
    CorruptMessageError,
    InvalidRequiredAcksError,
)
"""Errors that a send raises only when the broker refused the batch before writing it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadConfig:
    topic: str = "chaos"
    partitions: int = 6
    replication_factor: int = 3
    producers_per_partition: int = 1
    rate_per_producer: float = 0.0
    """Most sends per second per producer; 0: the next as soon as the last is acknowledged."""
    poll_interval_s: float = 0.1
    delivery_timeout_ms: int = 15_000
    request_timeout_ms: int = 3_000
    retry_backoff_ms: int = 100
    retry_backoff_max_ms: int = 1_000
    admin_timeout_ms: int = 2_000
    """Per node, for the leader and ISR look-ups (a paused node must not stall the nemesis)."""
    settle_timeout_s: float = 30.0
    recover_timeout_s: float = 90.0
    final_read_timeout_s: float = 90.0


class Workload:
    """The clients of one run, all recording into one History."""

    def __init__(self, bootstrap: str, history: History, config: WorkloadConfig) -> None:
        self.bootstrap = bootstrap
        self.history = history
        self.config = config
        self.topic = config.topic
        self.tps = [TopicPartition(self.topic, p) for p in range(config.partitions)]
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._admin: AdminClient | None = None
        self.answers = AnswerDropper()
        """The producers' answers pass through it (the nemesis's `answers` fault)."""
        self.producers: list[str] = []

    # -- the cluster's view ----------------------------------------------------------------------
    async def admin(self) -> AdminClient:
        if self._admin is None:
            admin = AdminClient(
                self.bootstrap,
                timeout_ms=10_000,
                request_timeout_ms=self.config.admin_timeout_ms,
            )
            await admin.start()
            self._admin = admin
        return self._admin

    async def create_topic(self) -> None:
        admin = await self.admin()
        await admin.create_topic(self.topic, self.config.partitions, self.config.replication_factor)

    async def leaders(self) -> dict[int, int]:
        """partition -> leader (0: none), each partition as its leader describes it."""
        admin = await self.admin()
        desc = (await admin.describe_topics([self.topic]))[self.topic]
        return {p.partition: p.leader for p in desc.partitions}

    async def in_sync(self) -> bool:
        """Every partition led, and every replica in its ISR."""
        admin = await self.admin()
        desc = (await admin.describe_topics([self.topic]))[self.topic]
        return len(desc.partitions) == self.config.partitions and all(
            p.leader and set(p.isr) == set(p.replicas) for p in desc.partitions
        )

    async def wait_in_sync(self, timeout_s: float) -> float | None:
        """Seconds until `in_sync`, or None if it did not happen within `timeout_s`."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            with contextlib.suppress(LiferaftError):
                if await self.in_sync():
                    return time.monotonic() - t0
            await asyncio.sleep(0.25)
        return None

    # -- clients -------------------------------------------------------------------------------
    def start_clients(self) -> None:
        n = 0
        for tp in self.tps:
            for _ in range(self.config.producers_per_partition):
                self._tasks.append(asyncio.create_task(self._produce(f"p{n}", tp)))
                self.producers.append(f"p{n}")
                n += 1
        for i, tp in enumerate(self.tps):
            self._tasks.append(asyncio.create_task(self._consume(f"c{i}", tp)))

    async def stop_clients(self, grace_s: float) -> None:
        """Let each client finish its operation in flight (within `grace_s`), then cancel."""
        self._stop.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _produce(self, process: str, tp: TopicPartition) -> None:
        cfg = self.config
        producer = Producer(
            self.bootstrap,
            acks="all",
            delivery_timeout_ms=cfg.delivery_timeout_ms,
            request_timeout_ms=cfg.request_timeout_ms,
            retry_backoff_ms=cfg.retry_backoff_ms,
            retry_backoff_max_ms=cfg.retry_backoff_max_ms,
            grpc_interceptors=[self.answers],
        )
        interval = 1.0 / cfg.rate_per_producer if cfg.rate_per_producer > 0 else 0.0
        seq = 0
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                value = f"{process}-{seq}"
                seq += 1
                op = self.history.invoke(
                    process, "send", topic=tp.topic, partition=tp.partition, value=value
                )
                try:
                    meta = await producer.send_and_wait(
                        tp.topic, value.encode(), partition=tp.partition
                    )
                except DEFINITE_FAILURES as e:
                    self.history.fail(op, error=_error_text(e))
                except LiferaftError as e:
                    self.history.info(op, error=_error_text(e))
                else:
                    self.history.ok(op, offset=meta.offset)
                if interval:
                    await _sleep_or_stop(self._stop, interval - (time.monotonic() - began))
        finally:
            with contextlib.suppress(Exception):
                await producer.close()

    async def _consume(self, process: str, tp: TopicPartition) -> None:
        cfg = self.config
        consumer = Consumer(
            self.bootstrap,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=200,
            request_timeout_ms=cfg.request_timeout_ms,
            delivery_timeout_ms=cfg.delivery_timeout_ms,
            retry_backoff_ms=cfg.retry_backoff_ms,
            retry_backoff_max_ms=cfg.retry_backoff_max_ms,
        )
        try:
            consumer.assign([tp])
            consumer.seek(tp, 0)
            while not self._stop.is_set():
                position = await consumer.position(tp)
                op = self.history.invoke(
                    process, "poll", topic=tp.topic, partition=tp.partition, offset=position
                )
                try:
                    got = await consumer.getmany(tp, timeout_ms=500)
                except LiferaftError as e:
                    self.history.fail(op, error=_error_text(e))
                else:
                    self.history.ok(op, records=_rows(got.get(tp, [])))
                await _sleep_or_stop(self._stop, cfg.poll_interval_s)
        finally:
            with contextlib.suppress(Exception):
                await consumer.close()

    # -- after the faults ----------------------------------------------------------------------
    async def final_reads(self) -> list[str]:
        """Read every partition from offset 0 to its high watermark into the History.

        Returns what could not be read (empty when every partition was read whole). A partition
        that could not be read gets no final read, which the checker counts as every one of its
        acknowledged values lost: a run that cannot prove it kept its data does not pass.
        """
        problems: list[str] = []
        deadline = time.monotonic() + self.config.final_read_timeout_s
        for tp in self.tps:
            try:
                rows = await self._read_whole(tp, deadline)
            except (LiferaftError, TimeoutError) as e:
                problems.append(f"{tp.topic}/{tp.partition}: {_error_text(e)}")
                continue
            self.history.set_final_read(tp.topic, tp.partition, rows)
        return problems

    async def _read_whole(self, tp: TopicPartition, deadline: float) -> list[tuple[int, Value]]:
        admin = await self.admin()
        async with Consumer(
            self.bootstrap,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            request_timeout_ms=5_000,
            delivery_timeout_ms=30_000,
        ) as consumer:
            consumer.assign([tp])
            consumer.seek(tp, 0)
            rows: list[tuple[int, Value]] = []
            while True:
                end = (await admin.list_offsets({tp: "latest"}))[tp].offset
                while await consumer.position(tp) < end:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"read {len(rows)} records up to offset "
                            f"{await consumer.position(tp)} of {end} before the deadline"
                        )
                    got = await consumer.getmany(tp, timeout_ms=500)
                    rows.extend(_rows(got.get(tp, [])))
                # Nothing is written any more; one more look catches a high watermark that
                # was still catching up with the log when we asked (a new leader's).
                if (await admin.list_offsets({tp: "latest"}))[tp].offset == end:
                    return rows

    async def wait_unstuck(self, since_ns: int, within_s: float) -> list[str]:
        """Wait (at most until `within_s` after `since_ns`, the final heal) until every producer
        has had a send acknowledged that it invoked after `since_ns`; returns the producers
        that had none by then: stuck."""
        deadline_ns = since_ns + int(within_s * 1e9)
        while True:
            stuck = stuck_producers(self.history, self.producers, since_ns, deadline_ns)
            left_s = (deadline_ns - self.history.now()) / 1e9
            if not stuck or left_s <= 0:
                return stuck
            await asyncio.sleep(min(0.2, left_s))

    async def close(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()
            self._admin = None


def stuck_producers(
    history: History, producers: Sequence[str], since_ns: int, until_ns: int
) -> list[str]:
    """Producers with no send invoked after `since_ns` and acknowledged by `until_ns`."""
    unstuck: set[str] = set()
    last_invoke: dict[str, int] = {}
    for op in history.ops:
        if op.f != "send" or not isinstance(op.process, str):
            continue
        if op.type == "invoke":
            last_invoke[op.process] = op.time_ns
        elif (
            op.type == "ok"
            and since_ns <= last_invoke.get(op.process, -1) <= until_ns
            and op.time_ns <= until_ns
        ):
            unstuck.add(op.process)
    return [p for p in producers if p not in unstuck]


def _rows(records: Sequence[ConsumerRecord]) -> list[tuple[int, Value]]:
    """(offset, value) pairs; the workload's values are UTF-8 text."""
    return [(r.offset, r.value.decode("utf-8", "replace") if r.value else "") for r in records]


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:300]


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


@dataclass(slots=True, kw_only=True)
class RunResult:
    report: Report
    history: History
    events: list[FaultEvent]
    plan: list[PlannedFault]
    topic: str
    duration_s: float
    """How long the clients ran."""
    started_ns: int
    """History time of the clients' start (plots count seconds from here)."""
    settled_after_s: float | None = None
    """After the run: seconds from the start of recovery until every replica was in sync."""
    recovery: list[str] = field(default_factory=list)
    """What the final recovery undid (restart 2, heal, ...)."""
    problems: list[str] = field(default_factory=list)
    """Anything that kept the run from being checked completely (empty for a clean run)."""
    replicas: ReplicaReport | None = None
    """The replicas compared after the run (None: not compared, the run did not get there)."""
    stuck: list[str] | None = None
    """Producers with no new record acknowledged within STUCK_AFTER_HEAL_S of the final heal
    (None: no fault was healed, nothing to check)."""
    answers_dropped: int = 0
    """Produce answers the `answers` fault lost."""

    @property
    def replica_differences(self) -> int:
        return len(self.replicas.differences) if self.replicas is not None else 0

    @property
    def ok(self) -> bool:
        """Nothing acknowledged lost or corrupted, the whole log was read back, every replica
        holds the same log and state, and no producer stuck after the faults."""
        return (
            self.report.ok
            and not self.problems
            and self.replica_differences == 0
            and not self.stuck
        )


async def run_chaos(
    bootstrap: str,
    faults: Faults | None,
    plan: Sequence[PlannedFault],
    history: History,
    config: WorkloadConfig,
    duration_s: float,
    *,
    settle: bool = True,
    complete_plan: bool = False,
    tail_s: float = 3.0,
    say: Callable[[str], None] = print,
) -> RunResult:
    """One chaos run (module docstring). `faults` None runs the workload without a nemesis.

    The clients run for `duration_s`, and the nemesis skips a fault that would end after that.
    With `complete_plan` (tests that must see every fault happen) the run instead lasts until
    the whole plan was injected and healed, plus `tail_s` of clean traffic, however long the
    nemesis waited for a settled cluster in between (at most 10 x duration_s).
    """
    workload = Workload(bootstrap, history, config)
    stuck: list[str] | None = None
    events: list[FaultEvent] = []
    problems: list[str] = []
    recovery: list[str] = []
    replicas: ReplicaReport | None = None
    try:
        await workload.create_topic()
        took = await workload.wait_in_sync(config.settle_timeout_s)
        if took is None:
            raise RuntimeError(
                f"topic {config.topic}: not every partition led and in sync after "
                f"{config.settle_timeout_s:.0f}s"
            )
        say(
            f"topic {config.topic}: {config.partitions} partitions, replication factor "
            f"{config.replication_factor}, all in sync; running for {duration_s:.0f}s"
        )
        started = time.monotonic()
        started_ns = history.now()
        workload.start_clients()
        nemesis_task: asyncio.Task[list[FaultEvent]] | None = None
        nemesis = None
        if faults is not None and plan:
            nemesis = Nemesis(
                faults,
                history,
                plan,
                leaders=workload.leaders,
                settled=workload.in_sync if settle else None,
                settle_timeout_s=config.settle_timeout_s,
                on_event=say,
                answers=workload.answers,
            )
            nemesis_task = asyncio.create_task(
                nemesis.run(started, None if complete_plan else duration_s)
            )
        await asyncio.sleep(max(0.0, started + duration_s - time.monotonic()))
        if nemesis_task is not None:
            assert nemesis is not None
            if complete_plan and not nemesis_task.done():
                cap = started + 10 * duration_s - time.monotonic()
                await asyncio.wait([nemesis_task], timeout=max(0.0, cap))
                if nemesis_task.done():
                    await asyncio.sleep(tail_s)
            if not nemesis_task.done():
                # A fault still holding heals on cancellation (its window is recorded).
                nemesis_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await nemesis_task
            events = nemesis.events
        healed = [e.end_ns for e in events if e.end_ns]
        if healed:
            stuck = await workload.wait_unstuck(max(healed), STUCK_AFTER_HEAL_S)
            if stuck:
                say(
                    f"STUCK: {len(stuck)} producers had no new record acknowledged within "
                    f"{STUCK_AFTER_HEAL_S:.0f}s of the final heal: {', '.join(stuck)}"
                )
        ran_s = time.monotonic() - started
        say(f"[{ran_s:6.1f}s] stopping the clients")
        await workload.stop_clients(grace_s=config.delivery_timeout_ms / 1000 + 5)

        if faults is not None:
            try:
                recovery = await asyncio.to_thread(faults.recover)
            except Exception as e:
                problems.append(f"recovery: {e}")
        settled = await workload.wait_in_sync(config.recover_timeout_s)
        if settled is None:
            problems.append(
                f"not every replica back in sync within {config.recover_timeout_s:.0f}s of the end"
            )
        say(
            "recovered"
            + (f" ({', '.join(recovery)})" if recovery else "")
            + (f"; every replica in sync after {settled:.1f}s" if settled is not None else "")
            + "; reading every partition back"
        )
        problems += await workload.final_reads()
        replicas = await compare_replicas([a.strip() for a in bootstrap.split(",") if a.strip()])
        say(
            f"replicas compared: {replicas.partitions} partitions, the controller and the groups"
            f" on every node: {len(replicas.differences)} differences"
        )
    finally:
        await workload.close()
    return RunResult(
        report=check_history(history),
        history=history,
        events=events,
        plan=list(plan),
        topic=config.topic,
        duration_s=ran_s,
        started_ns=started_ns,
        settled_after_s=settled,
        recovery=recovery,
        problems=problems,
        replicas=replicas,
        stuck=stuck,
        answers_dropped=workload.answers.dropped,
    )
