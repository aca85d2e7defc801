"""Who a client is: SCRAM logins on the Kafka listener, passwords and certificates on gRPC, and
the proof a node gives when it forwards a request on a caller's behalf.

Every check reads the users of this node's replica of the controller state (node/scram.py), so
a user added, changed or removed is seen by every node as soon as it applies the command; no
node keeps a copy of a credential beyond one request, and none ever holds a password but for
the gRPC call that carried it.

Kafka listener (SaslScram): RFC 5802's exchange, run by `scramp` against the stored salt,
StoredKey and ServerKey. The server never sees the password; a wrong one fails the client's
proof, and an unknown user fails at the first message, with the same words (Kafka's), so the
answer does not tell which users exist.

gRPC (PasswordCheck): why a password in the call's metadata, not a SCRAM exchange per call.
gRPC calls are independent (a channel multiplexes them; there is no connection a login could be
bound to), so a challenge-response would cost a round trip per call or a session token of our
own to issue, expire and revoke. A password in metadata over TLS is what SASL/PLAIN is on
Kafka's SASL_SSL listeners, and the password is checked against the same stored SCRAM
credential: PBKDF2 with the stored salt and iterations, then StoredKey compared in constant
time. PBKDF2 costs milliseconds by design, so verified logins are cached: the key is a keyed
hash of (user, mechanism, password) under a secret made at start (the cache never holds a
password, nor anything a password could be tested against offline once the process is gone),
the value the StoredKey it matched. A changed or removed credential no longer matches its
cached StoredKey, so the cache needs no invalidation message: the next call checks afresh.

Forwarded requests (NodeAssertion): a node that forwards a request to the controller (or a
group coordinator) calls the other node's client listener. The caller's principal travels in
the call's metadata with a signature by the forwarding node's key over (principal, method,
time), and the forwarding node's certificate. The receiver believes the principal only if that
certificate is signed by the cluster CA and names a node (liferaft://node/N), the signature
verifies and the time is within ASSERTION_WINDOW_S: a client cannot forge one without a node's
private key. This works whatever the client listener's TLS mode, as gRPC's server credentials
cannot ask for an optional client certificate.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from scramp import ScramException, ScramMechanism

from liferaft_proto.credentials import (
    ASSERTION_KEY,
    ASSERTION_WINDOW_S,
    MECHANISM_KEY,
    NODE_CERT_KEY,
    ON_BEHALF_KEY,
    PASSWORD_KEY,
    USER_KEY,
    signed_text,
)
from node.principal import ANONYMOUS
from node.scram import MECHANISMS, ScramCredential, Users, check_password
from node.tls import cert_node_ids

if TYPE_CHECKING:
    from cryptography import x509

__all__ = [
    "AuthError",
    "PasswordCheck",
    "SaslScram",
    "cert_principal",
    "user_principal",
]

PASSWORD_CACHE_ENTRIES = 4096


class AuthError(Exception):
    """A client failed to authenticate; the message is safe to show it."""


def user_principal(name: str) -> str:
    return f"User:{name}"


def cert_principal(cert: x509.Certificate) -> str:
    """`User:` + the subject as Kafka prints it (RFC 4514/2253: most specific first, no spaces),
    e.g. `User:CN=alice,O=acme`."""
    return "User:" + cert.subject.rfc4514_string()


def failed(mechanism: str) -> str:
    """Kafka's words for a failed SCRAM login: the same whether the user or the password is
    wrong."""
    return (
        "Authentication failed during authentication due to invalid credentials with SASL "
        f"mechanism {mechanism}"
    )


class SaslScram:
    """One Kafka connection's SCRAM exchange: client-first -> server-first, client-final ->
    server-final. `users` is read at each step, so a credential changed mid-login is seen."""

    def __init__(self, mechanism: str, users: Callable[[], Users]) -> None:
        assert mechanism in MECHANISMS
        self.mechanism = mechanism
        self._users = users
        self._server = ScramMechanism(mechanism).make_server(self._auth_info)
        self._step = 0
        self.user: str | None = None
        self.done = False

    def _credential(self, user: str) -> ScramCredential:
        cred = self._users().get(user, {}).get(self.mechanism)
        if cred is None:
            raise AuthError(failed(self.mechanism))
        return cred

    def _auth_info(self, user: str) -> tuple[bytes, bytes, bytes, int]:
        self.user = user  # scramp asks for the user of the client's first message
        return self._credential(user).auth_info()

    def step(self, token: bytes) -> bytes:
        """The answer to the client's next message; AuthError if the login fails."""
        try:
            text = token.decode()
        except UnicodeDecodeError:
            raise AuthError("a SCRAM message is not UTF-8") from None
        try:
            if self._step == 0:
                self._step = 1
                self._server.set_client_first(text)
                return self._server.get_server_first().encode()
            if self._step == 1:
                self._step = 2
                self._server.set_client_final(text)
                # The credential may have changed (or gone) since the first message.
                assert self.user is not None
                self._credential(self.user)
                self.done = True
                return self._server.get_server_final().encode()
        except ScramException:
            raise AuthError(failed(self.mechanism)) from None
        raise AuthError("the SCRAM exchange is over; nothing more is expected")


