"""Make a cluster CA and node certificates for mutual TLS between nodes (`liferaft certs create`).

This is the operator's tool, not the broker's: a node only loads what this makes (node/tls.py)
and never imports this module.

What it makes in DIR, for `--nodes 1,2,3`:

    DIR/ca.crt, DIR/ca.key          the cluster CA (keep ca.key off the nodes)
    DIR/node-N/ca.crt               the CA certificate again, so each folder is complete
    DIR/node-N/node.crt             node N's certificate, signed by the CA
    DIR/node-N/node.key             node N's key

A node's identity is the URI subject alternative name `liferaft://node/N` (NODE_URI below),
the only name node/tls.py reads; host names and addresses given with --hosts are added as DNS
or IP names for tools (and, later, clients) that check a host name, but never make a node. A
URI rather than a DNS name `node-N`, so that no host a user names can be taken for a node id.

Keys are ECDSA P-256 (fast handshakes, small certificates), written 0600. An existing CA in DIR
is reused (so a node added later is signed by the same CA); an existing node certificate is kept
unless `force`, which makes a new key and certificate for it (rotation: restart that node).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "NODE_CERT",
    "NODE_KEY",
    "CertsError",
    "CreatedCerts",
    "create_certs",
    "create_client_cert",
    "node_dir",
    "parse_node_ids",
]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
NODE_CERT = "node.crt"
NODE_KEY = "node.key"
NODE_URI = "liferaft://node/{}"
"""The URI SAN that names a node (node/tls.py: NODE_URI_PREFIX reads it back)."""

CLIENT_CERT = "client.crt"
CLIENT_KEY = "client.key"
CLIENT_DAYS = 397
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

CA_DAYS = 3650
NODE_DAYS = 825


class CertsError(ValueError):
    """The request cannot be made as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class CreatedCerts:
    directory: Path
    ca_created: bool
    made: tuple[int, ...]
    """Node ids whose certificate was made now."""
    kept: tuple[int, ...]
    """Node ids whose existing certificate was kept."""


def node_dir(directory: Path, node_id: int) -> Path:
    return directory / f"node-{node_id}"


def parse_node_ids(value: str) -> list[int]:
    """ "1,2,3" or "1-5" or "1,4-6" -> sorted ids, refusing anything that is not a node id."""
    ids: set[int] = set()
    for item in filter(None, (p.strip() for p in value.split(","))):
        lo_s, dash, hi_s = item.partition("-")
        try:
            lo, hi = int(lo_s), int(hi_s) if dash else int(lo_s)
        except ValueError:
            raise CertsError(f"--nodes: {item!r} is not a node id or a range like 1-3") from None
        if lo < 1 or hi < lo:
            raise CertsError(f"--nodes: {item!r}: node ids start at 1, ranges go up")
        ids.update(range(lo, hi + 1))
    if not ids:
        raise CertsError("--nodes is empty: give the node ids, for example 1,2,3")
    return sorted(ids)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_private(path: Path, data: bytes) -> None:
    """Write a key readable by its owner only, from the first byte on (no window at 0644)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    tmp.replace(path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _make_ca(cluster: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"liferaft cluster CA ({cluster})")])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _host_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _make_node(
    node_id: int,
    hosts: Sequence[str],
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    now = dt.datetime.now(dt.UTC)
    san = [x509.UniformResourceIdentifier(NODE_URI.format(node_id)), *_host_names(hosts)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"node-{node_id}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=NODE_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # Every node is both: it accepts some peers' connections and dials the others.
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _load_ca(directory: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not key_path.exists():
        raise CertsError(
            f"{cert_path} exists but {key_path} does not: node certificates can only be signed "
            "with the CA's key (use another --dir to start a new CA)"
        )
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise CertsError(f"cannot read the CA in {directory}: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertsError(f"{key_path} is not an EC key as `liferaft certs create` makes")
    if key.public_key() != cert.public_key():
        raise CertsError(f"{key_path} is not the key of {cert_path}")
    return key, cert


def _check_signed_by(path: Path, ca_cert: x509.Certificate) -> None:
    try:
        x509.load_pem_x509_certificate(path.read_bytes()).verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise CertsError(
            f"{path} was not signed by this CA ({e or 'bad signature'}): pass --force to make "
            "a new one"
        ) from None


def create_certs(
    directory: Path,
    node_ids: Sequence[int],
    hosts: Sequence[str] = (),
    *,
    cluster: str = "liferaft",
    force: bool = False,
) -> CreatedCerts:
    """Make (or reuse) the CA in `directory` and a certificate for each node id that has none
    (or for each, with `force`). Every node certificate also names `hosts`."""
    if not node_ids:
        raise CertsError("no node ids given")
    if any(n < 1 for n in node_ids):
        raise CertsError("node ids start at 1")
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / CA_CERT).exists():
        ca_key, ca_cert = _load_ca(directory)
        ca_created = False
    else:
        ca_key, ca_cert = _make_ca(cluster)
        _write_private(directory / CA_KEY, _pem_key(ca_key))
        _write_public(directory / CA_CERT, _pem_cert(ca_cert))
        ca_created = True
    ca_pem = _pem_cert(ca_cert)
    made, kept = [], []
    for node_id in sorted(set(node_ids)):
        folder = node_dir(directory, node_id)
        if (folder / NODE_CERT).exists() and not force:
            _check_signed_by(folder / NODE_CERT, ca_cert)
            kept.append(node_id)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        key, cert = _make_node(node_id, hosts, ca_key, ca_cert)
        _write_private(folder / NODE_KEY, _pem_key(key))
        _write_public(folder / NODE_CERT, _pem_cert(cert))
        _write_public(folder / CA_CERT, ca_pem)
        made.append(node_id)
    return CreatedCerts(directory, ca_created, tuple(made), tuple(kept))


def client_dir(directory: Path, name: str) -> Path:
    return directory / "clients" / name


def create_client_cert(directory: Path, name: str, *, force: bool = False) -> Path:
    """Sign a client certificate `CN=name` with the CA in `directory` (which must exist) and
    write DIR/clients/NAME/{client.crt, client.key, ca.crt}; returns that folder.

    A client certificate names no node (no `liferaft://node/N`), so it never passes for a node
    on the Raft port; on a client listener that requires certificates its principal is
    `User:CN=name`, as Kafka's default principal builder writes it."""
    if not _CLIENT_NAME.fullmatch(name):
        raise CertsError(
            f"--name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    if not (directory / CA_CERT).exists():
        raise CertsError(
            f"no CA in {directory}: make one with `liferaft certs create --dir {directory} "
            "--nodes 1,2,3`"
        )
    ca_key, ca_cert = _load_ca(directory)
    folder = client_dir(directory, name)
    if (folder / CLIENT_CERT).exists() and not force:
        raise CertsError(f"{folder / CLIENT_CERT} exists: pass --force to make a new one")
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    key = _new_key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CLIENT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(folder / CLIENT_KEY, _pem_key(key))
    _write_public(folder / CLIENT_CERT, _pem_cert(cert))
    _write_public(folder / CA_CERT, _pem_cert(ca_cert))
    return folder
