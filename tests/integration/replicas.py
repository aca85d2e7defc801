"""The integration tests' last check: every running node holds the same replicas.

Each partition log up to the high watermark, the controller's state and the consumer groups'
state, compared across the running nodes of a DevCluster (chaos/replicas.py, through the
read-only ReplicaState RPC). Call it at the end of a scenario, once the cluster is whole again.
"""

from __future__ import annotations

from chaos.replicas import ReplicaReport, compare_replicas
from liferaft.launcher import DevCluster


async def assert_replicas_identical(cluster: DevCluster, timeout_s: float = 30.0) -> ReplicaReport:
    running = [cluster.node(n).address for n in sorted(cluster.nodes) if cluster.is_running(n)]
    assert len(running) >= 2, "fewer than two running nodes: nothing to compare"
    report = await compare_replicas(running, timeout_s)
    assert report.ok, "replicas differ:\n" + "\n".join(report.differences)
    assert report.state_machines == 2
    return report
