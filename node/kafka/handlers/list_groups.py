"""ListGroups (key 16): the groups this node coordinates, classic ones with the protocol type
their members gave ("consumer"), liferaft's own as "liferaft". Kafka clients ask every broker
and merge; a node that does not coordinate answers with none."""

from __future__ import annotations

from typing import Any

from node.acl import CLUSTER, Operation, group
from node.errors import BrokerError
from node.groups import EMPTY
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses

LIFERAFT_PROTOCOL_TYPE = "liferaft"


def overview(ctx: Ctx) -> list[tuple[str, str, str]]:
    """(group id, protocol type, state) of every group known here, classic and liferaft."""
    out: dict[str, tuple[str, str]] = {}
    coord = ctx.broker.groups
    coord.expire_members()
    for gid in coord.group_ids():
        live = coord.live.get(gid)
        if live is not None and live.members:
            out[gid] = (LIFERAFT_PROTOCOL_TYPE, live.state())
        else:
            out[gid] = ("", EMPTY)  # offsets only: either kind may use it next
    for gid, g in ctx.classic.groups.items():
        if g.members:
            out[gid] = (g.protocol_type or "", g.state)
    return [(gid, pt, st) for gid, (pt, st) in sorted(out.items())]


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    try:
        ctx.classic.check()
    except BrokerError:
        return r(throttle_time=NO_THROTTLE, error_code=NONE, groups=())
    states = set(getattr(request, "states_filter", ()) or ())
    # Kafka's rule: every group for DESCRIBE on the cluster, else those the caller may describe.
    may = ctx.broker.authorizer.permits
    everything = may(Operation.DESCRIBE, CLUSTER)
    groups = tuple(
        r.make("ListedGroup", group_id=gid, protocol_type=pt, group_state=st)
        for gid, pt, st in overview(ctx)
        if (not states or st in states) and (everything or may(Operation.DESCRIBE, group(gid)))
    )
    return r(throttle_time=NO_THROTTLE, error_code=NONE, groups=groups)


API = Api(key=16, name="ListGroups", min_version=0, max_version=4, handle=handle)
