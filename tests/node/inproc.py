"""Several nodes' RaftDrivers in one process: real drivers and RocksDB stores in a temporary
directory, over an in-memory network the test controls (drop by rule, take a node down), with
the state machines the test builds on them (Partition, Controller, GroupCoordinator).

Messages go through the wire codec (node/raft_wire.py), as between processes, so no object is
shared between two nodes. A node stopped by fail-stop records the cause in `Node.failures`
instead of ending the test process.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from node.driver import RaftDriver, RaftTiming
from node.raft_wire import decode_message, encode_message
from node.storage import NodeStore
from raft import Message

DropRule = Callable[[int, int, str, Message], bool]
"""(from, to, group, message) -> whether the network loses it."""


async def until(cond: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Poll until cond() holds (bounded and generous: a shared machine; never a timing assert)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@dataclass
class Node:
    id: int
    store: NodeStore
    driver: RaftDriver
    failures: list[str] = field(default_factory=list)


class _Outbox:
    def __init__(self, net: Net, node_id: int) -> None:
        self.net = net
        self.node_id = node_id
        self.queued: list[tuple[int, str, Message]] = []

    def send(self, to: int, group: str, msg: Message) -> None:
        self.queued.append((to, group, msg))

    def flush(self) -> None:
        queued, self.queued = self.queued, []
        for to, group, msg in queued:
            self.net.carry(self.node_id, to, group, msg)


class Net:
    def __init__(self, root: Path, timing: RaftTiming | None = None) -> None:
        self.root = root
        self.timing = timing or RaftTiming(tick_s=0.01)
        self.nodes: dict[int, Node] = {}
        self.down: set[int] = set()
        self.drop: DropRule = lambda _frm, _to, _group, _msg: False

    def carry(self, frm: int, to: int, group: str, msg: Message) -> None:
        if frm in self.down or to in self.down or self.drop(frm, to, group, msg):
            return
        node = self.nodes.get(to)
        if node is None:
            return
        out: list[bytes] = []
        encode_message(group, msg, out)
        got_group, got, _ = decode_message(b"".join(out))
        node.driver.deliver(got_group, got)

    def start(self, node_id: int) -> Node:
        """Open (or reopen) node_id's store and start its driver; add groups after this."""
        store = NodeStore(self.root / f"n{node_id}")
        failures: list[str] = []
        driver = RaftDriver(
            node_id,
            store,
            _Outbox(self, node_id),
            self.timing,
            rng=random.Random(node_id),
            halt=failures.append,
        )
        node = self.nodes[node_id] = Node(node_id, store, driver, failures)
        self.down.discard(node_id)
        driver.start()
        return node

    async def stop(self, node_id: int) -> None:
        """Stop the node (its driver, then its store), as a process stop would."""
        node = self.nodes.pop(node_id)
        self.down.add(node_id)
        await node.driver.stop()
        node.store.close()

    async def close(self) -> None:
        for node_id in list(self.nodes):
            await self.stop(node_id)
