"""The controller's commands: every change to the cluster metadata, as a value.

The proposer builds one after checking it against the metadata it has (Controller.plan_*); the
controller applies it, on every node, in log order (Controller.apply_command's table). A command
checks only its own shape here; whether it still fits the metadata is the apply's question (two
racing creates of one name: the second is refused there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from node.acl import AclBinding, AclBindingFilter
from node.command import (
    Command,
    CommandSet,
    check_int,
    check_str,
    check_str_map,
    invalid,
    set_field,
    wire,
)
from node.errors import BrokerError
from node.limits import MAX_ACLS_PER_REQUEST

CONTROLLER_COMMANDS = CommandSet("controller")

MAX_PRODUCER_IDS = 1000
"""The most producer ids one command may hand out."""

Replicas = tuple[tuple[int, ...], ...]
"""replicas[p] lists partition p's replicas (node ids); the first is the preferred leader."""


def _replicas(op: str, value: object) -> Replicas:
    if not isinstance(value, list | tuple) or not value:
        raise invalid(op, f"replicas must be a non-empty list of lists, not {value!r}")
    out: list[tuple[int, ...]] = []
    for r in value:
        if not isinstance(r, list | tuple) or not r:
            raise invalid(op, f"each partition needs a non-empty list of replicas, not {r!r}")
        out.append(tuple(check_int(op, "a replica", n) for n in r))
    return tuple(out)


@CONTROLLER_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class RegisterBroker(Command):
    """A node's advertised address, for the metadata clients read."""

    op: ClassVar[str] = "register_broker"
    node_id: int
    host: str
    port: int

    def __post_init__(self) -> None:
        check_int(self.op, "node_id", self.node_id)
        check_str(self.op, "host", self.host)
        check_int(self.op, "port", self.port, 0, 65535)


# -- membership (issue 19: node/membership.py) ------------------------------------------------


@CONTROLLER_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class AdmitIncarnation(Command):
    """The controller group replaced node_id's old incarnation: the new one (a wiped disk)
    was added back as a learner and may speak from min_term, vote once its commit index
    reaches index (raft.types.Fence). Applied, it records the incarnation and marks the
    partitions the old incarnation was a replica of as stale."""

    op: ClassVar[str] = "admit_incarnation"
    node_id: int
    incarnation: int
    min_term: int
    index: int

    def __post_init__(self) -> None:
        check_int(self.op, "node_id", self.node_id, 1)
        check_int(self.op, "incarnation", self.incarnation, 1)
        check_int(self.op, "min_term", self.min_term, 1)
        check_int(self.op, "index", self.index, 1)


@CONTROLLER_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class CreateTopic(Command):
    """A new topic with its partitions placed; applied, it returns the topic id."""

    op: ClassVar[str] = "create_topic"
    name: str
    replicas: Replicas
    configs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_str(self.op, "name", self.name)
        set_field(self, "replicas", _replicas(self.op, self.replicas))
        set_field(self, "configs", check_str_map(self.op, "configs", self.configs))


@CONTROLLER_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class DeleteTopic(Command):
    op: ClassVar[str] = "delete_topic"
    name: str

    def __post_init__(self) -> None:
        check_str(self.op, "name", self.name)


@CONTROLLER_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class AllocateProducerIds(Command):
    """Hand out `count` idempotent producer ids; applied, it returns the first."""

    op: ClassVar[str] = "allocate_producer_ids"
    count: int = 1

    def __post_init__(self) -> None:
        if (
            not isinstance(self.count, int)
            or isinstance(self.count, bool)
            or not 1 <= self.count <= MAX_PRODUCER_IDS
        ):
            raise invalid(self.op, f"cannot allocate {self.count!r} producer ids")


