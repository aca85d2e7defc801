"""DescribeUserScramCredentials (key 50): users and their SCRAM mechanisms and iteration counts,
from this node's replica of the controller state; never a salt or key."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode as KafkaErrorCode

from node.kafka.handlers.alter_user_scram_credentials import MECHANISMS
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses

CODES = {name: code for code, (name, _) in MECHANISMS.items()}


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    held = ctx.broker.controller.state.users
    names = [u.name for u in request.users] if request.users else sorted(held)
    results = []
    for name in dict.fromkeys(names):
        by_mechanism = held.get(name)
        if by_mechanism is None:
            results.append(
                r.make(
                    "DescribeUserScramCredentialsResult",
                    user=name,
                    error_code=KafkaErrorCode.resource_not_found,
                    error_message=f"user {name!r} has no SCRAM credential",
                    credential_infos=(),
                )
            )
            continue
        infos = tuple(
            r.make("CredentialInfo", mechanism=CODES[m], iterations=c.iterations)
            for m, c in sorted(by_mechanism.items())
        )
        results.append(
            r.make(
                "DescribeUserScramCredentialsResult",
                user=name,
                error_code=NONE,
                error_message=None,
                credential_infos=infos,
            )
        )
    return r(throttle_time=NO_THROTTLE, error_code=NONE, error_message=None, results=tuple(results))


API = Api(key=50, name="DescribeUserScramCredentials", min_version=0, max_version=0, handle=handle)
