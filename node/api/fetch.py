"""Reading a partition: Fetch (one answer), FetchStream (answers as records come), ListOffsets
(earliest, latest, by time), PartitionLag (how far behind an offset is, in records and time) and
DeleteRecords (move the log start forward)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from liferaft_proto import records
from liferaft_proto.v1 import broker_pb2
from node import validate
from node.acl import Operation, topic
from node.api.context import ADMIN_TIMEOUT_MS, Api
from node.errors import BrokerError, ErrorCode

DEFAULT_FETCH_MAX_BYTES = 1 << 20
DEFAULT_FETCH_MAX_WAIT_MS = 500
MAX_FETCH_BYTES = 64 << 20
MIN_STREAM_WAIT_MS = 100
"""The shortest silence between a stream's empty answers: a client asking for 1 ms would
otherwise have the node send a thousand empty messages a second on every stream."""


def _fetch_limits(request: broker_pb2.FetchRequest) -> tuple[int, int]:
    if request.max_bytes < 0 or request.min_bytes < 0 or request.max_wait_ms < 0:
        raise BrokerError(
            ErrorCode.INVALID_FETCH_SIZE, "max_bytes, min_bytes and max_wait_ms must be >= 0"
        )
    if request.offset < 0:
        raise BrokerError(ErrorCode.OFFSET_OUT_OF_RANGE, f"offset {request.offset} is negative")
    max_bytes = min(request.max_bytes or DEFAULT_FETCH_MAX_BYTES, MAX_FETCH_BYTES)
    max_wait = request.max_wait_ms if request.max_wait_ms else DEFAULT_FETCH_MAX_WAIT_MS
    return max_bytes, max_wait


async def fetch(api: Api, request: broker_pb2.FetchRequest) -> broker_pb2.FetchResponse:
    validate.fetch(request)
    api.broker.authorizer.check(Operation.READ, topic(request.topic))
    max_bytes, max_wait = _fetch_limits(request)
    part = api.broker.leader_partition(request.topic, request.partition)
    res = await part.fetch(request.offset, max_bytes, max_wait, request.min_bytes)
    return broker_pb2.FetchResponse(
        records=res.records,
        high_watermark=res.high_watermark,
        log_start_offset=res.log_start_offset,
        last_stable_offset=res.high_watermark,
    )


async def fetch_stream(
    api: Api, request: broker_pb2.FetchRequest
) -> AsyncIterator[broker_pb2.FetchResponse]:
    """Answers from `request.offset` on, each as soon as it has min_bytes (1 if 0) of records,
    or what there is (perhaps nothing: the high watermark) when max_wait_ms (at least
    MIN_STREAM_WAIT_MS) passes first.

    The stream lives until the client cancels it (gRPC cancels this generator at its await)
    or it fails (NOT_LEADER when leadership moves, ...: a status ends it). Each answer is
    authorized again, so a READ permission removed while a stream is open stops it, as it
    would refuse the next unary Fetch. A client that does not read holds this generator at
    its `yield` (gRPC's flow control): nothing is read ahead of what the client takes."""
    validate.fetch(request)
    resource = topic(request.topic)
    api.broker.authorizer.check(Operation.READ, resource)
    max_bytes, max_wait = _fetch_limits(request)
    max_wait = max(max_wait, MIN_STREAM_WAIT_MS)
    offset = request.offset
    while True:
        part = api.broker.leader_partition(request.topic, request.partition)
        res = await part.fetch(offset, max_bytes, max_wait, request.min_bytes)
        api.broker.authorizer.check(Operation.READ, resource)
        if res.records:
            end = offset
            for header, _ in records.split_batches(res.records):
                end = header.base_offset + header.record_count
            offset = max(offset, end)
        yield broker_pb2.FetchResponse(
            records=res.records,
            high_watermark=res.high_watermark,
            log_start_offset=res.log_start_offset,
            last_stable_offset=res.high_watermark,
        )


async def list_offsets(
    api: Api, request: broker_pb2.ListOffsetsRequest
) -> broker_pb2.ListOffsetsResponse:
    validate.list_offsets(request)
    api.broker.authorizer.check(Operation.DESCRIBE, topic(request.topic))
    spec = request.spec
    if spec == broker_pb2.ListOffsetsRequest.UNSPECIFIED:
        raise BrokerError(
            ErrorCode.INVALID_REQUEST, "ListOffsets needs spec EARLIEST, LATEST or BY_TIMESTAMP"
        )
    part = api.broker.leader_partition(request.topic, request.partition)
    epoch = part.state().leader_epoch
    if spec == broker_pb2.ListOffsetsRequest.EARLIEST:
        return broker_pb2.ListOffsetsResponse(
            offset=part.log_start_offset, timestamp_ms=-1, leader_epoch=epoch
        )
    if spec == broker_pb2.ListOffsetsRequest.LATEST:
        return broker_pb2.ListOffsetsResponse(
            offset=part.high_watermark, timestamp_ms=-1, leader_epoch=epoch
        )
    if spec == broker_pb2.ListOffsetsRequest.BY_TIMESTAMP:
        found = part.offset_for_time(request.timestamp_ms)
        offset, ts = found if found is not None else (-1, -1)
        return broker_pb2.ListOffsetsResponse(offset=offset, timestamp_ms=ts, leader_epoch=epoch)
    raise BrokerError(ErrorCode.INVALID_REQUEST, f"unknown ListOffsets spec {spec}")


async def partition_lag(
    api: Api, request: broker_pb2.PartitionLagRequest
) -> broker_pb2.PartitionLagResponse:
    validate.partition_lag(request)
    api.broker.authorizer.check(Operation.DESCRIBE, topic(request.topic))
    part = api.broker.leader_partition(request.topic, request.partition)
    lag_records, first_ts = part.lag(request.offset)
    now_ms = int(time.time() * 1000)
    return broker_pb2.PartitionLagResponse(
        high_watermark=part.high_watermark,
        log_start_offset=part.log_start_offset,
        lag_records=lag_records,
        first_unconsumed_timestamp_ms=first_ts,
        lag_ms=max(0, now_ms - first_ts) if first_ts >= 0 else 0,
        now_ms=now_ms,
        leader_epoch=part.state().leader_epoch,
    )


async def delete_records(
    api: Api, request: broker_pb2.DeleteRecordsRequest
) -> broker_pb2.DeleteRecordsResponse:
    """Move one partition's log start forward, at its leader (node/partition_commands.py)."""
    validate.delete_records(request)
    api.broker.authorizer.check(Operation.DELETE, topic(request.topic))  # as Kafka asks
    part = api.broker.leader_partition(request.topic, request.partition)
    low = await part.delete_records_and_wait(
        request.offset, (request.timeout_ms or ADMIN_TIMEOUT_MS) / 1000
    )
    return broker_pb2.DeleteRecordsResponse(
        low_watermark=low, leader_epoch=part.state().leader_epoch
    )
