"""ApiVersions (key 18): which APIs and versions this node serves (the table in __init__)."""

from __future__ import annotations

from typing import Any

from kio.schema.api_versions.v0.response import ApiVersion as ApiVersionV0
from kio.schema.api_versions.v0.response import ApiVersionsResponse as ApiVersionsResponseV0
from kio.schema.errors import ErrorCode as KafkaErrorCode
from kio.static.primitive import i16

from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses


def _table() -> list[Api]:
    from node.kafka.handlers import APIS

    return sorted(APIS.values(), key=lambda a: a.key)


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    keys = tuple(
        r.make("ApiVersion", api_key=a.key, min_version=a.min_version, max_version=a.max_version)
        for a in _table()
    )
    return r(error_code=NONE, api_keys=keys, throttle_time=NO_THROTTLE)


def unsupported_version_response() -> Any:
    """Kafka's answer to an ApiVersions request newer than the broker knows: v0's layout, the
    error, and the table, so the client retries with a version both sides speak."""
    return ApiVersionsResponseV0(
        error_code=KafkaErrorCode.unsupported_version,
        api_keys=tuple(
            ApiVersionV0(
                api_key=i16(a.key), min_version=i16(a.min_version), max_version=i16(a.max_version)
            )
            for a in _table()
        ),
    )


API = Api(key=18, name="ApiVersions", min_version=0, max_version=3, handle=handle)
