"""Kafka's classic consumer-group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) on the
group coordinator, beside liferaft's own groups.

Why a second state machine: liferaft's groups (node/groups.py) are KIP-848-like, the coordinator
assigns partitions and moves them one heartbeat at a time; the classic protocol is a barrier, every
member rejoins, one of them (the leader) runs the client-side assignor (range, roundrobin,
cooperative-sticky: the broker never reads the assignment) and the coordinator hands each member
its part. The two cannot share one member list, so a group is one or the other: a classic join
to a group with live liferaft members, or the reverse, is INCONSISTENT_GROUP_PROTOCOL. What they
share is what must survive: committed offsets go through the same replicated `__groups` log
(GroupCoordinator.commit), so OffsetFetch, the liferaft client and `liferaft group` all see them.

Membership lives in the coordinator's memory, as Kafka's does between its group-metadata writes;
when the coordinator moves, members meet NOT_COORDINATOR, find the new one, get UNKNOWN_MEMBER_ID
on their next heartbeat and rejoin; their offsets are in the log. So the classic state is kept per
coordinator term and dropped when the term changes.

States (Kafka's names): Empty -> PreparingRebalance (a join or a leave; waits until every member
has rejoined, or the rebalance timeout drops those that did not) -> CompletingRebalance (the
generation is bumped, joins answered; waits for the leader's SyncGroup) -> Stable. Sessions end
after session_timeout_ms without a heartbeat (the sweep), which starts a rebalance. A member that
joins again with unchanged protocols while the group is stable (or awaits the leader's
assignment) is told the current generation; for the leader, whose join Kafka always takes as a
rebalance request, its next SyncGroup decides: a different assignment starts the rebalance.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from node.errors import BrokerError, ErrorCode
from node.groups import MAX_MEMBERS, GroupCoordinator, validate_group_id
from node.limits import MAX_SESSION_TIMEOUT_MS, MIN_SESSION_TIMEOUT_MS

log = logging.getLogger("liferaft.kafka.groups")

EMPTY, PREPARING, COMPLETING, STABLE, DEAD = (
    "Empty",
    "PreparingRebalance",
    "CompletingRebalance",
    "Stable",
    "Dead",
)
MAX_PROTOCOLS = 32
MAX_PROTOCOL_METADATA_BYTES = 1 << 20
MAX_REBALANCE_TIMEOUT_MS = 600_000
INITIAL_REBALANCE_DELAY_S = 0.1
"""A new group waits this long for more members before its first generation (Kafka's
group.initial.rebalance.delay.ms, shorter: tests and small clusters)."""


@dataclass(slots=True, frozen=True)
class JoinResult:
    member_id: str
    generation: int
    protocol_type: str | None
    protocol_name: str | None
    leader: str
    members: tuple[tuple[str, str | None, bytes], ...]
    """(member id, group instance id, metadata) of every member: for the leader only."""


@dataclass(slots=True)
class Member:
    member_id: str
    client_id: str
    client_host: str
    group_instance_id: str | None
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: list[tuple[str, bytes]]
    deadline: float
    assignment: bytes = b""
    joining: asyncio.Future[JoinResult] | None = None
    syncing: asyncio.Future[bytes] | None = None

    def metadata_for(self, protocol: str) -> bytes:
        for name, data in self.protocols:
            if name == protocol:
                return data
        return b""


@dataclass(slots=True)
class ClassicGroup:
    group_id: str
    state: str = EMPTY
    generation: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    members: dict[str, Member] = field(default_factory=dict)
    rebalance_deadline: float = 0.0
    initial_until: float = 0.0
    """A new group's first generation waits until then for more members."""
    leader_resync: bool = False
    """The leader joined again in Stable with nothing new and was told the current generation:
    its next SyncGroup says whether its assignment changed (then the group rebalances)."""

    def all_joined(self) -> bool:
        return all(m.joining is not None for m in self.members.values())