class PasswordCheck:
    """Checks a (user, password) sent with a gRPC call against the stored SCRAM credential,
    with a bounded cache of verified logins (the module docstring says why that is safe)."""

    def __init__(self, users: Callable[[], Users], entries: int = PASSWORD_CACHE_ENTRIES) -> None:
        self._users = users
        self._secret = os.urandom(32)
        self._verified: OrderedDict[bytes, bytes] = OrderedDict()
        self._entries = entries

    def principal(self, user: str, password: str, mechanism: str | None = None) -> str:
        """`User:NAME`, or AuthError. Without a mechanism, the user's strongest is used."""
        held = self._users().get(user, {})
        if mechanism is None:
            mechanism = next((m for m in reversed(MECHANISMS) if m in held), MECHANISMS[-1])
        elif mechanism not in MECHANISMS:
            raise AuthError(
                f"unknown SASL mechanism {mechanism!r} (one of {', '.join(MECHANISMS)})"
            )
        cred = held.get(mechanism)
        if cred is None or not password:
            raise AuthError(failed(mechanism))
        key = hmac.digest(
            self._secret,
            b"\0".join((user.encode(), mechanism.encode(), password.encode())),
            hashlib.sha256,
        )
        known = self._verified.get(key)
        if known is not None and hmac.compare_digest(known, cred.stored_key):
            self._verified.move_to_end(key)
            return user_principal(user)
        if not check_password(cred, password):
            raise AuthError(failed(mechanism))
        self._verified[key] = cred.stored_key
        if len(self._verified) > self._entries:
            self._verified.popitem(last=False)
        return user_principal(user)


