"""ACLs on a real three-node cluster with the authorizer on, over both listeners (issue 17).

Until authentication lands every client is `User:ANONYMOUS`. The cluster first runs with it as a
super user, which makes the topics the tests use and gives it only ALTER and DESCRIBE on the
cluster (to manage ACLs); then every node restarts without super users, so ANONYMOUS is an
ordinary principal whose every other right comes from an ACL a test adds. The restart is also the
check that ACLs survive one (they are in the controller's log and snapshots); a test at the end
stops the controller leader and checks them under the new one.

Each refusal is checked for its exact message and for changing nothing: the record is not
written (high watermarks), the topic not created (creating it later succeeds), the offset not
committed (the group has none).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from client import (
    Acl,
    AclFilter,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    GroupIdNotFoundError,
    SyncAdminClient,
    SyncProducer,
    TopicAuthorizationFailedError,
    TopicPartition,
)
from client.errors import from_rpc_error
from liferaft.launcher import DevCluster
from liferaft_proto import records
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc
from tests.clusters import HEALTHY_WITHIN_S, running_cluster
from tests.integration.closing import KafkaClients

ME = "User:ANONYMOUS"
TOPICS = ("orders", "pay.eu", "pay.us", "k-orders", "k-pay")


def allow(op: str, rtype: str, name: str, pattern: str = "literal", who: str = ME) -> Acl:
    return Acl(
        principal=who, operation=op, resource_type=rtype, resource_name=name, pattern_type=pattern
    )


def everywhere(dev: DevCluster, *acls: Acl) -> None:
    """Until every running node has applied `acls` (a node answers from its own replica of the
    controller's state, which follows the leader's by a moment, as Kafka's brokers do)."""
    wanted = {a.to_pb().SerializeToString() for a in acls}
    deadline = time.monotonic() + 30
    for n in dev.nodes:
        if not dev.is_running(n):
            continue
        with grpc.insecure_channel(dev.node(n).address) as ch:
            stub = broker_pb2_grpc.BrokerStub(ch)  # type: ignore[no-untyped-call]
            while True:
                got = stub.DescribeAcls(broker_pb2.DescribeAclsRequest(), timeout=5).acls
                if wanted <= {pb.SerializeToString() for pb in got}:
                    break
                assert time.monotonic() < deadline, f"node {n} has not applied {acls}"
                time.sleep(0.05)


def grant(dev: DevCluster, admin: SyncAdminClient, *acls: Acl) -> None:
    admin.create_acls(acls)
    everywhere(dev, *acls)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """Started with ANONYMOUS a super user to make the topics and its cluster ACLs, then every
    node restarted without super users (the module docstring says why)."""
    args = ["--authorizer", "--super-users", ME]
    with running_cluster(tmp_path_factory.mktemp("acls"), 3, args) as dev:
        with SyncAdminClient(dev.bootstrap) as admin:
            for name in TOPICS:
                admin.create_topic(name, 3, 3)
            admin.create_acls(
                [
                    allow("alter", "cluster", "kafka-cluster"),
                    allow("describe", "cluster", "kafka-cluster"),
                ]
            )
        dev.stop()
        dev.extra_args = ["--authorizer"]
        dev.save()
        dev.start()
        dev.wait_healthy(HEALTHY_WITHIN_S)
        yield dev


@pytest.fixture
def admin(cluster: DevCluster) -> Iterator[SyncAdminClient]:
    with SyncAdminClient(cluster.bootstrap, timeout_ms=20_000) as a:
        yield a


def high_watermarks(admin: SyncAdminClient, topic: str) -> list[int]:
    got = admin.list_offsets({TopicPartition(topic, p): "latest" for p in range(3)})
    return [got[TopicPartition(topic, p)].offset for p in range(3)]


def test_acls_survived_the_restart_and_the_super_user_is_gone(admin: SyncAdminClient) -> None:
    acls = admin.describe_acls(AclFilter(resource_type="cluster"))
    assert {(a.principal, a.operation) for a in acls} == {(ME, "alter"), (ME, "describe")}
    # Not a super user any more: no ACL lets it create topics.
    with pytest.raises(TopicAuthorizationFailedError) as e:
        admin.create_topic(unique("t"), 1, 1)
    assert "User:ANONYMOUS may not CREATE topic t-" in str(e.value)


def test_idempotent_producer_needs_idempotent_write_or_write_on_a_topic(
    cluster: DevCluster, admin: SyncAdminClient
) -> None:
    # The first test to give a topic right (tests run in file order): no WRITE anywhere yet.
    grant(cluster, admin, allow("describe", "topic", "k-pay"))
    # The producer asks for its id as it starts.
    with (
        pytest.raises(ClusterAuthorizationFailedError) as e,
        SyncProducer(cluster.bootstrap, acks="all") as producer,
    ):
        producer.send_and_wait("k-pay", b"x", partition=0)
    assert e.value.message == "User:ANONYMOUS may not IDEMPOTENT_WRITE the cluster"
    assert high_watermarks(admin, "k-pay") == [0, 0, 0]
    grant(cluster, admin, allow("write", "topic", "k-pay"))  # WRITE on a topic grants it
    with SyncProducer(cluster.bootstrap, acks="all") as producer:
        assert producer.send_and_wait("k-pay", b"x", partition=1).offset == 0


def test_grpc_produce_refused_without_write_then_allowed(
    cluster: DevCluster, admin: SyncAdminClient
) -> None:
    grant(cluster, admin, allow("describe", "topic", "orders"))
    with SyncProducer(cluster.bootstrap, enable_idempotence=False, acks="all") as producer:
        with pytest.raises(TopicAuthorizationFailedError) as e:
            producer.send_and_wait("orders", b"nope", partition=0)
        assert (
            str(e.value) == "TOPIC_AUTHORIZATION_FAILED: User:ANONYMOUS may not WRITE topic orders"
        )
        assert high_watermarks(admin, "orders") == [0, 0, 0]  # nothing written
        grant(cluster, admin, allow("write", "topic", "orders"))
        assert producer.send_and_wait("orders", b"yes", partition=0).offset == 0
    assert high_watermarks(admin, "orders") == [1, 0, 0]


def test_delete_records_needs_delete_on_the_topic(
    cluster: DevCluster, admin: SyncAdminClient
) -> None:
    tp = TopicPartition("orders", 0)  # one record (the test above wrote it); no DELETE yet
    with pytest.raises(TopicAuthorizationFailedError) as e:
        admin.delete_records({tp: -1})
    assert str(e.value) == (
        "TOPIC_AUTHORIZATION_FAILED: User:ANONYMOUS may not DELETE topic orders"
    )
    assert admin.list_offsets({tp: "earliest"})[tp].offset == 0  # nothing deleted
    grant(cluster, admin, allow("delete", "topic", "orders"))
    assert admin.delete_records({tp: -1}) == {tp: 1}
    assert high_watermarks(admin, "orders") == [1, 0, 0]


def test_grpc_create_topic_refused_then_allowed_by_a_prefixed_acl(
    cluster: DevCluster, admin: SyncAdminClient
) -> None:
    name = unique("made")
    with pytest.raises(TopicAuthorizationFailedError) as e:
        admin.create_topic(name, 1, 1)
    assert e.value.message == f"User:ANONYMOUS may not CREATE topic {name}"
    grant(cluster, admin, allow("create", "topic", "made-", "prefixed"))
    assert admin.create_topic(name, 1, 1).name == name  # not "already exists": nothing was made


def test_grpc_commit_refused_without_read_on_the_group(
    cluster: DevCluster, admin: SyncAdminClient
) -> None:
    group = unique("g")
    tp = TopicPartition("orders", 1)
    grant(cluster, admin, allow("read", "topic", "orders"), allow("describe", "group", group))
    with pytest.raises(GroupAuthorizationFailedError) as e:
        admin.reset_offsets(group, {tp: 0})
    assert str(e.value) == f"GROUP_AUTHORIZATION_FAILED: User:ANONYMOUS may not READ group {group}"
    with pytest.raises(GroupIdNotFoundError):
        admin.describe_group(group)  # no offset was committed
    grant(cluster, admin, allow("read", "group", group))
    admin.reset_offsets(group, {tp: 0})
    desc = admin.describe_group(group, lag=False)
    committed = {(p.topic, p.partition): p.committed for p in desc.partitions}
    assert committed == {("orders", 0): None, ("orders", 1): 0, ("orders", 2): None}


def test_prefixed_allow_and_deny_beats_allow(cluster: DevCluster, admin: SyncAdminClient) -> None:
    grant(cluster, admin, allow("write", "topic", "pay.", "prefixed"))
    deny = Acl(
        principal="User:*",
        operation="write",
        permission="deny",
        resource_type="topic",
        resource_name="pay.us",
    )
    grant(cluster, admin, deny)
    before = high_watermarks(admin, "pay.us")
    with SyncProducer(cluster.bootstrap, enable_idempotence=False, acks="all") as producer:
        assert producer.send_and_wait("pay.eu", b"ok", partition=2).offset >= 0
        with pytest.raises(TopicAuthorizationFailedError) as e:
            producer.send_and_wait("pay.us", b"no", partition=2)
        assert e.value.message == "User:ANONYMOUS may not WRITE topic pay.us"
    assert high_watermarks(admin, "pay.us") == before


def test_metadata_leaves_out_topics_the_caller_may_not_describe(admin: SyncAdminClient) -> None:
    visible = set(admin.list_topics())
    assert "orders" in visible and "pay.eu" in visible  # DESCRIBE implied by READ/WRITE
    # k-orders has no ACL yet (test_kafka_* add them); a made- topic is not described either.
    assert not any(t.startswith("made-") for t in visible)


def _cli(dev: DevCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "liferaft", "acl", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "LIFERAFT_BOOTSTRAP": dev.bootstrap, "GRPC_VERBOSITY": "ERROR"},
        timeout=60,
        check=False,
    )


