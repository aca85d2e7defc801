"""Ports for the processes we start are drawn below the kernel's ephemeral range: an outgoing
connection's local port can then never take one between choosing and binding it (CI once failed
a chaos test on exactly that)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from liferaft.free_ports import ephemeral_range, listen_port_range, port_free
from liferaft.launcher import free_port_block
from liferaft_proto.ports import RAFT_PORT_OFFSET


def write_range(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ip_local_port_range"
    path.write_text(text)
    return path


def test_default_kernel_range_leaves_the_ports_below_it(tmp_path: Path) -> None:
    assert listen_port_range(write_range(tmp_path, "32768\t60999\n")) == (10000, 32768)


def test_a_kernel_range_starting_low_leaves_the_ports_above_it(tmp_path: Path) -> None:
    assert listen_port_range(write_range(tmp_path, "1024 50000")) == (50001, 65536)


def test_a_range_covering_everything_gives_the_whole_span(tmp_path: Path) -> None:
    assert listen_port_range(write_range(tmp_path, "1024 65535")) == (10000, 65536)


@pytest.mark.parametrize("text", ["", "garbage", "1 2 3"])
def test_an_unreadable_kernel_range_means_linux_default(tmp_path: Path, text: str) -> None:
    assert ephemeral_range(write_range(tmp_path, text)) == (32768, 60999)
    assert ephemeral_range(tmp_path / "missing") == (32768, 60999)


def test_free_port_blocks_stay_clear_of_the_ephemeral_range() -> None:
    low, high = ephemeral_range()
    for _ in range(50):
        base = free_port_block(3)
        for port in (base, base + 2, base + RAFT_PORT_OFFSET, base + 2 + RAFT_PORT_OFFSET):
            assert not low <= port <= high
            assert port < 65536


def test_port_free_sees_a_listener() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_free("127.0.0.1", port)
