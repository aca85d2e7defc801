"""How a client reaches the cluster's gRPC listeners: plaintext, or TLS with an optional client
certificate. The options are named as aiokafka names them (`security_protocol`, `ssl_cafile`,
`ssl_certfile`, `ssl_keyfile`), so one set of settings serves both clients.

gRPC builds its TLS from PEM bytes, not from an `ssl.SSLContext`, so `ssl_context` is refused
with a message that says which files to give instead. The files are read when the client is
made: a missing or unreadable one is a ValueError then, not a failure at the first call.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import grpc

__all__ = ["PROTOCOLS", "Security", "SecurityOptions"]

PROTOCOLS = ("PLAINTEXT", "SSL")
"""The security protocols this client speaks (Kafka's names)."""


class SecurityOptions(TypedDict, total=False):
    """The keyword arguments Producer, Consumer and AdminClient take for security."""

    security_protocol: str
    ssl_context: ssl.SSLContext | None
    ssl_cafile: str | Path | None
    ssl_certfile: str | Path | None
    ssl_keyfile: str | Path | None


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
        if protocol == "PLAINTEXT" and given:
            raise ValueError(
                f"{', '.join(given)} given with security_protocol PLAINTEXT: set "
                "security_protocol='SSL' to use TLS"
            )
        if (files["ssl_certfile"] is None) != (files["ssl_keyfile"] is None):
            raise ValueError("a client certificate needs both ssl_certfile and ssl_keyfile")
        return cls(
            protocol,
            _read("ssl_cafile", files["ssl_cafile"]),
            _read("ssl_certfile", files["ssl_certfile"]),
            _read("ssl_keyfile", files["ssl_keyfile"]),
        )

    @property
    def tls(self) -> bool:
        return self.protocol == "SSL"

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """None for plaintext; else TLS credentials checking the node's host name."""
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )
