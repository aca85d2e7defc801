"""SASL/SCRAM on both client listeners (issue 17, authentication) on a real three-node cluster.

The cluster runs with `--client-security-protocol SASL_SSL` and the authorizer on (alice is a
super user). Its first user is made with a
node's key (`liferaft user add --as-node`), as `liferaft dev up --secure` does. Then, on the
gRPC listener and on the Kafka listener: a client without credentials, with a wrong password,
and with a certificate from another CA is refused with a clear error and changes nothing;
liferaft's client, the CLI, aiokafka and confluent-kafka log in with SCRAM-SHA-512 and produce
and consume; a user with ACLs for one topic and its group works there through every client and
is refused on another topic with TOPIC_AUTHORIZATION_FAILED, nothing written. Admin requests sent to a node that does not lead the controller are forwarded
with the caller's principal, signed by the node, so they work too.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from client import (
    Acl,
    AdminClient,
    Consumer,
    LiferaftError,
    Producer,
    SaslAuthenticationFailedError,
    TopicAuthorizationFailedError,
    TopicPartition,
)
from client.security import Security
from liferaft.certs import create_certs
from liferaft.launcher import DevCluster
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc
from tests.clusters import running_cluster
from tests.integration.closing import KafkaClients

USER, PASSWORD = "alice", "s3cret-for-alice"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def cli(
    dev: DevCluster, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "LIFERAFT_BOOTSTRAP": dev.bootstrap, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "liferaft", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
    )


@pytest.fixture(scope="module")
def sasl_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    root = tmp_path_factory.mktemp("sasl")
    # The authorizer is on, as `dev up --secure` has it: alice (and root, the first admin a test
    # makes, and the nodes' own certificates, for `user add --as-node`) are super users; other
    # users may do only what an ACL allows.
    supers = ";".join(["User:alice", "User:root"] + [f"User:CN=node-{n}" for n in (1, 2, 3)])
    args = ["--client-security-protocol", "SASL_SSL", "--authorizer", "--super-users", supers]
    with running_cluster(root, 3, args) as dev:
        done = cli(
            dev,
            "--security-protocol",
            "SSL",
            "--ssl-cafile",
            str(dev.tls_dir / "ca.crt"),
            "user",
            "add",
            USER,
            "--password-stdin",
            "--as-node",
            str(dev.tls_dir / "node-2"),
            stdin=PASSWORD + "\n",
        )
        assert done.returncode == 0, done.stderr
        yield dev


def ca(dev: DevCluster) -> str:
    return str(dev.tls_dir / "ca.crt")


def sasl(dev: DevCluster, password: str = PASSWORD, user: str = USER) -> dict[str, str]:
    return {
        "security_protocol": "SASL_SSL",
        "ssl_cafile": ca(dev),
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": user,
        "sasl_plain_password": password,
    }


async def topics(dev: DevCluster) -> set[str]:
    async with AdminClient(dev.bootstrap, **sasl(dev)) as admin:  # type: ignore[arg-type]
        return set(await admin.list_topics())


def test_liferaft_client_logs_in_and_works(sasl_cluster: DevCluster) -> None:
    name = unique("sasl")

    async def run() -> None:
        settings = sasl(sasl_cluster)
        async with AdminClient(sasl_cluster.bootstrap, **settings) as admin:  # type: ignore[arg-type]
            # Sent to every node in turn: the non-controllers forward it, signed.
            await admin.create_topic(name, partitions=2, replication_factor=3)
            assert USER in await admin.describe_users()
        async with Producer(sasl_cluster.bootstrap, **settings) as producer:  # type: ignore[arg-type]
            await producer.send_and_wait(name, b"logged in", key=b"k")
        async with Consumer(
            sasl_cluster.bootstrap,
            auto_offset_reset="earliest",
            group_id=unique("g"),
            **settings,  # type: ignore[arg-type]
        ) as consumer:
            consumer.subscribe([name])
            values: list[bytes | None] = []
            for _ in range(20):
                got = await consumer.getmany(timeout_ms=1_000)
                values += [r.value for recs in got.values() for r in recs]
                if values:
                    break
            assert values == [b"logged in"]
            # Read on FetchStream, which carries the credentials as unary calls do.
            assert consumer._cluster is not None and consumer._cluster.fetch_streams
            assert not consumer._cluster.streams_unsupported

    asyncio.run(run())


@pytest.mark.parametrize("how", ["no credentials", "wrong password", "unknown user"])
def test_grpc_refuses_bad_credentials_and_changes_nothing(
    sasl_cluster: DevCluster, how: str
) -> None:
    name = unique("refused")

    async def run() -> None:
        settings: dict[str, str] = {"security_protocol": "SSL", "ssl_cafile": ca(sasl_cluster)}
        if how == "wrong password":
            settings = sasl(sasl_cluster, password="not-it")
        elif how == "unknown user":
            settings = sasl(sasl_cluster, user="mallory")
        admin = AdminClient(
            sasl_cluster.bootstrap,
            timeout_ms=5_000,
            request_timeout_ms=2_000,
            **settings,  # type: ignore[arg-type]
        )
        with pytest.raises(SaslAuthenticationFailedError) as err:
            async with admin:
                await admin.create_topic(name, partitions=1, replication_factor=1)
        text = str(err.value)
        if how == "no credentials":
            assert "username and password" in text
        else:
            assert "invalid credentials" in text and "SCRAM-SHA-512" in text
        assert name not in await topics(sasl_cluster)

    asyncio.run(run())


def test_another_ca_is_refused(
    sasl_cluster: DevCluster, kafka_clients: KafkaClients, tmp_path: Path
) -> None:
    """A client that trusts another CA (a man in the middle's, say) does not finish the TLS
    handshake, so it never sends its password, on either listener; the cluster is unchanged.
    (A client certificate from another CA, where certificates are required, is
    test_auth_tls.py's test_client_certificates_required.)"""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient as CKAdmin
    from confluent_kafka.admin import NewTopic as CKNewTopic

    other = tmp_path / "other"
    create_certs(other, [1], cluster="other", hosts=["127.0.0.1", "localhost"])
    name = unique("otherca")

    async def grpc_side() -> None:
        admin = AdminClient(
            sasl_cluster.bootstrap,
            timeout_ms=4_000,
            request_timeout_ms=1_000,
            **{**sasl(sasl_cluster), "ssl_cafile": str(other / "ca.crt")},  # type: ignore[arg-type]
        )
        with pytest.raises(LiferaftError, match=r"BROKER_NOT_AVAILABLE|DEADLINE|UNAVAILABLE"):
            async with admin:
                await admin.create_topic(name, partitions=1, replication_factor=1)

    asyncio.run(grpc_side())
    ck = kafka_clients(
        CKAdmin(
            {
                "bootstrap.servers": sasl_cluster.kafka_bootstrap,
                "security.protocol": "SASL_SSL",
                "ssl.ca.location": str(other / "ca.crt"),
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": USER,
                "sasl.password": PASSWORD,
            }
        )
    )
    futures = ck.create_topics([CKNewTopic(name, 1, 1)], request_timeout=5)
    with pytest.raises(KafkaException):
        futures[name].result(timeout=20)
    assert name not in asyncio.run(topics(sasl_cluster))


def _ck_conf(
    dev: DevCluster, password: str = PASSWORD, protocol: str = "SASL_SSL"
) -> dict[str, object]:
    conf: dict[str, object] = {
        "bootstrap.servers": dev.kafka_bootstrap,
        "security.protocol": protocol,
        "ssl.ca.location": ca(dev),
    }
    if protocol.startswith("SASL"):
        conf.update(
            {"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": USER, "sasl.password": password}
        )
    return conf


@pytest.mark.parametrize("how", ["no credentials", "wrong password"])
def test_kafka_listener_refuses_bad_credentials_and_changes_nothing(
    sasl_cluster: DevCluster,
    kafka_clients: KafkaClients,
    how: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaConnectionError, KafkaError
    from aiokafka.helpers import create_ssl_context
    from confluent_kafka import Producer as CKProducer

    name = unique("krefused")

    async def run() -> None:
        context = create_ssl_context(cafile=ca(sasl_cluster))
        extra: dict[str, object] = {"security_protocol": "SSL"}
        if how == "wrong password":
            extra = {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_plain_username": USER,
                "sasl_plain_password": "not-it",
            }
        admin = AIOKafkaAdminClient(
            bootstrap_servers=sasl_cluster.kafka_bootstrap,
            ssl_context=context,
            request_timeout_ms=5_000,
            **extra,  # type: ignore[arg-type]
        )
        with pytest.raises((KafkaError, KafkaConnectionError, OSError)) as err:
            await admin.start()
            try:
                await admin.create_topics([NewTopic(name, 1, 1)])
            finally:
                await admin.close()
        assert "bootstrap" in str(err.value)

    asyncio.run(run())
    if how == "wrong password":
        # aiokafka logs each node's answer: Kafka's code and words.
        assert "SaslAuthenticationFailed" in caplog.text
        assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in caplog.text
        # librdkafka too, through its error callback. (Without credentials a client is only
        # disconnected, as Kafka does; the node logs why.)
        errors: list[str] = []
        conf = _ck_conf(sasl_cluster, password="not-it")
        producer = kafka_clients(CKProducer({**conf, "error_cb": lambda e: errors.append(str(e))}))
        producer.produce(name, b"never")
        producer.flush(5)
        producer.purge()
        assert any("invalid credentials" in e for e in errors), errors
    assert name not in asyncio.run(topics(sasl_cluster))


def test_aiokafka_confluent_kafka_and_kafka_python_with_scram(
    sasl_cluster: DevCluster, kafka_clients: KafkaClients
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.helpers import create_ssl_context
    from confluent_kafka import Consumer as CKConsumer
    from confluent_kafka import Producer as CKProducer
    from kafka import KafkaProducer

    name = unique("kscram")
    boot = sasl_cluster.kafka_bootstrap
    login = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": USER,
        "sasl_plain_password": PASSWORD,
    }

    async def run() -> None:
        context = create_ssl_context(cafile=ca(sasl_cluster))
        admin = AIOKafkaAdminClient(bootstrap_servers=boot, ssl_context=context, **login)  # type: ignore[arg-type]
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, 1, 3)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(
            bootstrap_servers=boot,
            ssl_context=context,
            acks="all",
            **login,  # type: ignore[arg-type]
        )
        await producer.start()
        try:
            await producer.send_and_wait(name, b"from aiokafka")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            name,
            bootstrap_servers=boot,
            ssl_context=context,
            auto_offset_reset="earliest",
            **login,  # type: ignore[arg-type]
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), 20)
            assert record.value == b"from aiokafka"
        finally:
            await consumer.stop()

    asyncio.run(run())
    p = kafka_clients(CKProducer(_ck_conf(sasl_cluster)))
    p.produce(name, b"from confluent")
    assert p.flush(20) == 0
    kp = KafkaProducer(
        bootstrap_servers=boot.split(","),
        security_protocol="SASL_SSL",
        ssl_cafile=ca(sasl_cluster),
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username=USER,
        sasl_plain_password=PASSWORD,
        acks="all",
    )
    try:
        kp.send(name, b"from kafka-python").get(timeout=30)
    finally:
        kp.close()
    ck = CKConsumer(
        {**_ck_conf(sasl_cluster), "group.id": unique("g"), "auto.offset.reset": "earliest"}
    )
    try:
        ck.subscribe([name])
        values = []
        for _ in range(60):
            msg = ck.poll(0.5)
            if msg is not None and msg.error() is None:
                values.append(msg.value())
                if len(values) == 3:
                    break
        assert values == [b"from aiokafka", b"from confluent", b"from kafka-python"]
    finally:
        ck.close()


