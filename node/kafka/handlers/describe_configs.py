"""DescribeConfigs (key 32): a topic's settings (node/topic_config.py: the four liferaft knows,
each as set on the topic or its default), and a broker's (none are settable over Kafka: an empty
list, as a broker with no dynamic configs answers)."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode as KafkaErrorCode

from node.acl import CLUSTER, Operation, topic
from node.errors import BrokerError
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of
from node.topic_config import TopicConfig

TOPIC, BROKER = 2, 4
TOPIC_CONFIG, DEFAULT_CONFIG = 1, 5  # Kafka's config sources
CONFIG_TYPE_LONG, CONFIG_TYPE_INT = 5, 3


def _topic(ctx: Ctx, r: Responses, name: str, keys: tuple[str, ...] | None) -> Any:
    info = ctx.broker.topic(name)
    defaults = TopicConfig().to_dict()
    effective = info.config.to_dict()
    configs = []
    for key in sorted(effective):
        if keys is not None and key not in keys:
            continue
        mine = key in info.configs
        configs.append(
            r.make(
                "DescribeConfigsResourceResult",
                name=key,
                value=effective[key] if mine else defaults[key],
                read_only=False,
                is_default=not mine,
                config_source=TOPIC_CONFIG if mine else DEFAULT_CONFIG,
                is_sensitive=False,
                synonyms=(),
                config_type=CONFIG_TYPE_INT if key.endswith("replicas") else CONFIG_TYPE_LONG,
                documentation=None,
            )
        )
    return tuple(configs)


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    results = []
    for res in request.resources:
        code, message, configs = NONE, None, ()
        try:
            if res.resource_type == TOPIC:
                ctx.broker.authorizer.check(Operation.DESCRIBE_CONFIGS, topic(res.resource_name))
                configs = _topic(ctx, r, res.resource_name, res.configuration_keys)
            elif res.resource_type == BROKER:
                ctx.broker.authorizer.check(Operation.DESCRIBE_CONFIGS, CLUSTER)
            else:
                code = KafkaErrorCode.invalid_request
                message = f"resource type {res.resource_type} is not described here"
        except BrokerError as e:
            code, message = error_code_of(e), e.message
        results.append(
            r.make(
                "DescribeConfigsResult",
                error_code=code,
                error_message=message,
                resource_type=res.resource_type,
                resource_name=res.resource_name,
                configs=configs,
            )
        )
    return r(throttle_time=NO_THROTTLE, results=tuple(results))


API = Api(key=32, name="DescribeConfigs", min_version=1, max_version=4, handle=handle)
