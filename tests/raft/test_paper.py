"""The rules of the Raft paper, one test per rule, each naming its section.

Sections are those of "In Search of an Understandable Consensus Algorithm (Extended Version)"
(Ongaro & Ousterhout, 2014), written §5.x, and of Ongaro's PhD thesis "Consensus: Bridging
Theory and Practice" (2014), written "thesis §x". The tests play the peers by hand (Solo) or
run a small cluster (Cluster); see tests/raft/harness.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from raft import (
    NONE,
    TRANSFER_CONTEXT,
    ConfChange,
    ConfChangeError,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDroppedError,
    RawNode,
    Role,
    Snapshot,
    SnapshotMeta,
)
from tests.raft.harness import Cluster, Solo, storage_with

APP, APP_RESP = MessageType.APP, MessageType.APP_RESP
VOTE, VOTE_RESP = MessageType.VOTE, MessageType.VOTE_RESP
PRE_VOTE, PRE_VOTE_RESP = MessageType.PRE_VOTE, MessageType.PRE_VOTE_RESP
HEARTBEAT, HEARTBEAT_RESP = MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP


def ents(*terms: int, start: int = 1) -> tuple[Entry, ...]:
    return tuple(Entry(index=start + i, term=t) for i, t in enumerate(terms))


def of_type(msgs: list[Message], t: MessageType) -> list[Message]:
    return [m for m in msgs if m.type == t]


def _recording(into: list[Message], which: Callable[[Message], bool]) -> Callable[[Message], bool]:
    """A network that delivers everything and notes the messages `which` picks."""

    def pick(m: Message) -> bool:
        if which(m):
            into.append(m)
        return True

    return pick


def log_terms(s: Solo) -> list[int]:
    log = s.raft.log
    return [e.term for e in log.slice(log.first_index(), log.last_index() + 1, None)]


# -- §5.1 Raft basics: terms ---------------------------------------------------------------------


def test_5_1_nodes_start_as_followers() -> None:
    s = Solo()
    assert s.raft.role == Role.FOLLOWER
    assert s.raft.term == 0
    assert s.raft.lead == NONE


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE, Role.LEADER])
def test_5_1_a_higher_term_turns_any_node_into_a_follower_of_that_term(role: Role) -> None:
    s = Solo(term=1)
    if role == Role.CANDIDATE:
        s.rn.campaign()
    elif role == Role.LEADER:
        s.make_leader()
    assert s.raft.role == role
    s.step(APP, 2, term=5, index=0, log_term=0)
    assert s.raft.term == 5
    assert s.raft.role == Role.FOLLOWER
    assert s.raft.lead == 2


def test_5_1_a_vote_request_of_a_higher_term_updates_the_term() -> None:
    s = Solo(term=1, vote=1)
    s.step(VOTE, 2, term=3, index=0, log_term=0)
    assert (s.raft.term, s.raft.vote) == (3, 2)


def test_5_1_a_stale_term_message_is_rejected() -> None:
    s = Solo(term=3, terms=[1])
    s.step(APP, 2, term=2, index=1, log_term=1, entries=ents(2, start=2), commit=2)
    assert s.raft.term == 3
    assert log_terms(s) == [1]
    assert s.raft.log.committed == 0
    assert not s.drain()  # without CheckQuorum or PreVote, not even an answer


def test_5_1_a_stale_leader_is_told_the_newer_term_under_check_quorum() -> None:
    # With CheckQuorum a node that bumped its term while cut off could otherwise never rejoin
    # (everyone ignores its votes); answering tells the stale leader to step down.
    s = Solo(term=3, terms=[1], check_quorum=True)
    s.step(HEARTBEAT, 2, term=2, commit=1)
    (resp,) = s.drain()
    assert (resp.type, resp.to, resp.term, resp.reject) == (APP_RESP, 2, 3, False)
    assert s.raft.log.committed == 0


def test_5_1_a_stale_vote_request_gets_no_vote() -> None:
    s = Solo(term=3)
    s.step(VOTE, 2, term=2, index=5, log_term=2)
    assert s.raft.vote == NONE
    assert not [m for m in s.drain() if m.type == VOTE_RESP and not m.reject]


# -- §5.2 Leader election ------------------------------------------------------------------------


def test_5_2_leader_sends_heartbeats_every_heartbeat_interval() -> None:
    s = Solo(heartbeat_tick=2)
    s.make_leader()
    s.tick()
    assert not of_type(s.drain(), HEARTBEAT)
    s.tick()
    beats = of_type(s.drain(), HEARTBEAT)
    assert sorted(m.to for m in beats) == [2, 3]
    assert all(m.term == s.raft.term for m in beats)


@pytest.mark.parametrize("start_as_candidate", [False, True])
def test_5_2_a_follower_or_candidate_campaigns_after_the_election_timeout(
    start_as_candidate: bool,
) -> None:
    s = Solo(term=1, pre_vote=False, election_tick=10)
    if start_as_candidate:
        s.rn.campaign()
        s.drain()
    before = s.raft.term
    s.tick(2 * 10)  # the randomized timeout is below 2 * election_tick
    assert s.raft.role == Role.CANDIDATE
    assert s.raft.term == before + 1
    assert s.raft.vote == 1  # a candidate votes for itself
    votes = of_type(s.drain(), VOTE)
    assert sorted(m.to for m in votes) == [2, 3]
    assert all(m.term == before + 1 for m in votes)


def test_5_2_election_timeouts_are_randomized_in_one_to_two_election_ticks() -> None:
    seen = set()
    for seed in range(200):
        s = Solo(seed=seed, pre_vote=False, election_tick=10)
        ticks = 0
        while s.raft.role == Role.FOLLOWER:
            s.tick()
            ticks += 1
        seen.add(ticks)
    assert min(seen) >= 10
    assert max(seen) < 20
    assert len(seen) >= 8, f"timeouts barely vary: {sorted(seen)}"


def test_5_2_randomized_timeouts_rarely_let_two_nodes_time_out_together() -> None:
    # Randomization is what keeps split votes rare: count how often the earliest timeout
    # among five freshly reset nodes is shared.
    rng = random.Random(7)
    trials, ties = 1000, 0
    for _ in range(trials):
        timeouts = [
            Solo(seed=rng.randrange(1 << 30)).raft.randomized_election_timeout for _ in range(5)
        ]
        ties += timeouts.count(min(timeouts)) > 1
    assert ties / trials < 0.3


@pytest.mark.parametrize(
    ("size", "votes", "role"),
    [
        (1, {}, Role.LEADER),
        (3, {2: True, 3: True}, Role.LEADER),
        (3, {2: True}, Role.LEADER),
        (5, {2: True, 3: True, 4: True, 5: True}, Role.LEADER),
        (5, {2: True, 3: True}, Role.LEADER),
        (3, {2: False, 3: False}, Role.FOLLOWER),
        (5, {2: False, 3: False, 4: False}, Role.FOLLOWER),
        (5, {2: True, 3: False, 4: False, 5: False}, Role.FOLLOWER),
        (3, {}, Role.CANDIDATE),
        (5, {2: True}, Role.CANDIDATE),
        (5, {2: False, 3: False}, Role.CANDIDATE),
        (5, {2: True, 3: False, 4: False}, Role.CANDIDATE),
    ],
)
def test_5_2_candidate_wins_loses_or_waits_on_a_split_vote(
    size: int, votes: dict[int, bool], role: Role
) -> None:
    s = Solo(voters=range(1, size + 1), pre_vote=False)
    s.rn.campaign()
    s.drain()  # term and vote durable: the vote requests leave, our own vote counts
    for peer, granted in votes.items():
        s.step(VOTE_RESP, peer, term=1, reject=not granted)
    assert s.raft.role == role
    assert s.raft.term == 1


def test_5_2_a_node_votes_at_most_once_per_term_first_come_first_served() -> None:
    s = Solo(terms=[1], term=1)
    s.step(VOTE, 2, term=2, index=1, log_term=1)
    s.step(VOTE, 3, term=2, index=1, log_term=1)
    s.step(VOTE, 2, term=2, index=1, log_term=1)  # a retransmission is answered the same
    got = [(m.to, m.reject) for m in of_type(s.drain(), VOTE_RESP)]
    assert got == [(2, False), (3, True), (2, False)]
    assert s.raft.vote == 2


def test_5_2_a_candidate_accepts_a_leader_of_its_term() -> None:
    s = Solo(pre_vote=False)
    s.rn.campaign()
    s.step(APP, 2, term=1, index=0, log_term=0)
    assert s.raft.role == Role.FOLLOWER
    assert (s.raft.term, s.raft.lead) == (1, 2)


def test_5_2_a_candidate_returns_to_follower_on_a_majority_of_rejections() -> None:
    s = Solo(pre_vote=False)
    s.rn.campaign()
    s.step(VOTE_RESP, 2, term=1, reject=True)
    s.step(VOTE_RESP, 3, term=1, reject=True)
    assert s.raft.role == Role.FOLLOWER
    assert s.raft.term == 1  # the term stays: it was not beaten by a higher one


def test_5_2_a_split_vote_is_resolved_by_a_later_timeout() -> None:
    c = Cluster([1, 2, 3, 4])
    c.nodes[1].campaign()
    c.nodes[2].campaign()
    # 3 hears 1 first and 4 hears 2 first: two votes each, no majority of four.
    c.flush(pick=lambda m: not (m.type == VOTE and (m.frm, m.to) in {(1, 4), (2, 3)}))
    assert c.leaders() == []
    c.nodes[1].campaign()  # 1 times out first at term 2
    c.flush()
    assert c.leaders() == [1]
    assert c.nodes[1].term == 2


# -- §5.3 Log replication ------------------------------------------------------------------------


def test_5_3_leader_appends_a_proposal_and_sends_it_with_the_preceding_entry() -> None:
    s = Solo()
    s.make_leader()
    s.commit_all()
    last, term = s.raft.log.last_index(), s.raft.term
    index = s.rn.propose(b"x")
    assert index == last + 1
    assert s.raft.log.term(index) == term
    apps = of_type(s.drain(), APP)
    assert sorted(m.to for m in apps) == [2, 3]
    for m in apps:
        assert (m.index, m.log_term, m.commit) == (last, term, last)
        assert m.entries == (Entry(index=index, term=term, data=b"x"),)


@pytest.mark.parametrize(
    ("size", "acks", "committed"),
    [
        (1, set(), True),
        (3, set(), False),
        (3, {2}, True),
        (3, {2, 3}, True),
        (5, {2}, False),
        (5, {2, 3}, True),
        (5, {2, 3, 4, 5}, True),
    ],
)
def test_5_3_an_entry_commits_once_a_majority_holds_it(
    size: int, acks: set[int], committed: bool
) -> None:
    s = Solo(voters=range(1, size + 1))
    s.make_leader()
    noop = s.raft.log.last_index()  # the leader's own copy is persisted (make_leader drains)
    for peer in acks:
        s.step(APP_RESP, peer, term=1, index=noop)
    s.drain()
    assert (s.raft.log.committed == noop) == committed


def test_5_3_leader_tells_followers_the_commit_index() -> None:
    s = Solo()
    s.make_leader()
    noop = s.raft.log.last_index()
    s.step(APP_RESP, 2, term=1, index=noop)
    apps = of_type(s.drain(), APP)
    assert apps and all(m.commit == noop for m in apps)


def test_5_3_a_follower_commits_up_to_the_leader_commit_within_what_it_verified() -> None:
    s = Solo(term=1, terms=[1, 1])
    s.step(APP, 2, term=1, index=2, log_term=1, entries=ents(1, start=3), commit=10)
    assert s.raft.log.committed == 3  # not 10: only 3 is known to match the leader
    s.step(APP, 2, term=1, index=1, log_term=1, commit=2)
    assert s.raft.log.committed == 3  # never moves back


@pytest.mark.parametrize(
    ("index", "log_term", "accept", "hint"),
    [
        (0, 0, True, None),
        (1, 1, True, None),
        (2, 2, True, None),
        (2, 1, False, (1, 1)),  # we hold 2@2: skip down to our last entry of term <= 1
        (3, 2, False, (2, 2)),  # we lack 3: start from our last index
        (3, 3, False, (2, 2)),
    ],
)
def test_5_3_follower_checks_the_entry_preceding_an_append(
    index: int, log_term: int, accept: bool, hint: tuple[int, int] | None
) -> None:
    s = Solo(term=2, terms=[1, 2])
    s.step(APP, 2, term=2, index=index, log_term=log_term)
    (resp,) = s.drain()
    assert resp.type == APP_RESP
    assert resp.reject == (not accept)
    if hint is not None:
        assert (resp.reject_hint, resp.log_term) == hint
    else:
        assert resp.index == index


@pytest.mark.parametrize(
    ("index", "log_term", "new", "want"),
    [
        (2, 2, ents(3, start=3), [1, 2, 3]),
        (1, 1, ents(3, 4, start=2), [1, 3, 4]),  # 2@2 conflicts: it and all after it go
        (0, 0, ents(1, start=1), [1, 2]),  # already held: nothing changes
        (0, 0, ents(3, start=1), [3]),
        (1, 1, ents(2, start=2), [1, 2]),  # a stale, shorter append does not truncate
    ],
)
def test_5_3_follower_deletes_conflicting_entries_and_appends_new_ones(
    index: int, log_term: int, new: tuple[Entry, ...], want: list[int]
) -> None:
    s = Solo(term=2, terms=[1, 2])
    s.step(APP, 2, term=3, index=index, log_term=log_term, entries=new)
    s.drain()
    assert log_terms(s) == want


FIGURE_7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIGURE_7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("case", sorted(FIGURE_7_FOLLOWERS))
def test_5_3_figure_7_leader_brings_any_follower_log_in_line_and_never_rewrites_its_own(
    case: str,
) -> None:
    # Node 3 has an empty log and votes for 1, so that 1 can win even against a follower
    # whose log is more up to date (d).
    storages = {
        1: storage_with([1, 2, 3], FIGURE_7_LEADER, HardState(term=7)),
        2: storage_with([1, 2, 3], FIGURE_7_FOLLOWERS[case], HardState(term=7)),
        3: storage_with([1, 2, 3], [], HardState(term=7)),
    }
    c = Cluster([1, 2, 3], storages=storages)
    rejects: list[Message] = []
    c.nodes[1].campaign()
    c.flush(pick=_recording(rejects, lambda m: m.type == APP_RESP and m.reject))
    assert c.leaders() == [1]
    assert c.nodes[1].term == 8
    want = [*FIGURE_7_LEADER, 8]  # the leader only ever appended (its no-op)
    assert c.log_terms(1) == want
    assert c.log_terms(2) == want
    # Fast backtracking: a rejection skips a whole term, so it takes at most one round trip
    # per distinct term in the conflicting suffix, not one per entry.
    from_2 = [m for m in rejects if m.frm == 2]
    assert len(from_2) <= 2, [(m.index, m.reject_hint, m.log_term) for m in from_2]


# -- §5.4.1 Election restriction -------------------------------------------------------------------


def test_5_4_1_a_candidate_describes_its_last_entry() -> None:
    s = Solo(terms=[1, 1, 2], term=2, pre_vote=False)
    s.rn.campaign()
    votes = of_type(s.drain(), VOTE)
    assert {(m.index, m.log_term) for m in votes} == {(3, 2)}


@pytest.mark.parametrize(
    ("ours", "cand_index", "cand_term", "granted"),
    [
        ([1], 1, 1, True),  # same last entry
        ([1], 2, 1, True),  # same last term, longer
        ([1, 1], 1, 1, False),  # same last term, shorter
        ([1], 1, 2, True),  # later last term
        ([1, 1], 1, 2, True),  # later last term wins even when shorter
        ([2, 2], 2, 1, False),  # earlier last term loses even when as long
        ([2, 2], 3, 1, False),  # ... or longer
    ],
)
def test_5_4_1_vote_only_for_a_log_at_least_as_up_to_date(
    ours: list[int], cand_index: int, cand_term: int, granted: bool
) -> None:
    s = Solo(terms=ours, term=2)
    s.step(VOTE, 2, term=3, index=cand_index, log_term=cand_term)
    (resp,) = of_type(s.drain(), VOTE_RESP)
    assert resp.reject == (not granted)
    assert s.raft.vote == (2 if granted else NONE)


# -- §5.4.2 Committing entries from previous terms -------------------------------------------------


def test_5_4_2_a_leader_does_not_commit_an_earlier_term_entry_by_counting_replicas() -> None:
    s = Solo(terms=[1, 2], term=2)
    s.make_leader()  # term 3, no-op at 3
    assert s.raft.term == 3
    s.step(APP_RESP, 2, term=3, index=2)  # a majority (1 and 2) now holds 2@2
    assert s.raft.log.committed == 0
    s.step(APP_RESP, 2, term=3, index=3)  # ... and 3@3, an entry of the leader's term
    assert s.raft.log.committed == 3  # which commits everything before it too


def _among(*ids: int) -> Callable[[Message], bool]:
    """A network in which only ids talk to each other."""
    return lambda m: m.frm in ids and m.to in ids


def _campaign_until_leader(c: Cluster, node: int, pick: Callable[[Message], bool]) -> None:
    """Campaign until node wins; a first attempt may run into votes already cast in its term."""
    for _ in range(3):
        c.nodes[node].campaign()
        c.flush(pick)
        if c.leaders() == [node]:
            return
    raise AssertionError(f"{node} did not win")


def _figure_8_a_and_b() -> Cluster:
    """Figure 8 (a) and (b), one index earlier than in the paper (our leaders' no-ops stand
    for its client entries)."""
    c = Cluster([1, 2, 3, 4, 5], max_size_per_msg=1)  # one entry per append
    # (a) S1 leads term 1; its entry 1@1 reaches S2 only.
    c.nodes[1].campaign()
    c.flush(pick=lambda m: m.type != APP or m.to == 2)
    assert c.leaders() == [1]
    assert [c.log_terms(i) for i in range(1, 6)] == [[1], [1], [], [], []]
    # (b) S1 crashes; S5 wins term 2 with S3 and S4, appends 1@2, and crashes before sending it.
    c.crash(1)
    c.nodes[5].campaign()
    c.flush(pick=lambda m: m.type != APP and _among(3, 4, 5)(m))
    assert c.leaders() == [5]
    assert c.log_terms(5) == [2]
    c.crash(5)
    c.restart(1)
    return c


def test_5_4_2_figure_8_an_old_term_entry_on_a_majority_is_not_committed() -> None:
    c = _figure_8_a_and_b()

    # (c) S1 wins term 3 (with S2, S3 and S4) and sends its old entry 1@1 to S3 and S4, but
    # its no-op 2@3 reaches nobody. The leader knows 1@1 is on S1, S3 and S4: a majority.
    def no_term_3(m: Message) -> bool:
        # Appends carrying 2@3 are lost, except those their receiver would reject anyway:
        # the leader's first probes to S3 and S4, which start where its own log ends.
        if m.type != APP or all(e.term != 3 for e in m.entries):
            return True
        return not c.nodes[m.to].raft.log.match_term(m.index, m.log_term)

    _campaign_until_leader(c, 1, lambda m: _among(1, 2, 3, 4)(m) and no_term_3(m))
    assert c.nodes[1].term == 3
    assert [c.log_terms(i) for i in (1, 2, 3, 4)] == [[1, 3], [1], [1], [1]]
    progress = c.nodes[1].status().progress
    assert sorted(i for i, p in progress.items() if p.match >= 1) == [1, 3, 4]
    # The rule under test: it is of an earlier term, so counting replicas does not commit it.
    assert c.nodes[1].raft.log.committed == 0
    # (d) S1 crashes; S5 restarts and wins term 4 with S2, S3 and S4 (its last term, 2, beats
    # their 1), then overwrites 1@1 everywhere. Safe only because 1@1 was never committed.
    c.crash(1)
    c.restart(5)
    _campaign_until_leader(c, 5, lambda m: True)
    assert c.nodes[5].term == 4
    for i in (2, 3, 4, 5):
        assert c.log_terms(i) == [2, 4]
    assert not [e for i in c.ids for e in c.applied[i] if e.term == 1]


def test_5_4_2_figure_8_once_a_current_term_entry_commits_the_old_one_is_safe() -> None:
    c = _figure_8_a_and_b()
    # (e) This time S1 gets its term-3 no-op onto a majority (S1, S2, S3) before it crashes:
    # that commits the no-op and 1@1 before it.
    _campaign_until_leader(c, 1, _among(1, 2, 3))
    assert c.nodes[1].term == 3
    assert c.nodes[1].raft.log.committed == 2
    c.crash(1)
    c.restart(5)
    # S5 (last entry 1@2) can win no vote from S2 or S3 (last entry 2@3): at most S4's.
    for _ in range(3):
        c.nodes[5].campaign()
        c.flush()
        assert c.leaders() == []
    for i in (2, 3):
        assert c.log_terms(i) == [1, 3]


# -- §7 Log compaction: InstallSnapshot ------------------------------------------------------------


def _snapshot(index: int, term: int, voters: frozenset[int] = frozenset({1, 2, 3})) -> Snapshot:
    return Snapshot(
        meta=SnapshotMeta(index=index, term=term, conf_state=ConfState(voters=voters)),
        data=b"state",
    )


def test_7_follower_installs_a_snapshot_past_its_log() -> None:
    s = Solo(terms=[1, 1], term=2)
    snap = _snapshot(11, 2, frozenset({1, 2}))
    s.step(MessageType.SNAP, 2, term=2, snapshot=snap)
    rd = s.rn.ready()
    assert rd.snapshot == snap
    assert (s.raft.log.first_index(), s.raft.log.last_index(), s.raft.log.committed) == (
        12,
        11,
        11,
    )
    assert s.raft.tracker.conf_state() == ConfState(voters=frozenset({1, 2}))
    (resp,) = rd.persisted_messages  # the acknowledgment promises the snapshot is durable
    assert (resp.type, resp.index, resp.reject) == (APP_RESP, 11, False)


def test_7_a_snapshot_at_or_below_the_commit_index_is_ignored() -> None:
    s = Solo(terms=[1, 1, 1, 1, 1], term=1, commit=5)
    s.step(MessageType.SNAP, 2, term=1, snapshot=_snapshot(3, 1))
    (resp,) = s.drain()
    assert (resp.type, resp.index) == (APP_RESP, 5)
    assert s.raft.log.first_index() == 1
    assert s.raft.log.last_index() == 5


def test_7_a_snapshot_whose_last_entry_we_hold_only_advances_the_commit_index() -> None:
    s = Solo(terms=[1, 1, 1], term=1)
    s.step(MessageType.SNAP, 2, term=1, snapshot=_snapshot(2, 1))
    (resp,) = s.drain()
    assert s.raft.log.committed == 2
    assert s.raft.log.first_index() == 1
    assert log_terms(s) == [1, 1, 1]  # entry 3 is kept: it may well be the leader's too
    assert (resp.type, resp.index) == (APP_RESP, 2)


def test_7_leader_sends_its_snapshot_to_a_follower_behind_its_log_start() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.crash(3)
    for d in (b"a", b"b", b"c"):
        c.nodes[1].propose(d)
    c.flush()
    applied = c.nodes[1].raft.log.applied
    c.storages[1].create_snapshot(applied, ConfState(voters=frozenset({1, 2, 3})), b"abc")
    c.storages[1].compact(applied)
    c.restart(3)
    snaps: list[Message] = []
    c.nodes[1].tick()  # a heartbeat: 3 answers, the leader finds 3 behind its log start
    c.flush(pick=_recording(snaps, lambda m: m.type == MessageType.SNAP))
    assert [m.to for m in snaps] == [3]
    assert c.storages[3].snapshot().data == b"abc"
    assert c.nodes[3].raft.log.last_index() == c.nodes[1].raft.log.last_index()


def test_7_no_snapshot_for_a_follower_that_has_not_answered_within_an_election_timeout() -> None:
    s = Solo(terms=[1, 1, 1], term=1, commit=3, election_tick=10)
    s.make_leader()
    s.storage.create_snapshot(3, ConfState(voters=frozenset({1, 2, 3})), b"")
    s.storage.compact(3)
    s.tick(10)  # 2 and 3 have been silent since the election
    s.drain()
    pr = s.raft.tracker.progress[2]
    pr.next, pr.probe_sent = 1, False  # as after a rejection: 2 needs what is compacted
    assert not s.raft.maybe_send_append(2)
    assert not of_type(s.drain(), MessageType.SNAP)
    # Once 2 answers, the snapshot goes.
    s.step(HEARTBEAT_RESP, 2, term=s.raft.term)
    assert [m.to for m in of_type(s.drain(), MessageType.SNAP)] == [2]


# -- thesis §9.6 PreVote ---------------------------------------------------------------------------


def test_9_6_a_pre_candidate_changes_neither_term_nor_vote() -> None:
    s = Solo(terms=[1], term=1, vote=2, pre_vote=True, election_tick=10)
    s.tick(20)
    assert s.raft.role == Role.PRE_CANDIDATE
    assert (s.raft.term, s.raft.vote) == (1, 2)
    msgs = s.drain()
    pre = of_type(msgs, PRE_VOTE)
    assert sorted(m.to for m in pre) == [2, 3]
    assert all(m.term == 2 for m in pre)  # the term it would campaign at
    assert not of_type(msgs, VOTE)


def test_9_6_granting_a_pre_vote_changes_nothing_on_the_voter() -> None:
    s = Solo(terms=[1], term=1, vote=3, pre_vote=True)
    s.step(PRE_VOTE, 2, term=2, index=1, log_term=1)
    (resp,) = s.drain()
    assert (resp.type, resp.term, resp.reject) == (PRE_VOTE_RESP, 2, False)
    assert (s.raft.term, s.raft.vote) == (1, 3)


def test_9_6_a_pre_vote_is_refused_to_a_log_less_up_to_date() -> None:
    s = Solo(terms=[1, 1], term=1, pre_vote=True)
    s.step(PRE_VOTE, 2, term=2, index=1, log_term=1)
    (resp,) = s.drain()
    assert resp.reject
    assert resp.term == 1  # our term, so a pre-candidate that is behind learns it


def test_9_6_a_pre_candidate_campaigns_for_real_only_after_a_majority_of_pre_votes() -> None:
    s = Solo(pre_vote=True)
    s.rn.campaign()
    assert s.raft.role == Role.PRE_CANDIDATE
    s.step(PRE_VOTE_RESP, 3, term=0, reject=True)  # a rejection carries the voter's term
    assert s.raft.role == Role.PRE_CANDIDATE
    s.step(PRE_VOTE_RESP, 2, term=1)
    assert s.role() == Role.CANDIDATE
    assert (s.raft.term, s.raft.vote) == (1, 1)
    assert sorted(m.to for m in of_type(s.drain(), VOTE)) == [2, 3]


def test_9_6_a_pre_candidate_rejected_by_a_majority_goes_back_to_follower() -> None:
    s = Solo(term=4, pre_vote=True)
    s.rn.campaign()
    s.step(PRE_VOTE_RESP, 2, term=4, reject=True)
    s.step(PRE_VOTE_RESP, 3, term=4, reject=True)
    assert s.raft.role == Role.FOLLOWER
    assert s.raft.term == 4


def test_9_6_a_partitioned_node_rejoins_without_raising_the_term() -> None:
    c = Cluster([1, 2, 3], pre_vote=True, check_quorum=True, election_tick=5)
    c.elect(1)
    term = c.nodes[1].term
    cut = {1, 2}  # 3 can reach nobody
    for _ in range(40):  # eight election timeouts
        for i in (1, 2, 3):
            c.nodes[i].tick()
        c.flush(pick=lambda m: m.frm in cut and m.to in cut)
    assert c.nodes[3].term == term
    assert c.nodes[3].role == Role.PRE_CANDIDATE
    for _ in range(10):  # healed
        for i in (1, 2, 3):
            c.nodes[i].tick()
        c.flush()
    assert c.leaders() == [1]
    assert {c.nodes[i].term for i in (1, 2, 3)} == {term}
    assert c.nodes[3].leader == 1


# -- thesis §6.2 CheckQuorum and the leader lease --------------------------------------------------


def test_6_2_a_leader_steps_down_when_no_majority_answered_within_an_election_timeout() -> None:
    s = Solo(check_quorum=True, election_tick=10)
    s.make_leader()
    s.tick(9)
    assert s.raft.role == Role.LEADER
    s.tick()
    assert s.role() == Role.FOLLOWER
    assert s.raft.lead == NONE


def test_6_2_a_leader_that_hears_from_a_majority_keeps_leading() -> None:
    s = Solo(check_quorum=True, election_tick=10)
    s.make_leader()
    for _ in range(50):
        s.tick()
        s.step(HEARTBEAT_RESP, 2, term=s.raft.term)  # 3 stays silent: 1 and 2 are a majority
    assert s.raft.role == Role.LEADER


def test_6_2_a_follower_that_heard_from_its_leader_ignores_vote_requests() -> None:
    s = Solo(terms=[1], term=1, check_quorum=True, election_tick=10)
    s.step(HEARTBEAT, 2, term=1, commit=0)
    s.drain()
    s.step(VOTE, 3, term=2, index=5, log_term=5)
    assert (s.raft.term, s.raft.vote, s.raft.lead) == (1, NONE, 2)
    assert not s.drain()  # not even a rejection: the term must not leak


def test_6_2_the_lease_expires_after_an_election_timeout_of_silence() -> None:
    s = Solo(terms=[1], term=1, check_quorum=True, pre_vote=False, election_tick=10)
    s.step(HEARTBEAT, 2, term=1, commit=0)
    s.raft.election_elapsed = 10  # silent for a whole election timeout (before our own)
    s.step(VOTE, 3, term=2, index=5, log_term=5)
    assert (s.raft.term, s.raft.vote) == (2, 3)


def test_6_2_a_transfer_vote_request_bypasses_the_lease() -> None:
    s = Solo(terms=[1], term=1, check_quorum=True, election_tick=10)
    s.step(HEARTBEAT, 2, term=1, commit=0)
    s.step(VOTE, 3, term=2, index=1, log_term=1, context=TRANSFER_CONTEXT)
    assert (s.raft.term, s.raft.vote) == (2, 3)


# -- thesis §3.10 Leadership transfer --------------------------------------------------------------


def test_3_10_transfer_to_an_up_to_date_follower_sends_timeout_now_and_stops_proposals() -> None:
    s = Solo()
    s.make_leader()
    s.commit_all()
    s.rn.transfer_leader(2)
    msgs = s.drain()
    assert [(m.type, m.to) for m in msgs] == [(MessageType.TIMEOUT_NOW, 2)]
    with pytest.raises(ProposalDroppedError):
        s.rn.propose(b"x")


def test_3_10_timeout_now_makes_the_target_campaign_at_once_even_with_pre_vote() -> None:
    s = Solo(node_id=2, terms=[1], term=1, pre_vote=True, check_quorum=True)
    s.step(HEARTBEAT, 1, term=1, commit=1)
    s.drain()
    s.step(MessageType.TIMEOUT_NOW, 1, term=1)
    assert s.raft.role == Role.CANDIDATE
    assert s.raft.term == 2
    votes = of_type(s.drain(), VOTE)
    assert sorted(m.to for m in votes) == [1, 3]
    assert all(m.context == TRANSFER_CONTEXT for m in votes)


def test_3_10_transfer_to_a_lagging_follower_catches_it_up_first() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.down.add(3)  # cut off: misses x
    c.nodes[1].propose(b"x")
    c.flush()
    c.down.discard(3)
    c.nodes[1].transfer_leader(3)
    sent: list[Message] = []
    c.flush(pick=_recording(sent, lambda m: m.frm == 1 and m.to == 3))
    order = [m.type for m in sent]
    assert MessageType.TIMEOUT_NOW in order
    before = sent[: order.index(MessageType.TIMEOUT_NOW)]
    assert [e.data for m in before for e in m.entries] == [b"x"]  # caught up first
    assert c.leaders() == [3]
    assert c.nodes[3].raft.log.committed >= 3  # nothing the old leader committed was lost


def test_3_10_a_transfer_that_does_not_finish_within_an_election_timeout_is_abandoned() -> None:
    s = Solo(election_tick=10)
    s.make_leader()
    s.rn.transfer_leader(3)  # 3 never answers
    assert s.raft.lead_transferee == 3
    s.tick(10)
    assert s.raft.lead_transferee == NONE
    s.rn.propose(b"x")  # accepted again


def test_3_10_transfer_only_to_a_voter() -> None:
    s = Solo(learners=[4])
    s.make_leader()
    with pytest.raises(ConfChangeError):
        s.rn.transfer_leader(4)


def test_3_10_a_learner_ignores_timeout_now() -> None:
    s = Solo(node_id=4, learners=[4], terms=[1], term=1)
    s.step(MessageType.TIMEOUT_NOW, 1, term=1)
    assert s.raft.role == Role.FOLLOWER
    assert s.raft.term == 1


# -- thesis §4.1 Single-server membership changes --------------------------------------------------


def _leader_with_committed_noop(**kw: Any) -> Solo:
    s = Solo(**kw)
    s.make_leader()
    s.commit_all()
    return s


def test_4_1_one_membership_change_at_a_time() -> None:
    s = _leader_with_committed_noop()
    first = s.rn.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    with pytest.raises(ConfChangeError, match="one change at a time"):
        s.rn.propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 5))
    s.commit_all()  # commits and applies the first change (drain applies it)
    assert s.raft.log.applied >= first
    s.rn.propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 4))


def test_4_1_no_membership_change_before_the_leader_commits_an_entry_of_its_term() -> None:
    s = Solo(terms=[1, 1], term=1, commit=2)
    s.make_leader()
    with pytest.raises(ConfChangeError, match="not committed an entry of its term"):
        s.rn.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    s.commit_all()
    s.rn.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))


@pytest.mark.parametrize(
    ("cc", "match"),
    [
        (ConfChange(ConfChangeType.ADD_VOTER, 2), "already a voter"),
        (ConfChange(ConfChangeType.ADD_LEARNER, 2), "demotion"),
        (ConfChange(ConfChangeType.ADD_LEARNER, 4), "already a learner"),
        (ConfChange(ConfChangeType.REMOVE_NODE, 9), "not a member"),
        (ConfChange(ConfChangeType.ADD_VOTER, 0), "invalid node id"),
    ],
)
def test_4_1_senseless_changes_are_refused(cc: ConfChange, match: str) -> None:
    s = _leader_with_committed_noop(learners=[4])
    last = s.raft.log.last_index()
    with pytest.raises(ConfChangeError, match=match):
        s.rn.propose_conf_change(cc)
    assert s.raft.log.last_index() == last


def test_4_1_the_last_voter_cannot_be_removed() -> None:
    s = _leader_with_committed_noop(voters=[1])
    with pytest.raises(ConfChangeError, match="last voter"):
        s.rn.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 1))


def test_4_1_removing_a_voter_shrinks_the_quorum_and_may_commit_pending_entries() -> None:
    s = _leader_with_committed_noop(voters=[1, 2])
    index = s.rn.propose(b"x")
    s.drain()
    assert s.raft.log.committed < index  # 2 of 2 needed; 2 has not answered
    s.rn.apply_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 2))
    assert s.raft.log.committed == index  # now 1 of 1


def test_4_1_a_removed_leader_steps_down() -> None:
    s = _leader_with_committed_noop()
    s.rn.apply_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 1))
    assert s.raft.role == Role.FOLLOWER
    s.tick(100)
    assert s.raft.role == Role.FOLLOWER  # not a voter: never campaigns


def test_4_1_learners_get_the_log_but_neither_campaign_nor_count() -> None:
    s = _leader_with_committed_noop(voters=[1, 2], learners=[3])
    index = s.rn.propose(b"x")
    apps = of_type(s.drain(), APP)
    assert sorted(m.to for m in apps) == [2, 3]  # the learner is replicated to
    s.step(APP_RESP, 3, term=s.raft.term, index=index)
    assert s.raft.log.committed < index  # but its acknowledgment does not count
    s.step(APP_RESP, 2, term=s.raft.term, index=index)
    assert s.raft.log.committed == index

    learner = Solo(node_id=3, voters=[1, 2], learners=[3], election_tick=10)
    learner.tick(100)
    assert learner.raft.role == Role.FOLLOWER
    assert not learner.drain()


def test_4_1_a_candidate_asks_only_voters() -> None:
    s = Solo(voters=[1, 2, 3], learners=[4], pre_vote=False)
    s.rn.campaign()
    assert sorted(m.to for m in of_type(s.drain(), VOTE)) == [2, 3]


def test_4_1_a_new_member_learns_the_membership_from_the_leader_snapshot() -> None:
    # The group's log starts after a snapshot, so a node that starts empty cannot replay the
    # log from index 1; the leader sends the snapshot, which carries the membership.
    def compacted() -> MemoryStorage:
        st = MemoryStorage(ConfState(voters=frozenset({1, 2, 3})))
        st.apply_snapshot(
            Snapshot(meta=SnapshotMeta(index=5, term=1, conf_state=st.snapshot().meta.conf_state))
        )
        return st

    storages = {i: compacted() for i in (1, 2, 3)}
    storages[4] = MemoryStorage()
    c = Cluster([1, 2, 3, 4], storages=storages)
    c.elect(1)
    c.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    c.flush()
    c.nodes[1].tick()
    c.flush()
    st = c.nodes[4].status()
    assert st.conf_state == ConfState(voters=frozenset({1, 2, 3}), learners=frozenset({4}))
    assert st.commit == c.nodes[1].raft.log.committed


def test_ready_contract_votes_and_acks_wait_for_persistence() -> None:
    # Not a paper section but the reason for its "persist before responding" (§5, Figure 2):
    # vote replies and append acknowledgments come out as persisted_messages.
    rn = RawNode(Config(id=2), storage_with([1, 2, 3], [1], None))
    rn.step(Message(type=VOTE, to=2, frm=1, term=2, index=1, log_term=1))
    rd = rn.ready()
    assert rd.hard_state is not None and rd.hard_state.vote == 1
    assert not rd.messages
    assert [m.type for m in rd.persisted_messages] == [VOTE_RESP]
    rn.advance(rd)
    rn.step(Message(type=APP, to=2, frm=1, term=2, index=1, log_term=1, entries=ents(2, start=2)))
    rd = rn.ready()
    assert [e.index for e in rd.entries] == [2]
    assert [m.type for m in rd.persisted_messages] == [APP_RESP]
