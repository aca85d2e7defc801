"""A small in-memory cluster for the paper tests: RawNodes over MemoryStorage, a message queue,
and the host loop of raft/rawnode.py. Quieter and more programmable than the scenario driver.

Nothing is delivered implicitly: `flush` runs host loops and delivers messages until the
cluster is quiet, `deliver` hands over only the messages a predicate picks. A node that is
`down` neither sends nor receives (its messages are lost), and `crash` throws away everything
a node had not persisted, restarting it from its MemoryStorage as a real restart would.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable
from typing import Any

from raft import (
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    Role,
)


def storage_with(
    voters: Iterable[int],
    terms: Iterable[int] = (),
    hard_state: HardState | None = None,
    learners: Iterable[int] = (),
) -> MemoryStorage:
    """A MemoryStorage bootstrapped with `voters` holding one entry per term in `terms`
    (indexes 1, 2, ...), as if those had been persisted earlier."""
    s = MemoryStorage(ConfState(voters=frozenset(voters), learners=frozenset(learners)))
    s.append([Entry(index=i + 1, term=t, data=b"") for i, t in enumerate(terms)])
    if hard_state is not None:
        s.set_hard_state(hard_state)
    return s


class Cluster:
    def __init__(
        self,
        ids: Iterable[int],
        *,
        storages: dict[int, MemoryStorage] | None = None,
        election_tick: int = 10,
        heartbeat_tick: int = 1,
        pre_vote: bool = False,
        check_quorum: bool = False,
        max_size_per_msg: int = 1 << 20,
        seed: int = 0,
    ) -> None:
        self.ids = sorted(ids)
        self.storages = storages or {i: storage_with(self.ids) for i in self.ids}
        # Per node, the same settings; id, rng and applied are filled in at each (re)start.
        self.template = Config(
            id=1,
            election_tick=election_tick,
            heartbeat_tick=heartbeat_tick,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_size_per_msg=max_size_per_msg,
        )
        self.seed = seed
        self.nodes: dict[int, RawNode] = {}
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.ids}
        for i in self.ids:
            self._start(i)
        self.queue: list[Message] = []
        self.down: set[int] = set()

    def _start(self, node_id: int) -> None:
        applied = self.applied[node_id]
        cfg = dataclasses.replace(
            self.template,
            id=node_id,
            rng=random.Random(self.seed * 1000 + node_id),
            applied=applied[-1].index if applied else 0,
        )
        self.nodes[node_id] = RawNode(cfg, self.storages[node_id])

    # -- the host loop -------------------------------------------------------------------------
    def ready(self, node_id: int) -> bool:
        """One host loop iteration on node_id; False if it had nothing to do."""
        rn = self.nodes[node_id]
        if node_id in self.down or not rn.has_ready():
            return False
        rd = rn.ready()
        st = self.storages[node_id]
        self._send(rd.messages)
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        st.append(rd.entries)
        self._send(rd.persisted_messages)
        for e in rd.committed_entries:
            if e.type == EntryType.CONF_CHANGE:
                rn.apply_conf_change(ConfChange.decode(e.data))
            self.applied[node_id].append(e)
        rn.advance(rd)
        return True

    def _send(self, msgs: list[Message]) -> None:
        self.queue.extend(m for m in msgs if m.frm not in self.down and m.to not in self.down)

    def deliver(self, pick: Callable[[Message], bool] = lambda m: True) -> int:
        """Step the queued messages `pick` selects (the rest stay queued); returns how many."""
        chosen = [m for m in self.queue if pick(m)]
        self.queue = [m for m in self.queue if not pick(m)]
        n = 0
        for m in chosen:
            if m.to in self.down or m.frm in self.down or m.to not in self.nodes:
                continue
            self.nodes[m.to].step(m)
            n += 1
        return n

    def flush(self, pick: Callable[[Message], bool] = lambda m: True, rounds: int = 1000) -> None:
        """Run host loops and deliver picked messages until nothing moves; messages not picked
        are dropped (a lossy network), so the loop always ends."""
        for _ in range(rounds):
            moved = False
            for i in self.ids:
                moved |= self.ready(i)
            queued, self.queue = self.queue, []
            for m in queued:
                blocked = m.to in self.down or m.frm in self.down or m.to not in self.nodes
                if pick(m) and not blocked:
                    self.nodes[m.to].step(m)
                    moved = True
            if not moved:
                return
        raise AssertionError(f"cluster not quiet after {rounds} rounds")

    # -- faults --------------------------------------------------------------------------------
    def crash(self, node_id: int) -> None:
        """Lose node_id's volatile state and take it down; `restart` brings it back."""
        self.down.add(node_id)
        self.queue = [m for m in self.queue if node_id not in (m.to, m.frm)]

    def restart(self, node_id: int) -> None:
        self.down.discard(node_id)
        self._start(node_id)

    # -- conveniences --------------------------------------------------------------------------
    def elect(self, node_id: int) -> None:
        self.nodes[node_id].campaign()
        self.flush()
        assert self.nodes[node_id].role == Role.LEADER, f"{node_id} did not win"

    def leaders(self) -> list[int]:
        return [i for i, rn in self.nodes.items() if rn.role == Role.LEADER and i not in self.down]

    def log_terms(self, node_id: int) -> list[int]:
        """Terms of node_id's log entries, index 1 upwards (the log must start at 1)."""
        log = self.nodes[node_id].raft.log
        return [e.term for e in log.slice(1, log.last_index() + 1, None)]


