"""liferaft_proto/status.py: an ErrorDetail crosses a real gRPC call, the standard way.

A Broker servicer on 127.0.0.1 fails Produce with an ErrorDetail; the test reads it back with
our helper from both an asyncio and a blocking client, and with grpcio-status's own from_call,
which proves the trailer is the standard google.rpc.Status one that any gRPC tool understands.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_status import rpc_status

from liferaft_proto.status import GRPC_CODES, error_detail, error_status, grpc_code_for
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc
from liferaft_proto.v1.errors_pb2 import ErrorCode, ErrorDetail

NOT_LEADER = ErrorDetail(
    code=ErrorCode.NOT_LEADER,
    message="node 1 does not lead orders/3; node 2 does",
    leader_id=2,
    leader_address="127.0.0.1:9093",
    retriable=True,
    leader_epoch=7,
)


class FailingBroker(broker_pb2_grpc.BrokerServicer):
    async def Produce(
        self, request: broker_pb2.ProduceRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.ProduceResponse:
        await context.abort_with_status(error_status(NOT_LEADER))
        raise AssertionError("abort_with_status returns only by raising")

    async def Fetch(
        self, request: broker_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.FetchResponse:
        await context.abort(grpc.StatusCode.INTERNAL, "a plain status, no detail")
        raise AssertionError("abort returns only by raising")


@pytest.fixture
async def address() -> AsyncIterator[str]:
    server = grpc.aio.server()
    broker_pb2_grpc.add_BrokerServicer_to_server(FailingBroker(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


async def test_detail_reaches_an_asyncio_client(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        call = stub.Produce(broker_pb2.ProduceRequest(topic="orders", partition=3), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        err = caught.value
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert err.details() == NOT_LEADER.message
        assert error_detail(err) == NOT_LEADER
        # The standard decoder agrees: code, message and our detail packed in an Any.
        status = await rpc_status.aio.from_call(call)
        assert status is not None
        assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
        unpacked = ErrorDetail()
        assert status.details[0].Unpack(unpacked)
        assert unpacked == NOT_LEADER


async def test_detail_reaches_a_blocking_client(address: str) -> None:
    def call() -> grpc.RpcError:
        with grpc.insecure_channel(address) as channel:
            stub = broker_pb2_grpc.BrokerStub(channel)
            try:
                stub.Produce(broker_pb2.ProduceRequest(topic="orders"), timeout=10)
            except grpc.RpcError as err:
                return err
        raise AssertionError("Produce should have failed")

    # The server runs on this event loop, so the blocking call goes to a thread.
    err = await asyncio.to_thread(call)
    assert error_detail(err) == NOT_LEADER
    assert rpc_status.from_call(err) is not None  # type: ignore[arg-type]


async def test_no_detail_is_none(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as plain:
            await stub.Fetch(broker_pb2.FetchRequest(topic="orders"), timeout=10)
        assert plain.value.code() == grpc.StatusCode.INTERNAL
        assert error_detail(plain.value) is None
        # An RPC the servicer does not implement: gRPC's own UNIMPLEMENTED, no detail either.
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.Metadata(broker_pb2.MetadataRequest(), timeout=10)
        assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert error_detail(missing.value) is None


def test_every_error_code_has_a_grpc_code() -> None:
    # A new ErrorCode must come with a decision about how gRPC tooling sees it.
    errors = [v for v in ErrorCode.values() if v != ErrorCode.NONE]
    assert sorted(GRPC_CODES) == sorted(errors)
    assert grpc.StatusCode.OK not in GRPC_CODES.values()
    with pytest.raises(ValueError, match="NONE is not an error"):
        grpc_code_for(ErrorCode.NONE)
    assert grpc_code_for(12345) == grpc.StatusCode.UNKNOWN


def test_an_explicit_grpc_code_wins() -> None:
    status = error_status(NOT_LEADER, grpc.StatusCode.FAILED_PRECONDITION)
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION
    assert status.details == NOT_LEADER.message
