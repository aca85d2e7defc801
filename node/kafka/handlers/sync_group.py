"""SyncGroup (key 14): the leader hands in the assignment its client-side assignor computed;
every member gets its part (the broker never reads it)."""

from __future__ import annotations

from typing import Any

from node.acl import Operation, group
from node.errors import BrokerError
from node.kafka.handlers._groups import wait_bounded
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of

TIMEOUT_S = 300.0


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    try:
        ctx.broker.authorizer.check(Operation.READ, group(request.group_id))
        fut = ctx.classic.sync(
            request.group_id,
            request.member_id,
            request.generation_id,
            {a.member_id: bytes(a.assignment) for a in request.assignments},
        )
        assignment = await wait_bounded(fut, TIMEOUT_S)
    except BrokerError as e:
        return r(throttle_time=NO_THROTTLE, error_code=error_code_of(e), assignment=b"")
    g = ctx.classic.groups.get(request.group_id)
    return r(
        throttle_time=NO_THROTTLE,
        error_code=NONE,
        protocol_type=g.protocol_type if g is not None else None,
        protocol_name=g.protocol_name if g is not None else None,
        assignment=assignment,
    )


API = Api(key=14, name="SyncGroup", min_version=0, max_version=5, handle=handle)
