"""DescribeAcls (key 29): the ACLs matching a filter, grouped by resource pattern, through the
gRPC handler (node/api/acls.py: DESCRIBE on the cluster; SECURITY_DISABLED without an
authorizer)."""

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
    try:
        flt = AclBindingFilter(
            resource_type=request.resource_type_filter,
            name=request.resource_name_filter,
            pattern_type=request.pattern_type_filter,
            principal=request.principal_filter,
            host=request.host_filter,
            operation=request.operation,
            permission=request.permission_type,
        )
        found = await api_acls.describe_acls(
            GrpcApi(ctx.broker, ctx.forward),
            broker_pb2.DescribeAclsRequest(filter=api_acls.filter_pb(flt)),
        )
    except BrokerError as e:
        return r(
            throttle_time=NO_THROTTLE,
            error_code=error_code_of(e),
            error_message=e.message,
            resources=(),
        )
    grouped: dict[tuple[int, str, int], list[Any]] = {}
    for pb in found.acls:
        acl = api_acls.binding_of(pb)
        key = (int(acl.pattern.type), acl.pattern.name, int(acl.pattern.pattern_type))
        grouped.setdefault(key, []).append(
            r.make(
                "AclDescription",
                principal=acl.principal,
                host=acl.host,
                operation=int(acl.operation),
                permission_type=int(acl.permission),
            )
        )
    return r(
        throttle_time=NO_THROTTLE,
        error_code=NONE,
        error_message=None,
        resources=tuple(
            r.make(
                "DescribeAclsResource",
                resource_type=rtype,
                resource_name=name,
                pattern_type=ptype,
                acls=tuple(descs),
            )
            for (rtype, name, ptype), descs in grouped.items()
        ),
    )


API = Api(key=29, name="DescribeAcls", min_version=1, max_version=3, handle=handle)
