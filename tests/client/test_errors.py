"""client/errors.py: gRPC failures become the right LiferaftError, at one boundary.

Real gRPC calls against an in-process grpc.aio server produce the errors (an ErrorDetail in the
trailer, a bare status, a deadline, a refused connection, an unimplemented method), so the
mapping is checked on the objects grpcio really raises, not on imitations. A stand-in object
covers the remaining status codes of the table.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

import client.errors as errors
from client.errors import (
    CORE_WRITE_FAILED,
    BrokerUnavailableError,
    CorruptMessageError,
    DeliveryTimeoutError,
    InvalidRequestError,
    LiferaftError,
    MessageTooLargeError,
    NotLeaderError,
    RequestTimedOutError,
    UnknownServerError,
    UnsupportedVersionError,
    error_class,
    error_from_detail,
    from_rpc_error,
)
from liferaft_proto.status import error_status
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc
from liferaft_proto.v1.errors_pb2 import ErrorCode, ErrorDetail

NOT_LEADER = ErrorDetail(
    code=ErrorCode.NOT_LEADER,
    message="node 1 does not lead orders-3; node 2 does",
    leader_id=2,
    leader_address="127.0.0.1:9093",
    retriable=True,
    leader_epoch=7,
)


class Broker(broker_pb2_grpc.BrokerServicer):
    """Fails each RPC its own way. Fetch, ListOffsets, ... stay unimplemented."""

    detail = NOT_LEADER

    async def Produce(
        self, request: broker_pb2.ProduceRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.ProduceResponse:
        await context.abort_with_status(error_status(self.detail))
        raise AssertionError("unreachable")

    async def Metadata(
        self, request: broker_pb2.MetadataRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.MetadataResponse:
        await context.abort(grpc.StatusCode.INTERNAL, "a plain status, no detail")
        raise AssertionError("unreachable")

    async def DescribeTopics(
        self, request: broker_pb2.DescribeTopicsRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.DescribeTopicsResponse:
        await asyncio.sleep(5)
        return broker_pb2.DescribeTopicsResponse()


@pytest.fixture
async def stub() -> AsyncIterator[broker_pb2_grpc.BrokerStub]:
    server = grpc.aio.server()
    broker_pb2_grpc.add_BrokerServicer_to_server(Broker(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield broker_pb2_grpc.BrokerStub(channel)
    finally:
        await server.stop(grace=None)


async def failure(call: object) -> grpc.RpcError:
    try:
        await call  # type: ignore[misc]
    except grpc.RpcError as e:
        return e
    raise AssertionError("the call succeeded")


async def test_detail_decides_class_flags_and_hint(stub: broker_pb2_grpc.BrokerStub) -> None:
    rpc_error = await failure(stub.Produce(broker_pb2.ProduceRequest(), timeout=5))
    err = from_rpc_error(rpc_error, address="127.0.0.1:9092")
    assert type(err) is NotLeaderError
    assert err.code == ErrorCode.NOT_LEADER and err.code_name == "NOT_LEADER"
    assert err.message == NOT_LEADER.message
    assert (err.leader_id, err.leader_address, err.leader_epoch) == (2, "127.0.0.1:9093", 7)
    assert err.retriable and err.invalid_metadata and not err.transport
    assert str(err) == f"NOT_LEADER: {NOT_LEADER.message}"


async def test_the_node_decides_retriable_not_the_class(stub: broker_pb2_grpc.BrokerStub) -> None:
    Broker.detail = ErrorDetail(code=ErrorCode.CORRUPT_MESSAGE, message="bad CRC", retriable=True)
    try:
        rpc_error = await failure(stub.Produce(broker_pb2.ProduceRequest(), timeout=5))
    finally:
        Broker.detail = NOT_LEADER
    err = from_rpc_error(rpc_error)
    assert isinstance(err, CorruptMessageError)
    assert err.retriable  # as the node said, though the class default is False
    assert not CorruptMessageError.retriable


async def test_status_without_detail_is_not_retriable(stub: broker_pb2_grpc.BrokerStub) -> None:
    rpc_error = await failure(stub.Metadata(broker_pb2.MetadataRequest(), timeout=5))
    err = from_rpc_error(rpc_error, address="n1:1")
    assert type(err) is UnknownServerError
    assert not err.retriable and err.transport
    assert "INTERNAL from n1:1" in err.message and "a plain status, no detail" in err.message


async def test_deadline_is_a_retriable_timeout(stub: broker_pb2_grpc.BrokerStub) -> None:
    call = stub.DescribeTopics(broker_pb2.DescribeTopicsRequest(), timeout=0.05)
    err = from_rpc_error(await failure(call))
    assert type(err) is RequestTimedOutError
    assert err.retriable and err.invalid_metadata and err.transport


async def test_unimplemented_method(stub: broker_pb2_grpc.BrokerStub) -> None:
    err = from_rpc_error(await failure(stub.Fetch(broker_pb2.FetchRequest(), timeout=5)))
    assert type(err) is UnsupportedVersionError
    assert not err.retriable


async def test_refused_connection_is_a_retriable_broker_error() -> None:
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = broker_pb2_grpc.BrokerStub(channel).Metadata(
                broker_pb2.MetadataRequest(), timeout=5
            )
            err = from_rpc_error(await failure(call), address=f"127.0.0.1:{port}")
    assert type(err) is BrokerUnavailableError
    assert err.code == ErrorCode.BROKER_NOT_AVAILABLE
    assert err.retriable and err.invalid_metadata and err.transport
    assert f"UNAVAILABLE from 127.0.0.1:{port}" in err.message
    assert "TLS" not in err.message  # nothing listens: no guess about TLS


async def test_tls_on_one_side_only_is_named(tmp_path: Path) -> None:
    """A plaintext client of a TLS node, and a TLS client of a plaintext node, get more than a
    bare UNAVAILABLE: the message says which side of TLS is likely missing."""
    from liferaft.certs import create_certs

    create_certs(tmp_path, [1], ["127.0.0.1"], cluster="c")
    key = (tmp_path / "node-1" / "node.key").read_bytes()
    cert = (tmp_path / "node-1" / "node.crt").read_bytes()
    secure = grpc.aio.server()
    broker_pb2_grpc.add_BrokerServicer_to_server(Broker(), secure)
    tls_port = secure.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    plain = grpc.aio.server()
    broker_pb2_grpc.add_BrokerServicer_to_server(Broker(), plain)
    plain_port = plain.add_insecure_port("127.0.0.1:0")
    await secure.start()
    await plain.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{tls_port}") as channel:
            call = broker_pb2_grpc.BrokerStub(channel).Metadata(
                broker_pb2.MetadataRequest(), timeout=5
            )
            err = from_rpc_error(await failure(call))
        assert type(err) is BrokerUnavailableError and err.retriable
        assert "if it serves TLS" in err.message and "security_protocol SSL" in err.message
        creds = grpc.ssl_channel_credentials((tmp_path / "ca.crt").read_bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{plain_port}", creds) as channel:
            call = broker_pb2_grpc.BrokerStub(channel).Metadata(
                broker_pb2.MetadataRequest(), timeout=5
            )
            err = from_rpc_error(await failure(call))
        assert type(err) is BrokerUnavailableError
        assert "TLS handshake failed" in err.message and "PLAINTEXT" in err.message
    finally:
        await secure.stop(grace=None)
        await plain.stop(grace=None)


class FakeRpcError(grpc.RpcError):
    """Shaped like grpc's errors: code(), details(), trailing_metadata()."""

    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return ()