def test_the_acl_command(cluster: DevCluster) -> None:
    group = unique("cli")
    add = ["--allow-principal", ME, "--operation", "read", "--operation", "describe"]
    done = _cli(cluster, "add", *add, "--group", group, "--resource-pattern-type", "prefixed")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("added 2 ACLs (0 already there)")
    listed = _cli(cluster, "list", "--group", group, "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted((a["operation"], a["pattern_type"]) for a in json.loads(listed.stdout)) == [
        ("describe", "prefixed"),
        ("read", "prefixed"),
    ]
    # Bad input: a clear error, exit 2 or 1, nothing added.
    bad = _cli(
        cluster, "add", "--allow-principal", "alice", "--operation", "read", "--group", group
    )
    assert bad.returncode == 1
    assert "INVALID_REQUEST" in bad.stderr and "User:NAME" in bad.stderr
    assert (
        _cli(
            cluster, "add", "--allow-principal", ME, "--operation", "fly", "--topic", "t"
        ).returncode
        == 2
    )
    gone = _cli(
        cluster,
        "remove",
        "--operation",
        "read",
        "--group",
        group,
        "--resource-pattern-type",
        "prefixed",
    )
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.startswith("removed 1 ACL")
    left = json.loads(_cli(cluster, "list", "--group", group, "--json").stdout)
    assert [a["operation"] for a in left] == ["describe"]