class ClassicGroups:
    """The classic groups of this coordinator term. Every method checks coordination first."""

    def __init__(
        self,
        coordinator: GroupCoordinator,
        address_of: Callable[[int], str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.coord = coordinator
        self.address_of = address_of
        self.clock = clock
        self.groups: dict[str, ClassicGroup] = {}
        self._term = -1

    # -- views ---------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise NOT_COORDINATOR (and the like) unless this node coordinates groups now; drop
        the classic state of an earlier term."""
        self.coord.check_coordinator(self.address_of)
        term = self.coord.raft_group.node.term
        if term != self._term:
            for g in self.groups.values():
                self._fail_waiters(g, ErrorCode.NOT_COORDINATOR)
            self.groups.clear()
            self._term = term

    def has_members(self, group_id: str) -> bool:
        g = self.groups.get(group_id)
        return g is not None and bool(g.members)

    def _group(self, group_id: str) -> ClassicGroup:
        g = self.groups.get(group_id)
        if g is None:
            raise BrokerError(ErrorCode.UNKNOWN_MEMBER_ID, f"group {group_id!r} has no members")
        return g

    def _member(self, group_id: str, member_id: str) -> tuple[ClassicGroup, Member]:
        g = self._group(group_id)
        m = g.members.get(member_id)
        if m is None:
            raise BrokerError(
                ErrorCode.UNKNOWN_MEMBER_ID,
                f"group {group_id!r} has no member {member_id!r}: rejoin",
            )
        return g, m

    # -- join ----------------------------------------------------------------------------------
    def join(
        self,
        group_id: str,
        member_id: str,
        group_instance_id: str | None,
        client_id: str,
        client_host: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
    ) -> asyncio.Future[JoinResult]:
        self.check()
        validate_group_id(group_id)
        if not MIN_SESSION_TIMEOUT_MS <= session_timeout_ms <= MAX_SESSION_TIMEOUT_MS:
            raise BrokerError(
                ErrorCode.INVALID_SESSION_TIMEOUT,
                f"session timeout {session_timeout_ms} ms is outside "
                f"{MIN_SESSION_TIMEOUT_MS}..{MAX_SESSION_TIMEOUT_MS} ms",
            )
        if rebalance_timeout_ms <= 0:
            rebalance_timeout_ms = session_timeout_ms
        rebalance_timeout_ms = min(rebalance_timeout_ms, MAX_REBALANCE_TIMEOUT_MS)
        if not protocol_type or not protocols or len(protocols) > MAX_PROTOCOLS:
            raise BrokerError(
                ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
                f"a join needs a protocol type and 1..{MAX_PROTOCOLS} protocols",
            )
        if sum(len(d) for _, d in protocols) > MAX_PROTOCOL_METADATA_BYTES:
            raise BrokerError(ErrorCode.INVALID_REQUEST, "protocol metadata is too large")
        live = self.coord.live.get(group_id)
        if live is not None and live.members:
            raise BrokerError(
                ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
                f"group {group_id!r} is a liferaft group with {len(live.members)} live members: "
                "a Kafka client cannot join it (use another group id)",
            )
        g = self.groups.get(group_id)
        if g is None:
            g = self.groups[group_id] = ClassicGroup(group_id)
        if g.members:
            if protocol_type != g.protocol_type:
                raise BrokerError(
                    ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
                    f"group {group_id!r} has protocol type {g.protocol_type!r}, "
                    f"not {protocol_type!r}",
                )
            common = self._common_protocols(g, exclude=member_id)
            if common is not None and not common & {n for n, _ in protocols}:
                raise BrokerError(
                    ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
                    f"none of the protocols {[n for n, _ in protocols]} is supported by every "
                    f"member of group {group_id!r}",
                )
        now = self.clock()
        if member_id:
            member = g.members.get(member_id)
            if member is None:
                raise BrokerError(
                    ErrorCode.UNKNOWN_MEMBER_ID,
                    f"group {group_id!r} has no member {member_id!r}: join with an empty id",
                )
            unchanged = member.protocols == protocols
            member.protocols = protocols
            member.session_timeout_ms = session_timeout_ms
            member.rebalance_timeout_ms = rebalance_timeout_ms
            member.deadline = now + session_timeout_ms / 1000
            # Kafka's rules for a member that joins again with the same protocols: while the
            # leader's assignment is awaited, or (for a follower) once the group is stable, it is
            # told the current generation again; a rebalance would only start over.
            #
            # Kafka rebalances whenever the leader joins in Stable, so that a leader that saw
            # topic metadata change (which its protocols do not show) gets a new assignment to
            # everyone. Here the leader is told the current generation too, and its next
            # SyncGroup decides: a different assignment starts the rebalance (see sync), the
            # same one changes nothing. Why not Kafka's rule: kafka-python 3 finishes a join on
            # its I/O thread while the application is outside poll(), then sends the same join
            # again on the next poll(); each of them restarted the group, which never settled.
            if unchanged and g.state in (COMPLETING, STABLE):
                if g.state == STABLE and member_id == g.leader:
                    g.leader_resync = True
                done: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()
                done.set_result(self._join_result(g, member))
                return done
        else:
            if len(g.members) >= MAX_MEMBERS:
                raise BrokerError(
                    ErrorCode.GROUP_MAX_SIZE_REACHED,
                    f"group {group_id!r} has {MAX_MEMBERS} members, the most it may have",
                )
            member_id = f"{client_id or 'member'}-{uuid.uuid4()}"
            member = Member(
                member_id,
                client_id,
                client_host,
                group_instance_id,
                session_timeout_ms,
                rebalance_timeout_ms,
                protocols,
                now + session_timeout_ms / 1000,
            )
            g.members[member_id] = member
            g.protocol_type = protocol_type
            log.info("classic group %s: member %s joins", group_id, member_id)
        if member.joining is not None and not member.joining.done():
            member.joining.cancel()  # a retry of its join: the newer request is answered
        member.joining = asyncio.get_running_loop().create_future()
        future = member.joining
        self._prepare_rebalance(g, initial=g.state == EMPTY)
        self._maybe_complete_join(g)
        return future

    def _common_protocols(self, g: ClassicGroup, exclude: str = "") -> set[str] | None:
        common: set[str] | None = None
        for m in g.members.values():
            if m.member_id == exclude:
                continue
            names = {n for n, _ in m.protocols}
            common = names if common is None else common & names
        return common

    def _prepare_rebalance(self, g: ClassicGroup, initial: bool = False) -> None:
        if g.state == PREPARING:
            return
        if g.state == COMPLETING:
            # The leader's assignment would be for the old member list: members waiting in
            # SyncGroup rejoin (REBALANCE_IN_PROGRESS).
            for m in g.members.values():
                if m.syncing is not None and not m.syncing.done():
                    m.syncing.set_exception(
                        BrokerError(ErrorCode.REBALANCE_IN_PROGRESS, "the group is rebalancing")
                    )
                m.syncing = None
        g.state = PREPARING
        g.leader_resync = False
        timeout_s = max((m.rebalance_timeout_ms for m in g.members.values()), default=0) / 1000
        delay = INITIAL_REBALANCE_DELAY_S if initial else 0.0
        g.rebalance_deadline = self.clock() + max(timeout_s, delay)
        g.initial_until = self.clock() + delay if initial else 0.0

    def _maybe_complete_join(self, g: ClassicGroup, *, timed_out: bool = False) -> None:
        if g.state != PREPARING:
            return
        if not timed_out:
            if not g.all_joined() or self.clock() < g.initial_until:
                return
        else:
            for m in [m for m in g.members.values() if m.joining is None]:
                log.info("classic group %s: %s did not rejoin in time", g.group_id, m.member_id)
                self._remove(g, m)
        if not g.members:
            g.state = EMPTY
            g.generation += 1
            return
        g.generation += 1
        common = self._common_protocols(g) or set()
        if g.leader not in g.members:
            g.leader = next(iter(g.members))
        leader = g.members[g.leader]
        g.protocol_name = next((n for n, _ in leader.protocols if n in common), None)
        g.state = COMPLETING
        log.info(
            "classic group %s: generation %d with %d members, leader %s, protocol %s",
            g.group_id,
            g.generation,
            len(g.members),
            g.leader,
            g.protocol_name,
        )
        for m in g.members.values():
            fut, m.joining = m.joining, None
            if fut is not None and not fut.done():
                fut.set_result(self._join_result(g, m))

    def _join_result(self, g: ClassicGroup, m: Member) -> JoinResult:
        everyone: tuple[tuple[str, str | None, bytes], ...] = ()
        if m.member_id == g.leader:
            everyone = tuple(
                (o.member_id, o.group_instance_id, o.metadata_for(g.protocol_name or ""))
                for o in g.members.values()
            )
        return JoinResult(
            m.member_id, g.generation, g.protocol_type, g.protocol_name, g.leader, everyone
        )

    # -- sync ----------------------------------------------------------------------------------
    def sync(
        self, group_id: str, member_id: str, generation: int, assignments: dict[str, bytes]
    ) -> asyncio.Future[bytes]:
        self.check()
        g, m = self._member(group_id, member_id)
        if generation != g.generation:
            raise BrokerError(
                ErrorCode.ILLEGAL_GENERATION,
                f"generation {generation} is not group {group_id!r}'s {g.generation}",
            )
        if g.state == PREPARING:
            raise BrokerError(ErrorCode.REBALANCE_IN_PROGRESS, "the group is rebalancing: rejoin")
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        m.deadline = self.clock() + m.session_timeout_ms / 1000
        if g.state == STABLE:
            if member_id == g.leader and g.leader_resync:
                g.leader_resync = False
                current = {o.member_id: o.assignment for o in g.members.values()}
                if {mid: assignments.get(mid, b"") for mid in current} != current:
                    log.info(
                        "classic group %s: leader %s assigns anew: rebalancing",
                        group_id,
                        member_id,
                    )
                    self._prepare_rebalance(g)
                    raise BrokerError(
                        ErrorCode.REBALANCE_IN_PROGRESS,
                        "the leader's assignment changed: the group is rebalancing, rejoin",
                    )
            fut.set_result(m.assignment)
            return fut
        m.syncing = fut
        if member_id == g.leader:
            for other in g.members.values():
                other.assignment = assignments.get(other.member_id, b"")
            g.state = STABLE
            for other in g.members.values():
                waiting, other.syncing = other.syncing, None
                if waiting is not None and not waiting.done():
                    waiting.set_result(other.assignment)
        return fut

    # -- heartbeat and leave ---------------------------------------------------------------------
    def heartbeat(self, group_id: str, member_id: str, generation: int) -> None:
        self.check()
        g, m = self._member(group_id, member_id)
        m.deadline = self.clock() + m.session_timeout_ms / 1000
        if g.state == PREPARING:
            raise BrokerError(ErrorCode.REBALANCE_IN_PROGRESS, "the group is rebalancing: rejoin")
        if generation != g.generation:
            raise BrokerError(
                ErrorCode.ILLEGAL_GENERATION,
                f"generation {generation} is not group {group_id!r}'s {g.generation}",
            )

    def leave(self, group_id: str, member_id: str) -> None:
        self.check()
        g, m = self._member(group_id, member_id)
        log.info("classic group %s: member %s leaves", group_id, member_id)
        self._remove(g, m)
        self._after_departure(g)

    def _remove(self, g: ClassicGroup, m: Member) -> None:
        del g.members[m.member_id]
        for fut in (m.joining, m.syncing):
            if fut is not None and not fut.done():
                fut.set_exception(BrokerError(ErrorCode.UNKNOWN_MEMBER_ID, "the member left"))
        if g.leader == m.member_id:
            g.leader = ""

    def _after_departure(self, g: ClassicGroup) -> None:
        if not g.members:
            g.state = EMPTY
            g.generation += 1
            g.leader = ""
            return
        self._prepare_rebalance(g)
        self._maybe_complete_join(g)

    # -- commits ---------------------------------------------------------------------------------
    def check_commit(self, group_id: str, member_id: str, generation: int) -> None:
        """Kafka's fencing of a classic commit: a member of the current generation, not while
        the group waits for the leader's assignment (in PreparingRebalance the generation has
        not moved yet: taken, as Kafka takes it). A commit with no member and generation -1 (a
        consumer that assigns partitions itself) is allowed only while nobody is a member; one
        that names a generation but no member is UNKNOWN_MEMBER_ID, or ILLEGAL_GENERATION if
        the group does not exist at all (neither members nor offsets), as Kafka answers before
        OffsetCommit v9."""
        self.check()
        g = self.groups.get(group_id)
        if not member_id and generation < 0:
            if g is not None and g.members:
                raise BrokerError(
                    ErrorCode.UNKNOWN_MEMBER_ID,
                    f"group {group_id!r} has {len(g.members)} members: only they may commit",
                )
            return
        if g is None or member_id not in g.members:
            if not member_id and g is None and not self.coord.committed(group_id):
                raise BrokerError(
                    ErrorCode.ILLEGAL_GENERATION,
                    f"group {group_id!r} does not exist: generation {generation} is none of its",
                )
            raise BrokerError(
                ErrorCode.UNKNOWN_MEMBER_ID, f"group {group_id!r} has no member {member_id!r}"
            )
        if generation != g.generation:
            raise BrokerError(
                ErrorCode.ILLEGAL_GENERATION,
                f"generation {generation} is not group {group_id!r}'s {g.generation}",
            )
        if g.state == COMPLETING:
            raise BrokerError(ErrorCode.REBALANCE_IN_PROGRESS, "the group is rebalancing")
        g.members[member_id].deadline = (
            self.clock() + g.members[member_id].session_timeout_ms / 1000
        )

    # -- time ----------------------------------------------------------------------------------
    def sweep(self) -> None:
        """End expired sessions and overdue rebalances (called periodically on every node; a
        node that does not coordinate has no classic state after check())."""
        if not self.coord.is_coordinator or self.coord.raft_group.node.term != self._term:
            if self.groups:
                for g in self.groups.values():
                    self._fail_waiters(g, ErrorCode.NOT_COORDINATOR)
                self.groups.clear()
            return
        now = self.clock()
        for g in list(self.groups.values()):
            gone = [m for m in g.members.values() if m.deadline < now and m.joining is None]
            for m in gone:
                log.info("classic group %s: session of %s ended", g.group_id, m.member_id)
                self._remove(g, m)
            if gone:
                self._after_departure(g)
            if g.state == PREPARING:
                if now >= g.rebalance_deadline:
                    self._maybe_complete_join(g, timed_out=True)
                else:
                    self._maybe_complete_join(g)
            if g.state == EMPTY and not g.members:
                del self.groups[g.group_id]

    def _fail_waiters(self, g: ClassicGroup, code: int) -> None:
        for m in g.members.values():
            for fut in (m.joining, m.syncing):
                if fut is not None and not fut.done():
                    fut.set_exception(BrokerError(code, "the group coordinator changed"))
