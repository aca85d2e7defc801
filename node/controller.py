"""The controller: cluster metadata as a replicated state machine over the controller voters.

Every node is a controller voter (static membership from --peers) and holds a replica of the
metadata: brokers, topics, partition assignments, topic configs, and the counter that hands out
idempotent producers' ids (never reused: it only grows, and it is in the snapshots). Changes are commands in the
controller's Raft log, so every node applies the same changes in the same order and can serve
metadata from its own copy. Commands are values (node/controller_commands.py), small JSON
documents in the log: rare, and readable in a debugger.

A command is validated twice: by the proposer (to answer bad input at once, changing nothing) and
again when applied (two racing creates of one name: the second is refused there). The proposer
learns the applied outcome through a future keyed by the entry's index and term.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from node.acl import AclBinding, AclBindingFilter, AclSet
from node.command import Command
from node.controller_commands import (
    CONTROLLER_COMMANDS,
    AdmitIncarnation,
    AllocateProducerIds,
    AlterTopicConfigs,
    CancelMove,
    CreateAcls,
    CreatePartitions,
    CreateTopic,
    DecommissionNode,
    DeleteAcls,
    DeleteTopic,
    DeleteUser,
    MovePartition,
    PartitionMembership,
    RecommissionNode,
    RegisterBroker,
    Replicas,
    UpsertUser,
)
from node.driver import RaftDriver
from node.errors import BrokerError, ErrorCode
from node.limits import MAX_ACLS, MAX_ACLS_PER_REQUEST, shown
from node.moves import (
    Move,
    assign_least_loaded,
    at_target,
    move_key,
    ordered_replicas,
    placeable,
)
from node.replicated import ReplicatedStateMachine
from node.scram import Users, apply_user_command, users_from_json, users_to_json
from node.topic_config import TopicConfig, parse_topic_config
from raft import Role, SoftState

log = logging.getLogger("liferaft.controller")

CONTROLLER_GROUP = "controller"
MAX_PARTITIONS = 10_000
_TOPIC_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(slots=True)
class BrokerInfo:
    node_id: int
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(slots=True)
class TopicInfo:
    name: str
    topic_id: int
    replicas: list[list[int]]
    """replicas[p] lists partition p's replicas; the first is the preferred leader."""
    configs: dict[str, str] = field(default_factory=dict)
    conf_index: dict[str, int] = field(default_factory=dict)
    """str(p) -> the Raft index partition p's recorded membership is as of (PartitionMembership;
    absent while it is the one the partition was created with)."""

    @property
    def partitions(self) -> int:
        return len(self.replicas)

    @property
    def config(self) -> TopicConfig:
        return parse_topic_config(self.configs, len(self.replicas[0]))


@dataclass(slots=True)
class ControllerState:
    brokers: dict[int, BrokerInfo] = field(default_factory=dict)
    topics: dict[str, TopicInfo] = field(default_factory=dict)
    next_topic_id: int = 1
    next_producer_id: int = 1
    users: Users = field(default_factory=dict)
    """SCRAM credentials by user and mechanism (node/scram.py); never a password."""
    acls: AclSet = field(default_factory=AclSet)
    """Who may do what (node/acl.py, node/authorizer.py)."""
    incarnations: dict[int, int] = field(default_factory=dict)
    """node -> the incarnation of its data directory the controller group admitted (only
    nodes whose disk was replaced; node/membership.py)."""
    fences: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    """node -> (incarnation, min_term, index): the fence its admission granted."""
    stale: dict[int, list[tuple[str, int]]] = field(default_factory=dict)
    """node -> (topic, partition) its old incarnation was a replica of: their groups still
    count the old one, and the new one stays silent there until a replica move re-adds it."""
    moves: dict[str, Move] = field(default_factory=dict)
    """move_key(topic, partition) -> the partition's move under way (node/moves.py)."""
    decommissioned: set[int] = field(default_factory=set)
    """Brokers taken out of placement (`liferaft node decommission`)."""
    next_moves: dict[str, Move] = field(default_factory=dict)
    """Moves to start once the one before is done (MovePartition.then), by move_key."""

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "incarnations": {str(k): v for k, v in self.incarnations.items()},
                "fences": {str(k): list(v) for k, v in self.fences.items()},
                "stale": {str(k): [list(tp) for tp in v] for k, v in self.stale.items()},
                "brokers": [asdict(b) for b in self.brokers.values()],
                "topics": [asdict(t) for t in self.topics.values()],
                "next_topic_id": self.next_topic_id,
                "next_producer_id": self.next_producer_id,
                "users": users_to_json(self.users),
                "acls": self.acls.to_json(),
                "moves": [m.to_json() for m in self.moves.values()],
                "next_moves": [m.to_json() for m in self.next_moves.values()],
                "decommissioned": sorted(self.decommissioned),
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ControllerState:
        raw = json.loads(data or b"{}")
        st = cls(
            next_topic_id=int(raw.get("next_topic_id", 1)),
            next_producer_id=int(raw.get("next_producer_id", 1)),
            users=users_from_json(raw.get("users", [])),
            acls=AclSet.from_json(raw.get("acls", [])),
            incarnations={int(k): int(v) for k, v in raw.get("incarnations", {}).items()},
            fences={
                int(k): (int(v[0]), int(v[1]), int(v[2])) for k, v in raw.get("fences", {}).items()
            },
            stale={
                int(k): [(str(t), int(p)) for t, p in v] for k, v in raw.get("stale", {}).items()
            },
            decommissioned={int(n) for n in raw.get("decommissioned", [])},
        )
        for b in raw.get("brokers", []):
            st.brokers[int(b["node_id"])] = BrokerInfo(int(b["node_id"]), b["host"], int(b["port"]))
        for t in raw.get("topics", []):
            st.topics[t["name"]] = TopicInfo(
                t["name"],
                int(t["topic_id"]),
                t["replicas"],
                t["configs"],
                {str(k): int(v) for k, v in t.get("conf_index", {}).items()},
            )
        for m in raw.get("moves", []):
            move = Move.from_json(m)
            st.moves[move_key(move.topic, move.partition)] = move
        for m in raw.get("next_moves", []):
            move = Move.from_json(m)
            st.next_moves[move_key(move.topic, move.partition)] = move
        return st


