"""Kafka's framing and headers, the table of APIs served, and helpers over kio's message types.

A Kafka request is a 4-byte big-endian size, then a request header (api key, api version,
correlation id, client id; plus tagged fields from the API's first "flexible" version on), then
the body. The response is a size, the correlation id (plus tagged fields for flexible versions,
except ApiVersions, whose response header is always v0 so that any client can read it), then
the body. kio generates one dataclass per API, version and direction from Kafka's own JSON
schemas, each knowing its header schema; this module picks the right one and nothing here
encodes a field by hand but the first four bytes a request is routed by.

Every request's lengths are checked against its frame before kio decodes it (frame_guard.py: kio's
native reader would abort the process on an absurd array length). A request that cannot be
parsed, names an API or version this node does not serve (ApiVersions
aside: it gets Kafka's UNSUPPORTED_VERSION answer, so the client can downgrade), or is larger
than MAX_FRAME_BYTES closes the connection, as Kafka does: the stream cannot be trusted past it.
"""

from __future__ import annotations

import datetime
import functools
import io
import struct
import sys
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, fields
from typing import Any

import kio.index
from kio.schema.errors import ErrorCode as KafkaErrorCode
from kio.serial import entity_reader, entity_writer

from liferaft_proto.v1 import broker_pb2_grpc
from node.broker import Broker
from node.config import parse_address
from node.errors import BrokerError
from node.kafka.classic import ClassicGroups
from node.kafka.frame_guard import FrameError, check_entity

MAX_FRAME_BYTES = 64 << 20
"""The largest request accepted (Kafka's socket.request.max.bytes is 100 MiB; gRPC's limit here
is 64 MiB). A larger size prefix closes the connection before anything is read."""
MIN_FRAME_BYTES = 8
"""api key (2) + api version (2) + correlation id (4): anything shorter is not a request."""
NO_THROTTLE = datetime.timedelta(0)
API_VERSIONS_KEY = 18

_ROUTE = struct.Struct(">hhi")


class ProtocolError(Exception):
    """The peer broke the protocol: the connection is closed (after a log line)."""


class CloseConnection(Exception):
    """A handler's way to answer by closing the connection: Kafka's signal to an acks=0
    producer that a batch failed (it gets no answer, so it reconnects and refreshes metadata)."""


@dataclass(slots=True, frozen=True)
class Ctx:
    """What every handler may use: the node's broker and how to reach its peers."""

    broker: Broker
    kafka_port_offset: int
    """Every node's Kafka listener is at its advertised gRPC port plus this."""
    forward: Callable[[int], broker_pb2_grpc.BrokerStub | None]
    """node id -> a gRPC stub to that node (requests only the controller leader may serve)."""
    classic: ClassicGroups
    """Kafka's classic consumer groups on this node while it coordinates (node/kafka/classic.py)."""
    sasl: bool = False
    """Clients log in with SASL/SCRAM before any other request (node/kafka/sasl.py)."""

    def kafka_address(self, node_id: int) -> tuple[str, int] | None:
        """The (host, port) of a node's Kafka listener, as metadata advertises it."""
        address = self.broker.advertised_address(node_id)
        if not address:
            return None
        host, port = parse_address(address)
        return host, port + self.kafka_port_offset

    def topic_uuid(self, name: str, topic_id: int) -> uuid.UUID:
        return topic_uuid(self.broker.config.cluster_id, name, topic_id)


