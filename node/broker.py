"""One broker node's logic: the controller, the partitions it hosts, and what it knows of others.

This is the piece that ties the controller's metadata to the Raft groups on this node: when the
controller applies a new topic, every node named in a partition's replicas opens that partition's
group; when a topic is deleted, they destroy it. It also hosts this node's replica of the
consumer groups' state (node/groups.py), whose Raft leader is the group coordinator. It also answers the questions handlers ask
(who leads this partition, what is the metadata) from local state only — no I/O here; node/api/
does the gRPC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from liferaft_proto.v1 import raft_pb2
from node.authorizer import Authorizer
from node.config import ConfigError, NodeConfig, parse_advertised
from node.controller import Controller, TopicInfo
from node.controller_commands import RegisterBroker
from node.driver import RaftDriver
from node.errors import BrokerError, ErrorCode
from node.groups import GroupCoordinator
from node.limits import (
    MAX_GOSSIP_EPOCH,
    MAX_GOSSIP_EPOCH_STEP,
    MAX_GOSSIP_UNKNOWN_GROUPS,
    MAX_NODE_ID,
    shown,
)
from node.partition import Partition, PartitionState, group_id
from raft import NONE, Role

log = logging.getLogger("liferaft.broker")

GOSSIP_EVERY_TICKS = 5
FULL_GOSSIP_EVERY = 20
"""Every this many gossip rounds, a leader sends the state of every partition it leads; in
between, only the states that changed (a quiet partition's never does)."""
REGISTER_EVERY_TICKS = 25
SWEEP_EVERY_TICKS = 50
LEADERS_WAIT_S = 10.0
"""How long CreateTopics waits at most for the new partitions to elect their leaders."""


@dataclass(slots=True, frozen=True)
class PartitionView:
    """A partition as metadata shows it, merged from local state and leaders' gossip."""

    topic: str
    partition: int
    replicas: tuple[int, ...]
    state: PartitionState | None  # None while no leader is known


class Broker:
    def __init__(self, config: NodeConfig, driver: RaftDriver) -> None:
        self.config = config
        self.node_id = config.node_id
        self.driver = driver
        self.controller = Controller(config.node_id, sorted(config.peers), driver)
        self.authorizer = Authorizer(
            config.authorizer, config.super_users, lambda: self.controller.state.acls
        )
        self.groups = GroupCoordinator(
            config.node_id, sorted(config.peers), driver, self.partition_count
        )
        self.partitions: dict[tuple[str, int], Partition] = {}
        self._topic_ids: dict[str, int] = {}
        self._gossip: dict[str, PartitionState] = {}  # group id -> newest leader state heard
        self.advertised: dict[int, str] = {config.node_id: config.advertise}
        self._ticks = 0
        self._gossip_out: list[raft_pb2.LeaderStates] = []
        self._gossiped: dict[str, PartitionState] = {}  # group id -> state last sent
        self._by_group: dict[str, Partition] = {}
        self._gossip_rounds = 0
        self._register_pending = False
        self._topic_by_id: dict[int, TopicInfo] = {}
        self._live_groups: set[str] = set()
        self.gossip_dropped = 0
        """Leader states from peers that were not believed (Broker._gossip_fault)."""
        # Peers this node currently has a transport stream to (set by the server).
        self.reachable: Callable[[], set[int]] = set
        self.controller.listeners.append(self.sync_partitions)
        driver.tick_listeners.append(self._on_tick)
        self.sync_partitions()

    # -- partitions follow the controller's metadata -------------------------------------------
    def sync_partitions(self) -> None:
        topics = self.controller.state.topics
        wanted: dict[tuple[str, int], tuple[TopicInfo, list[int]]] = {}
        for topic in topics.values():
            for p, replicas in enumerate(topic.replicas):
                if self.node_id in replicas:
                    wanted[(topic.name, p)] = (topic, replicas)
        for key in list(self.partitions):
            part = self.partitions[key]
            info = topics.get(key[0])
            if key not in wanted or info is None or info.topic_id != part.topic_id:
                self._close_partition(key, destroy=True)
        for key, (topic, replicas) in wanted.items():
            if key in self.partitions:
                # A topic's configs can change (alter-config, IncrementalAlterConfigs): the
                # replicas already open follow.
                if self.partitions[key].config != topic.config:
                    self.partitions[key].config = topic.config
                continue
            self.partitions[key] = Partition(
                node_id=self.node_id,
                topic=topic.name,
                topic_id=topic.topic_id,
                index=key[1],
                replicas=replicas,
                config=topic.config,
                driver=self.driver,
                rebalance_ticks=max(1, self.config.leader_rebalance_ms // self.config.tick_ms),
                retention_ticks=max(1, self.config.retention_check_ms // self.config.tick_ms),
                address_of=self.advertised_address,
            )
            self._by_group[self.partitions[key].group_id] = self.partitions[key]
        self._topic_ids = {t.name: t.topic_id for t in topics.values()}
        self._topic_by_id = {t.topic_id: t for t in topics.values()}
        live_groups = self._live_groups = {
            group_id(t.topic_id, p) for t in topics.values() for p in range(t.partitions)
        }
        for gid in list(self._gossip):
            if gid not in live_groups:
                del self._gossip[gid]

    def _close_partition(self, key: tuple[str, int], *, destroy: bool) -> None:
        part = self.partitions.pop(key)
        self._by_group.pop(part.group_id, None)
        self._gossiped.pop(part.group_id, None)
        part.close(
            BrokerError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {part.topic!r} was deleted")
        )
        self.driver.remove_group(part.group_id, destroy=destroy)
        log.info("node %d closed %s-%d (destroy=%s)", self.node_id, part.topic, part.index, destroy)

    # -- lookups -------------------------------------------------------------------------------
    def partition_count(self, topic: str) -> int | None:
        info = self.controller.state.topics.get(topic)
        return info.partitions if info is not None else None

    def topic(self, name: str) -> TopicInfo:
        info = self.controller.state.topics.get(name)
        if info is None:
            raise BrokerError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist"
            )
        return info

    def leader_partition(self, topic: str, partition: int) -> Partition:
        """The local replica of a partition this node leads, or the right error."""
        info = self.topic(topic)
        if not 0 <= partition < info.partitions:
            raise BrokerError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                f"topic {topic!r} has partitions 0..{info.partitions - 1}, not {partition}",
            )
        part = self.partitions.get((topic, partition))
        if part is not None and part.is_leader:
            return part
        view = self.partition_view(info, partition)
        leader = view.state.leader if view.state is not None else NONE
        if leader == self.node_id:
            leader = NONE
        if leader == NONE or leader not in self.reachable():
            # No leader can be elected while a majority of the replicas is unreachable; say
            # so in the terms of the request (acks=all needs min.insync.replicas of them).
            replicas = info.replicas[partition]
            up = [r for r in replicas if r == self.node_id or r in self.reachable()]
            need = info.config.effective_min_insync(len(replicas))
            if len(up) < need:
                raise BrokerError(
                    ErrorCode.NOT_ENOUGH_REPLICAS,
                    f"{topic}-{partition}: only {len(up)} of its replicas {replicas} are reachable "
                    f"from node {self.node_id} and min.insync.replicas is {need}; nothing was written",
                )
        raise BrokerError(
            ErrorCode.NOT_LEADER if leader != NONE else ErrorCode.LEADER_NOT_AVAILABLE,
            f"node {self.node_id} does not lead {topic}-{partition}"
            + (
                f"; node {leader} does"
                if leader != NONE
                else "; no leader is known yet, retry shortly"
            ),
            leader_id=leader,
            leader_address=self.advertised_address(leader),
            leader_epoch=view.state.leader_epoch if view.state is not None and leader else 0,
        )

    def topic_shape(
        self, partitions: int | None, replication_factor: int | None
    ) -> tuple[int, int]:
        """A new topic's partition count and replication factor, the node's defaults for what
        the request leaves out (None): both listeners' CreateTopics. The default replication
        factor is capped at the registered brokers, so a small cluster can create topics."""
        if partitions is None:
            partitions = self.config.default_partitions
        if replication_factor is None:
            replication_factor = min(
                self.config.default_replication_factor,
                max(1, len(self.controller.state.brokers)),
            )
        return partitions, replication_factor

    async def wait_for_leaders(self, name: str, timeout_s: float) -> None:
        """Wait (bounded: 10 s at most) until every partition of a new topic has a leader, so a
        client that creates then produces does not meet LEADER_NOT_AVAILABLE."""
        deadline = time.monotonic() + min(timeout_s, LEADERS_WAIT_S)
        while time.monotonic() < deadline:
            info = self.controller.state.topics.get(name)
            if info is None:
                return
            views = [self.partition_view(info, p) for p in range(info.partitions)]
            if all(v.state is not None and v.state.leader for v in views):
                return
            await asyncio.sleep(0.02)

    def advertised_address(self, node_id: int) -> str:
        if node_id == NONE:
            return ""
        b = self.controller.state.brokers.get(node_id)
        return b.address if b is not None else self.advertised.get(node_id, "")

    def partition_view(self, info: TopicInfo, p: int) -> PartitionView:
        replicas = tuple(info.replicas[p])
        part = self.partitions.get((info.name, p))
        gossip = self._gossip.get(group_id(info.topic_id, p))
        state: PartitionState | None = None
        if part is not None:
            local = part.state()
            if part.is_leader:
                state = local
            elif gossip is not None and gossip.leader_epoch >= local.leader_epoch:
                state = gossip
            elif local.leader != NONE:
                state = PartitionState(
                    local.leader,
                    local.leader_epoch,
                    (),
                    local.high_watermark,
                    local.log_start_offset,
                )
        elif gossip is not None:
            state = gossip
        return PartitionView(info.name, p, replicas, state)

    # -- gossip of leader states ---------------------------------------------------------------
    def _gossip_fault(self, peer: int, s: raft_pb2.LeaderState) -> str:
        """Why a gossiped leader state cannot be believed ("" if it can). A node speaks only
        for itself, about a partition it is a replica of, with an epoch not absurdly ahead of
        what this node knows of that partition (a forged 2^63-1 would outrank every real
        epoch for good; 2^64-1 would not even fit the metadata's int64)."""
        if s.leader != peer:
            return f"names node {s.leader} as the leader"
        current = self._gossip.get(s.group)
        known = current.leader_epoch if current is not None else 0
        info: TopicInfo | None = None
        part = self._by_group.get(s.group)
        if part is not None:
            known = max(known, part.state().leader_epoch)
        tid, _, p = s.group[1:].partition(".") if s.group.startswith("p") else ("", "", "")
        if tid.isdigit() and p.isdigit():
            info = self._topic_by_id.get(int(tid))
            if info is not None and int(p) >= info.partitions:
                return f"{s.group} is not a partition of topic {info.name!r}"
        else:
            return "names no partition"
        if not 0 < s.epoch <= min(MAX_GOSSIP_EPOCH, known + MAX_GOSSIP_EPOCH_STEP):
            return f"claims epoch {s.epoch} where this node knows epoch {known}"
        if not 0 <= s.log_start_offset <= s.high_watermark:
            return f"claims offsets {s.log_start_offset}..{s.high_watermark}"
        if any(not 0 < r <= MAX_NODE_ID for r in s.isr):
            return f"claims in-sync replicas {list(s.isr)}"
        if info is not None:
            replicas = info.replicas[int(p)]
            if peer not in replicas or not set(s.isr) <= set(replicas):
                return f"claims in-sync replicas {list(s.isr)} of replicas {replicas}"
        elif current is None and len(self._gossip) >= len(self._live_groups) + (
            MAX_GOSSIP_UNKNOWN_GROUPS
        ):
            return "is about a partition this node does not know, and it knows many such"
        return ""

    def on_leaders(self, peer: int, states: raft_pb2.LeaderStates) -> None:
        """Leader gossip from a peer's own (authenticated) link: believed only as far as that
        peer can know it (_gossip_fault); a state that cannot be is dropped and counted."""
        for s in states.states:
            fault = self._gossip_fault(peer, s)
            if fault:
                self.gossip_dropped += 1
                if self.gossip_dropped % 1000 == 1:
                    log.warning(
                        "node %d: dropped leader gossip from node %d for %s: it %s (%d dropped)",
                        self.node_id,
                        peer,
                        shown(s.group),
                        fault,
                        self.gossip_dropped,
                    )
                continue
            current = self._gossip.get(s.group)
            if current is None or s.epoch >= current.leader_epoch:
                self._gossip[s.group] = PartitionState(
                    leader=s.leader,
                    leader_epoch=s.epoch,
                    isr=tuple(s.isr),
                    high_watermark=s.high_watermark,
                    log_start_offset=s.log_start_offset,
                )

    def leader_states(self, full: bool = True) -> raft_pb2.LeaderStates:
        """The states of the partitions this node leads: all of them, or (full=False) those
        that changed since they were last sent. A quiesced group's state cannot change, so
        it is not even looked at then: a thousand quiet partitions cost nothing here."""
        out = raft_pb2.LeaderStates(from_node=self.node_id)
        sent = self._gossiped
        add = out.states.add
        if full:
            parts = list(self.partitions.values())
        else:
            by_group = self._by_group
            awake = self.driver.awake_groups()
            # A partition that became leader or changed state was awake to do so.
            parts = [by_group[g] for g in awake if g in by_group]
        for part in parts:
            gid = part.group_id
            if not part.is_leader:
                sent.pop(gid, None)
                continue
            st = part.state()
            if not full and sent.get(gid) == st:
                continue
            sent[gid] = st
            add(
                group=gid,
                leader=self.node_id,
                epoch=st.leader_epoch,
                isr=st.isr,
                high_watermark=st.high_watermark,
                log_start_offset=st.log_start_offset,
            )
        return out

    def _on_tick(self) -> None:
        self._ticks += 1
        if self._ticks % GOSSIP_EVERY_TICKS == 0:
            self._gossip_rounds += 1
            states = self.leader_states(full=self._gossip_rounds % FULL_GOSSIP_EVERY == 1)
            if states.states:
                self._gossip_out.append(states)
        if self._ticks % REGISTER_EVERY_TICKS == 0:
            self._register_pending = True
        if self._ticks % SWEEP_EVERY_TICKS == 0:
            self._sweep_quiesced()

    def _sweep_quiesced(self) -> None:
        """The periodic duties of partitions whose Raft group is quiesced (the driver does not
        tick those, so Partition.on_tick does not run): hand leadership back to the preferred
        replica, and apply retention. Once a second, over the quiet partitions only."""
        driver = self.driver
        retention_ticks = self.config.retention_check_ms // self.config.tick_ms
        period = max(1, retention_ticks // SWEEP_EVERY_TICKS) * SWEEP_EVERY_TICKS
        retention_due = self._ticks % period == 0
        now_ms = int(time.time() * 1000)
        for part in self.partitions.values():
            gid = part.group_id
            if not driver.is_quiesced(gid):
                continue
            if part.is_leader and part.preferred_leader != self.node_id:
                part._maybe_hand_back_leadership()
            if retention_due:
                part.enforce_retention(now_ms)
            if not driver.is_quiesced(gid):
                driver.touched(gid)

    def take_gossip(self) -> list[raft_pb2.LeaderStates]:
        out, self._gossip_out = self._gossip_out, []
        return out

    def registrations_due(self) -> list[RegisterBroker]:
        """Commands registering brokers whose advertised address the metadata lacks (controller
        leader only)."""
        if not self._register_pending or self.controller.raft_group.node.role != Role.LEADER:
            return []
        self._register_pending = False
        cmds: list[RegisterBroker] = []
        brokers = self.controller.state.brokers
        for node_id, address in sorted(self.advertised.items()):
            b = brokers.get(node_id)
            if b is None or b.address != address:
                try:
                    host, port = parse_advertised(address)
                except ConfigError as e:  # the transport checks first; never stop for this
                    log.error("node %d: not registering node %d: %s", self.node_id, node_id, e)
                    continue
                cmds.append(RegisterBroker(node_id=node_id, host=host, port=port))
        return cmds

    def controller_leader(self) -> int:
        return self.controller.leader

    def waiting_for(self) -> str:
        """What this node lacks to serve (a controller leader, its registration, peers), in
        words an operator can act on: logged while it waits, and told to clients it refuses."""
        return waiting_for(
            self.node_id,
            self.config.peers,
            self.reachable(),
            self.controller.leader,
            self.node_id in self.controller.state.brokers,
        )


def waiting_for(
    node_id: int, peers: dict[int, str], reachable: set[int], controller: int, registered: bool
) -> str:
    """What a node that is not serving waits for, in words an operator can act on."""
    others = sorted(n for n in peers if n != node_id)
    missing = [n for n in others if n not in reachable]
    need = len(peers) // 2 + 1
    parts: list[str] = []
    if not controller:
        parts.append(
            f"no controller leader (electing one needs {need} of the {len(peers)} nodes; "
            f"this node reaches {1 + len(others) - len(missing)})"
        )
    elif not registered:
        parts.append(f"not yet registered by the controller leader (node {controller})")
    if missing:
        parts.append("unreachable peers: " + ", ".join(f"node {n} at {peers[n]}" for n in missing))
    return "; ".join(parts) or "the next health update"
