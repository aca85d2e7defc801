"""The chaos workload: producers and consumers on a replicated topic, a nemesis, and the check.

In the spirit of Jepsen's Kafka queue workload. One run:

  1. create a topic (default 6 partitions, replication factor 3) and wait until every partition
     is led and fully in sync;
  2. start producers (one producer client each, bound to one partition) that send unique values
     ("p<i>-<seq>") with acks=all, one at a time per sending process (`sends_in_flight`
     processes per producer), and consumers (one per partition) that poll from offset 0 on;
     every operation goes into a History as invoke + ok / fail / info. The client library is
     liferaft's own (gRPC) or confluent-kafka over the Kafka listeners (`client`,
     chaos/clients.py): the loops, the history and the checks are the same;
  3. meanwhile the nemesis (chaos/nemesis.py) injects its plan of faults;
  4. at the end: stop the clients, undo every fault (heal, resume, restart), wait until every
     replica is back in sync, and read every partition back from offset 0 to its high watermark
     (the final read);
  5. check the history (chaos/checker.py), and compare the replicas of every partition, of the
     controller and of the groups across the nodes (chaos/replicas.py).

Outcomes. A send is `ok` with the offset the broker acknowledged; `fail` only when the broker
refused it for a reason that means "not written" (an unknown topic, a bad record); `info`
(unknown) otherwise: a delivery timeout may hide an attempt that was written (chaos/clients.py
says it once for both libraries). A poll that raises
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from chaos.answers import AnswerDropper
from chaos.checker import Report, check_history
from chaos.clients import (
    CLIENT_KINDS,
    Acked,
    Clients,
    Reader,
    ReadFailed,
    Refused,
    Sender,
    make_clients,
)
from chaos.faults import Faults
from chaos.history import History, Value
from chaos.moves import MoveRecord, ReplicaMover
from chaos.nemesis import FaultEvent, Nemesis, PlannedFault
from chaos.replicas import ReplicaReport, compare_replicas
from client import AdminClient, LiferaftError, TopicPartition

__all__ = ["RunResult", "Workload", "WorkloadConfig", "run_chaos"]

log = logging.getLogger("liferaft.chaos")

STUCK_AFTER_HEAL_S = 10.0
"""After the final heal, every producer must have a new record acknowledged within this."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadConfig:
    topic: str = "chaos"
    partitions: int = 6
    replication_factor: int = 3
    client: str = "liferaft"
    """Which client library sends and reads: "liferaft" (gRPC) or "kafka" (confluent-kafka over
    the Kafka listeners); chaos/clients.py. The cluster's view (leaders, ISR) is always asked
    through liferaft's admin client: it is the nemesis's instrument, not what is under test."""
    producers_per_partition: int = 1
    sends_in_flight: int = 1
    """Sends each producer has outstanding at once; each is its own history process
    ("p3.0", "p3.1", ...), doing one send at a time, sharing the producer (its batches)."""
    rate_per_producer: float = 0.0
    """Most sends per second per sending process; 0: the next as soon as the last is
    acknowledged."""
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
    senders_on_grpc: bool = False
    """liferaft's senders keep to gRPC (the run injects the `answers` fault, a gRPC interceptor:
    chaos/answers.py); otherwise they produce on the nodes' stream listeners, the client's
    default, so chaos tests the transport users get."""
    security: Mapping[str, str] = field(default_factory=dict, repr=False)
    """The clients' security options (client/security.py, aiokafka's names: security_protocol,
    ssl_cafile, sasl_plain_username...), for every client of the run: the workload's, the
    nemesis's admin and the replica comparison. Empty: plaintext (`chaos run --secure` fills
    them with the first admin's)."""

    def __post_init__(self) -> None:
        if self.client not in CLIENT_KINDS:
            raise ValueError(
                f"client must be one of {', '.join(CLIENT_KINDS)}, not {self.client!r}"
            )
        if self.partitions < 1 or self.producers_per_partition < 1 or self.sends_in_flight < 1:
            raise ValueError("partitions, producers per partition and sends in flight must be >= 1")


