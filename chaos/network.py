"""Where link faults land: the fault proxies on every node-to-node link (or iptables in containers).

The network's state is a value, `NetworkState`: the directed pairs that are cut ((a, b): what
node a sends no longer reaches node b), plus latency, jitter and a bandwidth limit on every
link. A network backend makes the links match a state (`apply`), so healing is applying the empty
state, and applying the same state twice does nothing.

Links. Node i reaches node j through two proxies (deploy/toxiproxy.json names them so; the local
target creates the same twelve):
  node<i>_to_node<j>       listens on some port P, forwards to j's gRPC port: i's --peers entry
                           for j is this proxy, and forwarded admin calls take it;
  node<i>_to_node<j>_raft  listens on P + RAFT_PORT_OFFSET, forwards to j's Raft transport (its
                           gRPC port + RAFT_PORT_OFFSET): a node dials a peer's Raft transport at
                           the peer's --peers address plus the offset (liferaft_proto.ports),
                           which lands here.
Whichever node of a pair dials, the bytes of i -> j travel either "upstream" on i's proxies to j
(i dialled) or "downstream" on j's proxies to i (j dialled). Cutting (i, j) therefore holds
i's direction on all four proxies of the pair, Raft and gRPC alike: a Toxiproxy `timeout` toxic
with timeout 0 on each; latency and bandwidth go on both proxies of every link too. Our proxy
(chaos/proxy.py) holds those bytes until the toxic goes, as a real partition does; Shopify's
Toxiproxy drops them, which breaks the stream and makes the nodes reconnect after the heal. Either
way the other direction keeps flowing, so a one-way partition is one toxic per proxy.

Partitions as cuts (pure functions, tested alone):
  split_cuts(minority, nodes)  both directions between the minority and the rest
  one_way_cuts(a, b)           a -> b only
  ring_cuts(order)             Jepsen's majorities ring: along the ring, each node hears only
                               from the majority-1 nodes after it, so every node sees a majority
                               and no two see the same one (3 nodes: 1 hears only 2, 2 only 3,
                               3 only 1; no node can win a vote and hear its acks)

Backends:
  ToxiproxyNetwork  the Toxiproxy HTTP API through `toxiproxy-python`, against a real Toxiproxy
                    or chaos/proxy.py. Everything a state needs: cuts, latency, bandwidth.
  IptablesNetwork   DROP rules inside each node container's network namespace (compose cluster
                    with direct peers). Cuts only. A dropped direction also drops the TCP acks
                    of the other, so a one-way cut stalls both directions' data here.
"""

from __future__ import annotations

import random
import re
import shlex
import subprocess
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from chaos.proxy import format_hostport, parse_hostport
from chaos.targets import ComposeNodes, TargetError
from liferaft.free_ports import listen_port_range, port_free
from liferaft_proto.ports import RAFT_PORT_OFFSET, bound_offsets

__all__ = [
    "RAFT_PORT_OFFSET",
    "IptablesNetwork",
    "Network",
    "NetworkState",
    "ToxicSpec",
    "ToxiproxyNetwork",
    "create_links",
    "link_name",
    "link_proxies",
    "one_way_cuts",
    "parse_link_name",
    "raft_link_name",
    "ring_cuts",
    "split_cuts",
    "toxics_for",
]

T = TypeVar("T")
Cut = tuple[int, int]

API_TIMEOUT_S = 10.0
"""Bound on one call to the proxy's HTTP API (toxiproxy-python sets no timeout of its own)."""

CREATE_ATTEMPTS = 50
"""Ports tried per link before create_links gives up."""

_PORT_RNG = random.Random()
"""Draws create_links' candidate ports (its own, so a seeded global `random` is left alone)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkState:
    """What is wrong with the links right now; the default is a healthy network."""

    cuts: frozenset[Cut] = frozenset()
    """(a, b): bytes from node a do not reach node b."""
    latency_ms: int = 0
    """Added to every node-to-node message, each direction."""
    jitter_ms: int = 0
    bandwidth_kbps: int = 0
    """Every link, each direction, limited to this many KB/s (KB = 1000 bytes); 0: no limit."""

    @property
    def healthy(self) -> bool:
        return self == NetworkState()


def link_name(src: int, dst: int) -> str:
    """The proxy through which node `src` dials node `dst`'s gRPC port (its --peers address)."""
    return f"node{src}_to_node{dst}"


def raft_link_name(src: int, dst: int) -> str:
    """The proxy through which node `src` dials node `dst`'s Raft transport; it listens
    RAFT_PORT_OFFSET above link_name(src, dst)."""
    return f"node{src}_to_node{dst}_raft"


