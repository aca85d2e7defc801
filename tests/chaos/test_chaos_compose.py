"""The chaos suite against the docker-compose cluster: the same vocabulary, on containers.

Short on purpose (one or two faults each): the local suite (test_chaos_local.py) covers the
fault kinds; this one proves the container target works end to end. `docker kill` / `docker
start` a partition leader and cut one off through the chaos-local profile's proxy (its Toxiproxy
API published on a free host port); and, on a cluster whose nodes dial each other directly, cut
links with iptables inside the containers' network namespaces. Each run must pass the checker
and recover, as in the local suite.

Needs a docker daemon and the node image (tests/compose builds it): skipped unless
LIFERAFT_COMPOSE_TEST=1. The iptables test also needs root and nsenter (CI runs as root).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from chaos.faults import Faults
from chaos.history import History
from chaos.network import IptablesNetwork, Network, ToxiproxyNetwork
from chaos.summary import format_run_summary
from chaos.targets import ComposeNodes
from chaos.workload import RunResult, WorkloadConfig, run_chaos
from tests.chaos.test_chaos_local import assert_safe_and_recovered, spaced
from tests.compose.test_compose import ComposeCluster, image, running

__all__ = ["image"]  # the fixture, re-used from the compose suite

pytestmark = pytest.mark.skipif(
    os.environ.get("LIFERAFT_COMPOSE_TEST") != "1",
    reason="needs a docker daemon and minutes: set LIFERAFT_COMPOSE_TEST=1",
)


def run_compose(
    cluster: ComposeCluster,
    network: Network,
    nodes: ComposeNodes,
    tmp_path: Path,
    plan: list,
    duration_s: float,
) -> RunResult:
    faults = Faults(nodes, network)
    try:
        with open(tmp_path / "history.jsonl", "w", encoding="utf-8") as stream:
            result = asyncio.run(
                run_chaos(
                    ",".join(cluster.bootstrap),
                    faults,
                    plan,
                    History(stream_to=stream),
                    WorkloadConfig(topic="chaos", recover_timeout_s=120.0),
                    duration_s,
                    complete_plan=True,
                    say=lambda line: print(line, flush=True),
                )
            )
    finally:
        faults.close()
    print(format_run_summary(result, {"project": cluster.project}))
    return result


def test_compose_leader_kill_and_isolation_through_the_proxy(image: str, tmp_path: Path) -> None:
    with running(ComposeCluster(image, chaos=True)) as cluster:
        nodes = ComposeNodes(project=cluster.project)
        network = ToxiproxyNetwork(f"127.0.0.1:{cluster.proxy_port}")
        plan, duration = spaced([("kill", 0), ("isolate", 1)], hold_s=3.0)
        result = run_compose(cluster, network, nodes, tmp_path, plan, duration)
    assert_safe_and_recovered(result)
    assert [e.kind for e in result.events] == ["kill", "isolate"]


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nsenter") is None or shutil.which("iptables") is None,
    reason="iptables in a container's namespace needs root, nsenter and iptables",
)
def test_compose_partitions_with_iptables(image: str, tmp_path: Path) -> None:
    with running(ComposeCluster(image)) as cluster:
        nodes = ComposeNodes(project=cluster.project)
        plan, duration = spaced([("isolate", 0), ("one_way", 1)], hold_s=3.0)
        result = run_compose(cluster, IptablesNetwork(nodes), nodes, tmp_path, plan, duration)
    assert_safe_and_recovered(result)
    assert [e.kind for e in result.events] == ["isolate", "one_way"]
