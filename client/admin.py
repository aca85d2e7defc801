"""Topic and cluster administration: create, delete, describe, list; offsets by time.

    async with AdminClient("127.0.0.1:9092") as admin:
        await admin.create_topic("orders", partitions=6, replication_factor=3,
                                 configs={"min.insync.replicas": "2"})
        print(await admin.describe_topics(["orders"]))

Create and delete go to any node, which forwards them to the controller leader; the node answers
with one result per topic. A topic's own error (it exists already, a bad config) is raised as
its LiferaftError subclass; with `raise_on_error=False` every topic's outcome is returned
instead. Per-topic errors the node marks retriable (no controller leader for a moment) are
retried with backoff within the call's timeout. As in Kafka, a create whose first answer was
lost may come back from its retry as TopicAlreadyExistsError.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypeVar, Unpack

from google.protobuf.message import Message

from client.cluster import ClientConfig, Cluster, resolve_bootstrap
from client.consumer import partition_lag
from client.errors import (
    BrokerUnavailableError,
    LiferaftError,
    UnknownTopicOrPartitionError,
    error_from_detail,
)
from client.group import CoordinatorClient, OffsetAndMetadata, fetch_committed, tps_from_pb
from client.metadata import BrokerMetadata, PartitionMetadata, TopicMetadata, best_view
from client.offsets import OffsetSpec, list_offset
from client.retry import RetryState
from client.security import Security, SecurityOptions
from client.sender import server_timeout_ms
from client.types import OffsetAndTimestamp, TopicPartition
from liferaft_proto.v1 import broker_pb2
from liferaft_proto.v1.errors_pb2 import ErrorCode, ErrorDetail

__all__ = [
    "AdminClient",
    "ClusterDescription",
    "ConfigValue",
    "CreatedTopic",
    "GroupDescription",
    "GroupMember",
    "GroupOverview",
    "NewTopic",
    "OffsetSpec",
    "PartitionMove",
    "PartitionOffsetLag",
    "RecordsToDelete",
    "ReplicaDescription",
    "TopicDescription",
]

_Item = TypeVar("_Item")

_CONFIG_SOURCES = {
    broker_pb2.ConfigEntry.DEFAULT: "default",
    broker_pb2.ConfigEntry.TOPIC: "topic",
    broker_pb2.ConfigEntry.BROKER: "broker",
}


@dataclass(frozen=True, slots=True)
class RecordsToDelete:
    """aiokafka's value for delete_records: delete the records before `before_offset` (-1: the
    high watermark, every committed record)."""

    before_offset: int


@dataclass(frozen=True, slots=True, init=False)
class NewTopic:
    """A topic to create. liferaft's names (partitions=, configs=) or aiokafka's and
    kafka-python's (NewTopic(name, num_partitions, replication_factor, topic_configs=)); -1 or 0
    for a count means the cluster's default."""

    name: str
    partitions: int
    """0: the cluster's default."""
    replication_factor: int
    """0: the cluster's default."""
    configs: Mapping[str, str]
    """Kafka names: retention.ms, retention.bytes, min.insync.replicas, max.message.bytes."""

    def __init__(
        self,
        name: str,
        num_partitions: int | None = None,
        replication_factor: int = 0,
        replica_assignments: Mapping[int, list[int]] | None = None,
        topic_configs: Mapping[str, str] | None = None,
        *,
        partitions: int | None = None,
        configs: Mapping[str, str] | None = None,
    ) -> None:
        if num_partitions is not None and partitions is not None:
            raise ValueError("give the partition count once: partitions= or num_partitions")
        if topic_configs is not None and configs is not None:
            raise ValueError("give the configs once: configs= or topic_configs=")
        if replica_assignments:
            raise ValueError("replica_assignments is not supported: the controller places replicas")
        count = partitions if partitions is not None else num_partitions
        put = object.__setattr__
        put(self, "name", name)
        put(self, "partitions", 0 if count is None or count == -1 else count)
        put(self, "replication_factor", 0 if replication_factor == -1 else replication_factor)
        put(self, "configs", dict(configs if configs is not None else topic_configs or {}))

    @property
    def num_partitions(self) -> int:
        """aiokafka's (kafka-python's) name for partitions."""
        return self.partitions

    @property
    def topic_configs(self) -> Mapping[str, str]:
        """aiokafka's (kafka-python's) name for configs."""
        return self.configs


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatedTopic:
    """What was (or with validate_only, would be) created, defaults resolved; or the error."""

    name: str
    partitions: int
    replication_factor: int
    error: LiferaftError | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigValue:
    value: str
    source: str
    """"topic" (set on it), "default" (liferaft's), "broker" (the node's default), "unknown"."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicDescription:
    name: str
    partitions: tuple[PartitionMetadata, ...]
    replication_factor: int
    configs: Mapping[str, ConfigValue]
    is_internal: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterDescription:
    cluster_id: str
    controller_id: int
    """The controller leader's node id, 0 while there is none (or it did not answer)."""
    brokers: tuple[BrokerMetadata, ...]
    topics: Mapping[str, TopicMetadata]
    """Each partition's leader is one confirmed by that node's own answer; 0 otherwise."""
    down: Mapping[int, str] = field(default_factory=dict)
    """Nodes that did not answer when asked directly: node id -> why (the error)."""

    @property
    def live(self) -> tuple[int, ...]:
        return tuple(b.node_id for b in self.brokers if b.node_id not in self.down)

    def leaders_by_node(self) -> dict[int, list[TopicPartition]]:
        """node id -> the partitions it leads (every broker listed, leading or not)."""
        out: dict[int, list[TopicPartition]] = {b.node_id: [] for b in self.brokers}
        for name in sorted(self.topics):
            for p in self.topics[name].partitions:
                if p.leader:
                    out.setdefault(p.leader, []).append(TopicPartition(name, p.partition))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupOverview:
    group_id: str
    state: str
    """Empty, Stable, Reconciling or Recovering (docs/consumer-groups.md)."""
    members: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupMember:
    member_id: str
    client_id: str
    topics: tuple[str, ...]
    assignment: frozenset[TopicPartition]
    """What it holds now."""
    target: frozenset[TopicPartition]
    """What the coordinator means it to hold once partitions have moved."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionOffsetLag:
    """One partition of a group: its committed offset and lag, and who reads it."""

    topic: str
    partition: int
    committed: int | None
    """The next offset the group will read; None: nothing committed yet."""
    metadata: str
    high_watermark: int
    lag_records: int
    lag_ms: int
    """The leader's clock minus the timestamp of the first uncommitted record (0: caught up)."""
    member_id: str | None
    error: LiferaftError | None = None
    """Set (and the lag -1) when the partition's leader could not be asked."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupDescription:
    group_id: str
    state: str
    generation: int
    coordinator_id: int
    members: tuple[GroupMember, ...]
    partitions: tuple[PartitionOffsetLag, ...]

    @property
    def total_lag(self) -> int:
        return sum(p.lag_records for p in self.partitions if p.lag_records > 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaDescription:
    """One replica's own view of a partition, and of one offset in it (DescribeReplica)."""

    node_id: int
    leader_id: int
    term: int
    is_leader: bool
    log_start_offset: int
    high_watermark: int
    """One past its last committed, applied record (the leader's is the partition's)."""
    log_end_offset: int
    """One past the last record in its log, committed or not."""
    commit_index: int
    applied_index: int
    persisted_index: int
    """The last Raft index known to be on this replica's disk (fsynced)."""
    last_index: int
    found: bool
    """The offset asked about is in this replica's log."""
    batch_base_offset: int
    batch_record_count: int
    raft_index: int
    raft_term: int
    committed: bool
    persisted: bool

    @classmethod
    def from_pb(cls, r: broker_pb2.DescribeReplicaResponse) -> ReplicaDescription:
        return cls(**{f: getattr(r, f) for f in cls.__dataclass_fields__})


def _error(detail: ErrorDetail) -> LiferaftError | None:
    return error_from_detail(detail) if detail.code != ErrorCode.NONE else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Acl:
    """One ACL as Kafka has it: `principal` (`User:alice`, `User:*` for everyone) is allowed
    (or denied) `operation` on the resources `resource_name` names: the one of that name, all
    of them for `*` (pattern literal), or every name starting with it (pattern prefixed).

    Names are Kafka's in lower case: resource_type topic, group, cluster (named
    `kafka-cluster`) or transactional_id; operation all, read, write, create, delete, alter,
    describe, cluster_action, describe_configs, alter_configs, idempotent_write."""

    principal: str
    operation: str
    resource_type: str
    resource_name: str
    permission: str = "allow"
    pattern_type: str = "literal"
    host: str = "*"

    def to_pb(self) -> broker_pb2.AclBinding:
        return broker_pb2.AclBinding(
            resource_type=self.resource_type,
            resource_name=self.resource_name,
            pattern_type=self.pattern_type,
            principal=self.principal,
            host=self.host,
            operation=self.operation,
            permission=self.permission,
        )

    @classmethod
    def from_pb(cls, pb: broker_pb2.AclBinding) -> Acl:
        return cls(
            principal=pb.principal,
            operation=pb.operation,
            resource_type=pb.resource_type,
            resource_name=pb.resource_name,
            permission=pb.permission,
            pattern_type=pb.pattern_type,
            host=pb.host,
        )

    def __str__(self) -> str:
        return (
            f"{self.principal} {self.permission.upper()} {self.operation.upper()} on "
            f"{self.pattern_type} {self.resource_type} {self.resource_name!r}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AclFilter:
    """Which ACLs to list or remove (Kafka's AclBindingFilter); None matches any. With
    pattern_type "match", a name selects every ACL that applies to the resource of that name
    (literal, `*`, and prefixes of it)."""

    principal: str | None = None
    operation: str | None = None
    resource_type: str | None = None
    resource_name: str | None = None
    permission: str | None = None
    pattern_type: str | None = None
    host: str | None = None

    def to_pb(self) -> broker_pb2.AclFilter:
        return broker_pb2.AclFilter(
            resource_type=self.resource_type or "",
            resource_name=self.resource_name or "",
            pattern_type=self.pattern_type or "",
            principal=self.principal or "",
            host=self.host or "",
            operation=self.operation or "",
            permission=self.permission or "",
        )


@dataclass(frozen=True, slots=True)
class PartitionMove:
    """A partition's move onto new replicas (issue 19)."""

    topic: str
    partition: int
    replicas: tuple[int, ...]
    """Its voters now."""
    target: tuple[int, ...]
    learners: tuple[int, ...]
    """New replicas still catching up."""
    origin: tuple[int, ...]
    throttle_bytes_s: int
    cancelled: bool = False
    """Cancelled: `target` is `origin` again, the partition is going back there."""

    @classmethod
    def from_pb(cls, m: broker_pb2.PartitionMoveStatus) -> PartitionMove:
        return cls(
            m.topic,
            m.partition,
            tuple(m.replicas),
            tuple(m.target),
            tuple(m.learners),
            tuple(m.origin),
            m.throttle_bytes_s,
            m.cancelled,
        )


class AdminClient:
    """Administers a liferaft cluster. Use `async with`, or start() and close()."""

    def __init__(
        self,
        bootstrap: str | Iterable[str] | None = None,
        *,
        bootstrap_servers: str | Iterable[str] | None = None,
        client_id: str = "liferaft-admin",
        timeout_ms: int = 60_000,
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: int = 100,
        retry_backoff_max_ms: int = 1_000,
        grpc_interceptors: Iterable[Any] = (),
        **security: Unpack[SecurityOptions],
    ) -> None:
        self.client_id = client_id
        self.config = ClientConfig.build(
            resolve_bootstrap(bootstrap, bootstrap_servers),
            request_timeout_ms=request_timeout_ms,
            delivery_timeout_ms=timeout_ms,
            retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms,
            security=Security.from_options(security),
            interceptors=tuple(grpc_interceptors),
        )
        self._cluster: Cluster | None = None
        self._closed = False
        self._rng = random.Random()

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("the admin client is closed")
        if self._cluster is None:
            cluster = Cluster(self.config)
            try:
                await cluster.start()
            except BaseException:
                await cluster.close()
                raise
            self._cluster = cluster

    async def close(self) -> None:
        self._closed = True
        if self._cluster is not None:
            await self._cluster.close()

    async def stop(self) -> None:
        """The same as close() (the producer's and consumer's aiokafka name)."""
        await self.close()

    async def __aenter__(self) -> AdminClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _ready(self) -> Cluster:
        if self._cluster is None:
            await self.start()
        assert self._cluster is not None
        if self._closed:
            raise RuntimeError("the admin client is closed")
        return self._cluster

    # -- topics --------------------------------------------------------------------------------
    async def create_topic(
        self,
        name: str,
        partitions: int = 0,
        replication_factor: int = 0,
        configs: Mapping[str, str] | None = None,
        *,
        validate_only: bool = False,
        timeout_ms: int | None = None,
    ) -> CreatedTopic:
        """Create one topic; raises its error (TopicAlreadyExistsError, InvalidConfigError, ...)."""
        new = NewTopic(
            name=name,
            partitions=partitions,
            replication_factor=replication_factor,
            configs=dict(configs or {}),
        )
        results = await self.create_topics(
            [new], validate_only=validate_only, timeout_ms=timeout_ms
        )
        return results[name]

    async def create_topics(
        self,
        topics: Iterable[NewTopic],
        *,
        validate_only: bool = False,
        timeout_ms: int | None = None,
        raise_on_error: bool = True,
    ) -> dict[str, CreatedTopic]:
        """Create topics; returns each one's outcome, in request order.

        raise_on_error: raise the first failed topic's error (after every topic was tried).
        """
        cluster = await self._ready()
        wanted = list(topics)
        for t in wanted:
            if t.partitions < 0 or t.replication_factor < 0:
                raise ValueError(
                    f"topic {t.name!r}: partitions and replication factor must be >= 0"
                )

        def request(pending: list[NewTopic], attempt_ms: int) -> broker_pb2.CreateTopicsRequest:
            return broker_pb2.CreateTopicsRequest(
                topics=[
                    broker_pb2.NewTopic(
                        name=t.name,
                        partitions=t.partitions,
                        replication_factor=t.replication_factor,
                        configs=dict(t.configs),
                    )
                    for t in pending
                ],
                timeout_ms=server_timeout_ms(attempt_ms),
                validate_only=validate_only,
            )

        def outcome(r: broker_pb2.CreateTopicResult) -> CreatedTopic:
            return CreatedTopic(
                name=r.name,
                partitions=r.partitions,
                replication_factor=r.replication_factor,
                error=_error(r.error),
            )

        raw = await self._per_topic_retry(
            cluster, "CreateTopics", wanted, lambda t: t.name, request, timeout_ms
        )
        results = {name: outcome(r) for name, r in raw.items()}
        ordered = {t.name: results[t.name] for t in wanted if t.name in results}
        if raise_on_error:
            for r in ordered.values():
                if r.error is not None:
                    raise r.error
        return ordered

    async def delete_topic(self, name: str, *, timeout_ms: int | None = None) -> None:
        """Delete one topic; raises UnknownTopicOrPartitionError if there is no such topic."""
        await self.delete_topics([name], timeout_ms=timeout_ms)

    async def delete_topics(
        self,
        names: Iterable[str],
        *,
        timeout_ms: int | None = None,
        raise_on_error: bool = True,
    ) -> dict[str, LiferaftError | None]:
        """Delete topics; returns each one's error (None: deleted)."""
        cluster = await self._ready()
        wanted = list(dict.fromkeys(names))

        def request(pending: list[str], attempt_ms: int) -> broker_pb2.DeleteTopicsRequest:
            return broker_pb2.DeleteTopicsRequest(
                names=pending, timeout_ms=server_timeout_ms(attempt_ms)
            )

        raw = await self._per_topic_retry(
            cluster, "DeleteTopics", wanted, lambda n: n, request, timeout_ms
        )
        results = {n: _error(raw[n].error) for n in wanted if n in raw}
        for name in results:
            cluster.metadata.forget_topic(name)
        if raise_on_error:
            for err in results.values():
                if err is not None:
                    raise err
        return results

    async def _per_topic_retry(
        self,
        cluster: Cluster,
        rpc: str,
        items: list[_Item],
        name_of: Callable[[_Item], str],
        build: Callable[[list[_Item], int], Message],
        timeout_ms: int | None,
    ) -> dict[str, Any]:
        """Send a many-topic admin request; resend the topics whose own error is retriable,
        with backoff, until none is left or the timeout would pass. Returns the last result
        message per topic name."""
        budget_ms = timeout_ms if timeout_ms is not None else self.config.delivery_timeout_ms
        deadline = time.monotonic() + budget_ms / 1000
        state = RetryState()
        pending = items
        results: dict[str, Any] = {}
        while pending:
            remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
            attempt_ms = min(self.config.request_timeout_ms, remaining_ms)
            response = await cluster.call_any(
                rpc, build(pending, attempt_ms), timeout_ms=remaining_ms
            )
            retry: set[str] = set()
            last_error: LiferaftError | None = None
            for r in response.topics:
                results[r.name] = r
                err = _error(r.error)
                if err is not None and err.retriable:
                    retry.add(r.name)
                    last_error = err
            if not retry:
                break
            wait_s = cluster.policy.wait_s(last_error, state, self._rng)
            if time.monotonic() + wait_s >= deadline:
                break  # out of time: the last results (with their errors) stand
            if last_error is not None and last_error.invalid_metadata:
                cluster.metadata.invalidate()
            await asyncio.sleep(wait_s)
            pending = [i for i in pending if name_of(i) in retry]
        return results

    async def create_partitions(
        self,
        topic: str,
        total: int,
        *,
        validate_only: bool = False,
        timeout_ms: int | None = None,
    ) -> int:
        """Grow a topic to `total` partitions in all (Kafka's create_partitions); returns the
        count now. Partitions are never removed: a total not above the current count is
        InvalidPartitionsError. Keyed records written before may hash elsewhere afterwards."""
        cluster = await self._ready()
        budget = timeout_ms if timeout_ms is not None else self.config.delivery_timeout_ms
        request = broker_pb2.CreatePartitionsRequest(
            topic=topic,
            count=total,
            validate_only=validate_only,
            timeout_ms=server_timeout_ms(min(budget, self.config.request_timeout_ms)),
        )
        response = await cluster.call_any("CreatePartitions", request, timeout_ms=budget)
        if not validate_only:
            cluster.metadata.invalidate()
        return int(response.partitions)

    async def alter_topic_config(
        self,
        topic: str,
        set_: Mapping[str, str] | None = None,
        delete: Iterable[str] = (),
        *,
        validate_only: bool = False,
        timeout_ms: int | None = None,
    ) -> dict[str, ConfigValue]:
        """Set some of a topic's settings and return others to their defaults, all at once
        or (a bad value: InvalidConfigError) not at all; returns every setting then in force.
        The controller applies it; each replica takes it up as it applies the change."""
        cluster = await self._ready()
        budget = timeout_ms if timeout_ms is not None else self.config.delivery_timeout_ms
        request = broker_pb2.AlterConfigsRequest(
            topic=topic,
            set=dict(set_ or {}),
            delete=list(delete),
            validate_only=validate_only,
            timeout_ms=server_timeout_ms(min(budget, self.config.request_timeout_ms)),
        )
        response = await cluster.call_any("AlterConfigs", request, timeout_ms=budget)
        return {
            c.name: ConfigValue(value=c.value, source=_CONFIG_SOURCES.get(c.source, "unknown"))
            for c in response.configs
        }

    async def list_topics(self, *, internal: bool = False) -> list[str]:
        """Names of the cluster's topics, sorted (internal ones only if asked)."""
        cluster = await self._ready()
        await cluster.refresh_metadata()
        return sorted(
            name for name, tm in cluster.metadata.topics.items() if internal or not tm.is_internal
        )

    async def describe_topics(
        self,
        names: Iterable[str] | None = None,
        *,
        from_leaders: bool = True,
        raise_on_error: bool = True,
    ) -> dict[str, TopicDescription]:
        """Topics with partitions (leader, epoch, replicas, ISR, high watermark, log start) and
        every config in force. names None: every topic.

        from_leaders: a node knows the ISR and high watermark of the partitions it leads
        exactly, and of the others only from gossip, a moment late. With this set (the
        default), every node is asked and each partition's entry is taken from its own
        leader's answer; without it, one node's answer is shown as it is.
        """
        cluster = await self._ready()
        wanted = list(dict.fromkeys(names)) if names is not None else []
        response = await cluster.call_any(
            "DescribeTopics", broker_pb2.DescribeTopicsRequest(names=wanted)
        )
        out: dict[str, TopicDescription] = {}
        for td in response.topics:
            err = _error(td.error)
            if err is not None:
                if raise_on_error:
                    raise err
                continue
            out[td.name] = TopicDescription(
                name=td.name,
                partitions=tuple(
                    sorted(
                        (PartitionMetadata.from_pb(td.name, p) for p in td.partitions),
                        key=lambda p: p.partition,
                    )
                ),
                replication_factor=td.replication_factor,
                configs=MappingProxyType(
                    {
                        c.name: ConfigValue(
                            value=c.value, source=_CONFIG_SOURCES.get(c.source, "unknown")
                        )
                        for c in td.configs
                    }
                ),
                is_internal=td.is_internal,
            )
        if from_leaders and out:
            await self._refine_from_nodes(cluster, out)
        return out

    async def _refine_from_nodes(
        self, cluster: Cluster, topics: dict[str, TopicDescription]
    ) -> None:
        """Ask every node and show each partition as its leader describes it (best_view).

        One node's answer can lag: its ISR and high watermark of partitions it does not lead
        come from gossip, and a topic created a moment ago may not have shown it its leaders
        yet. A node that cannot answer is skipped.
        """
        request = broker_pb2.DescribeTopicsRequest(names=sorted(topics))
        answers = await _ask_every_node(cluster, "DescribeTopics", request)
        views: dict[tuple[str, int], list[tuple[int, PartitionMetadata]]] = {}
        for node, response in answers:
            for td in response.topics:
                if td.name in topics and _error(td.error) is None:
                    for pm in td.partitions:
                        pv = PartitionMetadata.from_pb(td.name, pm)
                        views.setdefault((td.name, pm.partition), []).append((node, pv))
        for name, current in topics.items():
            parts = tuple(
                best_view([(0, p), *views.get((name, p.partition), [])]) or p
                for p in current.partitions
            )
            topics[name] = TopicDescription(
                name=current.name,
                partitions=parts,
                replication_factor=current.replication_factor,
                configs=current.configs,
                is_internal=current.is_internal,
            )

    # -- cluster -------------------------------------------------------------------------------
    async def describe_cluster(self, *, probe_timeout_ms: int = 3_000) -> ClusterDescription:
        """Nodes (which answered, which are down and why), the controller leader, and every
        topic's partition leaders.

        Every registered node is asked directly, each with `probe_timeout_ms`: one that does
        not answer in time is down (a metadata answer from another node cannot tell, as a
        node's view of the others is only as fresh as its last word from them). The topic list
        comes from the controller leader (it applied the latest changes first); a partition's
        leader, ISR and high watermark from its leader's own answer (best_view). A leader, or
        controller leader, that other nodes name but that does not itself answer as one is not
        shown: during a loss of quorum a dead node is still somebody's last known leader.
        """
        cluster = await self._ready()
        md = await cluster.refresh_metadata()
        answers, down = await _probe_every_node(
            cluster, "Metadata", broker_pb2.MetadataRequest(), probe_timeout_ms
        )
        if not answers:
            why = "; ".join(f"node {n}: {e}" for n, e in sorted(down.items()))
            raise BrokerUnavailableError(None, f"no node answered a Metadata request ({why})")
        by_node = dict(answers)
        confirmed_ctl = [n for n, r in answers if r.controller_id == n]
        controller = confirmed_ctl[0] if confirmed_ctl else 0
        base = by_node.get(controller) or answers[0][1]
        views: dict[tuple[str, int], list[tuple[int, PartitionMetadata]]] = {}
        for node, response in answers:
            for tm in response.topics:
                for pm in tm.partitions:
                    pv = PartitionMetadata.from_pb(tm.name, pm)
                    views.setdefault((tm.name, pm.partition), []).append((node, pv))
        topics: dict[str, TopicMetadata] = {}
        for tm in base.topics:
            if tm.error_code != ErrorCode.NONE:
                continue
            first = TopicMetadata.from_pb(tm)
            parts = tuple(
                _confirmed(views.get((tm.name, p.partition), []), p) for p in first.partitions
            )
            topics[tm.name] = TopicMetadata(
                name=tm.name, partitions=parts, is_internal=first.is_internal
            )
        brokers = {b.node_id: b for b in base.brokers}
        for b in md.brokers.values():  # a node the answering one has not registered yet
            brokers.setdefault(
                b.node_id, broker_pb2.BrokerInfo(node_id=b.node_id, host=b.host, port=b.port)
            )
        return ClusterDescription(
            cluster_id=base.cluster_id or md.cluster_id,
            controller_id=controller,
            brokers=tuple(
                BrokerMetadata(node_id=b.node_id, host=b.host, port=b.port, rack=b.rack)
                for b in sorted(brokers.values(), key=lambda b: b.node_id)
            ),
            topics=MappingProxyType(topics),
            down=MappingProxyType(dict(sorted(down.items()))),
        )

    metadata = describe_cluster

    async def list_offsets(
        self, specs: Mapping[TopicPartition | tuple[str, int], OffsetSpec]
    ) -> dict[TopicPartition, OffsetAndTimestamp]:
        """Look up offsets per partition, each at its leader: "earliest" (the log start),
        "latest" (the high watermark: where a new consumer starts), or a timestamp in ms (the
        first offset whose record is at or after it; -1 if there is none)."""
        cluster = await self._ready()
        items = [(TopicPartition(*tp), spec) for tp, spec in specs.items()]

        async def one(tp: TopicPartition, spec: OffsetSpec) -> OffsetAndTimestamp:
            return await list_offset(cluster, tp, spec)

        found = await asyncio.gather(*(one(tp, spec) for tp, spec in items))
        return dict(zip((tp for tp, _ in items), found, strict=True))

    async def delete_records(
        self,
        records_to_delete: Mapping[TopicPartition | tuple[str, int], int | RecordsToDelete],
        timeout_ms: int | None = None,
    ) -> dict[TopicPartition, int]:
        """Delete the records before an offset in each partition (Kafka's DeleteRecords;
        aiokafka's name and shape): the partition's log start moves there, records below it are
        no longer served, and consumers positioned below it get OffsetOutOfRangeError (or their
        auto_offset_reset). -1 means the high watermark. Returns each partition's new log start
        (low watermark). Each partition is done at its leader on its own; the first error is
        raised once all are answered (OffsetOutOfRangeError for an offset above the high
        watermark or negative other than -1: that partition is left as it was)."""
        cluster = await self._ready()
        budget = timeout_ms if timeout_ms is not None else self.config.delivery_timeout_ms
        items: list[tuple[TopicPartition, int]] = []
        for tp, want in records_to_delete.items():
            offset = want.before_offset if isinstance(want, RecordsToDelete) else want
            if not isinstance(offset, int) or isinstance(offset, bool):
                raise ValueError(f"offset for {tp} must be an integer, not {offset!r}")
            items.append((TopicPartition(*tp), offset))

        async def one(tp: TopicPartition, offset: int) -> int:
            request = broker_pb2.DeleteRecordsRequest(
                topic=tp.topic,
                partition=tp.partition,
                offset=offset,
                timeout_ms=server_timeout_ms(min(budget, self.config.request_timeout_ms)),
            )
            response = await cluster.call_leader(
                tp.topic, tp.partition, "DeleteRecords", request, timeout_ms=budget
            )
            return int(response.low_watermark)

        answers = await asyncio.gather(*(one(tp, o) for tp, o in items), return_exceptions=True)
        lows: dict[TopicPartition, int] = {}
        for (tp, _), answer in zip(items, answers, strict=True):
            if isinstance(answer, BaseException):
                raise answer
            lows[tp] = answer
        return lows

    # -- consumer groups -----------------------------------------------------------------------
    async def list_groups(self) -> list[GroupOverview]:
        cluster = await self._ready()
        resp = await CoordinatorClient(cluster, "-").call(
            "ListGroups", broker_pb2.ListGroupsRequest(), timeout_ms=self.config.delivery_timeout_ms
        )
        return [
            GroupOverview(group_id=g.group_id, state=g.state, members=g.members)
            for g in resp.groups
        ]

    async def describe_group(self, group_id: str, *, lag: bool = True) -> GroupDescription:
        """Members, what each holds, and per partition the committed offset and the lag, in
        records and in ms, as each partition's leader computes it (GroupIdNotFoundError for a
        group that does not exist).

        Every partition of the topics the group reads or has offsets for is listed."""
        cluster = await self._ready()
        resp = await CoordinatorClient(cluster, group_id).call(
            "DescribeGroup",
            broker_pb2.DescribeGroupRequest(group_id=group_id),
            timeout_ms=self.config.delivery_timeout_ms,
        )
        members = tuple(
            GroupMember(
                member_id=m.member_id,
                client_id=m.client_id,
                topics=tuple(m.topics),
                assignment=frozenset(tps_from_pb(m.assignment)),
                target=frozenset(tps_from_pb(m.target)),
            )
            for m in resp.members
        )
        committed = {
            TopicPartition(o.topic, o.partition): OffsetAndMetadata(
                offset=o.offset, metadata=o.metadata, commit_timestamp_ms=o.commit_timestamp_ms
            )
            for o in resp.offsets
        }
        holder = {tp: m.member_id for m in members for tp in m.assignment}
        topics = {tp.topic for tp in committed} | {t for m in members for t in m.topics}
        tps: set[TopicPartition] = set(committed)
        for topic in topics:
            with contextlib.suppress(LiferaftError):
                tps.update(TopicPartition(topic, p) for p in await cluster.partitions_for(topic))

        async def one(tp: TopicPartition) -> PartitionOffsetLag:
            om = committed.get(tp)
            offset = om.offset if om is not None else None
            try:
                if not lag:
                    raise LookupError
                start = offset
                if start is None:
                    start = (await list_offset(cluster, tp, "earliest")).offset
                found = await partition_lag(cluster, tp, start)
                hw, records, ms, error = found.high_watermark, found.records, found.ms, None
            except LookupError:
                hw, records, ms, error = -1, -1, -1, None
            except LiferaftError as e:
                hw, records, ms, error = -1, -1, -1, e
            return PartitionOffsetLag(
                topic=tp.topic,
                partition=tp.partition,
                committed=offset,
                metadata=om.metadata if om is not None else "",
                high_watermark=hw,
                lag_records=records,
                lag_ms=ms,
                member_id=holder.get(tp),
                error=error,
            )

        parts = await asyncio.gather(*(one(tp) for tp in sorted(tps)))
        return GroupDescription(
            group_id=resp.group_id,
            state=resp.state,
            generation=resp.generation,
            coordinator_id=resp.coordinator_id,
            members=members,
            partitions=tuple(parts),
        )

    async def plan_offset_reset(
        self, group_id: str, topic: str, spec: OffsetSpec | Literal["offset"], offset: int = -1
    ) -> dict[TopicPartition, tuple[int | None, int]]:
        """What reset_offsets would do: {partition: (committed now, new offset)}. spec is
        "earliest", "latest", a timestamp in ms (the first offset at or after it; the high
        watermark if none), or "offset" with `offset` (clamped to [log start, high watermark],
        as Kafka's tool does). Changes nothing."""
        cluster = await self._ready()
        tps = [TopicPartition(topic, p) for p in await cluster.partitions_for(topic)]
        current = await self._committed(cluster, group_id, tps)

        async def target(tp: TopicPartition) -> int:
            if spec == "offset":
                lo = (await list_offset(cluster, tp, "earliest")).offset
                hi = (await list_offset(cluster, tp, "latest")).offset
                return min(max(offset, lo), hi)
            found = (await list_offset(cluster, tp, spec)).offset
            if found < 0:  # no record at or after the time: the end
                found = (await list_offset(cluster, tp, "latest")).offset
            return found

        news = await asyncio.gather(*(target(tp) for tp in tps))
        return {tp: (current.get(tp), new) for tp, new in zip(tps, news, strict=True)}

    async def reset_offsets(
        self, group_id: str, offsets: Mapping[TopicPartition | tuple[str, int], int]
    ) -> None:
        """Set a group's committed offsets. Refused (NonEmptyGroupError) while the group has
        live members: they would overwrite it at their next commit."""
        cluster = await self._ready()
        request = broker_pb2.CommitOffsetsRequest(
            group_id=group_id,
            member_id="",
            generation=-1,
            offsets=[
                broker_pb2.OffsetCommit(topic=tp[0], partition=tp[1], offset=o)
                for tp, o in sorted((TopicPartition(*k), v) for k, v in offsets.items())
            ],
        )
        await CoordinatorClient(cluster, group_id).call(
            "CommitOffsets", request, timeout_ms=self.config.delivery_timeout_ms
        )

    async def delete_groups(
        self, group_ids: Iterable[str], *, raise_on_error: bool = True
    ) -> dict[str, LiferaftError | None]:
        """Delete consumer groups with their committed offsets (Kafka's delete_consumer_groups);
        returns each one's error (None: deleted). Only an empty group may go: one with a live
        member is NonEmptyGroupError, an unknown one GroupIdNotFoundError."""
        cluster = await self._ready()
        wanted = list(dict.fromkeys(group_ids))
        if not wanted:
            return {}
        resp = await CoordinatorClient(cluster, wanted[0]).call(
            "DeleteGroups",
            broker_pb2.DeleteGroupsRequest(group_ids=wanted),
            timeout_ms=self.config.delivery_timeout_ms,
        )
        results = {r.group_id: _error(r.error) for r in resp.groups}
        if raise_on_error:
            for err in results.values():
                if err is not None:
                    raise err
        return results

    # -- ACLs ----------------------------------------------------------------------------------
    async def create_acls(self, acls: Iterable[Acl]) -> int:
        """Add ACLs, all or (one is malformed: InvalidRequestError) none; returns how many were
        new. Needs ALTER on the cluster; a cluster without an authorizer answers
        SecurityDisabledError."""
        cluster = await self._ready()
        request = broker_pb2.CreateAclsRequest(acls=[a.to_pb() for a in acls])
        response = await cluster.call_any(
            "CreateAcls", request, timeout_ms=self.config.delivery_timeout_ms
        )
        return int(response.created)

    async def describe_acls(self, acl_filter: AclFilter | None = None) -> list[Acl]:
        """The ACLs matching `acl_filter` (every ACL without one). Needs DESCRIBE on the
        cluster."""
        cluster = await self._ready()
        request = broker_pb2.DescribeAclsRequest(filter=(acl_filter or AclFilter()).to_pb())
        response = await cluster.call_any(
            "DescribeAcls", request, timeout_ms=self.config.delivery_timeout_ms
        )
        return [Acl.from_pb(pb) for pb in response.acls]

    async def delete_acls(self, filters: Iterable[AclFilter]) -> list[list[Acl]]:
        """Remove the ACLs each filter matches; returns, per filter, those it removed. Needs
        ALTER on the cluster."""
        cluster = await self._ready()
        request = broker_pb2.DeleteAclsRequest(filters=[f.to_pb() for f in filters])
        response = await cluster.call_any(
            "DeleteAcls", request, timeout_ms=self.config.delivery_timeout_ms
        )
        return [[Acl.from_pb(pb) for pb in r.deleted] for r in response.results]

    # -- users (issue 17) ------------------------------------------------------------------
    async def upsert_user(
        self, name: str, password: str, *, mechanism: str = "SCRAM-SHA-512", iterations: int = 4096
    ) -> None:
        """Create a user, or set its password for `mechanism` (Kafka's
        alter_user_scram_credentials). The password is salted and hashed here (RFC 5802); only
        the salt, iteration count, StoredKey and ServerKey reach the cluster."""
        from scramp import ScramMechanism

        if mechanism not in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            raise ValueError(f"mechanism must be SCRAM-SHA-256 or SCRAM-SHA-512, got {mechanism!r}")
        if not password:
            raise ValueError("the password is empty")
        salt, stored_key, server_key, count = ScramMechanism(mechanism).make_auth_info(
            password, iteration_count=iterations
        )
        cluster = await self._ready()
        await cluster.call_any(
            "UpsertUser",
            broker_pb2.UpsertUserRequest(
                name=name,
                credential=broker_pb2.ScramCredential(
                    mechanism=mechanism,
                    salt=salt,
                    iterations=count,
                    stored_key=stored_key,
                    server_key=server_key,
                ),
            ),
            timeout_ms=self.config.delivery_timeout_ms,
        )

    async def delete_user(self, name: str, *, mechanism: str | None = None) -> None:
        """Remove a user's credential for `mechanism`, or the user (None); an unknown one is
        ResourceNotFoundError."""
        cluster = await self._ready()
        await cluster.call_any(
            "DeleteUser",
            broker_pb2.DeleteUserRequest(name=name, mechanism=mechanism or ""),
            timeout_ms=self.config.delivery_timeout_ms,
        )

    async def describe_users(self, names: Iterable[str] = ()) -> dict[str, list[str]]:
        """User name -> its SCRAM mechanisms (every user if `names` is empty)."""
        cluster = await self._ready()
        resp = await cluster.call_any(
            "DescribeUsers",
            broker_pb2.DescribeUsersRequest(names=list(names)),
            timeout_ms=self.config.delivery_timeout_ms,
        )
        return {u.name: list(u.mechanisms) for u in resp.users}

    async def describe_replicas(
        self, topic: str, partition: int, offset: int, *, timeout_ms: int = 3_000
    ) -> dict[int, ReplicaDescription | LiferaftError]:
        """Ask every replica of a partition, each directly and within timeout_ms, for its own
        view of its log and of `offset` in it: node id -> its answer, or why it gave none."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        cluster = await self._ready()
        tm = await cluster.topic_metadata(topic)
        if not 0 <= partition < len(tm.partitions):
            raise UnknownTopicOrPartitionError(
                None, f"topic {topic!r} has partitions 0..{len(tm.partitions) - 1}, not {partition}"
            )
        replicas = tm.partitions[partition].replicas
        request = broker_pb2.DescribeReplicaRequest(topic=topic, partition=partition, offset=offset)

        async def ask(node: int) -> ReplicaDescription | LiferaftError:
            broker = cluster.metadata.broker(node)
            if broker is None:
                return BrokerUnavailableError(None, f"node {node} is not in the cluster metadata")
            try:
                answer = await cluster.call_address(
                    broker.address, "DescribeReplica", request, timeout_ms=timeout_ms
                )
            except LiferaftError as e:
                return e
            return ReplicaDescription.from_pb(answer)

        found = await asyncio.gather(*(ask(n) for n in replicas))
        return dict(zip(replicas, found, strict=True))

    async def committed_by_groups(self, tp: TopicPartition | tuple[str, int]) -> dict[str, int]:
        """Every consumer group's committed offset of one partition (groups with none left
        out): group id -> the next offset it will read."""
        cluster = await self._ready()
        tp = TopicPartition(*tp)
        groups = await self.list_groups()

        async def one(group_id: str) -> tuple[str, int | None]:
            got = await self._committed(cluster, group_id, [tp])
            return group_id, got.get(tp)

        found = await asyncio.gather(*(one(g.group_id) for g in groups))
        return {g: o for g, o in sorted(found) if o is not None}

    # -- replica moves (issue 19) ---------------------------------------------------------------
    async def move_partitions(
        self,
        moves: Iterable[tuple[str, int, Iterable[int]]],
        *,
        throttle_bytes_s: int = 0,
        validate_only: bool = False,
    ) -> list[PartitionMove]:
        """Move partitions onto new replicas ((topic, partition, replicas), the first replica
        the preferred leader), as kafka-reassign-partitions does: all of them, or (a bad entry:
        an unknown topic or node, a replica named twice, none at all) none. Returns the moves
        started; they go on in the background (`list_partition_moves`)."""
        cluster = await self._ready()
        request = broker_pb2.MovePartitionsRequest(
            moves=[
                broker_pb2.PartitionMove(topic=t, partition=p, replicas=list(r))
                for t, p, r in moves
            ],
            throttle_bytes_s=throttle_bytes_s,
            validate_only=validate_only,
        )
        resp = await cluster.call_any(
            "MovePartitions", request, timeout_ms=self.config.delivery_timeout_ms
        )
        cluster.metadata.invalidate()
        return [PartitionMove.from_pb(m) for m in resp.started]

    async def list_partition_moves(self) -> tuple[list[PartitionMove], dict[int, int]]:
        """The moves under way, and each decommissioned node with the replicas it still holds."""
        cluster = await self._ready()
        resp = await cluster.call_any(
            "ListPartitionMoves",
            broker_pb2.ListPartitionMovesRequest(),
            timeout_ms=self.config.delivery_timeout_ms,
        )
        return [PartitionMove.from_pb(m) for m in resp.moves], dict(resp.decommissioned)

    async def cancel_partition_moves(
        self, partitions: Iterable[tuple[str, int]], *, validate_only: bool = False
    ) -> list[PartitionMove]:
        """Cancel the moves of these (topic, partition)s, as Kafka's AlterPartitionReassignments
        with null replicas: each goes back to the replicas it had when its move began (a learner
        it added is removed, a replica it removed comes back and is refilled), one Raft change
        at a time. All or nothing: a partition not being moved (NoReassignmentInProgressError;
        a move that is done is undone by moving it back), unknown or named twice, and none is
        cancelled. Returns the moves as cancelled (target: where each goes back to)."""
        cluster = await self._ready()
        request = broker_pb2.CancelPartitionMovesRequest(
            partitions=[broker_pb2.PartitionRef(topic=t, partition=p) for t, p in partitions],
            validate_only=validate_only,
        )
        resp = await cluster.call_any(
            "CancelPartitionMoves", request, timeout_ms=self.config.delivery_timeout_ms
        )
        cluster.metadata.invalidate()
        return [PartitionMove.from_pb(m) for m in resp.cancelled]

    async def decommission_node(
        self,
        node_id: int,
        *,
        throttle_bytes_s: int = 0,
        validate_only: bool = False,
        cancel: bool = False,
    ) -> list[PartitionMove]:
        """Move every replica off `node_id` (each to the least loaded other broker) and take it
        out of placement; returns the moves started. With `cancel`, undo that: the node takes
        new replicas again and the moves emptying it are cancelled (returned, cancelled)."""
        cluster = await self._ready()
        resp = await cluster.call_any(
            "DecommissionNode",
            broker_pb2.DecommissionNodeRequest(
                node_id=node_id,
                throttle_bytes_s=throttle_bytes_s,
                validate_only=validate_only,
                cancel=cancel,
            ),
            timeout_ms=self.config.delivery_timeout_ms,
        )
        cluster.metadata.invalidate()
        return [PartitionMove.from_pb(m) for m in resp.started]

    async def rebalance(
        self, *, execute: bool = False, throttle_bytes_s: int = 0
    ) -> list[PartitionMove]:
        """The moves that even out replicas and preferred leaders over the brokers (after one
        joined, say); started only if `execute` (else a dry run)."""
        cluster = await self._ready()
        resp = await cluster.call_any(
            "Rebalance",
            broker_pb2.RebalanceRequest(execute=execute, throttle_bytes_s=throttle_bytes_s),
            timeout_ms=self.config.delivery_timeout_ms,
        )
        if execute:
            cluster.metadata.invalidate()
        return [PartitionMove.from_pb(m) for m in resp.planned]

    async def _committed(
        self, cluster: Cluster, group_id: str, tps: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        found = await fetch_committed(
            CoordinatorClient(cluster, group_id), tps, self.config.delivery_timeout_ms
        )
        return {tp: om.offset for tp, om in found.items()}


def _confirmed(
    views: list[tuple[int, PartitionMetadata]], fallback: PartitionMetadata
) -> PartitionMetadata:
    """The partition as its leader itself describes it; without such an answer, no leader
    (a node that did not answer, or no longer leads, is nobody's leader to show)."""
    for node, view in sorted(views, key=lambda nv: -nv[1].leader_epoch):
        if view.leader and view.leader == node:
            return view
    shown = best_view(views) or fallback
    return dataclasses.replace(shown, leader=0, isr=())


async def _probe_every_node(
    cluster: Cluster, rpc: str, request: Message, timeout_ms: int
) -> tuple[list[tuple[int, Any]], dict[int, str]]:
    """One attempt of `rpc` at every registered node, each within timeout_ms: the answers,
    and node id -> why for those that gave none."""
    nodes = sorted(cluster.metadata.brokers.values(), key=lambda b: b.node_id)

    async def ask(node: BrokerMetadata) -> Any:
        return await cluster.call_address(node.address, rpc, request, timeout_ms=timeout_ms)

    found = await asyncio.gather(*(ask(b) for b in nodes), return_exceptions=True)
    answers: list[tuple[int, Any]] = []
    down: dict[int, str] = {}
    for b, answer in zip(nodes, found, strict=True):
        if isinstance(answer, LiferaftError):
            down[b.node_id] = f"{answer.code_name}: {answer.message}"
        elif isinstance(answer, BaseException):
            raise answer
        else:
            answers.append((b.node_id, answer))
    return answers, down


async def _ask_every_node(cluster: Cluster, rpc: str, request: Message) -> list[tuple[int, Any]]:
    """One attempt of `rpc` at every known node, at once; the answers of those that answered."""
    nodes = sorted(cluster.metadata.brokers)

    async def ask(node: int) -> tuple[int, Any]:
        return node, await cluster.call_node(node, rpc, request)

    answers = await asyncio.gather(*(ask(n) for n in nodes), return_exceptions=True)
    out: list[tuple[int, Any]] = []
    for answer in answers:
        if isinstance(answer, LiferaftError):
            continue  # that node is down or lagging: the others answer for it
        if isinstance(answer, BaseException):
            raise answer
        out.append(answer)
    return out
