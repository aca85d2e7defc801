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
    AllocateProducerIds,
    AlterTopicConfigs,
    CreateAcls,
    CreatePartitions,
    CreateTopic,
    DeleteAcls,
    DeleteTopic,
    DeleteUser,
    RegisterBroker,
    Replicas,
    UpsertUser,
)
from node.driver import RaftDriver
from node.errors import BrokerError, ErrorCode
from node.limits import MAX_ACLS, MAX_ACLS_PER_REQUEST, shown
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

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "brokers": [asdict(b) for b in self.brokers.values()],
                "topics": [asdict(t) for t in self.topics.values()],
                "next_topic_id": self.next_topic_id,
                "next_producer_id": self.next_producer_id,
                "users": users_to_json(self.users),
                "acls": self.acls.to_json(),
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
        )
        for b in raw.get("brokers", []):
            st.brokers[int(b["node_id"])] = BrokerInfo(int(b["node_id"]), b["host"], int(b["port"]))
        for t in raw.get("topics", []):
            st.topics[t["name"]] = TopicInfo(
                t["name"], int(t["topic_id"]), t["replicas"], t["configs"]
            )
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


def assign_replicas(broker_ids: list[int], partitions: int, rf: int, salt: int) -> list[list[int]]:
    """Round-robin placement: partition p's replicas start at broker (salt + p) and continue
    around the ring, so preferred leaders (first replicas) are spread evenly."""
    ids = sorted(broker_ids)
    n = len(ids)
    return [[ids[(salt + p + i) % n] for i in range(rf)] for p in range(partitions)]


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
            CreateTopic: self._create_topic,
            DeleteTopic: self._delete_topic,
            AllocateProducerIds: self._allocate_producer_ids,
            CreatePartitions: self._create_partitions,
            AlterTopicConfigs: self._alter_topic_configs,
            UpsertUser: self._change_user,
            DeleteUser: self._change_user,
            CreateAcls: self._create_acls,
            DeleteAcls: self._delete_acls,
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
        brokers = sorted(self.state.brokers)
        if replication_factor < 1 or replication_factor > len(brokers):
            raise BrokerError(
                ErrorCode.INVALID_REPLICATION_FACTOR,
                f"replication factor {replication_factor} is impossible with "
                f"{len(brokers)} registered brokers {brokers}",
            )
        parse_topic_config(configs, replication_factor)
        salt = sum(name.encode()) % len(brokers)
        return CreateTopic(
            name=name,
            replicas=to_replicas(assign_replicas(brokers, partitions, replication_factor, salt)),
            configs=dict(configs),
        )

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
        brokers = sorted(self.state.brokers)
        rf = len(info.replicas[0])
        if rf > len(brokers):
            raise BrokerError(
                ErrorCode.INVALID_REPLICATION_FACTOR,
                f"replication factor {rf} is impossible with {len(brokers)} registered brokers",
            )
        salt = sum(name.encode()) % len(brokers)
        placed = assign_replicas(brokers, count, rf, salt)[info.partitions :]
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
        if self.state.topics.pop(cmd.name, None) is None:
            raise BrokerError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {cmd.name!r} does not exist"
            )

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
