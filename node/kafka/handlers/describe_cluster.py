"""DescribeCluster (key 60): the cluster id, the controller and every broker's Kafka address
(what Metadata says, without topics)."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode as KafkaErrorCode

from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses

BROKERS_ENDPOINT = 1
UNKNOWN_AUTHORIZED_OPERATIONS = -(2**31)


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    if getattr(request, "endpoint_type", BROKERS_ENDPOINT) != BROKERS_ENDPOINT:
        return r(
            throttle_time=NO_THROTTLE,
            error_code=KafkaErrorCode.unsupported_endpoint_type,
            error_message="only the brokers endpoint is served",
            endpoint_type=request.endpoint_type,
            cluster_id=ctx.broker.config.cluster_id,
            controller_id=-1,
            brokers=(),
            cluster_authorized_operations=UNKNOWN_AUTHORIZED_OPERATIONS,
        )
    brokers = []
    for b in sorted(ctx.broker.controller.state.brokers.values(), key=lambda b: b.node_id):
        address = ctx.kafka_address(b.node_id)
        if address is not None:
            brokers.append(
                r.make(
                    "DescribeClusterBroker",
                    broker_id=b.node_id,
                    host=address[0],
                    port=address[1],
                    rack=None,
                    is_fenced=False,
                )
            )
    controller = ctx.broker.controller_leader()
    return r(
        throttle_time=NO_THROTTLE,
        error_code=NONE,
        error_message=None,
        endpoint_type=BROKERS_ENDPOINT,
        cluster_id=ctx.broker.config.cluster_id,
        controller_id=controller if controller else -1,
        brokers=tuple(brokers),
        cluster_authorized_operations=UNKNOWN_AUTHORIZED_OPERATIONS,
    )


API = Api(key=60, name="DescribeCluster", min_version=0, max_version=1, handle=handle)
