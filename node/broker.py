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
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from liferaft_proto.v1 import raft_pb2
from node.authorizer import Authorizer
from node.config import ConfigError, NodeConfig, parse_advertised
from node.controller import CONTROLLER_GROUP, Controller, TopicInfo
from node.controller_commands import (
    AdmitIncarnation,
    MovePartition,
    PartitionMembership,
    RegisterBroker,
)
from node.driver import RaftDriver
from node.errors import BrokerError, ErrorCode
from node.groups import GROUPS_GROUP, GroupCoordinator
from node.limits import (
    MAX_GOSSIP_EPOCH,
    MAX_GOSSIP_EPOCH_STEP,
    MAX_GOSSIP_UNKNOWN_GROUPS,
    MAX_NODE_ID,
    shown,
)
from node.membership import PeerHello, Step, born, next_step
from node.moves import MoveDriver, move_key
from node.partition import Partition, PartitionState, group_id
from raft import (
    NONE,
    ConfChange,
    ConfChangeError,
    ConfChangeType,
    ConfState,
    Fence,
    NotLeaderError,
    ProposalDroppedError,
    RaftError,
    RawNode,
    Role,
)

log = logging.getLogger("liferaft.broker")

GOSSIP_EVERY_TICKS = 5
MOVE_EVERY_TICKS = 5
"""How often a partition leader looks at its moves (node/moves.py) for the next step."""
MAX_GOSSIP_MEMBERS = 64
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
    def __init__(
        self,
        config: NodeConfig,
        driver: RaftDriver,
        incarnation: int = 0,
        founders: list[int] | None = None,
    ) -> None:
        self.config = config
        self.node_id = config.node_id
        self.driver = driver
        self.incarnation = incarnation
        """This node's data directory's incarnation (node/membership.py)."""
        self.hellos: dict[int, PeerHello] = {}
        """What each peer said about itself when it last connected."""
        self._readded: dict[str, dict[int, int]] = {}
        """As a group's leader: group -> node -> incarnation it added back as a learner."""
        self._admitting: set[tuple[int, int]] = set()
        self._admitted_in: dict[str, dict[int, int]] = {}
        """As the leader of __groups or a partition: group -> node -> incarnation granted a
        fence there."""
        self._promoting: set[str] = set()
        """Partitions this node leads with a re-added learner to promote once caught up."""
        self._leading_since: dict[str, tuple[int, int]] = {}
        """As a partition's leader: group -> (term, broker tick) at which membership_step first
        saw this node lead it in that term."""
        self._silent_sent: list[str] = []
        """This node's silent groups as its gossip last said them."""
        self._grants: dict[tuple[str, int], raft_pb2.FenceGrant] = {}
        """(group, node) -> the fence this node granted as the group's leader (the
        controller's from the metadata; a replica move adds a partition's: grant_fence)."""
        self.founders = founders or sorted(config.peers)
        """The voters the controller and __groups groups were born with (--peers at the
        cluster's birth; a joining node learns them from the member it joins through)."""
        self.controller = Controller(config.node_id, self.founders, driver)
        self.groups = GroupCoordinator(config.node_id, self.founders, driver, self.partition_count)
        self.authorizer = Authorizer(
            config.authorizer, config.super_users, lambda: self.controller.state.acls
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
        self.moves = MoveDriver(self)
        driver.expected_members = self._expected_members
        self.controller.listeners.append(self.sync_partitions)
        driver.tick_listeners.append(self._on_tick)
        driver.next_duty_in = self._ticks_to_duty
        self.sync_partitions()

    # -- partitions follow the controller's metadata -------------------------------------------
    def sync_partitions(self) -> None:
        topics = self.controller.state.topics
        hosted = self.controller.hosted_replicas
        wanted: dict[tuple[str, int], tuple[TopicInfo, list[int]]] = {}
        for topic in topics.values():
            for p, replicas in enumerate(topic.replicas):
                if self.node_id in replicas or self.node_id in hosted(topic, p):
                    wanted[(topic.name, p)] = (topic, replicas)
        for key in list(self.partitions):
            part = self.partitions[key]
            info = topics.get(key[0])
            if info is not None and info.topic_id == part.topic_id and key not in wanted:
                # Its replica moved off this node (node/moves.py). A produce still waiting here
                # (this replica led once) cannot learn its batch's fate any more: unknown, as
                # for a deadline, never "not written".
                self._close_partition(
                    key,
                    destroy=True,
                    reason=BrokerError(
                        ErrorCode.REQUEST_TIMED_OUT,
                        f"{key[0]}-{key[1]} moved off node {self.node_id} before this batch's "
                        "fate was known here: it may or may not have been written",
                    ),
                )
            elif key not in wanted or info is None or info.topic_id != part.topic_id:
                # Its topic was deleted: topic ids are never reused, so the group never comes
                # back and what its replica promised can go with it.
                self._close_partition(key, destroy=True, for_good=True)
            elif self._stale_joiner(part, wanted[key][1]):
                # A joining replica that has received nothing yet, bootstrapped with voters the
                # metadata has since corrected (a leader it would not hear from, not being in
                # them): start it again with the metadata's. It holds no entry and no snapshot;
                # a vote it cast is kept (RaftDriver.remove_group).
                self._close_partition(key, destroy=True)
        rejoining = self.driver.fence_of(CONTROLLER_GROUP) is not None
        stale = set(self.controller.state.stale.get(self.node_id, ()))
        on_disk: set[str] | None = None
        for key, (topic, replicas) in wanted.items():
            if key in self.partitions:
                # A topic's configs can change (alter-config, IncrementalAlterConfigs): the
                # replicas already open follow.
                if self.partitions[key].config != topic.config:
                    self.partitions[key].config = topic.config
                # So do its replicas (a move: the preferred leader, min.insync.replicas' base).
                self.partitions[key].replicas = list(replicas)
                continue
            if rejoining or key in stale:
                # Our old incarnation may be a member of this group: keep silent there until
                # the group re-adds us (node/membership.py). Not where this incarnation has
                # the group's state already (it reopens it after a restart).
                gid = group_id(topic.topic_id, key[1])
                if on_disk is None:
                    on_disk = set(self.driver.store.groups())
                if gid not in on_disk and self.driver.fence_of(gid) is None:
                    self.driver.set_fence(gid, Fence())
            # A replica joining in a move starts as a learner of the current voters: it must
            # not campaign before the leader's log tells it the real membership.
            joining = self.node_id not in replicas
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
                bootstrap=ConfState(voters=frozenset(replicas), learners=frozenset({self.node_id}))
                if joining
                else None,
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
        # Deleted replicas' promises outlive them only while their topic exists.
        next_id = self.controller.state.next_topic_id
        self.driver.forget_promises(
            lambda gid: gid not in live_groups and 0 <= _topic_id_of(gid) < next_id
        )

    def _expected_members(self, group: str) -> set[int]:
        """A partition group's replicas as the metadata names them, and its move's target: the
        nodes whose leader messages this replica hears before it has applied the change that
        added them (Driver.expected_members)."""
        part = self._by_group.get(group)
        if part is None:
            return set()
        members = set(part.replicas)
        move = self.controller.state.moves.get(move_key(part.topic, part.index))
        if move is not None:
            members.update(move.target)
        return members

    def _stale_joiner(self, part: Partition, voters: list[int]) -> bool:
        group = part.group
        cs = group.conf_state
        return (
            self.node_id not in voters
            and self.node_id in cs.learners
            and set(cs.voters) != set(voters)
            and group.storage.last_index() == 0
            and group.storage.snapshot().meta.index == 0
        )

    def _close_partition(
        self,
        key: tuple[str, int],
        *,
        destroy: bool,
        for_good: bool = False,
        reason: BrokerError | None = None,
    ) -> None:
        part = self.partitions.pop(key)
        self._by_group.pop(part.group_id, None)
        self._gossiped.pop(part.group_id, None)
        part.close(
            reason
            or BrokerError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {part.topic!r} was deleted"
            )
        )
        self.driver.remove_group(part.group_id, destroy=destroy, for_good=for_good)
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
        # During a move, its learners are replicas too (as Kafka lists adding replicas).
        replicas = tuple(info.replicas[p]) + tuple(
            n for n in self.controller.learners_of(info, p) if n not in info.replicas[p]
        )
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
        if len(s.voters) + len(s.learners) > MAX_GOSSIP_MEMBERS or any(
            not 0 < r <= MAX_NODE_ID for r in (*s.voters, *s.learners)
        ):
            return f"claims members {list(s.voters)} and learners {list(s.learners)}"
        if info is not None:
            replicas = self.controller.hosted_replicas(info, int(p))
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
        if states.incarnation:
            h = self.hellos.get(peer)
            self.hellos[peer] = PeerHello(
                states.incarnation,
                h.controller_term if h else 0,
                frozenset(states.silent_groups),
                silent_at=self._ticks,
            )
        if states.fences:
            self.on_fence_grants(peer, list(states.fences))
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
                    voters=tuple(s.voters),
                    learners=tuple(s.learners),
                    conf_index=s.conf_index,
                )

    # -- membership (node/membership.py) -------------------------------------------------------
    def grant_fence(
        self, group: str, node: int, incarnation: int, min_term: int, index: int
    ) -> None:
        """As `group`'s leader, tell a rejoining node that the group replaced its old
        incarnation (it applied the learner's add by `index`, in term `min_term`). Gossiped
        while the node says it is silent there; it takes only its own incarnation's."""
        self._grants[(group, node)] = raft_pb2.FenceGrant(
            group=group, node=node, incarnation=incarnation, min_term=min_term, index=index
        )

    def _fence_grants(self) -> list[raft_pb2.FenceGrant]:
        if self.controller.is_leader:
            for node, (inc, term, index) in self.controller.state.fences.items():
                self.grant_fence(CONTROLLER_GROUP, node, inc, term, index)
        out = []
        for (group, node), g in self._grants.items():
            h = self.hellos.get(node)
            if h is not None and group in h.silent and h.incarnation == g.incarnation:
                out.append(g)
        return out

    def on_fence_grants(self, peer: int, grants: list[raft_pb2.FenceGrant]) -> None:
        """Move this node's fence in a group the grant is about: only a grant for this node's
        own incarnation, only while that group still holds it silent."""
        for g in grants:
            if g.node != self.node_id or g.incarnation != self.incarnation or g.min_term < 1:
                continue
            fence = self.driver.fence_of(g.group)
            if fence is None or fence.min_term != 0:
                continue
            log.info(
                "node %d: node %d says group %s replaced our old incarnation: speaking from "
                "term %d, voting from index %d",
                self.node_id,
                peer,
                g.group,
                g.min_term,
                g.index,
            )
            self.driver.set_fence(g.group, Fence(min_term=g.min_term, index=g.index))

    def on_peer_hello(
        self, peer: int, incarnation: int, controller_term: int, rejoining: bool
    ) -> None:
        old = self.hellos.get(peer)
        same = old is not None and old.incarnation == incarnation
        silent = old.silent if old is not None and same else frozenset()
        if rejoining:
            silent = silent | {CONTROLLER_GROUP}
        # The partitions' silence is carried over as it was said, and as old: a Hello does not
        # repeat it (only gossip does).
        said_at = old.silent_at if old is not None and same else 0
        self.hellos[peer] = PeerHello(incarnation, controller_term, silent, silent_at=said_at)
        self.maybe_born()

    def maybe_born(self) -> None:
        """A new data directory at the cluster's birth may vote as itself (node/membership.py),
        in the controller group and the other group over every node."""
        fence = self.driver.fence_of(CONTROLLER_GROUP)
        if fence is None or fence.min_term != 0:
            return
        node = self.controller.raft_group.node
        if born(self.node_id, sorted(self.config.peers), self.hellos, node.term):
            log.info(
                "node %d: a new data directory at the cluster's birth (no peer has seen a "
                "controller election): voting",
                self.node_id,
            )
            for gid in (CONTROLLER_GROUP, GROUPS_GROUP):
                self.driver.set_fence(gid, None)

    def silent_groups(self) -> list[str]:
        """The groups in which this node asks to be replaced: held silent there, with the
        cluster past its birth (a peer has seen a controller election), so no birth will lift
        the fence."""
        if not any(h.controller_term > 0 for h in self.hellos.values()):
            return []
        return sorted(g for g, f in self.driver.fences.items() if f.min_term == 0)

    def rejoining(self) -> bool:
        return CONTROLLER_GROUP in self.silent_groups()

    def membership_step(self) -> AdmitIncarnation | None:
        """As leader of the groups over every node (the controller, __groups), make the next
        membership change (node/membership.py's next_step). The controller's admission is a
        command, returned for the caller to replicate; __groups' is a fence granted at once."""
        out: AdmitIncarnation | None = None
        groups: list[tuple[str, RawNode]] = [
            (CONTROLLER_GROUP, self.controller.raft_group.node),
            (GROUPS_GROUP, self.groups.raft_group.node),
        ]
        # Partitions this node leads where a replica waits silent, or a re-added learner waits
        # for its promotion: only those, so a thousand quiet partitions cost nothing here.
        wanted_parts = {g for h in self.hellos.values() for g in h.silent} | set(self._promoting)
        for gid in sorted(wanted_parts):
            part = self._by_group.get(gid)
            if part is None or not part.is_leader:
                self._promoting.discard(gid)
                self._leading_since.pop(gid, None)
                continue
            groups.append((gid, self.driver.groups[gid].node))
        retired: frozenset[int] | None = None  # computed once, and only where this node leads
        for gid, node in groups:
            if node.role != Role.LEADER or not node.caught_up_in_term():
                continue
            conf = node.conf_state()
            caught_up = set()
            for member in conf.voters | conf.learners:
                pr = node.progress_of(member)
                if pr is not None and pr.match >= node.committed:
                    caught_up.add(member)
            readded = self._readded.setdefault(gid, {})
            over_all = gid in (CONTROLLER_GROUP, GROUPS_GROUP)
            if gid == CONTROLLER_GROUP:
                admitted = self.controller.state.incarnations
                wanted = self.config.controller_voters
            else:
                # A learner no longer silent here was admitted, by this leader or another.
                admitted = {
                    n: 0
                    for n in conf.learners
                    if n not in self.hellos or gid not in self.hellos[n].silent
                }
                admitted.update(self._admitted_in.setdefault(gid, {}))
                part = self._by_group.get(gid)
                # __groups keeps the controller's voter count: a joined node is promoted
                # there as it is in the controller group (the founders may be more).
                wanted = len(part.replicas) if part is not None else self.config.controller_voters
            leaving: frozenset[int] = frozenset()
            if over_all:
                if retired is None:
                    retired = self._retired()
                leaving = retired
            rejoining = {n: h.incarnation for n, h in self.hellos.items() if gid in h.silent}
            if not over_all:
                # Only what a peer said since this node began to lead the group: who admitted
                # a replica is known to its leader alone (_admitted_in), so a new leader that
                # believed a word older than the fence's lifting would remove a voter that is
                # serving, and with another replica's disk lost, the group's last quorum with
                # it (brokersim seed 130219). A replica truly silent says so again within a
                # gossip round (a rejoining node gossips every round).
                term, since = self._leading_since.get(gid, (-1, 0))
                if term != node.term:
                    self._leading_since[gid] = (node.term, self._ticks)
                    since = self._ticks
                rejoining = {
                    n: inc for n, inc in rejoining.items() if self.hellos[n].silent_at > since
                }
            step = next_step(
                conf=conf,
                rejoining=rejoining,
                admitted=admitted,
                readded=readded,
                caught_up=caught_up,
                voters_wanted=wanted,
                retired=leaving,
                leader=self.node_id,
            )
            if step is None:
                if gid in self._promoting and len(conf.voters) >= wanted:
                    self._promoting.discard(gid)
                continue
            if step.kind == "transfer":
                with contextlib.suppress(RaftError):
                    if node.status().lead_transferee != step.node_id:
                        node.transfer_leader(step.node_id)
                        # As node/moves.py does: the group may be quiesced in the driver, and
                        # the transfer's messages go out only in a round that looks at it.
                        self.driver.touched(gid)
                        log.info(
                            "node %d: group %s: leadership to node %d (this node is "
                            "decommissioned)",
                            self.node_id,
                            gid,
                            step.node_id,
                        )
                continue
            if step.kind != "admit":
                self._propose_conf_change(gid, node, step, readded)
            elif gid != CONTROLLER_GROUP:
                self._admitted_in.setdefault(gid, {})[step.node_id] = step.incarnation
                self.grant_fence(gid, step.node_id, step.incarnation, node.term, node.applied)
                if gid != GROUPS_GROUP:
                    self._promoting.add(gid)
            elif (step.node_id, step.incarnation) not in self._admitting:
                self._admitting.add((step.node_id, step.incarnation))
                out = AdmitIncarnation(
                    node_id=step.node_id,
                    incarnation=step.incarnation,
                    min_term=node.term,
                    index=node.applied,
                )
        return out

    def _retired(self) -> frozenset[int]:
        """Decommissioned nodes that hold no replica any more (node/moves.py has moved them
        all off): they stop voting in the groups over every node (node/membership.py)."""
        st = self.controller.state
        if not st.decommissioned:
            return frozenset()
        holding: set[int] = set()
        for info in st.topics.values():
            for p in range(info.partitions):
                holding.update(self.controller.hosted_replicas(info, p))
        return frozenset(st.decommissioned - holding)

    def _propose_conf_change(
        self, gid: str, node: RawNode, step: Step, readded: dict[int, int]
    ) -> None:
        kind = {
            "remove": ConfChangeType.REMOVE_NODE,
            "add_learner": ConfChangeType.ADD_LEARNER,
            "promote": ConfChangeType.ADD_VOTER,
        }[step.kind]
        try:
            node.propose_conf_change(ConfChange(kind, step.node_id))
        except (ConfChangeError, NotLeaderError, ProposalDroppedError):
            return  # one change at a time: the next round asks again
        if step.kind == "add_learner":
            readded[step.node_id] = step.incarnation
        log.info(
            "node %d: group %s: %s node %d%s",
            self.node_id,
            gid,
            step.kind.replace("_", " "),
            step.node_id,
            f" (incarnation {step.incarnation:x})" if step.incarnation else "",
        )
        self.driver.touched(gid)

    def leader_states(self, full: bool = True) -> raft_pb2.LeaderStates:
        """The states of the partitions this node leads: all of them, or (full=False) those
        that changed since they were last sent. A quiesced group's state cannot change, so
        it is not even looked at then: a thousand quiet partitions cost nothing here."""
        out = raft_pb2.LeaderStates(
            from_node=self.node_id,
            incarnation=self.incarnation,
            silent_groups=self.silent_groups(),
        )
        out.fences.extend(self._fence_grants())
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
                voters=st.voters,
                learners=st.learners,
                conf_index=st.conf_index,
            )
        return out

    def _on_tick(self) -> None:
        self._ticks += 1
        if self._ticks % GOSSIP_EVERY_TICKS == 0:
            self._gossip_rounds += 1
            states = self.leader_states(full=self._gossip_rounds % FULL_GOSSIP_EVERY == 1)
            silent = list(states.silent_groups)
            if (
                states.states
                or states.fences
                or silent
                or silent != self._silent_sent  # a fence lifted: say so now, not in 4 rounds
                or self._gossip_rounds % 4 == 1
            ):
                self._gossip_out.append(states)
                self._silent_sent = silent
        if self._ticks % REGISTER_EVERY_TICKS == 0:
            self._register_pending = True
            self._admitting.clear()  # an admission lost with a leadership change: ask again
        if self._ticks % SWEEP_EVERY_TICKS == 0:
            self._sweep_quiesced()
        if self._ticks % MOVE_EVERY_TICKS == 0:
            self.drive_moves()

    def _ticks_to_duty(self) -> int:
        """In how many ticks _on_tick next does more than count: a driver with no group awake
        sleeps until then (node/driver.py)."""
        t = self._ticks
        return min(
            every - t % every
            for every in (
                GOSSIP_EVERY_TICKS,
                REGISTER_EVERY_TICKS,
                SWEEP_EVERY_TICKS,
                MOVE_EVERY_TICKS,
            )
        )

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

    # -- replica moves (issue 19): node/moves.py ----------------------------------------------
    def drive_moves(self) -> None:
        """Partition leader: take the next step of each move of a partition this node leads."""
        self.moves.drive()

    def membership_reports(self) -> list[PartitionMembership | MovePartition]:
        """Controller leader: the commands recording partitions' memberships that moved on,
        and starting the next leg of moves that have one."""
        return self.moves.reports()

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


def _topic_id_of(gid: str) -> int:
    """The topic id in a partition's group id (node/partition.py's group_id); a group of
    another kind gives -1 (it is never a deleted topic's)."""
    head, _, _ = gid.partition(".")
    return int(head[1:]) if head.startswith("p") and head[1:].isdigit() else -1


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
