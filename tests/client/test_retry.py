"""client/retry.py and the pure parts of client/cluster.py: what to retry, and when.

No clock and no network: the policy is a function of the error and what the call has seen, and
its randomness comes from a seeded Random.
"""

from __future__ import annotations

import random

import pytest

from client.cluster import ClientConfig, order_nodes, parse_bootstrap
from client.errors import (
    BrokerUnavailableError,
    CorruptMessageError,
    LeaderNotAvailableError,
    NotControllerError,
    NotEnoughReplicasError,
    NotLeaderError,
    UnknownTopicOrPartitionError,
)
from client.retry import RetryPolicy, RetryState


def test_only_retriable_liferaft_errors_are_retried() -> None:
    policy = RetryPolicy()
    assert policy.should_retry(NotLeaderError(None, "moved"))
    assert policy.should_retry(LeaderNotAvailableError(None, "election"))
    assert policy.should_retry(BrokerUnavailableError(None, "refused"))
    assert policy.should_retry(NotEnoughReplicasError(None, "isr 1 < 2"))
    assert not policy.should_retry(UnknownTopicOrPartitionError(None, "no such topic"))
    assert not policy.should_retry(CorruptMessageError(None, "bad CRC"))
    # The node's flag wins over the class default, both ways.
    assert policy.should_retry(CorruptMessageError(None, "damaged in transit", retriable=True))
    assert not policy.should_retry(NotLeaderError(None, "x", retriable=False))
    assert not policy.should_retry(ValueError("a bug, not a cluster state"))
    assert not policy.should_retry(None)


def test_backoff_doubles_up_to_the_max_with_jitter() -> None:
    policy = RetryPolicy(backoff_ms=100, backoff_max_ms=1000, jitter=0.2)
    rng = random.Random(7)
    expected = [100, 200, 400, 800, 1000, 1000, 1000]
    for n, base in enumerate(expected, start=1):
        for _ in range(50):
            wait_ms = policy.backoff_s(n, rng) * 1000
            assert base * 0.8 <= wait_ms <= base * 1.2
    exact = RetryPolicy(backoff_ms=100, backoff_max_ms=1000, jitter=0)
    assert [exact.backoff_s(n, rng) for n in (1, 2, 3, 4, 5, 60)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_jitter_spreads_clients_that_failed_together() -> None:
    policy = RetryPolicy(backoff_ms=100, backoff_max_ms=1000)
    waits = {policy.backoff_s(3, random.Random(seed)) for seed in range(20)}
    assert len(waits) == 20


def test_followed_hint_retries_at_once_but_not_forever() -> None:
    policy = RetryPolicy(
        backoff_ms=100, backoff_max_ms=1000, jitter=0, max_free_redirects=2, leader_poll_window_ms=0
    )
    rng = random.Random(1)
    state = RetryState()
    moved = NotLeaderError(None, "node 2 leads", leader_id=2)
    state.followed_hint = True
    assert policy.wait_s(moved, state, rng) == 0
    assert policy.wait_s(moved, state, rng) == 0
    # Two nodes pointing at each other: after two free redirects, back off.
    assert policy.wait_s(moved, state, rng) == 0.1
    assert policy.wait_s(moved, state, rng) == 0  # the backoff reset the run
    # A hint we could not use (unknown node, older epoch) earns no free retry.
    state.followed_hint = False
    assert policy.wait_s(moved, state, rng) == 0.2
    # Other retriable errors back off, continuing the call's exponential sequence.
    assert policy.wait_s(LeaderNotAvailableError(None, "x"), state, rng) == 0.4
    state.followed_hint = True
    assert policy.wait_s(NotControllerError(None, "x", leader_id=3), state, rng) == 0
    assert policy.wait_s(NotEnoughReplicasError(None, "x"), state, rng) == 0.8


def test_a_missing_leader_is_polled_for_quickly_then_backed_off() -> None:
    """After a leader dies, the election takes a few hundred ms: poll every leader_poll_ms
    for leader_poll_window_ms, then fall back to exponential backoff."""
    policy = RetryPolicy(
        backoff_ms=100, backoff_max_ms=1000, jitter=0, leader_poll_ms=25, leader_poll_window_ms=100
    )
    rng = random.Random(1)
    state = RetryState()
    gone = LeaderNotAvailableError(None, "no leader")
    assert [policy.wait_s(gone, state, rng) for _ in range(4)] == [0.025] * 4
    assert policy.wait_s(gone, state, rng) == 0.1
    assert policy.wait_s(gone, state, rng) == 0.2
    # Errors that say nothing about leadership never poll fast.
    other = RetryState()
    assert policy.wait_s(NotEnoughReplicasError(None, "x"), other, rng) == 0.1


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(backoff_ms=500, backoff_max_ms=100)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=1.5)


def test_order_nodes_healthy_first_then_oldest_failure() -> None:
    rng = random.Random(3)
    addresses = ["a:1", "b:1", "c:1", "d:1", "a:1"]
    suspects = {"a:1": 9.5, "c:1": 9.2, "d:1": 1.0}  # d failed long ago: healthy again
    seen_first = set()
    for _ in range(30):
        order = order_nodes(addresses, suspects, now=10.0, suspect_for_s=1.0, rng=rng)
        assert sorted(order) == ["a:1", "b:1", "c:1", "d:1"]
        assert set(order[:2]) == {"b:1", "d:1"}
        assert order[2:] == ["c:1", "a:1"]  # c failed before a: try it first
        seen_first.add(order[0])
    assert seen_first == {"b:1", "d:1"}  # random among the healthy


def test_parse_bootstrap() -> None:
    assert parse_bootstrap(" h1:1, h2:2 ,,h1:1") == ("h1:1", "h2:2")
    assert parse_bootstrap(["h1:1", "h3:3"]) == ("h1:1", "h3:3")
    with pytest.raises(ValueError, match="at least one"):
        parse_bootstrap(" , ")
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_bootstrap("localhost")


def test_client_config_defaults_and_checks() -> None:
    cfg = ClientConfig.build("h:1")
    assert (cfg.request_timeout_ms, cfg.delivery_timeout_ms) == (30_000, 120_000)
    assert (cfg.retry_backoff_ms, cfg.retry_backoff_max_ms) == (100, 1_000)
    with pytest.raises(ValueError, match="request_timeout_ms"):
        ClientConfig.build("h:1", request_timeout_ms=0)
    with pytest.raises(ValueError, match="retry_backoff"):
        ClientConfig.build("h:1", retry_backoff_ms=2000)