def link_proxies(src: int, dst: int) -> tuple[str, str]:
    """Both proxies of the link src -> dst: every fault on the link goes on each."""
    return link_name(src, dst), raft_link_name(src, dst)


_LINK = re.compile(r"^node(\d+)_to_node(\d+)(_raft)?$")


def parse_link_name(name: str) -> Cut | None:
    """The (dialler, dialled) link a proxy named by link_name or raft_link_name belongs to."""
    m = _LINK.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def split_cuts(minority: Iterable[int], nodes: Iterable[int]) -> frozenset[Cut]:
    """Both directions between `minority` and every other node."""
    side = set(minority)
    rest = set(nodes) - side
    return frozenset({(a, b) for a in side for b in rest} | {(b, a) for a in side for b in rest})


def one_way_cuts(src: int, dst: int) -> frozenset[Cut]:
    return frozenset({(src, dst)})


def ring_cuts(order: Sequence[int]) -> frozenset[Cut]:
    """Jepsen's majorities ring over `order`: node order[i] hears only from the next
    majority-1 nodes along the ring; every other sender is cut off from it."""
    n = len(order)
    if n < 3:
        raise ValueError("a ring needs at least 3 nodes")
    majority = n // 2 + 1
    cuts = set()
    for i, node in enumerate(order):
        hears = {order[(i + k) % n] for k in range(1, majority)}
        cuts |= {(src, node) for src in order if src != node and src not in hears}
    return frozenset(cuts)


@dataclass(frozen=True, slots=True)
class ToxicSpec:
    type: str
    stream: str
    attributes: tuple[tuple[str, int], ...]

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "stream": self.stream, "attributes": dict(self.attributes)}


def toxics_for(state: NetworkState, links: Iterable[Cut]) -> dict[tuple[str, str], ToxicSpec]:
    """The toxics that make the proxies of `links` ((dialler, dialled) pairs) match `state`:
    {(proxy name, toxic name): spec}. Each link gets the same toxics on both its proxies
    (link_proxies: gRPC and Raft)."""
    out: dict[tuple[str, str], ToxicSpec] = {}
    for dialler, dialled in sorted(set(links)):
        # The same toxics on the gRPC and the Raft proxy of the link.
        for proxy in link_proxies(dialler, dialled):
            # upstream carries dialler -> dialled, downstream dialled -> dialler.
            for stream, src, dst in (
                ("upstream", dialler, dialled),
                ("downstream", dialled, dialler),
            ):
                if (src, dst) in state.cuts:
                    out[(proxy, f"cut_{stream}")] = ToxicSpec("timeout", stream, (("timeout", 0),))
                if state.latency_ms or state.jitter_ms:
                    out[(proxy, f"latency_{stream}")] = ToxicSpec(
                        "latency",
                        stream,
                        (("jitter", state.jitter_ms), ("latency", state.latency_ms)),
                    )
                if state.bandwidth_kbps:
                    out[(proxy, f"bandwidth_{stream}")] = ToxicSpec(
                        "bandwidth", stream, (("rate", state.bandwidth_kbps),)
                    )
    return out


class Network(Protocol):
    """A backend that makes the node-to-node links match a `NetworkState`."""

    def apply(self, state: NetworkState) -> None: ...

    def close(self) -> None: ...


