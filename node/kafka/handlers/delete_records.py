"""DeleteRecords (key 21): move each partition's log start offset forward, at its leader
(NOT_LEADER_OR_FOLLOWER elsewhere, as Kafka: clients send each partition to its leader). The
move is a command in the partition's Raft log (node/partition_commands.py); a partition is
answered with its new low watermark once that command is committed and applied by the leader.
Offset -1 is the high watermark; above it, or negative otherwise, OFFSET_OUT_OF_RANGE. The caller
needs DELETE on the topic (TOPIC_AUTHORIZATION_FAILED otherwise), as in Kafka."""

from __future__ import annotations

import asyncio
from typing import Any

from node import acl
from node.acl import Operation
from node.errors import BrokerError
from node.kafka.handlers._common import timeout_s
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of

DEFAULT_TIMEOUT_MS = 30_000


async def _one(ctx: Ctx, r: Responses, topic: str, want: Any, timeout: float) -> Any:
    code, low = NONE, -1
    try:
        ctx.broker.authorizer.check(Operation.DELETE, acl.topic(topic))  # as Kafka asks
        part = ctx.broker.leader_partition(topic, want.partition_index)
        low = await part.delete_records_and_wait(want.offset, timeout)
    except BrokerError as e:
        code = error_code_of(e)
    return r.make(
        "DeleteRecordsPartitionResult",
        partition_index=want.partition_index,
        low_watermark=low,
        error_code=code,
    )


async def _topic(ctx: Ctx, r: Responses, t: Any, timeout: float) -> Any:
    partitions = await asyncio.gather(*(_one(ctx, r, t.name, p, timeout) for p in t.partitions))
    return r.make("DeleteRecordsTopicResult", name=t.name, partitions=tuple(partitions))


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    timeout = timeout_s(request.timeout, DEFAULT_TIMEOUT_MS)
    topics = await asyncio.gather(*(_topic(ctx, r, t, timeout) for t in request.topics))
    return r(throttle_time=NO_THROTTLE, topics=tuple(topics))


API = Api(key=21, name="DeleteRecords", min_version=0, max_version=2, handle=handle)
