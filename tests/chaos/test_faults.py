"""The fault vocabulary without a cluster: cuts as pure values, the toxics they become on the
proxies, bytes really held in one direction only, the Faults state machine, and the seeded plan.

The proxy is our Toxiproxy-compatible server in this test's event loop, driven by the real
`toxiproxy-python` client through chaos/network.py (blocking, so off the loop in a thread).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import chaos.network
from chaos.faults import Faults
from chaos.history import History
from chaos.nemesis import (
    FAULT_KINDS,
    NODE_KINDS,
    Nemesis,
    PlannedFault,
    parse_fault_kinds,
    plan_faults,
)
from chaos.network import (
    RAFT_PORT_OFFSET,
    NetworkState,
    ToxicSpec,
    ToxiproxyNetwork,
    create_links,
    link_name,
    link_proxies,
    one_way_cuts,
    parse_link_name,
    raft_link_name,
    ring_cuts,
    split_cuts,
    toxics_for,
)
from chaos.proxy import ToxiproxyServer, format_hostport, parse_hostport
from chaos.targets import TargetError, parse_docker_time
from liferaft_proto.ports import KAFKA, METRICS
from node import config as node_config

WAIT_S = 15.0
NODES = (1, 2, 3)
ALL_LINKS = frozenset((i, j) for i in NODES for j in NODES if i != j)


# ---------------------------------------------------------------------------------------------
# Cuts and toxics (pure)


def test_split_cuts_both_directions_between_the_sides_only() -> None:
    assert split_cuts([3], NODES) == {(3, 1), (3, 2), (1, 3), (2, 3)}
    five = split_cuts([1, 2], range(1, 6))
    assert len(five) == 2 * 2 * 3
    assert (1, 2) not in five and (3, 4) not in five and (1, 5) in five and (5, 2) in five


def test_ring_of_three_lets_each_node_hear_exactly_one_other() -> None:
    cuts = ring_cuts([1, 2, 3])
    assert cuts == {(3, 1), (1, 2), (2, 3)}
    for node in NODES:
        hears = {src for src in NODES if src != node and (src, node) not in cuts}
        assert len(hears) == 1  # itself plus one: a majority of three
    # No two nodes see the same majority.
    seen = {frozenset({n} | {s for s in NODES if s != n and (s, n) not in cuts}) for n in NODES}
    assert len(seen) == 3


def test_ring_of_five_every_node_sees_a_different_majority() -> None:
    order = [4, 1, 5, 2, 3]
    cuts = ring_cuts(order)
    views = []
    for node in order:
        view = {node} | {s for s in order if s != node and (s, node) not in cuts}
        assert len(view) == 3
        views.append(frozenset(view))
    assert len(set(views)) == 5
    with pytest.raises(ValueError):
        ring_cuts([1, 2])


def test_link_names_round_trip() -> None:
    assert link_name(1, 3) == "node1_to_node3"
    assert raft_link_name(1, 3) == "node1_to_node3_raft"
    assert link_proxies(1, 3) == ("node1_to_node3", "node1_to_node3_raft")
    assert parse_link_name("node12_to_node3") == (12, 3)
    assert parse_link_name("node12_to_node3_raft") == (12, 3)
    assert parse_link_name("toxiproxy") is None
    assert parse_link_name("node1_to_node3_grpc") is None


def test_the_raft_links_sit_where_a_node_dials_its_peers_raft_transport() -> None:
    """A node finds a peer's Raft transport RAFT_PORT_OFFSET above the peer's --peers address,
    so the Raft proxy of a link must listen that far above the gRPC proxy."""
    assert node_config.raft_address("127.0.0.1:21012") == f"127.0.0.1:{21012 + RAFT_PORT_OFFSET}"


def test_a_cut_holds_its_direction_on_both_proxies_of_the_pair() -> None:
    toxics = toxics_for(NetworkState(cuts=one_way_cuts(1, 2)), ALL_LINKS)
    timeout = ToxicSpec("timeout", "upstream", (("timeout", 0),))
    timeout_down = ToxicSpec("timeout", "downstream", (("timeout", 0),))
    # 1 -> 2 travels upstream where 1 dials 2, and downstream where 2 dials 1; on the gRPC
    # proxies and on the Raft transport's alike.
    assert toxics == {
        ("node1_to_node2", "cut_upstream"): timeout,
        ("node1_to_node2_raft", "cut_upstream"): timeout,
        ("node2_to_node1", "cut_downstream"): timeout_down,
        ("node2_to_node1_raft", "cut_downstream"): timeout_down,
    }
    # Only the links that exist get toxics.
    assert toxics_for(NetworkState(cuts=one_way_cuts(1, 2)), [(1, 2)]) == {
        ("node1_to_node2", "cut_upstream"): timeout,
        ("node1_to_node2_raft", "cut_upstream"): timeout,
    }


def test_latency_and_bandwidth_cover_every_link_and_direction() -> None:
    toxics = toxics_for(NetworkState(latency_ms=50, jitter_ms=10, bandwidth_kbps=100), ALL_LINKS)
    assert len(toxics) == len(ALL_LINKS) * 2 * 2 * 2  # links, proxies, streams, toxics
    for proxy in ("node3_to_node1", "node3_to_node1_raft"):
        assert toxics[(proxy, "latency_downstream")].to_json() == {
            "type": "latency",
            "stream": "downstream",
            "attributes": {"jitter": 10, "latency": 50},
        }
    assert toxics_for(NetworkState(), ALL_LINKS) == {}


# ---------------------------------------------------------------------------------------------
# Against the proxy server


class Upstream:
    """A TCP server standing in for a node: it hands each accepted connection to the test."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.server: asyncio.Server | None = None
        self.address = ""

    async def start(self, port: int = 0) -> str:
        async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await self.accepted.put((r, w))

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", port)
        self.address = format_hostport(*self.server.sockets[0].getsockname()[:2])
        return self.address

    async def close(self) -> None:
        while not self.accepted.empty():
            self.accepted.get_nowait()[1].close()
        if self.server is not None:
            self.server.close()