def test_cli_with_sasl_ssl(sasl_cluster: DevCluster) -> None:
    name = unique("clisasl")
    env = {
        "LIFERAFT_SECURITY_PROTOCOL": "SASL_SSL",
        "LIFERAFT_SSL_CAFILE": ca(sasl_cluster),
        "LIFERAFT_SASL_USERNAME": USER,
        "LIFERAFT_SASL_PASSWORD": PASSWORD,
    }
    done = cli(sasl_cluster, "topic", "create", name, "--partitions", "1", env=env)
    assert done.returncode == 0, done.stderr
    done = cli(sasl_cluster, "user", "add", "bob", "--password-stdin", stdin="bobs-pw\n", env=env)
    assert done.returncode == 0, done.stderr
    done = cli(sasl_cluster, "user", "list", env=env)
    assert done.returncode == 0 and "bob\tSCRAM-SHA-512" in done.stdout, done.stderr
    wrong = {**env, "LIFERAFT_SASL_PASSWORD": "nope"}
    done = cli(sasl_cluster, "topic", "delete", name, env=wrong)
    assert done.returncode == 1 and "SASL_AUTHENTICATION_FAILED" in done.stderr
    # Bad input: a clear error, nothing changed.
    done = cli(sasl_cluster, "user", "add", "a,b", "--password-stdin", stdin="pw\n", env=env)
    assert done.returncode == 1 and "INVALID_REQUEST" in done.stderr and "','" in done.stderr
    done = cli(sasl_cluster, "user", "add", "carl", "--password-stdin", stdin="\n", env=env)
    assert done.returncode == 2 and "password is empty" in done.stderr
    done = cli(sasl_cluster, "user", "list", "--json", env=env)
    assert {u["user"] for u in json.loads(done.stdout)} >= {"alice", "bob"}
    assert not {"a,b", "carl"} & {u["user"] for u in json.loads(done.stdout)}
    done = cli(sasl_cluster, "user", "remove", "bob", env=env)
    assert done.returncode == 0, done.stderr
    done = cli(sasl_cluster, "user", "remove", "bob", env=env)
    assert done.returncode == 1 and "RESOURCE_NOT_FOUND" in done.stderr
    assert name in asyncio.run(topics(sasl_cluster))


