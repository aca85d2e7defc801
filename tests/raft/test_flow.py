"""How the leader paces appends to each follower (raft/progress.py as core.py drives it):
batching, the bounded in-flight window, probing after a rejection or an unreachable report,
and the way out of snapshot state. Not rules of the paper but of a leader that must neither
flood a slow follower nor stall a fast one."""

from __future__ import annotations

from typing import Any

from raft import Message, MessageType, ProgressState
from tests.raft.harness import Solo

APP, APP_RESP = MessageType.APP, MessageType.APP_RESP


def apps_to(msgs: list[Message], to: int) -> list[Message]:
    return [m for m in msgs if m.type == APP and m.to == to]


def leader(**cfg: Any) -> Solo:
    s = Solo(**cfg)
    s.make_leader()
    s.commit_all()
    return s


def test_proposals_made_together_go_out_in_one_append() -> None:
    s = leader()
    s.rn.propose_many([b"a", b"b", b"c"])
    (app,) = apps_to(s.drain(), 2)
    assert [e.data for e in app.entries] == [b"a", b"b", b"c"]


def test_an_append_carries_at_most_max_size_per_msg_bytes_but_at_least_one_entry() -> None:
    s = leader(max_size_per_msg=60)  # an entry with 10 bytes of data counts 34
    first = s.rn.propose_many([b"x" * 10] * 3)
    assert [len(m.entries) for m in apps_to(s.drain(), 2)] == [1]  # 68 > 60
    # A proposal sends one append per follower; an acknowledgment sends the rest, pipelined
    # as far as the window allows.
    s.step(APP_RESP, 2, term=s.raft.term, index=first)
    assert [len(m.entries) for m in apps_to(s.drain(), 2)] == [1, 1]
    s = leader(max_size_per_msg=1)
    s.rn.propose(b"x" * 100)
    assert [len(m.entries) for m in apps_to(s.drain(), 2)] == [1]


def test_the_in_flight_window_bounds_unacknowledged_appends() -> None:
    s = leader(max_inflight_msgs=2)
    for d in (b"a", b"b", b"c", b"d"):
        s.rn.propose(d)
    sent = apps_to(s.drain(), 2)
    assert [e.data for m in sent for e in m.entries] == [b"a", b"b"]
    assert s.raft.tracker.progress[2].is_paused()
    # An acknowledgment frees the window; the leader sends what waited, up to the window.
    s.step(APP_RESP, 2, term=s.raft.term, index=sent[0].entries[-1].index)
    assert [e.data for m in apps_to(s.drain(), 2) for e in m.entries] == [b"c", b"d"]


def test_a_heartbeat_response_to_a_full_window_sends_an_empty_append_not_new_data() -> None:
    # If acknowledgments were lost the window would stay full forever; a heartbeat answer
    # shows the follower is alive, so the leader asks where it is with an empty append after
    # the last one in flight. New data waits: the window bounds what a slow follower that
    # still answers heartbeats costs the leader (etcd#14633, replicate_pause.txt). The old
    # rule freed a slot per heartbeat answer and sent one more full append each time.
    s = leader(max_inflight_msgs=2)
    first = s.raft.log.last_index() + 1
    for i in range(12):
        s.rn.propose(b"v%d" % i)
    sent = apps_to(s.drain(), 2)
    assert [len(m.entries) for m in sent] == [1, 1]
    for _ in range(10):
        s.step(MessageType.HEARTBEAT_RESP, 2, term=s.raft.term)
        (beacon,) = apps_to(s.drain(), 2)
        assert (beacon.index, beacon.entries) == (first + 1, ())
    pr = s.raft.tracker.progress[2]
    assert (pr.state, pr.inflights.count(), pr.next) == (ProgressState.REPLICATE, 2, first + 2)
    # The follower had both appends: its answer to the empty one frees the window.
    s.step(APP_RESP, 2, term=s.raft.term, index=first + 1)
    rest = [e.index for m in apps_to(s.drain(), 2) for e in m.entries]
    assert rest == list(range(first + 2, first + 12))


