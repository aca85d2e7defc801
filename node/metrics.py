"""What a node tells Prometheus: the state of its replicas, its requests, its disk and its Raft.

Two kinds of figures. Gauges of state (a partition's high watermark, its ISR, a Raft group's
commit and applied index, a consumer group's lag) are read at scrape time from the live objects
by `NodeCollector`, so the hot path pays nothing for them and a scrape sees one consistent
moment (the collector runs on the event loop, between rounds). Counts and latencies of events
(requests by API and outcome, fsync time, elections, snapshots sent) are recorded where they
happen, through the few `NodeMetrics` methods the driver and the API handlers call.

Every node has its own registry, so several nodes in one process (tests, the broker fixture)
never mix their figures. Names follow Prometheus' conventions: `liferaft_` prefix, base units
(seconds, bytes), `_total` for counters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from node.controller import CONTROLLER_GROUP
from node.groups import GROUPS_GROUP
from raft import NONE, Message, MessageType, Role, SoftState

if TYPE_CHECKING:
    from node.broker import Broker
    from node.driver import Outbox, RaftDriver
    from node.transport import Transport

log = logging.getLogger("liferaft.metrics")

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
)  # fmt: skip
FSYNC_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0)

# The request families, for dashboards that want "produce" rather than eight method names.
FAMILIES = {
    "Produce": "produce",
    "ProduceStream": "produce",
    "Fetch": "fetch",
    "FetchStream": "fetch",
    "ListOffsets": "fetch",
    "Metadata": "metadata",
    "DescribeTopics": "metadata",
    "DescribeCluster": "metadata",
    "DescribeReplica": "metadata",
    "CreateTopics": "admin",
    "DeleteTopics": "admin",
    "AlterConfigs": "admin",
    "InitProducerId": "produce",
    "PartitionLag": "groups",
    "FindCoordinator": "groups",
    "GroupHeartbeat": "groups",
    "LeaveGroup": "groups",
    "CommitOffsets": "groups",
    "FetchOffsets": "groups",
    "ListGroups": "groups",
    "DescribeGroup": "groups",
}


def family_of(api: str) -> str:
    return FAMILIES.get(api, "other")


class NodeMetrics:
    """The counters and histograms of one node, and the registry they live in."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "liferaft_requests",
            "Requests answered, by API, family and outcome (OK or the error code's name)",
            ["api", "family", "outcome"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "liferaft_request_duration_seconds",
            "Time from a request's arrival to its answer, by API and family",
            ["api", "family"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.fsync_seconds = Histogram(
            "liferaft_fsync_duration_seconds",
            "Time of one fsync of the write-ahead log (one per driver round that must sync)",
            buckets=FSYNC_BUCKETS,
            registry=self.registry,
        )
        self.leader_changes = Counter(
            "liferaft_raft_leader_changes",
            "Times this replica saw its Raft group's leader change, by kind of group",
            ["kind"],
            registry=self.registry,
        )
        self.elections_won = Counter(
            "liferaft_raft_elections_won",
            "Times this node became the leader of a Raft group, by kind of group",
            ["kind"],
            registry=self.registry,
        )
        self.snapshots_sent = Counter(
            "liferaft_raft_snapshots_sent",
            "Snapshots this node sent to followers behind its log start",
            registry=self.registry,
        )
        self.fetch_streams = Gauge(
            "liferaft_fetch_streams_open",
            "FetchStreams open on this node, on gRPC or the stream listener (a consumer holds "
            "one per partition it reads)",
            registry=self.registry,
        )
        self._leaders: dict[str, int] = {}
        self._request_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        """(api, outcome) -> its requests counter and latency histogram children: `labels()`
        takes a lock and checks the labels on every call (3 us a request, 1 us cached); the
        pairs are as few as APIs times error codes, and prometheus keeps every child anyway."""

    # -- events --------------------------------------------------------------------------------
    def observe_request(self, api: str, outcome: str, seconds: float) -> None:
        children = self._request_children.get((api, outcome))
        if children is None:
            family = family_of(api)
            children = (
                self.requests.labels(api, family, outcome),
                self.request_seconds.labels(api, family),
            )
            self._request_children[(api, outcome)] = children
        count, latency = children
        count.inc()
        latency.observe(seconds)

    def observe_fsync(self, seconds: float) -> None:
        self.fsync_seconds.observe(seconds)

    def observe_soft_state(self, group_id: str, soft: SoftState) -> None:
        """A group's leader or role changed (the driver's soft-state listener)."""
        previous = self._leaders.get(group_id)
        self._leaders[group_id] = soft.leader
        if previous == soft.leader:
            return
        kind = group_kind(group_id)
        if soft.leader != NONE:
            self.leader_changes.labels(kind).inc()
        if soft.leader == self.node_id and soft.role == Role.LEADER:
            self.elections_won.labels(kind).inc()

    def forget_group(self, group_id: str) -> None:
        self._leaders.pop(group_id, None)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def group_kind(group_id: str) -> str:
    """'controller', 'consumer_groups' or 'partition': what a Raft group id is for."""
    if group_id == CONTROLLER_GROUP:
        return "controller"
    if group_id == GROUPS_GROUP:
        return "consumer_groups"
    return "partition"


class NodeCollector(Collector):
    """State gauges read from the live node at scrape time."""

    def __init__(
        self,
        broker: Broker,
        driver: RaftDriver,
        transport: Transport | None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.broker = broker
        self.driver = driver
        self.transport = transport
        self.clock_ms = clock_ms

    def describe(self) -> Iterator[Any]:
        return iter(())  # no fixed set: families depend on what the node hosts

    def collect(self) -> Iterator[Any]:
        yield from self._partitions()
        yield from self._raft_groups()
        yield from self._driver()
        yield from self._transport()
        yield from self._consumer_groups()

    # -- partitions ----------------------------------------------------------------------------
    def _partitions(self) -> Iterator[Any]:
        labels = ["topic", "partition"]
        hw = GaugeMetricFamily(
            "liferaft_partition_high_watermark",
            "Offset after the last committed record this replica has applied",
            labels=labels,
        )
        start = GaugeMetricFamily(
            "liferaft_partition_log_start_offset", "First offset still in the log", labels=labels
        )
        leader = GaugeMetricFamily(
            "liferaft_partition_leader",
            "The node id this replica believes leads the partition (0: none known)",
            labels=labels,
        )
        is_leader = GaugeMetricFamily(
            "liferaft_partition_is_leader",
            "1 on the replica that leads the partition",
            labels=labels,
        )
        epoch = GaugeMetricFamily(
            "liferaft_partition_leader_epoch",
            "The partition's leader epoch (Raft term)",
            labels=labels,
        )
        replicas = GaugeMetricFamily(
            "liferaft_partition_replicas", "Replicas assigned to the partition", labels=labels
        )
        isr = GaugeMetricFamily(
            "liferaft_partition_isr_size",
            "In-sync replicas, as the leader counts them (leader only)",
            labels=labels,
        )
        under = GaugeMetricFamily(
            "liferaft_partition_under_replicated",
            "1 when the ISR is smaller than the replica set (leader only)",
            labels=labels,
        )
        for (topic, index), part in sorted(self.broker.partitions.items()):
            lv = [topic, str(index)]
            state = part.state()
            hw.add_metric(lv, state.high_watermark)
            start.add_metric(lv, state.log_start_offset)
            leader.add_metric(lv, state.leader)
            leading = part.is_leader
            is_leader.add_metric(lv, 1 if leading else 0)
            epoch.add_metric(lv, state.leader_epoch)
            replicas.add_metric(lv, len(part.replicas))
            if leading:
                isr.add_metric(lv, len(state.isr))
                under.add_metric(lv, 1 if len(state.isr) < len(part.replicas) else 0)
        yield from (hw, start, leader, is_leader, epoch, replicas, isr, under)

    # -- Raft ----------------------------------------------------------------------------------
    def _raft_groups(self) -> Iterator[Any]:
        labels = ["group", "kind"]
        term = GaugeMetricFamily("liferaft_raft_term", "Current Raft term", labels=labels)
        commit = GaugeMetricFamily("liferaft_raft_commit_index", "Raft commit index", labels=labels)
        applied = GaugeMetricFamily(
            "liferaft_raft_applied_index", "Index of the last entry applied here", labels=labels
        )
        lag = GaugeMetricFamily(
            "liferaft_raft_apply_lag_entries", "Committed entries not yet applied", labels=labels
        )
        last = GaugeMetricFamily(
            "liferaft_raft_last_index", "Index of the last entry in the local log", labels=labels
        )
        role = GaugeMetricFamily(
            "liferaft_raft_is_leader", "1 where this node leads the Raft group", labels=labels
        )
        voters = GaugeMetricFamily(
            "liferaft_raft_voters", "Voters of the Raft group, as this node knows it", labels=labels
        )
        learners = GaugeMetricFamily(
            "liferaft_raft_learners",
            "Learners of the Raft group, as this node knows it",
            labels=labels,
        )
        fenced = GaugeMetricFamily(
            "liferaft_raft_fenced",
            "1 while this node may not vote in the group: a new incarnation, or a replica added "
            "back below its old replica's last entry (node/membership.py)",
            labels=labels,
        )
        for gid, group in sorted(self.driver.groups.items()):
            st = group.node.status()
            lv = [gid, group_kind(gid)]
            term.add_metric(lv, st.term)
            commit.add_metric(lv, st.commit)
            applied.add_metric(lv, st.applied)
            lag.add_metric(lv, max(0, st.commit - st.applied))
            last.add_metric(lv, st.last_index)
            role.add_metric(lv, 1 if st.role == Role.LEADER else 0)
            voters.add_metric(lv, len(st.conf_state.voters))
            learners.add_metric(lv, len(st.conf_state.learners))
            fenced.add_metric(lv, 0 if group.node.fence is None else 1)
        yield from (term, commit, applied, lag, last, role, voters, learners, fenced)

    def _driver(self) -> Iterator[Any]:
        s = self.driver.stats
        for name, help_, value in (
            ("liferaft_raft_rounds", "Driver rounds taken", s.rounds),
            ("liferaft_disk_syncs", "fsyncs of the write-ahead log", s.syncs),
            ("liferaft_disk_sync_seconds", "Time spent in fsyncs", s.sync_seconds),
            ("liferaft_disk_written_bytes", "Bytes of Raft entries written", s.bytes_persisted),
            ("liferaft_disk_written_entries", "Raft entries written", s.entries_persisted),
            ("liferaft_raft_messages_stepped", "Raft messages received", s.messages_stepped),
            ("liferaft_raft_gathers", "Rounds that waited for more proposals", s.gathers),
            ("liferaft_raft_gather_turns", "Loop turns those waits took", s.gather_turns),
            (
                "liferaft_raft_gathers_caught",
                "Waits for more proposals during which one arrived",
                s.gathers_caught,
            ),
            (
                "liferaft_raft_applied_ahead",
                "Readies whose committed entries were applied before their own write was synced",
                s.applied_ahead,
            ),
        ):
            c = CounterMetricFamily(name, help_)
            c.add_metric([], value)
            yield c
        groups = GaugeMetricFamily("liferaft_raft_groups", "Raft groups hosted", labels=["state"])
        quiesced = sum(1 for g in self.driver.groups.values() if g.node.quiesced)
        groups.add_metric(["awake"], len(self.driver.groups) - quiesced)
        groups.add_metric(["quiesced"], quiesced)
        yield groups

    def _transport(self) -> Iterator[Any]:
        if self.transport is None:
            return
        up = GaugeMetricFamily(
            "liferaft_peer_connected", "1 while the link to a peer is up", labels=["peer"]
        )
        sent = CounterMetricFamily(
            "liferaft_peer_messages_sent", "Raft messages sent to a peer", labels=["peer"]
        )
        received = CounterMetricFamily(
            "liferaft_peer_messages_received", "Raft messages received from a peer", labels=["peer"]
        )
        dropped = CounterMetricFamily(
            "liferaft_peer_frames_dropped", "Frames dropped (link down or full)", labels=["peer"]
        )
        for pid, link in sorted(self.transport.links.items()):
            lv = [str(pid)]
            up.add_metric(lv, 1 if link.connected else 0)
            sent.add_metric(lv, link.stats.messages_sent)
            received.add_metric(lv, link.stats.messages_received)
            dropped.add_metric(lv, link.stats.frames_dropped)
        yield from (up, sent, received, dropped)

    # -- consumer groups -------------------------------------------------------------------------
    def _consumer_groups(self) -> Iterator[Any]:
        """Lag per consumer group and partition, on the coordinator only (one series per group
        in the cluster, not one per node): records from the committed offset to the high
        watermark, and the age of the oldest unread record where this node has a replica."""
        coordinator = self.broker.groups
        if not coordinator.is_coordinator:
            return
        labels = ["group", "topic", "partition"]
        committed = GaugeMetricFamily(
            "liferaft_consumer_group_committed_offset", "Committed offset", labels=labels
        )
        lag = GaugeMetricFamily(
            "liferaft_consumer_group_lag_records",
            "Records between the committed offset and the high watermark",
            labels=labels,
        )
        lag_s = GaugeMetricFamily(
            "liferaft_consumer_group_lag_seconds",
            "Age of the oldest record not yet committed (where this node has a replica)",
            labels=labels,
        )
        topics = self.broker.controller.state.topics
        now_ms = self.clock_ms()
        for gid, record in sorted(coordinator.state.groups.items()):
            for (topic, p), entry in sorted(record.offsets.items()):
                info = topics.get(topic)
                if info is None or p >= info.partitions:
                    continue
                lv = [gid, topic, str(p)]
                committed.add_metric(lv, entry.offset)
                # A local replica's own high watermark is never staler than a leader's gossip
                # (sent every few ticks); elsewhere gossip is all there is.
                part = self.broker.partitions.get((topic, p))
                if part is not None:
                    hw: int | None = part.high_watermark
                else:
                    view = self.broker.partition_view(info, p)
                    hw = view.state.high_watermark if view.state is not None else None
                if hw is not None:
                    lag.add_metric(lv, max(0, hw - entry.offset))
                if part is not None:
                    _, ts = part.local_lag(max(0, min(entry.offset, part.high_watermark)))
                    lag_s.add_metric(lv, max(0.0, (now_ms - ts) / 1000) if ts >= 0 else 0.0)
        yield from (committed, lag, lag_s)


class MetricsServer:
    """GET /metrics over plain HTTP/1.0 on the event loop, so scrapes read state between rounds.

    Deliberately tiny: one request per connection, a bounded request head, a deadline."""

    MAX_HEAD = 8192
    TIMEOUT_S = 5.0

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=self.MAX_HEAD)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.TIMEOUT_S)
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method not in (b"GET", b"HEAD"):
                status, ctype, body = b"405 Method Not Allowed", b"text/plain", b"GET only\n"
            elif path == b"/metrics":
                status, ctype, body = (
                    b"200 OK",
                    CONTENT_TYPE_LATEST.encode(),
                    self.metrics.exposition(),
                )
            else:
                status, ctype, body = b"404 Not Found", b"text/plain", b"try /metrics\n"
            writer.write(
                b"HTTP/1.0 " + status + b"\r\nContent-Type: " + ctype
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + (body if method == b"GET" else b"")
            )  # fmt: skip
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        except Exception:  # a scrape must never take the node down; say what went wrong
            log.exception("metrics scrape failed")
        finally:
            writer.close()


class CountingOutbox:
    """The transport as the driver's Outbox, counting what metrics want of outgoing messages
    (snapshots sent). One comparison per message; everything else passes through."""

    def __init__(self, outbox: Outbox, metrics: NodeMetrics) -> None:
        self._outbox = outbox
        self._metrics = metrics

    def send(self, to: int, group: str, msg: Message) -> None:
        if msg.type == MessageType.SNAP:
            self._metrics.snapshots_sent.inc()
        self._outbox.send(to, group, msg)

    def flush(self) -> None:
        self._outbox.flush()
