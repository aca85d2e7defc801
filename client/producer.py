"""The producer: records in, one record batch per call to the partition leader, offsets out.

    async with Producer("127.0.0.1:9092", acks="all") as producer:
        meta = await producer.send_and_wait("orders", b"42 apples", key=b"customer-7")
        print(meta.partition, meta.offset)

For now every call sends one batch and waits for it (send_and_wait: a batch of one record;
send_batch: many records, one partition). Concurrent calls are independent requests, so their
order within a partition is not guaranteed; await each call when order matters. Batching by size
and linger time, idempotence and compression come next, between this module's record handling
and the sender (client/sender.py), without changing these signatures.

Values, keys and header values are bytes; a str is encoded as UTF-8 for convenience.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

from client.cluster import ClientConfig, Cluster
from client.partitioner import DefaultPartitioner, Partitioner
from client.sender import Sender, parse_acks
from client.types import Header, RecordMetadata
from liferaft_proto.records import Record, build_batch

__all__ = ["Producer", "Record"]

Bytes = bytes | bytearray | memoryview | str
HeadersIn = Mapping[str, Bytes | None] | Iterable[tuple[str, Bytes | None]]


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


def _now_ms() -> int:
    return int(time.time() * 1000)


class Producer:
    """Sends records to a liferaft cluster. Use `async with`, or start() and close()."""

    def __init__(
        self,
        bootstrap: str | Iterable[str],
        *,
        acks: str | int = "all",
        delivery_timeout_ms: int = 120_000,
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: int = 100,
        retry_backoff_max_ms: int = 1_000,
        metadata_max_age_ms: int = 300_000,
        partitioner: Partitioner | None = None,
    ) -> None:
        self.acks = parse_acks(acks)
        self.config = ClientConfig.build(
            bootstrap,
            request_timeout_ms=request_timeout_ms,
            delivery_timeout_ms=delivery_timeout_ms,
            retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms,
            metadata_max_age_ms=metadata_max_age_ms,
        )
        self.partitioner: Partitioner = partitioner or DefaultPartitioner()
        self._cluster: Cluster | None = None
        self._sender: Sender | None = None
        self._closed = False

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect: fetch metadata from a bootstrap node (raises BrokerUnavailableError if no
        bootstrap node answers)."""
        if self._closed:
            raise RuntimeError("the producer is closed")
        if self._cluster is None:
            cluster = Cluster(self.config)
            try:
                await cluster.start()
            except BaseException:
                await cluster.close()
                raise
            self._cluster = cluster
            self._sender = Sender(
                cluster, acks=self.acks, delivery_timeout_ms=self.config.delivery_timeout_ms
            )

    async def close(self) -> None:
        self._closed = True
        if self._cluster is not None:
            await self._cluster.close()

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _ready(self) -> tuple[Cluster, Sender]:
        if self._cluster is None or self._sender is None:
            await self.start()
        assert self._cluster is not None and self._sender is not None
        if self._closed:
            raise RuntimeError("the producer is closed")
        return self._cluster, self._sender

    # -- sending -------------------------------------------------------------------------------
    async def partitions_for(self, topic: str) -> tuple[int, ...]:
        cluster, _ = await self._ready()
        return await cluster.partitions_for(topic)

    async def send_and_wait(
        self,
        topic: str,
        value: Bytes | None,
        key: Bytes | None = None,
        partition: int | None = None,
        headers: HeadersIn | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Send one record and wait until it is as durable as `acks` asks.

        partition None: the partitioner chooses (by key hash, or round-robin without a key).
        Raises a LiferaftError subclass: at once when the request cannot succeed
        (UnknownTopicOrPartitionError, MessageTooLargeError, ...), or DeliveryTimeoutError when
        retriable failures outlast delivery_timeout_ms.
        """
        record = Record(
            value=_as_bytes(value, "value"),
            key=_as_bytes(key, "key"),
            headers=_headers(headers),
            timestamp_ms=timestamp_ms if timestamp_ms is not None else _now_ms(),
        )
        return await self.send_batch(topic, [record], partition=partition)

    async def send_batch(
        self,
        topic: str,
        records: Iterable[Record | Bytes | None],
        partition: int | None = None,
    ) -> RecordMetadata:
        """Send records to one partition as one batch, all or nothing; returns the first
        record's metadata (offsets are consecutive: the i-th record is at offset + i).

        Items are `Record`s (liferaft_proto.records.Record: value, key, headers, timestamp) or
        bare values. partition None: the partitioner chooses from the records' keys, which must
        then all map to one partition.
        """
        cluster, sender = await self._ready()
        batch_records = self._normalize(records)
        if partition is None:
            partition = await self._choose_partition(cluster, topic, batch_records)
        elif partition < 0:
            raise ValueError(f"partition must be >= 0, got {partition}")
        first_ts = batch_records[0].timestamp_ms
        assert first_ts is not None
        batch = build_batch(batch_records)
        result = await sender.send(topic, partition, batch)
        return RecordMetadata(
            topic=topic,
            partition=partition,
            offset=result.base_offset,
            timestamp_ms=result.log_append_time_ms if result.log_append_time_ms >= 0 else first_ts,
            log_start_offset=result.log_start_offset,
            record_count=len(batch_records),
        )

    @staticmethod
    def _normalize(records: Iterable[Record | Bytes | None]) -> list[Record]:
        now = _now_ms()
        out: list[Record] = []
        for item in records:
            if isinstance(item, Record):
                if item.timestamp_ms is None:
                    item = Record(item.value, item.key, item.headers, now)
                out.append(item)
            else:
                out.append(Record(value=_as_bytes(item, "value"), timestamp_ms=now))
        if not out:
            raise ValueError("send_batch needs at least one record")
        return out

    async def _choose_partition(
        self, cluster: Cluster, topic: str, records: Sequence[Record]
    ) -> int:
        tm = await cluster.topic_metadata(topic)
        partitions = tm.partition_ids
        available = cluster.metadata.available_partitions_for(topic)
        keys = list(dict.fromkeys(r.key for r in records))
        chosen = {self._partition(topic, key, partitions, available) for key in keys}
        if len(chosen) != 1:
            raise ValueError(
                f"the records' keys map to partitions {sorted(chosen)} of {topic!r}; a batch goes "
                "to one partition: pass partition=, or send one batch per key"
            )
        return chosen.pop()

    def _partition(
        self, topic: str, key: bytes | None, partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        p = self.partitioner(topic, key, partitions, available)
        if p not in partitions:
            raise ValueError(f"partitioner chose partition {p!r}, not one of {list(partitions)}")
        return p

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._cluster else "new"
        return f"<Producer {','.join(self.config.bootstrap)} acks={self.acks} {state}>"