class AssertionCheck:
    """The receiving side of NodeAssertion: verified node certificates are cached by digest."""

    def __init__(self, ca_pem: bytes, entries: int = 64) -> None:
        from cryptography import x509

        self._cas = x509.load_pem_x509_certificates(ca_pem)
        self._certs: OrderedDict[bytes, x509.Certificate] = OrderedDict()
        self._entries = entries

    def _node_cert(self, pem: bytes) -> x509.Certificate:
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature

        digest = hashlib.sha256(pem).digest()
        cert = self._certs.get(digest)
        if cert is not None:
            return cert
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise AuthError("a forwarded request's node certificate is not PEM") from None
        for ca in self._cas:
            try:
                cert.verify_directly_issued_by(ca)
                break
            except (ValueError, TypeError, InvalidSignature):
                continue
        else:
            raise AuthError("a forwarded request's certificate is not signed by the cluster CA")
        if not _names_node(cert):
            raise AuthError("a forwarded request's certificate names no node")
        self._certs[digest] = cert
        if len(self._certs) > self._entries:
            self._certs.popitem(last=False)
        return cert

    def principal(self, md: Mapping[str, str | bytes], method: str) -> str | None:
        """The forwarded principal, None if the call carries none; AuthError if it carries one
        that does not verify."""
        claimed = md.get(ON_BEHALF_KEY)
        if claimed is None:
            return None
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        raw, pem = md.get(ASSERTION_KEY), md.get(NODE_CERT_KEY)
        if not isinstance(claimed, bytes) or not isinstance(raw, bytes):
            raise AuthError("a forwarded principal without a node's signature is not believed")
        try:
            principal = claimed.decode()
        except UnicodeDecodeError:
            raise AuthError("a forwarded principal is not UTF-8") from None
        if not isinstance(pem, bytes):
            raise AuthError("a forwarded principal without the node's certificate")
        stamp_b, _, signature = raw.partition(b" ")
        try:
            stamp = float(stamp_b)
        except ValueError:
            raise AuthError("a forwarded principal's signature is malformed") from None
        if abs(time.time() - stamp) > ASSERTION_WINDOW_S:
            raise AuthError("a forwarded principal's signature is too old (are clocks apart?)")
        public = self._node_cert(pem).public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise AuthError("a forwarded request's node key is not an EC key")
        try:
            public.verify(
                signature,
                signed_text(principal, method, stamp_b.decode()),
                ec.ECDSA(hashes.SHA256()),
            )
        except InvalidSignature:
            raise AuthError("a forwarded principal's signature does not verify") from None
        return principal


def _names_node(cert: x509.Certificate) -> bool:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return bool(cert_node_ids({"subjectAltName": [("URI", u) for u in uris]}))


def der_principal(der: bytes | None) -> str:
    """The principal of a verified peer certificate (DER), ANONYMOUS without one."""
    if not der:
        return ANONYMOUS
    from cryptography import x509

    return cert_principal(x509.load_der_x509_certificate(der))


class GrpcAuth:
    """The principal of one gRPC call, from what it carries (module docstring): a node's signed
    forwarded principal, a username and password, or the client certificate of mutual TLS."""

    def __init__(self, sasl: bool, users: Callable[[], Users], ca_pem: bytes | None) -> None:
        self.sasl = sasl
        self.passwords = PasswordCheck(users)
        self.assertions = AssertionCheck(ca_pem) if ca_pem is not None else None
        self._cert_principals: OrderedDict[bytes, str] = OrderedDict()

    def principal(
        self,
        metadata: Iterable[tuple[str, str | bytes]],
        auth_context: Mapping[str, Iterable[bytes]],
        method: str,
    ) -> str:
        md = dict(metadata or ())
        if ON_BEHALF_KEY in md:
            if self.assertions is None:
                raise AuthError("this node cannot check a forwarded principal (no cluster CA)")
            forwarded = self.assertions.principal(md, method)
            assert forwarded is not None
            return forwarded
        user, password = md.get(USER_KEY), md.get(PASSWORD_KEY)
        if user is not None or password is not None:
            if not isinstance(user, bytes) or not isinstance(password, bytes):
                raise AuthError("a username needs a password, and a password a username")
            mechanism = md.get(MECHANISM_KEY)
            try:
                return self.passwords.principal(
                    user.decode(),
                    password.decode(),
                    mechanism if isinstance(mechanism, str) else None,
                )
            except UnicodeDecodeError:
                raise AuthError("a username or password is not UTF-8") from None
        if self.sasl:
            raise AuthError(
                "this cluster wants a SCRAM username and password: security_protocol SASL_SSL "
                "with sasl_plain_username and sasl_plain_password (`liferaft user add`)"
            )
        pems = list(auth_context.get("x509_pem_cert", ()))
        return self._cert_principal(pems[0]) if pems else ANONYMOUS

    def _cert_principal(self, pem: bytes) -> str:
        found = self._cert_principals.get(pem)
        if found is None:
            from cryptography import x509

            found = cert_principal(x509.load_pem_x509_certificate(pem))
            self._cert_principals[pem] = found
            if len(self._cert_principals) > 256:
                self._cert_principals.popitem(last=False)
        return found
