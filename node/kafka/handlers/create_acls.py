"""CreateAcls (key 30): each creation checked on its own (a bad one gets INVALID_REQUEST and is
not created); the good ones go through the gRPC handler (node/api/acls.py: ALTER on the
cluster, forwarded to the controller leader), all or none."""

from __future__ import annotations

from typing import Any

from liferaft_proto.v1 import broker_pb2
from node.acl import AclBinding, ResourcePattern
from node.api import acls as api_acls
from node.api.context import Api as GrpcApi
from node.errors import BrokerError
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    outcome: list[tuple[Any, str | None]] = []
    good: list[AclBinding] = []
    for c in request.creations:
        try:
            good.append(
                AclBinding(
                    pattern=ResourcePattern(
                        type=c.resource_type,
                        name=c.resource_name,
                        pattern_type=c.resource_pattern_type,
                    ),
                    principal=c.principal,
                    host=c.host,
                    operation=c.operation,
                    permission=c.permission_type,
                )
            )
            outcome.append((NONE, None))
        except BrokerError as e:
            outcome.append((error_code_of(e), e.message))
    if good:
        try:
            await api_acls.create_acls(
                GrpcApi(ctx.broker, ctx.forward),
                broker_pb2.CreateAclsRequest(acls=[api_acls.binding_pb(a) for a in good]),
            )
        except BrokerError as e:
            outcome = [(error_code_of(e), e.message) if c == NONE else (c, m) for c, m in outcome]
    return r(
        throttle_time=NO_THROTTLE,
        results=tuple(
            r.make("AclCreationResult", error_code=code, error_message=message)
            for code, message in outcome
        ),
    )


API = Api(key=30, name="CreateAcls", min_version=1, max_version=3, handle=handle)
