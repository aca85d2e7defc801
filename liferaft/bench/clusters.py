"""Throw-away local clusters for a benchmark run: liferaft nodes, or NATS JetStream servers.

Both are three processes on loopback ports in a temporary directory, started before the run and
stopped (and their data deleted) after it, whatever happened. The NATS cluster is Debian's
`nats-server` with JetStream on, clustered over routes, one stream with three replicas: the same
shape as the liferaft cluster it is measured beside. Its servers are run with their defaults,
which means JetStream acknowledges a publish once a quorum of replicas holds it in memory and
syncs to disk only every two minutes (`sync_interval`, not settable in 2.9), whereas liferaft
acknowledges acks=all only once every in-sync replica has fsynced.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from liferaft.launcher import DevCluster, DevClusterError, free_port_block, secure_args

__all__ = [
    "NATS_SERVER",
    "NatsCluster",
    "NatsUnavailable",
    "liferaft_cluster",
    "nats_cluster",
    "nats_server_path",
]

NATS_SERVER = "nats-server"
"""The executable the NATS harness runs (Debian package: nats-server)."""


class NatsUnavailable(RuntimeError):
    """nats-server or the nats-py client is not installed."""


@contextmanager
def liferaft_cluster(
    nodes: int = 3, extra_args: list[str] | None = None, *, tls: bool = True, secure: bool = False
) -> Iterator[DevCluster]:
    """A fresh local liferaft cluster (node processes as `liferaft dev` runs them), with mutual
    TLS between its nodes unless `tls=False`. `secure=True` starts it as `liferaft dev up
    --secure` does (TLS and SCRAM logins on both client listeners, ACLs on) and makes the first
    admin, whose client settings are then in `dev.client_config`."""
    if secure and not tls:
        raise ValueError("a secure cluster needs TLS between its nodes")
    args = list(extra_args or []) + (secure_args(nodes) if secure else [])
    tmp = Path(tempfile.mkdtemp(prefix="liferaft-bench-"))
    dev = DevCluster.create(tmp, nodes, free_port_block(nodes), args, tls=tls)
    try:
        dev.start()
        dev.wait_healthy(60)
        if secure:
            dev.make_first_admin()
        yield dev
    finally:
        with suppress(DevClusterError, OSError):
            dev.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def nats_server_path() -> str:
    path = shutil.which(NATS_SERVER) or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if Path(p).exists()), None
    )
    if path is None:
        raise NatsUnavailable(
            "nats-server is not installed: `apt-get install nats-server` (Debian) to run the "
            "NATS JetStream side of the benchmark"
        )
    return path


def check_nats_client() -> None:
    try:
        import nats  # noqa: F401
    except ImportError:
        raise NatsUnavailable(
            "the nats-py client is not installed: `pip install nats-py` to run the NATS "
            "JetStream side of the benchmark"
        ) from None


@dataclass(slots=True)
class NatsCluster:
    directory: Path
    client_ports: list[int]
    processes: list[subprocess.Popen[bytes]]

    @property
    def servers(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.client_ports]

    def log_tail(self, i: int, lines: int = 20) -> str:
        try:
            text = (self.directory / f"n{i + 1}.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _config(i: int, client: int, route: int, routes: list[int], store: Path) -> str:
    others = ", ".join(f"nats://127.0.0.1:{p}" for p in routes if p != route)
    return (
        f"server_name: n{i + 1}\n"
        f"listen: 127.0.0.1:{client}\n"
        f'jetstream {{ store_dir: "{store}" }}\n'
        f"cluster {{ name: bench, listen: 127.0.0.1:{route}, routes: [{others}] }}\n"
    )


def _wait_port(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


@contextmanager
def nats_cluster(nodes: int = 3) -> Iterator[NatsCluster]:
    """A fresh NATS JetStream cluster on loopback (raises NatsUnavailable without nats-server
    or nats-py)."""
    exe = nats_server_path()
    check_nats_client()
    tmp = Path(tempfile.mkdtemp(prefix="liferaft-bench-nats-"))
    base = free_port_block(2 * nodes, for_nodes=False)  # NATS: no Raft ports beside
    clients = [base + i for i in range(nodes)]
    routes = [base + nodes + i for i in range(nodes)]
    procs: list[subprocess.Popen[bytes]] = []
    cluster = NatsCluster(tmp, clients, procs)
    try:
        for i in range(nodes):
            conf = tmp / f"n{i + 1}.conf"
            conf.write_text(_config(i, clients[i], routes[i], routes, tmp / f"n{i + 1}"))
            with open(tmp / f"n{i + 1}.log", "ab") as log:
                procs.append(
                    subprocess.Popen(
                        [exe, "-c", str(conf)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + 30
        for i, port in enumerate(clients):
            if not _wait_port(port, deadline) or procs[i].poll() is not None:
                raise NatsUnavailable(
                    f"nats-server n{i + 1} did not start; its log:\n{cluster.log_tail(i)}"
                )
        yield cluster
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
