"""Users: SCRAM credentials in the controller's replicated state (node/scram.py).

Changes run on the controller leader (a node forwards them, with the caller's principal,
node/authn.py); a description is answered from this node's replica. Every change is checked
here before it is proposed, so a bad one is refused with a clear error and never enters the log.
Salts and keys never leave the cluster again: DescribeUsers names mechanisms and iterations.
"""

from __future__ import annotations

import asyncio
import base64

from liferaft_proto.v1 import broker_pb2
from node.api.admin import on_controller
from node.api.context import ADMIN_TIMEOUT_MS, Api
from node.controller_commands import DeleteUser, UpsertUser
from node.errors import BrokerError, ErrorCode
from node.scram import ScramCredential, apply_user_command


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _replicate(api: Api, cmd: UpsertUser | DeleteUser) -> None:
    try:
        await asyncio.wait_for(
            api.broker.controller.replicate_and_wait(cmd), ADMIN_TIMEOUT_MS / 1000
        )
    except TimeoutError:
        raise BrokerError(
            ErrorCode.REQUEST_TIMED_OUT,
            f"the change to user {cmd.name!r} was not applied in time; it may still be",
        ) from None


async def upsert_user(
    api: Api, request: broker_pb2.UpsertUserRequest
) -> broker_pb2.UpsertUserResponse:
    c = request.credential
    cmd = UpsertUser(
        name=request.name,
        mechanism=c.mechanism,
        salt=_b64(c.salt),
        iterations=c.iterations,
        stored_key=_b64(c.stored_key),
        server_key=_b64(c.server_key),
    )
    # The same checks the controller's apply makes, on a scratch copy: a bad credential is
    # refused before anything is proposed.
    ScramCredential.from_json(cmd.to_json())
    apply_user_command({}, cmd.to_json())
    forwarded = await on_controller(api, "UpsertUser", request)
    if forwarded is not None:
        return forwarded
    await _replicate(api, cmd)
    return broker_pb2.UpsertUserResponse()


async def delete_user(
    api: Api, request: broker_pb2.DeleteUserRequest
) -> broker_pb2.DeleteUserResponse:
    mechanism = request.mechanism or None
    held = api.broker.controller.state.users.get(request.name)
    if held is None or (mechanism is not None and mechanism not in held):
        raise BrokerError(
            ErrorCode.RESOURCE_NOT_FOUND,
            f"user {request.name!r} "
            + (f"has no {mechanism} credential" if held else "does not exist"),
        )
    forwarded = await on_controller(api, "DeleteUser", request)
    if forwarded is not None:
        return forwarded
    await _replicate(api, DeleteUser(name=request.name, mechanism=mechanism))
    return broker_pb2.DeleteUserResponse()


async def describe_users(
    api: Api, request: broker_pb2.DescribeUsersRequest
) -> broker_pb2.DescribeUsersResponse:
    users = api.broker.controller.state.users
    names = list(request.names) or sorted(users)
    missing = [n for n in names if n not in users]
    if missing:
        raise BrokerError(
            ErrorCode.RESOURCE_NOT_FOUND, f"no such user(s): {', '.join(map(repr, missing))}"
        )
    return broker_pb2.DescribeUsersResponse(
        users=[
            broker_pb2.UserInfo(
                name=name,
                mechanisms=sorted(users[name]),
                iterations=[users[name][m].iterations for m in sorted(users[name])],
            )
            for name in names
        ]
    )
