"""The simulated network: etcd raft_test.go's `drop`, `cut`, `isolate`, `ignore` and `recover`,
plus delay (in ticks), duplication and reordering.

Messages wait in one heap keyed by the tick they are due and a random tie-breaker, so messages due
in the same tick arrive in a random order whatever order they were sent in. Loss and duplication
are decided when a message is sent; partitions and ignored types when it would arrive, so a cut
also swallows what was already on the wire, as a real partition does.

Every fault is reference-counted (`cut` twice, `uncut` once: still cut), so overlapping faults
with their own heal times compose.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass

from raft import Message, MessageType


@dataclass(slots=True)
class Weather:
    """The network's mood: probabilities per message and the largest delay in ticks."""

    drop: float = 0.0
    dup: float = 0.0
    max_delay: int = 0

    def copy(self) -> Weather:
        return Weather(drop=self.drop, dup=self.dup, max_delay=self.max_delay)


# (due tick, random tie-breaker, sequence number, message, the sender's life when it sent it)
_Parcel = tuple[int, float, int, Message, int]


class Network:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.weather = Weather()
        self._heap: list[_Parcel] = []
        self._seq = 0
        self._cut: Counter[tuple[int, int]] = Counter()
        self._ignored: Counter[MessageType] = Counter()
        self._flaky: dict[int, list[float]] = {}  # node -> loss rates of its faulty links
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0

    # -- faults --------------------------------------------------------------------------------
    def cut(self, a: int, b: int, both: bool = True) -> None:
        self._cut[(a, b)] += 1
        if both:
            self._cut[(b, a)] += 1

    def uncut(self, a: int, b: int, both: bool = True) -> None:
        self._cut[(a, b)] -= 1
        if both:
            self._cut[(b, a)] -= 1

    def isolate(self, n: int, others: list[int]) -> None:
        for o in others:
            if o != n:
                self.cut(n, o)

    def unisolate(self, n: int, others: list[int]) -> None:
        for o in others:
            if o != n:
                self.uncut(n, o)

    def flaky(self, n: int, loss: float) -> None:
        """Every message to or from n is lost with probability `loss` (a bad NIC or cable)."""
        self._flaky.setdefault(n, []).append(loss)

    def unflaky(self, n: int, loss: float) -> None:
        rates = self._flaky[n]
        rates.remove(loss)
        if not rates:
            del self._flaky[n]

    def ignore(self, t: MessageType) -> None:
        self._ignored[t] += 1

    def unignore(self, t: MessageType) -> None:
        self._ignored[t] -= 1

    def recover(self) -> None:
        """Heal every partition and ignored type and calm the weather (etcd's recover)."""
        self._cut.clear()
        self._ignored.clear()
        self._flaky.clear()
        self.weather = Weather()

    def is_cut(self, a: int, b: int) -> bool:
        return self._cut[(a, b)] > 0

    def cut_links(self) -> int:
        return sum(1 for v in self._cut.values() if v > 0)

    # -- traffic -------------------------------------------------------------------------------
    def send(self, m: Message, life: int, now: int) -> None:
        w = self.weather
        rng = self.rng
        self.sent += 1
        drop = w.drop
        if self._flaky:
            fl = self._flaky
            if m.frm in fl:
                drop = max(drop, *fl[m.frm])
            if m.to in fl:
                drop = max(drop, *fl[m.to])
        if drop and rng.random() < drop:
            self.dropped += 1
            return
        copies = 2 if w.dup and rng.random() < w.dup else 1
        if copies == 2:
            self.duplicated += 1
        for _ in range(copies):
            delay = rng.randint(0, w.max_delay) if w.max_delay else 0
            self._seq += 1
            heapq.heappush(self._heap, (now + delay, rng.random(), self._seq, m, life))

    def next_due(self, now: int) -> tuple[Message, int, bool] | None:
        """The next message due by tick `now`, its sender's life, and whether it gets through
        (False: a partition or an ignored type swallowed it; the sender's transport may notice)."""
        heap = self._heap
        if not heap or heap[0][0] > now:
            return None
        _, _, _, m, life = heapq.heappop(heap)
        if self._cut[(m.frm, m.to)] > 0 or self._ignored[m.type] > 0:
            self.dropped += 1
            return m, life, False
        return m, life, True

    def pending(self) -> int:
        return len(self._heap)
