"""client/cluster.py against fake nodes: routing, failover, retries, and the delivery timeout.

Each fake node is a real grpc.aio server on 127.0.0.1 with a scripted Broker servicer: it
answers Metadata from a shared picture of the cluster and fails Produce as told. Sleeps are
recorded (and skipped) where a test checks the backoff decisions, so no test waits on a clock.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import grpc
import pytest

from client.cluster import ClientConfig, Cluster
from client.errors import (
    BrokerUnavailableError,
    CorruptMessageError,
    DeliveryTimeoutError,
    NotEnoughReplicasError,
    UnknownTopicOrPartitionError,
)
from client.retry import RetryState
from client.sender import Sender
from liferaft_proto.status import error_status
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc
from liferaft_proto.v1.errors_pb2 import ErrorCode, ErrorDetail

TOPIC = "t"


@dataclass
class Picture:
    """What every fake node says in Metadata."""

    addresses: dict[int, str] = field(default_factory=dict)
    leader: int = 1
    epoch: int = 1
    controller: int = 1


class FakeNode(broker_pb2_grpc.BrokerServicer):
    def __init__(self, node_id: int, picture: Picture) -> None:
        self.node_id = node_id
        self.picture = picture
        self.script: deque[ErrorDetail | None] = deque()
        self.always: ErrorDetail | None = None
        self.produced: list[broker_pb2.ProduceRequest] = []
        self.metadata_calls = 0
        self.admin_calls = 0

    async def Metadata(
        self, request: broker_pb2.MetadataRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.MetadataResponse:
        self.metadata_calls += 1
        pic = self.picture
        resp = broker_pb2.MetadataResponse(controller_id=pic.controller, cluster_id="fake")
        for node_id, address in sorted(pic.addresses.items()):
            host, port = address.rsplit(":", 1)
            resp.brokers.append(broker_pb2.BrokerInfo(node_id=node_id, host=host, port=int(port)))
        resp.topics.append(
            broker_pb2.TopicMetadata(
                name=TOPIC,
                partitions=[
                    broker_pb2.PartitionMetadata(
                        partition=0,
                        leader_id=pic.leader,
                        leader_epoch=pic.epoch,
                        replicas=sorted(pic.addresses),
                        isr=sorted(pic.addresses),
                    )
                ],
            )
        )
        return resp

    async def Produce(
        self, request: broker_pb2.ProduceRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.ProduceResponse:
        self.produced.append(request)
        action = self.script.popleft() if self.script else self.always
        if action is not None:
            await context.abort_with_status(error_status(action))
        return broker_pb2.ProduceResponse(base_offset=len(self.produced) - 1, log_append_time_ms=-1)

    async def CreateTopics(
        self, request: broker_pb2.CreateTopicsRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.CreateTopicsResponse:
        self.admin_calls += 1
        action = self.script.popleft() if self.script else None
        if action is not None:
            await context.abort_with_status(error_status(action))
        return broker_pb2.CreateTopicsResponse(
            topics=[broker_pb2.CreateTopicResult(name=t.name) for t in request.topics]
        )


class FakeCluster:
    def __init__(self) -> None:
        self.picture = Picture()
        self.nodes: dict[int, FakeNode] = {}
        self.servers: dict[int, grpc.aio.Server] = {}

    async def start(self, n: int) -> None:
        for node_id in range(1, n + 1):
            node = FakeNode(node_id, self.picture)
            server = grpc.aio.server()
            broker_pb2_grpc.add_BrokerServicer_to_server(node, server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            self.nodes[node_id] = node
            self.servers[node_id] = server
            self.picture.addresses[node_id] = f"127.0.0.1:{port}"

    async def stop(self, node_id: int) -> None:
        await self.servers[node_id].stop(grace=None)

    async def close(self) -> None:
        for server in self.servers.values():
            await server.stop(grace=None)

    def address(self, node_id: int) -> str:
        return self.picture.addresses[node_id]

    @property
    def bootstrap(self) -> str:
        return ",".join(self.picture.addresses.values())

    def metadata_calls(self) -> int:
        return sum(n.metadata_calls for n in self.nodes.values())


@pytest.fixture
async def fake() -> AsyncIterator[FakeCluster]:
    cluster = FakeCluster()
    await cluster.start(3)
    try:
        yield cluster
    finally:
        await cluster.close()


class Sleeps:
    """Stands in for asyncio.sleep: records the wait, yields once, does not wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