@CONTROLLER_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class CreatePartitions(Command):
    """Grow topic `name` (as it was when planned: `topic_id`, `from_count` partitions) by the
    partitions in `replicas`; applied, it returns the new count."""

    op: ClassVar[str] = "create_partitions"
    name: str
    topic_id: int
    from_count: int = field(metadata=wire("from"))
    replicas: Replicas

    def __post_init__(self) -> None:
        check_str(self.op, "name", self.name)
        check_int(self.op, "topic_id", self.topic_id)
        check_int(self.op, "from", self.from_count)
        set_field(self, "replicas", _replicas(self.op, self.replicas))


@CONTROLLER_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class AlterTopicConfigs(Command):
    """Set (a value) or remove (None) configs of topic `name` (the one with `topic_id`)."""

    op: ClassVar[str] = "alter_topic_configs"
    name: str
    topic_id: int
    changes: dict[str, str | None]

    def __post_init__(self) -> None:
        check_str(self.op, "name", self.name)
        check_int(self.op, "topic_id", self.topic_id)
        set_field(self, "changes", check_str_map(self.op, "changes", self.changes, nulls=True))


@CONTROLLER_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class UpsertUser(Command):
    """A user's salted SCRAM credential for one mechanism (node/scram.py); never a password."""

    op: ClassVar[str] = "upsert_user"
    name: str
    mechanism: str
    salt: str
    """base64"""
    iterations: int
    stored_key: str
    """base64"""
    server_key: str
    """base64"""

    def __post_init__(self) -> None:
        for name in ("name", "mechanism", "salt", "stored_key", "server_key"):
            check_str(self.op, name, getattr(self, name))
        check_int(self.op, "iterations", self.iterations, 1)


@CONTROLLER_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class DeleteUser(Command):
    """Remove a user's credential for `mechanism`, or every credential (None)."""

    op: ClassVar[str] = "delete_user"
    name: str
    mechanism: str | None = None

    def __post_init__(self) -> None:
        check_str(self.op, "name", self.name)
        if self.mechanism is not None:
            check_str(self.op, "mechanism", self.mechanism)


def _acls(op: str, value: object, what: str, parse: Callable[[object], Any]) -> tuple[Any, ...]:
    """A bounded, non-empty list of ACLs or filters, each normalised through its value type
    (node/acl.py), so the log holds only what those accept."""
    if not isinstance(value, list | tuple) or not value:
        raise invalid(op, f"{what} must be a non-empty list")
    if len(value) > MAX_ACLS_PER_REQUEST:
        raise invalid(op, f"{len(value)} {what} in one command; at most {MAX_ACLS_PER_REQUEST}")
    try:
        return tuple(parse(v).to_json() for v in value)
    except BrokerError as e:
        raise invalid(op, e.message) from None


@CONTROLLER_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class CreateAcls(Command):
    """Add ACLs (node/acl.py's JSON form); one already there is kept once. Applied, it returns
    how many were new."""

    op: ClassVar[str] = "create_acls"
    acls: tuple[dict[str, str], ...]

    def __post_init__(self) -> None:
        set_field(self, "acls", _acls(self.op, self.acls, "acls", AclBinding.from_json))

    @property
    def bindings(self) -> tuple[AclBinding, ...]:
        return tuple(AclBinding.from_json(a) for a in self.acls)


@CONTROLLER_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class DeleteAcls(Command):
    """Remove the ACLs each filter matches (Kafka's AclBindingFilter). Applied, it returns, per
    filter, the ACLs it removed (an ACL matched by two filters is removed by the first)."""

    op: ClassVar[str] = "delete_acls"
    filters: tuple[dict[str, str | None], ...]

    def __post_init__(self) -> None:
        set_field(
            self, "filters", _acls(self.op, self.filters, "filters", AclBindingFilter.from_json)
        )

    @property
    def acl_filters(self) -> tuple[AclBindingFilter, ...]:
        return tuple(AclBindingFilter.from_json(f) for f in self.filters)


