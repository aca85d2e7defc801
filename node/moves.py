"""Replica moves: a partition's replicas change while it serves, one Raft change at a time.

Theory of operation. The controller's replicated state holds, per partition being moved, its
target replica set (`Move`). The partition's Raft leader carries the move out: every few ticks
it compares its group's applied membership with the target and takes the next step, a pure
function of the two (`next_step`):

  1. a learner that is not in the target (a move that was replaced) is removed;
  2. a learner of the target that has caught up (its match index within CATCH_UP_LAG entries
     of the leader's last index, acknowledged recently, and at least `settled_at`: see below)
     is promoted to voter; one that has not is fed, throttled (RaftDriver.set_throttle), and
     waited for;
  3. otherwise the first target node not yet in the group is added as a learner;
  4. once every target node votes, each voter outside the target is removed, the leader last:
     when it is the one to go, it hands leadership to an in-sync target voter first;
  5. the group's voters are the target and it has no learners: the move is done.

Why the partition leader drives. Only the leader may propose a membership change in its group
(Raft), and only it sees the learner's progress (match index, last answer) that decides when a
learner is caught up. The controller leader does not lead the partition in general; making it
drive would need a second channel to ask a partition leader for each step and to read its
progress back. So the controller says *what* (the target, replicated), each partition leader
decides *when* (from its own state), and the controller leader records what happened: partition
leaders gossip their group's membership and the index it is as of (PartitionState.voters,
.learners, .conf_index), and the controller leader writes it into the metadata with a
PartitionMembership command (Broker.membership_reports), so clients see every step, and the
move ends (its record is dropped) when the recorded membership is the target.

Why it resumes safely. Nothing of a move lives outside the two replicated logs: the target in
the controller's, the membership in the partition's. A leader that crashes or loses leadership
mid-move leaves at most one change proposed and not applied; its successor (raft/core.py) may
propose nothing until that entry is applied or overwritten, then recomputes the next step from
the membership it has applied. Each step is idempotent in that sense: taking it twice is
refused by the core (ConfChangeError: already a learner, already a voter, not a member), and
nothing but the applied membership decides what comes next.

Why the invariants hold throughout. Raft commits on a majority of the current voters; a learner
neither votes nor counts for commit, nor is it in the ISR (raft/tracker.py: the ISR is drawn
from voters). So acks=all waits for a majority of the current configuration and the in-sync
voters of it; a learner only becomes a voter once it holds (nearly) the whole log, so the
window in which the ISR misses it is short and the quorum it joins does not stall waiting for
its catch-up. The leader is never removed while it leads (it hands over first), so produce
moves over by a NOT_LEADER and the client's metadata refresh, as in any leader change.

What "caught up" must mean. Within CATCH_UP_LAG of the last index is not enough on its own: in
a short log a learner that never acknowledged anything (match 0) is "within the lag", and a new
leader counts every peer as heard at its election. A learner promoted so becomes a voter that
may not be able to vote: a replica added back carries its old replica's floor (node/membership.py,
"Promises"; raft/core.py, "Coming back after a removal") and grants no vote until its log passes
it, which only a leader can bring about. Promote it into a group of two, or remove the next old
replica, and the group can elect no leader ever again (the broker simulation's seed 50284: voters
{1, 2}, node 2 a candidate, node 1 a promoted learner with an empty log waiting for a leader). So
a caught-up member's match must also reach `settled_at` (`settled_index`): the change that added
it (the group's conf index) and the first entry of the leader's own term. Then it has answered
this leader, and its log's last entry is of the leader's term, which passes any floor: an old
replica's last entry is of an older term, or of this one and then below the change that added
the new one (this leader sent it nothing after it applied the removal, which came first).

Cancelling (CancelMove, `plan_cancel`) turns a move around: its target becomes its origin and
the same steps drive the group back (a learner it added removed first, a replica it removed
added back and refilled, one it promoted removed once the old ones vote). Two corners: a move
cancelled before its first step leaves no newer membership to report, so a report at the
recorded index that matches the target ends it; and a leader that proposed a learner for the
old target just before it applied the cancel may see the move recorded as done without it:
it removes the learners it added for moves that ended (MoveDriver._drop_strays).

`plan_moves` is the one entry point that turns wishes (partition -> target) into commands,
checked against the metadata: the CLI, decommissioning, rebalancing and a node's return with a
wiped disk all go through it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from node.controller_commands import CancelMove, MovePartition, PartitionMembership
from node.errors import BrokerError, ErrorCode
from node.limits import shown
from raft import ConfChange, ConfChangeType, RaftError

if TYPE_CHECKING:
    from node.broker import Broker
    from node.controller import Controller, ControllerState
    from node.partition import Partition, PartitionState
    from raft import PeerProgress, RawNode, Status

log = logging.getLogger("liferaft.moves")

CATCH_UP_LAG = 16
"""A learner within this many entries of the leader's last index is caught up: under steady
produce traffic its match is rarely exactly the last index, and a few entries are fetched in
one round once it votes."""

MAX_THROTTLE_BYTES_S = 10 << 30
MAX_MOVES_PER_REQUEST = 10_000


@dataclass(slots=True)
class Move:
    """A partition being moved, in the controller's state."""

    topic: str
    partition: int
    target: list[int]
    """The replicas it moves to; the first is the preferred leader."""
    origin: list[int]
    """Its replicas when the move began (for status)."""
    throttle_bytes_s: int = 0
    """How fast a learner of this move is fed (0: no limit)."""
    learners: list[int] = field(default_factory=list)
    """The group's learners as last recorded."""
    then: list[int] = field(default_factory=list)
    """The move that follows this one once it is done (MovePartition.then)."""
    cancelled: bool = False
    """Cancelled (CancelMove): `target` is now `origin`, the partition goes back there."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Move:
        return cls(
            topic=str(raw["topic"]),
            partition=int(raw["partition"]),
            target=[int(n) for n in raw["target"]],
            origin=[int(n) for n in raw["origin"]],
            throttle_bytes_s=int(raw.get("throttle_bytes_s", 0)),
            learners=[int(n) for n in raw.get("learners", [])],
            then=[int(n) for n in raw.get("then", [])],
            cancelled=bool(raw.get("cancelled", False)),
        )


def move_key(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


# -- the partition leader's side -------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class Step:
    """What the leader does next: add_learner, promote, remove, transfer, wait or done."""

    kind: str
    node: int = 0


def caught_up(
    pr: PeerProgress | None, last_index: int, recent_ticks: int, settled_at: int = 0
) -> bool:
    return (
        pr is not None
        and last_index - pr.match <= CATCH_UP_LAG
        and pr.match >= settled_at
        and pr.ticks_since_ack <= recent_ticks
    )


def settled_index(node: RawNode, status: Status, conf_index: int) -> int:
    """The lowest match a member may have to count as caught up (the module docstring, "What
    caught up must mean"): the group's last membership change, and the first entry of this
    leader's term (found by bisection: terms only grow along the log; past the snapshot the
    first entry held stands for it)."""
    term = status.term
    lo, hi = status.first_index, status.last_index
    if hi < lo or node.term_at(hi) != term:
        return max(conf_index, hi + 1)  # nothing of this term yet: nobody is caught up
    while lo < hi:
        mid = (lo + hi) // 2
        if node.term_at(mid) == term:
            hi = mid
        else:
            lo = mid + 1
    return max(conf_index, lo)


def next_step(
    *,
    leader: int,
    voters: Iterable[int],
    learners: Iterable[int],
    target: list[int],
    progress: Mapping[int, PeerProgress],
    in_sync: Iterable[int],
    last_index: int,
    recent_ticks: int,
    settled_at: int = 0,
    silent: Iterable[int] = (),
) -> Step:
    """The next membership step towards `target`, from the leader's applied membership and
    its view of its followers (see the module docstring for the order and why). settled_at:
    the lowest match of a caught-up member (`settled_index`); silent: members fenced silent in
    the group (a wiped node whose old incarnation the group still counts, node/membership.py):
    no other voter leaves while one is, or the fewer voters left would count it among them and
    might never have a quorum again (the broker simulation's seed 80259: voters {1, 3, 4}, node
    1 wiped; node 4's replica was replaced, leaving {1, 3} with 1 silent for good). Its leader
    replaces it first (Broker.membership_step), then the move goes on."""
    vs, ls, want = set(voters), set(learners), set(target)
    for n in sorted(ls - want):
        return Step("remove", n)
    for n in target:
        if n in ls:
            if caught_up(progress.get(n), last_index, recent_ticks, settled_at):
                return Step("promote", n)
            return Step("wait", n)
    for n in target:
        if n not in vs:
            return Step("add_learner", n)
    mute = set(silent) & vs
    going = sorted(vs - want, key=lambda n: (n not in mute, n))  # a silent one may go first
    for n in going:
        if n != leader:
            if mute - {n}:
                return Step("wait", n)
            return Step("remove", n)
    if going:  # only the leader itself is left to go: hand over to an in-sync target voter
        isr = set(in_sync)
        for n in target:
            if n in isr and caught_up(progress.get(n), last_index, recent_ticks, settled_at):
                return Step("transfer", n)
        return Step("wait", 0)
    return Step("done")


def at_target(move: Move, membership: PartitionMembership | PartitionState) -> bool:
    """The group's membership is the move's target: it is done."""
    return set(membership.voters) == set(move.target) and not membership.learners


def ordered_replicas(voters: Iterable[int], target: list[int], previous: list[int]) -> list[int]:
    """The metadata's replica list for a group with these voters: target order first (its
    first is the preferred leader), then the other voters in their previous order."""
    vs = set(voters)
    out = [n for n in target if n in vs]
    out += [n for n in previous if n in vs and n not in out]
    out += sorted(vs - set(out))
    return out


# -- planning, on the controller leader --------------------------------------------------------
def replica_load(state: ControllerState) -> tuple[dict[int, int], dict[int, int]]:
    """(replicas per broker, preferred leaderships per broker) over every partition, counting
    where moves are going (their targets) rather than where they come from."""
    replicas = {b: 0 for b in state.brokers}
    leaders = {b: 0 for b in state.brokers}
    for info in state.topics.values():
        for p, current in enumerate(info.replicas):
            move = state.moves.get(move_key(info.name, p))
            placed = move.target if move is not None else current
            for n in placed:
                replicas[n] = replicas.get(n, 0) + 1
            if placed:
                leaders[placed[0]] = leaders.get(placed[0], 0) + 1
    return replicas, leaders


def placeable(state: ControllerState) -> list[int]:
    """The brokers new replicas may go to: registered and not decommissioned."""
    return sorted(b for b in state.brokers if b not in state.decommissioned)


def plan_moves(
    state: ControllerState,
    wishes: list[tuple[str, int, list[int]]],
    throttle_bytes_s: int = 0,
) -> list[MovePartition]:
    """Check every (topic, partition, target) against the metadata and return the commands
    that start those moves, or raise BrokerError for the first bad one (then nothing is
    started). A partition whose replicas already are the target in that order needs no move
    and gets no command; the same set in another order is a move too (it only reorders)."""
    if not 0 <= throttle_bytes_s <= MAX_THROTTLE_BYTES_S:
        raise BrokerError(
            ErrorCode.INVALID_REQUEST,
            f"throttle {throttle_bytes_s} bytes/s is outside 0..{MAX_THROTTLE_BYTES_S}",
        )
    if len(wishes) > MAX_MOVES_PER_REQUEST:
        raise BrokerError(
            ErrorCode.INVALID_REQUEST, f"at most {MAX_MOVES_PER_REQUEST} partitions per request"
        )
    seen: set[tuple[str, int]] = set()
    out: list[MovePartition] = []
    usable = set(placeable(state))
    for topic, partition, target in wishes:
        where = f"{shown(topic)}-{partition}"
        info = state.topics.get(topic)
        if info is None:
            raise BrokerError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {shown(topic)} does not exist"
            )
        if not 0 <= partition < info.partitions:
            raise BrokerError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                f"topic {shown(topic)} has partitions 0..{info.partitions - 1}, not {partition}",
            )
        if (topic, partition) in seen:
            raise BrokerError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT, f"{where} appears twice in the plan"
            )
        seen.add((topic, partition))
        if not target:
            raise BrokerError(
                ErrorCode.INVALID_REPLICATION_FACTOR,
                f"{where}: a partition needs at least one replica (replication factor 0)",
            )
        if len(set(target)) != len(target):
            raise BrokerError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"{where}: replicas {target} name a node twice",
            )
        unknown = [n for n in target if n not in state.brokers]
        if unknown:
            raise BrokerError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"{where}: node(s) {unknown} are not registered brokers "
                f"(the brokers are {sorted(state.brokers)})",
            )
        current = info.replicas[partition]
        retired = [n for n in target if n not in usable and n not in current]
        if retired:
            raise BrokerError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"{where}: node(s) {retired} are decommissioned; no replica may move there",
            )
        busy = state.moves.get(move_key(topic, partition))
        if busy is not None:
            raise BrokerError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"{where} is being moved already (to {busy.target}); wait until that move is done",
            )
        if list(target) == list(current):
            continue
        out.append(
            MovePartition(
                name=topic,
                topic_id=info.topic_id,
                partition=partition,
                target=tuple(target),
                throttle_bytes_s=throttle_bytes_s,
            )
        )
    return out


def plan_cancel(
    state: ControllerState, partitions: list[tuple[str, int]], recommissioning: int = 0
) -> list[CancelMove]:
    """Check every (topic, partition) whose move is to be cancelled and return the commands,
    or raise BrokerError for the first bad one (then nothing is cancelled): an unknown
    partition, one named twice, one not being moved (a move that is done is not undone: move
    it back), one cancelled already, one whose move refills a node's lost replica (plan_readd:
    going back would serve the lost copy's place with nothing), one whose old replicas include
    a decommissioned node it has left."""
    if len(partitions) > MAX_MOVES_PER_REQUEST:
        raise BrokerError(
            ErrorCode.INVALID_REQUEST, f"at most {MAX_MOVES_PER_REQUEST} partitions per request"
        )
    seen: set[tuple[str, int]] = set()
    out: list[CancelMove] = []
    for topic, partition in partitions:
        where = f"{shown(topic)}-{partition}"
        info = state.topics.get(topic)
        if info is None:
            raise BrokerError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {shown(topic)} does not exist"
            )
        if not 0 <= partition < info.partitions:
            raise BrokerError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                f"topic {shown(topic)} has partitions 0..{info.partitions - 1}, not {partition}",
            )
        if (topic, partition) in seen:
            raise BrokerError(ErrorCode.INVALID_REQUEST, f"{where} is named twice")
        seen.add((topic, partition))
        key = move_key(topic, partition)
        move = state.moves.get(key)
        if move is None and key in state.next_moves:
            move = state.next_moves[key]
        if move is None:
            raise BrokerError(
                ErrorCode.NO_REASSIGNMENT_IN_PROGRESS,
                f"{where} is not being moved (its replicas are {info.replicas[partition]}); "
                "a move that is done is undone by moving it back",
            )
        if move.cancelled:
            raise BrokerError(
                ErrorCode.NO_REASSIGNMENT_IN_PROGRESS,
                f"{where}'s move is cancelled already; it is going back to {move.target}",
            )
        if move.then or key in state.next_moves:
            raise BrokerError(
                ErrorCode.INVALID_REQUEST,
                f"{where} is refilling a replica of a node that lost its disk; that cannot "
                "be cancelled",
            )
        retired = [
            n
            for n in move.origin
            if n in state.decommissioned and n not in move.target and n != recommissioning
        ]
        if retired:
            raise BrokerError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"{where}: cancelling would keep a replica on decommissioned node(s) "
                f"{retired} (`liferaft node decommission N --cancel` takes a node back)",
            )
        out.append(CancelMove(name=topic, topic_id=info.topic_id, partition=partition))
    return out


def plan_recommission(state: ControllerState, node_id: int) -> list[tuple[str, int]]:
    """The moves to cancel when node_id's decommissioning is: every move under way taking a
    replica off it (none of a refill). Raises BrokerError if it is not decommissioned."""
    if node_id not in state.decommissioned:
        raise BrokerError(
            ErrorCode.INVALID_REQUEST,
            f"node {node_id} is not decommissioned (decommissioned: "
            f"{sorted(state.decommissioned) or 'none'})",
        )
    return [
        (m.topic, m.partition)
        for _, m in sorted(state.moves.items())
        if node_id in m.origin and node_id not in m.target and not m.then and not m.cancelled
    ]


async def start_moves(
    ctl: Controller, cmds: list[MovePartition] | list[CancelMove], timeout_s: float
) -> None:
    """Propose the commands `plan_moves` returned, one after the other, on the controller
    leader: the one way moves start, for the gRPC API and the Kafka listener alike. Those
    recorded before a timeout stand (each is a whole move); the error says so."""
    try:
        for cmd in cmds:
            await asyncio.wait_for(ctl.replicate_and_wait(cmd), timeout_s)
    except TimeoutError:
        raise BrokerError(
            ErrorCode.REQUEST_TIMED_OUT,
            "the moves were not recorded in time; `liferaft partition moves` shows which were",
        ) from None


def plan_readd(
    state: ControllerState, node_id: int, throttle_bytes_s: int = 0
) -> list[MovePartition]:
    """Replace every replica `node_id` holds with a fresh one: each of its partitions moves to
    its replicas without the node, then back to the same list with it (MovePartition.then), so
    the node's copy is removed from the Raft group and then added again as a learner that is
    refilled from the leader (its log, or a snapshot), and promoted once caught up. For a node
    whose data directory was lost (a new incarnation): it must not serve its old replicas in the
    meantime. A partition whose only replica is on the node cannot be refilled: refused, as is
    a partition already moving (finish that first)."""
    if node_id not in state.brokers:
        raise BrokerError(
            ErrorCode.INVALID_REPLICA_ASSIGNMENT, f"node {node_id} is not a registered broker"
        )
    out: list[MovePartition] = []
    for info in sorted(state.topics.values(), key=lambda t: t.topic_id):
        for p, current in enumerate(info.replicas):
            key = move_key(info.name, p)
            move = state.moves.get(key)
            hosted = list(current) + (move.target if move is not None else [])
            if node_id not in hosted:
                continue
            if move is not None:
                raise BrokerError(
                    ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                    f"{info.name}-{p} is being moved; re-add node {node_id} once that is done",
                )
            rest = [n for n in current if n != node_id]
            if not rest:
                raise BrokerError(
                    ErrorCode.INVALID_REPLICATION_FACTOR,
                    f"{info.name}-{p} has no replica but node {node_id}'s: nothing to refill it from",
                )
            out.append(
                MovePartition(
                    name=info.name,
                    topic_id=info.topic_id,
                    partition=p,
                    target=tuple(rest),
                    throttle_bytes_s=throttle_bytes_s,
                    then=tuple(current),
                )
            )
    return out


def plan_decommission(state: ControllerState, node_id: int) -> list[tuple[str, int, list[int]]]:
    """The moves that take every replica off `node_id`: each replica goes to the least loaded
    placeable broker the partition is not on (by replica count, then preferred leaderships,
    then id), counting the moves planned so far. Raises BrokerError if that is impossible."""
    if node_id not in state.brokers:
        raise BrokerError(
            ErrorCode.INVALID_REPLICA_ASSIGNMENT,
            f"node {node_id} is not a registered broker (the brokers are {sorted(state.brokers)})",
        )
    replicas, leaders = replica_load(state)
    others = [b for b in placeable(state) if b != node_id]
    wishes: list[tuple[str, int, list[int]]] = []
    for info in sorted(state.topics.values(), key=lambda t: t.topic_id):
        for p, current in enumerate(info.replicas):
            move = state.moves.get(move_key(info.name, p))
            if move is not None:
                if node_id in move.target:
                    raise BrokerError(
                        ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                        f"{info.name}-{p} is being moved onto node {node_id}; wait until that "
                        "move is done",
                    )
                continue
            if node_id not in current:
                continue
            free = [b for b in others if b not in current]
            if not free:
                raise BrokerError(
                    ErrorCode.INVALID_REPLICATION_FACTOR,
                    f"{info.name}-{p} has {len(current)} replicas and only "
                    f"{len(others)} other brokers may hold one: add a broker first",
                )
            to = min(free, key=lambda b: (replicas.get(b, 0), leaders.get(b, 0), b))
            target = [to if n == node_id else n for n in current]
            replicas[to] = replicas.get(to, 0) + 1
            replicas[node_id] -= 1
            if current[0] == node_id:
                leaders[to] = leaders.get(to, 0) + 1
                leaders[node_id] -= 1
            wishes.append((info.name, p, target))
    return wishes


MAX_REBALANCE_STEPS = 10_000


def plan_rebalance(state: ControllerState) -> list[tuple[str, int, list[int]]]:
    """Targets that even out replicas, then preferred leaders, over the placeable brokers (a
    broker that just joined has none): while the most loaded broker holds two or more
    replicas more than the least loaded, one replica of a partition on the first and not on
    the second moves there (taking its place in the list, so a preferred leadership goes
    with it); then, while one broker is the preferred leader of two or more partitions more
    than another that is a replica of one of them, that partition's list is reordered to put
    the second first (no data moves: leadership follows, docs/operations.md). Partitions
    being moved are left alone. Deterministic: the same metadata gives the same plan."""
    brokers = placeable(state)
    if len(brokers) < 2:
        return []
    targets: dict[tuple[str, int], list[int]] = {}
    for info in sorted(state.topics.values(), key=lambda t: t.topic_id):
        for p, current in enumerate(info.replicas):
            if move_key(info.name, p) not in state.moves:
                targets[(info.name, p)] = list(current)
    replicas, leaders = replica_load(state)

    def load(b: int) -> tuple[int, int, int]:
        return (replicas.get(b, 0), leaders.get(b, 0), b)

    for _ in range(MAX_REBALANCE_STEPS):
        most = max(brokers, key=load)
        least = min(brokers, key=load)
        if replicas.get(most, 0) - replicas.get(least, 0) <= 1:
            break
        movable = [k for k, t in targets.items() if most in t and least not in t]
        if not movable:
            break
        # Prefer a partition where `most` is not the preferred leader: data moves, leadership
        # stays put.
        key = min(movable, key=lambda k: (targets[k][0] == most, k))
        t = targets[key]
        t[t.index(most)] = least
        replicas[most] -= 1
        replicas[least] = replicas.get(least, 0) + 1
        if t[0] == least:
            leaders[most] -= 1
            leaders[least] = leaders.get(least, 0) + 1
    for _ in range(MAX_REBALANCE_STEPS):
        most = max(brokers, key=lambda b: (leaders.get(b, 0), b))
        found = None
        for key, t in sorted(targets.items()):
            if t[0] != most:
                continue
            for b in t[1:]:
                better = found is None or leaders.get(b, 0) < leaders.get(found[1], 0)
                if b in brokers and leaders.get(b, 0) + 1 < leaders.get(most, 0) and better:
                    found = (key, b)
        if found is None:
            break
        key, b = found
        t = targets[key]
        t.remove(b)
        t.insert(0, b)
        leaders[most] -= 1
        leaders[b] = leaders.get(b, 0) + 1
    out: list[tuple[str, int, list[int]]] = []
    for (topic, p), t in sorted(targets.items()):
        if t != state.topics[topic].replicas[p]:
            out.append((topic, p, t))
    return out


def assign_least_loaded(
    state: ControllerState, partitions: int, rf: int, salt: int
) -> list[list[int]]:
    """Replicas for `partitions` new partitions: each goes to the `rf` placeable brokers with
    the fewest replicas, its preferred leader the one of them with the fewest preferred
    leaderships (ties broken round-robin from `salt`, so an empty cluster gets the classic
    spread), counting each placement before the next."""
    brokers = placeable(state)
    n = len(brokers)
    replicas, leaders = replica_load(state)
    out: list[list[int]] = []
    for p in range(partitions):

        def rotation(b: int, p: int = p) -> int:
            return (brokers.index(b) - salt - p) % n

        chosen = sorted(brokers, key=lambda b: (replicas.get(b, 0), rotation(b)))[:rf]
        lead = min(chosen, key=lambda b: (leaders.get(b, 0), rotation(b)))
        placed = [lead, *sorted((b for b in chosen if b != lead), key=rotation)]
        for b in placed:
            replicas[b] = replicas.get(b, 0) + 1
        leaders[lead] = leaders.get(lead, 0) + 1
        out.append(placed)
    return out


# -- the broker's side: drive the steps, report the memberships --------------------------------
REPORT_RETRY_CALLS = 25
"""A membership report proposed this many calls ago and not yet recorded is proposed again (its
proposal may have been lost to a controller leader change)."""

STRAY_WATCH_CALLS = 100
"""How many looks at the moves (MOVE_EVERY_TICKS apart) a learner this leader added is watched
for after its move ended (MoveDriver._drop_strays): long enough for a proposed change to apply."""


class MoveDriver:
    """One node's part in the moves: as a partition leader it takes each move's next step
    (`drive`); as the controller leader it turns the memberships partition leaders gossip into
    PartitionMembership commands (`reports`), which the node proposes."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._throttled: set[tuple[str, int]] = set()
        self._reported: dict[str, tuple[int, int]] = {}  # key -> (conf_index, call number)
        self._added: dict[tuple[str, int], dict[int, int]] = {}
        """The learners this node added as a partition leader, by partition, until they vote
        or are gone (see `_drop_strays`)."""
        self._calls = 0
        self.steps_taken = 0

    def drive(self) -> None:
        b = self.broker
        driver = b.driver
        recent = driver.timing.isr.max_lag_ticks
        throttles: dict[tuple[str, int], int] = {}
        for move in list(b.controller.state.moves.values()):
            part = b.partitions.get((move.topic, move.partition))
            if part is None or not part.is_leader:
                continue
            group = part.group
            cs = group.conf_state
            status = group.node.status()
            if move.throttle_bytes_s:
                for n in cs.learners:
                    throttles[(group.id, n)] = move.throttle_bytes_s
            step = next_step(
                leader=b.node_id,
                voters=cs.voters,
                learners=cs.learners,
                target=move.target,
                progress=status.progress,
                in_sync=status.in_sync,
                last_index=status.last_index,
                recent_ticks=recent,
                settled_at=settled_index(group.node, status, group.conf_index),
                silent=[n for n, h in b.hellos.items() if group.id in h.silent],
            )
            if step.kind in ("wait", "done"):
                continue
            if step.kind == "add_learner" and move.throttle_bytes_s:
                # Throttled from its first append on (the driver narrows its window as soon as
                # the change applies), not from the next look at the moves.
                throttles[(group.id, step.node)] = move.throttle_bytes_s
                driver.set_throttle(group.id, step.node, move.throttle_bytes_s)
            self._take(part, step)
        self._drop_strays()
        for key in self._throttled - set(throttles):
            driver.set_throttle(key[0], key[1], 0)
        for (gid, peer), rate in throttles.items():
            driver.set_throttle(gid, peer, rate)
        self._throttled = set(throttles)

    def _drop_strays(self) -> None:
        """Remove a learner this node added for a move that has ended without it: a move
        cancelled (its target back to its origin) can be recorded as done, from a report of
        the group at its origin, while this leader's add_learner, proposed just before it
        applied the cancel, is still in flight. Nothing else would remove that learner. An
        entry is forgotten once its node votes, or STRAY_WATCH_CALLS after its move ended."""
        b = self.broker
        moves = b.controller.state.moves
        for key, added in list(self._added.items()):
            part = b.partitions.get(key)
            if part is None or not part.is_leader:
                del self._added[key]
                continue
            cs = part.group.conf_state
            for n in list(added):
                if n in cs.voters:
                    del added[n]
                elif move_key(*key) not in moves:
                    if n in cs.learners and n not in part.replicas:
                        self._take(part, Step("remove", n))
                    added[n] -= 1
                    if added[n] <= 0:
                        del added[n]
            if not added:
                del self._added[key]

    def _take(self, part: Partition, step: Step) -> None:
        node = part.group.node
        kinds = {
            "add_learner": ConfChangeType.ADD_LEARNER,
            "promote": ConfChangeType.ADD_VOTER,
            "remove": ConfChangeType.REMOVE_NODE,
        }
        try:
            if step.kind == "transfer":
                if node.status().lead_transferee == step.node:
                    return
                node.transfer_leader(step.node)
            else:
                node.propose_conf_change(ConfChange(kinds[step.kind], step.node))
        except RaftError as e:  # a change still pending, leadership moving: next time
            log.debug("%s-%d: %s %d deferred: %s", part.topic, part.index, step.kind, step.node, e)
            return
        if step.kind == "add_learner":
            self._added.setdefault((part.topic, part.index), {})[step.node] = STRAY_WATCH_CALLS
        self.steps_taken += 1
        log.info(
            "%s-%d: move step on leader %d: %s node %d",
            part.topic,
            part.index,
            self.broker.node_id,
            step.kind,
            step.node,
        )
        self.broker.driver.touched(part.group_id)

    def reports(self) -> list[PartitionMembership | MovePartition]:
        b = self.broker
        ctl = b.controller
        self._calls += 1
        if not ctl.is_leader:
            self._reported.clear()
            return []
        out: list[PartitionMembership | MovePartition] = []
        for key, move in list(ctl.state.moves.items()):
            info = ctl.state.topics.get(move.topic)
            if info is None:
                continue
            st = b.partition_view(info, move.partition).state
            if st is None or not st.voters:
                continue
            recorded = info.conf_index.get(str(move.partition), 0)
            if st.conf_index < recorded or (st.conf_index == recorded and not at_target(move, st)):
                continue
            sent = self._reported.get(key)
            if (
                sent is not None
                and sent[0] >= st.conf_index
                and self._calls - sent[1] < REPORT_RETRY_CALLS
            ):
                continue
            self._reported[key] = (st.conf_index, self._calls)
            out.append(
                PartitionMembership(
                    name=info.name,
                    topic_id=info.topic_id,
                    partition=move.partition,
                    voters=st.voters,
                    learners=st.learners,
                    conf_index=st.conf_index,
                )
            )
        for key, move in list(ctl.state.next_moves.items()):
            info = ctl.state.topics.get(move.topic)
            sent = self._reported.get("next:" + key)
            if info is None or key in ctl.state.moves:
                continue
            if sent is not None and self._calls - sent[1] < REPORT_RETRY_CALLS:
                continue
            self._reported["next:" + key] = (0, self._calls)
            out.append(
                MovePartition(
                    name=info.name,
                    topic_id=info.topic_id,
                    partition=move.partition,
                    target=tuple(move.target),
                    throttle_bytes_s=move.throttle_bytes_s,
                )
            )
        return out
