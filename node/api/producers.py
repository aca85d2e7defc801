"""InitProducerId: a fresh idempotent producer id, handed out by the controller (never reused)."""

from __future__ import annotations

import asyncio

from liferaft_proto.v1 import broker_pb2
from node.acl import CLUSTER, Operation
from node.api.admin import on_controller
from node.api.context import ADMIN_TIMEOUT_MS, Api
from node.controller_commands import AllocateProducerIds
from node.errors import BrokerError, ErrorCode


async def init_producer_id(
    api: Api, request: broker_pb2.InitProducerIdRequest
) -> broker_pb2.InitProducerIdResponse:
    api.broker.authorizer.check(Operation.IDEMPOTENT_WRITE, CLUSTER)
    forwarded = await on_controller(api, "InitProducerId", request)
    if forwarded is not None:
        return forwarded
    try:
        first = await asyncio.wait_for(
            api.broker.controller.replicate_and_wait(AllocateProducerIds(count=1)),
            ADMIN_TIMEOUT_MS / 1000,
        )
    except TimeoutError:
        raise BrokerError(
            ErrorCode.REQUEST_TIMED_OUT, "no producer id could be allocated in time; retry"
        ) from None
    return broker_pb2.InitProducerIdResponse(producer_id=int(first), producer_epoch=0)