def test_kafka_admin_manages_scram_users(
    sasl_cluster: DevCluster, kafka_clients: KafkaClients
) -> None:
    """A user made with Kafka's AlterUserScramCredentials (confluent-kafka's admin, logged in
    as alice) logs in on the gRPC listener; once removed it cannot."""
    from confluent_kafka.admin import AdminClient as CKAdmin
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    ck = kafka_clients(CKAdmin(_ck_conf(sasl_cluster)))
    upsert = UserScramCredentialUpsertion(
        "carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"carols-pw"
    )
    for f in ck.alter_user_scram_credentials([upsert]).values():
        f.result(timeout=20)
    described = ck.describe_user_scram_credentials(["carol"])["carol"].result(timeout=20)
    infos = described.scram_credential_infos
    assert [(i.mechanism, i.iterations) for i in infos] == [(ScramMechanism.SCRAM_SHA_512, 8192)]

    async def carol_lists_topics() -> None:
        await topics_as(sasl_cluster, "carol", "carols-pw")

    asyncio.run(carol_lists_topics())
    deletion = UserScramCredentialDeletion("carol", ScramMechanism.SCRAM_SHA_512)
    for f in ck.alter_user_scram_credentials([deletion]).values():
        f.result(timeout=20)
    with pytest.raises(SaslAuthenticationFailedError):
        asyncio.run(carol_lists_topics())


