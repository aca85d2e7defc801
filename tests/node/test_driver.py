"""node/driver.py's writes in flight, on a real RocksDB with the fsync held open: while one
round's sync runs, the next round's appends still leave at once, nothing is acknowledged, counted
or applied before the sync that covers it returns, and the queued rounds finish in order."""

from __future__ import annotations

import asyncio
import errno
import logging
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from node.driver import EXIT_STORAGE_FAILURE, RaftDriver, RaftTiming
from node.membership import load_fences, load_promises
from node.storage import GroupUpdate, NodeStore
from raft import (
    TRANSFER_CONTEXT,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Fence,
    Message,
    MessageType,
    Role,
    Snapshot,
    SoftState,
)

GROUP = "g"
BIG = 128 << 10  # above inline_sync_bytes: the round syncs in the worker thread


class Outbox:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, to: int, group: str, msg: Message) -> None:
        self.sent.append(msg)

    def flush(self) -> None:
        pass

    def take(self, kind: MessageType) -> list[Message]:
        got = [m for m in self.sent if m.type == kind]
        self.sent = [m for m in self.sent if m.type != kind]
        return got


class Machine:
    def __init__(self) -> None:
        self.applied: list[bytes] = []
        self.ticks = 0
        """Ticks the driver gave the group (it ticks awake groups only)."""

    def apply(self, entries: list[Entry]) -> None:
        self.applied += [e.data for e in entries if e.type == EntryType.NORMAL and e.data]

    def restore(self, snapshot: Snapshot) -> None:
        pass

    def on_soft_state(self, soft: SoftState, term: int) -> None:
        pass

    def on_round(self) -> None:
        pass

    def on_tick(self) -> None:
        self.ticks += 1


class HeldSync:
    """Wraps NodeStore.sync_wal: while held, a sync blocks in its thread until released."""

    def __init__(self, real: Callable[[], None]) -> None:
        self.real = real
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        self.entered.set()
        self.gate.wait(10)
        self.real()


