"""Where node faults land: node processes on this machine, or the containers of a compose cluster.

Both answer the same four verbs, by node id: `kill` (SIGKILL: a crash, nothing flushed),
`restart` (start a killed node again, with the data it had on disk), `pause` and `resume`
(SIGSTOP/SIGCONT, or `docker pause`/`unpause`: the process is frozen, its sockets stay open, and
its peers see silence rather than a closed connection: a GC pause, a stalled VM). Every verb
returns only once the fault is in effect, or raises `TargetError`.

`kill` and `pause` return when the fault took effect, as a `time.time()` value, where the target
knows it better than "some time during the call": a signal to a local process acts at once, and
docker records the moment a killed container exited. Otherwise they return None. (A `docker kill`
takes a few hundred milliseconds from call to return, so "before the call" would count writes
that succeeded before the node died as writes after its death.)

The local target answers a fifth when its nodes run on power-loss disks (chaos/lazyfs.py, one
FUSE mount under each node's data directory): `power_cut(nodes)` SIGKILLs every one of `nodes`
first (all of them before any disk is touched: one power failure, not a sequence of crashes),
then drops every write each of them had not fsynced. `restart` brings a node back on what its
disk kept. The compose target has no such disks and refuses it.

The link faults (partitions, latency, bandwidth) are chaos/network.py's; chaos/faults.py puts
the two together under one vocabulary.

Processes: chaos/ does not import node/ (imports point node -> chaos), so the local target
drives any object with DevCluster's methods (`ProcessCluster` below): liferaft/cli/chaos.py hands it
a DevCluster.

Containers: the services `node1`, `node2`, ... of one compose project, found by the labels
compose puts on them, driven with the `docker` command line.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

__all__ = [
    "ComposeNodes",
    "NodeTarget",
    "PowerLossDisk",
    "ProcessCluster",
    "ProcessNodes",
    "TargetError",
    "compose_projects",
    "docker",
    "parse_docker_time",
]

DOCKER_TIMEOUT_S = 60.0
"""Bound on one docker command (a `docker kill` of a healthy container takes well under 1 s)."""


class TargetError(RuntimeError):
    """A fault could not be injected or undone; the message says which and why."""


class NodeTarget(Protocol):
    """The node verbs every target answers."""

    @property
    def node_ids(self) -> Sequence[int]: ...

    def kill(self, node_id: int) -> float | None: ...

    def restart(self, node_id: int) -> None: ...

    def pause(self, node_id: int) -> float | None: ...

    def resume(self, node_id: int) -> None: ...


class PowerLossDisk(Protocol):
    """A disk that can lose what was not synced (chaos.lazyfs.LazyFSMount)."""

    def cut(self) -> None: ...


class ProcessCluster(Protocol):
    """What the local target needs of a cluster of node processes (liferaft.launcher.DevCluster)."""

    def kill(self, node_id: int) -> None: ...

    def start_node(self, node_id: int) -> None: ...

    def signal_node(self, node_id: int, sig: signal.Signals) -> None: ...


@dataclass
class ProcessNodes:
    """Node processes on this machine, through a `ProcessCluster`."""

    cluster: ProcessCluster
    ids: Sequence[int]
    disks: Mapping[int, PowerLossDisk] = field(default_factory=dict)
    """node id -> the power-loss disk under its data directory (empty: no power faults)."""

    @property
    def node_ids(self) -> Sequence[int]:
        return tuple(self.ids)

    def kill(self, node_id: int) -> float | None:
        at = time.time()  # the signal acts at once; the call then waits to reap the process
        self._do(self.cluster.kill, node_id, "kill")
        return at

    def restart(self, node_id: int) -> None:
        self._do(self.cluster.start_node, node_id, "restart")

    def power_cut(self, node_ids: Sequence[int]) -> float | None:
        """Power loss of `node_ids` at once: kill them all, then drop what their disks had not
        synced. Returns when the power went (the first kill)."""
        missing = [n for n in node_ids if n not in self.disks]
        if missing:
            raise TargetError(
                f"node(s) {missing} have no power-loss disk: start the cluster with power faults"
            )
        at = time.time()
        for n in node_ids:
            self._do(self.cluster.kill, n, "power cut (kill)")
        for n in node_ids:
            try:
                self.disks[n].cut()
            except (OSError, RuntimeError) as e:  # LazyFSError is a RuntimeError
                raise TargetError(f"power cut of node {n}'s disk: {e}") from e
        return at

    def pause(self, node_id: int) -> float | None:
        at = time.time()
        self._do(lambda n: self.cluster.signal_node(n, signal.SIGSTOP), node_id, "pause")
        return at

    def resume(self, node_id: int) -> None:
        self._do(lambda n: self.cluster.signal_node(n, signal.SIGCONT), node_id, "resume")

    @staticmethod
    def _do(action: Callable[[int], None], node_id: int, what: str) -> None:
        try:
            action(node_id)
        except (OSError, RuntimeError) as e:  # DevClusterError is a RuntimeError
            raise TargetError(f"{what} node {node_id}: {e}") from e


def docker(*args: str, timeout_s: float = DOCKER_TIMEOUT_S) -> str:
    """Run `docker ARGS`; its stdout, or TargetError with what it printed."""
    cmd = ["docker", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError as e:
        raise TargetError("the docker command is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise TargetError(f"{shlex.join(cmd)} still ran after {timeout_s:.0f}s") from e
    if done.returncode != 0:
        raise TargetError(
            f"{shlex.join(cmd)} exited {done.returncode}: {(done.stderr or done.stdout).strip()}"
        )
    return done.stdout


def parse_docker_time(text: str) -> float:
    """ "2024-05-01T12:00:00.123456789Z" -> seconds since the epoch (a time.time() value)."""
    text = text.strip()
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", text)
    if not m or text.startswith("0001-"):
        raise ValueError(f"not a docker time: {text!r}")
    whole = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return whole + float("0." + (m.group(2) or "0"))


def compose_projects(service: str = "node1") -> list[str]:
    """Names of the compose projects that have a container for `service`, sorted."""
    out = docker(
        "ps",
        "--all",
        "--filter",
        f"label=com.docker.compose.service={service}",
        "--format",
        '{{.Label "com.docker.compose.project"}}',
    )
    return sorted({line.strip() for line in out.splitlines() if line.strip()})


@dataclass
class ComposeNodes:
    """The node containers of one compose project: service `node<N>` is node N.

    `project=None` finds the one project that runs node services, and refuses to guess when
    there are several.
    """

    ids: Sequence[int] = (1, 2, 3)
    project: str | None = None
    _containers: dict[int, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.project is None:
            found = compose_projects()
            if len(found) != 1:
                raise TargetError(
                    "cannot tell which compose project to use: "
                    + (f"found {found}" if found else "no container of service node1 exists")
                    + "; pass the project name (docker-compose -p NAME)"
                )
            self.project = found[0]

    @property
    def node_ids(self) -> Sequence[int]:
        return tuple(self.ids)

    def container(self, node_id: int) -> str:
        """The container id of node `node_id` (cached: kill and start keep the container)."""
        cid = self._containers.get(node_id)
        if cid is None:
            ids = docker(
                "ps",
                "--all",
                "--quiet",
                "--filter",
                f"label=com.docker.compose.project={self.project}",
                "--filter",
                f"label=com.docker.compose.service=node{node_id}",
            ).split()
            if len(ids) != 1:
                raise TargetError(
                    f"compose project {self.project!r}: expected one container for node{node_id}, "
                    f"found {ids or 'none'}"
                )
            cid = self._containers[node_id] = ids[0]
        return cid

    def pid(self, node_id: int) -> int:
        """The host pid of the container's main process (0 when it is not running)."""
        return int(docker("inspect", "--format", "{{.State.Pid}}", self.container(node_id)))

    def ip_addresses(self, node_id: int) -> list[str]:
        """The container's addresses on its compose networks."""
        out = docker(
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            self.container(node_id),
        )
        return out.split()

    def kill(self, node_id: int) -> float | None:
        cid = self.container(node_id)
        docker("kill", "--signal", "KILL", cid)
        # When it died, as docker saw it (RFC 3339 with nanoseconds, UTC).
        try:
            docker("wait", cid, timeout_s=10)
            return parse_docker_time(docker("inspect", "--format", "{{.State.FinishedAt}}", cid))
        except (TargetError, ValueError):
            return None

    def restart(self, node_id: int) -> None:
        docker("start", self.container(node_id))

    def pause(self, node_id: int) -> float | None:
        docker("pause", self.container(node_id))
        return None

    def resume(self, node_id: int) -> None:
        docker("unpause", self.container(node_id))
