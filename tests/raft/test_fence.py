"""The fence of a node whose disk was wiped (raft/core.py, "Rejoining after a lost disk"):
silent while the group still counts its old incarnation, then speaking only from the term it
was added back in, and voting only once its log holds that add."""

from __future__ import annotations

from raft import (
    TRANSFER_CONTEXT,
    Config,
    ConfState,
    Entry,
    Fence,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
)

_DISKS: dict[int, MemoryStorage] = {}


def _wiped(node_id: int = 3) -> RawNode:
    """A node booted on an empty disk with the group's bootstrap membership, as node/ does."""
    disk = MemoryStorage(ConfState(voters=frozenset({1, 2, 3})))
    node = RawNode(Config(id=node_id, election_tick=5), disk)
    _DISKS[id(node)] = disk
    return node


def _vote(term: int, frm: int = 2, pre: bool = False) -> Message:
    kind = MessageType.PRE_VOTE if pre else MessageType.VOTE
    return Message(type=kind, to=3, frm=frm, term=term, index=7, log_term=2)


def _sent(node: RawNode) -> list[Message]:
    if not node.has_ready():
        return []
    rd = node.ready()
    disk = _DISKS[id(node)]
    disk.append(rd.entries)
    if rd.hard_state is not None:
        disk.set_hard_state(rd.hard_state)
    node.advance(rd)
    return rd.messages + rd.persisted_messages


def test_an_unfenced_wiped_node_grants_any_vote() -> None:
    """The bug the fence exists for: term 0, no vote, an empty log, so any candidate wins it,
    whatever its old incarnation promised in that term."""
    node = _wiped()
    node.step(_vote(term=4))
    granted = [m for m in _sent(node) if m.type == MessageType.VOTE_RESP and not m.reject]
    assert granted and node.raft.vote == 2


def test_a_silent_fence_steps_nothing_and_never_campaigns() -> None:
    node = _wiped()
    node.set_fence(Fence())
    node.step(_vote(term=4))
    node.step(_vote(term=4, pre=True))
    node.step(Message(type=MessageType.HEARTBEAT, to=3, frm=1, term=4, commit=0))
    for _ in range(50):
        node.tick()
    assert _sent(node) == []
    assert node.term == 0 and node.raft.vote == 0 and node.leader == 0
    assert node.fence == Fence()


def test_a_moved_fence_drops_older_terms_and_votes_until_the_add_is_held() -> None:
    node = _wiped()
    node.set_fence(Fence(min_term=5, index=3))
    node.step(Message(type=MessageType.HEARTBEAT, to=3, frm=1, term=4, commit=0))
    assert _sent(node) == [] and node.term == 0  # the old incarnation's mail
    node.step(_vote(term=6))
    assert _sent(node) == [] and node.term == 0  # no vote before its log holds the add
    for _ in range(50):
        node.tick()
    assert _sent(node) == []  # nor a campaign
    # The leader of term 5 refills it; once it has committed the add (index 3), it is itself.
    ents = tuple(Entry(index=i, term=5, data=b"x") for i in (1, 2, 3))
    node.step(
        Message(
            type=MessageType.APP, to=3, frm=1, term=5, index=0, log_term=0, entries=ents, commit=2
        )
    )
    acks = [m for m in _sent(node) if m.type == MessageType.APP_RESP]
    assert acks and acks[0].index == 3
    assert node.fence == Fence(min_term=5, index=3)  # commit 2 < 3: still fenced
    node.step(Message(type=MessageType.HEARTBEAT, to=3, frm=1, term=5, commit=3))
    _sent(node)
    assert node.fence is None
    node.step(_vote(term=6))
    assert node.raft.vote == 0  # an ordinary node now: its log (term 5) is ahead of this one
    # (A leadership transfer's vote request, which the leader lease does not hold back.)
    node.step(
        Message(
            type=MessageType.VOTE,
            to=3,
            frm=2,
            term=7,
            index=3,
            log_term=5,
            context=TRANSFER_CONTEXT,
        )
    )
    assert any(m.type == MessageType.VOTE_RESP and not m.reject for m in _sent(node))


