"""Several real brokers in one process, on a simulated network and disk: the base of the
broker simulation (tests/brokersim/), and a fixture other tests can build scenarios on.

Each node is the production code above the socket and the disk: a RaftDriver over a SimStore
(the real NodeStore and GroupStorage over tests/brokersim/disk.py's page-cache disk), a Broker
(controller, partitions, consumer groups, producer state) and the request handlers the gRPC
server calls, reached through `Api` (one place to re-point if the handlers move). What
node/server.py does around them (gossip of leader states, broker registration, the transport's
view of live peers) is done here by `_housekeep` and tests/brokersim/net.py's view.

A crash is a process dying: every task and callback of the node is cancelled (they were all
created under its context, tests/brokersim/loop.py), its store is closed, and its disk keeps
what the fault leaves. A node stopped by fail-stop (`halt`) is a crash too, one the node chose;
both restart from the disk. Everything runs on the virtual loop: nothing waits for real time.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from liferaft_proto import status as wire_status
from liferaft_proto.v1 import broker_pb2, errors_pb2
from node import replica_state
from node.broker import Broker
from node.config import NodeConfig
from node.controller import CONTROLLER_GROUP, Controller
from node.driver import Group, RaftDriver, RaftTiming
from node.errors import BrokerError
from node.groups import GROUPS_GROUP, GroupCoordinator
from node.membership import ANCHOR_GROUP, FENCES_KEY, FOUNDERS_KEY, INCARNATION_KEY, load_fences
from node.partition import Partition
from node.server import NODE_ID_KEY
from node.service import BrokerService
from node.storage import GroupUpdate, StorageError
from raft import IsrPolicy, MessageType, Ready
from tests.brokersim.disk import MemDisk, SimStore
from tests.brokersim.loop import NODE
from tests.brokersim.net import Outbox, SimNet

log = logging.getLogger("liferaft.brokersim")

Trace = Callable[[str, str], None]
HOUSEKEEP_TICKS = 2
VIEW_TICKS = 5
"""How often (ticks) each node's view of its reachable peers is brought up to date."""


class Violation(AssertionError):
    """A checked property does not hold."""

    def __init__(self, prop: str, detail: str) -> None:
        super().__init__(f"{prop}: {detail}")
        self.prop = prop