def _bounded(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """Run a blocking call in a daemon thread and give up waiting after `timeout_s`.

    toxiproxy-python calls `requests` without a timeout, so a proxy that stopped answering
    would hang the nemesis forever; this bounds it (the stray thread dies with the process).
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:
            box["error"] = e

    thread = threading.Thread(target=run, name=f"chaos-api {what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TargetError(f"{what}: no answer from the proxy API within {timeout_s:.0f}s")
    if "error" in box:
        error = box["error"]
        if isinstance(error, TargetError):
            raise error
        raise TargetError(f"{what}: {type(error).__name__}: {error}") from error
    result: T = box["result"]
    return result


# toxiproxy-python keeps the API's address in a class attribute: one address per process at a
# time. Each call sets it under this lock, so several networks (tests) can coexist.
_API_LOCK = threading.Lock()


class ToxiproxyNetwork:
    """Node-to-node links through Toxiproxy (or chaos/proxy.py), driven by toxiproxy-python.

    `api` is the HTTP API's HOST:PORT. On start every proxy is re-enabled and stripped of its
    toxics (Toxiproxy's /reset), and the links are the pairs of proxies named node<i>_to_node<j>
    and node<i>_to_node<j>_raft; a link without both is refused (faults on it would miss one of
    its two kinds of traffic).
    """

    def __init__(self, api: str, *, timeout_s: float = API_TIMEOUT_S) -> None:
        from toxiproxy import Toxiproxy  # the library the issue names; imported where used

        host, _, port = api.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"proxy API address {api!r} must look like HOST:PORT")
        self.api = api
        self._host, self._port = host.strip("[]"), int(port)
        self._timeout_s = timeout_s
        self._client = Toxiproxy()
        self._applied: dict[tuple[str, str], ToxicSpec] = {}
        self._call(self._client.reset, "reset")
        proxies: Mapping[str, Any] = self._call(self._client.proxies, "list proxies")
        self.proxies = {name: p for name, p in proxies.items() if parse_link_name(name)}
        self.links: frozenset[Cut] = frozenset(
            cut for cut in map(parse_link_name, self.proxies) if cut is not None
        )
        if not self.links:
            raise TargetError(
                f"the proxy at {api} has no node<i>_to_node<j> proxies (it has {sorted(proxies)})"
            )
        missing = sorted(
            name for link in self.links for name in link_proxies(*link) if name not in proxies
        )
        if missing:
            raise TargetError(
                f"the proxy at {api} lacks {missing}: every link needs both its gRPC proxy "
                "node<i>_to_node<j> and its Raft proxy node<i>_to_node<j>_raft (listening "
                f"{RAFT_PORT_OFFSET} ports above it; see deploy/toxiproxy.json)"
            )

    def _call(self, fn: Callable[..., T], what: str, *args: Any, **kwargs: Any) -> T:
        def locked() -> T:
            with _API_LOCK:
                self._client.update_api_consumer(self._host, self._port)
                return fn(*args, **kwargs)

        return _bounded(locked, self._timeout_s, f"{what} at {self.api}")

    def nodes(self) -> set[int]:
        return {n for link in self.links for n in link}

    def apply(self, state: NetworkState) -> None:
        desired = toxics_for(state, self.links)
        stale = [k for k, spec in self._applied.items() if desired.get(k) != spec]
        for proxy, toxic in stale:
            self._call(self.proxies[proxy].destroy_toxic, f"remove {toxic} from {proxy}", toxic)
            del self._applied[(proxy, toxic)]
        for (proxy, toxic), spec in desired.items():
            if (proxy, toxic) in self._applied:
                continue
            self._call(
                self.proxies[proxy].add_toxic,
                f"add {toxic} to {proxy}",
                name=toxic,
                type=spec.type,
                stream=spec.stream,
                toxicity=1.0,
                attributes=dict(spec.attributes),
            )
            self._applied[(proxy, toxic)] = spec

    def toxics(self) -> dict[str, list[dict[str, Any]]]:
        """The proxies' toxics as the server reports them (for checks and reports)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for name, proxy in sorted(self.proxies.items()):
            found = self._call(proxy.toxics, f"list toxics of {name}")
            out[name] = [
                {"name": t.name, "type": t.type, "stream": t.stream, "attributes": t.attributes}
                for t in found.values()
            ]
        return out

    def close(self) -> None:
        """Heal (remove every toxic we added)."""
        self.apply(NetworkState())


def create_links(
    api: str,
    addresses: Mapping[int, str],
    *,
    timeout_s: float = API_TIMEOUT_S,
    raft_port_offset: int = RAFT_PORT_OFFSET,
) -> dict[Cut, str]:
    """Create the two proxies of every ordered pair (i, j) of `addresses` (node id -> gRPC
    HOST:PORT) on the proxy server at `api`: node<i>_to_node<j> on a free loopback port P,
    upstream node j's address, and node<i>_to_node<j>_raft on P + raft_port_offset, upstream
    node j's Raft transport (its port + raft_port_offset). P is chosen so that neither port is
    one the nodes will listen on. Returns {(i, j): the address node i should dial node j at},
    the gRPC proxy's (node i finds the Raft proxy at the offset from it, as it would node j)."""
    from toxiproxy import Toxiproxy

    host, _, port = api.rpartition(":")
    client = Toxiproxy()
    # The nodes are not listening yet: keep every port they will bind (gRPC, Raft, Kafka,
    # metrics) out of the proxies' way; a link on a node's Kafka port failed its start.
    taken: set[int] = set()
    for address in addresses.values():
        node_port = parse_hostport(address)[1]
        taken |= {node_port + offset for offset in (*bound_offsets(), raft_port_offset)}
    out: dict[Cut, str] = {}
    for i in sorted(addresses):
        for j in sorted(addresses):
            if i == j:
                continue
            upstream_host, upstream_port = parse_hostport(addresses[j])
            raft_upstream = format_hostport(upstream_host, upstream_port + raft_port_offset)

            def create(i: int = i, j: int = j, raft_upstream: str = raft_upstream) -> str:
                names = link_proxies(i, j)
                for _ in range(CREATE_ATTEMPTS):
                    start, stop = listen_port_range()
                    listen = _PORT_RNG.randrange(start, stop - raft_port_offset)
                    ports = (listen, listen + raft_port_offset)
                    if taken.intersection(ports) or not all(map(_port_free, ports)):
                        continue
                    with _API_LOCK:
                        client.update_api_consumer(host.strip("[]"), int(port))
                        try:
                            proxy = client.create(
                                upstream=addresses[j],
                                name=names[0],
                                listen=format_hostport("127.0.0.1", ports[0]),
                            )
                            client.create(
                                upstream=raft_upstream,
                                name=names[1],
                                listen=format_hostport("127.0.0.1", ports[1]),
                            )
                        except KeyError:
                            # A port was taken after all (the API answered 500, which
                            # toxiproxy-python does not check: it fails reading the proxy
                            # from the error). Drop whatever was made and try other ports.
                            for name in names:
                                made = client.get_proxy(name)
                                if made is not None:
                                    made.destroy()
                            continue
                    taken.update(ports)
                    return str(proxy.listen)
                raise TargetError(
                    f"no two free ports {raft_port_offset} apart for {names[0]} and {names[1]} "
                    f"after {CREATE_ATTEMPTS} tries"
                )

            out[(i, j)] = _bounded(
                create, timeout_s, f"create proxies {' and '.join(link_proxies(i, j))} at {api}"
            )
    return out


def _port_free(port: int) -> bool:
    """Whether the proxy (on this machine) could listen on 127.0.0.1:`port` now."""
    return port_free("127.0.0.1", port)


@dataclass
class IptablesNetwork:
    """Cuts as iptables DROP rules in each node container's own network namespace.

    For a compose cluster whose nodes dial each other directly (no proxy): the cut (a, b) is
    `-s <a's address> -j DROP` in b's INPUT, in a chain of our own (LIFERAFT_CHAOS) that
    `apply` rewrites whole. Runs the host's iptables inside the namespace with nsenter (root
    needed; the image needs no iptables). Latency and bandwidth are not offered here: use the
    proxy network for those.
    """

    nodes: ComposeNodes
    chain: str = "LIFERAFT_CHAOS"
    _applied: dict[int, frozenset[str]] = field(default_factory=dict, init=False)

    def _iptables(self, pid: int, *args: str, check: bool = True) -> bool:
        cmd = ["nsenter", "-t", str(pid), "-n", "iptables", "-w", "5", *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise TargetError(f"{shlex.join(cmd)}: {e}") from e
        if check and done.returncode != 0:
            raise TargetError(f"{shlex.join(cmd)} exited {done.returncode}: {done.stderr.strip()}")
        return done.returncode == 0

    def apply(self, state: NetworkState) -> None:
        if state.latency_ms or state.jitter_ms or state.bandwidth_kbps:
            raise TargetError("the iptables network only cuts links; use the proxy network")
        addresses = {n: self.nodes.ip_addresses(n) for n in self.nodes.node_ids}
        for dst in self.nodes.node_ids:
            drop = frozenset(ip for src, d in state.cuts if d == dst for ip in addresses[src])
            if self._applied.get(dst, frozenset()) == drop:
                continue
            pid = self.nodes.pid(dst)
            if pid <= 0:
                continue  # not running: a restarted container starts with a clean namespace
            if not self._iptables(pid, "-n", "-L", self.chain, check=False):
                self._iptables(pid, "-N", self.chain)
            if not self._iptables(pid, "-C", "INPUT", "-j", self.chain, check=False):
                self._iptables(pid, "-I", "INPUT", "-j", self.chain)
            self._iptables(pid, "-F", self.chain)
            for ip in sorted(drop):
                self._iptables(pid, "-A", self.chain, "-s", ip, "-j", "DROP")
            self._applied[dst] = drop

    def forget(self, node_ids: Collection[int]) -> None:
        """These nodes restarted: their namespaces are new and hold no rules."""
        for n in node_ids:
            self._applied.pop(n, None)

    def close(self) -> None:
        self.apply(NetworkState())