async def topics_as(dev: DevCluster, user: str, password: str) -> set[str]:
    async with AdminClient(
        dev.bootstrap,
        timeout_ms=5_000,
        **sasl(dev, user=user, password=password),  # type: ignore[arg-type]
    ) as admin:
        return set(await admin.list_topics())


def test_first_admin_and_client_config(sasl_cluster: DevCluster) -> None:
    """What `liferaft dev up --secure` does after start: a first user with a random password,
    made with a node's key, its settings in client.toml (owner-only), which the CLI reads."""
    password = sasl_cluster.make_first_admin("root")
    assert password is not None and len(password) >= 20
    config = sasl_cluster.client_config
    assert config.stat().st_mode & 0o777 == 0o600
    assert password in config.read_text()
    assert sasl_cluster.make_first_admin("root") is None  # printed once, never remade
    done = cli(sasl_cluster, "user", "list", env={"LIFERAFT_CLIENT_CONFIG": str(config)})
    assert done.returncode == 0 and "root\tSCRAM-SHA-512" in done.stdout, done.stderr
    assert password not in done.stdout + done.stderr


# -- a user under ACLs, on both listeners -------------------------------------------------------
ERIN, ERIN_PASSWORD = "erin", "erins-password-under-acls"


def _applied_everywhere(dev: DevCluster, acls: list[Acl]) -> None:
    """Until every node has applied `acls` (each answers from its own replica of the
    controller's state, a moment behind the leader's)."""
    import time

    sec = Security.from_options(sasl(dev))
    wanted = {a.to_pb().SerializeToString() for a in acls}
    deadline = time.monotonic() + 30
    for n in dev.nodes:
        creds = sec.channel_credentials()
        assert creds is not None
        with grpc.secure_channel(dev.node(n).address, creds) as ch:
            stub = broker_pb2_grpc.BrokerStub(ch)  # type: ignore[no-untyped-call]
            while True:
                got = stub.DescribeAcls(
                    broker_pb2.DescribeAclsRequest(), timeout=5, metadata=sec.call_metadata()
                ).acls
                if wanted <= {pb.SerializeToString() for pb in got}:
                    break
                assert time.monotonic() < deadline, f"node {n} has not applied {acls}"
                time.sleep(0.05)


