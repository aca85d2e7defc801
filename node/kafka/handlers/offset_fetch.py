"""OffsetFetch (key 9): a group's committed offsets, from the replicated `__groups` state (the
same the liferaft client's FetchOffsets reads). -1 where nothing is committed."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode as KafkaErrorCode

from node import acl
from node.acl import Operation
from node.errors import BrokerError
from node.groups import validate_group_id
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    try:
        ctx.classic.check()
        validate_group_id(request.group_id)
        ctx.broker.authorizer.check(Operation.DESCRIBE, acl.group(request.group_id))
    except BrokerError as e:
        code = error_code_of(e)
        failed = tuple(
            r.make(
                "OffsetFetchResponseTopic",
                name=t.name,
                partitions=tuple(
                    r.make(
                        "OffsetFetchResponsePartition",
                        partition_index=p,
                        committed_offset=-1,
                        committed_leader_epoch=-1,
                        metadata="",
                        error_code=code,
                    )
                    for p in t.partition_indexes
                ),
            )
            for t in request.topics or ()
        )
        return r(throttle_time=NO_THROTTLE, topics=failed, error_code=code)
    committed = ctx.broker.groups.committed(request.group_id)
    if request.topics is None:
        by_topic: dict[str, list[int]] = {}
        for t, p in sorted(committed):
            by_topic.setdefault(t, []).append(p)
        may = ctx.broker.authorizer.permits
        wanted = [(t, ps) for t, ps in by_topic.items() if may(Operation.DESCRIBE, acl.topic(t))]
    else:
        wanted = [(t.name, list(t.partition_indexes)) for t in request.topics]
    topics = []
    for name, parts in wanted:
        readable = ctx.broker.authorizer.permits(Operation.DESCRIBE, acl.topic(name))
        rows = []
        for p in parts:
            entry = committed.get((name, p)) if readable else None
            rows.append(
                r.make(
                    "OffsetFetchResponsePartition",
                    partition_index=p,
                    committed_offset=entry.offset if entry is not None else -1,
                    committed_leader_epoch=-1,
                    metadata=entry.metadata if entry is not None else "",
                    error_code=NONE if readable else KafkaErrorCode.topic_authorization_failed,
                )
            )
        topics.append(r.make("OffsetFetchResponseTopic", name=name, partitions=tuple(rows)))
    return r(throttle_time=NO_THROTTLE, topics=tuple(topics), error_code=NONE)


API = Api(key=9, name="OffsetFetch", min_version=1, max_version=7, handle=handle)
