"""The fault vocabulary: one set of verbs for a local cluster and for the compose cluster.

    faults = Faults(ProcessNodes(dev_cluster, [1, 2, 3]), ToxiproxyNetwork("127.0.0.1:8474"))
    faults.kill(2); faults.restart(2)          # SIGKILL / docker kill, then start again
    faults.pause(1); faults.resume(1)          # SIGSTOP / docker pause, then continue
    faults.power([1, 2, 3]); faults.restart(1) # power loss: killed, unsynced writes gone
    faults.isolate(3)                          # node 3 alone, both directions
    faults.split([1])                          # a minority and the rest (both directions)
    faults.one_way(1, 2)                       # what 1 sends stops reaching 2; 2 -> 1 flows
    faults.ring()                              # every node hears only its ring neighbours
    faults.latency(50, jitter_ms=20)           # every node-to-node message, each direction
    faults.bandwidth(100)                      # KB/s per link and direction
    faults.heal()                              # the network whole again
    faults.recover()                           # heal, resume the paused, restart the killed

Node verbs act through a `NodeTarget` (chaos/targets.py), link verbs through a `Network`
(chaos/network.py); this class keeps the state between them (which nodes are down or paused,
which links are cut) so that `recover()` knows what to undo and a verb that makes no sense (kill
a node that is down, resume one that runs) is refused with a clear error rather than half done.
Partition verbs add to the cuts in force; `heal` removes them all. Every verb returns once the
fault is in effect.

Not thread-safe: one nemesis drives one Faults.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from functools import partial

from chaos.network import Network, NetworkState, one_way_cuts, ring_cuts, split_cuts
from chaos.targets import NodeTarget, TargetError

__all__ = ["Faults", "TargetError"]


class Faults:
    def __init__(self, nodes: NodeTarget, network: Network | None = None) -> None:
        self.nodes = nodes
        self.network = network
        self.node_ids: tuple[int, ...] = tuple(sorted(nodes.node_ids))
        self.killed: set[int] = set()
        self.paused: set[int] = set()
        self.state = NetworkState()

    # -- nodes ---------------------------------------------------------------------------------
    def kill(self, node: int) -> float | None:
        """kill -9: the node dies with whatever it had not synced. Returns when it died (a
        time.time() value) if the target knows, else None."""
        self._check(node)
        if node in self.killed:
            raise TargetError(f"node {node} is already killed")
        if node in self.paused:  # a frozen process dies at once too, but say what happened
            self.paused.discard(node)
        at = self.nodes.kill(node)
        self.killed.add(node)
        return at

    def restart(self, node: int) -> None:
        """Start a killed node again, on the data it had."""
        self._check(node)
        if node not in self.killed:
            raise TargetError(f"node {node} is not killed")
        self.nodes.restart(node)
        self.killed.discard(node)
        forget = getattr(self.network, "forget", None)
        if forget is not None:
            forget([node])
            self._apply(self.state)  # cuts in force apply to the new process too

    def power(self, nodes: Iterable[int]) -> float | None:
        """Power loss of `nodes` at once: each dies and loses every write it had not fsynced
        (the target's power-loss disks, chaos/lazyfs.py). `restart` brings each back. Returns
        when the power went, if the target knows."""
        down = sorted(set(nodes))
        if not down:
            raise TargetError("a power cut needs at least one node")
        for n in down:
            self._check(n)
            if n in self.killed:
                raise TargetError(f"node {n} is already down")
        cut = getattr(self.nodes, "power_cut", None)
        if cut is None:
            raise TargetError("this target cannot cut the power (only --target local can)")
        try:
            at: float | None = cut(down)
        finally:  # even half done, they are down (or we cannot tell): recover restarts them
            for n in down:
                self.paused.discard(n)
                self.killed.add(n)
        return at

    def pause(self, node: int) -> float | None:
        """SIGSTOP / docker pause: frozen, connections open, silent. Returns when it froze if
        the target knows, else None."""
        self._check(node)
        if node in self.killed or node in self.paused:
            raise TargetError(f"node {node} is {'killed' if node in self.killed else 'paused'}")
        at = self.nodes.pause(node)
        self.paused.add(node)
        return at

    def resume(self, node: int) -> None:
        self._check(node)
        if node not in self.paused:
            raise TargetError(f"node {node} is not paused")
        self.nodes.resume(node)
        self.paused.discard(node)

    # -- links ---------------------------------------------------------------------------------
    def isolate(self, node: int) -> None:
        """Cut `node` off from every other node, both directions."""
        self.split([node])

    def split(self, minority: Iterable[int]) -> None:
        """Cut `minority` off from the other nodes (both directions); each side keeps its links."""
        side = set(minority)
        for n in side:
            self._check(n)
        if not side or side >= set(self.node_ids):
            raise TargetError(f"a split needs nodes on both sides, not {sorted(side)}")
        self._cut(split_cuts(side, self.node_ids))

    def one_way(self, src: int, dst: int) -> None:
        """What `src` sends stops reaching `dst`; `dst` -> `src` still flows."""
        self._check(src)
        self._check(dst)
        if src == dst:
            raise TargetError("a one-way cut needs two different nodes")
        self._cut(one_way_cuts(src, dst))

    def ring(self, order: Sequence[int] | None = None) -> None:
        """Jepsen's majorities ring (chaos/network.py): every node hears a majority, no two
        the same one. `order` defaults to the node ids in order."""
        ring = tuple(order) if order is not None else self.node_ids
        if sorted(ring) != list(self.node_ids):
            raise TargetError(f"a ring must name every node once: {list(ring)}")
        self._cut(ring_cuts(ring))

    def latency(self, ms: int, jitter_ms: int = 0) -> None:
        """Delay every node-to-node message by ms +- jitter_ms (each direction)."""
        if ms < 0 or jitter_ms < 0:
            raise TargetError("latency and jitter must be >= 0")
        self._apply(replace(self.state, latency_ms=ms, jitter_ms=jitter_ms))

    def bandwidth(self, kbps: int) -> None:
        """Limit every link, each direction, to `kbps` KB/s (Toxiproxy's rate; 0: no limit)."""
        if kbps < 0:
            raise TargetError("bandwidth must be >= 0")
        self._apply(replace(self.state, bandwidth_kbps=kbps))

    def heal(self) -> None:
        """Every link whole again: no cuts, latency or bandwidth limit."""
        self._apply(NetworkState())

    def recover(self) -> list[str]:
        """Undo everything: heal, resume paused nodes, restart killed ones. Tries every step
        and raises the first error at the end; returns what it did."""
        done: list[str] = []
        errors: list[TargetError] = []
        steps: list[tuple[str, Callable[[], None]]] = []
        if not self.state.healthy:
            steps.append(("heal", self.heal))
        steps += [(f"resume {n}", partial(self.resume, n)) for n in sorted(self.paused)]
        steps += [(f"restart {n}", partial(self.restart, n)) for n in sorted(self.killed)]
        for what, step in steps:
            try:
                step()
                done.append(what)
            except TargetError as e:
                errors.append(e)
        if errors:
            raise errors[0]
        return done

    def close(self) -> None:
        if self.network is not None:
            self.network.close()
        self.state = NetworkState()

    # -- helpers -------------------------------------------------------------------------------
    def _check(self, node: int) -> None:
        if node not in self.node_ids:
            raise TargetError(f"no node {node} (nodes: {list(self.node_ids)})")

    def _cut(self, cuts: frozenset[tuple[int, int]]) -> None:
        self._apply(replace(self.state, cuts=self.state.cuts | cuts))

    def _apply(self, state: NetworkState) -> None:
        if self.network is None:
            if state.healthy:
                self.state = state
                return
            raise TargetError("this target has no network to inject link faults into")
        self.network.apply(state)
        self.state = state
