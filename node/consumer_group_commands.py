"""The consumer-group coordinator's commands: what its Raft log (`__groups`) records, as values.

Members' joins and leaves (so a new coordinator knows whom to wait for), committed offsets, and
the deletion of an empty consumer group. GroupCoordinator.apply_command's table applies them; the
JSON keys are the ones the first coordinator wrote (`group`, `member`, `members`, `ts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from node.command import (
    Command,
    CommandSet,
    check_int,
    check_str,
    check_str_list,
    invalid,
    set_field,
    wire,
)

CONSUMER_GROUP_COMMANDS = CommandSet("groups")

OffsetCommit = tuple[str, int, int, str]
"""(topic, partition, offset, metadata)."""

_ANY_INT = -(1 << 63)


@CONSUMER_GROUP_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class JoinGroup(Command):
    """A member joined consumer group `group_id`; applied, it returns the logged generation."""

    op: ClassVar[str] = "join"
    group_id: str = field(metadata=wire("group"))
    member_id: str = field(metadata=wire("member"))
    session_timeout_ms: int
    client_id: str = ""
    topics: tuple[str, ...]

    def __post_init__(self) -> None:
        check_str(self.op, "group", self.group_id)
        check_str(self.op, "member", self.member_id)
        check_int(self.op, "session_timeout_ms", self.session_timeout_ms)
        check_str(self.op, "client_id", self.client_id, empty=True)
        set_field(self, "topics", check_str_list(self.op, "topics", self.topics))


@CONSUMER_GROUP_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class LeaveGroup(Command):
    """Members left consumer group `group_id` (or their sessions ended); applied, it returns
    the logged generation."""

    op: ClassVar[str] = "leave"
    group_id: str = field(metadata=wire("group"))
    member_ids: tuple[str, ...] = field(metadata=wire("members"))

    def __post_init__(self) -> None:
        check_str(self.op, "group", self.group_id)
        set_field(self, "member_ids", check_str_list(self.op, "members", self.member_ids))


@CONSUMER_GROUP_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class CommitOffsets(Command):
    """Committed offsets of consumer group `group_id`, stamped with the proposer's wall clock."""

    op: ClassVar[str] = "commit"
    group_id: str = field(metadata=wire("group"))
    offsets: tuple[OffsetCommit, ...]
    timestamp_ms: int = field(default=0, metadata=wire("ts"))

    def __post_init__(self) -> None:
        check_str(self.op, "group", self.group_id)
        if not isinstance(self.offsets, list | tuple):
            raise invalid(self.op, f"offsets must be a list, not {self.offsets!r}")
        out: list[OffsetCommit] = []
        for o in self.offsets:
            if not isinstance(o, list | tuple) or len(o) != 4:
                raise invalid(self.op, f"an offset is [topic, partition, offset, metadata]: {o!r}")
            t, p, offset, metadata = o
            out.append(
                (
                    check_str(self.op, "topic", t),
                    check_int(self.op, "partition", p),
                    check_int(self.op, "offset", offset, _ANY_INT),
                    check_str(self.op, "metadata", metadata, empty=True),
                )
            )
        set_field(self, "offsets", tuple(out))
        check_int(self.op, "ts", self.timestamp_ms, _ANY_INT)


@CONSUMER_GROUP_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class DeleteGroup(Command):
    """DeleteGroups (Kafka listener): an empty consumer group's committed offsets go."""

    op: ClassVar[str] = "delete"
    group_id: str = field(metadata=wire("group"))

    def __post_init__(self) -> None:
        check_str(self.op, "group", self.group_id)