def validate_topic_name(name: str) -> None:
    if not name or len(name) > 249 or name in (".", "..") or not set(name) <= _TOPIC_CHARS:
        raise BrokerError(
            ErrorCode.INVALID_TOPIC,
            f"invalid topic name {shown(name)}: use 1-249 characters from a-z, A-Z, 0-9, '.', "
            "'_', '-'",
        )


def _check_acl_count(n: int, what: str) -> None:
    if not 1 <= n <= MAX_ACLS_PER_REQUEST:
        raise BrokerError(
            ErrorCode.INVALID_REQUEST,
            f"{n} {what} in one request: give between 1 and {MAX_ACLS_PER_REQUEST}",
        )


def _too_many_acls(have: int, new: int) -> BrokerError:
    return BrokerError(
        ErrorCode.INVALID_REQUEST,
        f"the cluster has {have} ACLs; {new} more would pass its bound of {MAX_ACLS}: "
        "remove some, or use prefixed and wildcard ACLs",
    )


def to_replicas(placed: list[list[int]]) -> Replicas:
    return tuple(tuple(r) for r in placed)


def merge_configs(configs: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    """A topic's configs with `changes` applied: a value sets a key, None removes it."""
    merged = dict(configs)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


class Controller(ReplicatedStateMachine):
    """The controller group's state machine: applies metadata commands to ControllerState."""

    snapshot_every = 1000
    commands = CONTROLLER_COMMANDS

    def __init__(self, node_id: int, voters: list[int], driver: RaftDriver) -> None:
        self.state = ControllerState()
        self.listeners: list[Callable[[], None]] = []
        """Called whenever the metadata changed (a command applied, a snapshot restored)."""
        self._appliers: dict[type[Command], Callable[[Any], Any]] = {
            RegisterBroker: self._register_broker,
            AdmitIncarnation: self._admit_incarnation,
            CreateTopic: self._create_topic,
            DeleteTopic: self._delete_topic,
            AllocateProducerIds: self._allocate_producer_ids,
            CreatePartitions: self._create_partitions,
            AlterTopicConfigs: self._alter_topic_configs,
            UpsertUser: self._change_user,
            DeleteUser: self._change_user,
            CreateAcls: self._create_acls,
            DeleteAcls: self._delete_acls,
            MovePartition: self._move_partition,
            PartitionMembership: self._partition_membership,
            DecommissionNode: self._decommission_node,
            CancelMove: self._cancel_move,
            RecommissionNode: self._recommission_node,
        }
        assert set(self._appliers) == set(CONTROLLER_COMMANDS), "a command without an applier"
        super().__init__(node_id, driver, CONTROLLER_GROUP, voters)

    # -- views ---------------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self.raft_group.node.role == Role.LEADER

    # -- proposing (replicate_and_wait) ---------------------------------------------------------
    def not_leader(self) -> BrokerError:
        return BrokerError(
            ErrorCode.NOT_CONTROLLER,
            f"node {self.node_id} is not the controller leader",
            leader_id=self.leader,
        )

    def superseded(self) -> BrokerError:
        return BrokerError(ErrorCode.NOT_CONTROLLER, "controller leadership changed; retry")

    def plan_create_topic(
        self, name: str, partitions: int, replication_factor: int, configs: dict[str, str]
    ) -> CreateTopic:
        """Validate a create request against the current state; return the command to propose."""
        validate_topic_name(name)
        if name in self.state.topics:
            raise BrokerError(ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise BrokerError(
                ErrorCode.INVALID_PARTITIONS,
                f"partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}",
            )
        brokers = placeable(self.state)
        if replication_factor < 1 or replication_factor > len(brokers):
            raise BrokerError(
                ErrorCode.INVALID_REPLICATION_FACTOR,
                f"replication factor {replication_factor} is impossible with "
                f"{len(brokers)} registered brokers {brokers}",
            )
        parse_topic_config(configs, replication_factor)
        salt = sum(name.encode()) % len(brokers)
        placed = assign_least_loaded(self.state, partitions, replication_factor, salt)
        return CreateTopic(name=name, replicas=to_replicas(placed), configs=dict(configs))

    def plan_create_partitions(self, name: str, count: int) -> CreatePartitions:
        """Validate growing a topic to `count` partitions; return the command to propose. New
        partitions are placed like a new topic's, continuing its round-robin."""
        info = self.state.topics.get(name)
        if info is None:
            raise BrokerError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist"
            )
        if count <= info.partitions:
            raise BrokerError(
                ErrorCode.INVALID_PARTITIONS,
                f"topic {name!r} has {info.partitions} partitions: a new count must be larger, "
                f"not {count} (partitions are never removed)",
            )
        if count > MAX_PARTITIONS:
            raise BrokerError(
                ErrorCode.INVALID_PARTITIONS, f"partitions must be at most {MAX_PARTITIONS}"
            )
        brokers = placeable(self.state)
        rf = len(info.replicas[0])
        if rf > len(brokers):
            raise BrokerError(
                ErrorCode.INVALID_REPLICATION_FACTOR,
                f"replication factor {rf} is impossible with {len(brokers)} registered brokers",
            )
        salt = (sum(name.encode()) + info.partitions) % len(brokers)
        placed = assign_least_loaded(self.state, count - info.partitions, rf, salt)
        return CreatePartitions(
            name=name,
            topic_id=info.topic_id,
            from_count=info.partitions,
            replicas=to_replicas(placed),
        )

    def plan_alter_topic_configs(
        self, name: str, changes: dict[str, str | None]
    ) -> AlterTopicConfigs:
        """Validate setting (a value) or removing (None) topic configs; return the command."""
        info = self.state.topics.get(name)
        if info is None:
            raise BrokerError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist"
            )
        merged = merge_configs(info.configs, changes)
        parse_topic_config(merged, len(info.replicas[0]))
        return AlterTopicConfigs(name=name, topic_id=info.topic_id, changes=changes)

    def plan_create_acls(self, acls: list[AclBinding]) -> CreateAcls:
        """Check that `acls` fit (the count per request, the cluster's bound); the command."""
        _check_acl_count(len(acls), "ACLs")
        new = len({a for a in acls if a not in self.state.acls})
        if len(self.state.acls) + new > MAX_ACLS:
            raise _too_many_acls(len(self.state.acls), new)
        return CreateAcls(acls=tuple(a.to_json() for a in acls))

    def plan_delete_acls(self, filters: list[AclBindingFilter]) -> DeleteAcls:
        _check_acl_count(len(filters), "ACL filters")
        return DeleteAcls(filters=tuple(f.to_json() for f in filters))

    # -- the state machine: one applier per command --------------------------------------------
    def apply_command(self, command: Command) -> Any:
        return self._appliers[type(command)](command)

    def on_applied(self, changed: bool) -> None:
        if changed:
            for listener in self.listeners:
                listener()

    def _register_broker(self, cmd: RegisterBroker) -> None:
        self.state.brokers[cmd.node_id] = BrokerInfo(cmd.node_id, cmd.host, cmd.port)

    def _admit_incarnation(self, cmd: AdmitIncarnation) -> None:
        st = self.state
        st.incarnations[cmd.node_id] = cmd.incarnation
        st.fences[cmd.node_id] = (cmd.incarnation, cmd.min_term, cmd.index)
        st.stale[cmd.node_id] = [
            (t.name, p)
            for t in st.topics.values()
            for p, replicas in enumerate(t.replicas)
            if cmd.node_id in replicas
        ]

    def stale_replicas(self) -> list[tuple[str, int, int]]:
        """(topic, partition, node): replicas whose node came back with a new data directory
        whose partition group counted the old incarnation when the new one was admitted. Each
        partition's leader replaces it by itself (Broker.membership_step); this list is for
        tools and the replica-move machinery (which may clear entries with a command of its
        own)."""
        return sorted(
            (t, p, n)
            for n, parts in self.state.stale.items()
            for t, p in parts
            if t in self.state.topics
        )

    def _create_topic(self, cmd: CreateTopic) -> int:
        st = self.state
        if cmd.name in st.topics:
            raise BrokerError(ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {cmd.name!r} already exists")
        topic = TopicInfo(
            cmd.name, st.next_topic_id, [list(r) for r in cmd.replicas], dict(cmd.configs)
        )
        st.next_topic_id += 1
        st.topics[cmd.name] = topic
        return topic.topic_id

    def _allocate_producer_ids(self, cmd: AllocateProducerIds) -> int:
        first = self.state.next_producer_id
        self.state.next_producer_id += cmd.count
        return first

    def _create_partitions(self, cmd: CreatePartitions) -> int:
        grown = self.state.topics.get(cmd.name)
        if grown is None or grown.topic_id != cmd.topic_id:
            raise BrokerError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {cmd.name!r} does not exist"
            )
        if grown.partitions != cmd.from_count:
            raise BrokerError(
                ErrorCode.INVALID_PARTITIONS,
                f"topic {grown.name!r} changed while its partitions were being added; retry",
            )
        grown.replicas.extend([list(r) for r in cmd.replicas])
        return grown.partitions

    def _alter_topic_configs(self, cmd: AlterTopicConfigs) -> None:
        altered = self.state.topics.get(cmd.name)
        if altered is None or altered.topic_id != cmd.topic_id:
            raise BrokerError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {cmd.name!r} does not exist"
            )
        merged = merge_configs(altered.configs, cmd.changes)
        parse_topic_config(merged, len(altered.replicas[0]))
        altered.configs = merged

    def _change_user(self, cmd: UpsertUser | DeleteUser) -> None:
        apply_user_command(self.state.users, cmd.to_json())

    def _create_acls(self, cmd: CreateAcls) -> int:
        acls = self.state.acls
        bindings = cmd.bindings
        new = len({a for a in bindings if a not in acls})
        if len(acls) + new > MAX_ACLS:  # checked again: racing creates
            raise _too_many_acls(len(acls), new)
        return sum(acls.add(a) for a in bindings)

    def _delete_acls(self, cmd: DeleteAcls) -> list[list[dict[str, str]]]:
        return [[a.to_json() for a in self.state.acls.remove_matching(f)] for f in cmd.acl_filters]

    def _delete_topic(self, cmd: DeleteTopic) -> None:
        info = self.state.topics.pop(cmd.name, None)
        if info is None:
            raise BrokerError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {cmd.name!r} does not exist"
            )
        for p in range(info.partitions):
            self.state.moves.pop(move_key(cmd.name, p), None)
            self.state.next_moves.pop(move_key(cmd.name, p), None)

    # -- replica moves (issue 19) ------------------------------------------------------------
    def _moved_topic(self, name: str, topic_id: int, partition: int) -> TopicInfo:
        info = self.state.topics.get(name)
        if info is None or info.topic_id != topic_id or not 0 <= partition < info.partitions:
            raise BrokerError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                f"partition {shown(name)}-{partition} does not exist",
            )
        return info

    def _move_partition(self, cmd: MovePartition) -> None:
        """Record a move's target (node/moves.py). The same replicas in another order only
        reorder the metadata (a new preferred leader): no Raft change is needed."""
        info = self._moved_topic(cmd.name, cmd.topic_id, cmd.partition)
        key = move_key(cmd.name, cmd.partition)
        if key in self.state.moves:
            raise BrokerError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"{cmd.name}-{cmd.partition} is being moved already",
            )
        unknown = [n for n in cmd.target if n not in self.state.brokers]
        if unknown:
            raise BrokerError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT, f"node(s) {unknown} are not brokers"
            )
        self.state.next_moves.pop(key, None)
        current = info.replicas[cmd.partition]
        if set(cmd.target) == set(current) and not cmd.then:
            info.replicas[cmd.partition] = list(cmd.target)
            return
        self.state.moves[key] = Move(
            topic=cmd.name,
            partition=cmd.partition,
            target=list(cmd.target),
            origin=list(current),
            throttle_bytes_s=cmd.throttle_bytes_s,
            then=list(cmd.then),
        )

    def _partition_membership(self, cmd: PartitionMembership) -> None:
        """Record a partition's membership as its leader applied it; a move whose target it
        is is done."""
        info = self._moved_topic(cmd.name, cmd.topic_id, cmd.partition)
        p = str(cmd.partition)
        key = move_key(cmd.name, cmd.partition)
        move = self.state.moves.get(key)
        recorded = info.conf_index.get(p, 0)
        if cmd.conf_index < recorded or (
            cmd.conf_index == recorded and not (move is not None and at_target(move, cmd))
        ):
            # An older report than the one recorded (a deposed leader's, say). The same one
            # again only matters to a move cancelled before it took a step: it is done.
            return
        target = move.target if move is not None else info.replicas[cmd.partition]
        info.conf_index[p] = cmd.conf_index
        info.replicas[cmd.partition] = ordered_replicas(
            cmd.voters, target, info.replicas[cmd.partition]
        )
        if move is None:
            return
        move.learners = list(cmd.learners)
        if at_target(move, cmd):
            info.replicas[cmd.partition] = list(move.target)
            del self.state.moves[key]
            log.info("move of %s-%d to %s is done", cmd.name, cmd.partition, move.target)
            if move.then:
                # The next leg (a replica replaced: plan_readd) starts with a command of its
                # own (the controller leader proposes it: MoveDriver.reports), so every node
                # applies this one first: the node whose replica was removed drops it.
                self.state.next_moves[key] = Move(
                    topic=cmd.name,
                    partition=cmd.partition,
                    target=list(move.then),
                    origin=list(move.target),
                    throttle_bytes_s=move.throttle_bytes_s,
                )

    def _cancel_move(self, cmd: CancelMove) -> None:
        """Turn a move around (node/moves.py's plan_cancel checked it; checked again here for
        a racing request): its target becomes its origin."""
        self._moved_topic(cmd.name, cmd.topic_id, cmd.partition)
        move = self.state.moves.get(move_key(cmd.name, cmd.partition))
        if move is None or move.cancelled or move.then:
            raise BrokerError(
                ErrorCode.NO_REASSIGNMENT_IN_PROGRESS,
                f"{cmd.name}-{cmd.partition} has no move to cancel",
            )
        log.info(
            "move of %s-%d to %s cancelled: back to %s",
            cmd.name,
            cmd.partition,
            move.target,
            move.origin,
        )
        move.target = list(move.origin)
        move.cancelled = True

    def _recommission_node(self, cmd: RecommissionNode) -> None:
        if cmd.node_id not in self.state.decommissioned:
            raise BrokerError(
                ErrorCode.INVALID_REQUEST, f"node {cmd.node_id} is not decommissioned"
            )
        self.state.decommissioned.discard(cmd.node_id)

    def _decommission_node(self, cmd: DecommissionNode) -> None:
        if cmd.node_id not in self.state.brokers:
            raise BrokerError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT, f"node {cmd.node_id} is not a broker"
            )
        self.state.decommissioned.add(cmd.node_id)

    def hosted_replicas(self, info: TopicInfo, partition: int) -> list[int]:
        """The nodes that host (or are about to host) a replica of the partition: its voters
        and, while it moves, its target and learners."""
        replicas = list(info.replicas[partition])
        move = self.state.moves.get(move_key(info.name, partition))
        if move is not None:
            replicas += [n for n in [*move.learners, *move.target] if n not in replicas]
        return replicas

    def learners_of(self, info: TopicInfo, partition: int) -> list[int]:
        move = self.state.moves.get(move_key(info.name, partition))
        return list(move.learners) if move is not None else []

    def snapshot_state(self) -> bytes:
        return self.state.to_json()

    def restore_state(self, data: bytes) -> None:
        self.state = ControllerState.from_json(data)

    def on_restored(self) -> None:
        for listener in self.listeners:
            listener()

    def on_soft_state(self, soft: SoftState, term: int) -> None:
        # Pending proposals are not failed when this node stops leading (node/replicated.py).
        if soft.role == Role.LEADER:
            log.info("node %d is the controller leader (term %d)", self.node_id, term)
