"""No silent hang in the producer (issue 16, part 1): a missing codec is refused when the
producer is built; a send loop that dies fails its records with the cause; flush() and close()
have deadlines and say what they waited for. No cluster: the Sender (the part that makes gRPC
calls) is replaced by a small stand-in, everything above it is the client's own code."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

import client.sender as sender_module
from client.accumulator import RecordAccumulator
from client.errors import DeliveryTimeoutError, UnknownServerError, UnsupportedCompressionTypeError
from client.producer import Producer
from client.sender import PartitionSender, ProduceResult, ProducerIdentity
from client.types import TopicPartition
from liferaft_proto import records

TP = TopicPartition("t", 0)
pytestmark = pytest.mark.asyncio


class AnswersAll:
    """A Sender that writes everything at once."""

    def __init__(self) -> None:
        self.offset = 0

    async def send(self, topic: str, partition: int, batch: bytes, **_: Any) -> ProduceResult:
        base = self.offset
        self.offset += records.read_header(batch).record_count
        return ProduceResult(base_offset=base, log_append_time_ms=-1, log_start_offset=0)


class NeverAnswers:
    """A Sender whose calls never end (a cluster that swallows requests)."""

    async def send(self, topic: str, partition: int, batch: bytes, **_: Any) -> ProduceResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class AnswersSlowly(AnswersAll):
    """AnswersAll, each answer a little later (so batches queue behind max_in_flight)."""

    async def send(self, topic: str, partition: int, batch: bytes, **kw: Any) -> ProduceResult:
        await asyncio.sleep(0.01)
        return await super().send(topic, partition, batch, **kw)


def partition_sender(
    sender: Any,
    delivery_timeout_ms: int = 60_000,
    *,
    linger_ms: int = 0,
    max_in_flight: int = 5,
    identity: ProducerIdentity | None = ProducerIdentity(1, 0),  # noqa: B008 (frozen value)
) -> PartitionSender:
    acc = RecordAccumulator(
        batch_size=1 << 16,
        linger_ms=linger_ms,
        buffer_memory=1 << 20,
        delivery_timeout_ms=delivery_timeout_ms,
    )
    ps = PartitionSender(
        TP,
        sender,
        acc,
        max_in_flight=max_in_flight,
        compression=records.COMPRESSION_NONE,
        identity=identity,
    )
    ps.start()
    return ps


def queue(ps: PartitionSender, *values: bytes) -> list[asyncio.Future[Any]]:
    futures = ps.acc.append_batch(TP, [records.Record(v) for v in values], 100)
    ps.wake()
    return futures


@pytest.mark.parametrize(("codec", "module"), [("zstd", "zstandard"), ("lz4", "lz4")])
async def test_a_missing_codec_is_refused_when_the_producer_is_built(
    monkeypatch: pytest.MonkeyPatch, codec: str, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import zstandard` now raises ImportError
    monkeypatch.delitem(sys.modules, "lz4.frame", raising=False)
    with pytest.raises(UnsupportedCompressionTypeError) as err:
        Producer("127.0.0.1:1", compression_type=codec)
    assert "pip install 'liferaft[compression]'" in str(err.value)
    assert module in str(err.value)


async def test_an_installed_codec_and_none_are_accepted() -> None:
    Producer("127.0.0.1:1", compression_type=None)
    Producer("127.0.0.1:1", compression_type="zstd")  # the test extra installs both


async def test_a_send_loop_that_dies_fails_its_records_with_the_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ps = partition_sender(AnswersAll())
    ok = queue(ps, b"a")
    assert (await asyncio.wait_for(ok[0], 5)).offset == 0

    def broken(*args: Any, **kwargs: Any) -> bytes:
        raise ImportError("zstd batches need the 'zstandard' package: pip install zstandard")

    monkeypatch.setattr(sender_module.records, "build_batch", broken)
    futures = queue(ps, b"b", b"c")
    later = queue(ps, b"d")
    for fut in futures + later:
        with pytest.raises(UnknownServerError) as err:
            await asyncio.wait_for(fut, 5)
        assert "pip install zstandard" in str(err.value)
        assert isinstance(err.value.__cause__, ImportError)
    assert isinstance(ps.failure, ImportError)
    # Records queued for it afterwards fail too, with the same cause, rather than wait.
    (queued,) = ps.acc.append_batch(TP, [records.Record(b"e")], 100)
    whole = ps.acc.append_whole(TP, [records.Record(b"f"), records.Record(b"g")], 100)
    ps.fail_queued_if_dead()
    assert not ps.acc.queues[TP]
    for fut in (queued, whole):
        with pytest.raises(UnknownServerError):
            await fut


async def test_whole_batches_and_record_futures_get_their_offsets_in_order() -> None:
    """send_batch's one future per batch and send()'s future per record, mixed on one
    partition: each resolves with its own offsets, in the order they were queued."""
    ps = partition_sender(AnswersAll())
    first = queue(ps, b"a", b"b")
    whole = ps.acc.append_whole(TP, [records.Record(b"%d" % i) for i in range(5)], 100)
    ps.wake()
    last = queue(ps, b"z")
    assert [(await asyncio.wait_for(f, 5)).offset for f in first] == [0, 1]
    meta = await asyncio.wait_for(whole, 5)
    assert (meta.offset, meta.record_count) == (2, 5)
    assert (await asyncio.wait_for(last[0], 5)).offset == 7


@pytest.mark.parametrize("idempotent", [True, False])
async def test_an_answer_lets_the_next_queued_batch_go_at_once(idempotent: bool) -> None:
    """With max_in_flight batches in the air the next one waits in its queue; each answer
    frees a slot and the loop takes the next batch then, not at some later alarm (the delivery
    timeout is a minute away)."""
    ps = partition_sender(
        AnswersSlowly(), max_in_flight=1, identity=ProducerIdentity(1, 0) if idempotent else None
    )
    futures = [queue(ps, b"%d" % i)[0] for i in range(10)]
    metas = await asyncio.wait_for(asyncio.gather(*futures), 20)
    assert [m.offset for m in metas] == list(range(10))
    ps.closing = True
    ps.wake()
    await asyncio.wait_for(ps.task, 5)  # idle and closing: the loop ends


async def test_a_lingering_batch_goes_when_its_linger_time_is_up() -> None:
    """send() opening a batch sets the loop's alarm for its linger time (no loop turn now):
    the batch waits that long, takes what comes meanwhile, and then goes without any other
    wake-up (the delivery timeout is a minute away)."""
    ps = partition_sender(AnswersAll(), linger_ms=300)
    await asyncio.sleep(0)  # the loop's first turn: nothing queued, it waits
    futures = []
    for value in (b"a", b"b"):
        fut, wake = ps.acc.append(TP, records.Record(value), 100)
        if wake:
            ps.look_again()
        futures.append(fut)
    await asyncio.sleep(0.05)
    assert not any(f.done() for f in futures)  # lingering: sent at 300 ms at the earliest
    metas = await asyncio.wait_for(asyncio.gather(*futures), 20)
    assert [m.offset for m in metas] == [0, 1]  # one batch
    ps.closing = True
    ps.wake()
    await asyncio.wait_for(ps.task, 5)


async def test_an_unanswered_batch_fails_at_its_delivery_timeout() -> None:
    ps = partition_sender(NeverAnswers(), delivery_timeout_ms=200)
    fut = queue(ps, b"a")[0]

    # The stand-in never returns, as a call whose budget the sender gives it would not either;
    # the sender's own deadline still ends the batch.
    async def answered_by_deadline() -> None:
        with pytest.raises(DeliveryTimeoutError):
            await fut

    task = asyncio.ensure_future(answered_by_deadline())
    done, _ = await asyncio.wait([task], timeout=10)
    if not done:
        ps.abandon(UnknownServerError(None, "test: gave up"))
        await task
    if ps.task is not None:
        ps.task.cancel()


async def test_flush_and_close_have_deadlines_and_say_what_they_wait_for() -> None:
    p = Producer("127.0.0.1:1", delivery_timeout_ms=60_000)
    acc = RecordAccumulator(
        batch_size=1 << 16, linger_ms=0, buffer_memory=1 << 20, delivery_timeout_ms=60_000
    )
    p._acc, p._sender = acc, NeverAnswers()  # type: ignore[assignment]
    p._identity = ProducerIdentity(1, 0)
    ps = p._partition_sender(TP)
    futures = queue(ps, b"a", b"b")
    with pytest.raises(TimeoutError) as err:
        await p.flush(timeout_ms=50)
    assert "2 records for t-0 still not acknowledged" in str(err.value)
    await asyncio.wait_for(p.close(timeout_ms=50), 5)
    for fut in futures:
        with pytest.raises(UnknownServerError) as closed:
            await fut
        assert "closed with 2 records for t-0 not acknowledged" in str(closed.value)
