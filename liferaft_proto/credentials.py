"""The credentials a gRPC call carries, in its metadata: a client's SCRAM username and password,
or a node's signed word for whom it forwards a request. Both sides of the wire use these: the
client (username, password), node/authn.py (checks both; signs what a node forwards), and the
launcher and `liferaft user add --as-node` (act for the cluster with a node's key, the way the
first user is made where every client must log in). node/authn.py's docstring says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["NodeAssertion", "SignedCalls", "signed_text"]

# gRPC metadata keys (lower case, as gRPC wants them; -bin values are bytes).
USER_KEY = "liferaft-user-bin"
PASSWORD_KEY = "liferaft-password-bin"
MECHANISM_KEY = "liferaft-sasl-mechanism"
ON_BEHALF_KEY = "liferaft-on-behalf-of-bin"
ASSERTION_KEY = "liferaft-node-assertion-bin"
NODE_CERT_KEY = "liferaft-node-cert-bin"

ASSERTION_WINDOW_S = 300.0
"""How old (or how far ahead, for clocks apart) a forwarded principal's signature may be."""


def signed_text(principal: str, method: str, stamp: str) -> bytes:
    """What a node signs: the principal, for which RPC, when."""
    return b"\0".join((b"liferaft-forward-v1", principal.encode(), method.encode(), stamp.encode()))


@dataclass(frozen=True, slots=True)
class NodeAssertion:
    """Sign and check the principal a node forwards a request for (module docstring)."""

    ca_pem: bytes
    cert_pem: bytes
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def load(cls, ca: bytes, cert: bytes, key: bytes) -> NodeAssertion:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        private = load_pem_private_key(key, None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise ValueError("the node key is not an EC key (liferaft certs makes EC keys)")
        return cls(ca, cert, private)

    def metadata(
        self, principal: str, method: str, now: float | None = None
    ) -> list[tuple[str, str | bytes]]:
        """The metadata a forwarded call carries for `principal`."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        stamp = f"{now if now is not None else time.time():.3f}"
        signature = self.key.sign(signed_text(principal, method, stamp), ec.ECDSA(hashes.SHA256()))
        return [
            (ON_BEHALF_KEY, principal.encode()),
            (ASSERTION_KEY, stamp.encode() + b" " + signature),
            (NODE_CERT_KEY, self.cert_pem),
        ]

    def principal_of_cert(self) -> str:
        """The node certificate's own principal, `User:CN=node-N` (Kafka's spelling)."""
        from cryptography import x509

        return "User:" + x509.load_pem_x509_certificate(self.cert_pem).subject.rfc4514_string()


class SignedCalls(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Signs every call of a channel for `principal()`: on a node's channels to its peers, the
    principal of the request being forwarded; in the launcher and `liferaft user add
    --as-node`, the node certificate's own."""

    def __init__(self, assertion: NodeAssertion, principal: Callable[[], str]) -> None:
        self.assertion = assertion
        self.principal = principal

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        method = client_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        rpc = method.rsplit("/", 1)[-1]
        md = list(client_call_details.metadata or ())
        md.extend(self.assertion.metadata(self.principal(), rpc))
        details = grpc.aio.ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            grpc.aio.Metadata(*md),
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        return await continuation(details, request)