async def start_node(grpc: Upstream, raft: Upstream) -> str:
    """Start a fake node: `grpc` on a free port, `raft` RAFT_PORT_OFFSET above it. Its address."""
    for _ in range(50):
        address = await grpc.start()
        try:
            await raft.start(parse_hostport(address)[1] + RAFT_PORT_OFFSET)
        except OSError:
            await grpc.close()
            continue
        return address
    raise AssertionError("no two free ports RAFT_PORT_OFFSET apart")


Nodes = dict[str, dict[int, Upstream]]
"""{"grpc": node id -> its gRPC stand-in, "raft": node id -> its Raft transport's}."""


@pytest.fixture
async def links() -> AsyncIterator[tuple[ToxiproxyServer, dict[tuple[int, int], str], Nodes]]:
    """A proxy server with the six links (twelve proxies) of a three-node cluster; each node a
    pair of Upstreams, its gRPC port and its Raft port RAFT_PORT_OFFSET above."""
    ups: Nodes = {"grpc": {n: Upstream() for n in NODES}, "raft": {n: Upstream() for n in NODES}}
    addresses = {n: await start_node(ups["grpc"][n], ups["raft"][n]) for n in NODES}
    async with ToxiproxyServer("127.0.0.1", 0, seed=3) as server:
        api = format_hostport(*server.address)
        made = await asyncio.wait_for(asyncio.to_thread(create_links, api, addresses), WAIT_S)
        yield server, made, ups
    for kind in ups.values():
        for u in kind.values():
            await u.close()


async def blocking(fn: Any, *args: Any) -> Any:
    return await asyncio.wait_for(asyncio.to_thread(fn, *args), WAIT_S)


def delete_proxy(api: str, name: str) -> None:
    from toxiproxy import Toxiproxy

    host, _, port = api.rpartition(":")
    client = Toxiproxy()
    client.update_api_consumer(host, int(port))
    proxy = client.get_proxy(name)
    assert proxy is not None
    proxy.destroy()


