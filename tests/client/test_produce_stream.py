"""client/produce_stream.py and the cluster core's use of it, against scripted nodes.

Each node is a real grpc.aio server on 127.0.0.1 (tests/client/test_cluster.py's FakeNode) that
also serves ProduceStream, scripted per test: it answers out of order, answers with errors, or
breaks the stream. What is checked is what one Produce attempt ends with: its own answer
(matched by correlation id whatever the order), its error as a value (the stream goes on), a
transport error for every waiting request when the stream breaks (the next attempt opens a new
stream), and unary Produce to a node that has no ProduceStream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from client import Producer
from client.cluster import ClientConfig, Cluster
from client.errors import BrokerUnavailableError, NotLeaderError
from client.produce_stream import ProduceStreams, sees_streams
from client.security import Security
from liferaft_proto import records
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc
from liferaft_proto.v1.errors_pb2 import ErrorCode, ErrorDetail
from tests.client.test_cluster import TOPIC, FakeCluster, FakeNode, Picture

pytestmark = pytest.mark.asyncio


class StreamNode(FakeNode):
    """A FakeNode with ProduceStream: holds answers until `hold` requests are in, then answers
    them in reverse. Records b"refuse-N" are refused by node N with NOT_LEADER naming node 2;
    b"break" aborts the stream with UNAVAILABLE at once. A written batch's base offset is its
    records read as a number (or its place on this node)."""

    def __init__(self, node_id: int, picture: Picture) -> None:
        super().__init__(node_id, picture)
        self.hold = 1
        self.streams = 0
        self.order: list[int] = []
        self.unanswered = 0
        self.most_unanswered = 0
        self.refuse_next = 0
        """Refuse this many of the next requests, whatever their records (as b"refuse-N")."""

    async def ProduceStream(
        self,
        messages: AsyncIterator[broker_pb2.ProduceStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[broker_pb2.ProduceStreamResponse]:
        self.streams += 1
        held: list[broker_pb2.ProduceRequest] = []
        async for message in messages:
            for request in message.requests:
                if request.records == b"break":
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted: connection lost")
                held.append(request)
                self.unanswered += 1
                self.most_unanswered = max(self.most_unanswered, self.unanswered)
            if len(held) < self.hold:
                continue
            out = broker_pb2.ProduceStreamResponse()
            for r in reversed(held):
                self.order.append(r.correlation_id)
                refuse = self.refuse_next > 0
                self.refuse_next -= refuse
                if refuse or r.records == b"refuse-%d" % self.node_id:
                    out.responses.append(
                        broker_pb2.ProduceResponse(
                            correlation_id=r.correlation_id,
                            error=ErrorDetail(
                                code=ErrorCode.NOT_LEADER,
                                message="scripted",
                                leader_id=2,
                                leader_address=self.picture.addresses[2],
                                retriable=True,
                            ),
                        )
                    )
                else:
                    self.produced.append(r)
                    base = int(r.records) if r.records.isdigit() else len(self.produced) - 1
                    out.responses.append(
                        broker_pb2.ProduceResponse(
                            correlation_id=r.correlation_id, base_offset=base
                        )
                    )
            self.unanswered -= len(held)
            held = []
            yield out


@pytest.fixture
async def fake() -> AsyncIterator[FakeCluster]:
    cluster = FakeCluster()
    await cluster.start(3)
    # Nodes 1 and 2 serve ProduceStream; node 3 is "older" (unary Produce only).
    for node_id in (1, 2):
        server = cluster.servers[node_id]
        await server.stop(grace=None)
        node = StreamNode(node_id, cluster.picture)
        server = grpc.aio.server()
        broker_pb2_grpc.add_BrokerServicer_to_server(node, server)
        host, port = cluster.address(node_id).rsplit(":", 1)
        server.add_insecure_port(f"{host}:{port}")
        await server.start()
        cluster.nodes[node_id] = node
        cluster.servers[node_id] = server
    try:
        yield cluster
    finally:
        await cluster.close()


def req(records: bytes) -> broker_pb2.ProduceRequest:
    return broker_pb2.ProduceRequest(topic=TOPIC, partition=0, acks=-1, records=records)


async def test_answers_matched_by_correlation_id_and_errors_are_values(
    fake: FakeCluster,
) -> None:
    node = fake.nodes[1]
    assert isinstance(node, StreamNode)
    node.hold = 4
    streams = ProduceStreams(max_in_flight=8)
    stub = broker_pb2_grpc.BrokerStub(grpc.aio.insecure_channel(fake.address(1)))
    try:
        sends = [b"10", b"11", b"refuse-1", b"13"]
        results = await asyncio.gather(
            *(streams.produce(stub, fake.address(1), req(r), 5.0) for r in sends),
            return_exceptions=True,
        )
        assert node.order == [4, 3, 2, 1]  # answered in reverse
        assert [r.base_offset for r in results if isinstance(r, broker_pb2.ProduceResponse)] == [
            10,
            11,
            13,
        ]
        assert isinstance(results[2], NotLeaderError) and results[2].leader_id == 2
        # The stream goes on after the error.
        node.hold = 1
        again = await streams.produce(stub, fake.address(1), req(b"14"), 5.0)
        assert again.base_offset == 14 and node.streams == 1
    finally:
        await streams.close()


async def test_at_most_max_in_flight_requests_are_unanswered_on_a_stream(
    fake: FakeCluster,
) -> None:
    node = fake.nodes[1]
    assert isinstance(node, StreamNode)
    node.hold = 2
    streams = ProduceStreams(max_in_flight=2)
    stub = broker_pb2_grpc.BrokerStub(grpc.aio.insecure_channel(fake.address(1)))
    try:
        sends = [b"%d" % i for i in range(10)]
        results = await asyncio.gather(
            *(streams.produce(stub, fake.address(1), req(r), 5.0) for r in sends)
        )
        assert [r.base_offset for r in results] == list(range(10))
        assert node.most_unanswered == 2  # the others waited for room, in order
        assert [int(r.records) for r in node.produced] == [1, 0, 3, 2, 5, 4, 7, 6, 9, 8]
    finally:
        await streams.close()


async def test_a_broken_stream_fails_its_waiting_requests_and_the_next_opens_a_new_one(
    fake: FakeCluster,
) -> None:
    node = fake.nodes[1]
    assert isinstance(node, StreamNode)
    node.hold = 3
    streams = ProduceStreams()
    stub = broker_pb2_grpc.BrokerStub(grpc.aio.insecure_channel(fake.address(1)))
    try:
        waiting = [
            asyncio.ensure_future(streams.produce(stub, fake.address(1), req(b"1"), 5.0)),
            asyncio.ensure_future(streams.produce(stub, fake.address(1), req(b"2"), 5.0)),
        ]
        await asyncio.sleep(0.05)
        with pytest.raises(BrokerUnavailableError) as e:
            await streams.produce(stub, fake.address(1), req(b"break"), 5.0)
        assert e.value.retriable and e.value.transport
        for fut in waiting:
            with pytest.raises(BrokerUnavailableError) as e:
                await fut
            assert e.value.retriable and e.value.transport and "scripted" in str(e.value)
        node.hold = 1
        assert (await streams.produce(stub, fake.address(1), req(b"7"), 5.0)).base_offset == 7
        assert node.streams == 2
    finally:
        await streams.close()


async def test_no_answer_in_time_is_a_retriable_timeout_and_the_stream_goes_on(
    fake: FakeCluster,
) -> None:
    node = fake.nodes[1]
    assert isinstance(node, StreamNode)
    node.hold = 2  # the first request waits for a second one that comes too late
    streams = ProduceStreams()
    stub = broker_pb2_grpc.BrokerStub(grpc.aio.insecure_channel(fake.address(1)))
    try:
        with pytest.raises(Exception) as e:
            await streams.produce(stub, fake.address(1), req(b"1"), 0.2)
        assert e.value.__class__.__name__ == "RequestTimedOutError"
        assert "may have been written" in str(e.value)
        node.hold = 1
        # The late answer to request 1 comes with this one's and is dropped; this gets its own.
        assert (await streams.produce(stub, fake.address(1), req(b"2"), 5.0)).base_offset == 2
        assert node.streams == 1
    finally:
        await streams.close()


async def test_each_waiting_request_times_out_at_its_own_deadline(fake: FakeCluster) -> None:
    """The stream times its requests with one timer: a request queued after one with a later
    deadline still times out at its own, and each of several does, in turn; the others go on."""
    node = fake.nodes[1]
    assert isinstance(node, StreamNode)
    node.hold = 4  # nothing is answered until the fourth request is in
    streams = ProduceStreams()
    stub = broker_pb2_grpc.BrokerStub(grpc.aio.insecure_channel(fake.address(1)))
    try:
        patient = asyncio.ensure_future(streams.produce(stub, fake.address(1), req(b"1"), 60.0))
        await asyncio.sleep(0.05)
        async with asyncio.timeout(20):  # far less than the first request's 60 s
            hasty = [
                asyncio.ensure_future(streams.produce(stub, fake.address(1), req(b"%d" % i), t))
                for i, t in ((2, 0.3), (3, 0.6))
            ]
            for fut in hasty:
                with pytest.raises(Exception) as e:
                    await fut
                assert e.value.__class__.__name__ == "RequestTimedOutError"
        assert not patient.done()
        # The fourth request releases the held answers: the patient one gets its own.
        assert (await streams.produce(stub, fake.address(1), req(b"4"), 5.0)).base_offset == 4
        assert (await patient).base_offset == 1
        assert node.streams == 1
    finally:
        await streams.close()


async def test_the_cluster_core_uses_streams_and_falls_back_to_unary_on_an_older_node(
    fake: FakeCluster,
) -> None:
    cluster = Cluster(ClientConfig.build(fake.bootstrap, request_timeout_ms=5000))
    try:
        await cluster.start()
        # Node 1 leads and refuses with NOT_LEADER naming node 2: the retry follows the hint.
        resp = await cluster.call_leader(TOPIC, 0, "Produce", req(b"refuse-1"), timeout_ms=5000)
        assert resp.base_offset == 0
        assert fake.nodes[1].produced == [] and len(fake.nodes[2].produced) == 1
        assert isinstance(fake.nodes[2], StreamNode) and fake.nodes[2].streams == 1
        # Node 3 has no ProduceStream: UNIMPLEMENTED, then unary; remembered.
        fake.picture.leader, fake.picture.epoch = 3, 5
        cluster.metadata.invalidate()
        await cluster.refresh_metadata()
        for _ in range(2):
            await cluster.call_leader(TOPIC, 0, "Produce", req(b"5"), timeout_ms=5000)
        assert len(fake.nodes[3].produced) == 2
        assert cluster._streams is not None and fake.address(3) in cluster._streams.unsupported
    finally:
        await cluster.close()


async def test_a_producer_attempt_refused_on_an_open_stream_goes_on_at_the_new_leader(
    fake: FakeCluster,
) -> None:
    """A batch's first attempt sent straight onto an open stream (no task: the sender's
    `_try_at_once`) and refused with NOT_LEADER is carried on by the cluster core's retries,
    as if its call had made it: the hint is followed and the new leader writes it, once."""
    node1, node2 = fake.nodes[1], fake.nodes[2]
    assert isinstance(node1, StreamNode) and isinstance(node2, StreamNode)
    async with Producer(
        fake.bootstrap, acks=1, enable_idempotence=False, linger_ms=0, request_timeout_ms=5000
    ) as producer:
        first = await producer.send(TOPIC, b"a", partition=0)  # opens node 1's stream
        assert (await asyncio.wait_for(first, 10)).offset == 0
        node1.refuse_next = 1
        refused = await producer.send(TOPIC, b"b", partition=0)
        meta = await asyncio.wait_for(refused, 10)
        assert meta.partition == 0
        assert len(node1.produced) == 1 and len(node2.produced) == 1
        assert records.read_header(node2.produced[0].records).record_count == 1
        assert node2.streams == 1
        then = await producer.send(TOPIC, b"c", partition=0)  # at the new leader, at once
        await asyncio.wait_for(then, 10)
        assert len(node2.produced) == 2 and node2.streams == 1


async def test_unary_only_interceptors_keep_produce_unary() -> None:
    class Unary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
            return await continuation(details, request)

    class Bidi(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
        async def intercept_stream_stream(self, continuation, details, it):  # type: ignore[no-untyped-def]
            return await continuation(details, it)

    assert sees_streams(())
    assert not sees_streams((Unary(),))
    assert sees_streams((Unary(), Bidi()))
    sasl = Security.from_options(
        {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "u",
            "sasl_plain_password": "p",
        }
    )
    assert sees_streams(tuple(sasl.interceptors()))
