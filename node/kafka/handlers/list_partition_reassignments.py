"""ListPartitionReassignments (key 46): the replica moves under way (issue 19), from this
node's replica of the metadata: replicas (the voters and the learners), adding (target replicas
not voting yet), removing (voters outside the target)."""

from __future__ import annotations

from typing import Any

from node.acl import CLUSTER, Operation
from node.errors import BrokerError
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    try:
        ctx.broker.authorizer.check(Operation.DESCRIBE, CLUSTER)
    except BrokerError as err:
        return r(
            throttle_time=NO_THROTTLE,
            error_code=error_code_of(err),
            error_message=err.message,
            topics=(),
        )
    ctl = ctx.broker.controller
    st = ctl.state
    wanted: dict[str, set[int] | None] | None = None
    if request.topics is not None:
        wanted = {t.name: set(t.partition_indexes) or None for t in request.topics}
    by_topic: dict[str, list[Any]] = {}
    for key in sorted(st.moves):
        move = st.moves[key]
        if wanted is not None:
            if move.topic not in wanted:
                continue
            only = wanted[move.topic]
            if only is not None and move.partition not in only:
                continue
        info = st.topics.get(move.topic)
        if info is None:
            continue
        voters = info.replicas[move.partition]
        replicas = ctl.hosted_replicas(info, move.partition)
        by_topic.setdefault(move.topic, []).append(
            r.make(
                "OngoingPartitionReassignment",
                partition_index=move.partition,
                replicas=tuple(replicas),
                adding_replicas=tuple(n for n in move.target if n not in voters),
                removing_replicas=tuple(n for n in voters if n not in move.target),
            )
        )
    topics = tuple(
        r.make("OngoingTopicReassignment", name=name, partitions=tuple(parts))
        for name, parts in sorted(by_topic.items())
    )
    return r(throttle_time=NO_THROTTLE, error_code=NONE, error_message=None, topics=topics)


API = Api(key=46, name="ListPartitionReassignments", min_version=0, max_version=0, handle=handle)
