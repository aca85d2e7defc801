"""Kafka's AlterPartitionReassignments / ListPartitionReassignments on a real four-node cluster,
with kafka-python's KafkaAdminClient as the Kafka tool (issues 15 and 19).
A move is cancelled with null replicas, as kafka-reassign-partitions --cancel does.

Bad entries get Kafka's error per partition and change nothing (the metadata and the list of
moves are as before); a good one moves the partition, is listed while under way, and the
Kafka Metadata of every node shows the new replicas once it is done. Waits are bounded and
generous (a shared machine); nothing asserts on timing.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from client import AdminClient, Producer
from liferaft.launcher import DevCluster
from tests.integration.test_moves import moves_done
from tests.integration.test_replication import describe, wait_for

pytestmark = pytest.mark.asyncio


async def test_kafka_admin_moves_a_partition_and_bad_input_changes_nothing(
    make_cluster: Callable[..., DevCluster],
) -> None:
    from kafka import TopicPartition as KTP
    from kafka.admin import KafkaAdminClient
    from kafka.errors import (
        InvalidReplicationAssignmentError,
        NoReassignmentInProgressError,
        UnknownTopicOrPartitionError,
    )

    cluster = make_cluster(4)
    async with AdminClient(cluster.bootstrap) as admin:
        await admin.create_topic("kmove", 2, 3)
    before = [list(p.replicas) for p in (await describe(cluster, "kmove")).partitions]
    spare = next(n for n in (1, 2, 3, 4) if n not in before[0])
    kadmin = KafkaAdminClient(bootstrap_servers=cluster.kafka_bootstrap, request_timeout_ms=30_000)
    try:
        # Bad entries, each refused with Kafka's code; nothing starts.
        bad = kadmin.alter_partition_reassignments(
            {
                KTP("no-such-topic", 0): [1, 2, 3],
                KTP("kmove", 7): [1, 2, 3],
                KTP("kmove", 0): [before[0][0], before[0][0], spare],
                KTP("kmove", 1): [1, 2, 99],
            }
        )
        assert bad == {
            KTP("no-such-topic", 0): UnknownTopicOrPartitionError,
            KTP("kmove", 7): UnknownTopicOrPartitionError,
            KTP("kmove", 0): InvalidReplicationAssignmentError,
            KTP("kmove", 1): InvalidReplicationAssignmentError,
        }, bad
        # Cancelling a partition that is not being moved: Kafka's answer.
        cancel = kadmin.alter_partition_reassignments({KTP("kmove", 1): None})
        assert cancel == {KTP("kmove", 1): NoReassignmentInProgressError}, cancel
        assert kadmin.list_partition_reassignments() == {}
        assert [list(p.replicas) for p in (await describe(cluster, "kmove")).partitions] == before

        # A good one: partition 0's last replica moves to the spare node.
        target = [*before[0][:-1], spare]
        ok = kadmin.alter_partition_reassignments({KTP("kmove", 0): target})
        assert ok == {KTP("kmove", 0): None}, ok
        listed = kadmin.list_partition_reassignments()
        # Listed at once (a move takes several Raft changes, each reported through gossip, so
        # it is still under way milliseconds later): the voters and the learners, the target
        # replica not voting yet, the voter leaving.
        entry = listed[KTP("kmove", 0)]
        assert entry["removing_replicas"] == [before[0][-1]], listed
        assert entry["adding_replicas"] in ([spare], []), listed
        assert sorted(entry["replicas"]) == sorted({*before[0], spare}), listed
        await wait_for("the move to finish", lambda: moves_done(cluster), 90)

        async def shows_target() -> bool:
            return [list(p.replicas) for p in (await describe(cluster, "kmove")).partitions] == [
                target,
                before[1],
            ]

        await wait_for(f"metadata to show {target}", shows_target, 30)
        assert kadmin.list_partition_reassignments() == {}
        # A partition already on its target needs no move: accepted, nothing listed.
        again = kadmin.alter_partition_reassignments({KTP("kmove", 0): target})
        assert again == {KTP("kmove", 0): None}
        assert kadmin.list_partition_reassignments() == {}

        # Cancelling (null replicas) a throttled move mid-way: partition 1 goes back to its
        # replicas, the learner the move added removed.
        async with Producer(cluster.bootstrap, acks="all") as producer:
            for _ in range(60):  # ~1.2 MB: seconds for a learner fed 200 KB/s
                await producer.send_and_wait("kmove", b"k" * 20_000, partition=1)
        spare1 = next(n for n in (1, 2, 3, 4) if n not in before[1])
        target1 = [*before[1][:-1], spare1]
        async with AdminClient(cluster.bootstrap) as admin:
            await admin.move_partitions([("kmove", 1, target1)], throttle_bytes_s=200_000)
        cancelled = kadmin.alter_partition_reassignments({KTP("kmove", 1): None})
        assert cancelled == {KTP("kmove", 1): None}, cancelled
        going_back = kadmin.list_partition_reassignments()
        assert going_back == {} or going_back[KTP("kmove", 1)]["adding_replicas"] in (
            [],
            [before[1][-1]],
        ), going_back
        # A second cancel: the move the user asked for is gone (Kafka's answer).
        again = kadmin.alter_partition_reassignments({KTP("kmove", 1): None})
        assert again == {KTP("kmove", 1): NoReassignmentInProgressError}, again
        await wait_for("the cancelled move to end", lambda: moves_done(cluster), 90)

        async def shows_before() -> bool:
            return [list(p.replicas) for p in (await describe(cluster, "kmove")).partitions] == [
                target,
                before[1],
            ]

        await wait_for(f"metadata to show {before[1]} again", shows_before, 30)
        assert kadmin.list_partition_reassignments() == {}
    finally:
        kadmin.close()


async def test_kafka_reassignments_need_alter_and_describe_on_the_cluster(
    make_cluster: Callable[..., DevCluster],
) -> None:
    """With the authorizer on and no ACL, User:ANONYMOUS may neither move nor list: Kafka's
    CLUSTER_AUTHORIZATION_FAILED for the whole request, before any partition is looked at."""
    from kio.schema.alter_partition_reassignments.v0 import request as alter
    from kio.schema.alter_partition_reassignments.v0.response import (
        AlterPartitionReassignmentsResponse,
    )
    from kio.schema.errors import ErrorCode as KafkaError
    from kio.schema.list_partition_reassignments.v0.request import (
        ListPartitionReassignmentsRequest,
    )
    from kio.schema.list_partition_reassignments.v0.response import (
        ListPartitionReassignmentsResponse,
    )
    from kio.static.primitive import i32

    from tests.integration.test_kafka_failover import kafka_request

    cluster = make_cluster(3, "--authorizer")
    req = alter.AlterPartitionReassignmentsRequest(
        topics=(
            alter.ReassignableTopic(
                name="any",
                partitions=(
                    alter.ReassignablePartition(
                        partition_index=i32(0), replicas=(i32(1), i32(2), i32(3))
                    ),
                ),
            ),
        )
    )
    for node in cluster.nodes.values():
        resp = kafka_request(node.kafka_address, req, AlterPartitionReassignmentsResponse)
        assert resp.error_code == KafkaError.cluster_authorization_failed, resp
        assert resp.responses == ()
        listed = kafka_request(
            node.kafka_address,
            ListPartitionReassignmentsRequest(topics=None),
            ListPartitionReassignmentsResponse,
        )
        assert listed.error_code == KafkaError.cluster_authorization_failed, listed
