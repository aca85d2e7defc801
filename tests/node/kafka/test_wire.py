"""The Kafka listener's framing and headers (node/kafka/wire.py), with kio as the other side:
requests encoded by kio's generated types decode to the same values, every API in the table
has kio types for every version it advertises, and what is not a request is refused."""

from __future__ import annotations

import datetime
import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.index import load_request_schema, load_response_schema
from kio.schema.metadata.v1.request import MetadataRequest as MetadataRequestV1
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.request_header.v1.header import RequestHeader as HeaderV1
from kio.schema.request_header.v2.header import RequestHeader as HeaderV2
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i16, i32

from node.kafka.handlers import APIS
from node.kafka.wire import (
    ProtocolError,
    Responses,
    UnsupportedApiVersions,
    decode_request,
    encode_response,
    kafka_error,
    topic_uuid,
)


def frame(header: object, body: object) -> bytes:
    buf = io.BytesIO()
    entity_writer(type(header))(buf, header)
    entity_writer(type(body))(buf, body)
    return buf.getvalue()


def test_a_flexible_request_decodes_to_what_kio_encoded() -> None:
    body = MetadataRequest(
        topics=(MetadataRequestTopic(topic_id=None, name="orders"),),
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )
    header = HeaderV2(
        request_api_key=i16(3), request_api_version=i16(12), correlation_id=i32(7), client_id="c"
    )
    req = decode_request(frame(header, body), APIS)
    assert (req.api.name, req.version, req.correlation_id, req.client_id) == (
        "Metadata",
        12,
        7,
        "c",
    )
    assert req.body == body


def test_a_legacy_request_uses_header_v1() -> None:
    body = MetadataRequestV1(topics=None)
    header = HeaderV1(
        request_api_key=i16(3), request_api_version=i16(1), correlation_id=i32(9), client_id=None
    )
    req = decode_request(frame(header, body), APIS)
    assert req.body.topics is None and req.correlation_id == 9


@pytest.mark.parametrize("api", sorted(APIS.values(), key=lambda a: a.key), ids=lambda a: a.name)
def test_every_advertised_version_has_kio_types(api: object) -> None:
    for version in range(api.min_version, api.max_version + 1):  # type: ignore[attr-defined]
        load_request_schema(api.key, version)  # type: ignore[attr-defined]
        load_response_schema(api.key, version)  # type: ignore[attr-defined]


def test_what_is_not_a_served_request_is_refused() -> None:
    with pytest.raises(ProtocolError, match="shorter"):
        decode_request(b"\x00\x03\x00", APIS)
    with pytest.raises(ProtocolError, match="api key 999"):
        decode_request(struct.pack(">hhi", 999, 0, 1), APIS)
    with pytest.raises(ProtocolError, match="Metadata v99 is not served"):
        decode_request(struct.pack(">hhi", 3, 99, 1), APIS)
    with pytest.raises(ProtocolError, match="malformed Metadata v12"):
        decode_request(struct.pack(">hhi", 3, 12, 1) + b"\x00\x01c\x00" + b"\xff" * 3, APIS)
    with pytest.raises(UnsupportedApiVersions) as caught:
        decode_request(struct.pack(">hhi", 18, 77, 123), APIS)
    assert caught.value.correlation_id == 123


def test_responses_drop_fields_a_version_does_not_have() -> None:
    v0 = Responses(3, 0)
    v12 = Responses(3, 12)
    fields = dict(
        error_code=kafka_error(0),
        name="t",
        topic_id=topic_uuid("c", "t", 1),
        is_internal=False,
        partitions=(),
        topic_authorized_operations=-(2**31),
    )
    assert not hasattr(v0.make("MetadataResponseTopic", **fields), "topic_id")
    assert v12.make("MetadataResponseTopic", **fields).topic_id == topic_uuid("c", "t", 1)


def test_a_response_frame_carries_its_size_and_correlation_id() -> None:
    r = Responses(18, 3)
    resp = r(error_code=kafka_error(0), api_keys=(), throttle_time=datetime.timedelta(0))
    data = encode_response(55, resp)
    size, correlation_id = struct.unpack(">ii", data[:8])
    assert size == len(data) - 4 and correlation_id == 55
    # ApiVersions answers with header v0 (no tagged fields) even at v3.
    decoded, used = entity_reader(r.cls)(data[8:], 0)
    assert decoded == resp and used == len(data) - 8


def test_our_own_error_codes_become_unknown_server_error() -> None:
    assert kafka_error(6).name == "not_leader_or_follower"
    assert kafka_error(1000).name == "unknown_server_error"  # INCONSISTENT_NODE_ID is ours


def test_topic_ids_differ_per_incarnation_and_agree_across_nodes() -> None:
    assert topic_uuid("c", "t", 1) == topic_uuid("c", "t", 1)
    assert topic_uuid("c", "t", 1) != topic_uuid("c", "t", 2)  # deleted and created again
    assert topic_uuid("c", "t", 1) != topic_uuid("d", "t", 1)


@given(
    api=st.sampled_from(sorted(APIS)),
    version=st.integers(-2, 20),
    body=st.binary(max_size=300),
    flexible_header=st.booleans(),
)
@settings(max_examples=400, deadline=None)
def test_no_frame_makes_the_decoder_raise_anything_but_a_protocol_error(
    api: int, version: int, body: bytes, flexible_header: bool
) -> None:
    """Random bodies behind a well-formed route: a request, or the connection is closed."""
    client_id = b"\x00\x01c" + (b"\x00" if flexible_header else b"")
    frame = struct.pack(">hhi", api, version, 3) + client_id + body
    try:
        req = decode_request(frame, APIS)
    except (ProtocolError, UnsupportedApiVersions):
        return
    assert req.api.key == api and req.correlation_id == 3
