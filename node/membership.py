"""Incarnations and fences: a wiped data directory never comes back as the same voter.

Theory of operation. Each data directory gets a random incarnation id when it is created,
written durably with the node id (node/server.py), as KRaft's directory ids. A node whose data
directory is new cannot know whether its id already voted in this cluster: it may be a wiped
disk. So a new directory starts with the controller group fenced silent (raft/core.py,
"Rejoining after a lost disk", which holds the argument): it steps no Raft message and never
campaigns, and says so in its transport Hello (`rejoining`, with its incarnation and its
controller term).

Two ways out of the fence:
  - birth: a majority of the --peers (itself included) said hello with controller term 0 and
    none with more. Then no controller election ever completed, so no old incarnation of this
    node promised anything, and the fence lifts (`born`). The one case this cannot see: a disk
    wiped right after the cluster's very first election, while the node that won it (with the
    old incarnation's vote) is unreachable and every other peer still at term 0.
  - replacement: the controller leader sees a rejoining peer whose incarnation the metadata
    does not hold (`next_step`): it removes the node from the controller group, adds it back
    as a learner, records the new incarnation with the fence it grants (AdmitIncarnation: the
    leader's term and applied index), gossips that grant (LeaderStates.fences), and promotes the
    learner once it has caught up. The node moves its fence on the grant; the core lifts it once
    the node's log holds the add.

The partition groups the node opens while rejoining (it has no state for them yet) start fenced
silent too, and each partition's leader replaces the old replica the same way (next_step over
the group's membership, the fence granted straight away by gossip, promotion once caught up). The
controller records them when it admits the incarnation (ControllerState.stale,
Controller.stale_replicas) for tools and the replica-move machinery.

Fences are kept on disk (one host metadata key) until the core lifts them, and re-applied at
every restart before any message is stepped.

Promises: a replica moved away and back. A node whose replica of a partition is removed (a move:
node/moves.py) deletes it; a later move may add it back, as a learner with an empty log. The
disk is the same, so this is no new incarnation, but the new replica would have forgotten the
old one's vote and what it acknowledged. So before it deletes a replica, the node writes what
that replica promised (`Promises`: its durable term and vote, its last entry) under one host
key; a replica it creates later for the same group starts from them, in one synced write: the
term and vote as its hard state, the last entry as its fence's floor (raft/core.py, "Coming back
after a removal", holds the argument). With that, a learner may vote (as in etcd) without ever
voting twice in a term. A topic's deletion drops its groups' promises: its id never comes back.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from node.storage import GroupUpdate, NodeStore
from raft import ConfState, Fence

INCARNATION_KEY = b"node/incarnation"
FENCES_KEY = b"node/fences"
PROMISES_KEY = b"node/promises"
FOUNDERS_KEY = b"node/founders"
"""The controller group's founding voters, which this node bootstraps its copy with."""
ANCHOR_GROUP = "__node__"


def new_incarnation() -> int:
    """A random, non-zero 63-bit id (0 means "unknown": a node that predates incarnations)."""
    return secrets.randbits(63) | 1


def fences_value(fences: dict[str, Fence]) -> bytes:
    """The fences as FENCES_KEY's value (a floor only when there is one: older values load)."""
    out: dict[str, list[int]] = {}
    for g, f in sorted(fences.items()):
        out[g] = [f.min_term, f.index]
        if f.floor_index:
            out[g] += [f.floor_term, f.floor_index]
    return json.dumps(out).encode()


def load_fences(store: NodeStore) -> dict[str, Fence]:
    raw = store.get_meta(FENCES_KEY)
    if not raw:
        return {}
    return {g: Fence(*(int(x) for x in v)) for g, v in json.loads(raw).items()}


def save_fences(store: NodeStore, fences: dict[str, Fence]) -> None:
    """Write the fences durably (one synced write: a fence forgotten in a crash would let the
    node vote as its old self)."""
    store.write(
        [GroupUpdate(group=store.group(ANCHOR_GROUP), meta=[(FENCES_KEY, fences_value(fences))])],
        sync=True,
    )


