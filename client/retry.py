"""When to retry a failed request and how long to wait first: plain decisions, no I/O.

The client's call loops (client/cluster.py) hand these to tenacity; keeping them here as plain
functions of (error, attempt) lets a test check every decision without a clock or a cluster.

- Retry only a LiferaftError whose `retriable` is set (the node said so, or the transport
  failed); anything else is the caller's to see at once.
- Wait exponentially: retry_backoff_ms, doubling per attempt up to retry_backoff_max_ms, with
  Kafka's +-20% jitter (KIP-580) so that clients which failed together do not retry together.
- A NOT_LEADER that named the new leader is followed at once: the hint already fixed our
  routing, and waiting would only add latency to every leader change. Only a few such
  redirects in a row go without a wait, so two nodes that each point at the other (a leader
  change in progress) cannot make the client spin.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from client.errors import (
    LeaderNotAvailableError,
    LiferaftError,
    NotControllerError,
    NotLeaderError,
)

__all__ = ["RetryPolicy", "RetryState"]


@dataclass(slots=True)
class RetryState:
    """What one call has seen so far, beyond tenacity's attempt count."""

    redirects_in_a_row: int = 0
    """Attempts since the last backoff that failed with a leader hint we could follow."""
    followed_hint: bool = False
    """The last failure's hint changed our routing (set by the call loop)."""
    backoffs: int = 0
    """Waits so far; the next one is retry_backoff_ms * 2**backoffs (capped)."""
    leader_search_s: float = 0.0
    """Time spent so far polling quickly for a new leader (see RetryPolicy.leader_poll_ms)."""
    last_node_error: Exception | None = None
    """The latest error a node itself answered with (not a transport failure): when retries
    run out, it says why better than a refused connection to a dead node does."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    backoff_ms: float = 100
    backoff_max_ms: float = 1000
    jitter: float = 0.2
    max_free_redirects: int = 3
    """Leader hints followed without a backoff before backing off anyway."""
    leader_poll_ms: float = 25
    """While a partition has no reachable leader (its node died, an election is under way),
    retry this often rather than backing off exponentially: an election takes a few hundred
    ms, and a client that sleeps 0.1, 0.2, 0.4, 0.8 s finds the new leader up to a whole
    backoff late (measured: it doubled the unavailability after a leader kill)."""
    leader_poll_window_ms: float = 2000
    """How long to poll that fast before falling back to exponential backoff."""

    def __post_init__(self) -> None:
        if self.backoff_ms < 0 or self.backoff_max_ms < self.backoff_ms:
            raise ValueError("retry_backoff_ms must be >= 0 and <= retry_backoff_max_ms")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    @staticmethod
    def should_retry(error: BaseException | None) -> bool:
        return isinstance(error, LiferaftError) and error.retriable

    def backoff_s(self, n: int, rng: random.Random) -> float:
        """The n-th backoff of a call (1-based), in seconds."""
        exp = min(max(n - 1, 0), 62)
        term = min(self.backoff_ms * (2**exp), self.backoff_max_ms)
        if self.jitter:
            term *= rng.uniform(1 - self.jitter, 1 + self.jitter)
        return term / 1000

    def wait_s(
        self,
        error: BaseException | None,
        state: RetryState,
        rng: random.Random,
    ) -> float:
        """How long to wait before retrying an attempt that failed with `error`."""
        redirect = isinstance(error, (NotLeaderError, NotControllerError)) and state.followed_hint
        if redirect and state.redirects_in_a_row < self.max_free_redirects:
            state.redirects_in_a_row += 1
            return 0.0
        state.redirects_in_a_row = 0
        if self._leader_moving(error) and state.leader_search_s * 1000 < self.leader_poll_window_ms:
            wait = self.leader_poll_ms / 1000 * rng.uniform(1 - self.jitter, 1 + self.jitter)
            state.leader_search_s += wait
            return wait
        state.backoffs += 1
        return self.backoff_s(state.backoffs, rng)

    @staticmethod
    def _leader_moving(error: BaseException | None) -> bool:
        """Errors that mean "the leader is gone or changing": a new one is worth looking for
        soon (the caller refreshes metadata before each retry)."""
        if isinstance(error, (LeaderNotAvailableError, NotLeaderError)):
            return True
        return isinstance(error, LiferaftError) and error.transport
