"""Authentication (node/authn.py, node/kafka/sasl.py, liferaft_proto/credentials.py): the SCRAM
login of the Kafka listener, the gRPC password check and its cache, the node's signature on a
forwarded principal, principals of certificates, and a real Kafka listener on loopback that
refuses requests before the login and runs the connection's requests as the logged-in user."""

from __future__ import annotations

import asyncio
import datetime
import io
import struct
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i16, i32
from scramp import ScramClient

from liferaft.certs import create_certs, create_client_cert
from liferaft_proto.credentials import NodeAssertion
from node import principal
from node.authn import (
    AssertionCheck,
    AuthError,
    GrpcAuth,
    PasswordCheck,
    SaslScram,
    cert_principal,
)
from node.kafka import server as kafka_server
from node.kafka.handlers import APIS
from node.kafka.wire import Api
from node.scram import Users, make_credential

# -- SCRAM on the Kafka listener -------------------------------------------------------------


def users_with(name: str, password: str, mechanism: str = "SCRAM-SHA-512") -> Users:
    return {name: {mechanism: make_credential(password, mechanism)}}


def login(users: Users, user: str, password: str, mechanism: str = "SCRAM-SHA-512") -> SaslScram:
    server = SaslScram(mechanism, lambda: users)
    client = ScramClient([mechanism], user, password)
    client.set_server_first(server.step(client.get_client_first().encode()).decode())
    client.set_server_final(server.step(client.get_client_final().encode()).decode())
    return server


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_login_with_the_stored_credential(mechanism: str) -> None:
    server = login(users_with("alice", "pw", mechanism), "alice", "pw", mechanism)
    assert server.done and server.user == "alice"


@pytest.mark.parametrize("user,password", [("alice", "wrong"), ("mallory", "pw")])
def test_a_wrong_password_and_an_unknown_user_fail_alike(user: str, password: str) -> None:
    with pytest.raises(AuthError) as err:
        login(users_with("alice", "pw"), user, password)
    assert str(err.value) == (
        "Authentication failed during authentication due to invalid credentials with SASL "
        "mechanism SCRAM-SHA-512"
    )


def test_a_credential_removed_mid_login_fails_it() -> None:
    users = users_with("alice", "pw")
    server = SaslScram("SCRAM-SHA-512", lambda: users)
    client = ScramClient(["SCRAM-SHA-512"], "alice", "pw")
    client.set_server_first(server.step(client.get_client_first().encode()).decode())
    users.clear()
    with pytest.raises(AuthError):
        server.step(client.get_client_final().encode())
    assert not server.done


# -- passwords on gRPC -------------------------------------------------------------------------


def test_password_check_and_its_cache_follow_the_stored_credential() -> None:
    users = users_with("alice", "old")
    check = PasswordCheck(lambda: users)
    assert check.principal("alice", "old") == "User:alice"
    assert check.principal("alice", "old") == "User:alice"  # from the cache
    with pytest.raises(AuthError):
        check.principal("alice", "new")
    # The password changes: the cached login of the old one no longer counts.
    users["alice"]["SCRAM-SHA-512"] = make_credential("new")
    with pytest.raises(AuthError):
        check.principal("alice", "old")
    assert check.principal("alice", "new") == "User:alice"
    # The user goes: refused, cached or not.
    del users["alice"]
    with pytest.raises(AuthError):
        check.principal("alice", "new")


def test_password_cache_is_bounded_and_holds_no_password() -> None:
    users = {
        f"u{i}": {"SCRAM-SHA-256": make_credential(f"pw{i}", "SCRAM-SHA-256")} for i in range(5)
    }
    check = PasswordCheck(lambda: users, entries=3)
    for i in range(5):
        check.principal(f"u{i}", f"pw{i}")
    assert len(check._verified) == 3
    assert all(b"pw" not in k for k in check._verified)


