"""JoinGroup (key 11): enter the classic group's barrier (node/kafka/classic.py); the answer
comes when every member has rejoined or the rebalance timed out."""

from __future__ import annotations

from typing import Any

from node.acl import Operation, group
from node.errors import BrokerError
from node.kafka.handlers._groups import wait_bounded
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of


def _ms(value: Any) -> int:
    return int(value.total_seconds() * 1000)


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    session_ms = _ms(request.session_timeout)
    rebalance_ms = _ms(getattr(request, "rebalance_timeout", request.session_timeout))
    try:
        ctx.broker.authorizer.check(Operation.READ, group(request.group_id))
        fut = ctx.classic.join(
            request.group_id,
            request.member_id,
            getattr(request, "group_instance_id", None),
            "kafka",
            "",
            session_ms,
            rebalance_ms,
            request.protocol_type,
            [(p.name, bytes(p.metadata)) for p in request.protocols],
        )
        res = await wait_bounded(fut, max(session_ms, rebalance_ms) / 1000 + 5)
    except BrokerError as e:
        return r(
            throttle_time=NO_THROTTLE,
            error_code=error_code_of(e),
            generation_id=-1,
            protocol_type=None,
            protocol_name=None if version >= 7 else "",
            leader="",
            skip_assignment=False,
            member_id=request.member_id,
            members=(),
        )
    return r(
        throttle_time=NO_THROTTLE,
        error_code=NONE,
        generation_id=res.generation,
        protocol_type=res.protocol_type,
        protocol_name=res.protocol_name if version >= 7 else (res.protocol_name or ""),
        leader=res.leader,
        skip_assignment=False,
        member_id=res.member_id,
        members=tuple(
            r.make("JoinGroupResponseMember", member_id=mid, group_instance_id=gi, metadata=meta)
            for mid, gi, meta in res.members
        ),
    )


API = Api(key=11, name="JoinGroup", min_version=0, max_version=7, handle=handle)
