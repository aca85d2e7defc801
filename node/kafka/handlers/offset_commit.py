"""OffsetCommit (key 8): classic members' commits (fenced by member id and generation), or a
standalone consumer's (no member, generation -1), into the replicated `__groups` log. A commit
that names a member or a generation is a member's, fenced as such (ClassicGroups.check_commit)."""

from __future__ import annotations

import asyncio
from typing import Any

from kio.schema.errors import ErrorCode as KafkaErrorCode

from node import acl
from node.acl import Operation
from node.errors import BrokerError, ErrorCode
from node.groups import validate_group_id
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of

TIMEOUT_S = 15.0


def _check_partition(ctx: Ctx, topic: str, partition: int, offset: int) -> None:
    info = ctx.broker.topic(topic)
    if not 0 <= partition < info.partitions:
        raise BrokerError(
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            f"topic {topic!r} has partitions 0..{info.partitions - 1}, not {partition}",
        )
    if offset < 0:
        raise BrokerError(ErrorCode.OFFSET_OUT_OF_RANGE, f"offset {offset} is negative")


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    generation = getattr(
        request, "generation_id_or_member_epoch", getattr(request, "generation_id", -1)
    )
    errors: dict[tuple[str, int], KafkaErrorCode] = {}
    wanted = [(t.name, p) for t in request.topics for p in t.partitions]
    try:
        ctx.classic.check()
        validate_group_id(request.group_id)
        ctx.broker.authorizer.check(Operation.READ, acl.group(request.group_id))
        if request.member_id or generation >= 0 or ctx.classic.has_members(request.group_id):
            ctx.classic.check_commit(request.group_id, request.member_id, generation)
        else:
            tps = {(name, p.partition_index) for name, p in wanted}
            ctx.broker.groups.check_commit(request.group_id, "", 0, tps)
        offsets = []
        for name, p in wanted:
            try:
                ctx.broker.authorizer.check(Operation.READ, acl.topic(name))
                _check_partition(ctx, name, p.partition_index, p.committed_offset)
            except BrokerError as e:
                errors[(name, p.partition_index)] = error_code_of(e)
                continue
            offsets.append(
                (name, p.partition_index, p.committed_offset, p.committed_metadata or "")
            )
        if offsets:
            try:
                await asyncio.wait_for(
                    ctx.broker.groups.commit(request.group_id, offsets), TIMEOUT_S
                )
            except TimeoutError:
                raise BrokerError(ErrorCode.REQUEST_TIMED_OUT, "the commit timed out") from None
    except BrokerError as e:
        code = error_code_of(e)
        for name, p in wanted:
            errors.setdefault((name, p.partition_index), code)
    return r(
        throttle_time=NO_THROTTLE,
        topics=tuple(
            r.make(
                "OffsetCommitResponseTopic",
                name=t.name,
                partitions=tuple(
                    r.make(
                        "OffsetCommitResponsePartition",
                        partition_index=p.partition_index,
                        error_code=errors.get((t.name, p.partition_index), NONE),
                    )
                    for p in t.partitions
                ),
            )
            for t in request.topics
        ),
    )


API = Api(key=8, name="OffsetCommit", min_version=2, max_version=8, handle=handle)
