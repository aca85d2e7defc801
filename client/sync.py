"""A blocking facade for scripts: the async clients, run on a background event-loop thread.

    with SyncProducer("127.0.0.1:9092") as producer:
        producer.send_and_wait("orders", b"42 apples")

    with SyncConsumer("127.0.0.1:9092", auto_offset_reset="earliest") as consumer:
        consumer.assign([("orders", 0)])
        for record in consumer:
            print(record.value)

Each facade owns one daemon thread running one asyncio loop, on which its async client lives
(grpc.aio channels belong to the loop that made them). A call submits a coroutine to that loop
and blocks for its result; the async client's errors are raised unchanged in the calling
thread. If the caller is interrupted (Ctrl-C) while waiting, the coroutine is cancelled. A
facade may be used from several threads; calls run one after another on its loop.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import threading
import weakref
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from client.admin import (
    Acl,
    AclFilter,
    AdminClient,
    ClusterDescription,
    ConfigValue,
    CreatedTopic,
    GroupDescription,
    GroupOverview,
    NewTopic,
    PartitionMove,
    RecordsToDelete,
    ReplicaDescription,
    TopicDescription,
)
from client.consumer import Consumer
from client.errors import LiferaftError
from client.group import ConsumerRebalanceListener, OffsetAndMetadata
from client.offsets import OffsetSpec
from client.producer import Bytes, HeadersIn, Producer
from client.types import ConsumerRecord, Lag, OffsetAndTimestamp, RecordMetadata, TopicPartition
from liferaft_proto.records import Record

__all__ = ["SyncAdminClient", "SyncConsumer", "SyncProducer"]

T = TypeVar("T")
TP = TopicPartition | tuple[str, int]


class _LoopThread:
    """An event loop running forever on a daemon thread, until stop()."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # Stopped: finish what is left (a client's close already did the real work).
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync client was called from its own event loop thread")
        if self.loop.is_closed() or not self._thread.is_alive():
            coro.close()
            raise RuntimeError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        if self._thread.is_alive() and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)


