"""FindCoordinator (key 10): the node that coordinates a consumer group: the leader of the
replicated `__groups` state (node/groups.py), at its Kafka address. Transaction coordinators
do not exist here (no transactions)."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode as KafkaErrorCode

from node.acl import Operation, group
from node.errors import BrokerError
from node.groups import validate_group_id
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of

GROUP, TRANSACTION = 0, 1


def _find(ctx: Ctx, key: str, key_type: int) -> tuple[KafkaErrorCode, str | None, int, str, int]:
    if key_type != GROUP:
        return KafkaErrorCode.coordinator_not_available, "no transactions here", -1, "", -1
    try:
        ctx.broker.authorizer.check(Operation.DESCRIBE, group(key))
        validate_group_id(key)
    except BrokerError as e:
        return error_code_of(e), e.message, -1, "", -1
    leader = ctx.broker.groups.leader
    address = ctx.kafka_address(leader) if leader else None
    if address is None:
        return (
            KafkaErrorCode.coordinator_not_available,
            "the group coordinator is being elected; retry shortly",
            -1,
            "",
            -1,
        )
    return NONE, None, leader, address[0], address[1]


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    key_type = getattr(request, "key_type", GROUP)
    if version >= 4:
        coordinators = []
        for key in request.coordinator_keys:
            code, message, node, host, port = _find(ctx, key, key_type)
            coordinators.append(
                r.make(
                    "Coordinator",
                    key=key,
                    node_id=node,
                    host=host,
                    port=port,
                    error_code=code,
                    error_message=message,
                )
            )
        return r(throttle_time=NO_THROTTLE, coordinators=tuple(coordinators))
    code, message, node, host, port = _find(ctx, request.key, key_type)
    return r(
        throttle_time=NO_THROTTLE,
        error_code=code,
        error_message=message,
        node_id=node,
        host=host,
        port=port,
    )


API = Api(key=10, name="FindCoordinator", min_version=0, max_version=4, handle=handle)
