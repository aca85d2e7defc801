"""A local cluster of real node processes, for demos, tests and chaos: start, stop, kill, restart.

The cluster's state lives in its data directory: `cluster.json` (nodes, ports, pids) and per node
a data folder `node-N/` and a log `node-N.log`. Every `liferaft dev` command reads that file, so
they work across invocations (and from tests, which use this module directly).

Ports: node N listens on base-port + N - 1 for gRPC and, for its Raft transport, on that port
plus RAFT_PORT_OFFSET (node.config: 9092 -> 9192), so a block of ports is only free when both
halves are.

TLS: nodes talk to each other over mutual TLS, as a real cluster does by default. The cluster's
CA and node certificates are made in `tls/` of the data directory the first time a node starts
(liferaft/certs.py, the same code as `liferaft certs create`), and node N is started with
`--tls-dir tls/node-N`. `tls=False` starts the nodes with --insecure-plaintext-between-nodes
instead (a benchmark's baseline).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from liferaft.free_ports import listen_port_range, port_free
from liferaft_proto.credentials import NodeAssertion, SignedCalls
from liferaft_proto.ports import KAFKA, NODE_SPACING, RAFT_PORT_OFFSET, bound_offsets
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc

STATE_FILE = "cluster.json"
TLS_DIR = "tls"
CLIENT_CONFIG = "client.toml"
"""`dev up --secure` writes the first admin's client settings here (liferaft --client-config)."""
FIRST_ADMIN = "admin"


def secure_args(nodes: int) -> list[str]:
    """What `dev up --secure` starts the nodes with: TLS and SCRAM logins on both listeners, and
    ACLs on, with the first admin and the nodes' own certificates (what a node does with its key:
    the launcher's checks, `user add --as-node`) as super users, as Kafka's inter-broker
    principal is."""
    supers = [f"User:{FIRST_ADMIN}"] + [f"User:CN=node-{n}" for n in range(1, nodes + 1)]
    return [
        "--client-security-protocol",
        "SASL_SSL",
        "--authorizer",
        "--super-users",
        ";".join(supers),
    ]


class DevClusterError(RuntimeError):
    pass


@dataclass(slots=True)
class DevNode:
    node_id: int
    port: int
    pid: int = 0
    host: str = "127.0.0.1"
    join: str = ""
    """A node added to the running cluster (add_node): it starts with --join this address
    instead of --peers."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def raft_port(self) -> int:
        """Where this node's Raft transport listens (node.config.raft_address of `address`)."""
        return self.port + RAFT_PORT_OFFSET

    @property
    def kafka_address(self) -> str:
        """Where Kafka clients reach this node (gRPC port + node.config.KAFKA.offset)."""
        return f"{self.host}:{self.port + KAFKA.offset}"


