"""The network between simulated nodes: the driver's Outbox over seeded links.

Every Raft message is encoded with node/raft_wire.py as between processes and decoded at the
receiver, so no object is shared between two nodes. A message can be lost, delayed, duplicated
or overtaken by a later one (each copy gets its own delay); links can be cut one way (a node
hears but is not heard) or both ways (partitions). A message to a node that crashed, or that
restarted since it was sent, is lost (the connection it travelled on is gone).

The transport's liveness watch (node/transport.py: a peer silent for a while is taken for gone)
is modelled by `NetView`: every few ticks each node's view of who it can hear is recomputed
from the cuts and the nodes that are up, and changes are told to its driver (peer_changed) and
its broker (reachable), as the real transport does.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from node.raft_wire import decode_message, encode_message
from raft import Message


@dataclass
class LinkFaults:
    loss: float = 0.0
    duplicate: float = 0.0
    delay_s: tuple[float, float] = (0.0005, 0.003)
    """Uniform per copy: overlapping ranges reorder messages."""
    slow: float = 0.0
    """Chance that a copy takes up to 20 times the largest delay (reordering far)."""


@dataclass
class NetStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0


@dataclass
class SimNet:
    rng: random.Random
    call_later: Callable[..., object]
    faults: LinkFaults = field(default_factory=LinkFaults)
    cut: set[tuple[int, int]] = field(default_factory=set)
    """(from, to) links that carry nothing."""
    stats: NetStats = field(default_factory=NetStats)
    receivers: dict[int, Callable[[str, Message], None]] = field(default_factory=dict)
    """node id -> the driver's deliver, for the running incarnation only."""
    incarnation: dict[int, int] = field(default_factory=dict)
    on_send: Callable[[int, str, Message], None] | None = None
    """Sees every message a node sends (the invariants over Raft messages)."""

    def can_hear(self, frm: int, to: int) -> bool:
        return (frm, to) not in self.cut and frm in self.receivers and to in self.receivers

    def delay(self) -> float:
        lo, hi = self.faults.delay_s
        d = self.rng.uniform(lo, hi)
        if self.faults.slow and self.rng.random() < self.faults.slow:
            d += self.rng.uniform(0, 20 * hi)
        return d

    def carry(self, frm: int, to: int, group: str, msg: Message) -> None:
        self.stats.sent += 1
        if self.on_send is not None:
            self.on_send(frm, group, msg)
        if not self.can_hear(frm, to) or self.rng.random() < self.faults.loss:
            self.stats.lost += 1
            return
        out: list[bytes] = []
        encode_message(group, msg, out)
        frame = b"".join(out)
        copies = 1
        if self.faults.duplicate and self.rng.random() < self.faults.duplicate:
            copies = 2
            self.stats.duplicated += 1
        inc = self.incarnation.get(to, 0)
        for _ in range(copies):
            self.call_later(self.delay(), self._arrive, frm, to, inc, frame)

    def _arrive(self, frm: int, to: int, inc: int, frame: bytes) -> None:
        deliver = self.receivers.get(to)
        if deliver is None or self.incarnation.get(to, 0) != inc or (frm, to) in self.cut:
            self.stats.lost += 1
            return
        group, msg, _ = decode_message(frame)
        self.stats.delivered += 1
        deliver(group, msg)

    # -- partitions ---------------------------------------------------------------------------
    def isolate(self, node: int, nodes: list[int], *, one_way: str = "") -> None:
        """Cut node off: both ways, or only what it sends ("out") or receives ("in")."""
        for other in nodes:
            if other == node:
                continue
            if one_way != "in":
                self.cut.add((node, other))
            if one_way != "out":
                self.cut.add((other, node))

    def split(self, side: set[int], nodes: list[int]) -> None:
        for a in nodes:
            for b in nodes:
                if (a in side) != (b in side):
                    self.cut.add((a, b))

    def heal(self) -> None:
        self.cut.clear()


class Outbox:
    """node/driver.py's Outbox for one node: queue, then put the round's messages on the wire."""

    def __init__(self, net: SimNet, node_id: int) -> None:
        self.net = net
        self.node_id = node_id
        self.queued: list[tuple[int, str, Message]] = []

    def send(self, to: int, group: str, msg: Message) -> None:
        self.queued.append((to, group, msg))

    def flush(self) -> None:
        queued, self.queued = self.queued, []
        for to, group, msg in queued:
            self.net.carry(self.node_id, to, group, msg)
