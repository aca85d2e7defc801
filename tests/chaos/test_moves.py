"""The move fault's decisions (chaos/moves.py, chaos/nemesis.py): which replica goes where, and
the move track of the plan. The moves themselves run against real nodes in
tests/chaos/test_chaos_local.py."""

from __future__ import annotations

import itertools

import pytest

from chaos.moves import move_target
from chaos.nemesis import FAULT_KINDS, PlannedFault, parse_fault_kinds, plan_faults


def test_a_move_swaps_one_replica_for_a_free_node_in_its_place() -> None:
    assert move_target((3, 1, 2), (1, 2, 3, 4), pick=0) == (3, 4, 2)  # 1 (first by id) -> 4
    assert move_target((3, 1, 2), (1, 2, 3, 4), pick=2) == (4, 1, 2)  # the leader too
    targets = {move_target((1, 2, 3), (1, 2, 3, 4, 5), pick=p) for p in range(12)}
    assert all(
        len(set(t)) == 3 and set(t) <= {1, 2, 3, 4, 5} and set(t) != {1, 2, 3} for t in targets
    )
    assert len(targets) > 3  # both the replica out and the node in vary with pick


def test_a_move_refuses_when_no_node_is_free() -> None:
    with pytest.raises(ValueError, match="more nodes than the replication factor"):
        move_target((1, 2, 3), (1, 2, 3), pick=0)
    with pytest.raises(ValueError, match="no replicas"):
        move_target((), (1, 2, 3), pick=0)


def test_moves_have_their_own_track_and_leave_the_other_faults_as_they_were() -> None:
    assert "move" in FAULT_KINDS and parse_fault_kinds("kill,move") == ("kill", "move")
    overlapping = 0
    for seed in range(10):
        plan = plan_faults(("kill", "partition", "move"), 90, seed)
        assert plan == plan_faults(("kill", "partition", "move"), 90, seed)
        assert [PlannedFault.from_json(p.to_json()) for p in plan] == plan
        moves = [p for p in plan if p.kind == "move"]
        others = [p for p in plan if p.kind != "move"]
        assert others == plan_faults(("kill", "partition"), 90, seed)
        assert len(moves) >= 4, "a 90 s run moves replicas several times"
        assert all(0 <= m.partition < 6 and m.at_s + m.hold_s <= 84 for m in moves)
        assert all(b.at_s >= a.at_s + a.hold_s for a, b in itertools.pairwise(moves))
        # Concurrent with the other faults: moves asked for while another fault holds.
        overlapping += sum(o.at_s < m.at_s < o.at_s + o.hold_s for m in moves for o in others)
    assert overlapping >= 10
    only = plan_faults(("move",), 60, 1)
    assert only and {p.kind for p in only} == {"move"}