@pytest.mark.parametrize(
    ("code", "cls", "retriable"),
    [
        (grpc.StatusCode.UNAVAILABLE, BrokerUnavailableError, True),
        (grpc.StatusCode.CANCELLED, BrokerUnavailableError, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, RequestTimedOutError, True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, MessageTooLargeError, False),
        (grpc.StatusCode.UNIMPLEMENTED, UnsupportedVersionError, False),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError, False),
        (grpc.StatusCode.INTERNAL, UnknownServerError, False),
        (grpc.StatusCode.PERMISSION_DENIED, UnknownServerError, False),
    ],
)
def test_transport_table(code: grpc.StatusCode, cls: type[LiferaftError], retriable: bool) -> None:
    err = from_rpc_error(FakeRpcError(code, "why"))
    assert type(err) is cls
    assert err.retriable is retriable
    assert err.message == f"gRPC {code.name}: why"


def test_every_error_code_has_its_class() -> None:
    for name, code in ErrorCode.items():
        if code == ErrorCode.NONE:
            continue
        cls = error_class(code)
        assert cls is not LiferaftError, f"no class for {name}"
        assert cls.code == code
        err = error_from_detail(ErrorDetail(code=code, message="m"))
        assert type(err) is cls and err.code_name == name
    assert error_class(4242) is LiferaftError
    assert LiferaftError(4242, "from the future").code_name == "4242"


def test_public_names_are_exported() -> None:
    for name in errors.__all__:
        assert hasattr(errors, name), name


def test_errors_pickle_with_their_fields() -> None:
    hint = NotLeaderError(None, "moved", 2, "h:1", True, leader_epoch=3)
    gave_up = DeliveryTimeoutError("gave up after 3 attempts", hint)
    again = pickle.loads(pickle.dumps(gave_up))
    assert type(again) is DeliveryTimeoutError and not again.retriable
    assert str(again) == str(gave_up)
    last = again.last_error
    assert type(last) is NotLeaderError
    assert (last.leader_id, last.leader_address, last.leader_epoch) == (2, "h:1", 3)


def test_grpc_cores_own_internal_on_a_broken_stream_is_retriable() -> None:
    """grpc.aio reports a stream write that failed because the call had already ended (a node
    killed under a ProduceStream) as INTERNAL "Internal error from Core", hiding the real
    UNAVAILABLE (grpc/grpc#36066): seen as a failed send in a leader-kill test. It is a broken
    stream, retriable as UNAVAILABLE is; an INTERNAL a node sends stays an unknown error."""
    core = grpc.aio.AioRpcError(
        grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(), CORE_WRITE_FAILED
    )
    err = from_rpc_error(core, address="n1:1")
    assert type(err) is BrokerUnavailableError
    assert err.retriable and err.invalid_metadata and err.transport
    assert "INTERNAL from n1:1: Internal error from Core" in err.message
    sent = grpc.aio.AioRpcError(
        grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(), "a handler failed"
    )
    assert not from_rpc_error(sent).retriable