async def test_create_links_makes_two_proxies_per_direction(links: Any) -> None:
    """node<i>_to_node<j> on P to j's gRPC port, node<i>_to_node<j>_raft on P + offset to j's
    Raft port: node i, told its peer j is at P, dials j's Raft transport at P + offset."""
    server, made, ups = links
    assert set(made) == ALL_LINKS
    net = await blocking(ToxiproxyNetwork, format_hostport(*server.address))
    assert set(net.proxies) == {name for link in ALL_LINKS for name in link_proxies(*link)}
    for (i, j), listen in made.items():
        assert server.proxy_listen(link_name(i, j)) == listen
        assert parse_hostport(listen)[1] != 0
        assert server.proxy_listen(raft_link_name(i, j)) == node_config.raft_address(listen)
        assert net.proxies[link_name(i, j)].upstream == ups["grpc"][j].address
        assert net.proxies[raft_link_name(i, j)].upstream == ups["raft"][j].address
    node_ports = {parse_hostport(u.address)[1] for kind in ups.values() for u in kind.values()}
    proxy_ports = {parse_hostport(server.proxy_listen(p))[1] for p in net.proxies}
    assert len(proxy_ports) == 12 and not proxy_ports & node_ports


def free_pair() -> int:
    """A port P with P and P + RAFT_PORT_OFFSET both free now."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + RAFT_PORT_OFFSET > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + RAFT_PORT_OFFSET))
            except OSError:
                continue
        return port
    raise AssertionError("no free pair of ports")


async def test_create_links_skips_taken_ports_and_cleans_up_after_a_clash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A candidate that is a node's port (any it will bind: gRPC, Raft, Kafka, metrics) is
    never tried; one whose Raft port turns out taken (the proxy answers 500) leaves no proxy
    behind, and the next candidate is used."""
    ups = {"grpc": {n: Upstream() for n in (1, 2)}, "raft": {n: Upstream() for n in (1, 2)}}
    addresses = {n: await start_node(ups["grpc"][n], ups["raft"][n]) for n in (1, 2)}
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    clash = int(squatter.getsockname()[1]) - RAFT_PORT_OFFSET  # its Raft port is taken
    good = [free_pair(), free_pair()]
    node_port = parse_hostport(addresses[2])[1]
    kafka_port = parse_hostport(addresses[1])[1] + KAFKA.offset  # CI once started a link there
    metrics_port = node_port + METRICS.offset
    candidates = iter([kafka_port, metrics_port, node_port, clash, good[0], good[1]])

    class Scripted:
        def randrange(self, start: int, stop: int) -> int:
            return next(candidates)

    monkeypatch.setattr(chaos.network, "_PORT_RNG", Scripted())
    # Pretend every port looks free, so the clash reaches the proxy's API.
    monkeypatch.setattr(chaos.network, "_port_free", lambda port: True)
    try:
        async with ToxiproxyServer("127.0.0.1", 0, seed=3) as server:
            api = format_hostport(*server.address)
            made = await blocking(create_links, api, addresses)
            assert made == {(1, 2): f"127.0.0.1:{good[0]}", (2, 1): f"127.0.0.1:{good[1]}"}
            net = await blocking(ToxiproxyNetwork, api)
            assert sorted(net.proxies) == sorted(link_proxies(1, 2) + link_proxies(2, 1))
            assert server.proxy_listen(raft_link_name(2, 1)) == (
                f"127.0.0.1:{good[1] + RAFT_PORT_OFFSET}"
            )
    finally:
        squatter.close()
        for kind in ups.values():
            for u in kind.values():
                await u.close()


async def test_network_refuses_a_link_without_its_raft_proxy(links: Any) -> None:
    """Faults on the gRPC proxy alone would let the Raft traffic through: refuse to run."""
    server, _, _ = links
    api = format_hostport(*server.address)
    await blocking(lambda: delete_proxy(api, raft_link_name(2, 3)))
    with pytest.raises(TargetError, match="node2_to_node3_raft"):
        await blocking(ToxiproxyNetwork, api)


