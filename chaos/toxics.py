"""Toxic definitions for the fault proxy: what each toxic type accepts, and its API shape.

A toxic is a value: name, type, stream ("upstream" is client -> server, "downstream" is server ->
client), toxicity (the probability that the toxic applies to a given connection) and integer
attributes. This module only parses and validates those values, the way Toxiproxy's HTTP API does
(same defaults, same error texts); what a toxic *does* to bytes lives in chaos/proxy.py.

Attributes are integers, as in Toxiproxy (a Go int64): a JSON number with a fractional part, a
string or a boolean is a bad request. Unknown attribute names are ignored (Toxiproxy's JSON decoder
ignores them too), and omitted ones keep their default of 0. Unlike Toxiproxy we also refuse
negative values, which no toxic gives a meaning to.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "STREAMS",
    "TOXIC_TYPES",
    "ApiError",
    "Toxic",
    "parse_new_toxic",
    "parse_toxic_update",
]

Stream = Literal["upstream", "downstream"]
STREAMS: tuple[Stream, ...] = ("upstream", "downstream")

# Every toxic type we implement, with its attributes and their defaults (milliseconds unless
# said otherwise). Slicer's `delay` is in microseconds, as in Toxiproxy; bandwidth's `rate` is in
# KB/s with KB = 1000 bytes; limit_data's `bytes` is a byte count.
TOXIC_TYPES: Mapping[str, Mapping[str, int]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
    "limit_data": {"bytes": 0},
}


class ApiError(Exception):
    """An error the HTTP API reports as {"error": message, "status": status}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @classmethod
    def bad_body(cls, detail: str) -> ApiError:
        return cls(400, f"bad request body: {detail}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Toxic:
    """One toxic as the API shows it. Immutable: an update makes a new one."""

    name: str
    type: str
    stream: Stream
    toxicity: float  # 0.0 <= toxicity <= 1.0
    attributes: Mapping[str, int] = field(default_factory=dict)

    def attr(self, key: str) -> int:
        return self.attributes.get(key, 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "attributes": dict(self.attributes),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
        }


def parse_new_toxic(body: object, existing_names: Iterable[str]) -> Toxic:
    """The toxic a POST /proxies/{proxy}/toxics body asks for, or ApiError.

    Checks run in Toxiproxy's order: body shape, stream, type, duplicate name, attributes.
    """
    if not isinstance(body, dict):
        raise ApiError.bad_body("expected a JSON object")
    stream_raw = body.get("stream", "downstream")
    if not isinstance(stream_raw, str) or stream_raw.lower() not in STREAMS:
        raise ApiError(400, "stream was invalid, can be either upstream or downstream")
    stream: Stream = "upstream" if stream_raw.lower() == "upstream" else "downstream"
    toxic_type = body.get("type", "")
    if not isinstance(toxic_type, str):
        raise ApiError.bad_body("type must be a string")
    name = body.get("name") or f"{toxic_type}_{stream}"
    if not isinstance(name, str):
        raise ApiError.bad_body("name must be a string")
    if toxic_type not in TOXIC_TYPES:
        raise ApiError(400, "invalid toxic type")
    if name in set(existing_names):
        raise ApiError(409, "toxic already exists")
    toxicity = _parse_toxicity(body.get("toxicity", 1.0))
    attributes = _parse_attributes(
        toxic_type, dict(TOXIC_TYPES[toxic_type]), body.get("attributes")
    )
    return Toxic(
        name=name, type=toxic_type, stream=stream, toxicity=toxicity, attributes=attributes
    )


def parse_toxic_update(toxic: Toxic, body: object) -> Toxic:
    """`toxic` with the attributes and toxicity a POST/PATCH body changes; other fields stay."""
    if not isinstance(body, dict):
        raise ApiError.bad_body("expected a JSON object")
    toxicity = _parse_toxicity(body.get("toxicity", toxic.toxicity))
    attributes = _parse_attributes(toxic.type, dict(toxic.attributes), body.get("attributes"))
    return replace(toxic, toxicity=toxicity, attributes=attributes)


def _parse_toxicity(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ApiError.bad_body("toxicity must be a number")
    if not 0.0 <= raw <= 1.0:
        raise ApiError.bad_body("toxicity must be between 0 and 1")
    return float(raw)


def _parse_attributes(toxic_type: str, base: dict[str, int], raw: object) -> dict[str, int]:
    if raw is None:
        return base
    if not isinstance(raw, dict):
        raise ApiError.bad_body("attributes must be a JSON object")
    known = TOXIC_TYPES[toxic_type]
    for key, value in raw.items():
        if key not in known:
            continue  # ignored, as Toxiproxy's decoder does
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ApiError.bad_body(f"attribute {key!r} of {toxic_type} must be an integer")
        if isinstance(value, float) and not value.is_integer():
            raise ApiError.bad_body(f"attribute {key!r} of {toxic_type} must be an integer")
        if value < 0:
            raise ApiError.bad_body(f"attribute {key!r} of {toxic_type} must not be negative")
        base[key] = int(value)
    return base
