"""What the client knows about the cluster: nodes, the controller, and who leads each partition.

No I/O here (aiokafka's cluster.py is the model): the client feeds in Metadata responses and
leader hints and asks questions; everything is a plain dict lookup, so routing decisions are
synchronous and testable without a cluster.

Which answer wins. Any node answers Metadata from its own replica of the controller state and
from what partition leaders gossip, so two nodes may disagree for a moment. A partition's
`leader_epoch` is the Raft term of its leader: of two views, the one with the higher epoch is
newer. So an update never replaces a partition we know at a higher epoch with an older view
(a lagging node's), and a leader hint replaces our view unless it names an older epoch. A hint
without an epoch (the node did not know it) is still taken: the node that refused us knows it
does not lead, which is more than our cache knew. Such an entry is marked `hinted`, and an
update at the same epoch does not undo it (the view that sent us to the wrong node had that
epoch too).

`stale` says "refresh before trusting me": set by `invalidate()` (an error hinted that our view
is wrong) and cleared by a full `update()`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from liferaft_proto.address import format_address, parse_address
from liferaft_proto.v1 import broker_pb2
from liferaft_proto.v1.errors_pb2 import ErrorCode

__all__ = [
    "BrokerMetadata",
    "ClusterMetadata",
    "PartitionMetadata",
    "TopicMetadata",
    "best_view",
    "parse_address",
]

NO_LEADER = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerMetadata:
    node_id: int
    host: str
    port: int
    rack: str = ""
    stream_port: int = 0
    """The node's stream listener's port on `host` (client/stream_transport.py); 0: none."""

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    @property
    def stream_address(self) -> str | None:
        return format_address(self.host, self.stream_port) if self.stream_port > 0 else None


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionMetadata:
    """One partition as a node described it. Node ids are >= 1; leader 0 means none known."""

    topic: str
    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    high_watermark: int
    log_start_offset: int
    error_code: int = ErrorCode.NONE
    hinted: bool = False
    """The leader came from an error's hint, not a Metadata answer."""

    @classmethod
    def from_pb(cls, topic: str, pm: broker_pb2.PartitionMetadata) -> PartitionMetadata:
        return cls(
            topic=topic,
            partition=pm.partition,
            leader=pm.leader_id,
            leader_epoch=pm.leader_epoch,
            replicas=tuple(pm.replicas),
            isr=tuple(pm.isr),
            high_watermark=pm.high_watermark,
            log_start_offset=pm.log_start_offset,
            error_code=pm.error_code,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicMetadata:
    name: str
    partitions: tuple[PartitionMetadata, ...]
    """Indexed by partition number: partitions[p].partition == p."""
    is_internal: bool = False
    partition_ids: tuple[int, ...] = field(init=False, repr=False, compare=False)
    """The partitions' numbers, worked out once: the producer asks for every record."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "partition_ids", tuple(p.partition for p in self.partitions))

    @classmethod
    def from_pb(cls, tm: broker_pb2.TopicMetadata) -> TopicMetadata:
        parts = sorted(
            (PartitionMetadata.from_pb(tm.name, p) for p in tm.partitions),
            key=lambda p: p.partition,
        )
        return cls(name=tm.name, partitions=tuple(parts), is_internal=tm.is_internal)


class ClusterMetadata:
    """The client's cache of cluster metadata. Mutable, no I/O, one event loop's property."""

    def __init__(self) -> None:
        self.brokers: dict[int, BrokerMetadata] = {}
        self.controller_id = NO_LEADER
        self.cluster_id = ""
        self.topics: dict[str, TopicMetadata] = {}
        self.stale = True
        """Refresh before trusting this (nothing loaded yet, or an error said it is wrong)."""
        self.version = 0
        """Bumped by every update, so a caller can tell whether a refresh happened since."""
        self._stream_addresses: dict[str, str] = {}
        self._available: dict[
            str, tuple[TopicMetadata, dict[int, BrokerMetadata], int, tuple[int, ...]]
        ] = {}

    # -- feeding it ----------------------------------------------------------------------------
    def update(self, response: broker_pb2.MetadataResponse, *, all_topics: bool = True) -> None:
        """Take in a Metadata response.

        all_topics: the request asked for every topic, so a topic missing from the answer no
        longer exists. Topics the answer calls unknown are dropped either way.
        """
        if response.brokers:
            self.brokers = {
                b.node_id: BrokerMetadata(
                    node_id=b.node_id,
                    host=b.host,
                    port=b.port,
                    rack=b.rack,
                    stream_port=b.stream_port,
                )
                for b in response.brokers
            }
            self._stream_addresses = {
                b.address: b.stream_address for b in self.brokers.values() if b.stream_address
            }
        self.controller_id = response.controller_id
        if response.cluster_id:
            self.cluster_id = response.cluster_id
        seen: set[str] = set()
        for tm in response.topics:
            if tm.error_code != ErrorCode.NONE:
                self.topics.pop(tm.name, None)
                continue
            seen.add(tm.name)
            self.topics[tm.name] = self._merge_topic(
                self.topics.get(tm.name), TopicMetadata.from_pb(tm)
            )
        if all_topics:
            for name in [n for n in self.topics if n not in seen]:
                del self.topics[name]
            self.stale = False
        self.version += 1

    @staticmethod
    def _merge_topic(old: TopicMetadata | None, new: TopicMetadata) -> TopicMetadata:
        if old is None or len(old.partitions) != len(new.partitions):
            return new  # a new topic, or recreated with another partition count
        merged = tuple(_newer(o, n) for o, n in zip(old.partitions, new.partitions, strict=True))
        return replace(new, partitions=merged)

    def apply_leader_hint(
        self,
        topic: str,
        partition: int,
        leader_id: int,
        address: str = "",
        leader_epoch: int = 0,
    ) -> bool:
        """Route `topic`-`partition` to `leader_id` now, if the hint is not older than our view.

        Returns True when the routing changed (the caller may retry at once, without a backoff
        or a metadata refresh). An unknown node id with an address is added to the brokers.
        """
        if leader_id <= NO_LEADER:
            return False
        tm = self.topics.get(topic)
        if tm is None or not 0 <= partition < len(tm.partitions):
            return False
        current = tm.partitions[partition]
        if leader_epoch and leader_epoch < current.leader_epoch:
            return False
        if leader_id not in self.brokers:
            if not address:
                return False  # a node we cannot reach is no better than a refresh
            try:
                host, port = parse_address(address)
            except ValueError:
                return False
            self.brokers[leader_id] = BrokerMetadata(node_id=leader_id, host=host, port=port)
        if current.leader == leader_id and (
            not leader_epoch or leader_epoch == current.leader_epoch
        ):
            return False
        updated = replace(
            current,
            leader=leader_id,
            leader_epoch=max(leader_epoch, current.leader_epoch),
            error_code=ErrorCode.NONE,
            hinted=not leader_epoch,
        )
        parts = list(tm.partitions)
        parts[partition] = updated
        self.topics[topic] = replace(tm, partitions=tuple(parts))
        self.version += 1
        return True

    def apply_controller_hint(self, controller_id: int) -> bool:
        if controller_id <= NO_LEADER or controller_id == self.controller_id:
            return False
        self.controller_id = controller_id
        return True

    def invalidate(self) -> None:
        """Our view may be wrong: the next user refreshes before routing on it."""
        self.stale = True

    def forget_topic(self, topic: str) -> None:
        self.topics.pop(topic, None)

    # -- asking it -----------------------------------------------------------------------------
    def topic(self, topic: str) -> TopicMetadata | None:
        return self.topics.get(topic)

    def partitions_for(self, topic: str) -> tuple[int, ...] | None:
        """The topic's partition numbers, or None if the topic is not known."""
        tm = self.topics.get(topic)
        return tm.partition_ids if tm is not None else None

    def available_partitions_for(self, topic: str) -> tuple[int, ...]:
        """Partitions with a leader we can reach, for spreading keyless records."""
        tm = self.topics.get(topic)
        if tm is None:
            return ()
        # Asked for every keyless record: worked out again only when the topic's metadata (a
        # new value on every change) or the set of brokers (a new dict, or one more or fewer
        # in it) changed since.
        brokers = self.brokers
        seen = self._available.get(topic)
        if seen is not None and seen[0] is tm and seen[1] is brokers and seen[2] == len(brokers):
            return seen[3]
        found = tuple(p.partition for p in tm.partitions if p.leader in brokers)
        self._available[topic] = (tm, brokers, len(brokers), found)
        return found

    def partition(self, topic: str, partition: int) -> PartitionMetadata | None:
        tm = self.topics.get(topic)
        if tm is None or not 0 <= partition < len(tm.partitions):
            return None
        return tm.partitions[partition]

    def leader_for(self, topic: str, partition: int) -> int | None:
        """The partition leader's node id, or None if the partition or its leader is unknown."""
        pm = self.partition(topic, partition)
        if pm is None or pm.leader == NO_LEADER:
            return None
        return pm.leader

    def broker(self, node_id: int) -> BrokerMetadata | None:
        return self.brokers.get(node_id)

    def leader_address(self, topic: str, partition: int) -> str | None:
        leader = self.leader_for(topic, partition)
        broker = self.brokers.get(leader) if leader is not None else None
        return broker.address if broker is not None else None

    def stream_address(self, address: str) -> str | None:
        """The stream listener of the node at `address` (its gRPC address), if it has one."""
        return self._stream_addresses.get(address)

    def controller_address(self) -> str | None:
        broker = self.brokers.get(self.controller_id)
        return broker.address if broker is not None else None

    def addresses(self) -> list[str]:
        return [b.address for b in self.brokers.values()]

    def leaders_by_node(self) -> dict[int, list[tuple[str, int]]]:
        """node id -> the (topic, partition)s it leads, for every known broker."""
        out: dict[int, list[tuple[str, int]]] = {node: [] for node in sorted(self.brokers)}
        for name in sorted(self.topics):
            for p in self.topics[name].partitions:
                if p.leader != NO_LEADER:
                    out.setdefault(p.leader, []).append((name, p.partition))
        return out

    def with_topics(self, names: Iterable[str]) -> dict[str, TopicMetadata]:
        return {n: self.topics[n] for n in names if n in self.topics}


def _newer(old: PartitionMetadata, new: PartitionMetadata) -> PartitionMetadata:
    """Of two views of one partition, the one to keep (see the module docstring)."""
    if new.leader_epoch > old.leader_epoch:
        return new
    if new.leader_epoch < old.leader_epoch:
        # A lagging node's view. Keep our leader, but take the replica set (it comes from the
        # controller state, not from the leader).
        return replace(old, replicas=new.replicas)
    if old.hinted and new.leader != old.leader:
        return replace(new, leader=old.leader, hinted=True)
    return new


def best_view(views: Iterable[tuple[int, PartitionMetadata]]) -> PartitionMetadata | None:
    """Of several nodes' views of one partition, given as (answering node id, view), the one to
    show a person: the newest leader epoch, and at that epoch the leader's own view (only it
    knows the ISR and high watermark exactly); the first such on a tie."""
    best: PartitionMetadata | None = None
    best_key = (-1, False)
    for node, view in views:
        key = (view.leader_epoch, bool(view.leader) and view.leader == node)
        if key > best_key:
            best, best_key = view, key
    return best