async def until(cond: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def leader(tmp_path: Path) -> AsyncIterator[tuple[RaftDriver, Outbox, Machine, HeldSync]]:
    """Node 1 of three, leading group g (nodes 2 and 3 are played by the test)."""
    store = NodeStore(tmp_path / "raft.db")
    held = HeldSync(store.sync_wal)
    store.sync_wal = held  # type: ignore[method-assign]
    out = Outbox()
    driver = RaftDriver(1, store, out, RaftTiming(tick_s=3600))  # no ticks: the test drives
    fsm = Machine()
    group = driver.add_group(GROUP, fsm, ConfState(voters=frozenset({1, 2, 3})))
    driver.start()
    try:
        group.node.campaign()
        driver.touched(GROUP)
        for ask, grant in (
            (MessageType.PRE_VOTE, MessageType.PRE_VOTE_RESP),
            (MessageType.VOTE, MessageType.VOTE_RESP),
        ):
            await until(lambda ask=ask: any(m.type == ask for m in out.sent), ask.name)
            for m in out.take(ask):
                driver.deliver(GROUP, Message(type=grant, to=1, frm=m.to, term=m.term))
        await until(lambda: group.node.role == Role.LEADER, "leadership")
        await until(lambda: any(m.type == MessageType.APP for m in out.sent), "the no-op")
        ack(driver, out)
        await until(lambda: group.node.committed >= 1, "the no-op committed")
        yield driver, out, fsm, held
    finally:
        held.gate.set()
        await driver.stop()
        store.close()


def ack(driver: RaftDriver, out: Outbox, frm: int = 2) -> None:
    """Node `frm` acknowledges every append the leader sent it so far."""
    term = driver.groups[GROUP].node.term
    for m in out.take(MessageType.APP):
        if m.to == frm and m.entries:
            driver.deliver(
                GROUP,
                Message(
                    type=MessageType.APP_RESP, to=1, frm=frm, term=term, index=m.entries[-1].index
                ),
            )


async def test_appends_leave_while_the_previous_round_syncs(
    leader: tuple[RaftDriver, Outbox, Machine, HeldSync],
) -> None:
    driver, out, fsm, held = leader
    node = driver.groups[GROUP].node
    committed = node.committed
    held.gate.clear()
    held.entered.clear()
    node.propose(b"a" * BIG)
    driver.touched(GROUP)
    await until(held.entered.is_set, "the first sync to start")
    first = [m for m in out.sent if m.type == MessageType.APP and m.entries]
    assert first, "the first round's appends left before its sync"
    node.propose(b"b")
    driver.touched(GROUP)
    await until(
        lambda: any(
            m.type == MessageType.APP and any(e.data == b"b" for e in m.entries) for m in out.sent
        ),
        "the second append while the first sync is held",
    )
    assert driver.stats.rounds_over_sync >= 1
    # Node 2 acknowledges both; with our own copy not durable, that is one vote of three.
    ack(driver, out)
    await asyncio.sleep(0.05)
    assert node.committed == committed
    assert fsm.applied == []
    held.gate.set()
    await until(lambda: fsm.applied == [b"a" * BIG, b"b"], "both applied, in order")
    assert node.committed == committed + 2
    assert held.calls >= 2  # the second round waited for a sync of its own


class PermitSync:
    """Wraps NodeStore.sync_wal: each sync waits for a permit the test gives, one at a time."""

    def __init__(self, real: Callable[[], None]) -> None:
        self.real = real
        self.permits = threading.Semaphore(0)
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        assert self.permits.acquire(timeout=10), "the test gave no permit"
        self.real()


async def test_a_commit_is_applied_while_the_next_round_syncs(
    leader: tuple[RaftDriver, Outbox, Machine, HeldSync],
) -> None:
    """Applying ahead (raft/rawnode.py): an entry committed and durable here is applied at once,
    not after the sync of a later round that has nothing to do with it; the later entry is
    applied only once its own sync returns."""
    driver, out, fsm, held = leader
    driver.timing.apply_ahead = True
    syncs = PermitSync(held.real)
    driver.store.sync_wal = syncs  # type: ignore[method-assign]
    try:
        await _apply_while_held(driver, out, fsm, syncs)
    finally:
        syncs.permits.release(100)  # no sync is left waiting when the fixture stops the driver


async def _apply_while_held(
    driver: RaftDriver, out: Outbox, fsm: Machine, syncs: PermitSync
) -> None:
    node = driver.groups[GROUP].node
    node.propose(b"a" * BIG)
    driver.touched(GROUP)
    await until(lambda: syncs.calls == 1, "the first sync to start")
    node.propose(b"b" * BIG)
    driver.touched(GROUP)
    await until(
        lambda: any(
            m.type == MessageType.APP and any(e.data[:1] == b"b" for e in m.entries)
            for m in out.sent
        ),
        "the second append while the first sync is held",
    )
    ack(driver, out)  # node 2 holds both: each commits once our own copy is durable
    await asyncio.sleep(0.05)
    assert fsm.applied == []
    syncs.permits.release()  # the first sync returns; the second starts and is held
    await until(lambda: syncs.calls == 2, "the second sync to start")
    await until(lambda: fsm.applied == [b"a" * BIG], "a applied while b's sync is held")
    assert driver.stats.applied_ahead >= 1
    await asyncio.sleep(0.05)
    assert fsm.applied == [b"a" * BIG], "b applied before its own sync returned"
    syncs.permits.release()
    await until(lambda: fsm.applied == [b"a" * BIG, b"b" * BIG], "b applied after its sync")


async def test_a_vote_reply_waits_for_the_sync_that_covers_the_vote(
    leader: tuple[RaftDriver, Outbox, Machine, HeldSync],
) -> None:
    driver, out, _, held = leader
    node = driver.groups[GROUP].node
    held.gate.clear()
    held.entered.clear()
    node.propose(b"a" * BIG)
    driver.touched(GROUP)
    await until(held.entered.is_set, "the sync to start")
    # A candidate of a higher term asks for our vote while our sync is held: the vote is
    # written in a round queued behind that sync, and its reply waits for the next one.
    term = node.term + 1
    last = node.last_index()
    driver.deliver(
        GROUP,
        Message(
            type=MessageType.VOTE,
            to=1,
            frm=3,
            term=term,
            index=last,
            log_term=node.term,
            context=b"transfer",  # past the leader's lease, as a leadership transfer is
        ),
    )
    await until(lambda: node.term == term, "the new term")
    await asyncio.sleep(0.05)
    assert not [m for m in out.sent if m.type == MessageType.VOTE_RESP]
    held.gate.set()
    await until(lambda: any(m.type == MessageType.VOTE_RESP for m in out.sent), "the vote reply")
    assert node.status().vote == 3


async def _membership_change_acked(driver: RaftDriver, out: Outbox) -> int:
    """Propose adding learner 4, wait until our own copy of it is durable, and have node 2
    acknowledge it: its commit is the next round's. Returns its index."""
    node = driver.groups[GROUP].node
    index = node.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    driver.touched(GROUP)
    await until(lambda: node.persisted_index() >= index, "the change durable here")
    return index


async def test_a_membership_change_is_applied_only_after_a_sync_covers_its_commit(
    leader: tuple[RaftDriver, Outbox, Machine, HeldSync],
) -> None:
    """A round that only moves the commit index does not sync, unless that commit applies a
    membership change: a crash must not take back a change others saw applied (sim seed 524:
    a node restarted in {1,4} after applying its group's change to {4}, with 1 gone)."""
    driver, out, _, held = leader
    group = driver.groups[GROUP]
    await _membership_change_acked(driver, out)
    syncs = held.calls
    ack(driver, out)
    await until(lambda: 4 in group.conf_state.learners, "the change applied")
    assert held.calls > syncs, "the change was applied with its commit index unsynced"


async def test_a_membership_change_is_not_applied_ahead_of_a_sync(
    leader: tuple[RaftDriver, Outbox, Machine, HeldSync],
) -> None:
    driver, out, _, held = leader
    driver.timing.apply_ahead = True
    group = driver.groups[GROUP]
    index = await _membership_change_acked(driver, out)
    held.gate.clear()
    held.entered.clear()
    group.node.propose(b"a" * BIG)
    driver.touched(GROUP)
    await until(held.entered.is_set, "a sync in the worker thread")
    ack(driver, out)  # commits the change (durable here); its round queues behind the sync
    await until(lambda: group.node.committed >= index, "the change committed")
    await asyncio.sleep(0.05)
    assert 4 not in group.conf_state.learners, "applied ahead of the sync of its commit"
    held.gate.set()
    await until(lambda: 4 in group.conf_state.learners, "the change applied after the sync")


# -- fail-stop (issue 10, finding 2) -------------------------------------------------------------
def _eio() -> None:
    raise OSError(errno.EIO, "injected EIO")


async def _fails_stop(
    driver: RaftDriver, out: Outbox, fsm: Machine, halts: list[str], cause: str
) -> None:
    """The driver stopped at once with one CRITICAL cause, and nothing moves after it: acks
    that would commit what it proposed, and a new proposal, change nothing."""
    await until(lambda: bool(halts), "the node to stop")
    assert len(halts) == 1 and cause in halts[0] and "injected EIO" in halts[0]
    assert driver.failure == halts[0]
    assert driver._task is not None
    await until(driver._task.done, "the driver loop to end")
    node = driver.groups[GROUP].node
    ack(driver, out, 2)
    ack(driver, out, 3)
    node.propose(b"after")
    driver.touched(GROUP)
    await asyncio.sleep(0.1)
    assert fsm.applied == []
    assert not [m for m in out.sent if m.type == MessageType.APP_RESP]
    assert not [
        m
        for m in out.sent
        if m.type == MessageType.APP and any(e.data == b"after" for e in m.entries)
    ]


async def test_a_failed_inline_sync_stops_the_node(
    leader: tuple[RaftDriver, Outbox, Machine, HeldSync], caplog: pytest.LogCaptureFixture
) -> None:
    driver, out, fsm, held = leader
    halts: list[str] = []
    driver.halt = halts.append
    held.real = _eio  # the disk fails the next sync (a small round: synced on the loop)
    driver.groups[GROUP].node.propose(b"x")
    driver.touched(GROUP)
    await _fails_stop(driver, out, fsm, halts, "syncing the WAL")
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "STORAGE FAILURE" in critical[0].getMessage()
    assert not [r for r in caplog.records if "continuing" in r.getMessage()]


async def test_a_failed_sync_in_the_worker_thread_stops_the_node(
    leader: tuple[RaftDriver, Outbox, Machine, HeldSync],
) -> None:
    driver, out, fsm, held = leader
    halts: list[str] = []
    driver.halt = halts.append
    held.real = _eio
    driver.groups[GROUP].node.propose(b"x" * BIG)  # a large round: synced in the thread
    driver.touched(GROUP)
    await _fails_stop(driver, out, fsm, halts, "WAL sync")


async def test_a_failed_write_stops_the_node(
    leader: tuple[RaftDriver, Outbox, Machine, HeldSync], monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, out, fsm, _ = leader
    halts: list[str] = []
    driver.halt = halts.append
    monkeypatch.setattr(driver.store, "write", lambda *_a, **_k: _eio())
    driver.groups[GROUP].node.propose(b"x")
    driver.touched(GROUP)
    await _fails_stop(driver, out, fsm, halts, "writing a round to storage")


async def test_a_failed_apply_stops_the_node(
    leader: tuple[RaftDriver, Outbox, Machine, HeldSync],
) -> None:
    driver, out, fsm, _ = leader
    halts: list[str] = []
    driver.halt = halts.append
    node = driver.groups[GROUP].node
    real_apply = fsm.apply

    def failing_apply(entries: list[Entry]) -> None:
        if any(e.data == b"x" for e in entries):
            _eio()
        real_apply(entries)

    fsm.apply = failing_apply  # type: ignore[method-assign]
    node.propose(b"x")
    driver.touched(GROUP)
    await until(lambda: any(m.type == MessageType.APP and m.entries for m in out.sent), "x sent")
    ack(driver, out)  # x commits; applying it fails
    await until(lambda: bool(halts), "the node to stop")
    assert "applying committed entries of group g" in halts[0]
    assert driver._task is not None
    await until(driver._task.done, "the driver loop to end")
    node.propose(b"after")
    driver.touched(GROUP)
    await asyncio.sleep(0.1)
    assert fsm.applied == []


_EXITS = """
import asyncio, logging, sys
from node.driver import RaftDriver, RaftTiming
from node.storage import NodeStore
from raft import ConfState

class Fsm:
    def apply(self, entries): pass
    def restore(self, snapshot): pass
    def on_soft_state(self, soft, term): pass
    def on_round(self): pass
    def on_tick(self): pass

class Outbox:
    def send(self, to, group, msg): pass
    def flush(self): pass

def eio():
    raise OSError(5, "injected EIO")

async def main():
    store = NodeStore(sys.argv[1])
    store.sync_wal = eio
    driver = RaftDriver(1, store, Outbox(), RaftTiming(tick_s=0.01))
    driver.add_group("g", Fsm(), ConfState(voters=frozenset({1})), campaign=True)
    driver.start()
    await asyncio.sleep(10)
    print("still running")

logging.basicConfig(level=logging.INFO)
asyncio.run(main())
"""


def test_fail_stop_ends_the_process_with_a_critical_line(tmp_path: Path) -> None:
    """The production halt: a single-voter group's first synced round fails its sync."""
    proc = subprocess.run(
        [sys.executable, "-c", _EXITS, str(tmp_path / "db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == EXIT_STORAGE_FAILURE, proc.stderr
    assert "still running" not in proc.stdout
    critical = [line for line in proc.stderr.splitlines() if line.startswith("CRITICAL")]
    assert len(critical) == 1 and "STORAGE FAILURE" in critical[0], proc.stderr
    assert "injected EIO" in critical[0]


async def test_a_learner_votes_when_asked(tmp_path: Path) -> None:
    """A learner promoted by a leader that died before it heard of it is a voter of the other
    voters' configuration, not of its own: dropping their vote requests left such a group
    without a leader (a two-voter group whose leader promoted a learner and died elects no one
    until that node returns). A learner answers them, as in etcd (raft/core.py,
    _handle_vote_request); a vote from a non-member is still dropped."""
    store = NodeStore(tmp_path / "raft.db")
    out = Outbox()
    driver = RaftDriver(3, store, out, RaftTiming(tick_s=3600))
    learner = driver.add_group(
        "joined", Machine(), ConfState(voters=frozenset({1, 2}), learners=frozenset({3}))
    )
    driver.start()
    try:
        for kind in (MessageType.PRE_VOTE, MessageType.VOTE):
            driver.deliver("joined", Message(type=kind, to=3, frm=2, term=5, index=0, log_term=0))
        driver.deliver("joined", Message(type=MessageType.VOTE, to=3, frm=9, term=6))
        await until(lambda: sum(m.type == MessageType.VOTE_RESP for m in out.sent) >= 1, "the vote")
        answered = {
            (m.type, m.reject)
            for m in out.sent
            if m.type in (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP)
        }
        assert answered == {(MessageType.PRE_VOTE_RESP, False), (MessageType.VOTE_RESP, False)}
        assert learner.node.status().vote == 2 and learner.node.term == 5
        assert driver.stats.messages_from_non_members == 1
    finally:
        await driver.stop()
        store.close()


async def test_a_replica_added_back_keeps_what_its_deleted_replica_promised(
    tmp_path: Path,
) -> None:
    """The double vote a learner's vote used to risk (the broker simulation's seed 4): node 3
    voted for 1 in term 5 and held entries up to 2@5; a move removed its replica (deleted from
    disk) and added it back. The new replica starts from the old one's term and vote, across a
    restart, and votes only once its log is as up to date as 2@5 (node/membership.py,
    "Promises"; raft/core.py, "Coming back after a removal")."""
    path = tmp_path / "raft.db"
    store = NodeStore(path)
    out = Outbox()
    driver = RaftDriver(3, store, out, RaftTiming(tick_s=3600))
    gid = "p1.0"
    group = driver.add_group(gid, Machine(), ConfState(voters=frozenset({1, 2, 3})))
    driver.start()
    try:
        driver.deliver(gid, Message(type=MessageType.VOTE, to=3, frm=1, term=5))
        ents = (Entry(index=1, term=5), Entry(index=2, term=5, data=b"x"))
        driver.deliver(
            gid,
            Message(type=MessageType.APP, to=3, frm=1, term=5, index=0, log_term=0, entries=ents),
        )
        await until(lambda: any(m.type == MessageType.APP_RESP for m in out.sent), "the ack")
        assert group.storage.hard_state.vote == 1 and group.storage.last_index() == 2
        driver.remove_group(gid, destroy=True)
    finally:
        await driver.stop()
        store.close()

    store = NodeStore(path)
    out = Outbox()
    driver = RaftDriver(3, store, out, RaftTiming(tick_s=3600))
    try:
        assert gid not in store.groups()
        group = driver.add_group(
            gid, Machine(), ConfState(voters=frozenset({1, 2}), learners=frozenset({3}))
        )
        assert (group.node.term, group.node.status().vote) == (5, 1)
        assert driver.fence_of(gid) == Fence(min_term=1, floor_term=5, floor_index=2)
        driver.start()
        # Node 2, which never applied 3's removal, asks in term 5 and 6 with a log lacking 2@5.
        for term in (5, 6):
            for kind in (MessageType.PRE_VOTE, MessageType.VOTE):
                driver.deliver(gid, Message(type=kind, to=3, frm=2, term=term, index=1, log_term=5))
        # Leader 1 of term 6 refills it: past 2@5, the floor lifts and leaves the disk.
        ents = (Entry(index=1, term=5), Entry(index=2, term=5, data=b"x"), Entry(index=3, term=6))
        driver.deliver(
            gid,
            Message(type=MessageType.APP, to=3, frm=1, term=6, index=0, log_term=0, entries=ents),
        )
        await until(lambda: driver.fence_of(gid) is None, "the floor lifted")
        assert not any(
            m.type in (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP) and not m.reject
            for m in out.sent
        )
        assert group.node.term == 6 and group.node.status().vote == 0
        # (A transfer's vote request: it was just heard from leader 1, whose lease holds.)
        driver.deliver(
            gid,
            Message(
                type=MessageType.VOTE,
                to=3,
                frm=2,
                term=7,
                index=3,
                log_term=6,
                context=TRANSFER_CONTEXT,
            ),
        )
        await until(lambda: group.node.status().vote == 2, "the vote for an up-to-date candidate")
    finally:
        await driver.stop()
        store.close()
    store = NodeStore(path)
    try:
        assert load_fences(store) == {} and load_promises(store) == {}
    finally:
        store.close()


async def test_a_replica_added_back_and_deleted_again_at_once_keeps_the_first_ones_floor(
    tmp_path: Path,
) -> None:
    """The broker simulation's seed 50284: node 3's replica (term 3, entries up to 41@3) was
    deleted by a move; after a restart it was opened from stale metadata with the promised
    floor and deleted again before it held anything. Its promises were then rewritten from
    its own empty log, the floor gone; added back once more, it voted for a candidate that
    lacked 23..41, committed with its first replica's help, and they were lost."""
    path = tmp_path / "raft.db"
    store = NodeStore(path)
    driver = RaftDriver(3, store, Outbox(), RaftTiming(tick_s=3600))
    gid = "p1.0"
    try:
        g = driver.add_group(gid, Machine(), ConfState(voters=frozenset({1, 2, 3})))
        g.node.step(Message(type=MessageType.VOTE, to=3, frm=2, term=3))
        ents = (Entry(index=1, term=3), Entry(index=2, term=3, data=b"x"))
        g.node.step(
            Message(type=MessageType.APP, to=3, frm=2, term=3, index=0, log_term=0, entries=ents)
        )
        rd = g.node.ready()
        store.write([GroupUpdate(group=g.storage, hard_state=rd.hard_state, entries=rd.entries)])
        g.node.advance(rd)
        assert g.storage.last_index() == 2
        driver.remove_group(gid, destroy=True)
        again = driver.add_group(gid, Machine(), ConfState(voters=frozenset({1, 2, 3})))
        assert again.storage.last_index() == 0
        assert driver.fence_of(gid) == Fence(min_term=1, floor_term=3, floor_index=2)
        driver.remove_group(gid, destroy=True)  # before anything reached it
        assert load_promises(store)[gid].last_index == 2
        third = driver.add_group(
            gid, Machine(), ConfState(voters=frozenset({1, 2}), learners=frozenset({3}))
        )
        assert (third.node.term, third.node.status().vote) == (3, 2)
        assert driver.fence_of(gid) == Fence(min_term=1, floor_term=3, floor_index=2)
    finally:
        store.close()


async def test_a_deleted_topics_replicas_leave_no_promises(tmp_path: Path) -> None:
    """Promises outlive a replica only while its group can come back: not past its topic's
    deletion (for_good, or forget_promises for a replica deleted before the topic was)."""
    store = NodeStore(tmp_path / "raft.db")
    driver = RaftDriver(3, store, Outbox(), RaftTiming(tick_s=3600))
    try:
        for gid in ("p1.0", "p2.0"):
            g = driver.add_group(gid, Machine(), ConfState(voters=frozenset({1, 2, 3})))
            g.node.step(Message(type=MessageType.VOTE, to=3, frm=1, term=4))
            rd = g.node.ready()
            store.write([GroupUpdate(group=g.storage, hard_state=rd.hard_state)])
            g.node.advance(rd)
        driver.remove_group("p1.0", destroy=True)
        driver.remove_group("p2.0", destroy=True, for_good=True)
        assert set(load_promises(store)) == {"p1.0"}
        driver.forget_promises(lambda gid: gid == "p1.0")
        assert load_promises(store) == {}
        again = driver.add_group("p1.0", Machine(), ConfState(voters=frozenset({1, 2, 3})))
        assert again.node.term == 0 and driver.fence_of("p1.0") is None
    finally:
        store.close()


async def test_a_failed_write_of_promises_stops_the_node_and_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica is deleted only once what it promised is on disk: if that write fails, the
    node stops (fail-stop) and the replica is still there for the next start."""
    store = NodeStore(tmp_path / "raft.db")
    driver = RaftDriver(3, store, Outbox(), RaftTiming(tick_s=3600))
    halts: list[str] = []
    driver.halt = halts.append
    try:
        g = driver.add_group("p1.0", Machine(), ConfState(voters=frozenset({1, 2, 3})))
        g.node.step(Message(type=MessageType.VOTE, to=3, frm=1, term=4))
        rd = g.node.ready()
        store.write([GroupUpdate(group=g.storage, hard_state=rd.hard_state)])
        g.node.advance(rd)
        monkeypatch.setattr(store, "write", lambda *_a, **_k: _eio())
        with pytest.raises(OSError):
            driver.remove_group("p1.0", destroy=True)
        assert driver.failure is not None and "promises" in driver.failure
        assert len(halts) == 1
        monkeypatch.undo()
        assert "p1.0" in store.groups() and load_promises(store) == {}
    finally:
        store.close()


async def test_a_replica_hears_a_leader_the_metadata_names_before_it_applied_its_addition(
    tmp_path: Path,
) -> None:
    """A replica that has not applied the change adding a new member used to drop that member's
    messages as a non-member's, for good: after a move made the new member leader, the replica
    never caught up (the chaos move fault, seed 1: 3,000 heartbeats dropped, its high watermark
    stuck). A leader's messages from a node the metadata names as a replica (or a move's target)
    are heard; from any other node they are still dropped."""
    store = NodeStore(tmp_path / "raft.db")
    out = Outbox()
    driver = RaftDriver(4, store, out, RaftTiming(tick_s=3600))
    driver.expected_members = lambda group: {3} if group == "moved" else ()
    for gid in ("moved", "other"):
        driver.add_group(gid, Machine(), ConfState(voters=frozenset({1, 2, 4})))
    driver.start()
    try:
        for gid in ("moved", "other"):
            driver.deliver(gid, Message(type=MessageType.HEARTBEAT, to=4, frm=3, term=7, commit=0))
        await until(
            lambda: (
                driver.groups["moved"].node.term == 7
                and driver.stats.messages_from_non_members == 1
            ),
            "the heartbeat heard, the other dropped",
        )
        assert driver.groups["moved"].node.status().leader == 3
        assert driver.groups["other"].node.term == 0
    finally:
        await driver.stop()
        store.close()


async def test_a_replica_votes_for_a_member_the_metadata_names_before_it_applied_its_addition(
    tmp_path: Path,
) -> None:
    """Voters {1,2,4} add 3, promote it and remove 1; the leader dies before node 4 applies any
    of it. Node 3 needs node 4's vote ({2,3,4} with 2 gone), and node 4 cannot win in its own
    stale configuration: if 4 drops 3's vote requests as a non-member's, the group stays
    leaderless. Votes are safe to grant whoever asks, so a vote request from a node the metadata
    names is answered; from any other non-member it is still dropped."""
    store = NodeStore(tmp_path / "raft.db")
    out = Outbox()
    driver = RaftDriver(4, store, out, RaftTiming(tick_s=3600))
    driver.expected_members = lambda group: {3} if group == "moved" else ()
    for gid in ("moved", "other"):
        driver.add_group(gid, Machine(), ConfState(voters=frozenset({1, 2, 4})))
    driver.start()
    try:
        for gid in ("moved", "other"):
            for kind in (MessageType.PRE_VOTE, MessageType.VOTE):
                driver.deliver(gid, Message(type=kind, to=4, frm=3, term=9, index=5, log_term=8))
        await until(lambda: sum(m.type == MessageType.VOTE_RESP for m in out.sent) >= 1, "the vote")
        answered = {
            (m.type, m.reject)
            for m in out.sent
            if m.type in (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP)
        }
        assert answered == {(MessageType.PRE_VOTE_RESP, False), (MessageType.VOTE_RESP, False)}
        assert driver.groups["moved"].node.status().vote == 3
        assert driver.groups["other"].node.term == 0
        assert driver.stats.messages_from_non_members == 2
    finally:
        await driver.stop()
        store.close()


async def test_a_throttled_peer_is_read_tick_sized_appends(
    leader: tuple[RaftDriver, Outbox, Machine, HeldSync],
) -> None:
    """The leader reads each append from its database in one call that holds the GIL: for a
    throttled peer (a replica being moved in) it reads one tick's allowance at a time, not
    max_size_per_msg, so no read of the old log holds the event loop long; the other
    followers get whole appends."""
    driver, out, _fsm, _held = leader
    node = driver.groups[GROUP].node
    term = node.term
    last = node.last_index()
    # Node 3 answers the leader's probe: it is in sync and replicating.
    driver.deliver(GROUP, Message(type=MessageType.APP_RESP, to=1, frm=3, term=term, index=last))
    await asyncio.sleep(0.05)
    out.take(MessageType.APP)
    driver.set_throttle(GROUP, 3, 1)  # 3,600 bytes per (hour-long) tick: nothing is released
    throttle = driver.throttles[(GROUP, 3)]
    assert throttle.piece == 3600 and throttle.window == 2  # at least 2 in flight
    node.propose_many([bytes([i]) * 2000 for i in range(5)])  # one append of 5 entries
    driver.touched(GROUP)
    await until(
        lambda: (
            sum(len(m.entries) for m in out.sent if m.type == MessageType.APP and m.to == 2) == 5
        ),
        "node 2's appends",
    )
    # One 2,000-byte entry per append (two would be over 3,600), where one append held all 5
    # (cut into pieces in the bucket).
    assert [[e.index for e in m.entries] for m in throttle.held] == [[last + 1]]
    # An acknowledgment fills the window (2 in flight): again one entry per append.
    driver.deliver(
        GROUP, Message(type=MessageType.APP_RESP, to=1, frm=3, term=term, index=last + 1)
    )
    await until(lambda: len(throttle.held) == 3, "two more appends to node 3")
    assert [[e.index for e in m.entries] for m in throttle.held] == [
        [last + 1],
        [last + 2],
        [last + 3],
    ]
    driver.set_throttle(GROUP, 3, 0)  # lifted: what waited leaves, the rest in whole appends
    progress = node.progress_of(3)
    assert progress is not None and progress.max_msg_bytes == 0


async def test_a_node_with_no_group_awake_wakes_only_when_its_tick_listeners_have_work(
    tmp_path: Path,
) -> None:
    """With nothing awake the tick timer spans the ticks up to the listeners' next duty (the
    broker's: every fifth), and the listeners still hear every tick, in order; a group that
    wakes is ticked tick by tick again, with no burst of the ticks it slept through."""
    store = NodeStore(tmp_path / "raft.db")
    driver = RaftDriver(1, store, Outbox(), RaftTiming(tick_s=0.002))
    heard: list[int] = []
    driver.tick_listeners.append(lambda: heard.append(len(heard) + 1))
    driver.next_duty_in = lambda: 5 - len(heard) % 5
    driver.start()
    try:
        await until(lambda: len(heard) >= 40, "forty ticks")
        passes = driver.stats.tick_passes
        assert passes <= len(heard) // 5 + 1, (passes, len(heard))
        assert heard == list(range(1, len(heard) + 1))
        # A group wakes: from its first tick on, one pass per tick again.
        fsm = Machine()
        driver.add_group(GROUP, fsm, ConfState(voters=frozenset({1, 2, 3})))
        heard_at_add = len(heard)
        await until(lambda: fsm.ticks >= 30, "thirty ticks of the group")
        ticked = fsm.ticks
        since = len(heard) - heard_at_add
        assert ticked <= since <= ticked + 5, (ticked, since)
        assert driver.stats.tick_passes - passes >= ticked
    finally:
        await driver.stop()
        store.close()


async def test_a_timer_that_fires_a_float_epsilon_early_still_ticks(tmp_path: Path) -> None:
    """uvloop's clock is in whole milliseconds: the tick timer fires when loop.time() reads a
    hair below `_next_tick` (most ticks, on a host up more than 2**16 s). That wake-up must
    tick and re-arm; it returned without either, and the driver slept until a message came (a
    new cluster never elected its controller)."""
    driver = RaftDriver(1, NodeStore(tmp_path / "raft.db"), Outbox(), RaftTiming(tick_s=0.02))
    driver.start()
    try:
        due = driver._next_tick
        ticks = driver._ticks
        driver._maybe_tick(due - 1e-9)
        assert driver._ticks == ticks + 1
        assert driver._next_tick > due  # and the next one is armed
    finally:
        await driver.stop()


async def test_a_timer_that_fires_well_before_its_time_is_armed_again(tmp_path: Path) -> None:
    """Whatever the loop's clock does, a tick timer spent before the tick is due must leave
    another armed: the driver's ticks (elections, heartbeats) may never stop for good."""
    driver = RaftDriver(1, NodeStore(tmp_path / "raft.db"), Outbox(), RaftTiming(tick_s=0.02))
    driver.start()
    try:
        due = driver._next_tick
        ticks = driver._ticks
        driver._tick_timer_fired()  # as if the timer fired 10 ms early
        driver._maybe_tick(due - 0.01)
        assert driver._ticks == ticks  # not due yet: no tick
        assert driver._tick_handle is not None  # but the next one is armed
        await asyncio.sleep(0.1)
        assert driver._ticks > ticks  # and it came
    finally:
        await driver.stop()