class Solo:
    """One RawNode over MemoryStorage whose peers are imaginary: the test plays them by
    stepping messages in by hand and reading what the node sends back."""

    def __init__(
        self,
        node_id: int = 1,
        voters: Iterable[int] = (1, 2, 3),
        *,
        learners: Iterable[int] = (),
        terms: Iterable[int] = (),
        term: int = 0,
        vote: int = 0,
        commit: int = 0,
        seed: int = 0,
        **cfg: Any,
    ) -> None:
        # The plain algorithm of the paper unless a test asks for its extensions.
        cfg.setdefault("pre_vote", False)
        cfg.setdefault("check_quorum", False)
        self.storage = storage_with(
            voters, terms, HardState(term=term, vote=vote, commit=commit), learners
        )
        self.rn = RawNode(Config(id=node_id, rng=random.Random(seed), **cfg), self.storage)
        self.raft = self.rn.raft
        self.id = node_id

    def role(self) -> Role:
        """The current role (a call, so type checkers do not carry an earlier assert over)."""
        return self.raft.role

    def step(self, type: MessageType, frm: int, **fields: Any) -> None:
        self.rn.step(Message(type=type, to=self.id, frm=frm, **fields))

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.rn.tick()

    def drain(self) -> list[Message]:
        """Run the host loop until there is no Ready; returns every message sent."""
        out: list[Message] = []
        while self.rn.has_ready():
            rd = self.rn.ready()
            if rd.snapshot is not None:
                self.storage.apply_snapshot(rd.snapshot)
            if rd.hard_state is not None:
                self.storage.set_hard_state(rd.hard_state)
            self.storage.append(rd.entries)
            out += rd.messages + rd.persisted_messages
            for e in rd.committed_entries:
                if e.type == EntryType.CONF_CHANGE:
                    self.rn.apply_conf_change(ConfChange.decode(e.data))
            self.rn.advance(rd)
        return out

    def make_leader(self) -> None:
        """Campaign and win with the (pre-)votes of every other voter, then persist the
        new leader's no-op, which is left uncommitted."""
        self.rn.campaign()
        others = sorted(self.raft.tracker.voters - {self.id})
        if self.raft.role == Role.PRE_CANDIDATE:
            term = self.raft.term + 1
            for v in others:
                if self.raft.role == Role.PRE_CANDIDATE:
                    self.step(MessageType.PRE_VOTE_RESP, v, term=term)
        # Persist the new term and our vote: our own vote counts only then (a single voter
        # wins here).
        self.drain()
        term = self.raft.term
        for v in others:
            if self.raft.role == Role.CANDIDATE:
                self.step(MessageType.VOTE_RESP, v, term=term)
        assert self.raft.role == Role.LEADER
        self.drain()

    def commit_all(self) -> None:
        """As leader, have every follower acknowledge the whole log."""
        last = self.raft.log.last_index()
        for v in sorted(self.raft.tracker.progress):
            if v != self.id:
                self.step(MessageType.APP_RESP, v, term=self.raft.term, index=last)
        self.drain()
