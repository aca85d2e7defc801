"""DevCluster's ports without starting a node: every node needs its gRPC port and, for its Raft
transport, that port + RAFT_PORT_OFFSET (liferaft_proto.ports), so both must be free and
both must fit below 65536."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from liferaft.launcher import DevCluster, DevClusterError, free_port_block
from liferaft_proto.ports import RAFT_PORT_OFFSET, bound_offsets
from node.config import raft_address


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A socket listening on a loopback port (one some other program holds) whose port -
    RAFT_PORT_OFFSET is free: the Raft port of a node whose gRPC port could be had."""
    for _ in range(100):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", s.getsockname()[1] - RAFT_PORT_OFFSET))
            except OSError:
                s.close()
                continue
        yield s
        s.close()
        return
    raise AssertionError("no port found")


def test_base_port_leaves_room_for_every_listener(tmp_path: Path) -> None:
    top = 65535 - max(bound_offsets()) - 2  # three nodes: the last node's top port is 65535
    cluster = DevCluster.create(tmp_path, 3, top)
    raft_top = top + RAFT_PORT_OFFSET
    assert [n.raft_port for n in cluster.nodes.values()] == [raft_top, raft_top + 1, raft_top + 2]
    for n in cluster.nodes.values():
        assert raft_address(n.address) == f"127.0.0.1:{n.raft_port}"
    with pytest.raises(DevClusterError, match="up to 65536"):
        DevCluster.create(tmp_path, 3, top + 1)
    with pytest.raises(DevClusterError, match="at least 1024"):
        DevCluster.create(tmp_path, 3, 1023)


def test_no_node_raft_port_is_another_nodes_grpc_port(tmp_path: Path) -> None:
    DevCluster.create(tmp_path, RAFT_PORT_OFFSET, 20000)
    with pytest.raises(DevClusterError, match="at most"):
        DevCluster.create(tmp_path, RAFT_PORT_OFFSET + 1, 20000)


def test_free_port_block_skips_a_block_whose_raft_port_is_taken(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken_raft = int(listener.getsockname()[1])
    bad = taken_raft - RAFT_PORT_OFFSET - 1  # node 2 of the block would need the taken port
    draws = iter([bad])
    real = random.randrange
    monkeypatch.setattr(
        random, "randrange", lambda start, stop: next(draws, None) or real(start, stop)
    )
    base = free_port_block(3)
    assert base != bad
    for port in range(base, base + 3):
        assert taken_raft not in (port, port + RAFT_PORT_OFFSET)


def test_free_port_block_without_raft_ports_checks_the_block_alone(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NATS servers (bench) are no liferaft nodes: only their own ports matter."""
    base = int(listener.getsockname()[1]) - RAFT_PORT_OFFSET
    monkeypatch.setattr(random, "randrange", lambda start, stop: base)
    assert free_port_block(1, for_nodes=False) == base


def test_a_node_does_not_start_when_its_raft_port_is_taken(
    tmp_path: Path, listener: socket.socket
) -> None:
    cluster = DevCluster.create(tmp_path, 1, int(listener.getsockname()[1]) - RAFT_PORT_OFFSET)
    with pytest.raises(DevClusterError, match="Raft port"):
        cluster.start_node(1)
    assert cluster.node(1).pid == 0 and not cluster.is_running(1)


def test_nodes_get_their_own_certificates_unless_the_cluster_is_plaintext(tmp_path: Path) -> None:
    from node.tls import PeerTls, TlsFiles

    cluster = DevCluster.create(tmp_path / "a", 3, 20000)
    cluster.ensure_certs()
    for node_id in (1, 2, 3):
        cmd = cluster.command(node_id)
        tls_dir = Path(cmd[cmd.index("--tls-dir") + 1])
        assert tls_dir == cluster.tls_dir / f"node-{node_id}"
        assert "--insecure-plaintext-between-nodes" not in cmd
        PeerTls(TlsFiles.find(node_id, tls_dir), node_id)  # what the node will load
    cluster.save()
    assert DevCluster.load(tmp_path / "a").tls
    plain = DevCluster.create(tmp_path / "b", 3, 20000, tls=False)
    plain.save()
    cmd = DevCluster.load(tmp_path / "b").command(1)
    assert "--insecure-plaintext-between-nodes" in cmd and "--tls-dir" not in cmd