def client(fake: FakeCluster, sleeps: Sleeps | None = None, **settings: int) -> Cluster:
    cfg = ClientConfig.build(fake.bootstrap, **{"request_timeout_ms": 5000, **settings})
    return Cluster(cfg, sleep=sleeps)


async def produce(cluster: Cluster, timeout_ms: int | None = None) -> object:
    request = broker_pb2.ProduceRequest(topic=TOPIC, partition=0, acks=-1, records=b"x")
    return await cluster.call_leader(TOPIC, 0, "Produce", request, timeout_ms=timeout_ms)


def detail(code: int, retriable: bool, **hint: object) -> ErrorDetail:
    return ErrorDetail(code=code, message=ErrorCode.Name(code), retriable=retriable, **hint)  # type: ignore[arg-type]


@pytest.fixture
def free_port() -> Iterator[int]:
    with socket.socket() as s:  # bound but not listening: connections are refused
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


async def test_not_leader_hint_is_followed_at_once(fake: FakeCluster) -> None:
    fake.nodes[1].script.append(
        detail(ErrorCode.NOT_LEADER, True, leader_id=2, leader_address=fake.address(2))
    )
    sleeps = Sleeps()
    async with client(fake, sleeps) as cluster:
        calls_after_bootstrap = fake.metadata_calls()
        await produce(cluster)
        assert cluster.metadata.leader_for(TOPIC, 0) == 2
    assert len(fake.nodes[1].produced) == 1
    assert len(fake.nodes[2].produced) == 1
    assert sleeps.waits == [0]  # no backoff ...
    assert fake.metadata_calls() == calls_after_bootstrap  # ... and no refresh


async def test_leader_not_available_polls_fast_and_refreshes(fake: FakeCluster) -> None:
    unavailable = detail(ErrorCode.LEADER_NOT_AVAILABLE, True)
    fake.nodes[1].script.extend([unavailable, unavailable])
    sleeps = Sleeps()
    async with client(fake, sleeps, retry_backoff_ms=100, retry_backoff_max_ms=1000) as cluster:
        before = fake.metadata_calls()
        await produce(cluster)
        assert fake.metadata_calls() == before + 2  # one refresh before each retry
    assert len(fake.nodes[1].produced) == 3
    first, second = sleeps.waits
    # An election is under way: poll for the new leader every ~25 ms (RetryPolicy.leader_poll_ms).
    assert 0.02 <= first <= 0.03 and 0.02 <= second <= 0.03


async def test_non_retriable_error_raises_at_once(fake: FakeCluster) -> None:
    fake.nodes[1].script.append(detail(ErrorCode.CORRUPT_MESSAGE, False))
    sleeps = Sleeps()
    async with client(fake, sleeps) as cluster:
        with pytest.raises(CorruptMessageError, match="CORRUPT_MESSAGE"):
            await produce(cluster)
    assert len(fake.nodes[1].produced) == 1
    assert sleeps.waits == []


async def test_retriable_errors_end_in_a_delivery_timeout(fake: FakeCluster) -> None:
    fake.nodes[1].always = detail(ErrorCode.NOT_ENOUGH_REPLICAS, True)
    async with client(fake, retry_backoff_ms=10, retry_backoff_max_ms=40) as cluster:
        with pytest.raises(DeliveryTimeoutError) as caught:
            await produce(cluster, timeout_ms=300)
    err = caught.value
    assert isinstance(err.last_error, NotEnoughReplicasError)
    assert err.__cause__ is err.last_error
    assert not err.retriable
    assert len(fake.nodes[1].produced) >= 2
    assert "Produce to t-0 did not succeed within 300 ms" in err.message


async def test_dead_leader_fails_over_after_a_refresh(fake: FakeCluster) -> None:
    sleeps = Sleeps()
    async with client(fake, sleeps) as cluster:
        assert cluster.metadata.leader_for(TOPIC, 0) == 1
        await fake.stop(1)
        fake.picture.leader, fake.picture.epoch = 2, 2  # the survivors elected node 2
        response = await produce(cluster)
        assert isinstance(response, broker_pb2.ProduceResponse)
        assert cluster.metadata.leader_for(TOPIC, 0) == 2
    assert len(fake.nodes[2].produced) == 1
    assert len(sleeps.waits) == 1 and sleeps.waits[0] > 0


async def test_bootstrap_skips_dead_nodes(fake: FakeCluster, free_port: int) -> None:
    dead = f"127.0.0.1:{free_port}"
    for _ in range(5):  # whatever the random order
        cfg = ClientConfig.build([dead, fake.address(2)])
        async with Cluster(cfg) as cluster:
            assert sorted(cluster.metadata.brokers) == [1, 2, 3]


