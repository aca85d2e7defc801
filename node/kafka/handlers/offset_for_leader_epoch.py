"""OffsetForLeaderEpoch (key 23): where a leader epoch ended, so a consumer can tell whether its
position survived a leader change (KIP-320). The epoch is the partition's Raft term, stamped in
every batch by the leader that wrote it; the end of epoch E is the first offset written in a
later term, found by a binary search over the committed batches (terms only grow along the log),
or the high watermark when no later term has written yet."""

from __future__ import annotations

from typing import Any

from node import acl
from node.acl import Operation
from node.errors import BrokerError
from node.kafka.handlers._common import check_leader_epoch
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of
from node.partition import Partition

UNDEFINED = -1


def end_offset_for_epoch(part: Partition, epoch: int) -> tuple[int, int]:
    """(the largest epoch <= `epoch` in the log, the offset where it ended)."""
    current = part.state().leader_epoch
    if epoch > current:
        return UNDEFINED, UNDEFINED
    index = part.offsets
    storage = part.group.storage
    lo, hi = 0, len(index)
    while lo < hi:  # first batch written in a term after `epoch`
        mid = (lo + hi) // 2
        if storage.term(index.at(mid).raft_index) > epoch:
            hi = mid
        else:
            lo = mid + 1
    if lo == 0:
        # Nothing held was written in `epoch` or before it (or the log is empty).
        return (epoch, index.start_offset) if len(index) else (current, part.high_watermark)
    found = storage.term(index.at(lo - 1).raft_index)
    end = index.at(lo).base_offset if lo < len(index) else part.high_watermark
    return found, end


def _one(ctx: Ctx, r: Responses, topic: str, want: Any) -> Any:
    try:
        ctx.broker.authorizer.check(Operation.DESCRIBE, acl.topic(topic))
        part = ctx.broker.leader_partition(topic, want.partition)
        check_leader_epoch(part, want.current_leader_epoch)
        epoch, end = end_offset_for_epoch(part, want.leader_epoch)
        return r.make(
            "EpochEndOffset",
            error_code=NONE,
            partition=want.partition,
            leader_epoch=epoch,
            end_offset=end,
        )
    except BrokerError as e:
        return r.make(
            "EpochEndOffset",
            error_code=error_code_of(e),
            partition=want.partition,
            leader_epoch=UNDEFINED,
            end_offset=UNDEFINED,
        )


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    return r(
        throttle_time=NO_THROTTLE,
        topics=tuple(
            r.make(
                "OffsetForLeaderTopicResult",
                topic=t.topic,
                partitions=tuple(_one(ctx, r, t.topic, p) for p in t.partitions),
            )
            for t in request.topics
        ),
    )


API = Api(key=23, name="OffsetForLeaderEpoch", min_version=2, max_version=4, handle=handle)