def test_a_mechanism_the_user_lacks_is_refused() -> None:
    check = PasswordCheck(lambda: users_with("alice", "pw", "SCRAM-SHA-256"))
    assert check.principal("alice", "pw") == "User:alice"  # its one mechanism
    with pytest.raises(AuthError, match="SCRAM-SHA-512"):
        check.principal("alice", "pw", "SCRAM-SHA-512")
    with pytest.raises(AuthError, match="unknown SASL mechanism"):
        check.principal("alice", "pw", "PLAIN")


# -- forwarded principals ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("pki")
    create_certs(root / "ours", [1, 2], hosts=["127.0.0.1"])
    create_certs(root / "theirs", [1], hosts=["127.0.0.1"], cluster="other")
    return SimpleNamespace(
        ours=root / "ours", theirs=root / "theirs", client=create_client_cert(root / "ours", "eve")
    )


def assertion(folder: Path, cert: str = "node.crt", key: str = "node.key") -> NodeAssertion:
    return NodeAssertion.load(
        (folder / "ca.crt").read_bytes(), (folder / cert).read_bytes(), (folder / key).read_bytes()
    )


def test_a_nodes_signed_principal_is_believed(pki: SimpleNamespace) -> None:
    check = AssertionCheck((pki.ours / "ca.crt").read_bytes())
    md = dict(assertion(pki.ours / "node-2").metadata("User:alice", "CreateTopics"))
    assert check.principal(md, "CreateTopics") == "User:alice"
    assert check.principal({}, "CreateTopics") is None


def test_forged_principals_are_refused(pki: SimpleNamespace) -> None:
    check = AssertionCheck((pki.ours / "ca.crt").read_bytes())
    good = dict(assertion(pki.ours / "node-1").metadata("User:bob", "DeleteTopics"))
    with pytest.raises(AuthError, match="does not verify"):  # another principal
        check.principal({**good, "liferaft-on-behalf-of-bin": b"User:admin"}, "DeleteTopics")
    with pytest.raises(AuthError, match="does not verify"):  # another RPC
        check.principal(good, "UpsertUser")
    with pytest.raises(AuthError, match="cluster CA"):  # another cluster's node
        check.principal(
            dict(assertion(pki.theirs / "node-1").metadata("User:bob", "DeleteTopics")),
            "DeleteTopics",
        )
    with pytest.raises(AuthError, match="names no node"):  # a client certificate of our CA
        check.principal(
            dict(assertion(pki.client, "client.crt", "client.key").metadata("User:bob", "X")), "X"
        )
    with pytest.raises(AuthError, match="too old"):
        old = assertion(pki.ours / "node-1").metadata("User:bob", "X", now=time.time() - 3600)
        check.principal(dict(old), "X")
    with pytest.raises(AuthError, match="without a node's signature"):
        check.principal({"liferaft-on-behalf-of-bin": b"User:admin"}, "X")


def test_grpc_auth_order_and_refusals(pki: SimpleNamespace) -> None:
    users = users_with("alice", "pw")
    ca = (pki.ours / "ca.crt").read_bytes()
    sasl = GrpcAuth(True, lambda: users, ca)
    creds = [("liferaft-user-bin", b"alice"), ("liferaft-password-bin", b"pw")]
    assert sasl.principal(creds, {}, "Produce") == "User:alice"
    with pytest.raises(AuthError, match="username and password"):
        sasl.principal([], {}, "Produce")
    with pytest.raises(AuthError, match="invalid credentials"):
        sasl.principal([creds[0], ("liferaft-password-bin", b"no")], {}, "Produce")
    with pytest.raises(AuthError, match="needs a password"):
        sasl.principal(creds[:1], {}, "Produce")
    signed = assertion(pki.ours / "node-1").metadata("User:alice", "Produce")
    assert sasl.principal(signed, {}, "Produce") == "User:alice"
    # Without SASL: a client certificate names the caller, else ANONYMOUS.
    plain = GrpcAuth(False, lambda: users, ca)
    pem = (pki.client / "client.crt").read_bytes()
    assert plain.principal([], {"x509_pem_cert": [pem]}, "Metadata") == "User:CN=eve"
    assert plain.principal([], {}, "Metadata") == principal.ANONYMOUS


