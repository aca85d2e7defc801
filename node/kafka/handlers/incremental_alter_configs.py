"""IncrementalAlterConfigs (key 44): set or remove a topic's settings, through the controller
leader (NOT_CONTROLLER elsewhere); every replica's partitions follow the new values as they apply
the change. The four settings of node/topic_config.py are alterable; APPEND and SUBTRACT (for
list-valued configs) have nothing to act on. Brokers have no settings alterable over Kafka."""

from __future__ import annotations

import asyncio
from typing import Any

from node.acl import Operation, topic
from node.errors import BrokerError, ErrorCode
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of

TOPIC = 2
SET, DELETE = 0, 1
TIMEOUT_S = 15.0


async def _alter(ctx: Ctx, res: Any, validate_only: bool) -> None:
    if res.resource_type != TOPIC:
        raise BrokerError(
            ErrorCode.INVALID_REQUEST,
            f"resource type {res.resource_type}: only topic configs can be altered",
        )
    ctx.broker.authorizer.check(Operation.ALTER_CONFIGS, topic(res.resource_name))
    ctl = ctx.broker.controller
    if not ctl.is_leader:
        raise BrokerError(
            ErrorCode.NOT_CONTROLLER,
            f"node {ctx.broker.node_id} is not the controller; node {ctl.leader} is",
        )
    changes: dict[str, str | None] = {}
    for c in res.configs:
        if c.name in changes:
            raise BrokerError(ErrorCode.INVALID_REQUEST, f"config {c.name!r} appears twice")
        if c.config_operation == SET:
            if c.value is None:
                raise BrokerError(ErrorCode.INVALID_CONFIG, f"SET {c.name!r} needs a value")
            changes[c.name] = c.value
        elif c.config_operation == DELETE:
            changes[c.name] = None
        else:
            raise BrokerError(
                ErrorCode.INVALID_CONFIG,
                f"operation {c.config_operation} on {c.name!r}: only SET (0) and DELETE (1)",
            )
    cmd = ctl.plan_alter_topic_configs(res.resource_name, changes)
    if not validate_only:
        try:
            await asyncio.wait_for(ctl.replicate_and_wait(cmd), TIMEOUT_S)
        except TimeoutError:
            raise BrokerError(ErrorCode.REQUEST_TIMED_OUT, "the change timed out") from None


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    responses = []
    for res in request.resources:
        code, message = NONE, None
        try:
            await _alter(ctx, res, request.validate_only)
        except BrokerError as e:
            code, message = error_code_of(e), e.message
        responses.append(
            r.make(
                "AlterConfigsResourceResponse",
                error_code=code,
                error_message=message,
                resource_type=res.resource_type,
                resource_name=res.resource_name,
            )
        )
    return r(throttle_time=NO_THROTTLE, responses=tuple(responses))


API = Api(key=44, name="IncrementalAlterConfigs", min_version=0, max_version=1, handle=handle)
