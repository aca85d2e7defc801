"""DeleteGroups (key 42): forget an empty group's committed offsets (a `delete` command in the
replicated `__groups` log). A group with live members, of either kind, is NON_EMPTY_GROUP."""

from __future__ import annotations

import asyncio
from typing import Any

from node.acl import Operation, group
from node.errors import BrokerError, ErrorCode
from node.groups import validate_group_id
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of

TIMEOUT_S = 15.0


async def _delete(ctx: Ctx, gid: str) -> None:
    ctx.broker.authorizer.check(Operation.DELETE, group(gid))
    ctx.classic.check()
    validate_group_id(gid)
    coord = ctx.broker.groups
    coord.expire_members()
    live = coord.live.get(gid)
    if ctx.classic.has_members(gid) or (live is not None and live.members):
        raise BrokerError(ErrorCode.NON_EMPTY_GROUP, f"group {gid!r} has live members")
    if not coord.exists(gid):
        raise BrokerError(ErrorCode.GROUP_ID_NOT_FOUND, f"group {gid!r} does not exist")
    try:
        await asyncio.wait_for(coord.delete(gid), TIMEOUT_S)
    except TimeoutError:
        raise BrokerError(ErrorCode.REQUEST_TIMED_OUT, "the delete timed out") from None


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    results = []
    for gid in request.groups_names:
        code = NONE
        try:
            await _delete(ctx, gid)
        except BrokerError as e:
            code = error_code_of(e)
        results.append(r.make("DeletableGroupResult", group_id=gid, error_code=code))
    return r(throttle_time=NO_THROTTLE, results=tuple(results))


API = Api(key=42, name="DeleteGroups", min_version=0, max_version=2, handle=handle)
