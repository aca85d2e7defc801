"""Heartbeat (key 12): keeps a classic member's session; REBALANCE_IN_PROGRESS tells it to
rejoin."""

from __future__ import annotations

from typing import Any

from node.acl import Operation, group
from node.errors import BrokerError
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    try:
        ctx.broker.authorizer.check(Operation.READ, group(request.group_id))
        ctx.classic.heartbeat(request.group_id, request.member_id, request.generation_id)
    except BrokerError as e:
        return r(throttle_time=NO_THROTTLE, error_code=error_code_of(e))
    return r(throttle_time=NO_THROTTLE, error_code=NONE)


API = Api(key=12, name="Heartbeat", min_version=0, max_version=4, handle=handle)
