"""The async core every client shares: bootstrap, metadata, routing, and retry with failover.

Theory of operation. The client starts from a bootstrap list of any nodes (`host:port`), asks one
of them (in random order, skipping those that fail) for Metadata, and from then on knows every
node and every partition's leader (client/metadata.py). A call about a partition goes to its
leader; a call about the cluster (metadata, topic administration) goes to any node, the
controller leader first when known, since it would forward there anyway.

Failover is one loop per call, run by tenacity within the call's total budget (the delivery
timeout; each attempt also gets at most request_timeout_ms):

    attempt: refresh metadata if it is stale -> pick the node -> send -> done
    failure: map it (client/errors.py) -> if NOT_LEADER named the leader, route there and
             retry at once -> else if retriable: mark metadata stale, back off with jitter,
             retry -> else raise at once

A node that failed at the transport level is "suspect" for a moment: metadata requests and
any-node calls try healthy nodes first. When the budget runs out the call raises
DeliveryTimeoutError, whose `last_error` says what kept failing.

Concurrent callers share one Metadata request (aiokafka does the same): after a leader change,
a hundred in-flight sends cause one refresh, not a hundred.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_before_delay

from client.connection import Connections
from client.errors import (
    AuthorizationError,
    BrokerUnavailableError,
    DeliveryTimeoutError,
    LeaderNotAvailableError,
    LiferaftError,
    NotControllerError,
    NotLeaderError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
    from_rpc_error,
)
from client.metadata import ClusterMetadata, TopicMetadata
from client.produce_stream import (
    STREAM_RETRY_S,
    ProduceStreams,
    StreamUnsupported,
    sees_streams,
)
from client.retry import RetryPolicy, RetryState
from client.security import Security
from client.stream_transport import FetchStreamConnection, StreamDialer, StreamDialFailed
from liferaft_proto.address import parse_address
from liferaft_proto.v1 import broker_pb2
from liferaft_proto.v1.errors_pb2 import ErrorCode

__all__ = [
    "ClientConfig",
    "Cluster",
    "LeaderStream",
    "order_nodes",
    "parse_bootstrap",
    "resolve_bootstrap",
]

log = logging.getLogger("liferaft.client")

T = TypeVar("T")
RequestOrBuilder: TypeAlias = Message | Callable[[int], Message]
"""A request, or a function of the attempt's timeout in ms that builds it (Produce carries a
server-side timeout that must stay below the attempt's gRPC deadline)."""