async def test_network_applies_a_state_and_heals(links: Any) -> None:
    server, _, _ = links
    net = await blocking(ToxiproxyNetwork, format_hostport(*server.address))
    assert net.links == ALL_LINKS
    state = NetworkState(cuts=ring_cuts([1, 2, 3]), latency_ms=20)
    await blocking(net.apply, state)
    shown = await blocking(net.toxics)
    expected = toxics_for(state, ALL_LINKS)
    assert {(p, t["name"]) for p, ts in shown.items() for t in ts} == set(expected)
    await blocking(net.apply, state)  # idempotent
    assert await blocking(net.toxics) == shown
    await blocking(net.apply, NetworkState(cuts=ring_cuts([1, 2, 3])))  # latency gone, cuts stay
    assert {(p, t["name"]) for p, ts in (await blocking(net.toxics)).items() for t in ts} == set(
        toxics_for(NetworkState(cuts=ring_cuts([1, 2, 3])), ALL_LINKS)
    )
    await blocking(net.close)
    assert all(not ts for ts in (await blocking(net.toxics)).values())


@pytest.mark.parametrize("kind", ["grpc", "raft"])
async def test_one_way_cut_holds_one_direction_and_heals_intact(links: Any, kind: str) -> None:
    """Node 1 dials node 2 through node1_to_node2 (gRPC), and node2's Raft transport through
    node1_to_node2_raft, RAFT_PORT_OFFSET above. one_way(1, 2): on either, what 1 sends is held,
    what 2 sends still arrives; after the heal the held bytes arrive, in order."""
    server, made, ups = links
    net = await blocking(ToxiproxyNetwork, format_hostport(*server.address))
    address = made[(1, 2)] if kind == "grpc" else node_config.raft_address(made[(1, 2)])
    host, port = parse_hostport(address)
    r1, w1 = await asyncio.wait_for(asyncio.open_connection(host, port), WAIT_S)
    r2, w2 = await asyncio.wait_for(ups[kind][2].accepted.get(), WAIT_S)

    await blocking(net.apply, NetworkState(cuts=one_way_cuts(1, 2)))
    w1.write(b"from one")
    await w1.drain()
    w2.write(b"from two")
    await w2.drain()
    assert await asyncio.wait_for(r1.readexactly(8), WAIT_S) == b"from two"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(r2.read(1), 0.5)

    await blocking(net.apply, NetworkState())
    assert await asyncio.wait_for(r2.readexactly(8), WAIT_S) == b"from one"
    w1.close()
    w2.close()


# ---------------------------------------------------------------------------------------------
# Faults: the state machine


class FakeNodes:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    @property
    def node_ids(self) -> tuple[int, ...]:
        return NODES

    def kill(self, node_id: int) -> None:
        self.calls.append(("kill", node_id))

    def restart(self, node_id: int) -> None:
        self.calls.append(("restart", node_id))

    def pause(self, node_id: int) -> None:
        self.calls.append(("pause", node_id))

    def resume(self, node_id: int) -> None:
        self.calls.append(("resume", node_id))


class FakeNetwork:
    def __init__(self) -> None:
        self.states: list[NetworkState] = []

    def apply(self, state: NetworkState) -> None:
        self.states.append(state)

    def close(self) -> None:
        self.states.append(NetworkState())


def test_faults_refuse_what_makes_no_sense() -> None:
    faults = Faults(FakeNodes(), FakeNetwork())
    with pytest.raises(TargetError):
        faults.restart(1)  # not killed
    with pytest.raises(TargetError):
        faults.resume(1)  # not paused
    with pytest.raises(TargetError):
        faults.kill(9)  # no such node
    faults.kill(1)
    with pytest.raises(TargetError):
        faults.kill(1)
    with pytest.raises(TargetError):
        faults.pause(1)  # dead
    with pytest.raises(TargetError):
        faults.split([1, 2, 3])  # nobody on the other side
    with pytest.raises(TargetError):
        faults.one_way(2, 2)
    with pytest.raises(TargetError):
        faults.ring([1, 2])


