"""Topic administration: CreateTopics, CreatePartitions, AlterConfigs, DeleteTopics.

Each runs on the controller leader: a node that does not lead the controller forwards the request
there as it came (`on_controller`) and relays the answer, so a client may send it to any node.
The checks and the command are the controller's (Controller.plan_*); a handler here only turns a
request into those calls and their outcomes into per-topic results.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from liferaft_proto import status as wire_status
from liferaft_proto.v1 import broker_pb2
from node import validate
from node.acl import CLUSTER, Operation, topic
from node.api.context import ADMIN_TIMEOUT_MS, Api, detail
from node.api.metadata import config_entries, missing_topic
from node.controller import merge_configs
from node.controller_commands import DeleteTopic
from node.errors import BrokerError, ErrorCode
from node.limits import shown
from node.topic_config import TopicConfig, parse_topic_config


async def on_controller(api: Api, method: str, request: Any) -> Any:
    """Run an admin request on the controller leader: None if that is this node (go on here),
    else the leader's answer to the forwarded request."""
    ctl = api.broker.controller
    if ctl.is_leader:
        return None
    leader = ctl.leader
    stub = api.forward(leader) if leader else None
    if stub is None:
        raise BrokerError(
            ErrorCode.NOT_CONTROLLER,
            f"the controller has no leader right now ({api.broker.waiting_for()}); retry shortly",
        )
    try:
        return await getattr(stub, method)(request, timeout=ADMIN_TIMEOUT_MS / 1000)
    except grpc.aio.AioRpcError as e:
        found = wire_status.error_detail(e)
        if found is not None:
            raise BrokerError(found.code, found.message, leader_id=found.leader_id) from None
        raise BrokerError(
            ErrorCode.NOT_CONTROLLER,
            f"could not reach the controller leader (node {leader}): {e.code().name}",
        ) from None


def _timeout_s(request: Any) -> float:
    return float(request.timeout_ms or ADMIN_TIMEOUT_MS) / 1000


async def create_topics(
    api: Api, request: broker_pb2.CreateTopicsRequest
) -> broker_pb2.CreateTopicsResponse:
    validate.create_topics(request)
    for t in request.topics:
        api.broker.authorizer.check_any(Operation.CREATE, CLUSTER, topic(t.name))
    forwarded = await on_controller(api, "CreateTopics", request)
    if forwarded is not None:
        return forwarded
    ctl = api.broker.controller
    resp = broker_pb2.CreateTopicsResponse()
    seen: set[str] = set()
    for t in request.topics:
        partitions, rf = api.broker.topic_shape(t.partitions or None, t.replication_factor or None)
        result = broker_pb2.CreateTopicResult(
            name=t.name, partitions=partitions, replication_factor=rf
        )
        try:
            if t.name in seen:
                raise BrokerError(
                    ErrorCode.INVALID_REQUEST,
                    f"topic {shown(t.name)} appears twice in the request",
                )
            seen.add(t.name)
            validate.new_topic(t)
            cmd = ctl.plan_create_topic(t.name, partitions, rf, dict(t.configs))
            if not request.validate_only:
                await asyncio.wait_for(ctl.replicate_and_wait(cmd), _timeout_s(request))
                await api.broker.wait_for_leaders(t.name, _timeout_s(request))
        except BrokerError as e:
            result.error.CopyFrom(detail(e))
        except TimeoutError:
            result.error.CopyFrom(
                detail(
                    BrokerError(
                        ErrorCode.REQUEST_TIMED_OUT, f"topic {t.name!r} was not created in time"
                    )
                )
            )
        resp.topics.append(result)
    return resp


async def create_partitions(
    api: Api, request: broker_pb2.CreatePartitionsRequest
) -> broker_pb2.CreatePartitionsResponse:
    validate.create_partitions(request)
    api.broker.authorizer.check(Operation.ALTER, topic(request.topic))
    forwarded = await on_controller(api, "CreatePartitions", request)
    if forwarded is not None:
        return forwarded
    ctl = api.broker.controller
    cmd = ctl.plan_create_partitions(request.topic, request.count)
    if not request.validate_only:
        try:
            await asyncio.wait_for(ctl.replicate_and_wait(cmd), _timeout_s(request))
            await api.broker.wait_for_leaders(request.topic, _timeout_s(request))
        except TimeoutError:
            raise BrokerError(
                ErrorCode.REQUEST_TIMED_OUT,
                f"the new partitions of {shown(request.topic)} were not created in time; "
                "they may still be",
            ) from None
    return broker_pb2.CreatePartitionsResponse(partitions=request.count)


async def alter_configs(
    api: Api, request: broker_pb2.AlterConfigsRequest
) -> broker_pb2.AlterConfigsResponse:
    api.broker.authorizer.check(Operation.ALTER_CONFIGS, topic(request.topic))
    forwarded = await on_controller(api, "AlterConfigs", request)
    if forwarded is not None:
        return forwarded
    ctl = api.broker.controller
    both = sorted(set(request.set) & set(request.delete))
    if both:
        raise BrokerError(
            ErrorCode.INVALID_CONFIG,
            f"{', '.join(shown(k) for k in both)}: both set and deleted; choose one",
        )
    changes: dict[str, str | None] = {k: None for k in request.delete}
    changes.update(request.set)
    cmd = ctl.plan_alter_topic_configs(request.topic, changes)
    info = ctl.state.topics[request.topic]
    configs = merge_configs(info.configs, changes)
    if not request.validate_only:
        try:
            await asyncio.wait_for(ctl.replicate_and_wait(cmd), _timeout_s(request))
        except TimeoutError:
            raise BrokerError(
                ErrorCode.REQUEST_TIMED_OUT,
                f"the config change of {request.topic!r} was not applied in time; it may still be",
            ) from None
    config = parse_topic_config(configs, len(info.replicas[0]))
    return broker_pb2.AlterConfigsResponse(
        configs=config_entries(config, configs, TopicConfig().to_dict())
    )


async def delete_topics(
    api: Api, request: broker_pb2.DeleteTopicsRequest
) -> broker_pb2.DeleteTopicsResponse:
    validate.delete_topics(request)
    for name in request.names:
        api.broker.authorizer.check(Operation.DELETE, topic(name))
    forwarded = await on_controller(api, "DeleteTopics", request)
    if forwarded is not None:
        return forwarded
    ctl = api.broker.controller
    resp = broker_pb2.DeleteTopicsResponse()
    for name in request.names:
        result = broker_pb2.DeleteTopicResult(name=name)
        try:
            if name not in ctl.state.topics:
                raise missing_topic(name)
            await asyncio.wait_for(
                ctl.replicate_and_wait(DeleteTopic(name=name)), _timeout_s(request)
            )
        except BrokerError as e:
            result.error.CopyFrom(detail(e))
        except TimeoutError:
            result.error.CopyFrom(
                detail(
                    BrokerError(ErrorCode.REQUEST_TIMED_OUT, f"deleting {shown(name)} timed out")
                )
            )
        resp.topics.append(result)
    return resp
