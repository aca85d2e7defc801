"""AlterUserScramCredentials (key 51): Kafka's way to add, change and remove SCRAM users
(`kafka-configs --alter --add-config 'SCRAM-SHA-512=[password=...]' --entity-type users`).

The client sends the salt, the iteration count and SaltedPassword (RFC 5802's Hi(password,
salt, i)), never the password; the node derives StoredKey and ServerKey from it, as Kafka's
controller does, and the change goes through node/api/users.py (checked, forwarded to the
controller, replicated), so both listeners share one path. Each user's result stands alone.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from liferaft_proto.v1 import broker_pb2
from node.api import users
from node.api.context import Api as GrpcApi
from node.errors import BrokerError, ErrorCode
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of

MECHANISMS = {1: ("SCRAM-SHA-256", hashlib.sha256), 2: ("SCRAM-SHA-512", hashlib.sha512)}
"""Kafka's ScramMechanism type codes."""


def mechanism_name(code: int) -> str:
    found = MECHANISMS.get(code)
    if found is None:
        raise BrokerError(
            ErrorCode.INVALID_REQUEST,
            f"unknown SCRAM mechanism {code} (1: SCRAM-SHA-256, 2: SCRAM-SHA-512)",
        )
    return found[0]


def keys(code: int, salted_password: bytes) -> tuple[bytes, bytes]:
    """StoredKey and ServerKey from SaltedPassword (RFC 5802 section 3)."""
    digest = MECHANISMS[code][1]
    client_key = hmac.digest(salted_password, b"Client Key", digest)
    return digest(client_key).digest(), hmac.digest(salted_password, b"Server Key", digest)


async def _upsert(api: GrpcApi, u: Any) -> None:
    mechanism = mechanism_name(u.mechanism)
    stored_key, server_key = keys(u.mechanism, u.salted_password)
    await users.upsert_user(
        api,
        broker_pb2.UpsertUserRequest(
            name=u.name,
            credential=broker_pb2.ScramCredential(
                mechanism=mechanism,
                salt=u.salt,
                iterations=u.iterations,
                stored_key=stored_key,
                server_key=server_key,
            ),
        ),
    )


async def _delete(api: GrpcApi, d: Any) -> None:
    await users.delete_user(
        api, broker_pb2.DeleteUserRequest(name=d.name, mechanism=mechanism_name(d.mechanism))
    )


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    api = GrpcApi(ctx.broker, ctx.forward)
    results = []
    changes: list[tuple[str, Callable[[GrpcApi, Any], Awaitable[None]], Any]]
    changes = [(d.name, _delete, d) for d in request.deletions]
    changes += [(u.name, _upsert, u) for u in request.upsertions]
    named = [name for name, _, _ in changes]
    for name, change, item in changes:
        code, message = NONE, None
        try:
            if named.count(name) > 1:
                # Kafka's rule: one change per user per request, so their order never matters.
                raise BrokerError(
                    ErrorCode.INVALID_REQUEST, f"user {name!r} is changed twice in one request"
                )
            await change(api, item)
        except BrokerError as e:
            code, message = error_code_of(e), e.message  # our codes are Kafka's numbers
        results.append(
            r.make(
                "AlterUserScramCredentialsResult", user=name, error_code=code, error_message=message
            )
        )
    return r(throttle_time=NO_THROTTLE, results=tuple(results))


API = Api(key=51, name="AlterUserScramCredentials", min_version=0, max_version=0, handle=handle)
