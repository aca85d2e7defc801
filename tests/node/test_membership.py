"""node/membership.py's decisions, as plain functions: when a new data directory is at the
cluster's birth, and which one membership change a group's leader makes next for a node that
came back with a new incarnation (issue 19)."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import ConfigError, NodeConfig
from node.controller import ControllerState
from node.controller_commands import AdmitIncarnation
from node.errors import BrokerError
from node.membership import PeerHello, Step, born, load_fences, next_step, save_fences
from node.storage import NodeStore
from raft import ConfState, Fence


def _conf(voters: set[int], learners: set[int] = set()) -> ConfState:  # noqa: B006
    return ConfState(voters=frozenset(voters), learners=frozenset(learners))


def test_birth_needs_a_majority_at_term_zero_and_nobody_past_it() -> None:
    zero = PeerHello(incarnation=5, controller_term=0)
    assert born(1, [1, 2, 3], {2: zero}, own_term=0)
    assert not born(1, [1, 2, 3], {}, own_term=0)  # alone: no majority
    assert not born(1, [1, 2, 3], {2: zero, 3: PeerHello(6, 4)}, own_term=0)
    assert not born(1, [1, 2, 3, 4, 5], {2: zero}, own_term=0)  # 2 of 5
    assert born(1, [1, 2, 3, 4, 5], {2: zero, 4: zero}, own_term=0)


def _step(**kw: object) -> Step | None:
    args: dict[str, object] = dict(
        conf=_conf({1, 2, 3}),
        rejoining={3: 99},
        admitted={},
        readded={},
        caught_up=set(),
        voters_wanted=3,
    )
    args.update(kw)
    return next_step(**args)  # type: ignore[arg-type]


def test_the_old_incarnation_is_removed_then_added_back_then_admitted() -> None:
    assert _step() == Step("remove", 3, 99)
    assert _step(conf=_conf({1, 2})) == Step("add_learner", 3, 99)
    # Added back by this leader: admit (grant the fence).
    assert _step(conf=_conf({1, 2}, {3}), readded={3: 99}) == Step("admit", 3, 99)
    # Added back by an earlier leader (or an older incarnation): remove again, to be sure.
    assert _step(conf=_conf({1, 2}, {3})) == Step("remove", 3, 99)
    assert _step(conf=_conf({1, 2}, {3}), readded={3: 98}) == Step("remove", 3, 99)


def test_an_admitted_learner_is_promoted_once_caught_up_while_voters_are_wanted() -> None:
    admitted = {3: 99}
    conf = _conf({1, 2}, {3})
    assert _step(conf=conf, admitted=admitted) is None  # not caught up
    assert _step(conf=conf, admitted=admitted, caught_up={3}) == Step("promote", 3)
    assert _step(conf=conf, admitted=admitted, caught_up={3}, voters_wanted=2) is None
    assert _step(conf=_conf({1, 2, 3}), admitted=admitted, caught_up={3}) is None


def test_a_retired_voter_is_replaced_first_then_removed_then_kept_as_a_learner() -> None:
    """A decommissioned node holding no replica stops voting in the groups over every node:
    a caught-up learner takes its place first, the leader hands over if it is the one, and the
    node stays a learner (a copy of the metadata while it runs)."""
    retired = frozenset({3})
    base = dict(rejoining={}, retired=retired, leader=1, caught_up={1, 2, 3, 4})
    # Node 4 joined (a learner): promoted in 3's place before 3 goes.
    assert _step(conf=_conf({1, 2, 3}, {4}), admitted={4: 7}, **base) == Step("promote", 4)
    assert _step(conf=_conf({1, 2, 3, 4}), admitted={4: 7}, **base) == Step("remove", 3)
    assert _step(conf=_conf({1, 2, 4}), **base) == Step("add_learner", 3)
    assert _step(conf=_conf({1, 2, 4}, {3}), **base) is None
    # No learner to take its place: it goes all the same (it holds nothing, it is leaving).
    assert _step(conf=_conf({1, 2, 3}), **base) == Step("remove", 3)
    # A learner not caught up yet is waited for.
    waiting = {**base, "caught_up": {1, 2, 3}}
    assert _step(conf=_conf({1, 2, 3}, {4}), admitted={4: 7}, **waiting) is None
    # The leader retired: it hands leadership to a caught-up voter first.
    led = {**base, "leader": 3}
    assert _step(conf=_conf({1, 2, 3}), **led) == Step("transfer", 1)
    # A retired learner is never promoted; the last voter is never removed.
    assert _step(conf=_conf({1, 2}, {3}), voters_wanted=3, **base) is None
    assert _step(conf=_conf({3}), **{**base, "leader": 1}) is None


def test_a_node_that_is_not_rejoining_is_left_alone() -> None:
    assert _step(rejoining={}) is None
    assert _step(rejoining={3: 0}) is None  # a node from before incarnations
    assert _step(admitted={3: 99}) is None  # already admitted


def test_an_admission_with_bad_fields_is_refused() -> None:
    with pytest.raises(BrokerError):
        AdmitIncarnation(node_id=3, incarnation=0, min_term=1, index=1)
    with pytest.raises(BrokerError):
        AdmitIncarnation(node_id=3, incarnation=5, min_term=0, index=1)


def _config(**kw: object) -> NodeConfig:
    args: dict[str, object] = dict(
        node_id=4,
        listen="127.0.0.1:9004",
        peers={},
        data_dir=Path("/nonexistent"),
        insecure_plaintext_between_nodes=True,
    )
    args.update(kw)
    return NodeConfig(**args).validate()  # type: ignore[arg-type]


def test_the_membership_settings_are_checked() -> None:
    cfg = _config(join="127.0.0.1:9001")
    assert cfg.peers == {4: "127.0.0.1:9004"}  # the rest is learnt at start
    assert cfg.validate() is cfg  # validating again changes nothing
    with pytest.raises(ConfigError, match="--join and --peers contradict"):
        _config(join="127.0.0.1:9001", peers={1: "127.0.0.1:9001", 4: "127.0.0.1:9004"})
    with pytest.raises(ConfigError, match="--join"):
        _config(join="nowhere")
    with pytest.raises(ConfigError, match="--peers is empty"):
        _config()
    for voters in (1, 2, 4, 7):
        with pytest.raises(ConfigError, match="controller_voters must be 3 or 5"):
            _config(join="127.0.0.1:9001", controller_voters=voters)
    assert _config(join="127.0.0.1:9001", controller_voters=5).controller_voters == 5


def test_fences_survive_a_reopen(tmp_path: Path) -> None:
    """A fence forgotten in a crash would let a wiped node vote as its old self: it is written
    with a sync and read back first thing at the next start."""
    with NodeStore(tmp_path / "db") as store:
        assert load_fences(store) == {}
        save_fences(store, {"controller": Fence(), "p1.0": Fence(min_term=7, index=40)})
    with NodeStore(tmp_path / "db") as store:
        assert load_fences(store) == {"controller": Fence(), "p1.0": Fence(7, 40)}
        save_fences(store, {})
    with NodeStore(tmp_path / "db") as store:
        assert load_fences(store) == {}


def test_admitted_incarnations_and_stale_replicas_are_in_the_snapshot() -> None:
    st = ControllerState()
    st.incarnations[3] = 77
    st.fences[3] = (77, 4, 19)
    st.stale[3] = [("ledger", 0), ("ledger", 2)]
    back = ControllerState.from_json(st.to_json())
    assert back.incarnations == {3: 77}
    assert back.fences == {3: (77, 4, 19)}
    assert back.stale == {3: [("ledger", 0), ("ledger", 2)]}
    # A snapshot written before incarnations reads as none admitted.
    assert ControllerState.from_json(b'{"brokers": [], "topics": []}').incarnations == {}
