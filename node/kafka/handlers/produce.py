"""Produce (key 0): one record batch per partition, acks 0, 1 or -1, idempotent or not.

The batch travels as the client built it: Partition.produce checks its header and CRC, the
producer id, epoch and sequence it carries (the idempotence check), and proposes it. Every
partition's batch is proposed before the first await, so two pipelined requests of one producer
reach the log in the order they were sent. acks=0 gets no answer at all, as in Kafka.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kio.schema.errors import ErrorCode as KafkaErrorCode

from node.acl import Operation, topic
from node.errors import BrokerError, ErrorCode
from node.kafka.handlers._common import timeout_s
from node.kafka.wire import (
    NO_THROTTLE,
    NONE,
    Api,
    CloseConnection,
    Ctx,
    Responses,
    error_code_of,
)
from node.partition import Partition

DEFAULT_TIMEOUT_MS = 30_000


class _Slot:
    """One partition's part of the answer."""

    __slots__ = ("base", "error", "future", "index", "message", "part")

    def __init__(self, index: int) -> None:
        self.index = index
        self.part: Partition | None = None
        self.base = -1
        self.future: asyncio.Future[int] | None = None
        self.error: KafkaErrorCode = NONE
        self.message: str | None = None

    def fail(self, err: BrokerError) -> None:
        self.error = error_code_of(err)
        self.message = err.message


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    acks = request.acks
    topics: list[tuple[str, list[_Slot]]] = []
    for t in request.topic_data:
        slots = []
        for pd in t.partition_data:
            slot = _Slot(pd.index)
            slots.append(slot)
            try:
                if acks not in (0, 1, -1):
                    raise BrokerError(
                        ErrorCode.INVALID_REQUIRED_ACKS, f"acks must be 0, 1 or -1, got {acks}"
                    )
                if request.transactional_id is not None:
                    raise BrokerError(
                        ErrorCode.INVALID_REQUEST, "transactions are not supported by liferaft"
                    )
                ctx.broker.authorizer.check(Operation.WRITE, topic(t.name))
                if pd.records is None:
                    raise BrokerError(ErrorCode.CORRUPT_MESSAGE, "the partition has no records")
                part = ctx.broker.leader_partition(t.name, pd.index)
                slot.part = part
                slot.base, slot.future = part.produce(bytes(pd.records), acks)
            except BrokerError as e:
                slot.fail(e)
        topics.append((t.name, slots))
    if acks == 0:
        failed = [s for _, slots in topics for s in slots if s.error != NONE]
        if failed:
            raise CloseConnection(
                f"acks=0 produce failed on {len(failed)} partitions ({failed[0].message})"
            )
        return None
    waiting = [s for _, slots in topics for s in slots if s.future is not None]
    if waiting:
        # asyncio.wait neither cancels nor consumes the futures: each is looked at below.
        await asyncio.wait(
            [s.future for s in waiting if s.future is not None],
            timeout=timeout_s(request.timeout, DEFAULT_TIMEOUT_MS),
        )
        for s in waiting:
            fut = s.future
            assert fut is not None and s.part is not None
            if not fut.done():
                s.part.cancel_waiter(fut)
                fut.cancel()
                s.error = KafkaErrorCode.request_timed_out
                s.message = "the batch was not acknowledged in time; it may still be written"
            elif fut.cancelled():
                s.error = KafkaErrorCode.request_timed_out
            elif (exc := fut.exception()) is not None:
                if isinstance(exc, BrokerError):
                    s.fail(exc)
                else:
                    s.error = KafkaErrorCode.unknown_server_error
                    s.message = f"{type(exc).__name__}: {exc}"
            else:
                s.base = fut.result()
    r = Responses(API.key, version)
    return r(
        responses=tuple(
            r.make(
                "TopicProduceResponse",
                name=name,
                partition_responses=tuple(
                    r.make(
                        "PartitionProduceResponse",
                        index=s.index,
                        error_code=s.error,
                        base_offset=s.base if s.error == NONE else -1,
                        log_append_time=None,
                        log_start_offset=s.part.log_start_offset if s.part is not None else -1,
                        record_errors=(),
                        error_message=s.message,
                    )
                    for s in slots
                ),
            )
            for name, slots in topics
        ),
        throttle_time=NO_THROTTLE,
    )


API = Api(key=0, name="Produce", min_version=3, max_version=9, handle=handle)
