"""stream_port_offset (the stream listener's place, node/stream_listener.py): checked at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import STREAM_PORT_OFFSET, ConfigError, NodeConfig


def config(tmp_path: Path, **extra: object) -> NodeConfig:
    return NodeConfig(
        node_id=1,
        listen="127.0.0.1:9092",
        peers={1: "127.0.0.1:9092"},
        data_dir=tmp_path,
        insecure_plaintext_between_nodes=True,
        **extra,  # type: ignore[arg-type]
    ).validate()


def test_on_by_default_at_plus_400_and_0_turns_it_off(tmp_path: Path) -> None:
    assert config(tmp_path).stream_port_offset == STREAM_PORT_OFFSET == 400
    assert config(tmp_path, stream_port_offset=0).stream_port_offset == 0


@pytest.mark.parametrize(
    ("offset", "words"),
    [
        (-1, "must be in 0..65534"),
        (100, "must differ from raft_port_offset"),
        (200, "must differ from raft_port_offset and kafka_port_offset"),
        (60_000, "outside 1..65535"),
    ],
)
def test_a_bad_offset_is_refused(tmp_path: Path, offset: int, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        config(tmp_path, stream_port_offset=offset)
