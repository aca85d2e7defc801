"""AlterPartitionReassignments (key 45): start replica moves (issue 19, node/moves.py), on the
controller leader (NOT_CONTROLLER elsewhere). Each partition stands alone, as in Kafka: a bad
one gets its error and the others start. Cancelling (null replicas) is not supported yet."""

from __future__ import annotations

import asyncio
from typing import Any

from node.acl import CLUSTER, Operation
from node.errors import BrokerError, ErrorCode
from node.kafka.handlers._common import timeout_s
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of
from node.moves import plan_moves

DEFAULT_TIMEOUT_MS = 60_000


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    ctl = ctx.broker.controller
    timeout = timeout_s(request.timeout, DEFAULT_TIMEOUT_MS)
    try:
        ctx.broker.authorizer.check(Operation.ALTER, CLUSTER)
        if not ctl.is_leader:
            raise BrokerError(
                ErrorCode.NOT_CONTROLLER,
                f"node {ctx.broker.node_id} is not the controller; node {ctl.leader} is",
            )
    except BrokerError as err:
        return r(
            throttle_time=NO_THROTTLE,
            error_code=error_code_of(err),
            error_message=err.message,
            responses=(),
        )
    topics = []
    for t in request.topics:
        parts = []
        for p in t.partitions:
            code, message = NONE, None
            try:
                if p.replicas is None:
                    raise BrokerError(
                        ErrorCode.INVALID_REQUEST,
                        "cancelling a reassignment is not supported; move it again once done",
                    )
                for cmd in plan_moves(ctl.state, [(t.name, p.partition_index, list(p.replicas))]):
                    await asyncio.wait_for(ctl.replicate_and_wait(cmd), timeout)
            except BrokerError as e:
                code, message = error_code_of(e), e.message
            except TimeoutError:
                code = error_code_of(BrokerError(ErrorCode.REQUEST_TIMED_OUT, ""))
                message = "the move was not recorded in time"
            parts.append(
                r.make(
                    "ReassignablePartitionResponse",
                    partition_index=p.partition_index,
                    error_code=code,
                    error_message=message,
                )
            )
        topics.append(r.make("ReassignableTopicResponse", name=t.name, partitions=tuple(parts)))
    return r(
        throttle_time=NO_THROTTLE, error_code=NONE, error_message=None, responses=tuple(topics)
    )


API = Api(key=45, name="AlterPartitionReassignments", min_version=0, max_version=0, handle=handle)
