"""One plumbing for the node's replicated state machines (Redpanda's `mux_state_machine`).

Theory of operation. The controller (cluster metadata) and the consumer-group coordinator
(committed offsets, members) are each one Raft group over every node, and every node applies the
same commands in the same order to its own copy of the state. What they share lives here; a
subclass only says how to apply a command (`apply_command`), how to write its state into a
snapshot (`snapshot_state`) and read it back (`restore_state`), and which error tells a caller
that another node leads now (`not_leader`, `superseded`).

`replicate_and_wait(command)` proposes the command's bytes on this node's RawNode (only a leader
may), registers a waiter keyed by the entry's index with the term it was proposed in, and waits.
A waiter is answered when the entry at its index is applied, and only then:

- the entry is the proposal itself (same index, same term): the command's result, or the
  BrokerError with which `apply_command` refused it (a refusal changes nothing, on every node);
- another entry took its place (a new leader's no-op or conf change, or another leader's command
  in a later term): `superseded()`, a retriable error: the command was not written;
- a snapshot from the leader replaced the log up to its index: REQUEST_TIMED_OUT, since whether
  the command was written, and what it returned, is not known here.

Stepping down fails nothing: a pending proposal may still be committed (a hand-off commits them
all), so each learns its fate from the entry applied at its index, or its caller's deadline ends
it (REQUEST_TIMED_OUT: outcome unknown).

Snapshots. Every `snapshot_every` applied entries the state is snapshotted at the last applied
index and the log before it dropped, keeping half that many entries so a follower slightly behind
catches up from the log. A restart reopens at the snapshot (node/driver.py) and applies only the
entries after it: commands need not be idempotent.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from node.command import Command, CommandSet
from node.driver import Group, RaftDriver, snapshot_and_trim
from node.errors import BrokerError, ErrorCode
from raft import (
    ConfState,
    Entry,
    EntryType,
    NotLeaderError,
    ProposalDroppedError,
    Snapshot,
    SoftState,
)


class ReplicatedStateMachine(ABC):
    """A Raft group's state machine with propose-and-wait; subclasses only apply commands."""

    snapshot_every: ClassVar[int] = 1000
    """Applied entries between two snapshots (a class attribute: tests scale it down)."""

    def __init__(self, node_id: int, driver: RaftDriver, group_id: str, voters: list[int]) -> None:
        """Opens the group, which may restore a snapshot at once: a subclass sets up the state
        `restore_state` writes to before it calls this."""
        self.node_id = node_id
        self.driver = driver
        self.group_id = group_id
        self._waiters: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        """index -> (term it was proposed in, the proposer's future)."""
        self._applied_since_snapshot = 0
        # Metadata: followers apply each change as soon as it commits (RaftDriver.add_group).
        self.raft_group: Group = driver.add_group(
            group_id, self, bootstrap=ConfState(voters=frozenset(voters)), eager_commit=True
        )

    # -- what a subclass says ------------------------------------------------------------------
    commands: ClassVar[CommandSet]
    """The commands this state machine applies: their one decode (node/command.py)."""

    @abstractmethod
    def apply_command(self, command: Command) -> Any:
        """Apply one committed command; return its result or raise BrokerError to refuse it
        (the refusal is then its result, and the state must be as it was)."""

    @abstractmethod
    def snapshot_state(self) -> bytes:
        """The whole state, for a snapshot."""

    @abstractmethod
    def restore_state(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's."""

    @abstractmethod
    def not_leader(self) -> BrokerError:
        """Why a proposal was refused here: this node does not lead the group."""

    @abstractmethod
    def superseded(self) -> BrokerError:
        """Why a proposal was not written: another entry took its index (retriable)."""

    def on_applied(self, changed: bool) -> None:
        """After each batch of applied entries; `changed` if any command was applied."""
        return None

    def on_restored(self) -> None:
        """After the state was replaced by a snapshot."""
        return None

    def on_soft_state(self, soft: SoftState, term: int) -> None:
        """Leadership changed (node/driver.py's StateMachine)."""
        return None

    def on_round(self) -> None:
        return None

    def on_tick(self) -> None:
        return None

    # -- views ---------------------------------------------------------------------------------
    @property
    def leader(self) -> int:
        return self.raft_group.node.leader

    # -- proposing -----------------------------------------------------------------------------
    async def replicate_and_wait(self, command: Command) -> Any:
        """Propose `command` as this group's leader and return its result once applied here."""
        if type(command) not in self.commands:
            raise TypeError(f"{type(command).__name__} is not a {self.commands.name} command")
        node = self.raft_group.node
        try:
            index = node.propose(command.encode())
        except (NotLeaderError, ProposalDroppedError):
            raise self.not_leader() from None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[index] = (node.term, fut)
        self.driver.touched(self.group_id)
        try:
            return await fut
        finally:
            self._waiters.pop(index, None)

    # -- the driver's side (node/driver.py's StateMachine) -------------------------------------
    def apply(self, entries: list[Entry]) -> None:
        changed = False
        for e in entries:
            waiter = self._waiters.pop(e.index, None)
            if e.type != EntryType.NORMAL:
                # A new leader's no-op (or a conf change) took the proposal's place.
                if waiter is not None and not waiter[1].done():
                    waiter[1].set_exception(self.superseded())
                continue
            try:
                result: Any = self.apply_command(self.commands.decode(e.data))
                changed = True
            except BrokerError as err:
                result = err
            if waiter is None:
                continue
            term, fut = waiter
            if fut.done():
                pass
            elif term != e.term:
                fut.set_exception(self.superseded())
            elif isinstance(result, BrokerError):
                fut.set_exception(result)
            else:
                fut.set_result(result)
        self._applied_since_snapshot += len(entries)
        if self._applied_since_snapshot >= self.snapshot_every and entries:
            self.take_snapshot(entries[-1].index)
        self.on_applied(changed)

    def take_snapshot(self, index: int) -> None:
        """Snapshot the state as of applied `index` and trim the log before it."""
        snapshot_and_trim(self.raft_group, index, self.snapshot_state(), self.snapshot_every // 2)
        self._applied_since_snapshot = 0

    def restore(self, snapshot: Snapshot) -> None:
        self.restore_state(snapshot.data)
        self._fail_covered_waiters(snapshot)
        self.on_restored()

    def _fail_covered_waiters(self, snapshot: Snapshot) -> None:
        """A snapshot from the leader replaced the entries at these waiters' indexes: whether
        their proposals were written is not known here (nor their results), so say so."""
        for index in [i for i in self._waiters if i <= snapshot.meta.index]:
            _term, fut = self._waiters.pop(index)
            if not fut.done():
                fut.set_exception(
                    BrokerError(
                        ErrorCode.REQUEST_TIMED_OUT,
                        f"the outcome of the proposal at index {index} is unknown here (a "
                        "snapshot replaced the log): it may have been applied",
                    )
                )