# -- the floor: a replica added back to a group it was removed from ------------------------------
# (raft/core.py, "Coming back after a removal"). Its old replica of the group voted for 1 in
# term 5 and held entries up to 7@5; the host deleted it and, on the add, made a new one that
# starts from those promises: hard state (term 5, vote 1) and a fence with the floor 7@5.


def _readded(floor: bool = True) -> RawNode:
    disk = MemoryStorage(ConfState(voters=frozenset({1, 2, 3})))
    disk.set_hard_state(HardState(term=5, vote=1))
    node = RawNode(Config(id=3, election_tick=5), disk)
    _DISKS[id(node)] = disk
    if floor:
        node.set_fence(Fence(min_term=1, floor_term=5, floor_index=7))
    return node


def _behind_vote(term: int, pre: bool = False) -> Message:
    """A vote request from a candidate that lacks the old replica's entries 5-7 (a replica
    that has not applied 3's removal still counts it as a voter and asks)."""
    kind = MessageType.PRE_VOTE if pre else MessageType.VOTE
    return Message(type=kind, to=3, frm=2, term=term, index=4, log_term=5)


def _granted(msgs: list[Message]) -> bool:
    return any(
        m.type in (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP) and not m.reject for m in msgs
    )


def test_without_a_floor_a_readded_replica_elects_a_candidate_missing_what_it_acknowledged() -> (
    None
):
    """Term and vote alone keep one vote per term, not the log: an empty log finds every
    candidate up to date, so entries the old replica acknowledged (and a leader counted toward
    a commit) could be lost with a leader elected by its vote."""
    node = _readded(floor=False)
    node.step(_behind_vote(term=6))
    assert _granted(_sent(node)) and node.raft.vote == 2


def test_a_readded_replica_votes_only_once_its_log_passes_the_old_replicas_last_entry() -> None:
    node = _readded()
    # Term 5: it voted for 1 already (the old replica did); nobody else gets its vote there.
    node.step(Message(type=MessageType.VOTE, to=3, frm=2, term=5, index=9, log_term=5))
    assert not _granted(_sent(node)) and node.raft.vote == 1
    # A later term, a candidate behind the floor: no vote and no pre-vote.
    node.step(_behind_vote(term=6, pre=True))
    node.step(_behind_vote(term=6))
    assert not _granted(_sent(node)) and node.raft.vote == 1
    # Nor does it campaign while its own log is behind the floor (its own vote would count).
    for _ in range(50):
        node.tick()
    assert not [m for m in _sent(node) if m.type in (MessageType.VOTE, MessageType.PRE_VOTE)]
    # The leader of term 6 refills it: 1-6 of term 5, its no-op 7@6. Past 7@5: the floor lifts.
    ents = (*(Entry(index=i, term=5, data=b"x") for i in range(1, 7)), Entry(index=7, term=6))
    node.step(
        Message(
            type=MessageType.APP, to=3, frm=1, term=6, index=0, log_term=0, entries=ents, commit=7
        )
    )
    _sent(node)
    assert node.fence is None and node.term == 6
    # An ordinary node now: a vote for an up-to-date candidate of a later term is granted.
    node.step(
        Message(
            type=MessageType.VOTE,
            to=3,
            frm=2,
            term=7,
            index=7,
            log_term=6,
            context=TRANSFER_CONTEXT,
        )
    )
    assert _granted(_sent(node)) and node.raft.vote == 2


def test_a_floor_holds_until_the_log_is_as_up_to_date_not_just_as_long() -> None:
    """Entries of an older term up to the floor's index are not enough: the old replica's
    7@5 may be an entry those lack (Raft §5.4.1's order, not the length)."""
    node = _readded()
    ents = tuple(Entry(index=i, term=4, data=b"x") for i in range(1, 9))
    node.step(
        Message(
            type=MessageType.APP, to=3, frm=1, term=5, index=0, log_term=0, entries=ents, commit=0
        )
    )
    _sent(node)
    assert node.fence == Fence(min_term=1, floor_term=5, floor_index=7)
    node.step(
        Message(
            type=MessageType.APP,
            to=3,
            frm=1,
            term=5,
            index=8,
            log_term=4,
            entries=(Entry(index=9, term=5),),
            commit=0,
        )
    )
    _sent(node)
    assert node.fence is None