def test_a_rejected_empty_append_after_lost_appends_goes_back_to_probing() -> None:
    s = leader(max_inflight_msgs=1)
    match = s.raft.tracker.progress[2].match
    s.rn.propose(b"a")
    s.rn.propose(b"b")
    assert len(apps_to(s.drain(), 2)) == 1  # "a", lost on the way
    s.step(MessageType.HEARTBEAT_RESP, 2, term=s.raft.term)
    (beacon,) = apps_to(s.drain(), 2)
    assert beacon.entries == ()
    s.step(APP_RESP, 2, term=s.raft.term, index=beacon.index, reject=True, reject_hint=match)
    (probe,) = apps_to(s.drain(), 2)
    assert (probe.index, [e.data for e in probe.entries]) == (match, [b"a", b"b"])
    assert s.raft.tracker.progress[2].state == ProgressState.PROBE


def test_a_rejection_in_replicate_falls_back_to_probing_from_match() -> None:
    s = leader()
    match = s.raft.tracker.progress[2].match
    s.rn.propose(b"a")
    s.rn.propose(b"b")
    s.drain()
    s.step(APP_RESP, 2, term=s.raft.term, index=match + 1, reject=True, reject_hint=match)
    pr = s.raft.tracker.progress[2]
    assert pr.state == ProgressState.PROBE
    (probe,) = apps_to(s.drain(), 2)
    assert probe.index == match  # resend from just after what 2 acknowledged
    assert pr.is_paused()  # one probe at a time


def test_a_stale_rejection_is_ignored() -> None:
    s = leader()
    match = s.raft.tracker.progress[2].match
    s.step(APP_RESP, 2, term=s.raft.term, index=match, reject=True, reject_hint=match - 1)
    assert s.raft.tracker.progress[2].state == ProgressState.REPLICATE
    assert not apps_to(s.drain(), 2)


def test_report_unreachable_makes_the_leader_probe() -> None:
    s = leader()
    s.rn.report_unreachable(2)
    assert s.raft.tracker.progress[2].state == ProgressState.PROBE


def test_an_acknowledgment_of_match_while_probing_resumes_pipelining() -> None:
    # After an unreachable report the leader probes 2, which is in fact caught up: the empty
    # probe is acknowledged at 2's match. That proves the logs agree, so the leader must go
    # back to pipelining at once rather than hold the next proposal until a heartbeat
    # answer (etcd's heartbeat_resp_recovers_from_probing).
    s = leader(voters=[1, 2, 3, 4, 5])
    index = s.rn.propose(b"a")
    s.drain()
    s.step(APP_RESP, 2, term=s.raft.term, index=index)
    s.rn.report_unreachable(2)
    s.step(APP_RESP, 3, term=s.raft.term, index=index)  # commits a: empty appends to all
    (probe,) = apps_to(s.drain(), 2)
    assert (probe.index, probe.entries) == (index, ())
    s.step(APP_RESP, 2, term=s.raft.term, index=index)  # 2's answer to the probe
    assert s.raft.tracker.progress[2].state == ProgressState.REPLICATE
    s.drain()
    s.rn.propose(b"b")
    assert [e.data for m in apps_to(s.drain(), 2) for e in m.entries] == [b"b"]


def test_a_snapshot_acknowledgment_resumes_replication_after_it() -> None:
    s = Solo(terms=[1, 1, 1], term=1, commit=3)
    s.make_leader()  # no-op 4@2, not yet acknowledged by anyone
    s.storage.create_snapshot(3, s.raft.tracker.conf_state(), b"")
    s.storage.compact(3)
    # 2 has nothing: the leader needs entry 1 for it, which is compacted.
    s.step(APP_RESP, 2, term=2, index=3, reject=True, reject_hint=0)
    pr = s.raft.tracker.progress[2]
    assert (pr.state, pr.pending_snapshot) == (ProgressState.SNAPSHOT, 3)
    assert [m.type for m in s.drain() if m.to == 2] == [MessageType.SNAP]
    s.step(APP_RESP, 2, term=2, index=3)  # installed
    assert pr.state == ProgressState.REPLICATE
    assert [(m.index, len(m.entries)) for m in apps_to(s.drain(), 2)] == [(3, 1)]