@dataclass(slots=True, frozen=True)
class Promises:
    """What a deleted replica promised (see "Promises" above): its durable term and vote, and
    the position of its last entry (index 0: it held none)."""

    term: int
    vote: int
    last_term: int
    last_index: int


def promises_value(promises: dict[str, Promises]) -> bytes:
    return json.dumps(
        {g: [p.term, p.vote, p.last_term, p.last_index] for g, p in sorted(promises.items())}
    ).encode()


def load_promises(store: NodeStore) -> dict[str, Promises]:
    raw = store.get_meta(PROMISES_KEY)
    if not raw:
        return {}
    return {g: Promises(*(int(x) for x in v)) for g, v in json.loads(raw).items()}


@dataclass(slots=True, frozen=True)
class PeerHello:
    """What a peer said about itself: when it connected (its Hello), kept current by its
    gossip (LeaderStates.incarnation, silent_groups)."""

    incarnation: int
    controller_term: int
    silent: frozenset[str] = frozenset()
    """Groups in which it waits, silent, for its old incarnation to be replaced."""
    silent_at: int = 0
    """The broker tick at which the peer's own gossip last said `silent` (0: never). A
    partition's leader acts only on what was said after it began to lead (Broker
    .membership_step): an older word may predate the fence's lifting."""


def born(node_id: int, peers: list[int], hellos: dict[int, PeerHello], own_term: int) -> bool:
    """Whether a new data directory is at the cluster's birth (see the module docstring): a
    majority of the peers, this node included, at controller term 0, and nobody past it."""
    if own_term != 0 or any(h.controller_term > 0 for h in hellos.values()):
        return False
    fresh = 1 + sum(1 for p, h in hellos.items() if p != node_id and p in peers)
    return fresh > len(peers) // 2


@dataclass(slots=True, frozen=True)
class Step:
    """The controller leader's next move for a rejoining node (one Raft change at a time)."""

    kind: str
    """remove | add_learner | admit | promote | transfer (leadership, to node_id)"""
    node_id: int
    incarnation: int = 0


def next_step(
    *,
    conf: ConfState,
    rejoining: dict[int, int],
    admitted: dict[int, int],
    readded: dict[int, int],
    caught_up: set[int],
    voters_wanted: int,
    retired: frozenset[int] = frozenset(),
    leader: int = 0,
) -> Step | None:
    """Decide, in plain code, the one membership change a group's leader makes next.

    conf: the group's membership as the leader applied it; rejoining: node -> incarnation of
      the peers silent in this group; admitted: node -> incarnation the group granted a fence
      to; readded: node -> incarnation this leader added back as a learner (in memory: a new
      leader that finds an unadmitted rejoining node in the group removes it again, which is
      safe, only slower); caught_up: members whose match reached the leader's commit index;
      voters_wanted: how many voters the group keeps; retired: decommissioned nodes that hold
      no replica any more (the groups over every node only): they stop voting, a learner
      taking their place first, and stay learners (a copy of the metadata while they run);
      leader: the leader's own id (it hands leadership over before it stops voting).
    """
    members = conf.voters | conf.learners
    for node, incarnation in sorted(rejoining.items()):
        if not incarnation or admitted.get(node) == incarnation:
            continue
        if node in members:
            if readded.get(node) == incarnation and node in conf.learners:
                return Step("admit", node, incarnation)
            return Step("remove", node, incarnation)
        return Step("add_learner", node, incarnation)
    serving = conf.voters - retired
    if len(serving) < voters_wanted:
        for node in sorted((conf.learners - retired) & caught_up):
            if node in admitted:
                return Step("promote", node)
    going = sorted(conf.voters & retired)
    if going and len(serving) >= min(voters_wanted, len(members - retired)) and serving:
        node = next((n for n in going if n != leader), going[0])
        if node != leader:
            return Step("remove", node)
        to = next((n for n in sorted(serving) if n in caught_up), 0)
        return Step("transfer", to) if to else None
    for node in sorted(retired - members):
        return Step("add_learner", node)
    return None