def test_a_user_under_acls_on_both_listeners(
    sasl_cluster: DevCluster, kafka_clients: KafkaClients
) -> None:
    """erin may write and read one topic and use one group, nothing else. Through liferaft's
    client (gRPC), aiokafka and confluent-kafka (Kafka listener, SASL_SSL/SCRAM-SHA-512) she
    produces and consumes there; writing another topic is refused with
    TOPIC_AUTHORIZATION_FAILED naming what is missing, and nothing is written to it."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.errors import TopicAuthorizationFailedError as AKTopicAuthorizationFailed
    from aiokafka.helpers import create_ssl_context
    from confluent_kafka import Consumer as CKConsumer
    from confluent_kafka import KafkaError
    from confluent_kafka import Producer as CKProducer

    dev = sasl_cluster
    mine, other, group = unique("erin-own"), unique("erin-other"), unique("erin-g")
    me = f"User:{ERIN}"
    acls = [
        Acl(principal=me, operation="write", resource_type="topic", resource_name=mine),
        Acl(principal=me, operation="read", resource_type="topic", resource_name=mine),
        Acl(principal=me, operation="read", resource_type="group", resource_name=group),
        # She may see the other topic (so the refusal is of the write itself, not of its
        # metadata, which would say DESCRIBE), not write it.
        Acl(principal=me, operation="describe", resource_type="topic", resource_name=other),
    ]
    erin = sasl(dev, user=ERIN, password=ERIN_PASSWORD)

    async def as_alice_setup() -> None:
        async with AdminClient(dev.bootstrap, **sasl(dev)) as admin:  # type: ignore[arg-type]
            await admin.create_topic(mine, partitions=1, replication_factor=3)
            await admin.create_topic(other, partitions=1, replication_factor=3)
            await admin.upsert_user(ERIN, ERIN_PASSWORD)
            assert await admin.create_acls(acls) == 4

    async def end_offset(topic: str) -> int:
        async with AdminClient(dev.bootstrap, **sasl(dev)) as admin:  # type: ignore[arg-type]
            tp = TopicPartition(topic, 0)
            return (await admin.list_offsets({tp: "latest"}))[tp].offset

    asyncio.run(as_alice_setup())
    _applied_everywhere(dev, acls)

    # gRPC, liferaft's client.
    async def grpc_client() -> None:
        async with Producer(dev.bootstrap, acks="all", **erin) as producer:  # type: ignore[arg-type]
            await producer.send_and_wait(mine, b"grpc", partition=0)
            with pytest.raises(TopicAuthorizationFailedError) as e:
                await producer.send_and_wait(other, b"never", partition=0)
            assert str(e.value) == (
                f"TOPIC_AUTHORIZATION_FAILED: User:{ERIN} may not WRITE topic {other}"
            )
        async with Consumer(dev.bootstrap, auto_offset_reset="earliest", **erin) as consumer:  # type: ignore[arg-type]
            consumer.assign([TopicPartition(other, 0)])
            with pytest.raises(TopicAuthorizationFailedError) as e:
                for _ in range(10):
                    await consumer.getmany(timeout_ms=500)
            assert str(e.value) == (
                f"TOPIC_AUTHORIZATION_FAILED: User:{ERIN} may not READ topic {other}"
            )

    asyncio.run(grpc_client())

    # Kafka listener, aiokafka.
    login = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": ERIN,
        "sasl_plain_password": ERIN_PASSWORD,
    }

    async def aiokafka_client() -> None:
        context = create_ssl_context(cafile=ca(dev))
        producer = AIOKafkaProducer(
            bootstrap_servers=dev.kafka_bootstrap,
            ssl_context=context,
            acks="all",
            request_timeout_ms=10_000,
            **login,  # type: ignore[arg-type]
        )
        await producer.start()
        try:
            await producer.send_and_wait(mine, b"aiokafka", partition=0)
            with pytest.raises(AKTopicAuthorizationFailed):
                await producer.send_and_wait(other, b"never", partition=0)
        finally:
            await producer.stop()

    asyncio.run(aiokafka_client())

    # Kafka listener, confluent-kafka (librdkafka).
    conf = {
        **_ck_conf(dev),
        "sasl.username": ERIN,
        "sasl.password": ERIN_PASSWORD,
    }
    delivered: list[Any] = []
    producer = kafka_clients(CKProducer({**conf, "acks": "all", "message.timeout.ms": 20_000}))
    producer.produce(mine, b"confluent", partition=0, on_delivery=lambda e, _m: delivered.append(e))
    producer.flush(30)
    assert delivered == [None]
    refused: list[Any] = []
    producer = kafka_clients(CKProducer({**conf, "acks": "all", "message.timeout.ms": 20_000}))
    producer.produce(other, b"never", partition=0, on_delivery=lambda e, _m: refused.append(e))
    producer.flush(30)
    assert [e.code() for e in refused] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]

    # Nothing reached the other topic; all three writes reached hers.
    assert asyncio.run(end_offset(other)) == 0
    assert asyncio.run(end_offset(mine)) == 3

    # Consuming in her group: aiokafka (and commits), then confluent-kafka from the commit.
    async def aiokafka_consume() -> None:
        consumer = AIOKafkaConsumer(
            mine,
            bootstrap_servers=dev.kafka_bootstrap,
            ssl_context=create_ssl_context(cafile=ca(dev)),
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **login,  # type: ignore[arg-type]
        )
        await consumer.start()
        try:
            got = [(await asyncio.wait_for(consumer.getone(), 30)).value for _ in range(2)]
            assert got == [b"grpc", b"aiokafka"]
            await consumer.commit()
        finally:
            await consumer.stop()

    asyncio.run(aiokafka_consume())
    ck = CKConsumer({**conf, "group.id": group, "auto.offset.reset": "earliest"})
    try:
        ck.subscribe([mine])
        values = []
        for _ in range(120):
            msg = ck.poll(0.5)
            if msg is not None and msg.error() is None:
                values.append(msg.value())
                break
        assert values == [b"confluent"]  # from the committed offset 2
    finally:
        ck.close()


# -- the produce stream (issue 18): authenticated once per stream, authorized per request -------
FRANK, FRANK_PASSWORD = "frank", "franks-password-on-a-stream"


def test_produce_stream_principal_per_stream_and_acls_per_request(sasl_cluster: DevCluster) -> None:
    """frank may write one topic. On his ProduceStream a request to it is written and one to the
    other topic is answered TOPIC_AUTHORIZATION_FAILED, and the stream goes on; alice's stream,
    open at the same time to the same node, writes the other topic (each stream has its own
    principal). A stream signed by a node's key (a forwarded principal) is believed; one with a
    wrong password ends with SASL_AUTHENTICATION_FAILED before any request is read. Nothing
    refused is written."""
    from liferaft.launcher import _node_assertion
    from liferaft_proto import records
    from liferaft_proto.status import error_detail
    from liferaft_proto.v1 import errors_pb2

    dev = sasl_cluster
    mine, other = unique("frank-own"), unique("frank-other")
    acls = [
        Acl(principal=f"User:{FRANK}", operation="write", resource_type="topic", resource_name=mine)
    ]

    def req(topic: str, cid: int) -> broker_pb2.ProduceStreamRequest:
        data = records.build_batch([records.Record(value=b"%d" % cid)])
        one = broker_pb2.ProduceRequest(
            topic=topic, partition=0, acks=-1, timeout_ms=20_000, records=data, correlation_id=cid
        )
        return broker_pb2.ProduceStreamRequest(requests=[one])

    unread: dict[int, list[broker_pb2.ProduceResponse]] = {}

    async def answer(call: Any) -> broker_pb2.ProduceResponse:
        """The call's next answer (a message may carry several)."""
        left = unread.setdefault(id(call), [])
        if not left:
            message = await asyncio.wait_for(call.read(), 60)
            left.extend(message.responses)
        return left.pop(0)

    async def ends() -> dict[str, int]:
        async with AdminClient(dev.bootstrap, **sasl(dev)) as admin:  # type: ignore[arg-type]
            tps = [TopicPartition(mine, 0), TopicPartition(other, 0)]
            got = await admin.list_offsets({tp: "latest" for tp in tps})
            return {tp.topic: got[tp].offset for tp in tps}

    async def run() -> None:
        async with AdminClient(dev.bootstrap, **sasl(dev)) as admin:  # type: ignore[arg-type]
            await admin.create_topic(mine, partitions=1, replication_factor=3)
            await admin.create_topic(other, partitions=1, replication_factor=3)
            await admin.upsert_user(FRANK, FRANK_PASSWORD)
            await admin.create_acls(acls)
            leaders = await admin.describe_topics([mine, other])
        _applied_everywhere(dev, acls)
        assert leaders[mine].partitions[0].leader and leaders[other].partitions[0].leader

        def channel(topic: str, user: str = USER, password: str = PASSWORD) -> tuple[Any, Any]:
            node = leaders[topic].partitions[0].leader
            sec = Security.from_options(sasl(dev, user=user, password=password))
            creds = sec.channel_credentials()
            assert creds is not None
            return grpc.aio.secure_channel(dev.node(node).address, creds), sec.call_metadata()

        # frank: one stream to the leader of his topic, one to the other's (maybe the same node).
        ch_a, md_frank = channel(mine, FRANK, FRANK_PASSWORD)
        ch_b, _ = channel(other, FRANK, FRANK_PASSWORD)
        ch_alice, md_alice = channel(other)
        async with ch_a, ch_b, ch_alice:
            frank_mine = broker_pb2_grpc.BrokerStub(ch_a).ProduceStream(metadata=md_frank)  # type: ignore[no-untyped-call]
            frank_other = broker_pb2_grpc.BrokerStub(ch_b).ProduceStream(metadata=md_frank)  # type: ignore[no-untyped-call]
            alice = broker_pb2_grpc.BrokerStub(ch_alice).ProduceStream(metadata=md_alice)  # type: ignore[no-untyped-call]
            await frank_mine.write(req(mine, 1))
            await frank_other.write(req(other, 2))
            await alice.write(req(other, 3))
            await frank_mine.write(req(mine, 4))  # after a refusal on another of his streams
            one, two, three, four = (
                await answer(frank_mine),
                await answer(frank_other),
                await answer(alice),
                await answer(frank_mine),
            )
            assert (one.correlation_id, one.HasField("error")) == (1, False)
            assert two.correlation_id == 2
            assert two.error.code == errors_pb2.TOPIC_AUTHORIZATION_FAILED
            assert two.error.message == f"User:{FRANK} may not WRITE topic {other}"
            assert (three.correlation_id, three.HasField("error")) == (3, False)
            assert (four.correlation_id, four.HasField("error"), four.base_offset) == (4, False, 1)
            # The refused stream is still open: a second refusal is a value too.
            await frank_other.write(req(other, 5))
            five = await answer(frank_other)
            assert five.error.code == errors_pb2.TOPIC_AUTHORIZATION_FAILED
            for call in (frank_mine, frank_other, alice):
                await call.done_writing()
                assert await call.code() == grpc.StatusCode.OK

        # A wrong password: the stream ends with the failed login, before reading a request.
        ch_bad, md_bad = channel(mine, FRANK, "not-his")
        async with ch_bad:
            bad = broker_pb2_grpc.BrokerStub(ch_bad).ProduceStream(metadata=md_bad)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await asyncio.wait_for(bad.read(), 60)
            detail = error_detail(err.value)
            assert detail is not None, (err.value.code(), err.value.details())
            assert detail.code == errors_pb2.SASL_AUTHENTICATION_FAILED

        # Signed by node 2's key, for the node certificate's principal (a super user here).
        node = leaders[mine].partitions[0].leader
        creds = Security.from_options(
            {"security_protocol": "SSL", "ssl_cafile": ca(dev)}
        ).channel_credentials()
        assert creds is not None
        assertion = _node_assertion(dev.tls_dir / "node-2")
        signed_md = tuple(assertion.metadata(assertion.principal_of_cert(), "ProduceStream"))
        signed = grpc.aio.secure_channel(dev.node(node).address, creds)
        async with signed:
            call = broker_pb2_grpc.BrokerStub(signed).ProduceStream(metadata=signed_md)  # type: ignore[no-untyped-call]
            await call.write(req(mine, 7))
            seven = await answer(call)
            assert (seven.correlation_id, seven.HasField("error")) == (7, False)
            await call.done_writing()

        assert await ends() == {mine: 3, other: 1}

    asyncio.run(run())
