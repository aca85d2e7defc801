"""Every node of a real cluster serves Prometheus metrics with live values (issue 16, part 2).

A scrape is plain HTTP, as Prometheus (or curl) does it. What is checked is that each family an
operator needs is there and moves with the cluster: partitions (high watermark, log start, ISR,
under-replicated, leader and epoch), requests by API and outcome with latencies, the disk's
fsyncs, Raft (terms, commit and apply lag, leader changes) and consumer-group lag.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from client import AdminClient, Consumer, NewTopic, Producer, TopicPartition
from liferaft.launcher import DevCluster
from liferaft_proto.address import parse_address
from liferaft_proto.ports import METRICS

REPO = Path(__file__).resolve().parents[2]
Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(address: str) -> Samples:
    host, port = parse_address(address)
    url = f"http://{host}:{port + METRICS.offset}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    for got, v in samples.get(name, []):
        if all(got.get(k) == want for k, want in labels.items()):
            return v
    return None


async def test_each_node_serves_live_metrics(make_cluster: Callable[..., DevCluster]) -> None:
    cluster = make_cluster(3)
    async with AdminClient(cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(name="metered", partitions=2, replication_factor=3)])
    async with Producer(cluster.bootstrap, linger_ms=2) as producer:
        for i in range(200):
            await producer.send("metered", b"v%d" % i, partition=i % 2)
        await producer.flush()
    async with Consumer(
        cluster.bootstrap, group_id="billing", auto_offset_reset="earliest"
    ) as consumer:
        consumer.assign([TopicPartition("metered", 0)])
        got = 0
        while got < 40:
            batches = await consumer.getmany(timeout_ms=500, max_records=40 - got)
            got += sum(len(r) for r in batches.values())
        await consumer.commit()
        # It reads the partition on one FetchStream, open at the leader while it runs.
        streams = {
            n: value(scrape(node.address), "liferaft_fetch_streams_open")
            for n, node in cluster.nodes.items()
        }
        assert sorted(streams.values()) == [0, 0, 1], streams
    # Closing the consumer cancels the stream: the node's handler ends (bounded poll).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while any(
        value(scrape(n.address), "liferaft_fetch_streams_open") for n in cluster.nodes.values()
    ):
        assert loop.time() < deadline, (
            "a FetchStream still open on a node after the consumer closed"
        )
        await asyncio.sleep(0.2)

    # Gauges follow the cluster within a few rounds; poll rather than sleep a fixed time.
    deadline = loop.time() + 20
    while True:
        scraped = {n: scrape(node.address) for n, node in cluster.nodes.items()}
        leaders = [
            s
            for s in scraped.values()
            if value(s, "liferaft_partition_is_leader", topic="metered", partition="0") == 1
        ]
        lagging = [
            s
            for s in scraped.values()
            if value(s, "liferaft_consumer_group_lag_records", group="billing", partition="0") == 60
        ]
        if (leaders and lagging) or loop.time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert len(leaders) == 1, "exactly one node leads metered-0"
    lead = leaders[0]
    assert value(lead, "liferaft_partition_high_watermark", topic="metered", partition="0") == 100
    assert value(lead, "liferaft_partition_isr_size", topic="metered", partition="0") == 3
    assert value(lead, "liferaft_partition_under_replicated", topic="metered", partition="0") == 0
    assert value(lead, "liferaft_partition_log_start_offset", topic="metered", partition="0") == 0
    assert (
        value(lead, "liferaft_partition_leader_epoch", topic="metered", partition="0") or 0
    ) >= 1
    for node_id, s in scraped.items():
        # Every replica knows its high watermark and who leads; every node fsyncs and counts it.
        assert value(s, "liferaft_partition_high_watermark", topic="metered", partition="1") == 100
        assert (value(s, "liferaft_partition_leader", topic="metered", partition="1") or 0) > 0
        assert (value(s, "liferaft_fsync_duration_seconds_count") or 0) > 0, node_id
        assert (value(s, "liferaft_disk_syncs_total") or 0) > 0
        assert (value(s, "liferaft_raft_term", kind="controller") or 0) >= 1
        assert value(s, "liferaft_raft_apply_lag_entries", group="controller") is not None
        assert value(s, "liferaft_peer_connected") == 1
    produced = sum(
        value(s, "liferaft_requests_total", api="Produce", outcome="OK") or 0
        for s in scraped.values()
    )
    assert produced >= 1
    answers = sum(
        value(s, "liferaft_requests_total", api="FetchStream", outcome="OK") or 0
        for s in scraped.values()
    )
    assert answers >= 1
    assert any(
        value(s, "liferaft_request_duration_seconds_count", api="Metadata")
        for s in scraped.values()
    )
    assert (
        sum(
            value(s, "liferaft_raft_elections_won_total", kind="partition") or 0
            for s in scraped.values()
        )
        >= 2
    )
    # Consumer-group lag, on the coordinator: 40 of partition 0's 100 records were committed.
    assert len(lagging) == 1, "one node (the coordinator) reports consumer-group lag"
    assert sum("liferaft_consumer_group_lag_records" in s for s in scraped.values()) == 1
    lag = lagging[0]
    assert (
        value(lag, "liferaft_consumer_group_committed_offset", group="billing", partition="0") == 40
    )
    assert value(lag, "liferaft_consumer_group_lag_records", group="billing", partition="0") == 60
    assert (
        value(lag, "liferaft_consumer_group_lag_seconds", group="billing", partition="0") or -1
    ) >= 0

    # Every series a panel of the shipped dashboard queries exists on a live node.
    names = {n for s in scraped.values() for n in s}
    for metric in dashboard_metrics():
        assert metric in names, f"the dashboard queries {metric}, which no node exports"


def dashboard_metrics() -> set[str]:
    dashboard = json.loads((REPO / "deploy/grafana/liferaft-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    return {m for e in exprs for m in re.findall(r"\bliferaft_[a-z_]+", e)}
