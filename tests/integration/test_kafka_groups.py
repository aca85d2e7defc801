"""Kafka's classic consumer groups against a real three-node liferaft cluster (issue 15).

A group of two members (confluent-kafka with the range and the cooperative-sticky assignors,
kafka-python, aiokafka) splits a topic's partitions, rebalances to the survivor when one leaves,
and a new member resumes from the committed offsets: every record is read, none twice after a
commit. Groups are listed, described and deleted with Kafka's admin clients, and a group id is
either classic or liferaft's own, never both at once. One cluster serves the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from client import Consumer
from liferaft.launcher import DevCluster
from liferaft_proto import status as wire_status
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc, errors_pb2
from tests.integration.closing import KafkaClients
from tests.integration.test_kafka_clients import create_with_kafka_python, kafka_bootstrap

RECORDS = 60


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def produce(cluster: DevCluster, topic: str, start: int, count: int) -> None:
    import confluent_kafka as ck

    with KafkaClients() as clients:
        producer = clients(
            ck.Producer({"bootstrap.servers": kafka_bootstrap(cluster), "acks": "all"})
        )
        for i in range(start, start + count):
            producer.produce(topic, key=b"k%d" % i, value=b"%d" % i)
        assert producer.flush(30) == 0


def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"


# -- librdkafka ----------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_confluent_group_rebalances_and_resumes_from_commits(
    cluster: DevCluster, strategy: str, kafka_clients: KafkaClients
) -> None:
    import confluent_kafka as ck

    topic, group = unique("cg"), unique("grp")
    create_with_kafka_python(cluster, topic)
    produce(cluster, topic, 0, RECORDS)

    def member() -> ck.Consumer:
        c = kafka_clients(
            ck.Consumer(
                {
                    "bootstrap.servers": kafka_bootstrap(cluster),
                    "group.id": group,
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                    "session.timeout.ms": 6000,
                    "heartbeat.interval.ms": 300,
                    "partition.assignment.strategy": strategy,
                }
            )
        )
        c.subscribe([topic])
        return c

    read: list[bytes] = []
    uncommitted: dict[ck.Consumer, dict[int, int]] = {}
    # A commit sent while the group rebalances may be refused (ILLEGAL_GENERATION: the member's
    # generation just ended; REBALANCE_IN_PROGRESS), as Kafka refuses it: an application commits
    # its offsets again once it has rejoined, as this does on the next poll.
    rejoining = {ck.KafkaError.ILLEGAL_GENERATION, ck.KafkaError.REBALANCE_IN_PROGRESS}

    def poll(c: ck.Consumer) -> None:
        m = c.poll(0.1)
        todo = uncommitted.setdefault(c, {})
        if m is not None and m.error() is None:
            read.append(m.value())
            todo[m.partition()] = m.offset() + 1
        if not todo:
            return
        try:
            c.commit(
                offsets=[ck.TopicPartition(topic, p, o) for p, o in todo.items()],
                asynchronous=False,
            )
        except ck.KafkaException as e:
            if e.args[0].code() not in rejoining:
                raise
        else:
            todo.clear()

    _rebalance_and_resume(cluster, topic, member, poll, read)


def _rebalance_and_resume(
    cluster: DevCluster,
    topic: str,
    member: Callable[[], Any],
    poll: Callable[[Any], None],
    read: list[bytes],
) -> None:
    a, b = member(), member()

    def split() -> bool:
        poll(a)
        poll(b)
        pa = {tp.partition for tp in a.assignment()}
        pb = {tp.partition for tp in b.assignment()}
        return len(read) >= RECORDS // 2 and bool(pa) and bool(pb) and pa | pb == {0, 1, 2}

    until(split, 40, "both members to hold partitions")
    pa = {tp.partition for tp in a.assignment()}
    pb = {tp.partition for tp in b.assignment()}
    assert not pa & pb, (pa, pb)
    b.close()  # LeaveGroup: a takes over at once
    until(lambda: poll(a) or len(a.assignment()) == 3, 30, "the survivor to hold all three")
    until(lambda: poll(a) or len(set(read)) == RECORDS, 30, "every record to be read")
    a.close()
    assert sorted(set(read), key=int) == [b"%d" % i for i in range(RECORDS)]
    # Everything read was committed: a new member reads only what comes next.
    produce(cluster, topic, RECORDS, 9)
    c = member()
    read.clear()
    until(lambda: poll(c) or len(read) >= 9, 40, "the new member to read the new records")
    time.sleep(0.5)
    poll(c)
    c.close()
    assert sorted(read, key=int) == [b"%d" % i for i in range(RECORDS, RECORDS + 9)]


# -- kafka-python --------------------------------------------------------------------------------
def test_kafka_python_group_rebalances_and_resumes_from_commits(
    cluster: DevCluster, kafka_clients: KafkaClients
) -> None:
    from kafka import KafkaConsumer
    from kafka.errors import CommitFailedError, RebalanceInProgressError

    topic, group = unique("kpg"), unique("grp")
    create_with_kafka_python(cluster, topic)
    produce(cluster, topic, 0, RECORDS)

    def member() -> KafkaConsumer:
        return kafka_clients(
            KafkaConsumer(
                topic,
                bootstrap_servers=kafka_bootstrap(cluster),
                group_id=group,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                session_timeout_ms=6000,
                heartbeat_interval_ms=300,
            )
        )

    read: list[bytes] = []

    def poll(c: KafkaConsumer) -> None:
        got = c.poll(timeout_ms=100)
        for msgs in got.values():
            read.extend(m.value for m in msgs)
        if got:
            # A rebalance may be under way: the records come again to whoever holds them next
            # (at least once), as with Kafka.
            with contextlib.suppress(CommitFailedError, RebalanceInProgressError):
                c.commit()

    a, b = member(), member()
    until(
        lambda: poll(a) or poll(b) or (bool(a.assignment()) and bool(b.assignment())),
        40,
        "both members to hold partitions",
    )
    assert not {tp.partition for tp in a.assignment()} & {tp.partition for tp in b.assignment()}
    b.close()
    until(lambda: poll(a) or len(a.assignment()) == 3, 30, "the survivor to hold all three")
    until(lambda: poll(a) or len(set(read)) == RECORDS, 30, "every record to be read")
    a.close()
    produce(cluster, topic, RECORDS, 9)
    c = member()
    read.clear()
    until(lambda: poll(c) or len(read) >= 9, 40, "the new member to read the new records")
    c.close()
    assert sorted(read, key=int) == [b"%d" % i for i in range(RECORDS, RECORDS + 9)]


# -- aiokafka ------------------------------------------------------------------------------------
async def test_aiokafka_group_member_commits_and_a_successor_resumes(cluster: DevCluster) -> None:
    from aiokafka import AIOKafkaConsumer

    topic, group = unique("aiog"), unique("grp")
    create_with_kafka_python(cluster, topic)
    await asyncio.to_thread(produce, cluster, topic, 0, RECORDS)

    async def consume(want: int) -> list[bytes]:
        c = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap(cluster),
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await c.start()
        got: list[bytes] = []
        try:
            deadline = time.monotonic() + 40
            while len(got) < want and time.monotonic() < deadline:
                for msgs in (await c.getmany(timeout_ms=200)).values():
                    got.extend(m.value for m in msgs)
                await c.commit()
        finally:
            await c.stop()
        return got

    first = await consume(RECORDS)
    assert sorted(first, key=int) == [b"%d" % i for i in range(RECORDS)]
    await asyncio.to_thread(produce, cluster, topic, RECORDS, 5)
    second = await consume(5)
    assert sorted(second, key=int) == [b"%d" % i for i in range(RECORDS, RECORDS + 5)]


# -- admin and the two kinds of group -------------------------------------------------------------
def test_groups_are_listed_described_and_deleted_by_kafka_admin(
    cluster: DevCluster, kafka_clients: KafkaClients
) -> None:
    import confluent_kafka as ck
    from confluent_kafka.admin import AdminClient

    topic, group = unique("adm"), unique("grp")
    create_with_kafka_python(cluster, topic)
    produce(cluster, topic, 0, 6)
    c = kafka_clients(
        ck.Consumer(
            {
                "bootstrap.servers": kafka_bootstrap(cluster),
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    c.subscribe([topic])
    until(lambda: c.poll(0.1) is not None and bool(c.assignment()), 30, "an assignment")
    c.commit(asynchronous=False)
    admin = kafka_clients(AdminClient({"bootstrap.servers": kafka_bootstrap(cluster)}))
    listed = admin.list_consumer_groups(request_timeout=20).result()
    assert group in {g.group_id for g in listed.valid}
    desc = admin.describe_consumer_groups([group], request_timeout=20)[group].result()
    assert str(desc.state).endswith("STABLE") and len(desc.members) == 1
    assert {tp.partition for tp in desc.members[0].assignment.topic_partitions} == {0, 1, 2}
    busy = admin.delete_consumer_groups([group], request_timeout=20)[group]
    with pytest.raises(ck.KafkaException, match="NON_EMPTY_GROUP"):
        busy.result()
    c.close()
    admin.delete_consumer_groups([group], request_timeout=20)[group].result()
    gone = admin.describe_consumer_groups([group], request_timeout=20)[group].result()
    assert str(gone.state).endswith("DEAD")


async def test_a_group_is_classic_or_liferaft_never_both(cluster: DevCluster) -> None:
    import confluent_kafka as ck

    topic, group = unique("mix"), unique("grp")
    create_with_kafka_python(cluster, topic)
    kafka_member = ck.Consumer(
        {
            "bootstrap.servers": kafka_bootstrap(cluster),
            "group.id": group,
            "enable.auto.commit": False,
        }
    )
    kafka_member.subscribe([topic])
    await asyncio.to_thread(
        until,
        lambda: kafka_member.poll(0.1) is None and bool(kafka_member.assignment()),
        30,
        "the Kafka member's assignment",
    )
    try:
        # A liferaft member asks every node to join; the coordinator refuses it, the others
        # send it there.
        codes = set()
        for node in cluster.nodes.values():
            async with grpc.aio.insecure_channel(node.address) as channel:
                stub = broker_pb2_grpc.BrokerStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GroupHeartbeat(
                        broker_pb2.GroupHeartbeatRequest(
                            group_id=group, topics=[topic], session_timeout_ms=10_000
                        ),
                        timeout=10,
                    )
                detail = wire_status.error_detail(caught.value)
                assert detail is not None
                codes.add(errors_pb2.ErrorCode.Name(detail.code))
                if detail.code == errors_pb2.INCONSISTENT_GROUP_PROTOCOL:
                    assert "Kafka's consumer protocol" in detail.message
        assert codes == {"INCONSISTENT_GROUP_PROTOCOL", "NOT_COORDINATOR"}
    finally:
        await asyncio.to_thread(kafka_member.close)
    # And the other way round: a group with a live liferaft member refuses a Kafka client.
    async with Consumer(cluster.bootstrap, group_id=group) as ours:
        ours.subscribe([topic])
        await ours.wait_for_assignment(20_000)
        late = ck.Consumer(
            {
                "bootstrap.servers": kafka_bootstrap(cluster),
                "group.id": group,
                "enable.auto.commit": False,
            }
        )
        late.subscribe([topic])
        errors: list[str] = []

        def refused() -> bool:
            msg = late.poll(0.2)
            if msg is not None and msg.error() is not None:
                errors.append(msg.error().name())
            return bool(errors)

        try:
            await asyncio.to_thread(until, refused, 30, "the Kafka client to be refused")
        finally:
            await asyncio.to_thread(late.close)
        assert "INCONSISTENT_GROUP_PROTOCOL" in errors


def test_a_commit_with_a_generation_but_no_member_is_refused_as_kafka_refuses_it(
    cluster: DevCluster, kafka_clients: KafkaClients
) -> None:
    """Only a consumer that manages no group membership (member id "", generation -1) may commit
    without being a member. One that names a generation but no member is refused, as Kafka's
    coordinator refuses it: ILLEGAL_GENERATION while the group does not exist (OffsetCommit
    before v9), UNKNOWN_MEMBER_ID once it does; nothing is committed. Such commits used to be
    taken whenever the group had no classic member."""
    import confluent_kafka as ck
    from kio.schema.errors import ErrorCode as KafkaError
    from kio.schema.offset_commit.v8 import request as q
    from kio.schema.offset_commit.v8.response import OffsetCommitResponse

    from tests.integration.test_kafka_failover import kafka_request

    topic, group = unique("fence"), unique("grp")
    create_with_kafka_python(cluster, topic)

    def commit(generation: int, offset: int) -> KafkaError:
        partition = q.OffsetCommitRequestPartition(
            partition_index=0,
            committed_offset=offset,
            committed_leader_epoch=-1,
            committed_metadata=None,
        )
        request = q.OffsetCommitRequest(
            group_id=group,
            generation_id_or_member_epoch=generation,
            member_id="",
            group_instance_id=None,
            topics=(q.OffsetCommitRequestTopic(name=topic, partitions=(partition,)),),
        )
        for node in cluster.nodes.values():  # the coordinator answers; the others send it there
            resp = kafka_request(node.kafka_address, request, OffsetCommitResponse)
            code = resp.topics[0].partitions[0].error_code
            if code != KafkaError.not_coordinator:
                return KafkaError(code)
        raise AssertionError("no node coordinates the group")

    reader = kafka_clients(
        ck.Consumer({"bootstrap.servers": kafka_bootstrap(cluster), "group.id": group})
    )

    def committed() -> int:
        (tp,) = reader.committed([ck.TopicPartition(topic, 0)], timeout=20)
        return int(tp.offset)

    assert commit(3, 5) == KafkaError.illegal_generation
    assert committed() == ck.OFFSET_INVALID
    assert commit(-1, 2) == KafkaError.none  # a standalone consumer's commit
    assert committed() == 2
    assert commit(3, 5) == KafkaError.unknown_member_id
    assert committed() == 2
