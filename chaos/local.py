"""A local cluster of node processes for chaos runs, every node-to-node link through a fault proxy.

The local target of `liferaft chaos run` and of tests/chaos/test_chaos_local.py: a
Toxiproxy-compatible proxy (python -m chaos.proxy, a process of its own) with two proxies on every
node-to-node link (gRPC, and the Raft transport RAFT_PORT_OFFSET ports above it), and node
processes started by liferaft.launcher whose --peers point at those proxies (DevCluster's per-node
peer overrides).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from chaos.network import create_links
from liferaft.launcher import DevCluster, DevClusterError, free_port_block
from liferaft_proto.ports import RAFT_PORT_OFFSET

__all__ = ["LocalChaosCluster", "local_chaos_cluster"]

PROXY_START_TIMEOUT_S = 20.0


@dataclass
class LocalChaosCluster:
    cluster: DevCluster
    proxy_api: str
    """HOST:PORT of the fault proxy's Toxiproxy API."""
    proxy_pid: int
    disks: dict[int, Any] = field(default_factory=dict)
    """node id -> its chaos.lazyfs.LazyFSMount, when the nodes run on power-loss disks."""

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap

    @property
    def node_ids(self) -> list[int]:
        return sorted(self.cluster.nodes)


def _start_proxy(log_path: Path) -> tuple[subprocess.Popen[str], str]:
    """python -m chaos.proxy on a free loopback port; (the process, its API address)."""
    log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaos.proxy", "--listen", "127.0.0.1:0", "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    log.close()
    assert proc.stdout is not None
    deadline = time.monotonic() + PROXY_START_TIMEOUT_S
    line = ""
    # The proxy prints one line once its API listens: "toxiproxy API listening on HOST:PORT".
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline and proc.poll() is None:
        chunk = proc.stdout.readline()
        if chunk:
            line += chunk
            if line.endswith("\n"):
                break
        else:
            time.sleep(0.02)
    if "listening on " not in line:
        proc.kill()
        proc.wait(5)
        raise DevClusterError(f"the fault proxy did not start; see {log_path}")
    return proc, line.rsplit("listening on ", 1)[1].strip()


@contextmanager
def local_chaos_cluster(
    data_dir: Path,
    nodes: int = 3,
    extra_args: list[str] | None = None,
    *,
    power: bool = False,
) -> Iterator[LocalChaosCluster]:
    """A local cluster whose every node-to-node link goes through a fault proxy.

    Starts the proxy, creates the links node<i>_to_node<j> (upstream: node j's gRPC port) and
    node<i>_to_node<j>_raft (RAFT_PORT_OFFSET above it; upstream: node j's Raft transport),
    points node i's --peers at the first (the node finds the second at the offset, as it would
    node j's Raft port), starts the nodes and waits until they are healthy. On exit everything
    it started is stopped (nodes with SIGTERM then SIGKILL, the proxy by its pid).

    With `power`, every node's data directory OUT/node-N is a power-loss disk: a FUSE mount
    (python -m chaos.lazyfs, one process per node) over OUT/node-N.disk that forgets every write
    not fsynced when the nemesis cuts the power (chaos/lazyfs.py), mounted before the node
    starts and unmounted after it stopped.
    """
    from chaos.lazyfs import LazyFSMount

    data_dir.mkdir(parents=True, exist_ok=True)
    proc, api = _start_proxy(data_dir / "proxy.log")
    cluster: DevCluster | None = None
    disks: dict[int, LazyFSMount] = {}
    try:
        cluster = DevCluster.create(data_dir, nodes, free_port_block(nodes), extra_args)
        if power:
            for n in cluster.nodes:
                disks[n] = LazyFSMount(
                    cluster.data_dir / f"node-{n}.disk",
                    cluster.data_dir / f"node-{n}",
                    cluster.data_dir / f"lazyfs-{n}.log",
                ).start()
        cluster.cluster_id = f"chaos-{secrets.token_hex(3)}"
        addresses = {n: node.address for n, node in cluster.nodes.items()}
        links = create_links(api, addresses, raft_port_offset=RAFT_PORT_OFFSET)
        for (i, j), listen in links.items():
            cluster.peer_overrides.setdefault(i, {})[j] = listen
        cluster.start()
        cluster.wait_healthy(60)
        yield LocalChaosCluster(cluster=cluster, proxy_api=api, proxy_pid=proc.pid, disks=disks)
    finally:
        if cluster is not None:
            cluster.stop()
        for disk in disks.values():
            disk.stop()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
