"""The producer: records in, batched per partition, delivered in order, written exactly once.

    async with Producer("127.0.0.1:9092", linger_ms=5, compression_type="zstd") as producer:
        fut = await producer.send("orders", b"42 apples", key=b"customer-7")
        meta = await fut                      # RecordMetadata: topic, partition, offset, time
        await producer.send_and_wait("orders", b"7 pears", headers={"source": b"shop"})
        await producer.flush()

Theory of operation. `send()` picks the partition (the partitioner: a key's records always go to
one partition, so they stay in order), reserves the record's size in the bounded buffer (waiting
for space: back-pressure), and appends it to the partition's open batch (client/accumulator.py).
It returns a future that resolves once the batch is as durable as `acks` asks. One sender task
per partition (client/sender.py) takes batches when they are full (`batch_size` bytes) or have
waited `linger_ms`, and keeps up to `max_in_flight_requests_per_partition` in the air, in order.

Idempotence is on by default (with acks="all", as in Kafka): the producer gets an id from the
cluster and numbers its records per partition; a retry after a lost answer or a leader failover
is recognised by the leader and not written twice, and order holds across retries. A record that
is not acknowledged within `delivery_timeout_ms` of its send() fails with DeliveryTimeoutError.

Values, keys and header values are bytes; a str is encoded as UTF-8 for convenience. With a
key_serializer / value_serializer (aiokafka's), send() takes anything they take: each is
called on every key (value) sent, None included, as in aiokafka.

It is shaped like aiokafka's AIOKafkaProducer (docs/client.md has the table): bootstrap_servers=,
client_id, the serializers, max_batch_size (liferaft: batch_size), start()/stop(), send(),
send_and_wait(), create_batch() and send_batch(batch, topic, partition=), flush(),
partitions_for(); AIOKafkaProducer is this class under aiokafka's name.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Unpack, overload

from client.accumulator import (
    BATCH_OVERHEAD,
    ProducerBatch,
    RecordAccumulator,
    estimate_records_size,
    estimate_size,
)
from client.cluster import ClientConfig, Cluster, resolve_bootstrap
from client.errors import (
    MessageTooLargeError,
    UnknownServerError,
    UnknownTopicOrPartitionError,
    UnsupportedCompressionTypeError,
)
from client.metadata import TopicMetadata
from client.partitioner import DefaultPartitioner, Partitioner
from client.security import Security, SecurityOptions
from client.sender import ACKS_ALL, PartitionSender, ProducerIdentity, Sender, parse_acks
from client.types import Header, RecordMetadata, TopicPartition
from liferaft_proto.records import (
    COMPRESSION_NONE,
    Record,
    ValueRecords,
    compress,
    compression_codec,
)
from liferaft_proto.v1 import broker_pb2

__all__ = ["BatchBuilder", "Producer", "Record"]

Bytes = bytes | bytearray | memoryview | str
HeadersIn = Mapping[str, Bytes | None] | Iterable[tuple[str, Bytes | None]]
Serializer = Callable[[Any], Bytes | None]


def _as_bytes(value: Bytes | None, what: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str (or None), got {type(value).__name__}")


def _headers(headers: HeadersIn | None) -> tuple[Header, ...]:
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: list[Header] = []
    for name, value in items:
        if not isinstance(name, str):
            raise TypeError(f"header names must be str, got {type(name).__name__}")
        out.append((name, _as_bytes(value, f"header {name!r}")))
    return tuple(out)


# The PyPI package each codec needs (both come with `pip install 'liferaft[compression]'`).
_CODEC_PACKAGES = {"zstd": "zstandard", "lz4": "lz4"}


def _check_codec(name: str | None, codec: int) -> None:
    """Refuse a codec whose library is missing now, at construction, as aiokafka does: found
    at the first batch instead, it could only fail records one by one."""
    if codec == COMPRESSION_NONE:
        return
    try:
        compress(codec, b"")
    except ImportError:
        label = str(name).strip().lower()
        package = _CODEC_PACKAGES.get(label, label)
        raise UnsupportedCompressionTypeError(
            None,
            f"compression_type={label!r} needs the {package!r} package, which is not "
            f"installed: pip install 'liferaft[compression]' (or pip install {package})",
        ) from None


def _adapt_partitioner(partitioner: Any) -> Partitioner | None:
    """liferaft's partitioners take (topic, key, partitions, available); aiokafka's take
    (key, all_partitions, available_partitions). Accept either."""
    if partitioner is None:
        return None
    try:
        params = inspect.signature(partitioner).parameters.values()
    except (TypeError, ValueError):
        return partitioner
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) != 3:
        return partitioner

    def aiokafka_style(
        topic: str, key: bytes | None, partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        return int(partitioner(key, list(partitions), list(available)))

    return aiokafka_style


def _now_ms() -> int:
    return int(time.time() * 1000)


_GRACE_MS = 5_000
"""How long past the delivery timeout flush() and close() wait by default: the last batch
ends at its delivery timeout, and its answer or failure needs a moment to arrive."""


def _left(batches: list[ProducerBatch]) -> str:
    records = sum(b.count for b in batches)
    parts = sorted({f"{b.tp.topic}-{b.tp.partition}" for b in batches})
    return f"{records} records for {', '.join(parts[:5])}{' ...' if len(parts) > 5 else ''}"


@dataclass(frozen=True, slots=True)
class BatchRecordMetadata:
    """What BatchBuilder.append says about a record it took (aiokafka's BatchBuilder answer)."""

    offset: int
    """The record's place in the batch (its offset once written: base offset + this)."""
    size: int
    timestamp: int
    crc: None = None


class BatchBuilder:
    """Records gathered by the caller to be sent as one batch (aiokafka's create_batch()):

        batch = producer.create_batch()
        while batch.append(key=None, value=b"...", timestamp=None) is not None: ...
        fut = await producer.send_batch(batch, "orders", partition=0)

    append() returns None once the batch is full (max_batch_size), as aiokafka's does."""

    def __init__(
        self, max_size: int, key_serializer: Serializer | None, value_serializer: Serializer | None
    ) -> None:
        self._max_size = max_size
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer
        self._records: list[Record] = []
        self._size = BATCH_OVERHEAD
        self._closed = False

    def append(
        self,
        *,
        timestamp: int | None,
        key: Any,
        value: Any,
        headers: HeadersIn | None = None,
    ) -> BatchRecordMetadata | None:
        if self._closed:
            raise RuntimeError("the batch was sent already")
        if self._key_serializer is not None:
            key = self._key_serializer(key)
        if self._value_serializer is not None:
            value = self._value_serializer(value)
        ts = timestamp if timestamp is not None else _now_ms()
        record = Record(
            value=_as_bytes(value, "value"),
            key=_as_bytes(key, "key"),
            headers=_headers(headers),
            timestamp_ms=ts,
        )
        size = estimate_size(record)
        if self._records and self._size + size > self._max_size:
            return None
        self._records.append(record)
        self._size += size
        return BatchRecordMetadata(offset=len(self._records) - 1, size=size, timestamp=ts)

    def size(self) -> int:
        return self._size

    def record_count(self) -> int:
        return len(self._records)

    def close(self) -> None:
        self._closed = True

    def records(self) -> list[Record]:
        return list(self._records)


class Producer:
    """Sends records to a liferaft cluster. Use `async with`, or start() and close().

    Options are Kafka's producer settings, in milliseconds and bytes:
    acks ("all", 1, 0), enable_idempotence (default: on with acks="all"), linger_ms, batch_size,
    buffer_memory, max_block_ms, delivery_timeout_ms, request_timeout_ms,
    max_in_flight_requests_per_partition (at most 5 with idempotence), max_request_size,
    compression_type (None, "lz4", "zstd"), partitioner; grpc_interceptors (grpc.aio client
    interceptors for every channel); stream_transport (default True: produce on the nodes'
    stream listeners where they have one, framed TCP instead of gRPC; False: always gRPC; off
    with grpc_interceptors, which see gRPC only). aiokafka's names: bootstrap_servers (instead of the first
    argument), client_id, key_serializer, value_serializer, max_batch_size (= batch_size);
    api_version is accepted for porting; security_protocol, ssl_* and sasl_* are
    client/security.py's.
    """

    def __init__(
        self,
        bootstrap: str | Iterable[str] | None = None,
        *,
        bootstrap_servers: str | Iterable[str] | None = None,
        client_id: str = "liferaft-producer",
        key_serializer: Serializer | None = None,
        value_serializer: Serializer | None = None,
        acks: str | int = "all",
        enable_idempotence: bool | None = None,
        linger_ms: int = 5,
        batch_size: int = 64 * 1024,
        buffer_memory: int = 32 * 1024 * 1024,
        max_block_ms: int = 60_000,
        delivery_timeout_ms: int = 120_000,
        request_timeout_ms: int = 30_000,
        max_in_flight_requests_per_partition: int = 5,
        max_request_size: int = 1024 * 1024,
        compression_type: str | None = None,
        retry_backoff_ms: int = 100,
        retry_backoff_max_ms: int = 1_000,
        metadata_max_age_ms: int = 300_000,
        partitioner: Partitioner | None = None,
        grpc_interceptors: Iterable[Any] = (),
        stream_transport: bool = True,
        max_batch_size: int | None = None,
        api_version: str | None = None,
        **security: Unpack[SecurityOptions],
    ) -> None:
        for what, serializer in (("key", key_serializer), ("value", value_serializer)):
            if serializer is not None and not callable(serializer):
                raise TypeError(f"{what}_serializer must be callable")
        if max_batch_size is not None:
            batch_size = max_batch_size
        self.client_id = client_id
        self.key_serializer = key_serializer
        self.value_serializer = value_serializer
        self.acks = parse_acks(acks)
        if enable_idempotence is None:
            enable_idempotence = self.acks == ACKS_ALL
        elif enable_idempotence and self.acks != ACKS_ALL:
            raise ValueError(
                "enable_idempotence=True needs acks='all' (a batch only the leader holds can be "
                "lost in a failover, and its retry would then be refused as out of order)"
            )
        if enable_idempotence and not 1 <= max_in_flight_requests_per_partition <= 5:
            raise ValueError(
                "with idempotence, max_in_flight_requests_per_partition must be 1..5 (the "
                "leader remembers the last 5 batches of each producer)"
            )
        if max_in_flight_requests_per_partition < 1:
            raise ValueError("max_in_flight_requests_per_partition must be >= 1")
        for name, value in (
            ("linger_ms", linger_ms),
            ("max_block_ms", max_block_ms),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        for name, value in (
            ("batch_size", batch_size),
            ("buffer_memory", buffer_memory),
            ("max_request_size", max_request_size),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.enable_idempotence = enable_idempotence
        self.linger_ms = linger_ms
        self.batch_size = batch_size
        self.buffer_memory = buffer_memory
        self.max_block_ms = max_block_ms
        self.max_in_flight = max_in_flight_requests_per_partition
        self.max_request_size = max_request_size
        self.compression = compression_codec(compression_type)
        _check_codec(compression_type, self.compression)
        self.config = ClientConfig.build(
            resolve_bootstrap(bootstrap, bootstrap_servers),
            request_timeout_ms=request_timeout_ms,
            delivery_timeout_ms=delivery_timeout_ms,
            retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms,
            metadata_max_age_ms=metadata_max_age_ms,
            interceptors=tuple(grpc_interceptors),
            stream_transport=stream_transport,
            security=Security.from_options(security),
        )
        self.partitioner: Partitioner = _adapt_partitioner(partitioner) or DefaultPartitioner(
            batch_size, queued=self._queued_batches
        )
        self._sticky = (
            self.partitioner if isinstance(self.partitioner, DefaultPartitioner) else None
        )
        """The default partitioner, told each keyless record's size (its stickiness)."""
        self._cluster: Cluster | None = None
        self._sender: Sender | None = None
        self._acc: RecordAccumulator | None = None
        self._senders: dict[TopicPartition, PartitionSender] = {}
        self._identity: ProducerIdentity | None = None
        self._closed = False

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect: fetch metadata from a bootstrap node (raises BrokerUnavailableError if no
        bootstrap node answers) and, when idempotent, get a producer id."""
        if self._closed:
            raise RuntimeError("the producer is closed")
        if self._cluster is not None:
            return
        cluster = Cluster(self.config)
        try:
            await cluster.start()
            if self.enable_idempotence:
                resp = await cluster.call_any("InitProducerId", broker_pb2.InitProducerIdRequest())
                self._identity = ProducerIdentity(resp.producer_id, resp.producer_epoch)
        except BaseException:
            await cluster.close()
            raise
        self._cluster = cluster
        self._sender = Sender(
            cluster, acks=self.acks, delivery_timeout_ms=self.config.delivery_timeout_ms
        )
        self._acc = RecordAccumulator(
            batch_size=self.batch_size,
            linger_ms=self.linger_ms,
            buffer_memory=self.buffer_memory,
            delivery_timeout_ms=self.config.delivery_timeout_ms,
        )

    async def flush(self, timeout_ms: int | None = None) -> None:
        """Send everything buffered now (no lingering) and wait until every record sent so far
        is acknowledged or failed. Failures stay on their futures; flush does not raise them.

        Every record ends within delivery_timeout_ms of its send(), so that (plus a little) is
        the default deadline; past the deadline flush raises TimeoutError naming what is left.
        """
        if self._acc is None:
            return
        acc = self._acc
        batches = list(acc.incomplete)
        if not batches:
            return
        if timeout_ms is None:
            timeout_ms = self.config.delivery_timeout_ms + _GRACE_MS
        acc.flushing += 1
        try:
            for s in self._senders.values():
                s.wake()
            waiting = asyncio.gather(*(b.done.wait() for b in batches))
            try:
                await asyncio.wait_for(waiting, timeout_ms / 1000)
            except TimeoutError:
                raise TimeoutError(
                    f"flush: {_left(batches)} still not acknowledged nor failed after "
                    f"{timeout_ms} ms"
                ) from None
        finally:
            acc.flushing -= 1

    async def close(self, timeout_ms: int | None = None) -> None:
        """Deliver what is buffered (within the delivery timeout), then disconnect.

        Waits at most timeout_ms (default: delivery_timeout_ms and a little more, by which time
        every record has ended); what is still pending then fails with an error saying so."""
        if self._closed:
            return
        self._closed = True
        if timeout_ms is None:
            timeout_ms = self.config.delivery_timeout_ms + _GRACE_MS
        try:
            for s in self._senders.values():
                s.closing = True
                s.wake()
            tasks = [s.task for s in self._senders.values() if s.task is not None]
            if tasks:
                _, late = await asyncio.wait(tasks, timeout=timeout_ms / 1000)
                if late:
                    self._abandon(timeout_ms)
        finally:
            if self._cluster is not None:
                await self._cluster.close()

    def _abandon(self, timeout_ms: int) -> None:
        """close() ran out of time: fail what is left, stop the send loops."""
        assert self._acc is not None
        left = list(self._acc.incomplete)
        error = UnknownServerError(
            None,
            f"the producer was closed with {_left(left)} not acknowledged after {timeout_ms} "
            "ms: they may or may not have been written",
        )
        for s in self._senders.values():
            s.abandon(error)

    async def stop(self) -> None:
        """aiokafka's name for close()."""
        await self.close()

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _ready(self) -> tuple[Cluster, RecordAccumulator]:
        if self._closed:
            raise RuntimeError("the producer is closed")
        if self._cluster is None or self._acc is None:
            await self.start()
        assert self._cluster is not None and self._acc is not None
        return self._cluster, self._acc

    @property
    def producer_id(self) -> int | None:
        """The idempotent producer's id (None when not idempotent or not started)."""
        return self._identity.producer_id if self._identity is not None else None

    # -- sending -------------------------------------------------------------------------------
    async def partitions_for(self, topic: str) -> tuple[int, ...]:
        cluster, _ = await self._ready()
        return await cluster.partitions_for(topic)

    async def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: HeadersIn | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Queue one record; returns a future of its RecordMetadata.

        Waits only for room in the buffer (BufferFullError after max_block_ms) and, the first
        time a topic is used, for its metadata. partition None: the partitioner chooses (by key
        hash; without a key, sticky: batch_size bytes to a partition, then the next). The future fails with the record's error:
        DeliveryTimeoutError, MessageTooLargeError, UnknownTopicOrPartitionError, ...
        """
        cluster, acc = await self._ready()
        if self.key_serializer is not None:
            key = self.key_serializer(key)
        if self.value_serializer is not None:
            value = self.value_serializer(value)
        record = Record(
            value=_as_bytes(value, "value"),
            key=_as_bytes(key, "key"),
            headers=_headers(headers),
            timestamp_ms=timestamp_ms if timestamp_ms is not None else _now_ms(),
        )
        size = estimate_size(record)
        if size + BATCH_OVERHEAD > self.max_request_size:
            raise MessageTooLargeError(
                None,
                f"a record of about {size} bytes is larger than max_request_size="
                f"{self.max_request_size}",
            )
        # Known topic, room in the buffer (the usual case): no coroutine to run for either.
        tm = cluster.metadata.topic(topic)
        if tm is not None and (partition is None or partition in tm.partition_ids):
            tp = self._pick(cluster, tm, topic, partition, record.key)
        else:
            tp = await self._choose(cluster, topic, partition, record.key)
        sender = self._partition_sender(tp)
        if not acc.try_reserve(size):
            await acc.reserve(size, self.max_block_ms / 1000)
        fut, wake = acc.append(tp, record, size)
        if partition is None and record.key is None and self._sticky is not None:
            self._sticky.appended(topic, tp.partition, size)
        if wake:
            sender.look_again()
        sender.fail_queued_if_dead()
        return fut

    async def send_and_wait(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: HeadersIn | None = None,
    ) -> RecordMetadata:
        """Send one record and wait until it is as durable as `acks` asks."""
        fut = await self.send(topic, value, key, partition, timestamp_ms, headers)
        return await fut

    def create_batch(self) -> BatchBuilder:
        """An empty batch to fill with append() and send with send_batch(batch, topic,
        partition=) (aiokafka's); its records go through the serializers as they are added."""
        return BatchBuilder(self.batch_size, self.key_serializer, self.value_serializer)

    @overload
    async def send_batch(
        self, batch: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[RecordMetadata]: ...

    @overload
    async def send_batch(
        self,
        batch: str,
        topic: Iterable[Record | Bytes | None],
        partition: int | None = None,
    ) -> RecordMetadata: ...

    async def send_batch(
        self,
        batch: BatchBuilder | str,
        topic: str | Iterable[Record | Bytes | None],
        partition: int | None = None,
    ) -> asyncio.Future[RecordMetadata] | RecordMetadata:
        """Send records to one partition as one batch, all or nothing. Two forms:

          - aiokafka's: send_batch(batch, topic, partition=) with a BatchBuilder from
            create_batch(); returns a future of the first record's RecordMetadata.
          - liferaft's: send_batch(topic, records, partition=None) waits for the batch and
            returns the first record's metadata. Items are `Record`s (value, key, headers,
            timestamp) or bare values. partition None: the partitioner chooses from the
            records' keys, which must then all map to one partition.

        Offsets are consecutive: the i-th record is at offset + i. The batch keeps its place in
        the partition's order."""
        if isinstance(batch, BatchBuilder):
            if not isinstance(topic, str) or partition is None:
                raise TypeError(
                    "send_batch(batch, topic, partition=...) needs a topic and partition"
                )
            batch.close()
            return await self._queue_batch(topic, batch.records(), partition)
        if isinstance(topic, str):
            raise TypeError("send_batch(topic, records): records must be an iterable of records")
        return await (await self._queue_batch(batch, self._normalize(topic), partition))

    async def _queue_batch(
        self, topic: str, batch_records: list[Record] | ValueRecords, partition: int | None
    ) -> asyncio.Future[RecordMetadata]:
        if not batch_records:
            raise ValueError("send_batch needs at least one record")
        cluster, acc = await self._ready()
        keyless = False
        if partition is None:
            if isinstance(batch_records, ValueRecords):
                keys: list[bytes | None] = [None]
            else:
                keys = list(dict.fromkeys(r.key for r in batch_records))
            chosen = {(await self._choose(cluster, topic, None, k)).partition for k in keys}
            if len(chosen) != 1:
                raise ValueError(
                    f"the records' keys map to partitions {sorted(chosen)} of {topic!r}; a batch "
                    "goes to one partition: pass partition=, or send one batch per key"
                )
            partition = chosen.pop()
            keyless = keys == [None]
        tp = await self._choose(cluster, topic, partition, None)
        size = estimate_records_size(batch_records) + BATCH_OVERHEAD
        if size > self.max_request_size:
            raise MessageTooLargeError(
                None,
                f"a batch of about {size} bytes is larger than max_request_size="
                f"{self.max_request_size}",
            )
        sender = self._partition_sender(tp)
        await acc.reserve(size, self.max_block_ms / 1000)
        whole = acc.append_whole(tp, batch_records, size)
        if keyless and self._sticky is not None:
            self._sticky.appended(topic, tp.partition, size)
        sender.wake()
        sender.fail_queued_if_dead()
        return whole

    def _queued_batches(self, topic: str, partition: int) -> int:
        """Batches of `partition` waiting in the accumulator (the default partitioner's load)."""
        q = self._acc.queues.get(TopicPartition(topic, partition)) if self._acc else None
        return len(q) if q else 0

    def _partition_sender(self, tp: TopicPartition) -> PartitionSender:
        """tp's sender (started on first use). Raises what killed it, if it died: its sequence
        state died with it, so records for tp cannot be sent exactly once any more."""
        s = self._senders.get(tp)
        if s is not None and s.failure is not None:
            raise UnknownServerError(
                None, f"the producer's sender for {tp} failed earlier: {s.failure!r}"
            )
        if s is None:
            assert self._sender is not None and self._acc is not None
            s = self._senders[tp] = PartitionSender(
                tp,
                self._sender,
                self._acc,
                max_in_flight=self.max_in_flight,
                compression=self.compression,
                identity=self._identity,
                fresh_identity=self._fresh_identity,
            )
            s.start()
        return s

    async def _fresh_identity(self) -> ProducerIdentity:
        """A new producer id, for a partition whose epoch cannot go on (client/sequences.py)."""
        assert self._cluster is not None
        resp = await self._cluster.call_any(
            "InitProducerId",
            broker_pb2.InitProducerIdRequest(),
            timeout_ms=self.config.request_timeout_ms,
        )
        return ProducerIdentity(resp.producer_id, resp.producer_epoch)

    @staticmethod
    def _normalize(records: Iterable[Record | Bytes | None]) -> list[Record] | ValueRecords:
        """send_batch's items as records stamped now; plain bytes values stay as they are
        (ValueRecords: no object per record, build_batch encodes them straight)."""
        now = _now_ms()
        items = list(records)  # ours: the caller may reuse its list
        if items and all(type(item) is bytes for item in items):
            return ValueRecords(items, now)  # type: ignore[arg-type]  # all bytes
        out: list[Record] = []
        append = out.append
        for item in items:
            if isinstance(item, Record):
                if item.timestamp_ms is None:
                    item = Record(item.value, item.key, item.headers, now)
                append(item)
            else:
                append(Record(_as_bytes(item, "value"), None, (), now))
        return out

    async def _choose(
        self, cluster: Cluster, topic: str, partition: int | None, key: bytes | None
    ) -> TopicPartition:
        tm = cluster.metadata.topic(topic)
        if tm is None:
            tm = await asyncio.wait_for(cluster.topic_metadata(topic), self.max_block_ms / 1000)
        partitions = tm.partition_ids
        if partition is not None:
            if partition < 0:
                raise ValueError(f"partition must be >= 0, got {partition}")
            if partition not in partitions:
                tm = await asyncio.wait_for(cluster.topic_metadata(topic), self.max_block_ms / 1000)
                if partition not in tm.partition_ids:
                    raise UnknownTopicOrPartitionError(
                        None,
                        f"topic {topic!r} has partitions 0..{len(tm.partition_ids) - 1}, "
                        f"not {partition}",
                    )
            return TopicPartition(topic, partition)
        return self._pick(cluster, tm, topic, None, key)

    def _pick(
        self,
        cluster: Cluster,
        tm: TopicMetadata,
        topic: str,
        partition: int | None,
        key: bytes | None,
    ) -> TopicPartition:
        """The partition, once the topic's metadata is known (and `partition`, if given, is
        one of its partitions)."""
        if partition is not None:
            return TopicPartition(topic, partition)
        partitions = tm.partition_ids
        available = cluster.metadata.available_partitions_for(topic)
        p = self.partitioner(topic, key, partitions, available)
        if p not in partitions:
            raise ValueError(f"partitioner chose partition {p!r}, not one of {list(partitions)}")
        return TopicPartition(topic, p)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._cluster else "new"
        idem = f" producer_id={self.producer_id}" if self._identity else ""
        return f"<Producer {','.join(self.config.bootstrap)} acks={self.acks}{idem} {state}>"
