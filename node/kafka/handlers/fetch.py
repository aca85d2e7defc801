"""Fetch (key 1): committed record batches, long-polled.

Each partition is read from its leader's log up to the high watermark (Partition.read: at least
one whole batch, then up to the partition's byte limit); the request's max_bytes bounds the sum,
though the first partition with data always gets one batch, as in Kafka, so a batch larger than
the limit still makes progress. The answer goes out at once if some partition has an error or
the data reaches min_bytes; otherwise it waits, up to max_wait, for any partition's high
watermark to move, then reads again.

Fetch sessions (KIP-227) are not kept: the answer's session id is 0, which tells the client that
every request is a full one (Kafka does the same when its session cache is full).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from kio.schema.errors import ErrorCode as KafkaErrorCode

from node.acl import Operation, topic
from node.errors import BrokerError
from node.kafka.handlers._common import check_leader_epoch
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of
from node.partition import Partition

MAX_WAIT_MS = 60_000
MAX_RESPONSE_BYTES = 64 << 20


class _Slot:
    __slots__ = ("error", "hw", "index", "leader", "log_start", "part", "records", "want")

    def __init__(self, index: int, want: Any) -> None:
        self.index = index
        self.want = want
        self.part: Partition | None = None
        self.error: KafkaErrorCode = NONE
        self.records = b""
        self.hw = -1
        self.log_start = -1
        self.leader: tuple[int, int] | None = None


def _read(ctx: Ctx, topics: list[tuple[str | None, Any, list[_Slot]]], max_bytes: int) -> int:
    """Read every partition once; return the bytes gathered."""
    total = 0
    for name, _, slots in topics:
        for s in slots:
            if s.error != NONE:
                continue
            if name is None:
                s.error = KafkaErrorCode.unknown_topic_id
                continue
            try:
                ctx.broker.authorizer.check(Operation.READ, topic(name))
                part = s.part or ctx.broker.leader_partition(name, s.index)
                s.part = part
                check_leader_epoch(part, getattr(s.want, "current_leader_epoch", -1))
                budget = min(s.want.partition_max_bytes, max_bytes - total)
                if budget <= 0 and total > 0:
                    s.records = b""
                    s.hw, s.log_start = part.high_watermark, part.log_start_offset
                    continue
                res = part.read(s.want.fetch_offset, max(1, budget))
                # Past the request's limit (only the first data may be): next time.
                s.records = b"" if total > 0 and len(res.records) > budget else res.records
                s.hw, s.log_start = res.high_watermark, res.log_start_offset
                total += len(s.records)
            except BrokerError as e:
                s.error = error_code_of(e)
                s.records = b""
                if e.leader_id:
                    s.leader = (e.leader_id, e.leader_epoch)
    return total


async def _wait_for_data(slots: Iterable[_Slot], timeout: float) -> None:
    """Until a high watermark moves on one of the partitions, or the timeout."""
    waits = [
        asyncio.ensure_future(s.part.fetch(s.want.fetch_offset, 1, int(timeout * 1000), 1))
        for s in slots
        if s.part is not None and s.error == NONE
    ]
    if not waits:
        await asyncio.sleep(timeout)
        return
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        for w in waits:
            if w.done() and not w.cancelled():
                w.exception()  # retrieved: an error shows on the next read


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    if request.session_epoch not in (0, -1) or request.session_id != 0:
        return r(
            throttle_time=NO_THROTTLE,
            error_code=KafkaErrorCode.fetch_session_id_not_found,
            session_id=0,
            responses=(),
        )
    topics = _topics(ctx, request, version)
    max_bytes = min(max(request.max_bytes, 1), MAX_RESPONSE_BYTES)
    max_wait_s = min(max(int(request.max_wait.total_seconds() * 1000), 0), MAX_WAIT_MS) / 1000
    deadline = time.monotonic() + max_wait_s
    while True:
        total = _read(ctx, topics, max_bytes)
        remaining = deadline - time.monotonic()
        errors = any(s.error != NONE for _, _, slots in topics for s in slots)
        if errors or total >= request.min_bytes or remaining <= 0:
            break
        await _wait_for_data((s for _, _, slots in topics for s in slots), remaining)
    return r(
        throttle_time=NO_THROTTLE,
        error_code=NONE,
        session_id=0,
        responses=tuple(
            r.make(
                "FetchableTopicResponse",
                topic=name,
                topic_id=topic_id,
                partitions=tuple(_partition(r, s) for s in slots),
            )
            for name, topic_id, slots in topics
        ),
    )


def _topics(ctx: Ctx, request: Any, version: int) -> list[tuple[str | None, Any, list[_Slot]]]:
    """(name, topic id, partitions) as asked: by name up to v12, by topic id from v13 (a name
    of None: no topic has that id, UNKNOWN_TOPIC_ID)."""
    if version < 13:
        return [
            (t.topic, None, [_Slot(p.partition, p) for p in t.partitions]) for t in request.topics
        ]
    by_id = {
        ctx.topic_uuid(info.name, info.topic_id): info.name
        for info in ctx.broker.controller.state.topics.values()
    }
    return [
        (by_id.get(t.topic_id), t.topic_id, [_Slot(p.partition, p) for p in t.partitions])
        for t in request.topics
    ]


def _partition(r: Responses, s: _Slot) -> Any:
    extra: dict[str, Any] = {}
    if s.leader is not None and r.has("PartitionData", "current_leader"):
        extra["current_leader"] = r.make(
            "LeaderIdAndEpoch", leader_id=s.leader[0], leader_epoch=s.leader[1]
        )
    return r.make(
        "PartitionData",
        partition_index=s.index,
        error_code=s.error,
        high_watermark=s.hw,
        last_stable_offset=s.hw,
        log_start_offset=s.log_start,
        aborted_transactions=None,
        preferred_read_replica=-1,
        records=s.records,
        **extra,
    )


API = Api(key=1, name="Fetch", min_version=4, max_version=16, handle=handle)
