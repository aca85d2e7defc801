"""DeleteAcls (key 31): each filter checked on its own (a bad one gets INVALID_REQUEST and
deletes nothing); the good ones go through the gRPC handler (node/api/acls.py: ALTER on the
cluster, forwarded to the controller leader), which answers what each removed."""

from __future__ import annotations

from typing import Any

from liferaft_proto.v1 import broker_pb2
from node.acl import AclBindingFilter
from node.api import acls as api_acls
from node.api.context import Api as GrpcApi
from node.errors import BrokerError
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    errors: list[tuple[Any, str | None]] = []
    good: list[AclBindingFilter] = []
    for f in request.filters:
        try:
            good.append(
                AclBindingFilter(
                    resource_type=f.resource_type_filter,
                    name=f.resource_name_filter,
                    pattern_type=f.pattern_type_filter,
                    principal=f.principal_filter,
                    host=f.host_filter,
                    operation=f.operation,
                    permission=f.permission_type,
                )
            )
            errors.append((NONE, None))
        except BrokerError as e:
            errors.append((error_code_of(e), e.message))
    removed: list[broker_pb2.DeleteAclsResult] = []
    if good:
        try:
            resp = await api_acls.delete_acls(
                GrpcApi(ctx.broker, ctx.forward),
                broker_pb2.DeleteAclsRequest(filters=[api_acls.filter_pb(f) for f in good]),
            )
            removed = list(resp.results)
        except BrokerError as e:
            errors = [(error_code_of(e), e.message) if c == NONE else (c, m) for c, m in errors]
    results = []
    for code, message in errors:
        matching: tuple[Any, ...] = ()
        if code == NONE and removed:
            matching = tuple(
                r.make(
                    "DeleteAclsMatchingAcl",
                    error_code=NONE,
                    error_message=None,
                    resource_type=int(acl.pattern.type),
                    resource_name=acl.pattern.name,
                    pattern_type=int(acl.pattern.pattern_type),
                    principal=acl.principal,
                    host=acl.host,
                    operation=int(acl.operation),
                    permission_type=int(acl.permission),
                )
                for acl in map(api_acls.binding_of, removed.pop(0).deleted)
            )
        results.append(
            r.make(
                "DeleteAclsFilterResult",
                error_code=code,
                error_message=message,
                matching_acls=matching,
            )
        )
    return r(throttle_time=NO_THROTTLE, filter_results=tuple(results))


API = Api(key=31, name="DeleteAcls", min_version=1, max_version=3, handle=handle)
