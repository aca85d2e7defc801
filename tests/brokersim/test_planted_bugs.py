"""The broker simulation proves it can fail: each test puts back a known broker bug (patched for
the test only) and asserts that the simulation finds it within the seeds CI runs (200).

(a) issue 10 finding 1: restart at the log's compaction point instead of the snapshot index,
    re-applying controller and group commands the snapshot already holds;
(b) issue 10 finding 2: a failed sync that does not stop the node ("continuing");
(c) a partition leader that answers acks=all before the batch is committed;
(d) a producer-state table that forgets its dedup window when restored from a snapshot;
(e) a DeleteRecords that moves only the leader's log start (not through the Raft log);
(f) a snapshot that forgets the log start DeleteRecords asked for;
(g) issue 19: a controller leader that never admits a node's new incarnation (its disk was
    wiped): the node stays fenced out of the controller for good;
(h) issue 19: a replica moved away and back that forgets what its deleted replica promised
    (node/membership.py, "Promises"): learners vote, so it votes again in a term its old
    replica voted in (first found at seed 13).

Seeds run in order and the hunt stops at the first failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

import node.driver
from node.broker import Broker
from node.driver import RaftDriver
from node.errors import BrokerError, ErrorCode
from node.partition import ACKS_ALL, ACKS_LEADER, Partition
from node.producer_state import ProducerStateTable
from raft import RawNode
from tests.brokersim.runner import first_failure
from tests.brokersim.world import SeedResult

BUDGET = 200  # what CI runs


def _hunt(budget: int = BUDGET) -> SeedResult:
    found = first_failure(list(range(budget)))
    assert found is not None, f"the simulation did not find the planted bug in {budget} seeds"
    print(f"found at seed {found.seed}: {found.error}")
    return found


def test_restart_at_the_compaction_point(monkeypatch: pytest.MonkeyPatch) -> None:
    def raw_node(cfg: object, storage: object) -> RawNode:
        first = storage.first_index()  # type: ignore[attr-defined]
        return RawNode(dataclasses.replace(cfg, applied=first - 1), storage)  # type: ignore[type-var, arg-type]

    monkeypatch.setattr(node.driver, "RawNode", raw_node)
    found = _hunt()
    assert found.prop in {"replicas agree", "producer ids unique"}, found.error


def test_a_failed_sync_that_does_not_stop_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    def continuing(self: RaftDriver, cause: str) -> None:
        logging.getLogger("liferaft.driver").error("raft driver round failed; continuing")
        self._task = asyncio.get_running_loop().create_task(self._run())

    monkeypatch.setattr(RaftDriver, "_fail_stop", continuing)
    found = _hunt()
    assert found.prop == "fail-stop", found.error


def test_acks_all_answered_before_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    produce = Partition.produce

    def eager(self: Partition, batch: bytes, acks: int) -> tuple[int, object]:
        return produce(self, batch, ACKS_LEADER if acks == ACKS_ALL else acks)

    monkeypatch.setattr(Partition, "produce", eager)
    found = _hunt()
    assert found.prop in {
        "no acknowledged record lost",
        "idempotent sequences accepted",
        "acknowledged records stay where they were acknowledged",
        "idempotent records exactly once",
    }, found.error


def test_producer_state_forgotten_on_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        ProducerStateTable, "from_json", classmethod(lambda cls, raw, max_producers=2048: cls())
    )
    found = _hunt()
    assert found.prop in {
        "idempotent sequences accepted",
        "idempotent records exactly once",
        "replicas agree",
    }, found.error


def test_delete_records_on_the_leader_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def local(self: Partition, offset: int) -> tuple[int, None]:
        if not self.is_leader:
            raise self._not_leader()
        target = self.high_watermark if offset == -1 else offset
        if not 0 <= target <= self.high_watermark:
            raise BrokerError(ErrorCode.OFFSET_OUT_OF_RANGE, "out of range")
        self.offsets.advance_start(target)
        return self.log_start_offset, None

    monkeypatch.setattr(Partition, "delete_records", local)
    found = _hunt()
    assert found.prop in {
        "replicas agree on the log start",
        "acknowledged deletions kept",
    }, found.error


def test_requested_log_start_forgotten_on_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    restore = Partition.restore

    def forgetful(self: Partition, snapshot: object) -> None:
        restore(self, snapshot)  # type: ignore[arg-type]
        self.requested_log_start = 0

    monkeypatch.setattr(Partition, "restore", forgetful)
    found = _hunt()
    assert found.prop in {
        "replicas agree",
        "replicas agree on the log start",
        "acknowledged deletions kept",
    }, found.error


def test_a_new_incarnation_never_admitted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Broker, "membership_step", lambda self: None)
    found = _hunt()
    # The node stays silent in the controller and its partitions: the first check to see it
    # says so ("not re-admitted", or a move or partition that cannot complete without it).
    assert found.prop == "progress", found.error


def test_a_replica_added_back_forgets_its_old_replicas_promises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(RaftDriver, "_keep_promises", lambda self, storage, promised: None)
    found = _hunt()
    # Which symptom comes first depends on the world: a vote granted twice, a leader elected
    # without entries the old replica acknowledged (replicas differ), or a move that never
    # finishes because the group's terms went astray.
    assert found.prop in {"one vote per term", "replicas agree", "progress"}, found.error
