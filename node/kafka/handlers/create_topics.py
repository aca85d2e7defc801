"""CreateTopics (key 19): through the controller, as the gRPC CreateTopics does.

Kafka clients send admin requests to the controller that Metadata names (the controller's Raft
leader); a node that is not it answers NOT_CONTROLLER, and the client refreshes its metadata and
goes there. Partitions are placed by the controller: explicit replica assignments are refused.
-1 partitions or replication factor means the node's defaults.
"""

from __future__ import annotations

import asyncio
from typing import Any

from node.acl import CLUSTER, Operation, topic
from node.errors import BrokerError, ErrorCode
from node.kafka.handlers._common import timeout_s
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of

DEFAULT_TIMEOUT_MS = 15_000


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    ctl = ctx.broker.controller
    timeout = timeout_s(request.timeout, DEFAULT_TIMEOUT_MS)
    results = []
    seen: set[str] = set()
    for t in request.topics:
        partitions, rf = ctx.broker.topic_shape(
            t.num_partitions if t.num_partitions != -1 else None,
            t.replication_factor if t.replication_factor != -1 else None,
        )
        code, message = NONE, None
        try:
            ctx.broker.authorizer.check_any(Operation.CREATE, CLUSTER, topic(t.name))
            if not ctl.is_leader:
                raise BrokerError(
                    ErrorCode.NOT_CONTROLLER,
                    f"node {ctx.broker.node_id} is not the controller; node {ctl.leader} is",
                )
            if t.name in seen:
                raise BrokerError(
                    ErrorCode.INVALID_REQUEST, f"topic {t.name!r} appears twice in the request"
                )
            seen.add(t.name)
            if t.assignments:
                raise BrokerError(
                    ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                    "liferaft places replicas itself: give partitions and replication factor",
                )
            configs = {c.name: c.value for c in t.configs if c.value is not None}
            cmd = ctl.plan_create_topic(t.name, partitions, rf, configs)
            if not request.validate_only:
                await asyncio.wait_for(ctl.replicate_and_wait(cmd), timeout)
                await ctx.broker.wait_for_leaders(t.name, timeout)
        except BrokerError as e:
            code, message = error_code_of(e), e.message
        except TimeoutError:
            code = error_code_of(BrokerError(ErrorCode.REQUEST_TIMED_OUT, ""))
            message = f"topic {t.name!r} was not created in time"
        results.append(
            r.make(
                "CreatableTopicResult",
                name=t.name,
                error_code=code,
                error_message=message,
                num_partitions=partitions if code == NONE else -1,
                replication_factor=rf if code == NONE else -1,
                configs=() if code == NONE else None,
            )
        )
    return r(throttle_time=NO_THROTTLE, topics=tuple(results))


API = Api(key=19, name="CreateTopics", min_version=2, max_version=5, handle=handle)