class RpcError(Exception):
    """What a client sees when a call fails: the ErrorDetail's code name, or a transport-level
    failure (UNAVAILABLE, DEADLINE_EXCEEDED) that says nothing of what the node did."""

    def __init__(self, code: str, message: str = "", leader_id: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.leader_id = leader_id


def rpc_error(e: grpc.aio.AioRpcError) -> RpcError:
    detail = wire_status.error_detail(e)
    if detail is None:
        return RpcError(e.code().name, e.details() or "")
    return RpcError(errors_pb2.ErrorCode.Name(detail.code), detail.message, detail.leader_id)


class FakeContext:
    """The one thing the handlers ask of their gRPC context: to end the call with a status."""

    async def abort_with_status(self, status: grpc.Status) -> None:
        raise grpc.aio.AioRpcError(
            status.code,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(*status.trailing_metadata),
            status.details,
        )


class Api:
    """The request handlers of one node, as the gRPC server calls them: a request proto and a
    context in, a response proto out (or the call aborted with an ErrorDetail)."""

    def __init__(self, service: BrokerService) -> None:
        self.service = service

    async def call(self, method: str, request: Any) -> Any:
        return await getattr(self.service, method)(request, FakeContext())


class SimDriver(RaftDriver):
    """The production driver, watched: what each replicated state machine holds after each
    apply is recorded (to compare replicas at the same index), and a round finished after a
    failed sync is a finding."""

    sim_node: SimNode

    def _apply(self, group: Group, rd: Ready) -> None:
        super()._apply(group, rd)
        node = self.sim_node
        if rd.committed_entries:
            node.cluster.record_state(node, group, rd.committed_entries[-1].index, restored=False)
        elif rd.snapshot is not None:
            node.cluster.record_state(node, group, rd.snapshot.meta.index, restored=True)

    def _finish(self, readies: list[tuple[Group, Ready]]) -> None:
        if self.store.disk.sync_failed:  # type: ignore[attr-defined]
            found = Violation(
                "fail-stop",
                f"node {self.node_id} finished a Raft round after a failed sync "
                "(it acknowledges writes the disk may not hold)",
            )
            self.sim_node.cluster.violations.append(found)  # the driver may swallow the raise
            raise found
        super()._finish(readies)


@dataclass
class SimNode:
    id: int
    cluster: SimCluster
    disk: MemDisk
    incarnation: int = 0
    store: SimStore | None = None
    driver: SimDriver | None = None
    broker: Broker | None = None
    api: Api | None = None
    up: bool = False
    failure: str = ""
    """Why the running incarnation stopped itself (fail-stop), if it did."""
    broken: str = ""
    """Why the node cannot start again (its disk is corrupt), if so."""
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    context: contextvars.Context | None = None
    reachable: set[int] = field(default_factory=set)
    data_incarnation: int = 0
    """Its data directory's incarnation id (node/membership.py): new with every wiped disk."""
    wipes: int = 0

    def own(self, task: asyncio.Task[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def spawn(self, coro: Any, name: str = "") -> asyncio.Task[Any]:
        """Run coro as a task of this node (cancelled if it crashes)."""
        assert self.context is not None
        return asyncio.get_running_loop().create_task(coro, name=name, context=self.context)

    def later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        asyncio.get_running_loop().call_later(delay, fn, *args, context=self.context)


@dataclass
class ClusterOptions:
    nodes: int = 3
    tick_s: float = 0.02
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    inline_sync_bytes: int = 64 << 10
    apply_ahead: bool = False
    coalesce_proposals: bool = True
    lazy_commit: bool = True
    quiesce_after_ticks: int = 3
    isr_max_lag_ticks: int = 50
    retention_check_ms: int = 200
    leader_rebalance_ms: int = 2000
    rpc_delay_s: tuple[float, float] = (0.0002, 0.002)


class SimCluster:
    def __init__(
        self,
        rng: random.Random,
        net: SimNet,
        opts: ClusterOptions,
        trace: Trace | None = None,
    ) -> None:
        self.rng = rng
        self.net = net
        self.opts = opts
        self.trace: Trace = trace or (lambda _kind, _text: None)
        ids = list(range(1, opts.nodes + 1))
        self.ids = ids
        self.nodes = {i: SimNode(i, self, MemDisk(i)) for i in ids}
        self.peers = {i: f"127.0.0.1:{19000 + i}" for i in ids}
        self.states: dict[tuple[str, int], tuple[int, str]] = {}
        """(group id, applied index) -> (node, digest) of the first replica there."""
        self.states_compared = 0
        self.violations: list[Violation] = []
        self.rounds_after_failure = 0
        self.votes: dict[tuple[str, int, int], int] = {}
        """(group, term, voter) -> the candidate it granted its vote to, whatever incarnation
        of the voter did: one node id votes once per term (a wiped disk must not vote again)."""
        net.on_send = self._observe

    # -- life and death ------------------------------------------------------------------------
    def timing(self) -> RaftTiming:
        o = self.opts
        return RaftTiming(
            tick_s=o.tick_s,
            election_ticks=o.election_ticks,
            heartbeat_ticks=o.heartbeat_ticks,
            isr=IsrPolicy(max_lag_entries=4000, max_lag_ticks=o.isr_max_lag_ticks),
            inline_sync_bytes=o.inline_sync_bytes,
            apply_ahead=o.apply_ahead,
            coalesce_proposals=o.coalesce_proposals,
            lazy_commit=o.lazy_commit,
            quiesce_after_ticks=o.quiesce_after_ticks,
        )

    def config(self, node_id: int) -> NodeConfig:
        o = self.opts
        return NodeConfig(
            node_id=node_id,
            listen=self.peers[node_id],
            peers=dict(self.peers),
            data_dir=Path(f"/nonexistent/brokersim/n{node_id}"),
            advertise=self.peers[node_id],
            tick_ms=round(o.tick_s * 1000),
            election_ticks=o.election_ticks,
            heartbeat_ticks=o.heartbeat_ticks,
            retention_check_ms=o.retention_check_ms,
            leader_rebalance_ms=o.leader_rebalance_ms,
        )

    def start(self, node_id: int) -> bool:
        """Start (or restart) a node from its disk. False if it does not come up: it refuses to
        (a corrupt disk), or a synced write of its start fails and it stops itself."""
        node = self.nodes[node_id]
        assert not node.up
        if node.broken:
            return False
        node.incarnation += 1
        node.failure = ""
        node.tasks = set()
        node.reachable = set()
        ctx = contextvars.copy_context()
        ctx.run(NODE.set, node)
        node.context = ctx
        store = SimStore(node.disk)
        incarnation, founders = self._open_store(node, store)
        node.disk.on_sync_failure = None
        driver = SimDriver(
            node_id,
            store,
            Outbox(self.net, node_id),
            self.timing(),
            rng=random.Random(self.rng.random()),
            halt=lambda cause, n=node, inc=node.incarnation: self._halted(n, inc, cause),
            run_sync=lambda sync, n=node: self._run_sync(n, sync),
        )
        driver.sim_node = node
        driver.fences = load_fences(store)
        node.store, node.driver, node.up = store, driver, True
        try:
            broker = ctx.run(Broker, self.config(node_id), driver, incarnation, founders)
        except (OSError, StorageError) as e:
            if node.failure:
                # A synced write of its start (a replica's promises, node/driver.py _durably)
                # failed and the driver stopped the node, as node/server.py's process exits
                # when Broker() raises: down, and free to be started again (seed 120309).
                return False
            if not isinstance(e, StorageError):
                raise
            # CorruptStorageError: found while loading
            self.trace("refuse", f"node {node_id} refuses to start: {e}")
            node.broken = f"refused to start: {e}"
            self._kill(node)
            return False
        broker.groups.clock = self.net_clock
        broker.advertised.update(self.peers)
        broker.reachable = lambda n=node: set(n.reachable)
        node.broker = broker
        node.api = Api(BrokerService(broker, lambda to, n=node: _Stub(self, n, to)))
        self.net.incarnation[node_id] = node.incarnation
        self.net.receivers[node_id] = driver.deliver
        ctx.run(driver.start)
        node.spawn(self._housekeep(node), f"housekeeping-{node_id}")
        for p in self.ids:  # the peers that hear it get its Hello (a new connection)
            if p != node_id and self.net.can_hear(node_id, p):
                self._later_on(p, self.net.faults.delay_s[1], self._hello_from, node_id)
        self.trace("start", f"node {node_id} started (incarnation {node.incarnation})")
        return True

    def _open_store(self, node: SimNode, store: SimStore) -> tuple[int, list[int]]:
        """What node/server.py's _open_store does: a new data directory gets an incarnation
        and starts fenced in the controller and __groups groups (node/membership.py)."""
        if store.get_meta(NODE_ID_KEY) is None:
            # Drawn from the node id and its wipes, not from the run's generators: adding
            # incarnations left every seed's draws (and so its run) as it was.
            digest = hashlib.sha256(f"incarnation {node.id} {node.wipes}".encode()).digest()
            node.data_incarnation = int.from_bytes(digest[:8], "big") >> 1 | 1
            fences = {CONTROLLER_GROUP: [0, 0], GROUPS_GROUP: [0, 0]}
            meta: list[tuple[bytes, bytes | None]] = [
                (INCARNATION_KEY, str(node.data_incarnation).encode()),
                (NODE_ID_KEY, str(node.id).encode()),
                (FENCES_KEY, json.dumps(fences).encode()),
                (FOUNDERS_KEY, ",".join(map(str, self.ids)).encode()),
            ]
            store.write([GroupUpdate(group=store.group(ANCHOR_GROUP), meta=meta)], sync=True)
        else:
            node.data_incarnation = int(store.get_meta(INCARNATION_KEY) or b"0")
        founders = store.get_meta(FOUNDERS_KEY) or ",".join(map(str, self.ids)).encode()
        return node.data_incarnation, [int(n) for n in founders.decode().split(",")]

    def wipe(self, node_id: int) -> None:
        """The node's disk is replaced by an empty one (it crashes first if it runs): it comes
        back, when started, as a new incarnation of its id."""
        node = self.nodes[node_id]
        if node.up:
            self._kill(node)
        node.disk = MemDisk(node_id)
        node.broken = ""
        node.wipes += 1
        self.trace("wipe", f"node {node_id}'s disk wiped (a new incarnation when it starts)")

    def _hello_from(self, node: SimNode, peer: int) -> None:
        """`node` hears `peer`'s transport Hello: its incarnation, controller term and whether
        it asks to be re-admitted (node/server.py wires the same into Broker.on_peer_hello)."""
        other = self.nodes[peer]
        if not other.up or other.broker is None or node.broker is None:
            return
        b = other.broker
        node.broker.on_peer_hello(
            peer, b.incarnation, b.controller.raft_group.node.term, b.rejoining()
        )

    def _observe(self, frm: int, group: str, msg: Any) -> None:
        """Every Raft message sent: a granted vote is recorded per (group, term, voter)."""
        if msg.type != MessageType.VOTE_RESP or msg.reject:
            return
        key = (group, msg.term, frm)
        before = self.votes.setdefault(key, msg.to)
        if before != msg.to:
            found = Violation(
                "one vote per term",
                f"node {frm} voted for node {before} and node {msg.to} in term {msg.term} "
                f"of group {group}",
            )
            self.violations.append(found)

    net_clock: Callable[[], float] = staticmethod(lambda: asyncio.get_running_loop().time())

    def crash(self, node_id: int, *, keep: int | None = None, tear: bool = False) -> None:
        """The process dies and the page cache with it: `keep` of the unsynced writes survive
        (None: a random prefix), the last of them torn if `tear`."""
        node = self.nodes[node_id]
        if not node.up:
            return
        pending = len(node.disk.pending)
        if keep is None:
            keep = self.rng.randint(0, pending)
        self._check_stopped_after_failed_sync(node)
        self._kill(node)
        node.disk.crash(keep, tear=tear)
        self.trace(
            "crash",
            f"node {node_id} crashed: kept {min(keep, pending)} of {pending} unsynced writes"
            + (" (the last one torn)" if tear and node.disk.torn_key else ""),
        )

    def _kill(self, node: SimNode) -> None:
        node.up = False
        self.net.receivers.pop(node.id, None)
        if node.driver is not None:
            d = node.driver
            d._stopped = True
            if d._tick_handle is not None:
                d._tick_handle.cancel()
        for t in list(node.tasks):
            t.cancel()
        if node.store is not None:
            node.store.close()
        node.reachable = set()

    def _halted(self, node: SimNode, incarnation: int, cause: str) -> None:
        """The driver stopped the node (fail-stop): the process exits."""
        if node.incarnation != incarnation or not node.up:
            return
        node.failure = cause
        self.trace("halt", f"node {node.id} stopped itself: {cause[:160]}")
        if "Corrupt" in cause:
            node.broken = f"fail-stop on a corrupt read: {cause}"
        # The process exits at once; its page cache goes with it only if power goes too: an
        # exit keeps what was written (the kernel holds it), bar what a failed sync dropped.
        node.up = False
        asyncio.get_running_loop().call_soon(self._exit, node, incarnation)

    def _exit(self, node: SimNode, incarnation: int) -> None:
        if node.incarnation != incarnation:
            return
        self._kill(node)
        node.disk.crash(len(node.disk.pending), tear=False)

    def _check_stopped_after_failed_sync(self, node: SimNode) -> None:
        if node.disk.sync_failed and not node.failure and node.up:
            self.violations.append(
                Violation(
                    "fail-stop",
                    f"node {node.id} had a sync fail and was still running when it crashed",
                )
            )

    async def _run_sync(self, node: SimNode, sync: Callable[[], None]) -> None:
        """The driver's worker-thread sync: it takes the disk's time, then happens."""
        stall = node.disk.faults.stall_s
        await asyncio.sleep(self.rng.uniform(0.0001, 0.002) + stall)
        sync()

    # -- what node/server.py does around the broker ------------------------------------------
    async def _housekeep(self, node: SimNode) -> None:
        from node.tasks import supervise

        assert node.broker is not None and node.driver is not None
        broker, tick = node.broker, self.opts.tick_s
        n = 0
        while True:
            await asyncio.sleep(tick * HOUSEKEEP_TICKS)
            n += 1
            if n % (VIEW_TICKS // HOUSEKEEP_TICKS or 1) == 0 or not node.reachable:
                self._update_view(node)
            for states in broker.take_gossip():
                for peer in self.ids:
                    if peer != node.id and self.net.can_hear(node.id, peer):
                        self._later_on(peer, self.net.delay(), _gossip, node.id, states)
            broker.maybe_born()
            admit = broker.membership_step()  # a new incarnation (node/membership.py)
            if admit is not None:
                supervise(
                    broker.controller.replicate_and_wait(admit),
                    f"admit-incarnation-{admit.node_id}",
                    expected=(BrokerError,),
                )
            for cmd in broker.registrations_due():
                supervise(
                    broker.controller.replicate_and_wait(cmd),
                    "register-broker",
                    expected=(BrokerError,),
                )
            for report in broker.membership_reports():  # replica moves (node/moves.py)
                supervise(
                    broker.controller.replicate_and_wait(report),
                    "partition-membership",
                    expected=(BrokerError,),
                )

    def _update_view(self, node: SimNode) -> None:
        assert node.driver is not None
        now = {p for p in self.ids if p != node.id and self.net.can_hear(p, node.id)}
        for p in self.ids:
            if p == node.id:
                continue
            was, isnow = p in node.reachable, p in now
            if was != isnow:
                node.driver.peer_changed(p, isnow)
            if isnow and not was:  # a new connection: the peer's Hello
                self._hello_from(node, p)
        node.reachable = now

    def _later_on(self, node_id: int, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(node, *args) on node_id after delay, if the same incarnation is still up."""
        node = self.nodes[node_id]
        if not node.up:
            return
        inc = node.incarnation

        def run() -> None:
            if node.up and node.incarnation == inc:
                fn(node, *args)

        node.later(delay, run)

    # -- calls ---------------------------------------------------------------------------------
    async def call(self, node_id: int, method: str, request: Any, timeout_s: float) -> Any:
        """A client's call: over the network to the node's handler and back. Raises RpcError
        (UNAVAILABLE when the node is down or dies meanwhile, DEADLINE_EXCEEDED at the
        deadline: the handler is cancelled, as gRPC cancels it)."""
        node = self.nodes[node_id]
        lo, hi = self.opts.rpc_delay_s
        await asyncio.sleep(self.rng.uniform(lo, hi))
        if not node.up or node.api is None:
            raise RpcError("UNAVAILABLE", f"node {node_id} is down")
        task = node.spawn(node.api.call(method, request), f"{method}@{node_id}")
        try:
            resp = await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            task.cancel()
            raise RpcError("DEADLINE_EXCEEDED", f"{method} to node {node_id}") from None
        except asyncio.CancelledError:
            if task.cancelled():  # the node died
                raise RpcError("UNAVAILABLE", f"node {node_id} went away") from None
            raise
        except grpc.aio.AioRpcError as e:
            raise rpc_error(e) from None
        await asyncio.sleep(self.rng.uniform(lo, hi))
        return resp

    # -- replicated state, compared ------------------------------------------------------------
    def record_state(self, node: SimNode, group: Group, index: int, *, restored: bool) -> None:
        digest = state_digest(group.fsm, restored=restored)
        if digest is None:
            return
        key = (group.id, index)
        first = self.states.get(key)
        self.states_compared += 1
        if first is None:
            self.states[key] = (node.id, digest)
        elif first[1] != digest:
            self.violations.append(
                Violation(
                    "replicas agree",
                    f"group {group.id} at applied index {index}: node {node.id}'s state "
                    f"differs from node {first[0]}'s ({describe_state(group.fsm)})",
                )
            )

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.up]


def _gossip(node: SimNode, frm: int, states: Any) -> None:
    assert node.broker is not None
    node.broker.on_leaders(frm, states)


class _Stub:
    """node_id -> a stub of that node's handlers (the service's forward), over the network."""

    def __init__(self, cluster: SimCluster, frm: SimNode, to: int) -> None:
        self.cluster, self.frm, self.to = cluster, frm, to

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        async def call(request: Any, timeout: float = 5.0) -> Any:
            c = self.cluster
            if not c.net.can_hear(self.frm.id, self.to) or not c.net.can_hear(self.to, self.frm.id):
                await asyncio.sleep(min(timeout, 0.05))
                raise _aio_error(grpc.StatusCode.UNAVAILABLE, f"node {self.to} is unreachable")
            try:
                return await c.call(self.to, method, request, timeout)
            except RpcError as e:
                if e.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                    raise _aio_error(grpc.StatusCode[e.code], e.message) from None
                detail = errors_pb2.ErrorDetail(
                    code=errors_pb2.ErrorCode.Value(e.code),  # type: ignore[arg-type]
                    message=e.message,
                    leader_id=e.leader_id,
                )
                status = wire_status.error_status(detail)
                raise grpc.aio.AioRpcError(
                    status.code,
                    grpc.aio.Metadata(),
                    grpc.aio.Metadata(*status.trailing_metadata),
                    status.details,
                ) from None

        return call


def _aio_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


# -- what a replicated state machine holds ------------------------------------------------------
def state_digest(fsm: Any, *, restored: bool) -> str | None:
    """A digest of what must be identical on every replica at one applied index, or None
    where it need not be. The controller's and the groups' state are their snapshots' JSON
    (canonical, as the ReplicaState RPC compares them). A partition's is its next offset, its
    producer table and the log start DeleteRecords asked for (retention's is each replica's
    own); not right after a snapshot restore, nor until it has applied past the point its
    restored state reflects (a retention snapshot carries the producer table and the requested
    log start of a later applied index than its own: the batches in between are skipped, not
    recorded)."""
    if isinstance(fsm, Partition):
        if (
            restored
            or fsm.offsets.end_offset < getattr(fsm, "_producers_as_of", 0)
            or fsm.applied_index < fsm.restored_as_of_index
        ):
            return None
        text = json.dumps(
            [fsm.offsets.end_offset, fsm.producers.to_json(), fsm.requested_log_start]
        )
        return hashlib.sha256(text.encode()).hexdigest()
    state = getattr(fsm, "state", None)
    if state is None or not hasattr(state, "to_json"):
        return None
    if isinstance(fsm, Controller):
        raw = replica_state.controller_canonical(state.to_json())
    elif isinstance(fsm, GroupCoordinator):
        raw = replica_state.groups_canonical(state.to_json())
    else:
        raw = json.loads(state.to_json() or b"{}")
    return replica_state.canonical_digest(raw)


def describe_state(fsm: Any) -> str:
    if isinstance(fsm, Partition):
        return (
            f"next offset {fsm.offsets.end_offset}, {len(fsm.producers)} producers, "
            f"requested log start {fsm.requested_log_start}"
        )
    text = fsm.state.to_json().decode()
    return text if len(text) < 400 else text[:400] + "..."


__all__ = [
    "Api",
    "ClusterOptions",
    "FakeContext",
    "RpcError",
    "SimCluster",
    "SimNode",
    "Violation",
    "broker_pb2",
]
