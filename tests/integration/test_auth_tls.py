"""TLS on the client listeners (issue 17, step 1) on real three-node clusters.

One cluster serves TLS with no client certificate asked for: liferaft's client (gRPC),
aiokafka and confluent-kafka (Kafka) create, produce and read over it, and a plaintext client
is refused and changes nothing. Another requires client certificates: a client with none, or
with one from another CA, is refused on both listeners and changes nothing, and one made by
`liferaft certs create-client` is served. Requests forwarded between nodes go over TLS too
(the node shows its own certificate).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import AdminClient, Consumer, LiferaftError, Producer
from liferaft.certs import create_certs, create_client_cert
from liferaft.launcher import DevCluster
from tests.clusters import running_cluster


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    with running_cluster(tmp_path_factory.mktemp("tls"), 3, ["--client-tls"]) as dev:
        yield dev


@pytest.fixture(scope="module")
def mtls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    args = ["--client-tls", "--client-tls-auth", "required"]
    with running_cluster(tmp_path_factory.mktemp("mtls"), 3, args) as dev:
        yield dev


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ca(dev: DevCluster) -> str:
    return str(dev.tls_dir / "ca.crt")


async def topics(dev: DevCluster) -> set[str]:
    """The cluster's topics, asked over TLS with the node's own certificate."""
    folder = dev.tls_dir / "node-1"
    async with AdminClient(
        dev.bootstrap,
        security_protocol="SSL",
        ssl_cafile=folder / "ca.crt",
        ssl_certfile=folder / "node.crt",
        ssl_keyfile=folder / "node.key",
    ) as admin:
        return set(await admin.list_topics())


def test_liferaft_client_over_tls(tls_cluster: DevCluster) -> None:
    name = unique("tls")

    async def run() -> None:
        async with AdminClient(
            tls_cluster.bootstrap, security_protocol="SSL", ssl_cafile=ca(tls_cluster)
        ) as admin:
            await admin.create_topic(name, partitions=2, replication_factor=3)
        async with Producer(
            tls_cluster.bootstrap, security_protocol="SSL", ssl_cafile=ca(tls_cluster)
        ) as producer:
            await producer.send_and_wait(name, b"over tls", key=b"k")
        async with Consumer(
            tls_cluster.bootstrap,
            auto_offset_reset="earliest",
            group_id=unique("g"),
            security_protocol="SSL",
            ssl_cafile=ca(tls_cluster),
        ) as consumer:
            consumer.subscribe([name])
            values: list[bytes | None] = []
            for _ in range(20):
                got = await consumer.getmany(timeout_ms=1_000)
                values += [r.value for recs in got.values() for r in recs]
                if values:
                    break
            assert values == [b"over tls"]

    asyncio.run(run())


def test_plaintext_client_is_refused_and_changes_nothing(tls_cluster: DevCluster) -> None:
    name = unique("plain")

    async def run() -> None:
        admin = AdminClient(tls_cluster.bootstrap, timeout_ms=3_000, request_timeout_ms=1_000)
        with pytest.raises(LiferaftError):
            async with admin:
                await admin.create_topic(name, partitions=1, replication_factor=1)
        assert name not in await topics(tls_cluster)

    asyncio.run(run())


def test_bad_security_options_are_refused_clearly(tls_cluster: DevCluster, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="security_protocol"):
        AdminClient(tls_cluster.bootstrap, security_protocol="SSLv2")
    with pytest.raises(ValueError, match="PLAINTEXT"):
        AdminClient(tls_cluster.bootstrap, ssl_cafile=ca(tls_cluster))
    with pytest.raises(ValueError, match="cannot read"):
        AdminClient(tls_cluster.bootstrap, security_protocol="SSL", ssl_cafile=tmp_path / "no")
    with pytest.raises(ValueError, match="ssl_cafile"):
        AdminClient(
            tls_cluster.bootstrap,
            security_protocol="SSL",
            ssl_context=ssl.create_default_context(),
        )


def test_aiokafka_and_confluent_kafka_over_ssl(tls_cluster: DevCluster) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.helpers import create_ssl_context
    from confluent_kafka import Consumer as CKConsumer

    name = unique("kssl")
    boot = tls_cluster.kafka_bootstrap

    async def run() -> None:
        context = create_ssl_context(cafile=ca(tls_cluster))
        admin = AIOKafkaAdminClient(
            bootstrap_servers=boot, security_protocol="SSL", ssl_context=context
        )
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, 1, 3)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(
            bootstrap_servers=boot, security_protocol="SSL", ssl_context=context, acks="all"
        )
        await producer.start()
        try:
            await producer.send_and_wait(name, b"from aiokafka")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            name,
            bootstrap_servers=boot,
            security_protocol="SSL",
            ssl_context=context,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), 20)
            assert record.value == b"from aiokafka"
        finally:
            await consumer.stop()

    asyncio.run(run())
    ck = CKConsumer(
        {
            "bootstrap.servers": boot,
            "security.protocol": "SSL",
            "ssl.ca.location": ca(tls_cluster),
            "group.id": unique("g"),
            "auto.offset.reset": "earliest",
        }
    )
    try:
        ck.subscribe([name])
        values = []
        for _ in range(40):
            msg = ck.poll(0.5)
            if msg is not None and msg.error() is None:
                values.append(msg.value())
                break
        assert values == [b"from aiokafka"]
    finally:
        ck.close()


def test_client_certificates_required(mtls_cluster: DevCluster, tmp_path: Path) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaConnectionError
    from aiokafka.helpers import create_ssl_context

    good = create_client_cert(mtls_cluster.tls_dir, "alice")
    create_certs(tmp_path / "other", [1])
    bad = create_client_cert(tmp_path / "other", "mallory")
    name = unique("mtls")

    def files(folder: Path) -> dict[str, Path]:
        return {
            "ssl_certfile": folder / "client.crt",
            "ssl_keyfile": folder / "client.key",
        }

    async def run() -> None:
        # gRPC: no certificate, or one from another CA: refused, nothing made.
        for extra in ({}, files(bad)):
            admin = AdminClient(
                mtls_cluster.bootstrap,
                timeout_ms=3_000,
                request_timeout_ms=1_000,
                security_protocol="SSL",
                ssl_cafile=ca(mtls_cluster),
                **extra,  # type: ignore[arg-type]
            )
            with pytest.raises(LiferaftError):
                async with admin:
                    await admin.create_topic(name, partitions=1, replication_factor=1)
        # Kafka: the same two are refused.
        for context in (
            create_ssl_context(cafile=ca(mtls_cluster)),
            create_ssl_context(
                cafile=ca(mtls_cluster),
                certfile=str(bad / "client.crt"),
                keyfile=str(bad / "client.key"),
            ),
        ):
            kadmin = AIOKafkaAdminClient(
                bootstrap_servers=mtls_cluster.kafka_bootstrap,
                security_protocol="SSL",
                ssl_context=context,
                request_timeout_ms=3_000,
            )
            with pytest.raises(KafkaConnectionError):
                await kadmin.start()
            await kadmin.close()
        assert name not in await topics(mtls_cluster)
        # alice's certificate is served on both.
        async with AdminClient(
            mtls_cluster.bootstrap,
            security_protocol="SSL",
            ssl_cafile=ca(mtls_cluster),
            **files(good),  # type: ignore[arg-type]
        ) as admin:
            await admin.create_topic(name, partitions=1, replication_factor=3)
        kadmin = AIOKafkaAdminClient(
            bootstrap_servers=mtls_cluster.kafka_bootstrap,
            security_protocol="SSL",
            ssl_context=create_ssl_context(
                cafile=ca(mtls_cluster),
                certfile=str(good / "client.crt"),
                keyfile=str(good / "client.key"),
            ),
        )
        await kadmin.start()
        try:
            # Asked of every node: those that are not the controller forward it over TLS.
            await kadmin.create_topics([NewTopic(name + "-k", 1, 3)])
        finally:
            await kadmin.close()
        assert {name, name + "-k"} <= await topics(mtls_cluster)

    asyncio.run(run())


def test_cli_certs_and_security_options(mtls_cluster: DevCluster) -> None:
    def liferaft(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "liferaft", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("LIFERAFT_")},
        )

    made = liferaft("certs", "create-client", "--dir", str(mtls_cluster.tls_dir), "--name", "bob")
    assert made.returncode == 0, made.stderr
    assert "User:CN=bob" in made.stdout
    again = liferaft("certs", "create-client", "--dir", str(mtls_cluster.tls_dir), "--name", "bob")
    assert again.returncode == 2 and "--force" in again.stderr
    bob = mtls_cluster.tls_dir / "clients" / "bob"
    tls = ["--security-protocol", "SSL", "--ssl-cafile", ca(mtls_cluster)]
    listed = liferaft(
        *tls,
        "--ssl-certfile",
        str(bob / "client.crt"),
        "--ssl-keyfile",
        str(bob / "client.key"),
        "topic",
        "list",
        "-b",
        mtls_cluster.bootstrap,
        "--timeout",
        "10",
    )
    assert listed.returncode == 0, listed.stderr
    refused = liferaft(*tls, "topic", "list", "-b", mtls_cluster.bootstrap, "--timeout", "2")
    assert refused.returncode == 1, refused.stdout
    assert "error:" in refused.stderr