async def test_bootstrap_with_no_live_node_says_so(free_port: int) -> None:
    cluster = Cluster(ClientConfig.build(f"127.0.0.1:{free_port}"))
    with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{free_port}") as caught:
        await cluster.start()
    await cluster.close()
    assert caught.value.retriable


async def test_unknown_topic_is_not_retried(fake: FakeCluster) -> None:
    sleeps = Sleeps()
    async with client(fake, sleeps) as cluster:
        request = broker_pb2.ProduceRequest(topic="nope", partition=0)
        with pytest.raises(UnknownTopicOrPartitionError, match="'nope' does not exist"):
            await cluster.call_leader("nope", 0, "Produce", request)
        with pytest.raises(UnknownTopicOrPartitionError, match=r"partitions 0\.\.0, not 3"):
            await cluster.call_leader(TOPIC, 3, "Produce", request)
    assert sleeps.waits == []
    assert not any(n.produced for n in fake.nodes.values())


async def test_concurrent_refreshes_share_one_request(fake: FakeCluster) -> None:
    async with client(fake) as cluster:
        before = fake.metadata_calls()
        await asyncio.gather(*(cluster.refresh_metadata() for _ in range(20)))
        assert fake.metadata_calls() == before + 1


async def test_produce_timeout_stays_below_the_attempt_deadline(fake: FakeCluster) -> None:
    async with client(fake, request_timeout_ms=2000) as cluster:
        sender = Sender(cluster, acks=1, delivery_timeout_ms=10_000)
        result = await sender.send(TOPIC, 0, b"batch")
    (request,) = fake.nodes[1].produced
    assert request.acks == 1 and request.records == b"batch"
    assert 0 < request.timeout_ms < 2000
    assert result.base_offset == 0


async def test_any_node_call_follows_the_controller_hint(fake: FakeCluster) -> None:
    fake.nodes[1].script.append(detail(ErrorCode.NOT_CONTROLLER, True, leader_id=3))
    sleeps = Sleeps()
    async with client(fake, sleeps) as cluster:
        request = broker_pb2.CreateTopicsRequest(topics=[broker_pb2.NewTopic(name="n")])
        response = await cluster.call_any("CreateTopics", request)
    assert [t.name for t in response.topics] == ["n"]
    assert (fake.nodes[1].admin_calls, fake.nodes[3].admin_calls) == (1, 1)
    assert sleeps.waits == [0]


async def test_a_first_attempt_that_succeeds_builds_no_retrying(fake: FakeCluster) -> None:
    """The per-call cost of issue 18: tenacity's retrying is built only once an attempt has
    failed and will be retried (a call that succeeds at once runs bare)."""
    async with client(fake, Sleeps()) as cluster:
        built: list[str] = []
        retrying = cluster._retrying

        def counting(*args: object, **kwargs: object) -> object:
            built.append(str(args[2]))
            return retrying(*args, **kwargs)  # type: ignore[arg-type]

        cluster._retrying = counting  # type: ignore[method-assign]
        await produce(cluster)
        assert built == []
        fake.nodes[1].script.append(detail(ErrorCode.NOT_ENOUGH_REPLICAS, True))
        failed: list[BaseException] = []
        request = broker_pb2.ProduceRequest(topic=TOPIC, partition=0, acks=-1, records=b"x")
        await cluster.call_leader(TOPIC, 0, "Produce", request, on_retry=failed.append)
        assert built == ["Produce to t-0"]
        assert [type(e) for e in failed] == [NotEnoughReplicasError]  # told once, as before
    assert len(fake.nodes[1].produced) == 3


async def test_the_budget_counts_the_bare_first_attempt(fake: FakeCluster) -> None:
    """The retrying that takes over after a bare first attempt keeps to the call's budget from
    the call's start: a first attempt that used it all up is not retried."""
    async with client(fake, Sleeps(), retry_backoff_ms=10, retry_backoff_max_ms=10) as cluster:
        attempts = 0

        async def fails() -> None:
            nonlocal attempts
            attempts += 1
            raise NotEnoughReplicasError(None, "not enough", retriable=True)

        started = time.monotonic() - 0.5  # the first attempt took 0.5 s of a 0.3 s budget
        retrying = cluster._retrying(300, RetryState(), "Produce to t-0", started=started)
        with pytest.raises(DeliveryTimeoutError, match=r"within 300 ms \(1 attempts in 5\d\d ms"):
            await retrying(fails)
        assert attempts == 1