# -- the Kafka listener (confluent-kafka) --------------------------------------------------------
def _ck() -> Any:
    """confluent_kafka.admin, untyped (it exports its names without saying so)."""
    import confluent_kafka.admin

    return confluent_kafka.admin


def _kafka_admin(dev: DevCluster) -> Any:
    return _ck().AdminClient({"bootstrap.servers": dev.kafka_bootstrap})


def _binding(op: Any, name: str, rtype: Any = None) -> Any:
    ck = _ck()
    return ck.AclBinding(
        rtype or ck.ResourceType.TOPIC,
        name,
        ck.ResourcePatternType.LITERAL,
        ME,
        "*",
        op,
        ck.AclPermissionType.ALLOW,
    )


def test_kafka_acl_apis_with_confluent_admin(
    cluster: DevCluster, kafka_clients: KafkaClients, admin: SyncAdminClient
) -> None:
    ck = _ck()

    kadmin = kafka_clients(_kafka_admin(cluster))
    binding = _binding(ck.AclOperation.DESCRIBE, "k-orders")
    for fut in kadmin.create_acls([binding], request_timeout=20).values():
        assert fut.result(timeout=30) is None
    flt = ck.AclBindingFilter(
        ck.ResourceType.TOPIC,
        "k-orders",
        ck.ResourcePatternType.MATCH,
        None,
        None,
        ck.AclOperation.ANY,
        ck.AclPermissionType.ANY,
    )
    found = kadmin.describe_acls(flt, request_timeout=20).result(timeout=30)
    assert binding in found
    # The liferaft client sees the same ACL (one controller state behind both listeners).
    assert Acl(
        principal=ME, operation="describe", resource_type="topic", resource_name="k-orders"
    ) in admin.describe_acls(AclFilter(resource_name="k-orders"))
    # A bad one is refused with a clear error and nothing is created.
    bad = _binding(ck.AclOperation.READ, "k-orders", ck.ResourceType.BROKER)
    with pytest.raises(Exception) as e:
        for fut in kadmin.create_acls([bad], request_timeout=20).values():
            fut.result(timeout=30)
    assert "kafka-cluster" in str(e.value)
    deleted = kadmin.delete_acls([flt], request_timeout=20)
    gone = [b for fut in deleted.values() for b in fut.result(timeout=30)]
    assert binding in gone
    assert admin.describe_acls(AclFilter(resource_name="k-orders")) == []


