"""LeaveGroup (key 13): members leave; the others rebalance at once (no session timeout wait)."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode as KafkaErrorCode

from node.acl import Operation, group
from node.errors import BrokerError
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    if not ctx.broker.authorizer.permits(Operation.READ, group(request.group_id)):
        code = KafkaErrorCode.group_authorization_failed
        return r(throttle_time=NO_THROTTLE, error_code=code, members=())
    if version < 3:
        try:
            ctx.classic.leave(request.group_id, request.member_id)
        except BrokerError as e:
            return r(throttle_time=NO_THROTTLE, error_code=error_code_of(e), members=())
        return r(throttle_time=NO_THROTTLE, error_code=NONE, members=())
    results = []
    for m in request.members:
        code = NONE
        try:
            ctx.classic.leave(request.group_id, m.member_id)
        except BrokerError as e:
            code = error_code_of(e)
        results.append(
            r.make(
                "MemberResponse",
                member_id=m.member_id,
                group_instance_id=m.group_instance_id,
                error_code=code,
            )
        )
    try:
        ctx.classic.check()
        top = NONE
    except BrokerError as e:
        top = error_code_of(e)
    return r(throttle_time=NO_THROTTLE, error_code=top, members=tuple(results))


API = Api(key=13, name="LeaveGroup", min_version=0, max_version=4, handle=handle)
