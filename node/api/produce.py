"""Produce: one record batch to one partition's leader, answered when as durable as `acks` asks.

The work of one request is two steps, shared by unary Produce and ProduceStream
(node/api/produce_stream.py):

    propose(api, request)      validate, authorize (node.principal.caller), leader check,
                               propose; synchronous, so a stream proposes in arrival order
    when_done(pending, deliver)   deliver(answer) once: the response, or the BrokerError
                               (REQUEST_TIMED_OUT when acks are not in within timeout_ms)

`produce()` is the two for one unary call. The wait is a done-callback and a timer rather than
a task per request: on a stream, thousands of requests a second wait at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from liferaft_proto.v1 import broker_pb2
from node import validate
from node.acl import Operation, topic
from node.api.context import Api
from node.errors import BrokerError, ErrorCode
from node.partition import Partition

DEFAULT_PRODUCE_TIMEOUT_MS = 30_000

Answer = broker_pb2.ProduceResponse | BaseException
"""What a produce request ends with: its response, or why it failed (a BrokerError; anything
else is a bug the caller reports as UNKNOWN_SERVER_ERROR)."""


@dataclass(frozen=True, slots=True)
class Pending:
    """A batch past its checks and proposed; what is left is to wait for its acks."""

    request: broker_pb2.ProduceRequest
    part: Partition
    acks: int
    base: int
    future: asyncio.Future[int] | None
    """None for acks=0: answered at once."""


def propose(api: Api, request: broker_pb2.ProduceRequest) -> Pending:
    """Check and propose one batch, or raise BrokerError having changed nothing. No await in
    here: ProduceStream relies on a stream's requests being proposed in the order they came."""
    validate.produce(request)
    api.broker.authorizer.check(Operation.WRITE, topic(request.topic))
    acks = request.acks if request.HasField("acks") else -1
    part = api.broker.leader_partition(request.topic, request.partition)
    base, fut = part.produce(request.records, acks)
    return Pending(request, part, acks, base, fut)


def _response(p: Pending) -> broker_pb2.ProduceResponse:
    return broker_pb2.ProduceResponse(
        base_offset=p.base if p.acks != 0 else -1,
        log_append_time_ms=-1,
        log_start_offset=p.part.log_start_offset,
    )


def when_done(p: Pending, deliver: Callable[[Answer], None]) -> None:
    """Call `deliver` exactly once with the request's answer: now for acks=0, else when the
    batch is as durable as asked, or REQUEST_TIMED_OUT after the request's timeout_ms."""
    fut = p.future
    if fut is None:
        deliver(_response(p))
        return
    timeout_ms = p.request.timeout_ms or DEFAULT_PRODUCE_TIMEOUT_MS
    answered = False

    def expired() -> None:
        nonlocal answered
        if answered:
            return
        answered = True
        p.part.cancel_waiter(fut)
        req = p.request
        deliver(
            BrokerError(
                ErrorCode.REQUEST_TIMED_OUT,
                f"batch at offset {p.base} of {req.topic}-{req.partition} was not "
                f"{'committed to the ISR' if p.acks == -1 else 'written'} within {timeout_ms} ms; "
                "it may still be written",
            )
        )

    timer = asyncio.get_running_loop().call_later(timeout_ms / 1000, expired)

    def settled(f: asyncio.Future[int]) -> None:
        nonlocal answered
        if answered:
            return
        answered = True
        timer.cancel()
        if f.cancelled():  # the partition is going away (the node stops): unknown outcome
            deliver(
                BrokerError(
                    ErrorCode.BROKER_NOT_AVAILABLE,
                    f"the wait for batch at offset {p.base} of {p.request.topic}-"
                    f"{p.request.partition} was cancelled; it may still be written",
                )
            )
            return
        error = f.exception()
        deliver(error if error is not None else _response(p))

    fut.add_done_callback(settled)


async def produce(api: Api, request: broker_pb2.ProduceRequest) -> broker_pb2.ProduceResponse:
    """Unary Produce: propose, then wait for the answer; a failure raises its BrokerError."""
    pending = propose(api, request)
    if pending.future is None:
        return _response(pending)
    out: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

    def deliver(answer: Answer) -> None:
        if not out.done():
            out.set_result(answer)

    when_done(pending, deliver)
    answer = await out
    if isinstance(answer, BaseException):
        raise answer
    return answer