def topic_uuid(cluster_id: str, name: str, topic_id: int) -> uuid.UUID:
    """A topic's Kafka topic id. Derived, not stored: the controller's topic ids are never reused
    (its counter only grows), so (cluster, topic id, name) names one incarnation of a topic, and
    every node computes the same UUID from its own replica of the metadata."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"liferaft:{cluster_id}/topic/{topic_id}/{name}")


Handler = Callable[[Ctx, Any, int], Coroutine[Any, Any, Any]]
"""(ctx, decoded request, version) -> the response entity, or None for no response at all
(Produce with acks=0). A handler must not await before it has acted on anything whose order
matters (Produce proposes every batch before its first await): requests of one connection are
started in the order they arrived."""


@dataclass(slots=True, frozen=True)
class Api:
    key: int
    name: str
    min_version: int
    max_version: int
    handle: Handler


@dataclass(slots=True, frozen=True)
class Request:
    api: Api
    version: int
    correlation_id: int
    client_id: str | None
    body: Any


def kafka_error(code: int) -> KafkaErrorCode:
    """liferaft's error codes are Kafka's numbers; the few of our own map to UNKNOWN_SERVER_ERROR."""
    try:
        return KafkaErrorCode(code)
    except ValueError:
        return KafkaErrorCode.unknown_server_error


NONE = KafkaErrorCode.none

# kio finds a schema class by importing its dotted path on every call (pkgutil.resolve_name,
# ~2 us); a node asks for the same few on every request. Callers ask only for versions the API
# table serves, so the caches hold at most one entry per served (API, version).
load_request_schema = functools.cache(kio.index.load_request_schema)
load_response_schema = functools.cache(kio.index.load_response_schema)


def error_code_of(err: BrokerError) -> KafkaErrorCode:
    return kafka_error(err.code)


class Responses:
    """The response types of one API version: `r(**fields)` builds the top-level response,
    `r.make("NestedName", **fields)` a nested one. Fields the version does not have are dropped,
    so a handler names every field once and each version takes what it knows."""

    def __init__(self, api_key: int, version: int) -> None:
        self.cls: type[Any] = load_response_schema(api_key, version)
        self._module = sys.modules[self.cls.__module__]
        self.version = version

    def __call__(self, **kw: Any) -> Any:
        return _build(self.cls, kw)

    def make(self, type_name: str, /, **kw: Any) -> Any:
        return _build(getattr(self._module, type_name), kw)

    def has(self, name: str, field: str) -> bool:
        cls = self.cls if name == "" else getattr(self._module, name)
        return field in _field_names(cls)


_FIELDS: dict[type[Any], frozenset[str]] = {}


def _field_names(cls: type[Any]) -> frozenset[str]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = frozenset(f.name for f in fields(cls))
    return names


def _build(cls: type[Any], kw: dict[str, Any]) -> Any:
    names = _field_names(cls)
    return cls(**{k: v for k, v in kw.items() if k in names})


def decode_request(frame: bytes, apis: dict[int, Api]) -> Request:
    """Parse one request frame (without its size prefix). Raises ProtocolError, or
    UnsupportedApiVersions for an ApiVersions request of a version not served."""
    if len(frame) < MIN_FRAME_BYTES:
        raise ProtocolError(f"a request of {len(frame)} bytes is shorter than any header")
    api_key, version, correlation_id = _ROUTE.unpack_from(frame)
    api = apis.get(api_key)
    if api is None:
        raise ProtocolError(f"api key {api_key} is not served")
    if not api.min_version <= version <= api.max_version:
        if api_key == API_VERSIONS_KEY:
            raise UnsupportedApiVersions(correlation_id)
        raise ProtocolError(
            f"{api.name} v{version} is not served (v{api.min_version}..v{api.max_version})"
        )
    cls = load_request_schema(api_key, version)
    try:
        # kio's native reader aborts the process on an absurd array length: check first.
        check_entity(cls, frame, check_entity(cls.__header_schema__, frame, 0))
    except FrameError as e:
        raise ProtocolError(
            f"malformed {api.name} v{version} request: {e} (starting {frame[:32].hex()})"
        ) from None
    try:
        header, used = entity_reader(cls.__header_schema__)(frame, 0)
        body, _ = entity_reader(cls)(frame, used)
    except Exception as e:  # kio's readers raise SerialError, and KeyError for unknown tags
        raise ProtocolError(
            f"malformed {api.name} v{version} request: {e!r} (starting {frame[:32].hex()})"
        ) from None
    # Bytes after the last field are ignored, as Kafka's own parser does (librdkafka 2.x sends
    # three after a Metadata v12 request for all topics).
    return Request(api, version, correlation_id, header.client_id, body)


class UnsupportedApiVersions(Exception):
    def __init__(self, correlation_id: int) -> None:
        super().__init__(correlation_id)
        self.correlation_id = correlation_id


def encode_response(correlation_id: int, response: Any) -> bytes:
    """Size prefix, the response header the response type names, the body."""
    header_cls = response.__header_schema__
    buf = io.BytesIO()
    buf.write(b"\0\0\0\0")
    entity_writer(header_cls)(buf, header_cls(correlation_id=correlation_id))
    entity_writer(type(response))(buf, response)
    data = buf.getbuffer()
    struct.pack_into(">i", data, 0, len(data) - 4)
    return bytes(data)