def test_a_lost_snapshot_is_retried_once_the_follower_answers_again() -> None:
    s = leader(election_tick=5)
    pr = s.raft.tracker.progress[2]
    pr.become_snapshot(10)
    pr.snapshot_sent_tick = s.raft.now
    s.tick(9)
    s.step(MessageType.HEARTBEAT_RESP, 2, term=s.raft.term)
    assert pr.state == ProgressState.SNAPSHOT  # give it time
    s.tick(1)
    s.step(MessageType.HEARTBEAT_RESP, 2, term=s.raft.term)
    assert pr.state != ProgressState.SNAPSHOT  # 2 election timeouts: try again


def test_report_snapshot_failure_probes_again_from_match() -> None:
    s = leader()
    pr = s.raft.tracker.progress[2]
    pr.become_snapshot(10)
    s.rn.report_snapshot(2, failed=True)
    assert (pr.state, pr.next) == (ProgressState.PROBE, pr.match + 1)
    assert pr.is_paused()  # until 2 answers something


def test_a_heartbeat_response_recovers_a_caught_up_follower_left_probing() -> None:
    # After report_unreachable a caught-up follower is in PROBE with nothing to send it. Its
    # heartbeat answer gets an empty append, whose answer puts it back in REPLICATE, even while
    # nobody writes (etcd's heartbeat_resp_recovers_from_probing.txt).
    s = leader()
    pr = s.raft.tracker.progress[2]
    match = pr.match
    s.rn.report_unreachable(2)
    s.step(MessageType.HEARTBEAT_RESP, 2, term=s.raft.term)
    (probe,) = apps_to(s.drain(), 2)
    assert (probe.index, probe.entries) == (match, ())
    s.step(APP_RESP, 2, term=s.raft.term, index=match)
    assert pr.state == ProgressState.REPLICATE
    assert not apps_to(s.drain(), 2)


def test_an_acknowledgment_that_moves_nothing_gets_no_reply() -> None:
    # The answer to a probe that carried our commit index tells the follower nothing new; the
    # old rule ("it was paused, so send") answered it with an empty append, and that append's
    # answer with nothing: two wasted messages per recovering follower (etcd tracks the commit
    # index it sent instead, probe_and_replicate.txt).
    s = leader()
    pr = s.raft.tracker.progress[2]
    match = pr.match
    s.rn.report_unreachable(2)
    s.tick(s.raft.cfg.heartbeat_tick)
    s.drain()
    s.step(MessageType.HEARTBEAT_RESP, 2, term=s.raft.term)
    (probe,) = apps_to(s.drain(), 2)
    assert probe.commit == s.raft.log.committed
    s.step(APP_RESP, 2, term=s.raft.term, index=match)
    assert pr.state == ProgressState.REPLICATE
    assert not apps_to(s.drain(), 2)
    # But a commit index the follower has not been sent yet is sent at once.
    index = s.rn.propose(b"a")
    s.drain()
    s.step(APP_RESP, 3, term=s.raft.term, index=index)  # commits a; 2 has not answered
    assert [m.commit for m in apps_to(s.drain(), 2)] == [index]


def test_a_snapshot_acknowledgment_that_moves_nothing_gets_no_reply() -> None:
    # The snapshot carried the commit index (its own index): once the follower installs it
    # and is caught up, there is nothing to tell it (snapshot_succeed_via_app_resp.txt).
    s = Solo(terms=[1, 1, 1], term=1, commit=3)
    s.make_leader()  # no-op 4@2, appended to 2 and 3 after index 3
    last = s.raft.log.last_index()
    s.step(APP_RESP, 3, term=s.raft.term, index=last)  # commits it
    s.drain()
    s.storage.create_snapshot(last, s.raft.tracker.conf_state(), b"")
    s.storage.compact(last)
    # 2 has nothing: the leader needs entry 1 for it, which is compacted.
    s.step(APP_RESP, 2, term=s.raft.term, index=3, reject=True, reject_hint=0)
    pr = s.raft.tracker.progress[2]
    assert [m.type for m in s.drain() if m.to == 2] == [MessageType.SNAP]
    s.step(APP_RESP, 2, term=s.raft.term, index=last)
    assert pr.state == ProgressState.REPLICATE
    assert not apps_to(s.drain(), 2)


