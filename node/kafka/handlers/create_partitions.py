"""CreatePartitions (key 37): grow a topic, through the controller leader (NOT_CONTROLLER
elsewhere, like CreateTopics). Replicas of the new partitions are placed by liferaft; explicit
assignments are refused. Records keep their partition: keyed records written before may now hash
elsewhere, as in Kafka."""

from __future__ import annotations

import asyncio
from typing import Any

from node.acl import Operation, topic
from node.errors import BrokerError, ErrorCode
from node.kafka.handlers._common import timeout_s
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of

DEFAULT_TIMEOUT_MS = 15_000


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    ctl = ctx.broker.controller
    timeout = timeout_s(request.timeout, DEFAULT_TIMEOUT_MS)
    results = []
    seen: set[str] = set()
    for t in request.topics:
        code, message = NONE, None
        try:
            ctx.broker.authorizer.check(Operation.ALTER, topic(t.name))
            if not ctl.is_leader:
                raise BrokerError(
                    ErrorCode.NOT_CONTROLLER,
                    f"node {ctx.broker.node_id} is not the controller; node {ctl.leader} is",
                )
            if t.name in seen:
                raise BrokerError(ErrorCode.INVALID_REQUEST, f"topic {t.name!r} appears twice")
            seen.add(t.name)
            if t.assignments:
                raise BrokerError(
                    ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                    "liferaft places replicas itself: give the new partition count only",
                )
            cmd = ctl.plan_create_partitions(t.name, t.count)
            if not request.validate_only:
                await asyncio.wait_for(ctl.replicate_and_wait(cmd), timeout)
                await ctx.broker.wait_for_leaders(t.name, timeout)
        except BrokerError as e:
            code, message = error_code_of(e), e.message
        except TimeoutError:
            code = error_code_of(BrokerError(ErrorCode.REQUEST_TIMED_OUT, ""))
            message = f"partitions of {t.name!r} were not created in time"
        results.append(
            r.make(
                "CreatePartitionsTopicResult", name=t.name, error_code=code, error_message=message
            )
        )
    return r(throttle_time=NO_THROTTLE, results=tuple(results))


API = Api(key=37, name="CreatePartitions", min_version=0, max_version=3, handle=handle)
