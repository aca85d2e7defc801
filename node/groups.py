"""Consumer groups: the coordinator, and the replicated state it keeps (docs/consumer-groups.md).

Theory of operation. One Raft group, `__groups`, runs over every node (like the controller). Its
log holds the commands that must survive the coordinator: committed offsets, and which members
joined and left. Every node applies them, so every node has every group's committed offsets;
snapshots keep the log short. The group's Raft leader is the coordinator of every consumer group.

Members live in the coordinator's memory only, kept alive by heartbeats (a session timeout). A
heartbeat carries what the member holds; the answer says what it may hold. The coordinator keeps
a target assignment per group (node/assignor.py: balanced and sticky) and moves partitions
incrementally: a member is given a partition of its target only once no other member holds it,
i.e. once the previous holder reported it gave it up (after committing its offset) or its session
ended. So at no moment may two live members commit a partition, and a rebalance stops only the
partitions that move (cooperative rebalancing; KIP-848 is the model).

Fencing. A member commits with its member id and the generation of its latest answer. The commit
is accepted only from a live member, for partitions it holds, with a generation no older than the
one in which it was given each of them; a member whose session ended gets UNKNOWN_MEMBER_ID and
must rejoin with nothing.

Coordinator failover. A join is committed to the log before the member gets anything, so a new
coordinator knows every member that may hold partitions (leaves and expiries are logged too, but
lazily: a stale entry only makes the new coordinator wait). It starts each such group in the
Recovering state: those members keep their partitions if they come back within their session
timeout with their member id (they report what they hold), and no partition is handed out until
all of them are back or timed out. Members find the new coordinator by NOT_COORDINATOR.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from node.assignor import TP, assign
from node.command import Command
from node.consumer_group_commands import (
    CONSUMER_GROUP_COMMANDS,
    CommitOffsets,
    DeleteGroup,
    JoinGroup,
    LeaveGroup,
)
from node.driver import RaftDriver
from node.errors import BrokerError, ErrorCode
from node.limits import (
    MAX_GROUP_ID_CHARS,
    MAX_OFFSET_METADATA_BYTES,
    MAX_SESSION_TIMEOUT_MS,
    MIN_SESSION_TIMEOUT_MS,
    shown,
)
from node.replicated import ReplicatedStateMachine
from node.tasks import supervise
from raft import Role, SoftState

log = logging.getLogger("liferaft.groups")

GROUPS_GROUP = "__groups"
MAX_METADATA_BYTES = MAX_OFFSET_METADATA_BYTES
MAX_GROUP_ID = MAX_GROUP_ID_CHARS
MAX_MEMBERS = 1000
RECONCILE_HEARTBEAT_MS = 100
"""How soon a member waiting for partitions (or holding ones to give up) should heartbeat."""

EMPTY, STABLE, RECONCILING, RECOVERING = "Empty", "Stable", "Reconciling", "Recovering"


def validate_group_id(group_id: str) -> None:
    if not group_id or len(group_id) > MAX_GROUP_ID or not group_id.isprintable():
        raise BrokerError(
            ErrorCode.INVALID_GROUP_ID,
            f"invalid group id {shown(group_id)}: use 1-{MAX_GROUP_ID} printable characters",
        )


# -- replicated state --------------------------------------------------------------------------
@dataclass(slots=True)
class OffsetEntry:
    offset: int
    metadata: str
    timestamp_ms: int


@dataclass(slots=True)
class MemberRecord:
    """A member as the log knows it: enough for a new coordinator to wait for it."""

    session_timeout_ms: int
    client_id: str
    topics: list[str]


@dataclass(slots=True)
class GroupRecord:
    generation: int = 0
    members: dict[str, MemberRecord] = field(default_factory=dict)
    offsets: dict[TP, OffsetEntry] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not self.members and not self.offsets


@dataclass(slots=True)
class GroupsState:
    groups: dict[str, GroupRecord] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                gid: {
                    "generation": g.generation,
                    "members": {
                        mid: [m.session_timeout_ms, m.client_id, m.topics]
                        for mid, m in g.members.items()
                    },
                    "offsets": [
                        [t, p, o.offset, o.metadata, o.timestamp_ms]
                        for (t, p), o in g.offsets.items()
                    ],
                }
                for gid, g in self.groups.items()
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> GroupsState:
        st = cls()
        for gid, raw in json.loads(data or b"{}").items():
            g = GroupRecord(generation=int(raw["generation"]))
            for mid, (timeout, client_id, topics) in raw["members"].items():
                g.members[mid] = MemberRecord(int(timeout), str(client_id), list(topics))
            for t, p, offset, metadata, ts in raw["offsets"]:
                g.offsets[(t, int(p))] = OffsetEntry(int(offset), str(metadata), int(ts))
            st.groups[gid] = g
        return st


# -- the coordinator's memory ------------------------------------------------------------------
@dataclass(slots=True)
class LiveMember:
    member_id: str
    client_id: str
    topics: frozenset[str]
    session_timeout_ms: int
    deadline: float
    """Monotonic time after which the member is gone unless it heartbeats."""
    owned: set[TP] = field(default_factory=set)
    """What it said it holds in its latest heartbeat."""
    granted: set[TP] = field(default_factory=set)
    """What the latest answer allowed it to hold."""
    since: dict[TP, int] = field(default_factory=dict)
    """Generation in which it was given each partition it holds (commits must not be older)."""
    target: set[TP] = field(default_factory=set)
    recovering: bool = False
    """Inherited from the log by a new coordinator and not heard from yet: it may hold anything."""

    def holds(self) -> set[TP]:
        return self.owned | self.granted


@dataclass(slots=True)
class LiveGroup:
    group_id: str
    generation: int
    members: dict[str, LiveMember] = field(default_factory=dict)
    target_key: object = None
    """What the current targets were computed from; recomputed when it changes."""

    @property
    def recovering(self) -> bool:
        return any(m.recovering for m in self.members.values())

    def state(self) -> str:
        if not self.members:
            return EMPTY
        if self.recovering:
            return RECOVERING
        if all(m.owned == m.target and m.granted == m.target for m in self.members.values()):
            return STABLE
        return RECONCILING


@dataclass(slots=True, frozen=True)
class HeartbeatAnswer:
    member_id: str
    generation: int
    assignment: frozenset[TP]
    heartbeat_interval_ms: int
    pending: int


def _interval(session_timeout_ms: int) -> int:
    return max(50, min(1000, session_timeout_ms // 4))


class GroupCoordinator(ReplicatedStateMachine):
    """The `__groups` Raft group's state machine, and (on its leader) the coordinator of every
    consumer group."""

    snapshot_every = 2000
    commands = CONSUMER_GROUP_COMMANDS

    def __init__(
        self,
        node_id: int,
        voters: list[int],
        driver: RaftDriver,
        partition_count: Callable[[str], int | None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.partition_count = partition_count
        self.clock = clock
        self.state = GroupsState()
        self.live: dict[str, LiveGroup] = {}
        self._leading = False
        # Whether a group has live members of another protocol (Kafka's classic groups, on the
        # Kafka listener): a group is one kind or the other.
        self.foreign_members: Callable[[str], bool] = lambda _group_id: False
        self._appliers: dict[type[Command], Callable[[Any], Any]] = {
            JoinGroup: self._join,
            LeaveGroup: self._leave,
            CommitOffsets: self._commit,
            DeleteGroup: self._delete,
        }
        assert set(self._appliers) == set(CONSUMER_GROUP_COMMANDS), "a command without an applier"
        super().__init__(node_id, driver, GROUPS_GROUP, voters)

    # -- views ---------------------------------------------------------------------------------
    @property
    def is_coordinator(self) -> bool:
        return self.raft_group.node.role == Role.LEADER and self._leading

    def check_coordinator(self, address_of: Callable[[int], str]) -> None:
        if self.is_coordinator:
            return
        if self.raft_group.node.role == Role.LEADER:
            raise BrokerError(
                ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
                f"node {self.node_id} was just elected group coordinator and is still applying "
                "the log; retry shortly",
            )
        leader = self.leader if self.leader != self.node_id else 0
        raise BrokerError(
            ErrorCode.NOT_COORDINATOR if leader else ErrorCode.COORDINATOR_NOT_AVAILABLE,
            f"node {self.node_id} is not the group coordinator"
            + (f"; node {leader} is" if leader else "; an election is under way, retry shortly"),
            leader_id=leader,
            leader_address=address_of(leader) if leader else "",
        )

    def group_ids(self) -> list[str]:
        ids = {gid for gid, g in self.state.groups.items() if not g.is_empty()}
        ids.update(gid for gid, g in self.live.items() if g.members)
        return sorted(ids)

    def exists(self, group_id: str) -> bool:
        rec = self.state.groups.get(group_id)
        live = self.live.get(group_id)
        return (rec is not None and not rec.is_empty()) or (live is not None and bool(live.members))

    def live_group(self, group_id: str) -> LiveGroup:
        g = self.live.get(group_id)
        if g is None:
            rec = self.state.groups.get(group_id)
            g = self.live[group_id] = LiveGroup(group_id, rec.generation if rec else 0)
        return g

    def committed(self, group_id: str) -> dict[TP, OffsetEntry]:
        rec = self.state.groups.get(group_id)
        return dict(rec.offsets) if rec is not None else {}

    # -- proposing -----------------------------------------------------------------------------
    def not_leader(self) -> BrokerError:
        return BrokerError(
            ErrorCode.NOT_COORDINATOR,
            f"node {self.node_id} is no longer the group coordinator; retry",
            leader_id=self.leader if self.leader != self.node_id else 0,
        )

    def superseded(self) -> BrokerError:
        return BrokerError(ErrorCode.NOT_COORDINATOR, "the coordinator changed; retry")

    def _propose_later(self, command: Command) -> None:
        """Log a command without waiting (leaves and expiries: losing one is safe)."""
        supervise(self.replicate_and_wait(command), f"groups-{command.op}", expected=(BrokerError,))

    # -- heartbeats ----------------------------------------------------------------------------
    async def heartbeat(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        client_id: str,
        topics: Iterable[str],
        owned: set[TP],
        session_timeout_ms: int,
    ) -> HeartbeatAnswer:
        validate_group_id(group_id)
        if not MIN_SESSION_TIMEOUT_MS <= session_timeout_ms <= MAX_SESSION_TIMEOUT_MS:
            raise BrokerError(
                ErrorCode.INVALID_SESSION_TIMEOUT,
                f"session timeout {session_timeout_ms} ms is outside "
                f"{MIN_SESSION_TIMEOUT_MS}..{MAX_SESSION_TIMEOUT_MS} ms",
            )
        subscription = frozenset(topics)
        if not subscription:
            raise BrokerError(
                ErrorCode.INVALID_REQUEST, "a group member must subscribe to at least one topic"
            )
        self.expire_members()
        group = self.live_group(group_id)
        if not member_id:
            if self.foreign_members(group_id):
                raise BrokerError(
                    ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
                    f"group {group_id!r} has members using Kafka's consumer protocol: "
                    "a liferaft consumer cannot join it (use another group id)",
                )
            if len(group.members) >= MAX_MEMBERS:
                raise BrokerError(
                    ErrorCode.GROUP_MAX_SIZE_REACHED,
                    f"group {group_id!r} has {MAX_MEMBERS} members, the most it may have",
                )
            member_id = f"{client_id or 'member'}-{uuid.uuid4().hex[:12]}"
            # Logged before the member may hold anything, so a new coordinator waits for it.
            persisted = await self.replicate_and_wait(
                JoinGroup(
                    group_id=group_id,
                    member_id=member_id,
                    session_timeout_ms=session_timeout_ms,
                    client_id=client_id,
                    topics=tuple(sorted(subscription)),
                )
            )
            self.check_coordinator(lambda _n: "")
            group = self.live_group(group_id)
            group.generation = max(group.generation + 1, int(persisted))
            member = LiveMember(
                member_id,
                client_id,
                subscription,
                session_timeout_ms,
                self.clock() + session_timeout_ms / 1000,
            )
            group.members[member_id] = member
            log.info(
                "group %s: member %s joined (generation %d)", group_id, member_id, group.generation
            )
        else:
            found = group.members.get(member_id)
            if found is None:
                raise BrokerError(
                    ErrorCode.UNKNOWN_MEMBER_ID,
                    f"group {group_id!r} has no member {member_id!r} (its session ended, or the "
                    "coordinator moved and did not know it): rejoin, holding nothing",
                )
            member = found
            member.deadline = self.clock() + session_timeout_ms / 1000
            member.session_timeout_ms = session_timeout_ms
            member.client_id = client_id or member.client_id
            if member.recovering:
                # Back after a coordinator change: keep what it says it holds.
                member.recovering = False
                member.owned = set(owned)
                member.granted = set(owned)
                member.since = dict.fromkeys(owned, generation)
                group.generation = max(group.generation, generation)
                log.info(
                    "group %s: member %s is back with %d partitions",
                    group_id,
                    member_id,
                    len(owned),
                )
            else:
                # It holds at most what it was allowed; anything else it reports is not its own.
                member.owned = set(owned) & member.holds()
                for tp in list(member.since):
                    if tp not in member.holds():
                        del member.since[tp]
            if member.topics != subscription:
                member.topics = subscription
                group.generation += 1
        return self._answer(group, member)

    def _answer(self, group: LiveGroup, member: LiveMember) -> HeartbeatAnswer:
        self._update_targets(group)
        held_elsewhere: set[TP] = set()
        for other in group.members.values():
            if other is not member:
                held_elsewhere |= other.holds()
        grant = member.owned & member.target
        if not group.recovering:
            grant |= member.target - held_elsewhere
        member.granted = set(grant)
        for tp in grant:
            member.since.setdefault(tp, group.generation)
        pending = len(member.target - grant)
        interval = _interval(member.session_timeout_ms)
        if pending or member.owned - grant:
            interval = min(interval, RECONCILE_HEARTBEAT_MS)
        return HeartbeatAnswer(
            member.member_id, group.generation, frozenset(grant), interval, pending
        )

    def _update_targets(self, group: LiveGroup) -> None:
        topics = sorted({t for m in group.members.values() for t in m.topics})
        counts = {t: c for t in topics if (c := self.partition_count(t))}
        key = (
            tuple(
                sorted(
                    (m.member_id, m.recovering, tuple(sorted(m.topics)))
                    for m in group.members.values()
                )
            ),
            tuple(sorted(counts.items())),
        )
        if key == group.target_key:
            return
        members = group.members.values()
        targets = assign(
            {m.member_id: m.topics for m in members},
            counts,
            previous={m.member_id: m.target for m in members},
            held={m.member_id: m.holds() for m in members},
        )
        changed = False
        for m in group.members.values():
            new = targets.get(m.member_id, set())
            if new != m.target:
                m.target = new
                changed = True
        if changed:
            group.generation += 1
        group.target_key = key

    def leave(self, group_id: str, member_id: str) -> None:
        group = self.live.get(group_id)
        if group is None or group.members.pop(member_id, None) is None:
            raise BrokerError(
                ErrorCode.UNKNOWN_MEMBER_ID, f"group {group_id!r} has no member {member_id!r}"
            )
        group.generation += 1
        log.info("group %s: member %s left (generation %d)", group_id, member_id, group.generation)
        self._propose_later(LeaveGroup(group_id=group_id, member_ids=(member_id,)))

    def expire_members(self) -> None:
        """Remove members whose session ended; their partitions become free."""
        if not self.is_coordinator:
            return
        now = self.clock()
        for group in self.live.values():
            gone = [m.member_id for m in group.members.values() if m.deadline < now]
            if not gone:
                continue
            for mid in gone:
                del group.members[mid]
            group.generation += 1
            log.info(
                "group %s: session ended for %s (generation %d)",
                group.group_id,
                ", ".join(gone),
                group.generation,
            )
            self._propose_later(LeaveGroup(group_id=group.group_id, member_ids=tuple(gone)))

    # -- commits -------------------------------------------------------------------------------
    def check_commit(self, group_id: str, member_id: str, generation: int, tps: set[TP]) -> None:
        """Fencing: may this (member, generation) commit these partitions now?"""
        validate_group_id(group_id)
        self.expire_members()
        group = self.live.get(group_id)
        live_members = group.members if group is not None else {}
        if not member_id:
            if live_members:
                raise BrokerError(
                    ErrorCode.NON_EMPTY_GROUP,
                    f"group {group_id!r} has {len(live_members)} live members: only they may "
                    "commit its offsets (stop them first)",
                )
            return
        assert group is not None or not live_members
        member = live_members.get(member_id)
        if member is None or group is None:
            raise BrokerError(
                ErrorCode.UNKNOWN_MEMBER_ID,
                f"group {group_id!r} has no member {member_id!r}: its session ended (its "
                "partitions may have moved); rejoin",
            )
        if generation > group.generation:
            raise BrokerError(
                ErrorCode.ILLEGAL_GENERATION,
                f"generation {generation} is newer than group {group_id!r}'s {group.generation}",
            )
        for tp in sorted(tps):
            if tp not in member.holds():
                raise BrokerError(
                    ErrorCode.ILLEGAL_GENERATION,
                    f"member {member_id!r} does not hold {tp[0]}-{tp[1]} in generation "
                    f"{group.generation} of group {group_id!r}: it was moved to another member",
                )
            since = member.since.get(tp, 0)
            if generation < since:
                raise BrokerError(
                    ErrorCode.ILLEGAL_GENERATION,
                    f"commit for {tp[0]}-{tp[1]} carries generation {generation}, older than "
                    f"{since}, when member {member_id!r} was last given it",
                )

    async def commit(self, group_id: str, offsets: list[tuple[str, int, int, str]]) -> None:
        for t, p, _offset, metadata in offsets:
            if len(metadata.encode()) > MAX_METADATA_BYTES:
                raise BrokerError(
                    ErrorCode.OFFSET_METADATA_TOO_LARGE,
                    f"metadata for {t}-{p} is {len(metadata.encode())} bytes; the limit is "
                    f"{MAX_METADATA_BYTES}",
                )
        await self.replicate_and_wait(
            CommitOffsets(
                group_id=group_id,
                offsets=tuple((t, p, o, m) for t, p, o, m in offsets),
                timestamp_ms=int(time.time() * 1000),
            )
        )

    async def delete(self, group_id: str) -> None:
        """Forget an empty consumer group's committed offsets (DeleteGroups)."""
        await self.replicate_and_wait(DeleteGroup(group_id=group_id))

    # -- the state machine: one applier per command --------------------------------------------
    def apply_command(self, command: Command) -> Any:
        return self._appliers[type(command)](command)

    def _record(self, group_id: str) -> GroupRecord:
        rec = self.state.groups.get(group_id)
        if rec is None:
            rec = self.state.groups[group_id] = GroupRecord()
        return rec

    def _join(self, cmd: JoinGroup) -> int:
        rec = self._record(cmd.group_id)
        rec.generation += 1
        rec.members[cmd.member_id] = MemberRecord(
            cmd.session_timeout_ms, cmd.client_id, list(cmd.topics)
        )
        return rec.generation

    def _leave(self, cmd: LeaveGroup) -> int:
        rec = self._record(cmd.group_id)
        for mid in cmd.member_ids:
            rec.members.pop(mid, None)
        rec.generation += 1
        return rec.generation

    def _commit(self, cmd: CommitOffsets) -> None:
        rec = self._record(cmd.group_id)
        for t, p, offset, metadata in cmd.offsets:
            rec.offsets[(t, p)] = OffsetEntry(offset, metadata, cmd.timestamp_ms)

    def _delete(self, cmd: DeleteGroup) -> None:
        self.state.groups.pop(cmd.group_id, None)

    def snapshot_state(self) -> bytes:
        return self.state.to_json()

    def restore_state(self, data: bytes) -> None:
        self.state = GroupsState.from_json(data)

    def on_soft_state(self, soft: SoftState, term: int) -> None:
        leading = soft.role == Role.LEADER
        if leading and not self._leading:
            log.info("node %d is the group coordinator (term %d)", self.node_id, term)
        if not leading:
            # Pending proposals are not failed here (node/replicated.py).
            self.live.clear()
            self._leading = False
        # Leading starts in on_round, once this node has applied everything committed before
        # it won: only then does it know every member the log recorded.

    def _become_coordinator(self) -> None:
        self._leading = True
        self.live.clear()
        now = self.clock()
        for gid, rec in self.state.groups.items():
            if not rec.members:
                continue
            group = self.live[gid] = LiveGroup(gid, rec.generation + 1)
            for mid, m in rec.members.items():
                group.members[mid] = LiveMember(
                    mid,
                    m.client_id,
                    frozenset(m.topics),
                    m.session_timeout_ms,
                    now + m.session_timeout_ms / 1000,
                    recovering=True,
                )
            log.info(
                "group %s: recovering, waiting for %d members to come back", gid, len(rec.members)
            )

    def on_round(self) -> None:
        node = self.raft_group.node
        # A new leader's own no-op entry commits everything before it.
        if node.role == Role.LEADER and not self._leading and node.caught_up_in_term():
            self._become_coordinator()

    def on_tick(self) -> None:
        if self.is_coordinator:
            self.expire_members()