def test_the_host_can_narrow_one_followers_window_and_widen_it_again() -> None:
    # A host throttling a follower (a learner catching up in a replica move) keeps what the
    # leader reads and sends it small; the other followers keep the configured window.
    s = leader(max_inflight_msgs=8)
    s.rn.set_inflight_limit(2, 1)
    for d in (b"a", b"b", b"c"):
        s.rn.propose(d)
    msgs = s.drain()
    assert [e.data for m in apps_to(msgs, 2) for e in m.entries] == [b"a"]
    assert [e.data for m in apps_to(msgs, 3) for e in m.entries] == [b"a", b"b", b"c"]
    s.rn.set_inflight_limit(2, 0)  # back to max_inflight_msgs
    s.step(APP_RESP, 2, term=s.raft.term, index=apps_to(msgs, 2)[0].entries[-1].index)
    assert [e.data for m in apps_to(s.drain(), 2) for e in m.entries] == [b"b", b"c"]


def test_the_host_can_cut_one_followers_appends_small_and_restore_them() -> None:
    # A throttled follower's appends hold at most max_bytes of entries (at least one entry):
    # the leader reads that much from storage per append, not max_size_per_msg.
    s = leader(max_inflight_msgs=8)
    s.rn.set_inflight_limit(2, 8, max_bytes=700)
    s.rn.propose_many([bytes([i]) * 300 for i in range(5)])  # 324 bytes each, Entry.size
    msgs = s.drain()
    assert [len(m.entries) for m in apps_to(msgs, 2)] == [2]
    assert [len(m.entries) for m in apps_to(msgs, 3)] == [5]
    # Its acknowledgment fills the window: the rest, in appends of at most 700 bytes again.
    s.step(APP_RESP, 2, term=s.raft.term, index=apps_to(msgs, 2)[0].entries[-1].index)
    assert [len(m.entries) for m in apps_to(s.drain(), 2)] == [2, 1]
    assert s.raft.tracker.progress[2].max_msg_bytes == 700
    s.rn.set_inflight_limit(2, 0)  # back to max_inflight_msgs and max_size_per_msg
    assert s.raft.tracker.progress[2].max_msg_bytes == 0
    s.rn.propose_many([b"x" * 300] * 3)
    assert [len(m.entries) for m in apps_to(s.drain(), 2)] == [3]


def test_lazy_commit_sends_the_commit_index_with_the_next_append_or_at_the_next_tick() -> None:
    for lazy in (False, True):
        s = leader(lazy_commit=lazy, heartbeat_tick=5, election_tick=20)
        first = s.rn.propose(b"a")
        s.drain()
        # Followers 2 and 3 acknowledge: the entry commits.
        s.step(APP_RESP, 2, term=s.raft.term, index=first)
        s.step(APP_RESP, 3, term=s.raft.term, index=first)
        sent = s.drain()
        assert s.raft.log.committed == first
        if not lazy:
            # etcd's way: an empty append to each follower with the new commit index at once.
            assert [(m.to, m.entries, m.commit) for m in sent if m.type == APP] == [
                (2, (), first),
                (3, (), first),
            ]
            continue
        assert not [m for m in sent if m.type == APP], "no empty append of its own"
        # A new proposal carries the commit index to every follower.
        s.rn.propose(b"b")
        apps = [m for m in s.drain() if m.type == APP]
        assert [(m.to, [e.data for e in m.entries], m.commit) for m in apps] == [
            (2, [b"b"], first),
            (3, [b"b"], first),
        ]
        # Committed, and nothing new to send: the next tick (not the next heartbeat) tells them.
        s.step(APP_RESP, 2, term=s.raft.term, index=first + 1)
        s.step(APP_RESP, 3, term=s.raft.term, index=first + 1)
        assert not [m for m in s.drain() if m.type == APP]
        s.tick()
        apps = [m for m in s.drain() if m.type == APP]
        assert [(m.to, m.entries, m.commit) for m in apps] == [
            (2, (), first + 1),
            (3, (), first + 1),
        ]
        # Told once: later ticks send nothing more until something changes.
        s.tick()
        assert not [m for m in s.drain() if m.type == APP]