def test_partitions_add_up_and_recover_undoes_everything() -> None:
    nodes, net = FakeNodes(), FakeNetwork()
    faults = Faults(nodes, net)
    faults.isolate(3)
    faults.one_way(1, 2)
    faults.latency(30, 5)
    assert faults.state == NetworkState(
        cuts=split_cuts([3], NODES) | {(1, 2)}, latency_ms=30, jitter_ms=5
    )
    faults.kill(2)
    faults.pause(1)
    done = faults.recover()
    assert done == ["heal", "resume 1", "restart 2"]
    assert net.states[-1] == NetworkState() and faults.state.healthy
    assert nodes.calls == [("kill", 2), ("pause", 1), ("resume", 1), ("restart", 2)]
    assert not faults.killed and not faults.paused
    assert faults.recover() == []


def test_link_faults_need_a_network() -> None:
    faults = Faults(FakeNodes(), None)
    with pytest.raises(TargetError):
        faults.isolate(1)
    faults.heal()  # healing a network that never broke is fine


# ---------------------------------------------------------------------------------------------
# The plan


def test_same_seed_same_plan_and_seeds_differ() -> None:
    a = plan_faults(FAULT_KINDS, 300, seed=42)
    assert a == plan_faults(FAULT_KINDS, 300, seed=42)
    assert a != plan_faults(FAULT_KINDS, 300, seed=43)
    assert [PlannedFault.from_json(p.to_json()) for p in a] == a


def test_plan_stays_inside_the_run_and_uses_only_the_kinds_asked() -> None:
    for seed in range(20):
        plan = plan_faults(("kill", "partition"), 120, seed, partitions=4, tail_s=6)
        assert plan, "a 120 s run gets faults"
        assert {p.kind for p in plan} <= {"kill", "isolate", "split", "one_way", "ring"}
        ends = [p.at_s + p.hold_s for p in plan]
        assert max(ends) <= 114
        assert all(b.at_s >= a.at_s + a.hold_s for a, b in itertools.pairwise(plan))
        assert all(0 <= p.partition < 4 for p in plan)
        assert all(p.kind in NODE_KINDS or p.partition == 0 for p in plan)
    assert plan_faults(("kill",), 5, seed=1) == []


def test_parse_fault_kinds() -> None:
    assert parse_fault_kinds("kill, pause,kill") == ("kill", "pause")
    with pytest.raises(ValueError, match="gremlins"):
        parse_fault_kinds("kill,gremlins")
    with pytest.raises(ValueError):
        parse_fault_kinds(" , ")


async def test_nemesis_aims_at_the_leader_and_records_windows() -> None:
    nodes, net = FakeNodes(), FakeNetwork()
    history = History()
    plan = [
        PlannedFault(at_s=0.0, kind="kill", hold_s=0.05, partition=1),
        PlannedFault(at_s=0.0, kind="split", hold_s=0.05, partition=0),
        PlannedFault(at_s=0.0, kind="ring", hold_s=0.05),
        PlannedFault(at_s=0.0, kind="pause", hold_s=5.0, partition=2),  # past the end: skipped
    ]

    async def leaders() -> dict[int, int]:
        return {0: 3, 1: 2, 2: 2, 3: 1}

    nemesis = Nemesis(Faults(nodes, net), history, plan, leaders=leaders, on_event=lambda _: None)
    events = await nemesis.run(time.monotonic(), 2.0)
    assert [e.kind for e in events] == ["kill", "split", "ring", "pause"]
    kill, split, ring, pause = events
    assert kill.nodes == (2,) and kill.affected_partitions == (1, 2)
    assert nodes.calls[:2] == [("kill", 2), ("restart", 2)]
    assert split.nodes == (3,) and split.affected_partitions == (0,)
    assert net.states[0].cuts == split_cuts([3], NODES)
    assert ring.nodes == () and ring.affected_partitions == (0, 1, 2, 3)
    assert pause.skipped and ("pause", 2) not in nodes.calls
    assert [f.name for f in history.faults] == ["kill", "split", "ring"]
    assert all(f.start_ns <= f.end_ns for f in history.faults)


def test_docker_times_become_epoch_seconds() -> None:
    assert parse_docker_time("2024-05-01T12:00:00.5Z") == 1714564800.5
    assert parse_docker_time("2024-05-01T12:00:00Z\n") == 1714564800.0
    with pytest.raises(ValueError):
        parse_docker_time("0001-01-01T00:00:00Z")  # docker's "never"
