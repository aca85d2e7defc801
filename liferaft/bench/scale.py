"""`liferaft bench partitions`: what many partitions cost a three-node cluster.

The target this measures (README, "Benchmarks"): 1,000 partitions (RF 3) on three nodes idle at
under 5% CPU per node, and a node restart rejoins all ISRs within 30 s. One run, on its own fresh
local cluster (it kills and restarts a node process, so it cannot run against --bootstrap):

  1. ready     create one topic of N partitions, RF 3, and time until every partition has a
               leader and a full ISR;
  2. idle      with no traffic and nothing polling the nodes, CPU time (utime + stime from
               /proc/<pid>/stat) of each node process over a window, as percent of one core;
  3. rejoin    SIGKILL one node, leave it down a while, start it again with the same data dir
               and arguments, and time until every partition's ISR is complete again; then
               count leaders per node right away and once preferred leaders have taken back
               their partitions.

"Complete" is judged from each partition's leader, the only node whose ISR is authoritative
(a follower's answer is gossip, up to two seconds old): every poll asks every node's Metadata
RPC, and a partition's state is what the node that leads it (at the highest epoch) says.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from liferaft.bench.target_liferaft import BenchError, create_topic
from liferaft.launcher import DevCluster
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc, errors_pb2

__all__ = [
    "TARGET_IDLE_CPU_PCT",
    "TARGET_REJOIN_S",
    "PartitionStatus",
    "ScaleResult",
    "ScaleSpec",
    "authoritative_view",
    "cpu_seconds",
    "incomplete",
    "leader_counts",
    "run_scale",
]

TARGET_IDLE_CPU_PCT = 5.0
"""The target's ceiling for idle CPU per node (percent of one core), at 1,000 partitions."""
TARGET_REJOIN_S = 30.0
"""The target's ceiling for a restarted node to be back in every ISR, at 1,000 partitions."""

POLL_INTERVAL_S = 0.1
"""How often readiness and rejoin are polled: the figures are good to about this much."""
RPC_TIMEOUT_S = 2.0
"""Per Metadata call: a node that does not answer in time counts as not ready this poll."""

Note = Callable[[str], None]
"""Told what the run is doing now (a status line on stderr)."""


@dataclass(frozen=True, slots=True)
class ScaleSpec:
    """The settings of one run (validated here, before a cluster is started for nothing)."""

    partitions: int = 1000
    replication_factor: int = 3
    settle_s: float = 5.0
    idle_s: float = 10.0
    victim: int = 3
    down_s: float = 3.0
    balance_s: float = 10.0
    timeout_s: float = 120.0
    nodes: int = 3

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError("--partitions must be at least 1")
        if not 1 <= self.victim <= self.nodes:
            raise ValueError(f"--victim must be a node id from 1 to {self.nodes}")
        for name in ("settle_s", "down_s", "balance_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name[:-2].replace('_', '-')}-seconds must be >= 0")
        if self.idle_s <= 0:
            raise ValueError("--idle-seconds must be > 0")
        if self.timeout_s <= 0:
            raise ValueError("--timeout must be > 0")

    def settings(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "replication_factor": self.replication_factor,
            "settle_s": self.settle_s,
            "idle_s": self.idle_s,
            "victim": self.victim,
            "down_s": self.down_s,
            "balance_s": self.balance_s,
            "timeout_s": self.timeout_s,
            "poll_interval_s": POLL_INTERVAL_S,
            "cpus": os.cpu_count(),
        }


@dataclass(slots=True)
class ScaleResult:
    """What one run measured. rejoin_s is None (and error says why) if the ISRs were still
    incomplete at the timeout: the other figures are still worth printing then."""

    partitions: int
    ready_s: float
    idle_cpu_pct: dict[int, float]
    rejoin_s: float | None = None
    incomplete_at_restart: int = 0
    leaders_after_rejoin: dict[int, int] = field(default_factory=dict)
    leaders_balanced: dict[int, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def idle_cpu_pct_median(self) -> float:
        return round(statistics.median(self.idle_cpu_pct.values()), 2)

    def to_dict(self) -> dict[str, Any]:
        """The --json object (node ids as string keys, as JSON has them anyway)."""
        return {
            "partitions": self.partitions,
            "ready_s": round(self.ready_s, 2),
            "idle_cpu_pct": [round(self.idle_cpu_pct[n], 2) for n in sorted(self.idle_cpu_pct)],
            "idle_cpu_pct_median": self.idle_cpu_pct_median,
            "rejoin_s": None if self.rejoin_s is None else round(self.rejoin_s, 2),
            "incomplete_at_restart": self.incomplete_at_restart,
            "leaders_after_rejoin": {str(n): c for n, c in self.leaders_after_rejoin.items()},
            "leaders_balanced": {str(n): c for n, c in self.leaders_balanced.items()},
            "settings": self.settings,
            "error": self.error,
        }


# -- CPU time ------------------------------------------------------------------------------------
def cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float:
    """User + system CPU time a process has used so far, in seconds (Linux /proc)."""
    text = (proc / str(pid) / "stat").read_text()
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


async def sample_idle_cpu(pids: Mapping[int, int], seconds: float) -> dict[int, float]:
    """Percent of one core each process used over `seconds` (node id -> percent). The
    benchmark only sleeps meanwhile, so it adds no work to the nodes."""
    t0 = time.monotonic()
    before = {n: cpu_seconds(pid) for n, pid in pids.items()}
    await asyncio.sleep(seconds)
    after = {n: cpu_seconds(pid) for n, pid in pids.items()}
    wall = time.monotonic() - t0
    return {n: 100.0 * (after[n] - before[n]) / wall for n in pids}


# -- the cluster's view of a topic -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PartitionStatus:
    leader: int
    epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def complete(self) -> bool:
        """Has a leader, and every replica is in sync."""
        return self.leader != 0 and bool(self.replicas) and set(self.isr) >= set(self.replicas)


def authoritative_view(
    answers: Mapping[int, broker_pb2.MetadataResponse | None], topic: str
) -> dict[int, PartitionStatus]:
    """Each partition of `topic` as its own leader reports it (partition -> status).

    A node reports the ISR of the partitions it leads from its Raft state, and of the others
    from gossip that can be seconds old, so only self-reported leadership counts; of two nodes
    that both claim a partition (an old leader that has not heard of the election yet), the
    higher epoch wins. A partition nobody claims is missing from the result."""
    view: dict[int, PartitionStatus] = {}
    for node_id, md in answers.items():
        if md is None:
            continue
        for t in md.topics:
            if t.name != topic or t.error_code != errors_pb2.NONE:
                continue
            for p in t.partitions:
                if p.leader_id != node_id:
                    continue
                current = view.get(p.partition)
                if current is None or p.leader_epoch > current.epoch:
                    view[p.partition] = PartitionStatus(
                        leader=p.leader_id,
                        epoch=p.leader_epoch,
                        replicas=tuple(p.replicas),
                        isr=tuple(p.isr),
                    )
    return view


def incomplete(view: Mapping[int, PartitionStatus], partitions: int) -> list[int]:
    """The partitions (of 0..partitions-1) without a leader or without a full ISR."""
    return [p for p in range(partitions) if p not in view or not view[p].complete]


def leader_counts(view: Mapping[int, PartitionStatus], node_ids: Iterable[int]) -> dict[int, int]:
    """Partitions led by each node (every node listed, those leading nothing with 0)."""
    counts = dict.fromkeys(node_ids, 0)
    for status in view.values():
        counts[status.leader] = counts.get(status.leader, 0) + 1
    return counts


def _describe(view: Mapping[int, PartitionStatus], missing: list[int]) -> str:
    shown = []
    for p in missing[:3]:
        s = view.get(p)
        shown.append(
            f"p{p}: no leader" if s is None else f"p{p}: isr {list(s.isr)} of {list(s.replicas)}"
        )
    return f"{len(missing)} partitions incomplete ({'; '.join(shown)})"


class MetadataPoller:
    """Asks every node's Metadata RPC at once. A node that fails a call gets a fresh channel
    next time, so a restarted node is seen as soon as it listens rather than after gRPC's
    reconnect backoff (which would add up to seconds to the measured rejoin)."""

    def __init__(self, addresses: Mapping[int, str]) -> None:
        self.addresses = dict(addresses)
        self._channels: dict[int, grpc.aio.Channel] = {}

    def stub(self, node_id: int) -> broker_pb2_grpc.BrokerStub:
        ch = self._channels.get(node_id)
        if ch is None:
            ch = self._channels[node_id] = grpc.aio.insecure_channel(self.addresses[node_id])
        return broker_pb2_grpc.BrokerStub(ch)

    async def _one(self, node_id: int, topic: str) -> broker_pb2.MetadataResponse | None:
        try:
            return await self.stub(node_id).Metadata(
                broker_pb2.MetadataRequest(topics=[topic]), timeout=RPC_TIMEOUT_S
            )
        except grpc.aio.AioRpcError:
            ch = self._channels.pop(node_id, None)
            if ch is not None:
                await ch.close()
            return None

    async def poll(self, topic: str) -> dict[int, broker_pb2.MetadataResponse | None]:
        """node id -> its answer, or None if it did not answer."""
        ids = list(self.addresses)
        answers = await asyncio.gather(*(self._one(n, topic) for n in ids))
        return dict(zip(ids, answers, strict=True))

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            await ch.close()


@dataclass(slots=True)
class _Poll:
    """One poll's outcome: when it was answered, what the leaders said, who answered."""

    at: float
    view: dict[int, PartitionStatus]
    answered: set[int]


async def _poll(poller: MetadataPoller, topic: str) -> _Poll:
    answers = await poller.poll(topic)
    answered = {n for n, md in answers.items() if md is not None}
    return _Poll(time.monotonic(), authoritative_view(answers, topic), answered)


async def _wait_complete(
    poller: MetadataPoller,
    topic: str,
    partitions: int,
    timeout_s: float,
    check: Callable[[], None] = lambda: None,
) -> tuple[_Poll, bool]:
    """Poll every POLL_INTERVAL_S until every node answers and every partition is complete;
    returns the last poll and whether it got there before the timeout. `check` runs before
    each poll (to fail fast when a node process has died)."""
    deadline = time.monotonic() + timeout_s
    while True:
        started = time.monotonic()
        check()
        last = await _poll(poller, topic)
        if len(last.answered) == len(poller.addresses) and not incomplete(last.view, partitions):
            return last, True
        if last.at >= deadline:
            return last, False
        await asyncio.sleep(max(0.0, started + POLL_INTERVAL_S - time.monotonic()))


# -- the run -------------------------------------------------------------------------------------
def _alive(dev: DevCluster) -> Callable[[], None]:
    """A check that raises (with the log's tail) once a node process has exited."""

    def check() -> None:
        for node_id in dev.nodes:
            if not dev.is_running(node_id):
                tail = "\n".join(
                    dev.log_path(node_id).read_text(errors="replace").splitlines()[-20:]
                )
                raise BenchError(f"node {node_id} exited; its log ends:\n{tail}")

    return check


async def run_scale(dev: DevCluster, spec: ScaleSpec, note: Note | None = None) -> ScaleResult:
    """Run the three phases against `dev`, a fresh running cluster this run may kill nodes of."""
    say = note or (lambda _msg: None)
    topic = f"scale-{uuid.uuid4().hex[:6]}"
    node_ids = sorted(dev.nodes)
    poller = MetadataPoller({n: dev.node(n).address for n in node_ids})
    alive = _alive(dev)
    try:
        say(f"creating {spec.partitions} partitions (RF {spec.replication_factor})...")
        t0 = time.monotonic()
        await create_topic(
            poller.stub(node_ids[0]),
            topic,
            spec.partitions,
            spec.replication_factor,
            timeout_s=spec.timeout_s,
        )
        ready, ok = await _wait_complete(
            poller, topic, spec.partitions, max(0.0, t0 + spec.timeout_s - time.monotonic()), alive
        )
        if not ok:
            raise BenchError(
                f"not ready {spec.timeout_s:.0f} s after creating the topic: "
                + _describe(ready.view, incomplete(ready.view, spec.partitions))
            )
        result = ScaleResult(
            partitions=spec.partitions,
            ready_s=ready.at - t0,
            idle_cpu_pct={},
            settings={"topic": topic, **spec.settings()},
        )

        say(f"settling for {spec.settle_s:g} s, then sampling idle CPU for {spec.idle_s:g} s...")
        await asyncio.sleep(spec.settle_s)
        alive()
        result.idle_cpu_pct = await sample_idle_cpu(
            {n: dev.node(n).pid for n in node_ids}, spec.idle_s
        )

        say(f"killing node {spec.victim} (SIGKILL), down for {spec.down_s:g} s...")
        dev.kill(spec.victim)
        await asyncio.sleep(spec.down_s)
        before = await _poll(poller, topic)
        result.incomplete_at_restart = len(incomplete(before.view, spec.partitions))

        say(f"restarting node {spec.victim}, waiting for every ISR to be complete...")
        t_restart = time.monotonic()
        dev.start_node(spec.victim)
        rejoined, ok = await _wait_complete(poller, topic, spec.partitions, spec.timeout_s, alive)
        result.leaders_after_rejoin = leader_counts(rejoined.view, node_ids)
        if ok:
            result.rejoin_s = rejoined.at - t_restart
        else:
            result.error = (
                f"node {spec.victim} restarted but ISRs still incomplete after "
                f"{spec.timeout_s:.0f} s: "
                + _describe(rejoined.view, incomplete(rejoined.view, spec.partitions))
                + ("" if spec.victim in rejoined.answered else f"; node {spec.victim} silent")
            )
            return result

        say(f"waiting {spec.balance_s:g} s for preferred leaders to take their partitions back...")
        await asyncio.sleep(spec.balance_s)
        balanced = await _poll(poller, topic)
        result.leaders_balanced = leader_counts(balanced.view, node_ids)
        return result
    finally:
        await poller.close()