# -- replica moves (issue 19) ------------------------------------------------------------------
def _node_ids(op: str, name: str, value: object, *, empty: bool = False) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or (not value and not empty):
        raise invalid(op, f"{name} must be a {'' if empty else 'non-empty '}list, not {value!r}")
    ids = tuple(check_int(op, name, n, 1) for n in value)
    if len(set(ids)) != len(ids):
        raise invalid(op, f"{name} {list(ids)} names a node twice")
    return ids


@CONTROLLER_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class MovePartition(Command):
    """Start moving partition `partition` of topic `name` (`topic_id`) onto `target` (the
    first is its preferred leader). The partition's leader carries it out, one Raft change at
    a time (node/moves.py), feeding each new replica at most `throttle_bytes_s` (0: no limit)."""

    op: ClassVar[str] = "move_partition"
    name: str
    topic_id: int
    partition: int
    target: tuple[int, ...]
    throttle_bytes_s: int = 0
    then: tuple[int, ...] = ()
    """Once at `target`, move on to these replicas (empty: stop there). A node's replica is
    replaced by a fresh one this way: to the replicas without it, then back with it
    (node/moves.py's plan_readd)."""

    def __post_init__(self) -> None:
        check_str(self.op, "name", self.name)
        check_int(self.op, "topic_id", self.topic_id)
        check_int(self.op, "partition", self.partition)
        set_field(self, "target", _node_ids(self.op, "target", self.target))
        check_int(self.op, "throttle_bytes_s", self.throttle_bytes_s)
        set_field(self, "then", _node_ids(self.op, "then", self.then, empty=True))


@CONTROLLER_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class CancelMove(Command):
    """Cancel the move of partition `partition` of topic `name` (`topic_id`): its target
    becomes the replicas it had when the move began, and its leader drives it back there one
    Raft change at a time, as any move (node/moves.py): a learner it added is removed, a voter
    it removed is added back (a fresh replica, refilled from the leader), a voter it added is
    removed once the old ones vote again. Kafka's AlterPartitionReassignments with null
    replicas; `rpk cluster partitions move-cancel`."""

    op: ClassVar[str] = "cancel_move"
    name: str
    topic_id: int
    partition: int

    def __post_init__(self) -> None:
        check_str(self.op, "name", self.name)
        check_int(self.op, "topic_id", self.topic_id)
        check_int(self.op, "partition", self.partition)


@CONTROLLER_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class PartitionMembership(Command):
    """A partition's Raft membership as its leader applied it, as of the group's index
    `conf_index` (the controller leader records what the partition leaders gossip, so the
    metadata follows every step of a move; an older report than the one recorded is ignored)."""

    op: ClassVar[str] = "partition_membership"
    name: str
    topic_id: int
    partition: int
    voters: tuple[int, ...]
    learners: tuple[int, ...] = ()
    conf_index: int

    def __post_init__(self) -> None:
        check_str(self.op, "name", self.name)
        check_int(self.op, "topic_id", self.topic_id)
        check_int(self.op, "partition", self.partition)
        set_field(self, "voters", _node_ids(self.op, "voters", self.voters))
        set_field(self, "learners", _node_ids(self.op, "learners", self.learners, empty=True))
        check_int(self.op, "conf_index", self.conf_index)


@CONTROLLER_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class DecommissionNode(Command):
    """Take node `node_id` out of placement: no new replica goes there (the moves that empty
    it are MovePartition commands of their own)."""

    op: ClassVar[str] = "decommission_node"
    node_id: int

    def __post_init__(self) -> None:
        check_int(self.op, "node_id", self.node_id, 1)


@CONTROLLER_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class RecommissionNode(Command):
    """Put node `node_id` back into placement (`liferaft node decommission N --cancel`): it may
    get new replicas again. The moves that were emptying it are cancelled by CancelMove
    commands of their own."""

    op: ClassVar[str] = "recommission_node"
    node_id: int

    def __post_init__(self) -> None:
        check_int(self.op, "node_id", self.node_id, 1)
