"""DescribeGroups (key 15): state, protocol and members of classic groups (with their metadata
and assignments, which Kafka's tools decode), and of liferaft's own (protocol type "liferaft")."""

from __future__ import annotations

from typing import Any

from node.acl import Operation, group
from node.errors import BrokerError
from node.groups import EMPTY
from node.kafka.classic import DEAD
from node.kafka.handlers.list_groups import LIFERAFT_PROTOCOL_TYPE
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of

UNKNOWN_AUTHORIZED_OPERATIONS = -(2**31)


def _describe(ctx: Ctx, r: Responses, gid: str) -> Any:
    base = dict(group_id=gid, authorized_operations=UNKNOWN_AUTHORIZED_OPERATIONS)
    try:
        ctx.broker.authorizer.check(Operation.DESCRIBE, group(gid))
    except BrokerError as e:
        return r.make(
            "DescribedGroup",
            error_code=error_code_of(e),
            group_state="",
            protocol_type="",
            protocol_data="",
            members=(),
            **base,
        )
    g = ctx.classic.groups.get(gid)
    if g is not None and g.members:
        members = tuple(
            r.make(
                "DescribedGroupMember",
                member_id=m.member_id,
                group_instance_id=m.group_instance_id,
                client_id=m.client_id,
                client_host=m.client_host,
                member_metadata=m.metadata_for(g.protocol_name or ""),
                member_assignment=m.assignment,
            )
            for m in g.members.values()
        )
        return r.make(
            "DescribedGroup",
            error_code=NONE,
            group_state=g.state,
            protocol_type=g.protocol_type or "",
            protocol_data=g.protocol_name or "",
            members=members,
            **base,
        )
    coord = ctx.broker.groups
    live = coord.live.get(gid)
    if live is not None and live.members:
        members = tuple(
            r.make(
                "DescribedGroupMember",
                member_id=m.member_id,
                group_instance_id=None,
                client_id=m.client_id,
                client_host="",
                member_metadata=b"",
                member_assignment=b"",
            )
            for m in live.members.values()
        )
        return r.make(
            "DescribedGroup",
            error_code=NONE,
            group_state=live.state(),
            protocol_type=LIFERAFT_PROTOCOL_TYPE,
            protocol_data="",
            members=members,
            **base,
        )
    state = EMPTY if coord.exists(gid) else DEAD
    return r.make(
        "DescribedGroup",
        error_code=NONE,
        group_state=state,
        protocol_type="",
        protocol_data="",
        members=(),
        **base,
    )


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    try:
        ctx.classic.check()
        ctx.broker.groups.expire_members()
    except BrokerError as e:
        code = error_code_of(e)
        return r(
            throttle_time=NO_THROTTLE,
            groups=tuple(
                r.make(
                    "DescribedGroup",
                    error_code=code,
                    group_id=gid,
                    group_state="",
                    protocol_type="",
                    protocol_data="",
                    members=(),
                    authorized_operations=UNKNOWN_AUTHORIZED_OPERATIONS,
                )
                for gid in request.groups
            ),
        )
    return r(throttle_time=NO_THROTTLE, groups=tuple(_describe(ctx, r, g) for g in request.groups))


API = Api(key=15, name="DescribeGroups", min_version=0, max_version=5, handle=handle)
