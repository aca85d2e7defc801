"""SaslHandshake (key 17): which SASL mechanism the client will use.

The listener's connection runs the login itself while one is due (node/kafka/sasl.py); this
handler answers only a handshake that comes when none is: on a listener without SASL (the
client is told no mechanism is enabled, so it stops with a clear error) or after the login.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode as KafkaErrorCode

from node.kafka.wire import Api, CloseConnection, Ctx, Responses


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    if ctx.sasl:
        raise CloseConnection("SaslHandshake after the connection authenticated")
    return Responses(API.key, version)(
        error_code=KafkaErrorCode.unsupported_sasl_mechanism, mechanisms=()
    )


API = Api(key=17, name="SaslHandshake", min_version=1, max_version=1, handle=handle)
