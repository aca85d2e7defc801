"""Mutual TLS between nodes: the node's TLS contexts, loaded from its files, and who a peer is.

A node is named by the URI subject alternative name `liferaft://node/N` in a certificate signed
by the cluster CA (`liferaft certs create` makes them; docs/security.md). Both ends of a Raft
connection present their certificate (TLS 1.3 only) and check the other's against the CA; then
each reads the other's node id from its certificate, and the transport accepts the connection
only if the Hello claims that same id and, on the dialling side, it is the node it dialled
(node/transport.py). Host names in a certificate play no part: peers are found by --peers and
proven by the node id, so a certificate for a host name never makes a node.

Files: a node reads `ca.crt`, `node.crt` and `node.key` from --tls-dir (or DIR/node-N/, the
layout `liferaft certs create --dir DIR` writes), or each from its own flag. Everything is
checked at start-up, so a wrong or missing file stops the node with a message that says which,
before it listens: its own certificate must name its own node id and be signed by the CA.
"""

from __future__ import annotations

import datetime as dt
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.config import ConfigError

if TYPE_CHECKING:
    from cryptography import x509

__all__ = [
    "NODE_URI_PREFIX",
    "PeerIdentityError",
    "PeerTls",
    "TlsFiles",
    "cert_node_ids",
    "peer_node_id",
]

NODE_URI_PREFIX = "liferaft://node/"
_NODE_URI = re.compile(r"liferaft://node/([1-9][0-9]{0,9})")

CA_FILE = "ca.crt"
CERT_FILE = "node.crt"
KEY_FILE = "node.key"


class PeerIdentityError(Exception):
    """A peer's certificate names no node, or more than one."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    @classmethod
    def find(
        cls,
        node_id: int,
        tls_dir: Path | None,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
    ) -> TlsFiles:
        """The node's three files: each given one, else from tls_dir (or tls_dir/node-N/)."""
        folder: Path | None = None
        if tls_dir is not None:
            for candidate in (tls_dir, tls_dir / f"node-{node_id}"):
                if (candidate / CERT_FILE).exists():
                    folder = candidate
                    break
            if folder is None and (cert is None or key is None or ca is None):
                raise ConfigError(
                    f"--tls-dir {tls_dir}: neither {tls_dir / CERT_FILE} nor "
                    f"{tls_dir / f'node-{node_id}' / CERT_FILE} exists (make them with "
                    f"`liferaft certs create --dir {tls_dir} --nodes {node_id}`)"
                )
        picked: dict[str, Path] = {}
        for what, given, name in (
            ("ca", ca, CA_FILE),
            ("cert", cert, CERT_FILE),
            ("key", key, KEY_FILE),
        ):
            if given is None and folder is None:
                raise ConfigError(
                    f"--tls-{what} is missing: give --tls-dir, or all of --tls-ca, --tls-cert "
                    "and --tls-key"
                )
            path = given if given is not None else folder / name  # type: ignore[operator]
            if not path.is_file():
                raise ConfigError(f"TLS {what} file {path} does not exist")
            picked[what] = path
        return cls(picked["ca"], picked["cert"], picked["key"])


def cert_node_ids(cert: Mapping[str, Any]) -> set[int]:
    """The node ids a certificate (as ssl's getpeercert() returns it) names."""
    ids: set[int] = set()
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "URI" and (m := _NODE_URI.fullmatch(value)):
            ids.add(int(m.group(1)))
    return ids


