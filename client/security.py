"""How a client reaches the cluster's gRPC listeners: plaintext, or TLS with an optional client
certificate, and with SASL_* a SCRAM username and password. The options are named as aiokafka
names them (`security_protocol`, `ssl_cafile`, `ssl_certfile`, `ssl_keyfile`, `sasl_mechanism`,
`sasl_plain_username`, `sasl_plain_password`), so one set of settings serves both clients.

gRPC calls are independent, so the username and password ride every call's metadata (an
interceptor adds them) and the node checks them against the user's stored SCRAM credential,
caching what it verified (node/authn.py says why). Over SASL_SSL only TLS sees them; with
SASL_PLAINTEXT they cross the network in the clear, which is why that protocol must be named.

gRPC builds its TLS from PEM bytes, not from an `ssl.SSLContext`, so `ssl_context` is refused
with a message that says which files to give instead. The files are read when the client is
made: a missing or unreadable one is a ValueError then, not a failure at the first call.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import grpc

from liferaft_proto.credentials import MECHANISM_KEY, PASSWORD_KEY, USER_KEY

__all__ = ["PROTOCOLS", "Security", "SecurityOptions"]

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
"""The security protocols this client speaks (Kafka's names)."""


class SecurityOptions(TypedDict, total=False):
    """The keyword arguments Producer, Consumer and AdminClient take for security."""

    security_protocol: str
    ssl_context: ssl.SSLContext | None
    ssl_cafile: str | Path | None
    ssl_certfile: str | Path | None
    ssl_keyfile: str | Path | None
    sasl_mechanism: str | None
    sasl_plain_username: str | None
    sasl_plain_password: str | None


def _read(option: str, path: str | Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{option} {path}: cannot read it ({e.strerror or e})") from None


@dataclass(frozen=True, slots=True)
class Security:
    protocol: str = "PLAINTEXT"
    ca: bytes | None = None
    """PEM CA certificate(s) the nodes' certificates must chain to; None: the system's."""
    cert: bytes | None = None
    key: bytes | None = None
    mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Security:
        unknown = set(options) - set(SecurityOptions.__annotations__)
        if unknown:
            raise TypeError(f"unknown security option(s): {', '.join(sorted(unknown))}")
        protocol = str(options.get("security_protocol") or "PLAINTEXT").upper()
        if protocol not in PROTOCOLS:
            raise ValueError(
                f"security_protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}"
            )
        if options.get("ssl_context") is not None:
            raise ValueError(
                "ssl_context cannot be used: gRPC takes PEM files, not an ssl.SSLContext; give "
                "ssl_cafile (and ssl_certfile and ssl_keyfile for a client certificate)"
            )
        files = {k: options.get(k) for k in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")}
        given = [k for k, v in files.items() if v is not None]
        if protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and given:
            raise ValueError(
                f"{', '.join(given)} given with security_protocol PLAINTEXT: set "
                f"security_protocol={protocol.replace('PLAINTEXT', 'SSL')!r} to use TLS"
            )
        if (files["ssl_certfile"] is None) != (files["ssl_keyfile"] is None):
            raise ValueError("a client certificate needs both ssl_certfile and ssl_keyfile")
        mechanism = str(options.get("sasl_mechanism") or "SCRAM-SHA-512").upper()
        username = options.get("sasl_plain_username")
        password = options.get("sasl_plain_password")
        if protocol.startswith("SASL"):
            if mechanism not in MECHANISMS:
                raise ValueError(
                    f"sasl_mechanism must be one of {', '.join(MECHANISMS)}, got {mechanism!r}"
                )
            if not username or not password:
                raise ValueError(
                    f"security_protocol {protocol} needs sasl_plain_username and "
                    "sasl_plain_password"
                )
        elif username or password or options.get("sasl_mechanism"):
            raise ValueError(
                f"sasl_* options given with security_protocol {protocol}: set "
                "security_protocol='SASL_SSL' to log in"
            )
        return cls(
            protocol,
            _read("ssl_cafile", files["ssl_cafile"]),
            _read("ssl_certfile", files["ssl_certfile"]),
            _read("ssl_keyfile", files["ssl_keyfile"]),
            mechanism,
            str(username) if username else None,
            str(password) if password else None,
        )

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def call_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """The metadata that carries the SASL credentials on a call (empty without SASL), for
        callers that pass it themselves instead of through interceptors (the raw bench)."""
        if self.username is None or self.password is None:
            return ()
        return (
            (USER_KEY, self.username.encode()),
            (PASSWORD_KEY, self.password.encode()),
            (MECHANISM_KEY, self.mechanism),
        )

    def interceptors(self) -> list[Any]:
        """The interceptors that add the SASL credentials to every call (none without SASL)."""
        md = self.call_metadata()
        if not md:
            return []
        return [_Credentials(md), _StreamCredentials(md), _BidiCredentials(md)]

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """None for plaintext; else TLS credentials checking the node's host name."""
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def _with(details: Any, md: tuple[tuple[str, str | bytes], ...]) -> Any:
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        grpc.aio.Metadata(*(tuple(details.metadata or ()) + md)),
        details.credentials,
        details.wait_for_ready,
    )


class _Credentials(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, md: tuple[tuple[str, str | bytes], ...]) -> None:
        self._md = md

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with(details, self._md), request)


class _BidiCredentials(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    """The produce stream (client/produce_stream.py). A class of its own: a grpc.aio channel
    files each interceptor under the first kind of call it intercepts, and only that one."""

    def __init__(self, md: tuple[tuple[str, str | bytes], ...]) -> None:
        self._md = md

    async def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_with(details, self._md), request_iterator)


class _StreamCredentials(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, md: tuple[tuple[str, str | bytes], ...]) -> None:
        self._md = md

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with(details, self._md), request)
