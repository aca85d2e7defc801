"""The one port table (liferaft_proto.ports) and the files that cannot import it.

docker-compose.yml, deploy/Dockerfile and deploy/toxiproxy.json write ports out as numbers;
these tests hold them to the table, so moving a listener (the Kafka listener taking 9092) fails
here until every file follows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from liferaft_proto.address import format_address, parse_address
from liferaft_proto.ports import (
    DEFAULT_BASE_PORT,
    GRPC,
    KAFKA,
    LISTENERS,
    METRICS,
    NODE_SPACING,
    RAFT,
    RAFT_PORT_OFFSET,
    STREAM,
    bound_offsets,
    listener_address,
)

ROOT = Path(__file__).resolve().parent.parent.parent


def test_the_table_leaves_room_for_every_node_of_a_dev_cluster() -> None:
    offsets = [listener.offset for listener in LISTENERS]
    assert len(set(offsets)) == len(offsets)
    assert all(offset % NODE_SPACING == 0 for offset in offsets)
    assert len({listener.name for listener in LISTENERS}) == len(LISTENERS)
    assert bound_offsets() == (
        GRPC.offset,
        RAFT.offset,
        KAFKA.offset,
        METRICS.offset,
        STREAM.offset,
    )
    assert bound_offsets() == (0, RAFT_PORT_OFFSET, 200, 300, 400)


def test_listener_addresses() -> None:
    assert listener_address("127.0.0.1:9092", RAFT.offset) == "127.0.0.1:9192"
    assert listener_address("[::1]:9092", RAFT.offset) == "[::1]:9192"
    with pytest.raises(ValueError, match=r"outside 1\.\.65535"):
        listener_address("127.0.0.1:65500", RAFT.offset)


@pytest.mark.parametrize("bad", ["", "9092", "host:", ":9092", "host:x", "host:0", "host:70000"])
def test_a_bad_address_is_refused_with_what_to_fix(bad: str) -> None:
    with pytest.raises(ValueError, match="--listen"):
        parse_address(bad, "--listen")


def test_addresses_round_trip() -> None:
    for host in ("127.0.0.1", "::1", "node1"):
        assert parse_address(format_address(host, 9092)) == (host, 9092)


def test_the_image_exposes_the_listeners_the_node_binds() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    exposed = re.search(r"^EXPOSE (.+)$", dockerfile, re.M)
    assert exposed is not None
    assert [int(p) for p in exposed.group(1).split()] == [
        DEFAULT_BASE_PORT + offset for offset in bound_offsets()
    ]
    assert f"LIFERAFT_LISTEN=0.0.0.0:{DEFAULT_BASE_PORT}" in dockerfile


def test_compose_nodes_listen_on_the_base_port() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    listens = re.findall(r"LIFERAFT_LISTEN: 0\.0\.0\.0:(\d+)", compose)
    assert listens and set(listens) == {str(DEFAULT_BASE_PORT)}
    published = re.findall(r"_NODE\d_PORT:-\d+\}:(\d+)$", compose, re.M)
    assert published and set(published) == {str(GRPC.offset + DEFAULT_BASE_PORT)}
    # Clients dial the stream listener where metadata says: the advertised port + its offset.
    for n, advertised in enumerate(re.findall(r"_NODE\d_PORT:-(\d+)\}:\d+$", compose, re.M), 1):
        stream = f"_NODE{n}_STREAM_PORT:-{int(advertised) + STREAM.offset}}}:"
        assert stream + str(DEFAULT_BASE_PORT + STREAM.offset) in compose, stream


def test_the_readme_shows_every_bound_listener() -> None:
    readme = (ROOT / "README.md").read_text()
    for listener in LISTENERS:
        if not listener.reserved:
            row = f"| +{listener.offset} | {DEFAULT_BASE_PORT + listener.offset} |"
            assert row in readme, row


def test_the_compose_fault_proxy_forwards_to_each_listener() -> None:
    links = json.loads((ROOT / "deploy" / "toxiproxy.json").read_text())
    for link in links:
        port = parse_address(link["upstream"])[1]
        listen = parse_address(link["listen"])[1]
        if link["name"].endswith("_raft"):
            assert port == DEFAULT_BASE_PORT + RAFT.offset, link
        else:
            assert port == DEFAULT_BASE_PORT + GRPC.offset, link
            raft_link = next(x for x in links if x["name"] == link["name"] + "_raft")
            # A node dials a peer's Raft transport RAFT_PORT_OFFSET above its --peers address.
            assert parse_address(raft_link["listen"])[1] == listen + RAFT_PORT_OFFSET
