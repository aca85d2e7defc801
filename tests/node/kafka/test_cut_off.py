"""Which replica a cut-off node names for a leaderless partition (node/kafka/cut_off.py)."""

from __future__ import annotations

import itertools

from node.kafka.cut_off import leader_hint


def test_a_node_that_hears_the_controller_names_no_one() -> None:
    assert leader_hint(1, [1, 2, 3], controller_leader=2) is None


def test_a_cut_off_node_names_the_other_replicas_in_turn_never_itself() -> None:
    named = [leader_hint(1, [1, 2, 3], controller_leader=0) for _ in range(6)]
    assert set(named) == {2, 3}
    assert all(a != b for a, b in itertools.pairwise(named))


def test_a_sole_replica_has_no_one_else_to_name() -> None:
    assert leader_hint(1, [1], controller_leader=0) is None
