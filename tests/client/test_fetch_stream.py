"""The consumer on FetchStream (client/fetcher.py, Cluster.open_leader_stream), against scripted
nodes.

Each node is a real grpc.aio server on 127.0.0.1 (tests/client/test_cluster.py's FakeNode) that
also serves Fetch and, unless told it is "older", FetchStream, from one shared log of one-record
batches (offset N holds b"N"). The nodes note every stream they open, every one that is
cancelled, and what they sent. What is checked: one stream per partition instead of a unary
call per answer; a seek closes the stream and reads from the new offset; pause closes it and
resume reopens it where it stopped; a consumer that does not poll stops reading, so the node
stops sending (flow control); a node without FetchStream is read with unary Fetch. Real
clusters (a leader killed under a stream) are in tests/integration/test_producer_consumer.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest

from client import Consumer, TopicPartition
from client.cluster import sees_fetch_streams
from liferaft_proto import records
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc
from tests.client.test_cluster import TOPIC, FakeCluster, FakeNode, Picture

pytestmark = pytest.mark.asyncio

TP = TopicPartition(TOPIC, 0)


class Log:
    """The partition's committed records, shared by every node."""

    def __init__(self, value_size: int = 0) -> None:
        self.batches: list[bytes] = []
        self.value_size = value_size
        self.grew = asyncio.Event()

    def append(self, n: int) -> None:
        for _ in range(n):
            offset = len(self.batches)
            value = b"%d" % offset
            value += b"\0" * max(0, self.value_size - len(value))
            self.batches.append(records.build_batch([records.Record(value)], base_offset=offset))
        self.grew.set()
        self.grew = asyncio.Event()

    def answer(self, offset: int, max_bytes: int) -> broker_pb2.FetchResponse:
        out: list[bytes] = []
        size = 0
        for batch in self.batches[offset:]:
            if out and size + len(batch) > max_bytes:
                break
            out.append(batch)
            size += len(batch)
        return broker_pb2.FetchResponse(
            records=b"".join(out), high_watermark=len(self.batches), log_start_offset=0
        )


