"""DeleteTopics (key 20): through the controller (NOT_CONTROLLER elsewhere, like CreateTopics)."""

from __future__ import annotations

import asyncio
from typing import Any

from node.acl import Operation, topic
from node.controller_commands import DeleteTopic
from node.errors import BrokerError, ErrorCode
from node.kafka.handlers._common import timeout_s
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of

DEFAULT_TIMEOUT_MS = 15_000


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    ctl = ctx.broker.controller
    timeout = timeout_s(request.timeout, DEFAULT_TIMEOUT_MS)
    results = []
    for name in request.topic_names:
        code, message = NONE, None
        try:
            ctx.broker.authorizer.check(Operation.DELETE, topic(name))
            if not ctl.is_leader:
                raise BrokerError(
                    ErrorCode.NOT_CONTROLLER,
                    f"node {ctx.broker.node_id} is not the controller; node {ctl.leader} is",
                )
            if name not in ctl.state.topics:
                raise BrokerError(
                    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist"
                )
            await asyncio.wait_for(ctl.replicate_and_wait(DeleteTopic(name=name)), timeout)
        except BrokerError as e:
            code, message = error_code_of(e), e.message
        except TimeoutError:
            code = error_code_of(BrokerError(ErrorCode.REQUEST_TIMED_OUT, ""))
            message = f"deleting {name!r} timed out"
        results.append(
            r.make("DeletableTopicResult", name=name, error_code=code, error_message=message)
        )
    return r(throttle_time=NO_THROTTLE, responses=tuple(results))


API = Api(key=20, name="DeleteTopics", min_version=1, max_version=5, handle=handle)
