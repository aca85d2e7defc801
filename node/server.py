"""One broker process: storage, the Raft driver, the transport, and the gRPC server, wired up.

Start order matters only a little: storage first (refuse a data directory that belongs to
another node), then the Raft groups (they load from disk), then the gRPC server (peers and
clients can now reach us), then the transport dials peers and the driver starts ticking.
Shutdown is graceful by default: leadership of every group this node leads is handed to an
in-sync follower first, so clients see a clean NOT_LEADER redirect instead of an election timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from contextlib import suppress

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from liferaft_proto.credentials import NodeAssertion, SignedCalls
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc
from node import principal
from node.authn import GrpcAuth
from node.broker import Broker
from node.config import ConfigError, NodeConfig, parse_address
from node.controller import CONTROLLER_GROUP
from node.driver import RaftDriver, RaftTiming
from node.errors import BrokerError
from node.groups import GROUPS_GROUP
from node.kafka.classic import ClassicGroups
from node.kafka.server import KafkaListener
from node.kafka.wire import Ctx as KafkaCtx
from node.membership import (
    ANCHOR_GROUP,
    FENCES_KEY,
    FOUNDERS_KEY,
    INCARNATION_KEY,
    load_fences,
    new_incarnation,
)
from node.metrics import CountingOutbox, MetricsServer, NodeCollector, NodeMetrics
from node.service import BrokerService
from node.storage import GroupUpdate, NodeStore
from node.stream_listener import StreamListener
from node.tasks import supervise
from node.tls import ClientTls, PeerTls, TlsFiles
from node.transport import Transport
from raft import IsrPolicy, Role

log = logging.getLogger("liferaft.server")

GRPC_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.so_reuseport", 0),
    # Clients ping every second to notice a node that stopped answering (client/connection.py);
    # accept that instead of answering GOAWAY "too many pings".
    ("grpc.http2.min_ping_interval_without_data_ms", 500),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]
NODE_ID_KEY = b"node/id"
CLUSTER_ID_KEY = b"node/cluster_id"


WAIT_LOG_EVERY_S = 5.0
"""How often a node that is not serving says what it waits for."""


class NodeServer:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config.validate()
        self.store: NodeStore | None = None
        self.server: grpc.aio.Server | None = None
        self.broker: Broker | None = None
        self.driver: RaftDriver | None = None
        self.transport: Transport | None = None
        self.kafka: KafkaListener | None = None
        self.stream: StreamListener | None = None
        self.client_tls: ClientTls | None = None
        self._forward_interceptors: list[SignedCalls] = []
        self.health = health.aio.HealthServicer()
        self._housekeeping: asyncio.Task[None] | None = None
        self._peer_channels: dict[int, grpc.aio.Channel] = {}
        self._stopping = False
        self.metrics = NodeMetrics(self.config.node_id)
        self.metrics_server: MetricsServer | None = None
        self.incarnation = 0
        """This data directory's incarnation (node/membership.py), set when it is opened."""
        self.fresh = False
        """Whether the data directory was created by this start."""

    # -- start ---------------------------------------------------------------------------------
    def _open_store(self) -> NodeStore:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        store = NodeStore(cfg.data_dir / "raft.db", background_write_mb_s=cfg.background_write_mb_s)
        owner = store.get_meta(NODE_ID_KEY)
        cluster = store.get_meta(CLUSTER_ID_KEY)
        incarnation = store.get_meta(INCARNATION_KEY)
        if owner is not None and int(owner) != cfg.node_id:
            store.close()
            raise ConfigError(
                f"data directory {cfg.data_dir} belongs to node {int(owner)}, not node {cfg.node_id}: "
                "give each node its own --data-dir"
            )
        if cluster is not None and cluster.decode() != cfg.cluster_id:
            store.close()
            raise ConfigError(
                f"data directory {cfg.data_dir} belongs to cluster {cluster.decode()!r}, "
                f"not {cfg.cluster_id!r}"
            )
        self.fresh = owner is None
        if owner is None or incarnation is None:
            # A new data directory gets its incarnation with its owner, in one synced write
            # (NodeStore made its directories durable when it created them). A directory from
            # before incarnations gets one too, but is not new: it has its votes.
            self.incarnation = new_incarnation()
            meta: list[tuple[bytes, bytes | None]] = [
                (INCARNATION_KEY, str(self.incarnation).encode())
            ]
            if owner is None:
                meta += [
                    (NODE_ID_KEY, str(cfg.node_id).encode()),
                    (CLUSTER_ID_KEY, cfg.cluster_id.encode()),
                ]
            if self.fresh:
                # Silent in the controller group until we know this is the cluster's birth or
                # the controller replaced our old incarnation (node/membership.py).
                fences = {CONTROLLER_GROUP: [0, 0], GROUPS_GROUP: [0, 0]}
                meta.append((FENCES_KEY, json.dumps(fences).encode()))
            store.write([GroupUpdate(group=store.group(ANCHOR_GROUP), meta=meta)], sync=True)
        else:
            self.incarnation = int(incarnation)
        log.info(
            "node %d: data directory %s, incarnation %x%s",
            cfg.node_id,
            cfg.data_dir,
            self.incarnation,
            " (new: silent until the cluster's birth or its admission)" if self.fresh else "",
        )
        return store

    def _peer_tls(self) -> PeerTls | None:
        cfg = self.config
        if cfg.insecure_plaintext_between_nodes:
            log.warning(
                "UNSAFE: node %d talks to its peers in plaintext (--insecure-plaintext-between-"
                "nodes): anyone who reaches its Raft port can act as any node and forge "
                "replicated data",
                cfg.node_id,
            )
            return None
        files = TlsFiles.find(cfg.node_id, cfg.tls_dir, cfg.tls_ca, cfg.tls_cert, cfg.tls_key)
        tls = PeerTls(files, cfg.node_id)
        log.info(
            "node %d: mutual TLS between nodes with %s (CA %s)", cfg.node_id, files.cert, files.ca
        )
        return tls

    async def start(self) -> None:
        cfg = self.config
        tls = self._peer_tls()  # before anything is opened: a bad file is a config error
        if cfg.client_tls:
            assert tls is not None  # NodeConfig.validate: client TLS needs the node's files
            self.client_tls = ClientTls(tls.files, cfg.client_tls_auth)
            log.info(
                "node %d: TLS on the client listeners (client certificates: %s)",
                cfg.node_id,
                cfg.client_tls_auth,
            )
        self.store = self._open_store()
        founders = self.store.get_meta(FOUNDERS_KEY)
        if cfg.join:
            cfg.peers, joined_founders = await self._members_from(cfg.join, tls)
            if founders is None:
                founders = ",".join(map(str, joined_founders)).encode()
        if founders is None:
            founders = ",".join(map(str, sorted(cfg.peers))).encode()
        self.store.write(
            [GroupUpdate(group=self.store.group(ANCHOR_GROUP), meta=[(FOUNDERS_KEY, founders)])],
            sync=True,
        )
        timing = RaftTiming(
            tick_s=cfg.tick_ms / 1000,
            election_ticks=cfg.election_ticks,
            heartbeat_ticks=cfg.heartbeat_ticks,
            isr=IsrPolicy(
                max_lag_entries=cfg.isr_max_lag_entries, max_lag_ticks=cfg.isr_max_lag_ticks
            ),
        )
        # The transport and the driver refer to each other; the transport delivers to the
        # driver's inbox through a late-bound callable.
        self.transport = Transport(
            cfg.node_id,
            cfg.cluster_id,
            cfg.peers,
            deliver=lambda group, msg: self.driver.deliver(group, msg),  # type: ignore[union-attr]
            on_leaders=lambda peer, states: self.broker.on_leaders(peer, states),  # type: ignore[union-attr]
            advertise=cfg.advertise,
            # A keepalive every half election timeout; a peer silent for five is taken for
            # gone (a broken stream says so at once; this is for a paused or cut-off peer).
            keepalive_s=timing.tick_s * timing.election_ticks / 2,
            dead_after_s=timing.tick_s * timing.election_ticks * 5,
            listen=cfg.listen,
            raft_port_offset=cfg.raft_port_offset,
            tls=tls,
            max_frame_bytes=cfg.max_raft_frame_bytes,
        )
        self.store.on_sync = self.metrics.observe_fsync
        self.driver = RaftDriver(
            cfg.node_id, self.store, CountingOutbox(self.transport, self.metrics), timing
        )
        self.driver.soft_state_listeners.append(self.metrics.observe_soft_state)
        self.driver.fences = load_fences(self.store)
        self.transport.on_peer_change = self.driver.peer_changed
        self.broker = Broker(
            cfg, self.driver, self.incarnation, [int(n) for n in founders.decode().split(",")]
        )
        broker = self.broker
        self.transport.incarnation = self.incarnation
        self.transport.dial_all = bool(cfg.join)
        self.transport.hello_state = lambda: (
            broker.controller.raft_group.node.term,
            broker.rejoining(),
        )
        self.transport.on_peer_hello = lambda peer, h: broker.on_peer_hello(
            peer, h.incarnation, h.controller_term, h.rejoining
        )
        self.transport.on_peer_advertise = self._on_peer_advertise
        transport = self.transport
        self.broker.reachable = lambda: set(transport.connected_peers())

        server = grpc.aio.server(options=GRPC_OPTIONS)
        service = BrokerService(self.broker, self._peer_stub, self.metrics, self._grpc_auth(tls))
        broker_pb2_grpc.add_BrokerServicer_to_server(service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                broker_pb2.DESCRIPTOR.services_by_name["Broker"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        parse_address(cfg.listen, "--listen")
        try:
            bound = (
                server.add_secure_port(cfg.listen, self.client_tls.grpc_server_credentials())
                if self.client_tls is not None
                else server.add_insecure_port(cfg.listen)
            )
        except RuntimeError as e:
            raise ConfigError(f"cannot listen on {cfg.listen}: {e} (is the port in use?)") from None
        if bound == 0:
            raise ConfigError(
                f"cannot listen on {cfg.listen}: the port is in use or the address is not local"
            )
        await server.start()
        self.server = server
        self.metrics.registry.register(NodeCollector(self.broker, self.driver, self.transport))
        metrics_address = cfg.metrics_address()
        if metrics_address is not None:
            mhost, mport = parse_address(metrics_address, "--metrics-listen")
            self.metrics_server = MetricsServer(self.metrics)
            try:
                await self.metrics_server.start(mhost, mport)
            except OSError as e:
                raise ConfigError(
                    f"cannot serve metrics on {metrics_address}: {e} "
                    "(is the port in use? --metrics-listen HOST:PORT or off)"
                ) from None
        if cfg.kafka_port_offset:
            host, port = parse_address(cfg.listen)
            broker = self.broker
            classic = ClassicGroups(broker.groups, broker.advertised_address)
            # A liferaft member may not join a group whose members speak Kafka's protocol.
            broker.groups.foreign_members = classic.has_members
            self.kafka = KafkaListener(
                KafkaCtx(broker, cfg.kafka_port_offset, self._peer_stub, classic, cfg.sasl),
                host,
                port + cfg.kafka_port_offset,
                ssl=self.client_tls.kafka if self.client_tls is not None else None,
            )
            try:
                await self.kafka.start()
            except OSError as e:
                raise ConfigError(
                    f"cannot listen for Kafka clients on {host}:{port + cfg.kafka_port_offset}: "
                    f"{e.strerror} (gRPC port + kafka_port_offset {cfg.kafka_port_offset})"
                ) from None
        if cfg.stream_port_offset:
            await self._start_stream_listener(service)
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.transport.start()
        self.driver.start()
        self._housekeeping = supervise(self._housekeep, f"housekeeping-{cfg.node_id}", restart=True)
        log.info(
            "node %d serving on %s (advertised %s), metrics on %s, data in %s",
            cfg.node_id,
            cfg.listen,
            cfg.advertise,
            metrics_address or "nothing (off)",
            cfg.data_dir,
        )

    async def _start_stream_listener(self, service: BrokerService) -> None:
        """The clients' ProduceStream and FetchStream over framed TCP (node/stream_listener.py):
        the gRPC service's handlers, its authentication and metrics, the gRPC listener's TLS."""
        cfg = self.config
        host, port = parse_address(cfg.listen)
        self.stream = StreamListener(
            service.api,
            service.auth,
            self.metrics,
            host,
            port + cfg.stream_port_offset,
            ssl=self.client_tls.stream if self.client_tls is not None else None,
        )
        try:
            await self.stream.start()
        except OSError as e:
            raise ConfigError(
                f"cannot listen for stream clients on {host}:{port + cfg.stream_port_offset}: "
                f"{e.strerror} (gRPC port + stream_port_offset {cfg.stream_port_offset}; "
                "0 turns the listener off)"
            ) from None

    def _grpc_auth(self, tls: PeerTls | None) -> GrpcAuth:
        """Who each gRPC call is (node/authn.py); and, on the channels to peers, this node's
        signature on the principal it forwards a request for."""
        assert self.broker is not None
        broker = self.broker
        ca = tls.files.ca.read_bytes() if tls is not None else None
        if tls is not None:
            assertion = NodeAssertion.load(
                tls.files.ca.read_bytes(), tls.files.cert.read_bytes(), tls.files.key.read_bytes()
            )
            self._forward_interceptors = [SignedCalls(assertion, principal.caller.get)]
        return GrpcAuth(self.config.sasl, lambda: broker.controller.state.users, ca)

    async def _members_from(
        self, address: str, tls: PeerTls | None
    ) -> tuple[dict[int, str], list[int]]:
        """--join: the members of the running cluster, from one member's metadata, and this
        node (the controller adds it as a learner: node/membership.py). The call is signed with
        this node's key (as the node's own principal), so it passes a listener that wants SCRAM
        logins."""
        cfg = self.config
        signed: tuple[tuple[str, str | bytes], ...] = ()
        if tls is not None:
            assertion = NodeAssertion.load(
                tls.files.ca.read_bytes(), tls.files.cert.read_bytes(), tls.files.key.read_bytes()
            )
            signed = tuple(assertion.metadata(assertion.principal_of_cert(), "Metadata"))
        channel = (
            grpc.aio.secure_channel(
                address, self.client_tls.grpc_peer_credentials(), options=GRPC_OPTIONS
            )
            if self.client_tls is not None
            else grpc.aio.insecure_channel(address, options=GRPC_OPTIONS)
        )
        try:
            async with channel:
                md = await broker_pb2_grpc.BrokerStub(channel).Metadata(
                    broker_pb2.MetadataRequest(), timeout=10, metadata=signed
                )
        except grpc.RpcError as e:
            raise ConfigError(
                f"--join {address}: cannot read the cluster's members there ({e.code().name}): "
                "give the gRPC address of a running member"
            ) from None
        peers = {b.node_id: f"{b.host}:{b.port}" for b in md.brokers if b.node_id != cfg.node_id}
        if not peers:
            raise ConfigError(f"--join {address}: the member there knows no brokers yet")
        if not md.founders:
            raise ConfigError(f"--join {address}: the member there does not say its founders")
        peers[cfg.node_id] = cfg.advertise
        log.info("node %d joins the cluster of nodes %s", cfg.node_id, sorted(peers))
        return peers, sorted(md.founders)

    def _on_peer_advertise(self, peer: int, address: str) -> None:
        if self.broker is not None and address:
            self.broker.advertised[peer] = address

    def _peer_stub(self, node_id: int) -> broker_pb2_grpc.BrokerStub | None:
        address = self.config.peers.get(node_id) or (
            self.broker.advertised_address(node_id) if self.broker is not None else ""
        )
        if not address:
            return None
        channel = self._peer_channels.get(node_id)
        if channel is None:
            channel = (
                grpc.aio.secure_channel(
                    address,
                    self.client_tls.grpc_peer_credentials(),
                    options=GRPC_OPTIONS,
                    interceptors=self._forward_interceptors,
                )
                if self.client_tls is not None
                else grpc.aio.insecure_channel(
                    address, options=GRPC_OPTIONS, interceptors=self._forward_interceptors
                )
            )
            self._peer_channels[node_id] = channel
        return broker_pb2_grpc.BrokerStub(channel)

    async def _housekeep(self) -> None:
        """Every few ticks: gossip leader states, register brokers, update health."""
        assert self.broker is not None and self.transport is not None
        assert self.driver is not None
        broker, transport, driver = self.broker, self.transport, self.driver
        serving = False
        next_wait_log = time.monotonic() + WAIT_LOG_EVERY_S
        tick_s = self.config.tick_ms / 1000
        while not self._stopping:
            # Every 2 ticks while a Raft group is awake; every 5 (the broker's gossip and
            # chores) while none is: a quiet node's loop wakes less (docs/performance.md,
            # "Session 9"), and a peer coming or going wakes the groups it concerns.
            await asyncio.sleep(tick_s * (2 if driver.awake_groups() else 5))
            for states in broker.take_gossip():
                transport.broadcast_leaders(states)
            broker.maybe_born()  # a cluster of one hears no Hello
            admit = broker.membership_step()
            if admit is not None:
                supervise(
                    broker.controller.replicate_and_wait(admit),
                    f"admit-incarnation-{admit.node_id}",
                    expected=(BrokerError,),
                )
            for cmd in broker.registrations_due():
                supervise(
                    broker.controller.replicate_and_wait(cmd),
                    f"register-broker-{cmd.node_id}",
                    expected=(BrokerError,),
                )
            for report in broker.membership_reports():  # replica moves (node/moves.py)
                supervise(
                    broker.controller.replicate_and_wait(report),
                    "partition-membership",
                    expected=(BrokerError,),
                )
            healthy = (
                broker.controller_leader() != 0
                and self.config.node_id in broker.controller.state.brokers
            )
            now = time.monotonic()
            if not healthy and now >= next_wait_log:
                next_wait_log = now + WAIT_LOG_EVERY_S
                log.warning(
                    "node %d is not serving yet: %s",
                    self.config.node_id,
                    broker.waiting_for(),
                )
            if healthy != serving:
                if healthy:
                    log.info(
                        "node %d is serving: controller leader is node %d",
                        self.config.node_id,
                        broker.controller_leader(),
                    )
                    next_wait_log = now + WAIT_LOG_EVERY_S
                serving = healthy
                await self.health.set(
                    "",
                    health_pb2.HealthCheckResponse.SERVING
                    if healthy
                    else health_pb2.HealthCheckResponse.NOT_SERVING,
                )

    # -- stop ----------------------------------------------------------------------------------
    async def hand_off_leadership(self, timeout_s: float = 3.0) -> None:
        """Transfer every group this node leads to its most caught-up in-sync follower."""
        assert self.driver is not None
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            leading = [g for g in self.driver.groups.values() if g.node.role == Role.LEADER]
            if not leading:
                return
            for g in leading:
                st = g.node.status()
                if st.lead_transferee:
                    continue
                candidates = [
                    (pr.match, nid)
                    for nid, pr in st.progress.items()
                    if nid != self.config.node_id and nid in st.in_sync and not pr.is_learner
                ]
                if candidates:
                    g.node.transfer_leader(max(candidates)[1])
                    self.driver.touched(g.id)
            await asyncio.sleep(self.config.tick_ms / 1000)
        log.warning("some groups were still led by this node when the hand-off timed out")

    async def stop(self, graceful: bool = True) -> None:
        if self._stopping:
            return
        if graceful and self.driver is not None:
            with suppress(Exception):
                await self.hand_off_leadership()
        self._stopping = True
        await self.health.enter_graceful_shutdown()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        if self.kafka is not None:
            await self.kafka.stop()
        if self.stream is not None:
            await self.stream.stop()
        if self.server is not None:
            await self.server.stop(grace=0.5)
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        if self.transport is not None:
            await self.transport.stop()
        if self.driver is not None:
            await self.driver.stop()
        for ch in self._peer_channels.values():
            await ch.close()
        if self.store is not None:
            self.store.close()
        log.info("node %d stopped", self.config.node_id)


async def serve(config: NodeConfig) -> None:
    """Run a node until SIGINT/SIGTERM, then shut down gracefully."""
    node = NodeServer(config)
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("node %d shutting down: handing off leadership", config.node_id)
    await node.stop(graceful=True)
