"""A Kafka connection's SASL login, on a listener that asks for one (SASL_SSL, SASL_PLAINTEXT).

Until it has logged in, a connection may send ApiVersions, one SaslHandshake naming a mechanism
this node enables, then the SaslAuthenticate tokens of a SCRAM exchange (node/authn.py:
SaslScram). Anything else closes the connection, as Kafka does; so does a failed login, after
its answer (SASL_AUTHENTICATION_FAILED and Kafka's message) has gone out. The login is run by
the connection's reader, one request at a time, so no request of the connection starts before
it is over; the principal is then set in the reader's context, which every request task the
reader starts afterwards inherits (node/principal.py).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from kio.schema.errors import ErrorCode as KafkaErrorCode

from node.authn import AuthError, SaslScram, user_principal
from node.kafka.wire import NONE, Ctx, ProtocolError, Request, Responses
from node.scram import MECHANISMS

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
NO_REAUTH = datetime.timedelta(0)
"""session_lifetime_ms 0: the login lasts as long as the connection (no KIP-368 re-login)."""


@dataclass(slots=True)
class Step:
    response: Any
    close: bool = False
    """Send the response, then close the connection (a failed login)."""
    principal: str | None = None
    """Set once the login succeeded."""


class SaslLogin:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.scram: SaslScram | None = None

    def step(self, request: Request) -> Step | None:
        """The answer to a request made before the login is over; None: serve it as usual
        (ApiVersions). ProtocolError closes the connection without an answer."""
        key = request.api.key
        if key == API_VERSIONS:
            return None
        r = Responses(key, request.version)
        if key == SASL_HANDSHAKE:
            if self.scram is not None:
                raise ProtocolError("a second SaslHandshake during the login")
            mechanism = request.body.mechanism
            if mechanism not in MECHANISMS:
                return Step(
                    r(
                        error_code=KafkaErrorCode.unsupported_sasl_mechanism,
                        mechanisms=MECHANISMS,
                    ),
                    close=True,
                )
            self.scram = SaslScram(mechanism, lambda: self.ctx.broker.controller.state.users)
            return Step(r(error_code=NONE, mechanisms=MECHANISMS))
        if key == SASL_AUTHENTICATE:
            if self.scram is None:
                raise ProtocolError("SaslAuthenticate before SaslHandshake")
            try:
                token = self.scram.step(request.body.auth_bytes)
            except AuthError as e:
                return Step(
                    r(
                        error_code=KafkaErrorCode.sasl_authentication_failed,
                        error_message=str(e),
                        auth_bytes=b"",
                        session_lifetime=NO_REAUTH,
                    ),
                    close=True,
                )
            done = self.scram.done
            assert not done or self.scram.user is not None
            return Step(
                r(
                    error_code=NONE,
                    error_message=None,
                    auth_bytes=token,
                    session_lifetime=NO_REAUTH,
                ),
                principal=user_principal(self.scram.user) if done and self.scram.user else None,
            )
        raise ProtocolError(
            f"{request.api.name} before authenticating (this listener wants SASL: "
            f"security.protocol=SASL_SSL, sasl.mechanism one of {', '.join(MECHANISMS)})"
        )
