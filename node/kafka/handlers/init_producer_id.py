"""InitProducerId (key 22): a producer id for an idempotent producer, from the controller.

The controller leader allocates it (a replicated counter that never goes back); any other node
forwards the request to the leader over gRPC, so a client may ask any node, as with Kafka.
Transactions are not supported: a transactional id is refused. A producer that asks again with
its id and epoch (KIP-360, after an unknown sequence) gets a fresh id, which the clients accept.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from liferaft_proto.v1 import broker_pb2
from node import acl
from node.acl import CLUSTER, Operation
from node.controller_commands import AllocateProducerIds
from node.errors import BrokerError, ErrorCode
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of, kafka_error

TIMEOUT_S = 15.0


async def allocate(ctx: Ctx) -> int:
    controller = ctx.broker.controller
    if controller.is_leader:
        try:
            first = await asyncio.wait_for(
                controller.replicate_and_wait(AllocateProducerIds(count=1)), TIMEOUT_S
            )
        except TimeoutError:
            raise BrokerError(
                ErrorCode.REQUEST_TIMED_OUT, "no producer id could be allocated in time"
            ) from None
        return int(first)
    leader = controller.leader
    stub = ctx.forward(leader) if leader else None
    if stub is None:
        raise BrokerError(ErrorCode.COORDINATOR_NOT_AVAILABLE, "the controller has no leader")
    try:
        resp = await stub.InitProducerId(broker_pb2.InitProducerIdRequest(), timeout=TIMEOUT_S)
    except grpc.aio.AioRpcError as e:
        raise BrokerError(
            ErrorCode.COORDINATOR_NOT_AVAILABLE,
            f"the controller leader (node {leader}) did not answer: {e.code().name}",
        ) from None
    return int(resp.producer_id)


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    if request.transactional_id is not None:
        tid = acl.transactional_id(request.transactional_id)
        refused = not ctx.broker.authorizer.permits(Operation.WRITE, tid)
        return r(
            throttle_time=NO_THROTTLE,
            error_code=kafka_error(
                ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                if refused
                else ErrorCode.INVALID_REQUEST
            ),
            producer_id=-1,
            producer_epoch=-1,
        )
    try:
        ctx.broker.authorizer.check(Operation.IDEMPOTENT_WRITE, CLUSTER)
        pid = await allocate(ctx)
    except BrokerError as e:
        code = e.code
        if code in (ErrorCode.NOT_CONTROLLER, ErrorCode.REQUEST_TIMED_OUT):
            code = ErrorCode.COORDINATOR_NOT_AVAILABLE  # what the clients retry on
        return r(
            throttle_time=NO_THROTTLE,
            error_code=error_code_of(BrokerError(code, e.message)),
            producer_id=-1,
            producer_epoch=-1,
        )
    return r(throttle_time=NO_THROTTLE, error_code=NONE, producer_id=pid, producer_epoch=0)


API = Api(key=22, name="InitProducerId", min_version=0, max_version=4, handle=handle)
