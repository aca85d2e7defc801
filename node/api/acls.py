"""ACL administration: DescribeAcls (from this node's replica), CreateAcls and DeleteAcls (on the
controller leader, forwarded there by any other node as the topic admin RPCs are).

Every ACL and filter is checked (node/acl.py) before anything is proposed: one bad entry refuses
the whole request with INVALID_REQUEST and changes nothing. ACLs are managed only where they are
enforced: a node whose authorizer is off answers SECURITY_DISABLED, as Kafka does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from liferaft_proto.v1 import broker_pb2
from node.acl import (
    ANY_HOST,
    CLUSTER,
    AclBinding,
    AclBindingFilter,
    Operation,
    ResourcePattern,
)
from node.api.admin import on_controller
from node.api.context import ADMIN_TIMEOUT_MS, Api
from node.broker import Broker
from node.command import Command
from node.errors import BrokerError, ErrorCode


def binding_of(pb: broker_pb2.AclBinding) -> AclBinding:
    return AclBinding(
        pattern=ResourcePattern(
            type=pb.resource_type,  # type: ignore[arg-type]  # checked, by name
            name=pb.resource_name,
            pattern_type=pb.pattern_type or "literal",  # type: ignore[arg-type]
        ),
        principal=pb.principal,
        host=pb.host or ANY_HOST,
        operation=pb.operation,  # type: ignore[arg-type]
        permission=pb.permission,  # type: ignore[arg-type]
    )


def binding_pb(acl: AclBinding) -> broker_pb2.AclBinding:
    j = acl.to_json()
    return broker_pb2.AclBinding(
        resource_type=j["resource_type"],
        resource_name=j["name"],
        pattern_type=j["pattern_type"],
        principal=j["principal"],
        host=j["host"],
        operation=j["operation"],
        permission=j["permission"],
    )


def filter_of(pb: broker_pb2.AclFilter) -> AclBindingFilter:
    return AclBindingFilter(
        resource_type=pb.resource_type or "any",  # type: ignore[arg-type]  # checked, by name
        name=pb.resource_name or None,
        pattern_type=pb.pattern_type or "any",  # type: ignore[arg-type]
        principal=pb.principal or None,
        host=pb.host or None,
        operation=pb.operation or "any",  # type: ignore[arg-type]
        permission=pb.permission or "any",  # type: ignore[arg-type]
    )


def filter_pb(flt: AclBindingFilter) -> broker_pb2.AclFilter:
    j = flt.to_json()
    return broker_pb2.AclFilter(
        resource_type=j["resource_type"] or "",
        resource_name=j["name"] or "",
        pattern_type=j["pattern_type"] or "",
        principal=j["principal"] or "",
        host=j["host"] or "",
        operation=j["operation"] or "",
        permission=j["permission"] or "",
    )


def check_enabled(broker: Broker) -> None:
    if not broker.authorizer.enabled:
        raise BrokerError(
            ErrorCode.SECURITY_DISABLED,
            f"node {broker.node_id} runs without an authorizer, so ACLs would not be enforced: "
            "start the nodes with --authorizer (and --super-users for the first admin)",
        )


async def describe_acls(
    api: Api, request: broker_pb2.DescribeAclsRequest
) -> broker_pb2.DescribeAclsResponse:
    check_enabled(api.broker)
    api.broker.authorizer.check(Operation.DESCRIBE, CLUSTER)
    flt = filter_of(request.filter)
    acls = api.broker.controller.state.acls.matching(flt)
    return broker_pb2.DescribeAclsResponse(acls=[binding_pb(a) for a in acls])


async def create_acls(
    api: Api, request: broker_pb2.CreateAclsRequest
) -> broker_pb2.CreateAclsResponse:
    check_enabled(api.broker)
    api.broker.authorizer.check(Operation.ALTER, CLUSTER)
    acls = [binding_of(pb) for pb in request.acls]
    forwarded = await on_controller(api, "CreateAcls", request)
    if forwarded is not None:
        return forwarded
    ctl = api.broker.controller
    cmd = ctl.plan_create_acls(acls)
    created = await _replicate(api, cmd, "the ACLs were not created in time; they may still be")
    return broker_pb2.CreateAclsResponse(created=int(created))


async def delete_acls(
    api: Api, request: broker_pb2.DeleteAclsRequest
) -> broker_pb2.DeleteAclsResponse:
    check_enabled(api.broker)
    api.broker.authorizer.check(Operation.ALTER, CLUSTER)
    filters = [filter_of(pb) for pb in request.filters]
    forwarded = await on_controller(api, "DeleteAcls", request)
    if forwarded is not None:
        return forwarded
    cmd = api.broker.controller.plan_delete_acls(filters)
    gone = await _replicate(api, cmd, "the ACLs were not deleted in time; they may still be")
    return broker_pb2.DeleteAclsResponse(
        results=[
            broker_pb2.DeleteAclsResult(
                deleted=[binding_pb(AclBinding.from_json(a)) for a in deleted]
            )
            for deleted in gone
        ]
    )


async def _replicate(api: Api, cmd: Command, late: str) -> Any:
    try:
        return await asyncio.wait_for(
            api.broker.controller.replicate_and_wait(cmd),
            ADMIN_TIMEOUT_MS / 1000,
        )
    except TimeoutError:
        raise BrokerError(ErrorCode.REQUEST_TIMED_OUT, late) from None