def test_kafka_produce_and_create_refused_without_the_acl(
    cluster: DevCluster, kafka_clients: KafkaClients, admin: SyncAdminClient
) -> None:
    from confluent_kafka import KafkaError, KafkaException, Producer

    ck = _ck()

    kadmin = kafka_clients(_kafka_admin(cluster))
    for fut in kadmin.create_acls([_binding(ck.AclOperation.DESCRIBE, "k-orders")]).values():
        fut.result(timeout=30)
    everywhere(cluster, allow("describe", "topic", "k-orders"))
    errors: list[Any] = []
    settings = {
        "bootstrap.servers": cluster.kafka_bootstrap,
        "enable.idempotence": False,
        "acks": "all",
        "message.timeout.ms": 20_000,
    }
    producer = kafka_clients(Producer(settings))
    producer.produce(
        "k-orders", b"nope", partition=0, on_delivery=lambda err, _m: errors.append(err)
    )
    producer.flush(30)
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    assert high_watermarks(admin, "k-orders") == [0, 0, 0]
    for fut in kadmin.create_acls([_binding(ck.AclOperation.WRITE, "k-orders")]).values():
        fut.result(timeout=30)
    everywhere(cluster, allow("write", "topic", "k-orders"))
    errors.clear()
    producer = kafka_clients(Producer(settings))  # librdkafka remembers the refusal for the topic
    producer.produce(
        "k-orders", b"yes", partition=0, on_delivery=lambda err, _m: errors.append(err)
    )
    producer.flush(30)
    assert errors == [None]
    assert high_watermarks(admin, "k-orders") == [1, 0, 0]

    name = unique("k-new")
    futures = kadmin.create_topics([ck.NewTopic(name, 1, 1)], request_timeout=20)
    with pytest.raises(KafkaException) as e:
        futures[name].result(timeout=30)
    err = e.value.args[0]
    assert err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert f"User:ANONYMOUS may not CREATE topic {name}" in err.str()


