"""ListOffsets (key 2): the earliest offset, the latest (the high watermark), or the first offset
whose record timestamp is at or after a time, per partition, from its leader."""

from __future__ import annotations

from typing import Any

from node import acl
from node.acl import Operation
from node.errors import BrokerError, ErrorCode
from node.kafka.handlers._common import check_leader_epoch
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of

LATEST, EARLIEST = -1, -2


def _one(ctx: Ctx, r: Responses, topic: str, want: Any) -> Any:
    try:
        ctx.broker.authorizer.check(Operation.DESCRIBE, acl.topic(topic))
        part = ctx.broker.leader_partition(topic, want.partition_index)
        check_leader_epoch(part, getattr(want, "current_leader_epoch", -1))
        epoch = part.state().leader_epoch
        ts = want.timestamp
        if ts == EARLIEST:
            offset, found_ts = part.log_start_offset, -1
        elif ts == LATEST:
            offset, found_ts = part.high_watermark, -1
        elif ts >= 0:
            found = part.offset_for_time(ts)
            offset, found_ts = found if found is not None else (-1, -1)
        else:
            raise BrokerError(
                ErrorCode.INVALID_REQUEST,
                f"timestamp {ts}: use -2 (earliest), -1 (latest) or a time in ms",
            )
        return r.make(
            "ListOffsetsPartitionResponse",
            partition_index=want.partition_index,
            error_code=NONE,
            old_style_offsets=(offset,),
            timestamp=found_ts,
            offset=offset,
            leader_epoch=epoch,
        )
    except BrokerError as e:
        return r.make(
            "ListOffsetsPartitionResponse",
            partition_index=want.partition_index,
            error_code=error_code_of(e),
            old_style_offsets=(),
            timestamp=-1,
            offset=-1,
            leader_epoch=-1,
        )


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    return r(
        throttle_time=NO_THROTTLE,
        topics=tuple(
            r.make(
                "ListOffsetsTopicResponse",
                name=t.name,
                partitions=tuple(_one(ctx, r, t.name, p) for p in t.partitions),
            )
            for t in request.topics
        ),
    )


API = Api(key=2, name="ListOffsets", min_version=1, max_version=6, handle=handle)