def peer_node_id(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> int:
    """The node id in a verified peer certificate; PeerIdentityError if it names none or many."""
    if ssl_object is None:
        raise PeerIdentityError("the connection is not TLS")
    cert = ssl_object.getpeercert()
    if not cert:
        raise PeerIdentityError("the peer presented no certificate")
    ids = cert_node_ids(cert)
    if len(ids) != 1:
        subject: dict[str, str] = dict(x[0] for x in cert.get("subject", ()))  # type: ignore[misc]
        raise PeerIdentityError(
            f"the certificate of {subject.get('commonName', '?')!r} names "
            + (f"several nodes {sorted(ids)}" if ids else f"no node ({NODE_URI_PREFIX}N)")
        )
    return ids.pop()


def _context(purpose: ssl.Purpose, files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(
        ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # The node id in the certificate, not a host name, says who a peer is (peer_node_id).
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=str(files.ca))
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"cannot load the cluster CA {files.ca}: {e}") from None
    try:
        ctx.load_cert_chain(str(files.cert), str(files.key))
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(
            f"cannot load the node certificate {files.cert} with key {files.key}: {e} "
            "(is the key the certificate's?)"
        ) from None
    return ctx


def _check_own_cert(files: TlsFiles, node_id: int) -> None:
    """Refuse, at start, a certificate that would make every peer refuse this node later."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        # ca.crt may hold several CAs (while a CA is rotated: docs/security.md).
        cas = x509.load_pem_x509_certificates(files.ca.read_bytes())
    except ValueError as e:
        raise ConfigError(f"{files.cert} or {files.ca} is not a PEM certificate: {e}") from None
    if not any(_issued_by(cert, ca) for ca in cas):
        raise ConfigError(
            f"{files.cert} is not signed by the CA in {files.ca}: peers would refuse this node"
        )
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    ids = {int(m.group(1)) for u in uris if (m := _NODE_URI.fullmatch(u))}
    if ids != {node_id}:
        named = (
            f"node {sorted(ids)[0]}"
            if len(ids) == 1
            else f"nodes {sorted(ids)}"
            if ids
            else "no node"
        )
        raise ConfigError(
            f"{files.cert} names {named}, but this is node {node_id}: give node {node_id}'s "
            f"certificate (`liferaft certs create --nodes {node_id}`)"
        )
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ConfigError(
            f"{files.cert} is valid from {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d}, not now: make a new one"
        )


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class PeerTls:
    """One node's two TLS contexts: for connections it accepts and for those it dials."""

    def __init__(self, files: TlsFiles, node_id: int) -> None:
        _check_own_cert(files, node_id)
        self.files = files
        self.node_id = node_id
        self.server = _context(ssl.Purpose.CLIENT_AUTH, files)
        self.client = _context(ssl.Purpose.SERVER_AUTH, files)


CLIENT_AUTH_MODES = ("none", "required")
"""How the client listeners check clients: `none` (TLS encrypts, the client proves nothing) or
`required` (mutual TLS: a client presents a certificate signed by the cluster CA, as
`liferaft certs create-client` makes). gRPC's server credentials offer exactly these two, so the
Kafka listener offers the same and neither listener is more open than the other."""


class ClientTls:
    """TLS for the client listeners (gRPC, Kafka and the stream listener), with the node's own
    certificate.

    The node certificate names the host names and addresses given to `liferaft certs create
    --hosts`, which is what a client checks; its node-id URI means nothing to a client. One
    certificate per node keeps rotation one step (docs/security.md). Clients may speak TLS 1.2
    (librdkafka, older JVMs); between nodes it is 1.3 only.
    """

    def __init__(self, files: TlsFiles, client_auth: str) -> None:
        if client_auth not in CLIENT_AUTH_MODES:
            raise ConfigError(
                f"client_tls_auth must be one of {', '.join(CLIENT_AUTH_MODES)}, "
                f"got {client_auth!r}"
            )
        self.files = files
        self.require_client_cert = client_auth == "required"
        try:
            self._ca = files.ca.read_bytes()
            self._cert = files.cert.read_bytes()
            self._key = files.key.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read the client listener's TLS files: {e}") from None
        self.kafka = self._server_context()
        self.stream = self.kafka
        """The stream listener's (node/stream_listener.py): the same rules as gRPC's."""

    def _server_context(self) -> ssl.SSLContext:
        """An ssl context for a plain-asyncio client listener, with the same rules as the gRPC
        listener's credentials (grpc_server_credentials)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(str(self.files.cert), str(self.files.key))
            if self.require_client_cert:
                ctx.load_verify_locations(cafile=str(self.files.ca))
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"cannot load the client listener's TLS files: {e}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_NONE
        return ctx

    def grpc_server_credentials(self) -> Any:
        """grpc.ServerCredentials for the gRPC listener."""
        import grpc

        return grpc.ssl_server_credentials(
            [(self._key, self._cert)],
            root_certificates=self._ca if self.require_client_cert else None,
            require_client_auth=self.require_client_cert,
        )

    def grpc_peer_credentials(self) -> Any:
        """grpc.ChannelCredentials for this node's calls to another node's gRPC listener
        (requests forwarded to the controller or a leader): the node's certificate is its
        client certificate, so a listener that requires one accepts it."""
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=self._ca, private_key=self._key, certificate_chain=self._cert
        )
