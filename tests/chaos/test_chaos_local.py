"""The chaos suite against real local clusters: faults, acks=all traffic, and the history check.

Every test starts its own three-node cluster whose node-to-node links all go through our
Toxiproxy-compatible proxy (chaos.local.local_chaos_cluster), runs producers and consumers on
a 6-partition topic with replication factor 3 while a nemesis injects a fixed list of faults,
heals, reads everything back and checks the history (chaos/checker.py).

What each test asserts is deterministic: the checker finds nothing acknowledged lost, no two
values at one offset, no value read whose send failed; every partition a fault hit took
acknowledged writes again; every replica came back in sync; the log was read back whole. Which
node leads what, how many records are written and how long anything takes vary from run to run
and are never asserted (the machine is shared). Every wait is bounded.

The short form runs in CI:
  - repeated leader kills (kill -9, restart);
  - a leader paused for longer than the election timeout (400 ms at most here);
  - a minority partition containing the leader;
  - Jepsen's majorities ring;
  - power loss (chaos/lazyfs.py: unsynced writes gone) of one leader, then of every node;
  - a kill, a pause and a split with confluent-kafka clients on the Kafka listeners;
  - replica moves (four nodes) concurrent with leader kills and partitions, seeded (60 s);
  - a seeded kill, pause and partition schedule on a secure cluster (SASL_SSL, ACLs on).
The long form (every fault kind, seeded schedules, minutes each) runs with LIFERAFT_CHAOS_LONG=1
(LIFERAFT_CHAOS_SEEDS, LIFERAFT_CHAOS_DURATION tune it). Seeds that ever failed are replayed
from tests/chaos/regressions.py. The `liferaft chaos run` command is tested end to end once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.faults import Faults
from chaos.history import History
from chaos.lazyfs import fuse_unavailable
from chaos.local import local_chaos_cluster
from chaos.nemesis import FAULT_KINDS, PlannedFault, plan_faults
from chaos.network import ToxiproxyNetwork
from chaos.summary import format_run_summary, hit_unavailability
from chaos.targets import ProcessNodes
from chaos.workload import RunResult, WorkloadConfig, run_chaos
from liferaft.cli._client import _client_config
from liferaft.launcher import DevCluster, secure_args
from tests.chaos.regressions import REGRESSIONS, Regression

LONG = os.environ.get("LIFERAFT_CHAOS_LONG") == "1"
SLACK_S = 4.0
"""Run time beyond the last planned fault (the run also waits for the whole plan: each fault
waits for a settled cluster first, which on a loaded machine takes a while)."""


def run_local(
    tmp_path: Path,
    plan: list[PlannedFault],
    duration_s: float,
    *,
    complete_plan: bool = True,
    power: bool = False,
    config: WorkloadConfig | None = None,
    nodes: int = 3,
    secure: bool = False,
) -> RunResult:
    """One chaos run on a fresh local cluster of `nodes`; prints its summary (and node logs on
    failure). With `power`, the nodes run on power-loss disks (chaos/lazyfs.py). With `secure`,
    the cluster is started as `liferaft dev up --secure` starts one (SASL_SSL, ACLs on) and every
    client of the run logs in as its first admin."""
    extra = secure_args(nodes) if secure else None
    with (
        local_chaos_cluster(tmp_path / "cluster", nodes, extra, power=power) as local,
        open(tmp_path / "history.jsonl", "w", encoding="utf-8") as stream,
    ):
        config = config or WorkloadConfig(
            topic="chaos", senders_on_grpc=any(f.kind == "answers" for f in plan)
        )
        if secure:
            assert local.cluster.make_first_admin() is not None
            security = _client_config(str(local.cluster.client_config))
            assert security["security_protocol"] == "SASL_SSL"
            config = dataclasses.replace(config, security=security)
        faults = Faults(
            ProcessNodes(local.cluster, local.node_ids, local.disks),
            ToxiproxyNetwork(local.proxy_api),
        )
        try:
            result = asyncio.run(
                run_chaos(
                    local.bootstrap,
                    faults,
                    plan,
                    History(stream_to=stream),
                    config,
                    duration_s,
                    complete_plan=complete_plan,
                    say=lambda line: print(line, flush=True),
                )
            )
        finally:
            faults.close()
        print(format_run_summary(result, {"history": tmp_path / "history.jsonl"}))
        if not result.ok:
            for n in local.node_ids:
                log = local.cluster.log_path(n).read_text(errors="replace").splitlines()
                print(f"----- node {n} log (tail) -----\n" + "\n".join(log[-40:]))
    return result


def assert_safe_and_recovered(result: RunResult) -> None:
    """The pass rule of the issue, plus: every fault happened, and the cluster came back."""
    report = result.report
    assert not result.problems, result.problems
    assert result.replicas is not None, "replicas not compared"
    assert result.replicas.differences == [], result.replicas.differences
    assert report.ok, (
        f"lost {len(report.lost)}, inconsistent {len(report.inconsistent_offsets)}, aborted "
        f"{len(report.aborted_reads)}, wrong offset {len(report.wrong_offset)}, phantom "
        f"{len(report.phantom_reads)}: {report.lost[:3]} {report.inconsistent_offsets[:3]}"
    )
    assert report.sends_ok > 0 and report.final_records >= report.sends_ok - len(report.duplicated)
    assert [e.error for e in result.events if e.error] == []
    assert [e.skipped for e in result.events if e.skipped] == []
    assert result.settled_after_s is not None, "replicas not back in sync after the run"
    for kind, stats in hit_unavailability(result).items():
        assert stats.unrecovered == 0, f"after a {kind}, a partition it hit took no write again"
    last_end = max((e.end_ns for e in result.events), default=result.started_ns)
    acked_after = sum(
        1
        for op in result.history.ops
        if op.f == "send" and op.type == "ok" and op.time_ns > last_end
    )
    assert acked_after > 0, "no write was acknowledged after the last fault"
    assert not result.stuck, f"producers stuck after the final heal: {result.stuck}"


def spaced(
    kinds_and_partitions: list[tuple[str, int]], hold_s: float
) -> tuple[list[PlannedFault], float]:
    """A plan of these faults, `hold_s` each, a second apart (the nemesis also waits for a
    settled cluster before each); and a run length that fits them all."""
    plan, t = [], 3.0
    for kind, partition in kinds_and_partitions:
        plan.append(PlannedFault(at_s=t, kind=kind, hold_s=hold_s, partition=partition))
        t += hold_s + 1.0
    return plan, t + SLACK_S


# ---------------------------------------------------------------------------------------------
# The short form (CI)


def test_repeated_leader_kills(tmp_path: Path) -> None:
    plan, duration = spaced([("kill", 0), ("kill", 1), ("kill", 2)], hold_s=2.5)
    result = run_local(tmp_path, plan, duration)
    assert_safe_and_recovered(result)
    assert [e.kind for e in result.events] == ["kill"] * 3
    assert all(len(e.nodes) == 1 and e.affected_partitions for e in result.events)


def test_pause_longer_than_the_election_timeout(tmp_path: Path) -> None:
    # Election timeout: 10..20 ticks of 20 ms. A 2 s pause makes the other two elect.
    plan, duration = spaced([("pause", 0), ("pause", 3)], hold_s=2.0)
    result = run_local(tmp_path, plan, duration)
    assert_safe_and_recovered(result)
    assert [e.kind for e in result.events] == ["pause", "pause"]


def test_minority_partition_containing_the_leader(tmp_path: Path) -> None:
    plan, duration = spaced([("split", 0), ("split", 4)], hold_s=3.0)
    result = run_local(tmp_path, plan, duration)
    assert_safe_and_recovered(result)
    for event in result.events:
        leader = event.leaders[event.planned.partition]
        assert leader in event.nodes and len(event.nodes) == 1  # (3 - 1) // 2 nodes


def test_ring_partition(tmp_path: Path) -> None:
    plan, duration = spaced([("ring", 0), ("ring", 0)], hold_s=3.0)
    result = run_local(tmp_path, plan, duration)
    assert_safe_and_recovered(result)
    assert all(e.affected_partitions == tuple(range(6)) for e in result.events)


_no_fuse = fuse_unavailable()
needs_fuse = pytest.mark.skipif(
    _no_fuse is not None and os.environ.get("LIFERAFT_REQUIRE_FUSE") != "1",
    reason=f"FUSE not usable here: {_no_fuse}",
)


@needs_fuse
def test_power_loss_of_every_node_and_of_a_leader(tmp_path: Path) -> None:
    """Power cuts (chaos/lazyfs.py: each node's unsynced writes are gone): every node at once,
    then one leader (which also gives the cluster time to take writes after the first). The
    cluster comes back with every acknowledged record, and every replica identical."""
    plan, duration = spaced([("power_all", 0), ("power", 1)], hold_s=2.5)
    result = run_local(tmp_path, plan, duration, power=True)
    assert_safe_and_recovered(result)
    assert [e.kind for e in result.events] == ["power_all", "power"]
    assert result.events[0].nodes == (1, 2, 3) and len(result.events[1].nodes) == 1
    for n in (1, 2, 3):  # every cut reached its disk
        cuts = (tmp_path / "cluster" / f"lazyfs-{n}.log").read_text().count("power cut #")
        assert cuts == (2 if n in result.events[1].nodes else 1)


def test_lost_produce_answers(tmp_path: Path) -> None:
    """Every produce answer lost for a while (the batches are written): the idempotent producers
    retry, are told "written already", and go on; nothing is written twice, nobody wedges."""
    plan, duration = spaced([("answers", 0), ("answers", 0)], hold_s=3.0)
    result = run_local(tmp_path, plan, duration)
    assert_safe_and_recovered(result)
    assert result.answers_dropped > 0
    assert result.stuck == []
    assert result.report.duplicated == ()


def test_kafka_clients_through_a_kill_a_pause_and_a_split(tmp_path: Path) -> None:
    """The same nemesis and checker with confluent-kafka (librdkafka) as the client: idempotent
    producers with acks=all, two sends in flight each, and consumers on the Kafka listeners;
    every acknowledged record is read back by a Kafka consumer, once, where it was acked."""
    plan, duration = spaced([("kill", 0), ("pause", 1), ("split", 2)], hold_s=2.5)
    config = WorkloadConfig(topic="chaos", client="kafka", sends_in_flight=2)
    result = run_local(tmp_path, plan, duration, config=config)
    assert_safe_and_recovered(result)
    assert [e.kind for e in result.events] == ["kill", "pause", "split"]
    assert result.report.duplicated == ()
    assert result.report.wrong_offset == ()
    assert {op.process for op in result.history.ops if op.f == "send"} == {
        f"p{n}.{k}" for n in range(6) for k in range(2)
    }


def test_replica_moves_while_leaders_are_killed_and_cut_off(tmp_path: Path) -> None:
    """The move fault (chaos/moves.py) on four nodes, seeded: partitions move to other replica
    sets through the admin API (and some back), concurrently with leader kills and network
    partitions. Every acknowledged record reads back once, every move the cluster accepted
    finishes, and each partition's current replicas hold the same log."""
    kinds = ("kill", "partition", "move")
    plan = plan_faults(kinds, 60, seed=1)
    assert {p.kind for p in plan} >= {"kill", "move"}
    result = run_local(tmp_path, plan, 60, complete_plan=False, nodes=4)
    report = result.report
    assert not result.problems, result.problems  # includes "a move did not finish"
    assert report.ok and report.duplicated == (), (len(report.lost), report.lost[:3])
    assert result.replicas is not None and result.replicas.differences == []
    assert result.settled_after_s is not None
    # The kills and partitions all happened; a move request may be refused (no controller
    # while nodes are down): recorded, not a failure.
    assert [e.error for e in result.events if e.error and e.kind != "move"] == []
    started = [m for m in result.moves if m.started]
    assert started, [m.error for m in result.moves]
    assert all(m.finished for m in started)
    assert any(set(m.target) != set(m.origin) for m in started)
    assert not result.stuck, f"producers stuck after the final heal: {result.stuck}"


def test_secure_cluster_kill_pause_partition(tmp_path: Path) -> None:
    """A seeded kill, pause and partition schedule (45 s) on a cluster whose clients must log in
    (TLS and SCRAM-SHA-512 on both listeners, ACLs on, as `liferaft chaos run --secure`): the
    producers, consumers and the nemesis's admin all log in as the first admin, so a reconnect
    after every fault logs in again, and a request forwarded to the new controller or
    coordinator carries the caller's signed principal. Nothing acknowledged may be lost."""
    plan = plan_faults(("kill", "pause", "partition"), 45, 1)
    assert {p.kind for p in plan} >= {"kill", "pause"}
    result = run_local(tmp_path, plan, 45, secure=True)
    assert_safe_and_recovered(result)


def test_chaos_run_command(tmp_path: Path) -> None:
    """`liferaft chaos run` end to end: its files, its last lines and its exit code."""
    out = tmp_path / "out"
    try:
        import matplotlib  # noqa: F401

        plot = ["--plot"]
    except ImportError:
        plot = ["--no-plot"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "liferaft",
            "chaos",
            "run",
            "--faults",
            "kill",
            "--duration",
            "16",
            "--seed",
            "5",
            "--out",
            str(out),
            *plot,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    print(done.stdout[-5000:], done.stderr[-3000:])
    assert done.returncode == 0
    last = done.stdout.strip().splitlines()[-5:]
    assert [re.sub(r"\d+", "N", line) for line in last] == [
        "lost: N",
        "duplicated: N",
        "inconsistent_offsets: N",
        "aborted_reads: N",
        "replica_differences: N",
    ]
    assert last[0] == "lost: 0" and last[2:] == [
        "inconsistent_offsets: 0",
        "aborted_reads: 0",
        "replica_differences: 0",
    ]
    history = History.load(out / "history.jsonl")
    assert history.ops and len(history.final_reads) == 6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True and summary["lost"] == 0
    assert summary["run"]["seed"] == 5 and summary["faults_injected"] >= 1
    assert summary["plan"] == [p.to_json() for p in plan_faults(("kill",), 16, 5)]
    if plot == ["--plot"]:
        assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "cluster" / "node-1").exists()  # data removed, logs kept
    assert (out / "cluster" / "node-1.log").exists()


# ---------------------------------------------------------------------------------------------
# Seeds that once failed


@pytest.mark.parametrize("case", REGRESSIONS, ids=lambda r: f"seed{r.seed}-{'+'.join(r.faults)}")
def test_regression(tmp_path: Path, case: Regression) -> None:
    plan = plan_faults(case.faults, case.duration_s, case.seed, partitions=case.partitions)
    assert_safe_and_recovered(run_local(tmp_path, plan, case.duration_s))


# ---------------------------------------------------------------------------------------------
# The long form


@pytest.mark.skipif(not LONG, reason="the long chaos form takes minutes: LIFERAFT_CHAOS_LONG=1")
# As long as it is told to run (300 s by default), then settling and checking: twice that, and
# ten minutes more, before pytest-timeout calls it hung.
@pytest.mark.timeout(2 * float(os.environ.get("LIFERAFT_CHAOS_DURATION", "300")) + 600)
@pytest.mark.parametrize(
    "seed", [int(s) for s in os.environ.get("LIFERAFT_CHAOS_SEEDS", "1,2,3").split(",")]
)
def test_long_seeded_nemesis(tmp_path: Path, seed: int) -> None:
    duration = float(os.environ.get("LIFERAFT_CHAOS_DURATION", "300"))
    plan = plan_faults(FAULT_KINDS, duration, seed)
    result = run_local(tmp_path, plan, duration, complete_plan=False, nodes=4)
    # A seeded schedule may skip a fault that would end after the run (its settle wait
    # pushed it late); everything else must hold.
    report = result.report
    assert not result.problems and report.ok, f"seed {seed}: add it to tests/chaos/regressions.py"
    assert result.settled_after_s is not None
    assert [e.error for e in result.events if e.error and e.kind != "move"] == []


def test_dev_cluster_peer_overrides_survive_save_and_load(tmp_path: Path) -> None:
    """Each node dials its peers where its overrides say (the proxies), and only it does."""
    cluster = DevCluster.create(tmp_path, 3, 30000)
    assert cluster.peers_for(2) == cluster.peers  # no overrides: everyone's own address
    cluster.peer_overrides = {1: {2: "127.0.0.1:41012", 3: "127.0.0.1:41013"}}
    cluster.save()
    loaded = DevCluster.load(tmp_path)
    assert loaded.peer_overrides == {1: {2: "127.0.0.1:41012", 3: "127.0.0.1:41013"}}
    assert loaded.peers_for(1) == "1@127.0.0.1:30000,2@127.0.0.1:41012,3@127.0.0.1:41013"
    assert loaded.peers_for(3) == cluster.peers
    command = loaded.command(1)
    assert command[command.index("--peers") + 1] == loaded.peers_for(1)
