"""SaslAuthenticate (key 36): one SASL token each way. The listener's connection runs the login
(node/kafka/sasl.py); a token that comes when no login is due closes the connection, as Kafka
does (ILLEGAL_SASL_STATE)."""

from __future__ import annotations

from typing import Any

from node.kafka.wire import Api, CloseConnection, Ctx


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    raise CloseConnection("SaslAuthenticate without a SaslHandshake before it")


API = Api(key=36, name="SaslAuthenticate", min_version=0, max_version=2, handle=handle)