class LogNode(FakeNode):
    def __init__(self, node_id: int, picture: Picture, log: Log, streams: bool) -> None:
        super().__init__(node_id, picture)
        self.log = log
        self.streams = streams
        self.opened: list[int] = []
        """The offset each FetchStream was opened at."""
        self.cancelled = 0
        self.sent_bytes = 0
        self.sent_answers = 0
        self.unary_fetches = 0
        self.mute_first_stream = False
        """The first stream sends one answer, then nothing (not even the empty answer due
        every max_wait_ms)."""

    async def _wait(self, offset: int, max_wait_ms: int) -> None:
        if offset >= len(self.log.batches):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.log.grew.wait(), max_wait_ms / 1000)

    async def Fetch(
        self, request: broker_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.FetchResponse:
        self.unary_fetches += 1
        await self._wait(request.offset, request.max_wait_ms)
        return self.log.answer(request.offset, request.max_bytes)

    async def FetchStream(
        self, request: broker_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[broker_pb2.FetchResponse]:
        if not self.streams:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "scripted: an older node")
        self.opened.append(request.offset)
        offset = request.offset
        mute = self.mute_first_stream and len(self.opened) == 1
        try:
            while True:
                if mute and self.sent_answers > 0:
                    await asyncio.Event().wait()  # scripted: the stream goes silent
                await self._wait(offset, request.max_wait_ms)
                answer = self.log.answer(offset, request.max_bytes)
                for header, _ in records.split_batches(answer.records):
                    offset = header.base_offset + header.record_count
                self.sent_bytes += len(answer.records)
                self.sent_answers += 1
                yield answer
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def start_nodes(log: Log, streams: bool) -> FakeCluster:
    """One node that leads the partition, its log `log`."""
    fake = FakeCluster()
    node = LogNode(1, fake.picture, log, streams)
    # As a real node (node/server.py): accept the client's keepalive pings, so a connection is
    # not closed under a silent stream ("too many pings") and only the client's watchdog ends it.
    server = grpc.aio.server(
        options=[
            ("grpc.http2.min_ping_interval_without_data_ms", 500),
            ("grpc.http2.max_ping_strikes", 0),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
    )
    broker_pb2_grpc.add_BrokerServicer_to_server(node, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    fake.nodes[1] = node
    fake.servers[1] = server
    fake.picture.addresses[1] = f"127.0.0.1:{port}"
    return fake


def node_of(fake: FakeCluster) -> LogNode:
    node = fake.nodes[1]
    assert isinstance(node, LogNode)
    return node


async def read(consumer: Consumer, n: int, timeout_s: float = 30.0) -> list[int]:
    """The offsets of the next `n` records (their values say the same: checked)."""
    got: list[int] = []
    async with asyncio.timeout(timeout_s):
        while len(got) < n:
            batch = await consumer.getmany(TP, timeout_ms=200, max_records=n - len(got))
            for rec in batch.get(TP, []):
                assert rec.value is not None and int(rec.value.rstrip(b"\0")) == rec.offset
                got.append(rec.offset)
    return got


async def until(cond: object, what: str, timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.01)


@pytest.fixture
async def log() -> Log:
    return Log()


async def test_one_stream_per_partition_instead_of_a_call_per_answer(log: Log) -> None:
    fake = await start_nodes(log, streams=True)
    node = node_of(fake)
    try:
        async with Consumer(fake.bootstrap, fetch_max_wait_ms=100) as consumer:
            consumer.assign([TP])
            consumer.seek(TP, 0)
            for step in range(5):  # records arrive one answer at a time
                log.append(3)
                assert await read(consumer, 3) == list(range(step * 3, step * 3 + 3))
            assert node.opened == [0] and node.unary_fetches == 0
            assert node.sent_answers >= 5
        await until(lambda: node.cancelled == 1, "the stream cancelled at close")
    finally:
        await fake.close()


async def test_a_seek_closes_the_stream_and_reads_from_the_new_offset(log: Log) -> None:
    fake = await start_nodes(log, streams=True)
    node = node_of(fake)
    log.append(10)
    try:
        async with Consumer(fake.bootstrap, fetch_max_wait_ms=100) as consumer:
            consumer.assign([TP])
            consumer.seek(TP, 0)
            assert await read(consumer, 6) == list(range(6))
            consumer.seek(TP, 2)  # back: records 2.. again, from a new stream
            await until(lambda: node.cancelled == 1, "the first stream cancelled")
            assert await read(consumer, 8) == list(range(2, 10))
            consumer.seek(TP, 9)  # forward, past what was buffered
            log.append(2)
            assert await read(consumer, 3) == [9, 10, 11]
            assert node.opened == [0, 2, 9] and node.unary_fetches == 0
    finally:
        await fake.close()


async def test_pause_closes_the_stream_and_resume_reopens_it_where_it_stopped(log: Log) -> None:
    fake = await start_nodes(log, streams=True)
    node = node_of(fake)
    log.append(4)
    try:
        async with Consumer(fake.bootstrap, fetch_max_wait_ms=100) as consumer:
            consumer.assign([TP])
            consumer.seek(TP, 0)
            assert await read(consumer, 4) == [0, 1, 2, 3]
            consumer.pause(TP)
            await until(lambda: node.cancelled == 1, "the stream cancelled by pause")
            log.append(3)
            assert await consumer.getmany(TP, timeout_ms=300) == {}
            assert node.opened == [0]
            consumer.resume(TP)
            assert await read(consumer, 3) == [4, 5, 6]
            assert node.opened == [0, 4]
    finally:
        await fake.close()


async def test_a_consumer_that_does_not_poll_holds_the_node_back() -> None:
    """The reader stops reading while the buffer holds fetch_max_bytes; gRPC's flow control
    then stops the node's stream. Then every record is read once, in order."""
    log = Log(value_size=16 << 10)
    log.append(4000)  # 64 MiB
    fake = await start_nodes(log, streams=True)
    node = node_of(fake)
    try:
        async with Consumer(
            fake.bootstrap, fetch_max_wait_ms=100, fetch_max_bytes=64 << 10
        ) as consumer:
            consumer.assign([TP])
            consumer.seek(TP, 0)
            assert await read(consumer, 1) == [0]
            async with asyncio.timeout(30):  # until the node's sending stops (bounded)
                held = -1
                while node.sent_bytes != held:
                    held = node.sent_bytes
                    await asyncio.sleep(0.5)
            # What gRPC's windows and buffers hold (about 6 MiB here), not the log's 64 MiB.
            assert held < 32 << 20, held
            got = await read(consumer, 3999, timeout_s=120)
            assert got == list(range(1, 4000))
            assert node.opened == [0]
    finally:
        await fake.close()


async def test_a_silent_stream_is_given_up_and_reopened_where_it_stopped(log: Log) -> None:
    """A stream silent for fetch_max_wait_ms + request_timeout_ms is as good as gone: the
    reader gives it up and reopens one at the next offset (no record lost or read twice)."""
    fake = await start_nodes(log, streams=True)
    node = node_of(fake)
    node.mute_first_stream = True
    log.append(3)
    try:
        async with Consumer(
            fake.bootstrap, fetch_max_wait_ms=100, request_timeout_ms=300
        ) as consumer:
            consumer.assign([TP])
            consumer.seek(TP, 0)
            assert await read(consumer, 3) == [0, 1, 2]
            log.append(2)
            assert await read(consumer, 2, timeout_s=10) == [3, 4]  # from a second stream
            assert node.opened == [0, 3]
    finally:
        await fake.close()


async def test_a_reader_held_back_by_a_full_buffer_is_not_silent() -> None:
    """Only time spent waiting for an answer counts as silence: a reader that waits for room
    in its buffer (the consumer does not poll) keeps its stream however long it waits."""
    log = Log(value_size=16 << 10)
    log.append(400)
    fake = await start_nodes(log, streams=True)
    node = node_of(fake)
    try:
        async with Consumer(
            fake.bootstrap,
            fetch_max_wait_ms=100,
            fetch_max_bytes=64 << 10,
            request_timeout_ms=200,
        ) as consumer:
            consumer.assign([TP])
            consumer.seek(TP, 0)
            assert await read(consumer, 1) == [0]
            await asyncio.sleep(1.5)  # no poll: the reader waits for room, far past 300 ms
            assert await read(consumer, 399) == list(range(1, 400))
            assert node.opened == [0]
    finally:
        await fake.close()


async def test_a_node_without_fetch_stream_is_read_with_unary_fetch(log: Log) -> None:
    fake = await start_nodes(log, streams=False)
    node = node_of(fake)
    log.append(5)
    try:
        async with Consumer(fake.bootstrap, fetch_max_wait_ms=100) as consumer:
            consumer.assign([TP])
            consumer.seek(TP, 0)
            assert await read(consumer, 5) == list(range(5))
            log.append(2)
            assert await read(consumer, 2) == [5, 6]
            assert consumer._cluster is not None
            assert fake.address(1) in consumer._cluster.streams_unsupported
            assert node.opened == [] and node.unary_fetches >= 2
    finally:
        await fake.close()


async def test_unary_only_interceptors_keep_fetch_unary() -> None:
    class Unary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
            return await continuation(details, request)

    class Stream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
        async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
            return await continuation(details, request)

    assert sees_fetch_streams([])
    assert not sees_fetch_streams([Unary()])
    assert sees_fetch_streams([Unary(), Stream()])
