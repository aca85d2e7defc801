"""The docker-compose cluster, for real: the image, three containers, a crash, and nothing lost.

What the user does, from the host: build the image (deploy/build-image.sh), `docker-compose up`,
wait for three healthy containers, create a replicated topic, produce with acks=all through the
host-published ports, `docker kill` the leader of a partition while producing, `docker start` it
again. What must hold: the producer never fails (the client fails over), every acknowledged value
is read back at the offset it was acknowledged at, each offset once, and the restarted node is
back in every partition's ISR. A second test runs the cluster with its peers routed through the
`chaos-local` profile's proxy and cuts one node off there: that node must leave the ISR and come
back, which also proves the peers' traffic really goes through the proxy.

Needs a docker daemon, so it is skipped unless LIFERAFT_COMPOSE_TEST=1 (deploy/ci-setup-docker.sh
prepares a machine). Knobs: LIFERAFT_COMPOSE ("docker-compose" or "docker compose"; default the
first installed), LIFERAFT_COMPOSE_IMAGE (use this image as it is, no build),
LIFERAFT_COMPOSE_BUILD_ARGS (for deploy/build-image.sh; default --debian-base).

Every compose project has a unique name and free host ports, and is taken down with its volumes
(`down -v`) whatever happens; the test reads the cluster only through 127.0.0.1 and the networks
compose creates for it.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from client import LiferaftError, SyncAdminClient, SyncProducer
from liferaft_proto import records
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc
from node.config import KAFKA_PORT_OFFSET, STREAM_PORT_OFFSET

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("LIFERAFT_COMPOSE_TEST") != "1",
        reason="the docker-compose cluster test needs a docker daemon and takes minutes: "
        "set LIFERAFT_COMPOSE_TEST=1 (deploy/ci-setup-docker.sh prepares a machine)",
    ),
    # The first test's setup may build the image (up to 15 minutes, `image` below) before
    # its own cluster comes up: beyond pyproject's 600 s per test.
    pytest.mark.timeout(1800),
]

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
CHAOS_ENV = REPO / "deploy" / "chaos.env"
SECURE_ENV = REPO / "deploy" / "secure.env"
BUILD_SCRIPT = REPO / "deploy" / "build-image.sh"
NODES = (1, 2, 3)
DEFAULT_IMAGE = "liferaft:latest"

HEALTHY_TIMEOUT_S = 120.0
ISR_TIMEOUT_S = 90.0
PRODUCE_TIMEOUT_S = 90.0
"""How long a phase may take to see its quota of acknowledged records."""
RECORDS_PER_PHASE = 30


# -- docker and compose ----------------------------------------------------------------------------
def run(
    cmd: list[str],
    timeout: float,
    check: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """Run a command; its output, or a failure that shows the command and what it printed."""
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=cwd
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{shlex.join(cmd)} still ran after {timeout:.0f}s") from e
    if check and done.returncode != 0:
        raise AssertionError(
            f"{shlex.join(cmd)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done.stdout


def compose_command() -> list[str]:
    chosen = os.environ.get("LIFERAFT_COMPOSE")
    if chosen:
        return shlex.split(chosen)
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("LIFERAFT_COMPOSE_TEST=1 but neither docker-compose nor `docker compose` is here")


def free_ports(n: int) -> list[int]:
    """n ports free on 127.0.0.1 now (held together while choosing, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def image() -> str:
    """The node image, built from this checkout (cached layers make a rebuild cheap)."""
    given = os.environ.get("LIFERAFT_COMPOSE_IMAGE")
    if given:
        run(["docker", "image", "inspect", given], timeout=30)
        return given
    args = shlex.split(os.environ.get("LIFERAFT_COMPOSE_BUILD_ARGS", "--debian-base"))
    # The wheels are built by the Python running these tests, which is the one the project
    # supports; the build script checks it matches the image's.
    run(
        [str(BUILD_SCRIPT), *args, "--tag", DEFAULT_IMAGE, "--python", sys.executable],
        timeout=900,
    )
    return DEFAULT_IMAGE


@dataclass
class ComposeCluster:
    """One compose project of docker-compose.yml, on its own name, ports and volumes."""

    image: str
    chaos: bool = False
    secure: bool = False
    """deploy/secure.env and the `secure` profile: SASL_SSL, ACLs, the first-admin service."""
    command: list[str] = field(default_factory=compose_command)
    project: str = field(default_factory=lambda: f"lrtest{os.getpid()}{secrets.token_hex(3)}")
    ports: dict[int, int] = field(init=False)
    """node id -> its port on the host, published and advertised."""
    proxy_port: int = field(init=False)
    """The chaos proxy's API on the host."""

    def __post_init__(self) -> None:
        *node_ports, self.proxy_port = free_ports(len(NODES) + 1)
        self.ports = dict(zip(NODES, node_ports, strict=True))

    @property
    def services(self) -> list[str]:
        return [f"node{n}" for n in NODES] + (["toxiproxy-local"] if self.chaos else [])

    @property
    def bootstrap(self) -> list[str]:
        return [self.address(n) for n in NODES]

    def address(self, node_id: int) -> str:
        return f"127.0.0.1:{self.ports[node_id]}"

    def compose(self, *args: str, timeout: float = 180.0) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFERAFT_", "COMPOSE_"))}
        env["LIFERAFT_IMAGE"] = self.image
        env["LIFERAFT_TOXIPROXY_PORT"] = str(self.proxy_port)
        env["LIFERAFT_CLUSTER_ID"] = self.project
        for n, port in self.ports.items():
            env[f"LIFERAFT_NODE{n}_PORT"] = str(port)
            # The Kafka listener is published where metadata says it is: the port + the offset.
            env[f"LIFERAFT_NODE{n}_KAFKA_PORT"] = str(port + KAFKA_PORT_OFFSET)
            env[f"LIFERAFT_NODE{n}_STREAM_PORT"] = str(port + STREAM_PORT_OFFSET)
        head = [*self.command, "-f", str(COMPOSE_FILE), "-p", self.project]
        if self.chaos:
            head += ["--env-file", str(CHAOS_ENV), "--profile", "chaos-local"]
        if self.secure:
            head += ["--env-file", str(SECURE_ENV), "--profile", "secure"]
        return run([*head, *args], timeout=timeout, env=env, cwd=REPO)

    def container(self, service: str) -> str:
        ids = run(
            [
                "docker",
                "ps",
                "--all",
                "--quiet",
                "--filter",
                f"label=com.docker.compose.project={self.project}",
                "--filter",
                f"label=com.docker.compose.service={service}",
            ],
            timeout=30,
        ).split()
        assert len(ids) == 1, f"service {service}: containers {ids}"
        return ids[0]

    def state(self, service: str) -> tuple[str, str]:
        """(container status, health status) as docker sees them."""
        out = run(
            [
                "docker",
                "inspect",
                "--format",
                "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                self.container(service),
            ],
            timeout=30,
        ).split()
        return out[0], out[1] if len(out) > 1 else ""

    def wait_healthy(self, services: list[str], timeout_s: float = HEALTHY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            states = {s: self.state(s) for s in services}
            if all(health == "healthy" for _, health in states.values()):
                return
            dead = [s for s, (status, _) in states.items() if status in ("exited", "dead")]
            assert not dead, f"{dead} stopped while starting: {states}"
            assert time.monotonic() < deadline, f"not healthy after {timeout_s:.0f}s: {states}"
            time.sleep(1.0)

    def kill(self, node_id: int) -> None:
        run(["docker", "kill", self.container(f"node{node_id}")], timeout=60)

    def start(self, node_id: int) -> None:
        run(["docker", "start", self.container(f"node{node_id}")], timeout=60)

    def leftovers(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.project}"
        found = []
        for kind in ("container", "volume", "network"):
            listing = ["docker", kind, "ls", "--quiet", "--filter", label]
            if kind == "container":
                listing.insert(3, "--all")
            found += [f"{kind} {i}" for i in run(listing, timeout=30).split()]
        return found

    def down(self) -> None:
        """`down -v`, then make sure: nothing of this project may outlive the test."""
        try:
            self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10")
        finally:
            for item in self.leftovers():
                kind, ident = item.split()
                force = ["--force"] if kind in ("container", "volume") else []
                run(["docker", kind, "rm", *force, ident], timeout=60, check=False)

    def logs(self) -> str:
        try:
            return self.compose("logs", "--no-color", "--tail", "60", timeout=60)
        except AssertionError as e:
            return f"(no logs: {e})"


@contextmanager
def running(cluster: ComposeCluster) -> Iterator[ComposeCluster]:
    try:
        cluster.compose("up", "-d")
        cluster.wait_healthy(cluster.services)
        yield cluster
    except BaseException:
        print(f"--- logs of compose project {cluster.project}\n{cluster.logs()}")
        raise
    finally:
        cluster.down()


# -- reading the cluster with raw stubs (the checker does not trust the client it checks) ---------
def metadata(address: str, topics: list[str] | None = None) -> broker_pb2.MetadataResponse:
    with grpc.insecure_channel(address) as ch:
        return broker_pb2_grpc.BrokerStub(ch).Metadata(
            broker_pb2.MetadataRequest(topics=topics or []), timeout=5
        )


def first_answer(cluster: ComposeCluster, call: Callable[[str], object]) -> object:
    errors = []
    for address in cluster.bootstrap:
        try:
            return call(address)
        except grpc.RpcError as e:
            errors.append(f"{address}: {e.code().name}")  # type: ignore[attr-defined]
    raise AssertionError(f"no node answered: {errors}")


def partitions(cluster: ComposeCluster, topic: str) -> list[broker_pb2.PartitionMetadata]:
    md = first_answer(cluster, lambda a: metadata(a, [topic]))
    assert isinstance(md, broker_pb2.MetadataResponse)
    return list(md.topics[0].partitions)


def wait_until(what: str, check: Callable[[], str | None], timeout_s: float) -> None:
    """Poll check() until it returns None; it returns what is still wrong otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            wrong = check()
        except grpc.RpcError as e:
            wrong = f"{e.code().name}"  # type: ignore[attr-defined]
        if wrong is None:
            return
        assert time.monotonic() < deadline, f"{what} not within {timeout_s:.0f}s: {wrong}"
        time.sleep(0.5)


def leader_isr(cluster: ComposeCluster, topic: str, partition: int) -> set[int] | None:
    """A partition's ISR as its leader says (only the leader's is authoritative); None while
    it has no leader."""
    leader = partitions(cluster, topic)[partition].leader_id
    if not leader:
        return None
    md = metadata(cluster.address(leader), [topic])
    p = md.topics[0].partitions[partition]
    return set(p.isr) if p.leader_id == leader else None


def isr_lacks(cluster: ComposeCluster, topic: str, must_have: set[int]) -> str | None:
    """None when every partition has a leader whose ISR holds must_have; else what lacks."""
    problems = []
    for p in range(len(partitions(cluster, topic))):
        isr = leader_isr(cluster, topic, p)
        if isr is None:
            problems.append(f"partition {p}: no leader")
        elif not must_have <= isr:
            problems.append(f"partition {p}: ISR {sorted(isr)} lacks {sorted(must_have - isr)}")
    return "; ".join(problems) or None


def read_partition(cluster: ComposeCluster, topic: str, partition: int) -> list[tuple[int, bytes]]:
    """Every committed record of a partition, from its leader: (offset, value)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            leader = partitions(cluster, topic)[partition].leader_id
            assert leader, f"partition {partition} has no leader"
            out: list[tuple[int, bytes]] = []
            with grpc.insecure_channel(cluster.address(leader)) as ch:
                stub = broker_pb2_grpc.BrokerStub(ch)
                offset = 0
                while True:
                    resp = stub.Fetch(
                        broker_pb2.FetchRequest(
                            topic=topic, partition=partition, offset=offset, max_wait_ms=100
                        ),
                        timeout=10,
                    )
                    for rec in records.iter_records(resp.records):
                        if rec.offset >= offset:  # a batch may start below the asked offset
                            out.append((rec.offset, rec.value or b""))
                            offset = rec.offset + 1
                    if offset >= resp.high_watermark:
                        return out
        except (grpc.RpcError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# -- the workload --------------------------------------------------------------------------------
@dataclass
class Workload:
    """One producer thread: acks=all, one record per call, round-robin over partitions.

    Every call carries a new value, so an acknowledged value names exactly one write; a call the
    client gave up on is recorded as a failure (its value may or may not be in the log).
    """

    bootstrap: list[str]
    topic: str
    n_partitions: int
    acked: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    sent: set[bytes] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Workload:
        self._thread = threading.Thread(target=self._run, name="compose-producer", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the producer thread did not stop"

    def _run(self) -> None:
        with SyncProducer(
            self.bootstrap, acks="all", delivery_timeout_ms=30_000, request_timeout_ms=5_000
        ) as producer:
            seq = 0
            while not self._stop.is_set():
                value = f"v{seq:06d}".encode()
                partition = seq % self.n_partitions
                seq += 1
                with self._lock:
                    self.sent.add(value)
                try:
                    meta = producer.send_and_wait(self.topic, value, partition=partition)
                except LiferaftError as e:
                    with self._lock:
                        self.failures.append(f"{value.decode()}: {type(e).__name__}: {e}")
                    continue
                with self._lock:
                    self.acked[value] = (meta.partition, meta.offset)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def wait_more(self, n: int, what: str) -> None:
        """Until n more records than now are acknowledged."""
        goal = self.count() + n
        deadline = time.monotonic() + PRODUCE_TIMEOUT_S
        while self.count() < goal:
            assert self._thread is not None and self._thread.is_alive(), "producer thread died"
            assert time.monotonic() < deadline, (
                f"{what}: {self.count()} of {goal} acknowledged after {PRODUCE_TIMEOUT_S:.0f}s; "
                f"failures {self.failures[-3:]}"
            )
            time.sleep(0.05)


def check_nothing_acked_lost(cluster: ComposeCluster, work: Workload) -> int:
    """Every acked value at its acked offset, offsets dense and each read once; the log size."""
    total = 0
    for p in range(work.n_partitions):
        log = read_partition(cluster, work.topic, p)
        offsets = [o for o, _ in log]
        assert offsets == list(range(len(log))), f"partition {p}: offsets not dense: {offsets[:20]}"
        at = dict(log)
        for value, (part, offset) in work.acked.items():
            if part == p:
                assert at.get(offset) == value, (
                    f"acked {value!r} at {p}/{offset}, the log has {at.get(offset)!r} there"
                )
        strangers = {v for _, v in log} - work.sent
        assert not strangers, f"partition {p} holds values never sent: {sorted(strangers)[:5]}"
        total += len(log)
    assert len(set(work.acked.values())) == len(work.acked), "two acks named the same offset"
    return total


# -- the tests -----------------------------------------------------------------------------------
def test_kill_a_leader_and_lose_nothing_acknowledged(image: str) -> None:
    started = time.monotonic()
    with running(ComposeCluster(image)) as cluster:
        # The address split: peers use the compose network, clients get the published ports.
        md = first_answer(cluster, metadata)
        assert isinstance(md, broker_pb2.MetadataResponse)
        assert {b.node_id: f"{b.host}:{b.port}" for b in md.brokers} == {
            n: cluster.address(n) for n in NODES
        }
        assert md.controller_id in NODES

        topic = "compose-acks"
        with SyncAdminClient(cluster.bootstrap) as admin:
            created = admin.create_topic(topic, partitions=3, replication_factor=3)
        assert (created.partitions, created.replication_factor) == (3, 3)

        with Workload(cluster.bootstrap, topic, n_partitions=3) as work:
            work.wait_more(RECORDS_PER_PHASE, "before the kill")
            victim = partitions(cluster, topic)[0].leader_id
            assert victim in NODES
            cluster.kill(victim)
            assert cluster.state(f"node{victim}")[0] == "exited"
            work.wait_more(RECORDS_PER_PHASE, f"with node {victim} killed")
            down_leaders = {p.leader_id for p in partitions(cluster, topic)}
            assert victim not in down_leaders, f"node {victim} is dead but still leads"
            cluster.start(victim)
            cluster.wait_healthy([f"node{victim}"])
            work.wait_more(RECORDS_PER_PHASE, f"after node {victim} restarted")

        assert not work.failures, (
            f"the producer gave up on {len(work.failures)}: {work.failures[:5]}"
        )
        wait_until(
            f"node {victim} back in every ISR",
            lambda: isr_lacks(cluster, topic, set(NODES)),
            ISR_TIMEOUT_S,
        )
        total = check_nothing_acked_lost(cluster, work)
        assert total >= len(work.acked) >= 3 * RECORDS_PER_PHASE
    print(
        f"compose test: {len(work.acked)} acked, {total} in the log, node {victim} killed and "
        f"restarted, {time.monotonic() - started:.0f}s with {shlex.join(cluster.command)}"
    )


def proxy_api(port: int, method: str, path: str, body: dict[str, object] | None = None) -> object:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def test_chaos_profile_cuts_a_node_off_and_heals(image: str) -> None:
    started = time.monotonic()
    with running(ComposeCluster(image, chaos=True)) as cluster:
        proxies = proxy_api(cluster.proxy_port, "GET", "/proxies")
        assert isinstance(proxies, dict)
        # Two proxies per direction: gRPC (the peers address) and Raft (100 above it).
        assert sorted(proxies) == sorted(
            f"node{i}_to_node{j}{kind}"
            for i in NODES
            for j in NODES
            if i != j
            for kind in ("", "_raft")
        )

        topic = "compose-chaos"
        with SyncAdminClient(cluster.bootstrap) as admin:
            admin.create_topic(topic, partitions=1, replication_factor=3)
        leader = partitions(cluster, topic)[0].leader_id
        cut = next(n for n in NODES if n != leader)
        links = [f"node{cut}_to_node{n}" for n in NODES if n != cut]
        links += [f"node{n}_to_node{cut}" for n in NODES if n != cut]
        links += [f"{name}_raft" for name in links]  # the Raft transport's proxies too

        with Workload(cluster.bootstrap, topic, n_partitions=1) as work:
            work.wait_more(RECORDS_PER_PHASE, "before the cut")
            for name in links:
                proxy_api(cluster.proxy_port, "POST", f"/proxies/{name}", {"enabled": False})
            try:
                # Only a proxy sits between the nodes: with its links gone, `cut` must fall out
                # of the ISR, and acks=all goes on with the other two.
                def cut_still_in_sync() -> str | None:
                    isr = leader_isr(cluster, topic, 0)
                    return None if isr is not None and cut not in isr else f"ISR {isr}"

                wait_until(f"node {cut} out of the ISR", cut_still_in_sync, ISR_TIMEOUT_S)
                work.wait_more(RECORDS_PER_PHASE, f"with node {cut} cut off")
            finally:
                for name in links:
                    proxy_api(cluster.proxy_port, "POST", f"/proxies/{name}", {"enabled": True})
            wait_until(
                f"node {cut} back in the ISR",
                lambda: isr_lacks(cluster, topic, set(NODES)),
                ISR_TIMEOUT_S,
            )
            work.wait_more(RECORDS_PER_PHASE, "after the heal")

        assert not work.failures, (
            f"the producer gave up on {len(work.failures)}: {work.failures[:5]}"
        )
        total = check_nothing_acked_lost(cluster, work)
    print(
        f"chaos profile test: {len(work.acked)} acked, {total} in the log, node {cut} cut off "
        f"and healed, {time.monotonic() - started:.0f}s"
    )


def test_secure_profile_makes_the_first_admin_once(image: str, tmp_path: Path) -> None:
    """`--env-file deploy/secure.env --profile secure`: the nodes serve TLS and SCRAM logins with
    ACLs on, come up healthy (the health check dials them over TLS), and the first start makes
    `admin` and prints its password once; with it a client on the host logs in and works, without
    it or with another password it is refused; a later start makes nothing and prints nothing."""
    import re

    from client import SaslAuthenticationFailedError

    cluster = ComposeCluster(image, secure=True)
    with running(cluster):

        def admin_done() -> str | None:
            status, _ = cluster.state("first-admin")
            return None if status == "exited" else status

        wait_until("first-admin done", admin_done, HEALTHY_TIMEOUT_S)
        log = cluster.compose("logs", "--no-color", "first-admin", timeout=60)
        passwords = re.findall(r"first user: admin, password (\S+) \(shown once", log)
        assert len(passwords) == 1, log
        ca = tmp_path / "ca.crt"
        ca.write_text(
            cluster.compose(
                "run", "--rm", "--no-deps", "--entrypoint", "cat", "first-admin", "/certs/ca.crt",
                timeout=120,
            )
        )  # fmt: skip
        login = {
            "security_protocol": "SASL_SSL",
            "ssl_cafile": str(ca),
            "sasl_plain_username": "admin",
            "sasl_plain_password": passwords[0],
        }
        with SyncAdminClient(cluster.bootstrap, timeout_ms=30_000, **login) as admin:  # type: ignore[arg-type]
            admin.create_topic("secured", partitions=1, replication_factor=3)
            assert "admin" in admin.describe_users()
        with (
            pytest.raises(SaslAuthenticationFailedError),
            SyncAdminClient(
                cluster.bootstrap,
                timeout_ms=10_000,
                **{**login, "sasl_plain_password": "not-it"},  # type: ignore[arg-type]
            ) as wrong,
        ):
            wrong.list_topics()
        with (
            pytest.raises(LiferaftError),
            SyncAdminClient(cluster.bootstrap, timeout_ms=5_000) as a,
        ):
            a.list_topics()  # plaintext to a TLS listener: nothing answers

        # A later start: the mark in the certs-ca volume says the admin exists.
        cluster.compose("rm", "--force", "--stop", "first-admin", timeout=60)
        cluster.compose("up", "-d", timeout=180)
        wait_until("first-admin done again", admin_done, HEALTHY_TIMEOUT_S)
        again = cluster.compose("logs", "--no-color", "first-admin", timeout=60)
        assert "password" not in again.replace("its password was printed then", ""), again
        assert "the first admin was made at the first start" in again, again