def test_certificate_principals_are_written_as_kafka_writes_them() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acme, inc"),
            x509.NameAttribute(NameOID.COMMON_NAME, "alice"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    # Most specific first, no spaces, RFC 4514 escaping: as Kafka's X500Principal.getName().
    assert cert_principal(cert) == r"User:CN=alice,O=acme\, inc,C=DE"


# -- a real Kafka listener on loopback --------------------------------------------------------


def request(key: int, version: int, correlation: int, **body: Any) -> bytes:
    cls = load_request_schema(key, version)
    header_cls = cls.__header_schema__
    header_kw: dict[str, Any] = {
        "request_api_key": i16(key),
        "request_api_version": i16(version),
        "correlation_id": i32(correlation),
        "client_id": "test",
    }
    buf = io.BytesIO()
    entity_writer(header_cls)(buf, header_cls(**header_kw))
    entity_writer(cls)(buf, cls(**body))
    data = buf.getvalue()
    return struct.pack(">i", len(data)) + data


async def response(reader: asyncio.StreamReader, key: int, version: int) -> Any:
    size = int.from_bytes(await asyncio.wait_for(reader.readexactly(4), 5), "big")
    data = await reader.readexactly(size)
    cls = load_response_schema(key, version)
    _, used = entity_reader(cls.__header_schema__)(data, 0)
    body, _ = entity_reader(cls)(data, used)
    return body


async def closed(reader: asyncio.StreamReader) -> bool:
    """The node closed the connection without another answer."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
async def listener(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Kafka listener that asks for SASL, whose DescribeCluster (key 60) answers nothing
    but records the principal it ran as."""
    seen: list[str] = []

    async def record(ctx: Any, body: Any, version: int) -> Any:
        seen.append(principal.caller.get())
        from node.kafka.wire import CloseConnection

        raise CloseConnection("recorded")

    apis = dict(APIS)
    apis[60] = Api(60, "DescribeCluster", 0, 1, record)
    monkeypatch.setattr(kafka_server, "APIS", apis)
    users = users_with("alice", "pw")
    ctx = SimpleNamespace(
        sasl=True,
        broker=SimpleNamespace(controller=SimpleNamespace(state=SimpleNamespace(users=users))),
        classic=SimpleNamespace(sweep=lambda: None),
    )
    lst = kafka_server.KafkaListener(ctx, "127.0.0.1", 0)  # type: ignore[arg-type]
    await lst.start()
    assert lst._server is not None
    port = lst._server.sockets[0].getsockname()[1]
    yield SimpleNamespace(port=port, seen=seen)
    await lst.stop()


async def test_kafka_requests_before_the_login_close_the_connection(listener: Any) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(request(60, 0, 1, include_cluster_authorized_operations=False))
    await writer.drain()
    assert await closed(reader)
    assert listener.seen == []
    writer.close()


async def scram_over_kafka(
    port: int, password: str
) -> tuple[Any, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request(17, 1, 1, mechanism="SCRAM-SHA-512"))
    hs = await response(reader, 17, 1)
    assert hs.error_code == 0 and "SCRAM-SHA-512" in hs.mechanisms
    client = ScramClient(["SCRAM-SHA-512"], "alice", password)
    writer.write(request(36, 2, 2, auth_bytes=client.get_client_first().encode()))
    first = await response(reader, 36, 2)
    client.set_server_first(first.auth_bytes.decode())
    writer.write(request(36, 2, 3, auth_bytes=client.get_client_final().encode()))
    return await response(reader, 36, 2), reader, writer


async def test_kafka_login_sets_the_connections_principal(listener: Any) -> None:
    final, reader, writer = await scram_over_kafka(listener.port, "pw")
    assert final.error_code == 0
    writer.write(request(60, 0, 4, include_cluster_authorized_operations=False))
    await writer.drain()
    await asyncio.wait_for(reader.read(), 5)
    assert listener.seen == ["User:alice"]
    writer.close()


async def test_kafka_wrong_password_is_answered_then_closed(listener: Any) -> None:
    final, reader, writer = await scram_over_kafka(listener.port, "nope")
    assert final.error_code == 58  # SASL_AUTHENTICATION_FAILED
    assert "invalid credentials" in final.error_message
    writer.write(request(60, 0, 4, include_cluster_authorized_operations=False))
    await writer.drain()
    assert await closed(reader)
    assert listener.seen == []
    writer.close()


# -- the setting ------------------------------------------------------------------------------


def config(tmp_path: Path, **kw: Any) -> Any:
    from node.config import NodeConfig

    return NodeConfig(
        node_id=1, listen="127.0.0.1:9092", peers={1: "127.0.0.1:9092"}, data_dir=tmp_path, **kw
    )


@pytest.mark.parametrize(
    "kw,protocol,tls",
    [
        ({}, "PLAINTEXT", False),
        ({"client_tls": True}, "SSL", True),
        ({"client_security_protocol": "sasl_ssl"}, "SASL_SSL", True),
        ({"client_security_protocol": "SASL_PLAINTEXT"}, "SASL_PLAINTEXT", False),
        ({"client_security_protocol": "SSL", "client_tls_auth": "required"}, "SSL", True),
    ],
)
def test_security_protocol_setting(
    tmp_path: Path, kw: dict[str, Any], protocol: str, tls: bool
) -> None:
    cfg = config(tmp_path, tls_dir=tmp_path, **kw).validate()
    assert (cfg.client_security_protocol, cfg.client_tls) == (protocol, tls)
    assert cfg.sasl == protocol.startswith("SASL")


@pytest.mark.parametrize(
    "kw,words",
    [
        ({"client_security_protocol": "SASL_SCRAM"}, "must be one of PLAINTEXT, SSL"),
        ({"client_security_protocol": "PLAINTEXT", "client_tls": True}, "contradict"),
        ({"client_security_protocol": "SASL_PLAINTEXT", "client_tls": True}, "use SASL_SSL"),
    ],
)
def test_bad_security_settings_are_refused(tmp_path: Path, kw: dict[str, Any], words: str) -> None:
    from node.config import ConfigError

    with pytest.raises(ConfigError, match=words):
        config(tmp_path, tls_dir=tmp_path, **kw).validate()


def test_sasl_needs_the_nodes_certificates(tmp_path: Path) -> None:
    from node.config import ConfigError

    with pytest.raises(ConfigError, match="forwards requests"):
        config(
            tmp_path,
            insecure_plaintext_between_nodes=True,
            client_security_protocol="SASL_PLAINTEXT",
        ).validate()


async def test_before_the_login_requests_are_small_and_the_login_is_timely(
    listener: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(struct.pack(">i", kafka_server.MAX_LOGIN_FRAME_BYTES + 1))
    await writer.drain()
    assert await closed(reader)  # refused on its size prefix, nothing read after it
    writer.close()
    monkeypatch.setattr(kafka_server, "LOGIN_TIMEOUT_S", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    assert await closed(reader)  # said nothing: closed after LOGIN_TIMEOUT_S
    writer.close()


async def test_a_listener_without_sasl_says_it_enables_no_mechanism() -> None:
    """A client configured for SASL against a PLAINTEXT/SSL listener is told, not hung up on."""
    ctx = SimpleNamespace(sasl=False, classic=SimpleNamespace(sweep=lambda: None))
    lst = kafka_server.KafkaListener(ctx, "127.0.0.1", 0)  # type: ignore[arg-type]
    await lst.start()
    try:
        assert lst._server is not None
        port = lst._server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request(17, 1, 1, mechanism="SCRAM-SHA-512"))
        answer = await response(reader, 17, 1)
        assert answer.error_code == 33 and answer.mechanisms == ()  # UNSUPPORTED_SASL_MECHANISM
        writer.close()
    finally:
        await lst.stop()
