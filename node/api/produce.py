"""Produce: one record batch to one partition's leader, answered when as durable as `acks` asks."""

from __future__ import annotations

import asyncio

from liferaft_proto.v1 import broker_pb2
from node import validate
from node.acl import Operation, topic
from node.api.context import Api
from node.errors import BrokerError, ErrorCode

DEFAULT_PRODUCE_TIMEOUT_MS = 30_000


async def produce(api: Api, request: broker_pb2.ProduceRequest) -> broker_pb2.ProduceResponse:
    validate.produce(request)
    api.broker.authorizer.check(Operation.WRITE, topic(request.topic))
    acks = request.acks if request.HasField("acks") else -1
    part = api.broker.leader_partition(request.topic, request.partition)
    base, fut = part.produce(request.records, acks)
    if fut is not None:
        timeout_ms = request.timeout_ms or DEFAULT_PRODUCE_TIMEOUT_MS
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout_ms / 1000)
        except TimeoutError:
            part.cancel_waiter(fut)
            raise BrokerError(
                ErrorCode.REQUEST_TIMED_OUT,
                f"batch at offset {base} of {request.topic}-{request.partition} was not "
                f"{'committed to the ISR' if acks == -1 else 'written'} within {timeout_ms} ms; "
                "it may still be written",
            ) from None
    return broker_pb2.ProduceResponse(
        base_offset=base if acks != 0 else -1,
        log_append_time_ms=-1,
        log_start_offset=part.log_start_offset,
    )