class _SyncFacade(abc.ABC):
    _name = "liferaft-client"

    def __init__(self) -> None:
        self._runner = _LoopThread(self._name)
        self._finalizer = weakref.finalize(self, self._runner.stop)
        self._closed = False

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    @abc.abstractmethod
    async def _aclose(self) -> None:
        """Close the wrapped asyncio client (each facade closes its own)."""

    def close(self) -> None:
        """Close the client and stop its thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._aclose())
        finally:
            self._finalizer()


class SyncProducer(_SyncFacade):
    """Blocking Producer; takes the same arguments (see client.producer.Producer)."""

    _name = "liferaft-producer"

    def __init__(self, bootstrap: str | Iterable[str] | None = None, **settings: Any) -> None:
        self._producer = Producer(bootstrap, **settings)  # checks settings before a thread starts
        super().__init__()

    async def _aclose(self) -> None:
        await self._producer.close()

    def start(self) -> None:
        self._run(self._producer.start())

    def __enter__(self) -> SyncProducer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_and_wait(
        self,
        topic: str,
        value: Bytes | None = None,
        key: Bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: HeadersIn | None = None,
    ) -> RecordMetadata:
        return self._run(
            self._producer.send_and_wait(
                topic, value, key, partition, timestamp_ms=timestamp_ms, headers=headers
            )
        )

    def send(
        self,
        topic: str,
        value: Bytes | None = None,
        key: Bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: HeadersIn | None = None,
    ) -> concurrent.futures.Future[RecordMetadata]:
        """Queue a record (blocking only while the buffer is full); returns a
        concurrent.futures.Future of its metadata. Call flush() to wait for everything."""
        fut = self._run(
            self._producer.send(
                topic, value, key, partition, timestamp_ms=timestamp_ms, headers=headers
            )
        )
        out: concurrent.futures.Future[RecordMetadata] = concurrent.futures.Future()

        def copy(f: asyncio.Future[RecordMetadata]) -> None:
            if f.cancelled():
                out.cancel()
            elif f.exception() is not None:
                out.set_exception(f.exception())
            else:
                out.set_result(f.result())

        self._runner.loop.call_soon_threadsafe(fut.add_done_callback, copy)
        return out

    def flush(self, timeout_ms: int | None = None) -> None:
        self._run(self._producer.flush(timeout_ms))

    def send_batch(
        self, topic: str, records: Iterable[Record | Bytes | None], partition: int | None = None
    ) -> RecordMetadata:
        return self._run(self._producer.send_batch(topic, list(records), partition))

    def partitions_for(self, topic: str) -> tuple[int, ...]:
        return self._run(self._producer.partitions_for(topic))


class SyncConsumer(_SyncFacade):
    """Blocking Consumer; takes the same arguments (see client.consumer.Consumer)."""

    _name = "liferaft-consumer"

    def __init__(self, bootstrap: str | Iterable[str] | None = None, **settings: Any) -> None:
        self._consumer = Consumer(bootstrap, **settings)
        super().__init__()

    async def _aclose(self) -> None:
        await self._consumer.close()

    def start(self) -> None:
        self._run(self._consumer.start())

    def __enter__(self) -> SyncConsumer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def partitions_for(self, topic: str) -> tuple[int, ...]:
        return self._run(self._consumer.partitions_for(topic))

    # The consumer's state belongs to its loop: even the non-async methods run there.
    def assign(self, partitions: Iterable[TP]) -> None:
        wanted = list(partitions)

        async def assign() -> None:
            self._consumer.assign(wanted)

        self._run(assign())

    def assignment(self) -> set[TopicPartition]:
        async def assignment() -> set[TopicPartition]:
            return self._consumer.assignment()

        return self._run(assignment())

    def seek(self, tp: TP, offset: int) -> None:
        async def seek() -> None:
            self._consumer.seek(tp, offset)

        self._run(seek())

    def seek_to_beginning(self, *partitions: TP) -> None:
        self._run(self._consumer.seek_to_beginning(*partitions))

    def seek_to_end(self, *partitions: TP) -> None:
        self._run(self._consumer.seek_to_end(*partitions))

    def position(self, tp: TP) -> int:
        return self._run(self._consumer.position(tp))

    def highwater(self, tp: TP) -> int | None:
        async def highwater() -> int | None:
            return self._consumer.highwater(tp)

        return self._run(highwater())

    def getmany(
        self, *partitions: TP, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        return self._run(
            self._consumer.getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
        )

    poll = getmany

    def subscribe(
        self,
        topics: Iterable[str] = (),
        pattern: str | None = None,
        listener: ConsumerRebalanceListener | None = None,
    ) -> None:
        names = list(topics)

        async def subscribe() -> None:
            self._consumer.subscribe(names, pattern=pattern, listener=listener)

        self._run(subscribe())

    def unsubscribe(self) -> None:
        async def unsubscribe() -> None:
            self._consumer.unsubscribe()

        self._run(unsubscribe())

    def subscription(self) -> set[str]:
        async def subscription() -> set[str]:
            return self._consumer.subscription()

        return self._run(subscription())

    def paused(self) -> set[TopicPartition]:
        async def paused() -> set[TopicPartition]:
            return self._consumer.paused()

        return self._run(paused())

    def topics(self) -> set[str]:
        return self._run(self._consumer.topics())

    def seek_to_committed(self, *partitions: TP) -> dict[TopicPartition, int | None]:
        return self._run(self._consumer.seek_to_committed(*partitions))

    def beginning_offsets(self, partitions: Iterable[TP]) -> dict[TopicPartition, int]:
        return self._run(self._consumer.beginning_offsets(list(partitions)))

    def end_offsets(self, partitions: Iterable[TP]) -> dict[TopicPartition, int]:
        return self._run(self._consumer.end_offsets(list(partitions)))

    def offsets_for_times(
        self, timestamps: Mapping[TP, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        return self._run(self._consumer.offsets_for_times(dict(timestamps)))

    def commit(
        self, offsets: Mapping[TP, int | OffsetAndMetadata | tuple[int, str]] | None = None
    ) -> None:
        self._run(self._consumer.commit(dict(offsets) if offsets is not None else None))

    def committed(self, tp: TP) -> int | None:
        return self._run(self._consumer.committed(tp))

    def pause(self, *partitions: TP) -> None:
        async def pause() -> None:
            self._consumer.pause(*partitions)

        self._run(pause())

    def resume(self, *partitions: TP) -> None:
        async def resume() -> None:
            self._consumer.resume(*partitions)

        self._run(resume())

    def lag(self, tp: TP, *, committed: bool = False) -> Lag:
        return self._run(self._consumer.lag(tp, committed=committed))

    def wait_for_assignment(self, timeout_ms: int = 30_000) -> set[TopicPartition]:
        return self._run(self._consumer.wait_for_assignment(timeout_ms))

    def getone(self, *partitions: TP) -> ConsumerRecord:
        return self._run(self._consumer.getone(*partitions))

    def __iter__(self) -> Iterator[ConsumerRecord]:
        """Every record, as it arrives, until the consumer is closed (or Ctrl-C)."""
        while not self._closed:
            got = self.getmany(timeout_ms=self._consumer.fetch_max_wait_ms)
            for tp_records in got.values():
                yield from tp_records


class SyncAdminClient(_SyncFacade):
    """Blocking AdminClient; takes the same arguments (see client.admin.AdminClient)."""

    _name = "liferaft-admin"

    def __init__(self, bootstrap: str | Iterable[str] | None = None, **settings: Any) -> None:
        self._admin = AdminClient(bootstrap, **settings)
        super().__init__()

    async def _aclose(self) -> None:
        await self._admin.close()

    def start(self) -> None:
        self._run(self._admin.start())

    def __enter__(self) -> SyncAdminClient:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_topic(
        self,
        name: str,
        partitions: int = 0,
        replication_factor: int = 0,
        configs: Mapping[str, str] | None = None,
        *,
        validate_only: bool = False,
        timeout_ms: int | None = None,
    ) -> CreatedTopic:
        return self._run(
            self._admin.create_topic(
                name,
                partitions,
                replication_factor,
                configs,
                validate_only=validate_only,
                timeout_ms=timeout_ms,
            )
        )

    def create_topics(
        self,
        topics: Iterable[NewTopic],
        *,
        validate_only: bool = False,
        timeout_ms: int | None = None,
        raise_on_error: bool = True,
    ) -> dict[str, CreatedTopic]:
        return self._run(
            self._admin.create_topics(
                list(topics),
                validate_only=validate_only,
                timeout_ms=timeout_ms,
                raise_on_error=raise_on_error,
            )
        )

    def delete_topic(self, name: str, *, timeout_ms: int | None = None) -> None:
        self._run(self._admin.delete_topic(name, timeout_ms=timeout_ms))

    def delete_topics(
        self, names: Iterable[str], *, timeout_ms: int | None = None, raise_on_error: bool = True
    ) -> dict[str, LiferaftError | None]:
        return self._run(
            self._admin.delete_topics(
                list(names), timeout_ms=timeout_ms, raise_on_error=raise_on_error
            )
        )

    def describe_topics(
        self,
        names: Iterable[str] | None = None,
        *,
        from_leaders: bool = True,
        raise_on_error: bool = True,
    ) -> dict[str, TopicDescription]:
        return self._run(
            self._admin.describe_topics(
                list(names) if names is not None else None,
                from_leaders=from_leaders,
                raise_on_error=raise_on_error,
            )
        )

    def create_partitions(
        self,
        topic: str,
        total: int,
        *,
        validate_only: bool = False,
        timeout_ms: int | None = None,
    ) -> int:
        return self._run(
            self._admin.create_partitions(
                topic, total, validate_only=validate_only, timeout_ms=timeout_ms
            )
        )

    def alter_topic_config(
        self,
        topic: str,
        set_: Mapping[str, str] | None = None,
        delete: Iterable[str] = (),
        *,
        validate_only: bool = False,
        timeout_ms: int | None = None,
    ) -> dict[str, ConfigValue]:
        return self._run(
            self._admin.alter_topic_config(
                topic, set_, delete, validate_only=validate_only, timeout_ms=timeout_ms
            )
        )

    def list_topics(self, *, internal: bool = False) -> list[str]:
        return self._run(self._admin.list_topics(internal=internal))

    def describe_cluster(self, *, probe_timeout_ms: int = 3_000) -> ClusterDescription:
        return self._run(self._admin.describe_cluster(probe_timeout_ms=probe_timeout_ms))

    def describe_replicas(
        self, topic: str, partition: int, offset: int, *, timeout_ms: int = 3_000
    ) -> dict[int, ReplicaDescription | LiferaftError]:
        return self._run(
            self._admin.describe_replicas(topic, partition, offset, timeout_ms=timeout_ms)
        )

    def committed_by_groups(self, tp: TP) -> dict[str, int]:
        return self._run(self._admin.committed_by_groups(tp))

    def list_groups(self) -> list[GroupOverview]:
        return self._run(self._admin.list_groups())

    def describe_group(self, group_id: str, *, lag: bool = True) -> GroupDescription:
        return self._run(self._admin.describe_group(group_id, lag=lag))

    def delete_groups(
        self, group_ids: Iterable[str], *, raise_on_error: bool = True
    ) -> dict[str, LiferaftError | None]:
        return self._run(self._admin.delete_groups(list(group_ids), raise_on_error=raise_on_error))

    def create_acls(self, acls: Iterable[Acl]) -> int:
        return self._run(self._admin.create_acls(list(acls)))

    def describe_acls(self, acl_filter: AclFilter | None = None) -> list[Acl]:
        return self._run(self._admin.describe_acls(acl_filter))

    def delete_acls(self, filters: Iterable[AclFilter]) -> list[list[Acl]]:
        return self._run(self._admin.delete_acls(list(filters)))

    def upsert_user(
        self, name: str, password: str, *, mechanism: str = "SCRAM-SHA-512", iterations: int = 4096
    ) -> None:
        self._run(
            self._admin.upsert_user(name, password, mechanism=mechanism, iterations=iterations)
        )

    def delete_user(self, name: str, *, mechanism: str | None = None) -> None:
        self._run(self._admin.delete_user(name, mechanism=mechanism))

    def describe_users(self, names: Iterable[str] = ()) -> dict[str, list[str]]:
        return self._run(self._admin.describe_users(list(names)))

    def plan_offset_reset(
        self, group_id: str, topic: str, spec: Any, offset: int = -1
    ) -> dict[TopicPartition, tuple[int | None, int]]:
        return self._run(self._admin.plan_offset_reset(group_id, topic, spec, offset))

    def reset_offsets(self, group_id: str, offsets: Mapping[TP, int]) -> None:
        self._run(self._admin.reset_offsets(group_id, dict(offsets)))

    metadata = describe_cluster

    def list_offsets(
        self, specs: Mapping[TopicPartition | tuple[str, int], OffsetSpec]
    ) -> dict[TopicPartition, OffsetAndTimestamp]:
        return self._run(self._admin.list_offsets(dict(specs)))

    # -- replica moves (issue 19) ---------------------------------------------------------------
    def move_partitions(
        self,
        moves: Iterable[tuple[str, int, Iterable[int]]],
        *,
        throttle_bytes_s: int = 0,
        validate_only: bool = False,
    ) -> list[PartitionMove]:
        return self._run(
            self._admin.move_partitions(
                [(t, p, list(r)) for t, p, r in moves],
                throttle_bytes_s=throttle_bytes_s,
                validate_only=validate_only,
            )
        )

    def list_partition_moves(self) -> tuple[list[PartitionMove], dict[int, int]]:
        return self._run(self._admin.list_partition_moves())

    def cancel_partition_moves(
        self, partitions: Iterable[tuple[str, int]], *, validate_only: bool = False
    ) -> list[PartitionMove]:
        return self._run(
            self._admin.cancel_partition_moves(list(partitions), validate_only=validate_only)
        )

    def decommission_node(
        self,
        node_id: int,
        *,
        throttle_bytes_s: int = 0,
        validate_only: bool = False,
        cancel: bool = False,
    ) -> list[PartitionMove]:
        return self._run(
            self._admin.decommission_node(
                node_id,
                throttle_bytes_s=throttle_bytes_s,
                validate_only=validate_only,
                cancel=cancel,
            )
        )

    def rebalance(self, *, execute: bool = False, throttle_bytes_s: int = 0) -> list[PartitionMove]:
        return self._run(self._admin.rebalance(execute=execute, throttle_bytes_s=throttle_bytes_s))

    def delete_records(
        self,
        records_to_delete: Mapping[TopicPartition | tuple[str, int], int | RecordsToDelete],
        timeout_ms: int | None = None,
    ) -> dict[TopicPartition, int]:
        return self._run(self._admin.delete_records(dict(records_to_delete), timeout_ms))
