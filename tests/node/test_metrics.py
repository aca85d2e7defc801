"""node/metrics.py alone: the event figures, the text a scrape returns, and the tiny HTTP server.

The live figures of a real node (partitions, Raft, disk, groups) are checked against a running
cluster in tests/integration/test_metrics.py."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.metrics import MetricsServer, NodeMetrics, family_of, group_kind
from raft import Role, SoftState


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_requests_are_counted_by_api_family_and_outcome() -> None:
    m = NodeMetrics(1)
    m.observe_request("Produce", "OK", 0.003)
    m.observe_request("Produce", "OK", 0.004)
    m.observe_request("Produce", "NOT_LEADER", 0.001)
    m.observe_request("Fetch", "OK", 0.2)
    got = samples(m.exposition())
    assert (
        got[
            (
                "liferaft_requests_total",
                (("api", "Produce"), ("family", "produce"), ("outcome", "OK")),
            )
        ]
        == 2
    )
    assert (
        got[
            (
                "liferaft_requests_total",
                (("api", "Produce"), ("family", "produce"), ("outcome", "NOT_LEADER")),
            )
        ]
        == 1
    )
    assert (
        got[("liferaft_request_duration_seconds_count", (("api", "Fetch"), ("family", "fetch")))]
        == 1
    )
    assert family_of("CommitOffsets") == "groups" and family_of("Nope") == "other"


def test_leader_changes_and_elections_won() -> None:
    m = NodeMetrics(2)
    m.observe_soft_state("t-0", SoftState(leader=0, role=Role.CANDIDATE))  # election under way
    m.observe_soft_state("t-0", SoftState(leader=2, role=Role.LEADER))  # we won
    m.observe_soft_state("t-0", SoftState(leader=2, role=Role.LEADER))  # same leader: no change
    m.observe_soft_state("t-0", SoftState(leader=3, role=Role.FOLLOWER))  # lost it to node 3
    m.observe_soft_state("controller", SoftState(leader=1, role=Role.FOLLOWER))
    got = samples(m.exposition())
    assert got[("liferaft_raft_leader_changes_total", (("kind", "partition"),))] == 2
    assert got[("liferaft_raft_elections_won_total", (("kind", "partition"),))] == 1
    assert got[("liferaft_raft_leader_changes_total", (("kind", "controller"),))] == 1
    assert group_kind("__groups") == "consumer_groups"


def test_fsync_histogram() -> None:
    m = NodeMetrics(1)
    for s in (0.0002, 0.0008, 0.03):
        m.observe_fsync(s)
    got = samples(m.exposition())
    assert got[("liferaft_fsync_duration_seconds_count", ())] == 3
    assert got[("liferaft_fsync_duration_seconds_bucket", (("le", "0.001"),))] == 2


async def _http(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


async def test_the_server_answers_metrics_refuses_the_rest_and_survives_garbage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = NodeMetrics(1)
    m.observe_request("Metadata", "OK", 0.001)
    server = MetricsServer(m)
    await server.start("127.0.0.1", 0)
    try:
        ok = await _http(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = ok.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200")
        assert b"text/plain" in head
        assert b'liferaft_requests_total{api="Metadata"' in body
        missing = await _http(server.port, b"GET /nope HTTP/1.1\r\n\r\n")
        assert missing.startswith(b"HTTP/1.0 404")
        post = await _http(server.port, b"POST /metrics HTTP/1.1\r\n\r\n")
        assert post.startswith(b"HTTP/1.0 405")
        # A head larger than the bound, and a connection that closes half-way: no answer, no crash.
        with caplog.at_level(logging.ERROR):
            assert await _http(server.port, b"GET /" + b"a" * 20000) == b""
            assert await _http(server.port, b"GET /metr") == b""
        assert not [r for r in caplog.records if r.name == "liferaft.metrics"]
        again = await _http(server.port, b"GET /metrics HTTP/1.0\r\n\r\n")
        assert again.startswith(b"HTTP/1.0 200")
    finally:
        await server.stop()


def test_request_figures_stay_right_when_the_labelled_children_are_reused() -> None:
    """observe_request keeps each (api, outcome)'s children: repeated and interleaved calls
    still land in the right series, and outcomes of one API share its latency histogram."""
    m = NodeMetrics(1)
    for _ in range(3):
        m.observe_request("ProduceStream", "OK", 0.001)
        m.observe_request("ProduceStream", "NOT_LEADER", 0.004)
    m.observe_request("FetchStream", "OK", 0.3)
    got = samples(m.exposition())
    produce = (("api", "ProduceStream"), ("family", "produce"))
    assert got[("liferaft_requests_total", (*produce, ("outcome", "OK")))] == 3
    assert got[("liferaft_requests_total", (*produce, ("outcome", "NOT_LEADER")))] == 3
    assert got[("liferaft_request_duration_seconds_count", produce)] == 6
    assert got[("liferaft_request_duration_seconds_sum", produce)] == pytest.approx(0.015)
    assert got[("liferaft_request_duration_seconds_bucket", (*produce, ("le", "0.002")))] == 3
    fetch = (("api", "FetchStream"), ("family", "fetch"))
    assert got[("liferaft_requests_total", (*fetch, ("outcome", "OK")))] == 1
    assert got[("liferaft_request_duration_seconds_count", fetch)] == 1