class Workload:
    """The clients of one run, all recording into one History.

    The loops (send, poll, read back) are the same for every client library; what a send or a
    read does on the wire is the `Clients`' (chaos/clients.py)."""

    def __init__(
        self,
        bootstrap: str,
        history: History,
        config: WorkloadConfig,
        clients: Clients | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.history = history
        self.config = config
        self.topic = config.topic
        self.tps = [TopicPartition(self.topic, p) for p in range(config.partitions)]
        self.clients = clients or make_clients(config.client, bootstrap, config)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._admin: AdminClient | None = None
        self.producers: list[str] = []
        """Every sending process, for the stuck check."""

    @property
    def answers(self) -> AnswerDropper | None:
        """The producers' answers pass through it (the nemesis's `answers` fault); None when
        the client library has no such hook."""
        return self.clients.answers

    # -- the cluster's view ----------------------------------------------------------------------
    async def admin(self) -> AdminClient:
        if self._admin is None:
            admin = AdminClient(
                self.bootstrap,
                timeout_ms=10_000,
                request_timeout_ms=self.config.admin_timeout_ms,
                **dict(self.config.security),  # type: ignore[arg-type]
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

    async def voters_in_sync(self) -> bool:
        """Every partition led, and every replica in its ISR but the learners of moves under
        way: the nemesis's settle check when moves run in the background (a move's new replica
        catches up for as long as its throttle makes it; the next fault need not wait)."""
        admin = await self.admin()
        moving, _ = await admin.list_partition_moves()
        learners = {m.partition: set(m.learners) for m in moving if m.topic == self.topic}
        desc = (await admin.describe_topics([self.topic]))[self.topic]
        return len(desc.partitions) == self.config.partitions and all(
            p.leader and set(p.isr) == set(p.replicas) - learners.get(p.partition, set())
            for p in desc.partitions
        )

    async def current_replicas(self) -> dict[str, set[int]]:
        """ "topic/partition" -> the partition's replicas now, as the metadata says (a move
        changes them: the replicas compared after a run are these, not the first ones)."""
        admin = await self.admin()
        desc = (await admin.describe_topics([self.topic]))[self.topic]
        return {f"{self.topic}/{p.partition}": set(p.replicas) for p in desc.partitions}

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
        k = self.config.sends_in_flight
        for tp in self.tps:
            for _ in range(self.config.producers_per_partition):
                slots = [f"p{n}"] if k == 1 else [f"p{n}.{i}" for i in range(k)]
                self._tasks.append(asyncio.create_task(self._produce(slots, tp)))
                self.producers += slots
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

    async def _produce(self, processes: list[str], tp: TopicPartition) -> None:
        """One producer; each of `processes` sends through it, one value at a time."""
        sender = self.clients.sender(tp)
        try:
            await asyncio.gather(*(self._send_loop(p, tp, sender) for p in processes))
        finally:
            with contextlib.suppress(Exception):
                await sender.close()

    async def _send_loop(self, process: str, tp: TopicPartition, sender: Sender) -> None:
        rate = self.config.rate_per_producer
        interval = 1.0 / rate if rate > 0 else 0.0
        seq = 0
        while not self._stop.is_set():
            began = time.monotonic()
            value = f"{process}-{seq}"
            seq += 1
            op = self.history.invoke(
                process, "send", topic=tp.topic, partition=tp.partition, value=value
            )
            sent = await sender.send(value.encode())
            if isinstance(sent, Acked):
                self.history.ok(op, offset=sent.offset)
            elif isinstance(sent, Refused):
                self.history.fail(op, error=sent.error)
            else:
                self.history.info(op, error=sent.error)
            if interval:
                await _sleep_or_stop(self._stop, interval - (time.monotonic() - began))

    async def _consume(self, process: str, tp: TopicPartition) -> None:
        reader = self.clients.reader(tp, final=False)
        try:
            while not self._stop.is_set():
                try:
                    position = await reader.position()
                except ReadFailed as e:
                    log.info("%s: no position: %s", process, e)
                else:
                    op = self.history.invoke(
                        process, "poll", topic=tp.topic, partition=tp.partition, offset=position
                    )
                    try:
                        rows = await reader.read(0.5)
                    except ReadFailed as e:
                        self.history.fail(op, error=str(e))
                    else:
                        self.history.ok(op, records=rows)
                await _sleep_or_stop(self._stop, self.config.poll_interval_s)
        finally:
            with contextlib.suppress(Exception):
                await reader.close()

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
            except (ReadFailed, TimeoutError) as e:
                problems.append(f"{tp.topic}/{tp.partition}: {type(e).__name__}: {e}")
                continue
            self.history.set_final_read(tp.topic, tp.partition, rows)
        return problems

    async def _read_whole(self, tp: TopicPartition, deadline: float) -> list[tuple[int, Value]]:
        reader = self.clients.reader(tp, final=True)
        try:
            return await _read_to_end(reader, deadline)
        finally:
            with contextlib.suppress(Exception):
                await reader.close()

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
        with contextlib.suppress(Exception):
            await self.clients.close()


async def _read_to_end(reader: Reader, deadline: float) -> list[tuple[int, Value]]:
    """Every row from the reader's position up to the high watermark, asked again once it
    seems reached: nothing is written any more, and one more look catches a high watermark
    that was still catching up with the log when we asked (a new leader's)."""
    rows: list[tuple[int, Value]] = []
    while True:
        end = await reader.end_offset()
        while await reader.position() < end:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"read {len(rows)} records up to offset {await reader.position()} of "
                    f"{end} before the deadline"
                )
            rows.extend(await reader.read(0.5))
        if await reader.end_offset() == end:
            return rows


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
    client_notes: list[str] = field(default_factory=list)
    """What the client library reported about itself (e.g. Kafka producers replaced after a
    fatal error): shown, never a failure by itself."""
    moves: list[MoveRecord] = field(default_factory=list)
    """Every move the `move` fault asked for (started or refused), in order."""

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
    moving = faults is not None and any(p.kind == "move" for p in plan)
    mover = (
        ReplicaMover(workload.admin, config.topic, faults.node_ids, history.now)
        if moving and faults is not None
        else None
    )
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
            f"{config.replication_factor}, all in sync; {config.client} clients; running for "
            f"{duration_s:.0f}s"
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
                settled=(workload.voters_in_sync if moving else workload.in_sync)
                if settle
                else None,
                settle_timeout_s=config.settle_timeout_s,
                on_event=say,
                answers=workload.answers,
                mover=mover,
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
        if mover is not None:
            t_moves = time.monotonic()
            unfinished = await mover.wait_finished(config.recover_timeout_s)
            for r in unfinished:
                problems.append(
                    f"{r.describe()}: not finished within "
                    f"{config.recover_timeout_s:.0f}s of the end"
                )
            started_moves = [r for r in mover.records if r.started]
            say(
                f"moves: {len(mover.records)} asked, {len(started_moves)} started, "
                f"{sum(r.finished for r in started_moves)} finished"
                f" ({time.monotonic() - t_moves:.1f}s waited for the last)"
            )
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
        current = None
        with contextlib.suppress(LiferaftError):
            current = await workload.current_replicas()
        if current is None:
            problems.append("could not read the partitions' current replicas to compare them")
        replicas = await compare_replicas(
            [a.strip() for a in bootstrap.split(",") if a.strip()],
            replica_sets=current,
            security=config.security,
        )
        say(
            f"replicas compared: {replicas.partitions} partitions, the controller and the groups"
            f" on every node: {len(replicas.differences)} differences"
        )
    finally:
        if mover is not None:
            await mover.close()
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
        answers_dropped=workload.answers.dropped if workload.answers is not None else 0,
        client_notes=workload.clients.notes(),
        moves=list(mover.records) if mover is not None else [],
    )