def parse_bootstrap(value: str | Iterable[str]) -> tuple[str, ...]:
    """ "h1:p1,h2:p2" or ["h1:p1", ...] -> checked, de-duplicated addresses, in order."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for raw in items:
        address = raw.strip()
        if not address:
            continue
        parse_address(address)
        if address not in out:
            out.append(address)
    if not out:
        raise ValueError("bootstrap needs at least one HOST:PORT (any node of the cluster)")
    return tuple(out)


DEFAULT_PORT = 9092
"""The port of a bootstrap entry given without one ("localhost"), as aiokafka assumes."""


def resolve_bootstrap(
    bootstrap: str | Iterable[str] | None, bootstrap_servers: str | Iterable[str] | None
) -> tuple[str, ...]:
    """The clients' first argument (liferaft's) or bootstrap_servers= (aiokafka's name); one of
    the two. An entry without a port gets 9092, as in aiokafka."""
    if bootstrap is not None and bootstrap_servers is not None:
        raise ValueError("give the bootstrap addresses once: bootstrap or bootstrap_servers=")
    value = bootstrap if bootstrap is not None else bootstrap_servers
    if value is None:
        value = "localhost"
    items = value.split(",") if isinstance(value, str) else list(value)
    with_ports = []
    for raw in items:
        entry = raw.strip()
        if entry and (":" not in entry or entry.endswith("]")):  # "host" or "[::1]"
            entry = f"{entry}:{DEFAULT_PORT}"
        with_ports.append(entry)
    return parse_bootstrap(with_ports)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """Settings every client shares. Times in milliseconds, named as Kafka's clients name them."""

    bootstrap: tuple[str, ...]
    request_timeout_ms: int = 30_000
    """The longest one attempt of a request may take (its gRPC deadline)."""
    delivery_timeout_ms: int = 120_000
    """The longest a request may take, retries included; then DeliveryTimeoutError."""
    retry_backoff_ms: int = 100
    retry_backoff_max_ms: int = 1_000
    metadata_max_age_ms: int = 300_000
    """Refresh metadata at least this often, even when nothing failed (new topics, nodes)."""
    metadata_request_timeout_ms: int = 5_000
    """How long to wait for one node's Metadata answer before asking the next one. Metadata is
    served from memory, so a node this slow is as good as down."""
    interceptors: tuple[Any, ...] = ()
    """grpc.aio client interceptors for every channel (tracing, or the chaos suite's fault that
    loses answers on their way back)."""
    security: Security = field(default_factory=Security)
    """Plaintext or TLS to the nodes (client/security.py)."""
    stream_transport: bool = True
    """ProduceStream and FetchStream on the nodes' stream listeners (framed TCP,
    client/stream_transport.py) where the metadata names one; False: always gRPC. Off, too,
    when `interceptors` are given: they see gRPC calls only, and must see every request."""

    def __post_init__(self) -> None:
        for name in (
            "request_timeout_ms",
            "delivery_timeout_ms",
            "metadata_max_age_ms",
            "metadata_request_timeout_ms",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.retry_backoff_ms < 0 or self.retry_backoff_max_ms < self.retry_backoff_ms:
            raise ValueError(
                f"need 0 <= retry_backoff_ms ({self.retry_backoff_ms}) <= retry_backoff_max_ms "
                f"({self.retry_backoff_max_ms})"
            )

    @classmethod
    def build(cls, bootstrap: str | Iterable[str], **settings: Any) -> ClientConfig:
        return cls(bootstrap=parse_bootstrap(bootstrap), **settings)


def order_nodes(
    addresses: Iterable[str],
    suspects: Mapping[str, float],
    now: float,
    suspect_for_s: float,
    rng: random.Random,
) -> list[str]:
    """The order to try nodes in: healthy ones shuffled, then recently failed ones, the
    longest-ago failure first (it is the likeliest to be back)."""
    unique = list(dict.fromkeys(addresses))
    healthy = [a for a in unique if now - suspects.get(a, float("-inf")) >= suspect_for_s]
    sick = sorted((a for a in unique if a not in healthy), key=lambda a: suspects[a])
    rng.shuffle(healthy)
    return healthy + sick


@dataclass(slots=True)
class LeaderStream:
    """A server stream open at a partition's leader (Cluster.open_leader_stream)."""

    address: str
    call: Any
    """The call to read the next answers from (a grpc.aio call, or a FetchStreamConnection on
    the node's stream listener: the same read(), EOF and cancel()), or None: the node does not
    serve the stream and `first` is the answer of one unary call."""
    first: Any
    """The first answer."""


def _unimplemented(error: grpc.RpcError) -> bool:
    return isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.UNIMPLEMENTED


def _timed_out(address: str, rpc: str, timeout_s: float) -> LiferaftError:
    error = RequestTimedOutError(
        None,
        f"no first answer on {rpc} from {address} within {int(timeout_s * 1000)} ms",
        retriable=True,
        invalid_metadata=True,
    )
    error.transport = True
    return error


def _stream_ended(address: str, rpc: str) -> LiferaftError:
    error = BrokerUnavailableError(
        None, f"{address} ended {rpc} without an answer", retriable=True, invalid_metadata=True
    )
    error.transport = True
    return error


@dataclass(slots=True)
class FirstAttempt:
    """A call's first attempt made outside call_leader (try_produce): where it went, when the
    call's clock started, its retry state and, once it failed, its error."""

    address: str
    started: float
    state: RetryState
    error: Exception = field(default_factory=Exception)


def sees_fetch_streams(interceptors: Sequence[Any]) -> bool:
    """Whether reads may travel on FetchStream, given the caller's own grpc_interceptors: not
    when one intercepts unary calls and none intercepts unary-stream calls, so that such an
    interceptor still sees every Fetch (as client/produce_stream.py's `sees_streams`)."""
    unary = any(isinstance(i, grpc.aio.UnaryUnaryClientInterceptor) for i in interceptors)
    stream = any(isinstance(i, grpc.aio.UnaryStreamClientInterceptor) for i in interceptors)
    return stream or not unary


class Cluster:
    """Connections, metadata and the retry loops, for one event loop."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        rng: random.Random | None = None,
        connections: Connections | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.metadata = ClusterMetadata()
        self.policy = RetryPolicy(
            backoff_ms=config.retry_backoff_ms, backoff_max_ms=config.retry_backoff_max_ms
        )
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep if sleep is not None else asyncio.sleep
        self._conns = connections or Connections(
            reconnect_backoff_max_ms=max(100, config.retry_backoff_max_ms),
            interceptors=(*config.interceptors, *config.security.interceptors()),
            credentials=config.security.channel_credentials(),
        )
        self.dialer = (
            StreamDialer.from_security(config.security)
            if config.stream_transport and not config.interceptors
            else None
        )
        """How to reach the nodes' stream listeners; None: gRPC only (ClientConfig)."""
        self._streams = (
            ProduceStreams(dialer=self.dialer) if sees_streams(config.interceptors) else None
        )
        """Produce attempts travel on one ProduceStream per node (client/produce_stream.py),
        unless an interceptor that sees every unary call could not see a stream."""
        self.fetch_streams = sees_fetch_streams(config.interceptors)
        """Whether the consumer reads on FetchStream (open_leader_stream), same rule."""
        self.streams_unsupported: set[str] = set()
        """Nodes that answered UNIMPLEMENTED to a server stream: they get unary calls."""
        self._fetch_no_listener_until: dict[str, float] = {}
        """Nodes whose stream listener failed to open a FetchStream: gRPC until then."""
        self._suspects: dict[str, float] = {}  # address -> monotonic time of its last failure
        self._suspect_for_s = max(config.retry_backoff_max_ms, 100) / 1000
        self._refresh: asyncio.Future[None] | None = None
        self._last_refresh = float("-inf")
        self._started = False
        self._closed = False

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Bootstrap: fetch metadata from the first bootstrap node (random order) that answers.

        Raises BrokerUnavailableError if none does, naming each node's failure.
        """
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._started:
            return
        await self.refresh_metadata()
        self._started = True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
        if self._streams is not None:
            await self._streams.close()
        await self._conns.close()

    async def __aenter__(self) -> Cluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- metadata ------------------------------------------------------------------------------
    async def refresh_metadata(self) -> ClusterMetadata:
        """Fetch metadata from some node. Concurrent callers share one request."""
        fut = self._refresh
        if fut is None or fut.done():
            fut = self._refresh = asyncio.ensure_future(self._fetch_metadata(self._node_order()))
            # Retrieve the exception even if every waiter was cancelled.
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        await asyncio.shield(fut)
        return self.metadata

    async def maybe_refresh(self) -> None:
        """Refresh if the metadata is stale or older than metadata_max_age_ms."""
        age_ms = (time.monotonic() - self._last_refresh) * 1000
        if self.metadata.stale or age_ms > self.config.metadata_max_age_ms:
            await self.refresh_metadata()

    def _node_order(self) -> list[str]:
        known = [*self.metadata.addresses(), *self.config.bootstrap]
        return order_nodes(known, self._suspects, time.monotonic(), self._suspect_for_s, self._rng)

    async def _fetch_metadata(self, addresses: Sequence[str]) -> None:
        failures: list[str] = []
        timeout_s = self.config.metadata_request_timeout_ms / 1000
        for address in addresses:
            try:
                resp = await self._conns.stub(address).Metadata(
                    broker_pb2.MetadataRequest(), timeout=timeout_s
                )
            except grpc.RpcError as e:
                err = from_rpc_error(e, address=address)
                if err.code == ErrorCode.SASL_AUTHENTICATION_FAILED:
                    # Every node checks the same credentials: asking the next one won't help.
                    raise err from None
                self._note_failure(address, err)
                failures.append(err.message if err.transport else f"{address}: {err}")
                continue
            if not resp.brokers:
                failures.append(f"{address}: knows no brokers yet (still starting?)")
                continue
            self._suspects.pop(address, None)
            self.metadata.update(resp)
            self._last_refresh = time.monotonic()
            return
        raise BrokerUnavailableError(
            None,
            "no node answered a Metadata request: " + "; ".join(failures),
            retriable=True,
            invalid_metadata=True,
        )

    async def topic_metadata(self, topic: str) -> TopicMetadata:
        """The topic's metadata. If we do not know the topic, refresh, then ask the controller
        leader itself (a topic created a moment ago may not have reached every node), and only
        then raise UnknownTopicOrPartitionError."""
        version = self.metadata.version
        await self.maybe_refresh()
        tm = self.metadata.topic(topic)
        if tm is not None:
            return tm
        if self.metadata.version == version:  # not refreshed just now: do it
            await self.refresh_metadata()
            tm = self.metadata.topic(topic)
        controller = self.metadata.controller_address()
        if tm is None and controller is not None:
            with contextlib.suppress(LiferaftError):
                await self._fetch_metadata([controller])
            tm = self.metadata.topic(topic)
        if tm is None:
            await self._refused_topic(topic)
            raise UnknownTopicOrPartitionError(None, f"topic {topic!r} does not exist")
        return tm

    async def _refused_topic(self, topic: str) -> None:
        """Metadata for every topic leaves out those the caller may not see (ACLs): ask for this
        one by name, so a refusal says so (TopicAuthorizationFailedError, with the permission
        missing) instead of "does not exist"."""
        for address in self._node_order()[:1]:
            try:
                await self._conns.stub(address).Metadata(
                    broker_pb2.MetadataRequest(topics=[topic]),
                    timeout=self.config.metadata_request_timeout_ms / 1000,
                )
            except grpc.RpcError as e:
                err = from_rpc_error(e, address=address)
                if isinstance(err, AuthorizationError):
                    raise err from None

    async def partitions_for(self, topic: str) -> tuple[int, ...]:
        return (await self.topic_metadata(topic)).partition_ids

    # -- calls ---------------------------------------------------------------------------------
    async def call_leader(
        self,
        topic: str,
        partition: int,
        rpc: str,
        request: RequestOrBuilder,
        *,
        timeout_ms: int | None = None,
        extra_attempt_ms: int = 0,
        on_retry: Callable[[BaseException], None] | None = None,
        failed_first: FirstAttempt | None = None,
    ) -> Any:
        """Send `rpc` to the partition's leader, failing over until it succeeds, fails for good,
        or `timeout_ms` (default: delivery_timeout_ms) runs out.

        extra_attempt_ms: added to each attempt's gRPC deadline for calls the node may hold on
        purpose (a Fetch's max_wait_ms). on_retry: told of every failed attempt that is retried.
        failed_first: the call's first attempt already ran (try_produce) and failed: go on from
        there (its error, its state, its clock), as if this call had made it.
        """
        budget_ms = timeout_ms if timeout_ms is not None else self.config.delivery_timeout_ms
        if failed_first is not None:
            started, state = failed_first.started, failed_first.state
            if not self.policy.should_retry(failed_first.error):
                raise failed_first.error
            first: Exception | None = failed_first.error
            return await self._retry_leader(
                topic, partition, rpc, request, budget_ms, started, state, first,
                extra_attempt_ms, on_retry,
            )  # fmt: skip
        started = time.monotonic()
        deadline = started + budget_ms / 1000
        state = RetryState()
        # The first attempt runs bare: most calls succeed at once, and tenacity's machinery
        # (a retrying object, its state and callbacks per call) cost a producer about a tenth
        # of its CPU per small batch (docs/performance.md, issue 18, fifth pass). A failure
        # that is not retried is raised as tenacity would; one that is retried is handed to
        # tenacity as its first attempt's outcome, so waits, hints, on_retry and the give-up
        # message are the same as before, and its clock starts at `started`.
        try:
            return await self._leader_attempt(
                topic, partition, rpc, request, deadline, extra_attempt_ms, state
            )
        except Exception as e:
            if not self.policy.should_retry(e):
                raise
            first = e
        return await self._retry_leader(
            topic, partition, rpc, request, budget_ms, started, state, first,
            extra_attempt_ms, on_retry,
        )  # fmt: skip

    async def _retry_leader(
        self,
        topic: str,
        partition: int,
        rpc: str,
        request: RequestOrBuilder,
        budget_ms: int,
        started: float,
        state: RetryState,
        first: Exception | None,
        extra_attempt_ms: int,
        on_retry: Callable[[BaseException], None] | None,
    ) -> Any:
        """call_leader after its first attempt failed with `first` (retriable): tenacity takes
        that as its first attempt's outcome and goes on."""
        deadline = started + budget_ms / 1000

        async def attempt() -> Any:
            nonlocal first
            if first is not None:
                failed, first = first, None
                raise failed
            return await self._leader_attempt(
                topic, partition, rpc, request, deadline, extra_attempt_ms, state
            )

        return await self._retrying(
            budget_ms, state, f"{rpc} to {topic}-{partition}", on_retry, started=started
        )(attempt)

    async def _leader_attempt(
        self,
        topic: str,
        partition: int,
        rpc: str,
        request: RequestOrBuilder,
        deadline: float,
        extra_attempt_ms: int,
        state: RetryState,
    ) -> Any:
        state.followed_hint = False
        address = await self._leader_route(topic, partition)
        attempt_ms = self._attempt_ms(deadline)
        req = request(attempt_ms) if callable(request) else request
        timeout_s = (attempt_ms + extra_attempt_ms) / 1000
        stub = self._conns.stub(address)
        try:
            try:
                if (
                    rpc == "Produce"
                    and self._streams is not None
                    and address not in self._streams.unsupported
                ):
                    return await self._streams.produce(
                        stub, address, req, timeout_s, self.metadata.stream_address(address)
                    )
            except StreamUnsupported:
                pass  # an older node: unary from now on (nothing was written)
            return await getattr(stub, rpc)(req, timeout=timeout_s)
        except (grpc.RpcError, LiferaftError) as e:
            err = self.leader_call_failed(address, topic, partition, e, state)
            raise err from (None if err is e else e)

    def try_produce(
        self,
        topic: str,
        partition: int,
        request: Callable[[int], broker_pb2.ProduceRequest],
        deadline: float,
        on_done: Callable[[Any], None],
    ) -> tuple[asyncio.Future[Any], FirstAttempt] | None:
        """call_leader's first Produce attempt without a coroutine, when nothing needs waiting
        for: the metadata fresh, the partition's leader known, its produce stream open with a
        free slot. Else None (use call_leader). `on_done` hears the response, or the attempt's
        failure: hand it to call_leader as `failed_first` (after `produce_attempt_failed`),
        which retries or raises as it would have (issue 18: no task per request)."""
        if self._closed or self._streams is None:
            return None
        metadata = self.metadata
        if (
            metadata.stale
            or (time.monotonic() - self._last_refresh) * 1000 > self.config.metadata_max_age_ms
        ):
            return None
        tm = metadata.topic(topic)
        if tm is None or not 0 <= partition < len(tm.partitions):
            return None
        address = metadata.leader_address(topic, partition)
        if address is None or address in self._streams.unsupported:
            return None
        attempt_ms = self._attempt_ms(deadline)
        first = FirstAttempt(address, time.monotonic(), RetryState())
        fut = self._streams.submit(address, request(attempt_ms), attempt_ms / 1000, on_done)
        if fut is None:
            return None
        return fut, first

    def produce_attempt_failed(
        self, topic: str, partition: int, first: FirstAttempt, error: Exception
    ) -> FirstAttempt | None:
        """A try_produce attempt failed with `error`: note it as call_leader notes a failed
        attempt; the FirstAttempt to go on from, or None when nothing was sent because the
        node has no produce stream (start over: call_leader sends it unary)."""
        if isinstance(error, StreamUnsupported):
            if self._streams is not None:
                self._streams.unsupported_at(first.address)
            return None
        if not isinstance(error, (grpc.RpcError, LiferaftError)):
            first.error = error
            return first
        err = self.leader_call_failed(first.address, topic, partition, error, first.state)
        first.error = err
        return first

    async def _leader_route(self, topic: str, partition: int) -> str:
        """The address to send a call about topic-partition to: its leader, else a replica."""
        self._check_open()
        tm = await self.topic_metadata(topic)
        if not 0 <= partition < len(tm.partitions):
            raise UnknownTopicOrPartitionError(
                None,
                f"topic {topic!r} has partitions 0..{len(tm.partitions) - 1}, not {partition}",
            )
        address = self.metadata.leader_address(topic, partition)
        if address is None:
            # No leader known: ask a replica anyway. It answers with the authoritative reason
            # (a leader hint, an election under way, or too few replicas reachable), which is
            # what the caller should see if the retries run out.
            self.metadata.invalidate()
            address = self._replica_to_ask(tm.partitions[partition].replicas)
            if address is None:
                raise LeaderNotAvailableError(
                    None,
                    f"{topic}-{partition} has no leader right now (an election may be under way)",
                )
        return address

    def leader_call_failed(
        self,
        address: str,
        topic: str,
        partition: int,
        error: grpc.RpcError | LiferaftError,
        state: RetryState | None = None,
    ) -> LiferaftError:
        """A call to `address` about topic-partition failed (a unary attempt, or a stream that
        broke): map the error, note a transport failure, follow a leader hint or mark the
        metadata stale. Returns the LiferaftError to act on."""
        err = error if isinstance(error, LiferaftError) else from_rpc_error(error, address=address)
        self._note_failure(address, err)
        followed = False
        if isinstance(err, NotLeaderError) and err.has_leader_hint:
            followed = self.metadata.apply_leader_hint(
                topic, partition, err.leader_id, err.leader_address, err.leader_epoch
            )
        if state is not None:
            state.followed_hint = followed
        if err.invalid_metadata and not followed:
            self.metadata.invalidate()
        return err

    async def open_leader_stream(
        self,
        topic: str,
        partition: int,
        rpc: str,
        unary: str,
        request: Message,
        *,
        extra_attempt_ms: int = 0,
        timeout_ms: int | None = None,
    ) -> LeaderStream:
        """Open the server-streaming `rpc` (FetchStream) at the partition's leader and wait for
        its first answer, with call_leader's routing, failover and budget: an attempt fails
        (and is retried) as a unary call would, on the first read. The stream has no deadline:
        it lives until the caller cancels it (`LeaderStream.call.cancel()`) or it breaks.

        A node that answers UNIMPLEMENTED (it predates `rpc`) is remembered, and the attempt,
        and every later one to that node, sends the `unary` call instead: the result then has
        no stream (`call` None) and its one answer as `first`."""
        budget_ms = timeout_ms if timeout_ms is not None else self.config.delivery_timeout_ms
        deadline = time.monotonic() + budget_ms / 1000
        state = RetryState()

        async def attempt() -> LeaderStream:
            state.followed_hint = False
            address = await self._leader_route(topic, partition)
            timeout_s = (self._attempt_ms(deadline) + extra_attempt_ms) / 1000
            stub = self._conns.stub(address)
            try:
                if self.fetch_streams and rpc == "FetchStream":
                    opened = await self._open_fetch_stream(address, request, timeout_s)
                    if opened is not None:
                        return opened
                if self.fetch_streams and address not in self.streams_unsupported:
                    call = getattr(stub, rpc)(request)
                    try:
                        async with asyncio.timeout(timeout_s):
                            first = await call.read()
                    except TimeoutError:
                        call.cancel()
                        raise _timed_out(address, rpc, timeout_s) from None
                    except grpc.RpcError as e:
                        call.cancel()
                        if not _unimplemented(e):
                            raise
                        self.streams_unsupported.add(address)  # an older node: unary from now on
                    except BaseException:
                        call.cancel()
                        raise
                    else:
                        if first is grpc.aio.EOF:
                            raise _stream_ended(address, rpc)
                        return LeaderStream(address, call, first)
                answer = await getattr(stub, unary)(request, timeout=timeout_s)
                return LeaderStream(address, None, answer)
            except (grpc.RpcError, LiferaftError) as e:
                err = self.leader_call_failed(address, topic, partition, e, state)
                raise err from (None if err is e else e)

        opened: LeaderStream = await self._retrying(
            budget_ms, state, f"{rpc} to {topic}-{partition}"
        )(attempt)
        return opened

    async def _open_fetch_stream(
        self, address: str, request: Message, timeout_s: float
    ) -> LeaderStream | None:
        """open_leader_stream's attempt on the node's stream listener, when it has one and a
        dialer is set: the stream and its first answer; None when the listener cannot open it
        (then gRPC, as for a node without one, and the listener is tried again later)."""
        stream_address = self.metadata.stream_address(address)
        if self.dialer is None or stream_address is None:
            return None
        now = time.monotonic()
        if now < self._fetch_no_listener_until.get(address, 0.0):
            return None
        assert isinstance(request, broker_pb2.FetchRequest)
        try:
            async with asyncio.timeout(timeout_s):
                call = await FetchStreamConnection.open(
                    self.dialer, stream_address, request, timeout_s
                )
        except StreamDialFailed as e:
            log.info("FetchStream from %s on gRPC for now: %s", address, e)
            self._fetch_no_listener_until[address] = now + STREAM_RETRY_S
            return None
        except TimeoutError:
            raise _timed_out(address, "FetchStream", timeout_s) from None
        try:
            async with asyncio.timeout(timeout_s):
                first = await call.read()
        except TimeoutError:
            call.cancel()
            raise _timed_out(address, "FetchStream", timeout_s) from None
        except BaseException:
            call.cancel()
            raise
        if first is grpc.aio.EOF:
            raise _stream_ended(address, "FetchStream")
        return LeaderStream(address, call, first)

    async def call_any(
        self,
        rpc: str,
        request: Message,
        *,
        prefer_controller: bool = True,
        timeout_ms: int | None = None,
    ) -> Any:
        """Send a cluster-wide request (Metadata, CreateTopics, ...) to any node, the controller
        leader first if known, with the same failover as call_leader."""
        budget_ms = timeout_ms if timeout_ms is not None else self.config.delivery_timeout_ms
        deadline = time.monotonic() + budget_ms / 1000
        state = RetryState()

        async def attempt() -> Any:
            state.followed_hint = False
            self._check_open()
            await self.maybe_refresh()
            address = self._pick_node(prefer_controller)
            try:
                return await getattr(self._conns.stub(address), rpc)(
                    request, timeout=self._attempt_ms(deadline) / 1000
                )
            except grpc.RpcError as e:
                err = from_rpc_error(e, address=address)
                self._note_failure(address, err)
                if isinstance(err, NotControllerError) and err.has_leader_hint:
                    state.followed_hint = self.metadata.apply_controller_hint(err.leader_id)
                if err.invalid_metadata and not state.followed_hint:
                    self.metadata.invalidate()
                raise err from e

        return await self._retrying(budget_ms, state, rpc)(attempt)

    async def call_node(self, node_id: int, rpc: str, request: Message) -> Any:
        """One attempt of `rpc` at one node, errors mapped; for fan-out reads (describe)."""
        self._check_open()
        broker = self.metadata.broker(node_id)
        if broker is None:
            raise BrokerUnavailableError(None, f"node {node_id} is not in the cluster metadata")
        try:
            return await getattr(self._conns.stub(broker.address), rpc)(
                request, timeout=self.config.request_timeout_ms / 1000
            )
        except grpc.RpcError as e:
            err = from_rpc_error(e, address=broker.address)
            self._note_failure(broker.address, err)
            raise err from e

    async def call_address(
        self, address: str, rpc: str, request: Message, *, timeout_ms: int | None = None
    ) -> Any:
        """One attempt of `rpc` at one address (a group coordinator), errors mapped."""
        self._check_open()
        timeout = (timeout_ms or self.config.request_timeout_ms) / 1000
        try:
            return await getattr(self._conns.stub(address), rpc)(request, timeout=timeout)
        except grpc.RpcError as e:
            err = from_rpc_error(e, address=address)
            self._note_failure(address, err)
            raise err from e

    # -- helpers -------------------------------------------------------------------------------
    def _retrying(
        self,
        budget_ms: int,
        state: RetryState,
        what: str,
        on_retry: Callable[[BaseException], None] | None = None,
        *,
        started: float | None = None,
    ) -> AsyncRetrying:
        """Tenacity's retrying of a call within `budget_ms` from `started` (default: now)."""
        if started is None:
            started = time.monotonic()
        spent_s = time.monotonic() - started

        def wait(rs: RetryCallState) -> float:
            error = rs.outcome.exception() if rs.outcome is not None else None
            if on_retry is not None and error is not None:
                on_retry(error)
            if isinstance(error, LiferaftError) and not error.transport:
                state.last_node_error = error
            return self.policy.wait_s(error, state, self._rng)

        def give_up(rs: RetryCallState) -> Any:
            error = rs.outcome.exception() if rs.outcome is not None else None
            if isinstance(error, LiferaftError) and error.transport and state.last_node_error:
                error = state.last_node_error
            last = error if isinstance(error, LiferaftError) else None
            elapsed_ms = int((time.monotonic() - started) * 1000)
            raise DeliveryTimeoutError(
                f"{what} did not succeed within {budget_ms} ms ({rs.attempt_number} attempts "
                f"in {elapsed_ms} ms); last error: {error}",
                last,
            ) from error

        return AsyncRetrying(
            stop=stop_before_delay(max(0.0, budget_ms / 1000 - spent_s)),
            wait=wait,
            retry=retry_if_exception(self.policy.should_retry),
            retry_error_callback=give_up,
            sleep=self._sleep,
        )

    def _attempt_ms(self, deadline: float) -> int:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        return max(10, min(self.config.request_timeout_ms, remaining_ms))

    def _pick_node(self, prefer_controller: bool) -> str:
        controller = self.metadata.controller_address() if prefer_controller else None
        now = time.monotonic()
        if controller is not None and now - self._suspects.get(controller, float("-inf")) >= (
            self._suspect_for_s
        ):
            return controller
        order = self._node_order()
        if not order:
            raise BrokerUnavailableError(None, "no node is known", retriable=True)
        return order[0]

    def _replica_to_ask(self, replicas: tuple[int, ...]) -> str | None:
        """A replica's address, preferring ones that have not failed lately."""
        now = time.monotonic()
        known = [b.address for n in replicas if (b := self.metadata.brokers.get(n)) is not None]
        healthy = [
            a for a in known if now - self._suspects.get(a, float("-inf")) >= self._suspect_for_s
        ]
        pool = healthy or known
        return pool[self._rng.randrange(len(pool))] if pool else None

    def _note_failure(self, address: str, err: LiferaftError) -> None:
        if err.transport:
            self._suspects[address] = time.monotonic()
            log.debug("node %s failed: %s", address, err)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the client is closed")