@dataclass(slots=True)
class DevCluster:
    data_dir: Path
    nodes: dict[int, DevNode] = field(default_factory=dict)
    cluster_id: str = "liferaft-dev"
    extra_args: list[str] = field(default_factory=list)
    peer_overrides: dict[int, dict[int, str]] = field(default_factory=dict)
    """node id -> {peer id: address}: where that node dials those peers instead of their own
    address (the chaos suite puts a fault proxy on every node-to-node link this way)."""
    tls: bool = True
    """Mutual TLS between the nodes (certificates in tls/); False: plaintext, said to be unsafe."""

    # -- state file ----------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        data_dir: Path,
        n: int,
        base_port: int,
        extra_args: list[str] | None = None,
        *,
        tls: bool = True,
    ) -> DevCluster:
        if n < 1:
            raise DevClusterError("--nodes must be at least 1")
        if n > NODE_SPACING:
            # Node N's Raft port would be node N+spacing's gRPC port.
            raise DevClusterError(
                f"--nodes must be at most {NODE_SPACING}: each node's Raft transport listens "
                f"{RAFT_PORT_OFFSET} ports above its gRPC port"
            )
        last = base_port + n - 1 + max(bound_offsets())
        if base_port < 1024 or last > 65535:
            raise DevClusterError(
                f"--base-port {base_port} must be at least 1024 and leave room below 65536 for "
                f"{n} nodes' ports (gRPC, and the listeners above it: "
                f"+{', +'.join(str(o) for o in bound_offsets() if o)}), up to {last}"
            )
        cluster = cls(data_dir=data_dir.resolve(), extra_args=list(extra_args or []), tls=tls)
        for i in range(1, n + 1):
            cluster.nodes[i] = DevNode(node_id=i, port=base_port + i - 1)
        return cluster

    @classmethod
    def load(cls, data_dir: Path) -> DevCluster:
        path = data_dir / STATE_FILE
        if not path.exists():
            raise DevClusterError(f"no dev cluster in {data_dir} (run `liferaft dev up` first)")
        raw = json.loads(path.read_text())
        cluster = cls(
            data_dir=Path(raw["data_dir"]),
            cluster_id=raw.get("cluster_id", "liferaft-dev"),
            extra_args=list(raw.get("extra_args", [])),
            tls=bool(raw.get("tls", True)),
            peer_overrides={
                int(node): {int(peer): str(addr) for peer, addr in peers.items()}
                for node, peers in raw.get("peer_overrides", {}).items()
            },
        )
        for n in raw["nodes"]:
            cluster.nodes[int(n["node_id"])] = DevNode(**n)
        return cluster

    def save(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        raw = {
            "data_dir": str(self.data_dir),
            "cluster_id": self.cluster_id,
            "extra_args": self.extra_args,
            "tls": self.tls,
            "peer_overrides": {
                str(node): {str(peer): addr for peer, addr in peers.items()}
                for node, peers in self.peer_overrides.items()
            },
            "nodes": [asdict(n) for n in self.nodes.values()],
        }
        tmp = self.data_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(raw, indent=2))
        tmp.replace(self.data_dir / STATE_FILE)

    # -- views ---------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes.values())

    @property
    def kafka_bootstrap(self) -> str:
        """Every node's Kafka listener, for Kafka clients and tools (docs/kafka.md)."""
        return ",".join(n.kafka_address for n in self.nodes.values())

    @property
    def peers(self) -> str:
        """Every founding node at its own address: what a node dials its peers at, unless
        overridden."""
        return ",".join(f"{n.node_id}@{n.address}" for n in self.nodes.values() if not n.join)

    def peers_for(self, node_id: int) -> str:
        """The --peers of one node: `peers`, with that node's `peer_overrides` applied (the
        founders only: nodes added later join through a member)."""
        overrides = self.peer_overrides.get(node_id, {})
        return ",".join(
            f"{n.node_id}@{overrides.get(n.node_id, n.address)}"
            for n in self.nodes.values()
            if not n.join
        )

    def add_node(self) -> DevNode:
        """One more node (the next id, the next port), which joins the running cluster through
        node 1's address when started (--join; docs/operations.md)."""
        first = min(self.nodes)
        new_id = max(self.nodes) + 1
        if new_id > NODE_SPACING:
            raise DevClusterError(f"a dev cluster has at most {NODE_SPACING} nodes")
        base = self.nodes[first].port - first + 1
        node = DevNode(node_id=new_id, port=base + new_id - 1, join=self.nodes[first].address)
        self.nodes[new_id] = node
        self.save()
        return node

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / TLS_DIR

    def ensure_certs(self) -> None:
        """Make the CA and every node's certificate that is missing (never remakes one)."""
        from liferaft.certs import CertsError, create_certs

        try:
            create_certs(
                self.tls_dir,
                sorted(self.nodes),
                ["127.0.0.1", "localhost"],
                cluster=self.cluster_id,
            )
        except (CertsError, OSError) as e:
            raise DevClusterError(
                f"cannot make the cluster's certificates in {self.tls_dir}: {e}"
            ) from e

    def log_path(self, node_id: int) -> Path:
        return self.data_dir / f"node-{node_id}.log"

    def node(self, node_id: int) -> DevNode:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise DevClusterError(
                f"no node {node_id} in this cluster (nodes: {sorted(self.nodes)})"
            ) from None

    def is_running(self, node_id: int) -> bool:
        pid = self.node(node_id).pid
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # A zombie child of ours counts as dead.
        try:
            wpid, _ = os.waitpid(pid, os.WNOHANG)
            if wpid == pid:
                return False
        except ChildProcessError:
            pass
        stat = Path(f"/proc/{pid}/stat")
        return not (stat.exists() and stat.read_text().split()[2] == "Z")

    # -- processes -----------------------------------------------------------------------------
    def command(self, node_id: int) -> list[str]:
        n = self.node(node_id)
        return [
            sys.executable,
            "-m",
            "liferaft",
            "node",
            "--node-id",
            str(node_id),
            "--listen",
            n.address,
            *(["--join", n.join] if n.join else ["--peers", self.peers_for(node_id)]),
            "--data-dir",
            str(self.data_dir / f"node-{node_id}"),
            "--cluster-id",
            self.cluster_id,
            *(
                ["--tls-dir", str(self.tls_dir / f"node-{node_id}")]
                if self.tls
                else ["--insecure-plaintext-between-nodes"]
            ),
            *self.extra_args,
        ]

    def start_node(self, node_id: int) -> None:
        n = self.node(node_id)
        if self.is_running(node_id):
            raise DevClusterError(f"node {node_id} is already running (pid {n.pid})")
        _check_port_free(n.host, n.port)
        _check_port_free(
            n.host, n.raft_port, f"(node {node_id}'s Raft port, gRPC port + {RAFT_PORT_OFFSET})"
        )
        _check_port_free(
            n.host,
            n.port + KAFKA.offset,
            f"(node {node_id}'s Kafka port, gRPC port + {KAFKA.offset})",
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.tls:
            self.ensure_certs()
        log = open(self.log_path(node_id), "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = subprocess.Popen(
            self.command(node_id),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        log.close()
        n.pid = proc.pid
        self.save()

    def start(self) -> None:
        for node_id in self.nodes:
            if not self.is_running(node_id):
                self.start_node(node_id)

    def signal_node(self, node_id: int, sig: signal.Signals) -> None:
        n = self.node(node_id)
        if not self.is_running(node_id):
            raise DevClusterError(f"node {node_id} is not running")
        os.kill(n.pid, sig)

    def kill(self, node_id: int) -> None:
        """SIGKILL: the crash a power cut would be (nothing is flushed, nothing handed off)."""
        self.signal_node(node_id, signal.SIGKILL)
        self._reap(node_id, 5.0)

    def stop_node(self, node_id: int, timeout_s: float = 10.0) -> None:
        """SIGTERM, the graceful way (leadership handed off first); SIGKILL if it hangs."""
        if not self.is_running(node_id):
            return
        n = self.node(node_id)
        os.kill(n.pid, signal.SIGCONT)  # a paused node cannot handle SIGTERM
        os.kill(n.pid, signal.SIGTERM)
        if not self._reap(node_id, timeout_s):
            os.kill(n.pid, signal.SIGKILL)
            self._reap(node_id, 5.0)

    def stop(self) -> None:
        for node_id in self.nodes:
            if self.is_running(node_id):
                n = self.node(node_id)
                os.kill(n.pid, signal.SIGCONT)
                os.kill(n.pid, signal.SIGTERM)
        for node_id in self.nodes:
            if not self._reap(node_id, 10.0) and self.is_running(node_id):
                os.kill(self.node(node_id).pid, signal.SIGKILL)
                self._reap(node_id, 5.0)

    def _reap(self, node_id: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.is_running(node_id):
                return True
            time.sleep(0.02)
        return False

    # -- health --------------------------------------------------------------------------------
    def metadata(self, node_id: int, timeout_s: float = 1.0) -> broker_pb2.MetadataResponse:
        with self._channel(node_id) as ch:
            md = None
            if self.tls:
                # Where clients must log in, the launcher acts for the cluster with the node's
                # own key (liferaft_proto/credentials.py); elsewhere the signature is unused.
                assertion = _node_assertion(self.tls_dir / f"node-{node_id}")
                md = assertion.metadata(assertion.principal_of_cert(), "Metadata")
            return broker_pb2_grpc.BrokerStub(ch).Metadata(
                broker_pb2.MetadataRequest(), timeout=timeout_s, metadata=md
            )

    @property
    def client_tls(self) -> bool:
        """The nodes serve clients over TLS (--client-tls, or SSL / SASL_SSL)."""
        return "--client-tls" in self.extra_args or any(
            a in ("SSL", "SASL_SSL") for a in self.extra_args
        )

    def _channel(self, node_id: int) -> grpc.Channel:
        """A channel to a node's gRPC port; with client TLS the launcher shows that node's own
        certificate (accepted even where client certificates are required)."""
        address = self.node(node_id).address
        if not self.client_tls:
            return grpc.insecure_channel(address)
        folder = self.tls_dir / f"node-{node_id}"
        creds = grpc.ssl_channel_credentials(
            root_certificates=(folder / "ca.crt").read_bytes(),
            private_key=(folder / "node.key").read_bytes(),
            certificate_chain=(folder / "node.crt").read_bytes(),
        )
        return grpc.secure_channel(address, creds)

    @property
    def secure(self) -> bool:
        """Clients log in with SCRAM (`dev up --secure`)."""
        return any(a in ("SASL_SSL", "SASL_PLAINTEXT") for a in self.extra_args)

    @property
    def client_config(self) -> Path:
        return self.data_dir / CLIENT_CONFIG

    def make_first_admin(self, name: str = FIRST_ADMIN, timeout_s: float = 30.0) -> str | None:
        """Make the cluster's first user, with a random password, acting for the cluster with
        node 1's key (liferaft_proto/credentials.py), and write its client settings to
        client.toml (mode 0600). Returns the password, or None if client.toml already exists
        (the admin was made before: the password is printed only once)."""
        if self.client_config.exists():
            return None
        import secrets

        from scramp import ScramMechanism

        password = secrets.token_urlsafe(18)
        mechanism = "SCRAM-SHA-512"
        salt, stored_key, server_key, iterations = ScramMechanism(mechanism).make_auth_info(
            password, iteration_count=4096
        )
        request = broker_pb2.UpsertUserRequest(
            name=name,
            credential=broker_pb2.ScramCredential(
                mechanism=mechanism,
                salt=salt,
                iterations=iterations,
                stored_key=stored_key,
                server_key=server_key,
            ),
        )
        node_id = next(n for n in self.nodes if self.is_running(n))
        assertion = _node_assertion(self.tls_dir / f"node-{node_id}")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with self._channel(node_id) as ch:
                    broker_pb2_grpc.BrokerStub(ch).UpsertUser(
                        request,
                        timeout=10,
                        metadata=assertion.metadata(assertion.principal_of_cert(), "UpsertUser"),
                    )
                break
            except grpc.RpcError as e:
                if time.monotonic() > deadline:
                    raise DevClusterError(f"could not make the first admin: {e}") from None
                time.sleep(0.2)
        tls = f'security_protocol = "SASL_SSL"\nssl_cafile = "{self.tls_dir / "ca.crt"}"\n'
        text = (
            (tls if self.client_tls else 'security_protocol = "SASL_PLAINTEXT"\n')
            + f'sasl_mechanism = "{mechanism}"\nsasl_plain_username = "{name}"\n'
            f'sasl_plain_password = "{password}"\n'
        )
        fd = os.open(self.client_config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return password

    def wait_healthy(self, timeout_s: float = 30.0, nodes: list[int] | None = None) -> None:
        """Until every running node sees a controller leader and every node registered."""
        want = nodes if nodes is not None else [n for n in self.nodes if self.is_running(n)]
        deadline = time.monotonic() + timeout_s
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            ok = True
            for node_id in want:
                if not self.is_running(node_id):
                    raise DevClusterError(
                        f"node {node_id} exited during start-up; see {self.log_path(node_id)}:\n"
                        + _tail(self.log_path(node_id))
                    )
                try:
                    md = self.metadata(node_id)
                except grpc.RpcError as e:
                    ok, last_error = False, f"node {node_id}: {e.code().name}"
                    break
                if md.controller_id == 0 or len(md.brokers) < len(self.nodes):
                    ok = False
                    last_error = f"node {node_id}: controller {md.controller_id}, {len(md.brokers)} brokers registered"
                    break
            if ok:
                return
            time.sleep(0.1)
        raise DevClusterError(f"cluster not healthy after {timeout_s:.0f}s ({last_error})")


def _node_assertion(folder: Path) -> NodeAssertion:
    return NodeAssertion.load(
        (folder / "ca.crt").read_bytes(),
        (folder / "node.crt").read_bytes(),
        (folder / "node.key").read_bytes(),
    )


def node_interceptor(folder: Path) -> SignedCalls:
    """A grpc.aio interceptor that signs every call with the node certificate and key in
    `folder` (ca.crt, node.crt, node.key), for the node certificate's own principal: how
    `liferaft user add --as-node` and `dev up --secure` make the first user of a cluster where
    every client must log in."""
    assertion = _node_assertion(folder)
    principal = assertion.principal_of_cert()
    return SignedCalls(assertion, lambda: principal)


def _check_port_free(host: str, port: int, what: str = "") -> None:
    if not port_free(host, port):
        raise DevClusterError(
            f"port {port} on {host} {what + ' ' if what else ''}is in use; pick another --base-port"
        )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def free_port_block(n: int, *, for_nodes: bool = True) -> int:
    """A base port with n consecutive free ports on 127.0.0.1 (tests, bench, demo, chaos), below
    the kernel's ephemeral range (liferaft.free_ports says why).

    Nodes given these ports also listen at every offset of liferaft_proto.ports that they bind
    (their Raft transport), so those n ports must be free too; `for_nodes=False` asks for the n
    ports alone (for processes that are not liferaft nodes)."""
    import random

    offsets = bound_offsets() if for_nodes else (0,)
    start, end = listen_port_range()
    for _ in range(200):
        base = random.randrange(start, end - n - max(offsets))
        try:
            for offset in offsets:
                for i in range(n):
                    _check_port_free("127.0.0.1", base + i + offset)
        except DevClusterError:
            continue
        return base
    raise DevClusterError("no free block of ports found")