def test_a_fetch_stream_ends_when_read_is_revoked(
    cluster: DevCluster, admin: SyncAdminClient
) -> None:
    """FetchStream authorizes every answer, as each unary Fetch is authorized: READ revoked
    while a stream is open ends it with TOPIC_AUTHORIZATION_FAILED, and what is written after
    the revocation is not sent on it."""
    name = unique("streamed")
    grant(cluster, admin, allow("create", "topic", name))
    admin.create_topic(name, 1, 3)
    read = allow("read", "topic", name)
    grant(cluster, admin, allow("describe", "topic", name), allow("write", "topic", name), read)
    with SyncProducer(cluster.bootstrap, enable_idempotence=False, acks="all") as producer:
        producer.send_and_wait(name, b"before", partition=0)
        leader = admin.describe_topics([name])[name].partitions[0].leader
        with grpc.insecure_channel(cluster.node(leader).address) as ch:
            stub = broker_pb2_grpc.BrokerStub(ch)  # type: ignore[no-untyped-call]
            stream = stub.FetchStream(
                broker_pb2.FetchRequest(topic=name, partition=0, offset=0, max_wait_ms=100),
                timeout=60,
            )
            first = next(stream)
            assert [r.value for r in records.iter_records(first.records)] == [b"before"]
            admin.delete_acls(
                [
                    AclFilter(
                        principal=ME, operation="read", resource_type="topic", resource_name=name
                    )
                ]
            )
            deadline = time.monotonic() + 30
            while read.to_pb().SerializeToString() in {  # until the leader has applied it
                pb.SerializeToString()
                for pb in stub.DescribeAcls(broker_pb2.DescribeAclsRequest(), timeout=5).acls
            }:
                assert time.monotonic() < deadline, "the leader still has the READ ACL"
                time.sleep(0.05)
            producer.send_and_wait(name, b"after", partition=0)
            seen: list[bytes | None] = []
            with pytest.raises(grpc.RpcError) as e:
                for answer in stream:
                    seen += [r.value for r in records.iter_records(answer.records)]
    assert b"after" not in seen
    error = from_rpc_error(e.value)
    assert isinstance(error, TopicAuthorizationFailedError), error
    assert error.message == f"User:ANONYMOUS may not READ topic {name}"


def test_acls_hold_under_a_new_controller_leader(cluster: DevCluster) -> None:
    leader = cluster.metadata(1).controller_id or cluster.metadata(2).controller_id
    assert leader
    cluster.stop_node(leader)
    try:
        others = [n for n in cluster.nodes if n != leader]
        deadline = time.monotonic() + 60
        while True:
            ids = {cluster.metadata(n, 5).controller_id for n in others}
            if len(ids) == 1 and ids != {0} and ids != {leader}:
                break
            assert time.monotonic() < deadline, f"no new controller leader: {ids}"
            time.sleep(0.2)
        bootstrap = ",".join(cluster.node(n).address for n in others)
        with SyncAdminClient(bootstrap, timeout_ms=30_000) as a:
            ops = {(x.resource_type, x.operation) for x in a.describe_acls(AclFilter(principal=ME))}
            assert ("cluster", "alter") in ops and ("topic", "write") in ops
            name = unique("after")
            with pytest.raises(TopicAuthorizationFailedError):
                a.create_topic(name, 1, 1)
            # The new leader takes ACL changes.
            assert a.create_acls([allow("create", "topic", name)]) == 1
            everywhere(cluster, allow("create", "topic", name))
            assert a.create_topic(name, 1, 1).name == name
    finally:
        cluster.start_node(leader)
        cluster.wait_healthy(60)
