"""The client's SASL options (client/security.py): aiokafka's names, checked when the client is
made, and the credentials added to every call."""

from __future__ import annotations

import pytest

from client import AdminClient
from client.security import Security


def sasl(**kw: str) -> dict[str, str]:
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "pw",
        **kw,
    }


def test_sasl_ssl_is_tls_with_credentials_on_every_call() -> None:
    sec = Security.from_options(sasl())
    assert sec.tls and (sec.username, sec.password, sec.mechanism) == (
        "alice",
        "pw",
        "SCRAM-SHA-512",
    )
    assert len(sec.interceptors()) == 3  # unary, server-streaming and produce-stream calls
    assert "pw" not in repr(sec)
    plain = Security.from_options(sasl(security_protocol="SASL_PLAINTEXT"))
    assert not plain.tls and plain.interceptors()
    assert Security.from_options({}).interceptors() == []


@pytest.mark.parametrize(
    "options,words",
    [
        (sasl(sasl_plain_password=""), "needs sasl_plain_username and sasl_plain_password"),
        (sasl(sasl_plain_username=""), "needs sasl_plain_username and sasl_plain_password"),
        (sasl(sasl_mechanism="PLAIN"), "sasl_mechanism must be one of SCRAM-SHA-256"),
        (sasl(security_protocol="SSL"), "set security_protocol='SASL_SSL'"),
        (sasl(security_protocol="PLAINTEXT"), "set security_protocol='SASL_SSL'"),
        (sasl(security_protocol="SASL_PLAINTEXT", ssl_cafile="x"), "'SASL_SSL' to use TLS"),
    ],
)
def test_bad_sasl_options_are_refused_when_the_client_is_made(
    options: dict[str, str], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        AdminClient("127.0.0.1:1", **options)  # type: ignore[arg-type]
