"""Commands of a replicated state machine as values (h11's events): one encode, one decode.

A command is a frozen, keyword-only dataclass that checks its fields when it is built, so a
command that exists is well formed, whether a proposer built it or it was read from the log.
In the log it is one JSON object tagged by its `op` (rare, small, readable in a debugger): the
shape the first controller and coordinator wrote as plain dicts, so a data directory written
then replays now. A field whose JSON key differs from its Python name (`from` is a keyword)
says so in its metadata: `field(metadata=wire("from"))`.

Each state machine has its own CommandSet (its table of ops); `decode` turns bytes into one of its
commands or refuses them with INVALID_REQUEST (an unknown op, a missing or malformed field),
which the state machine answers as it answers any refused command: applied as nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import Field, dataclass, fields
from typing import Any, ClassVar, TypeVar

from node.errors import BrokerError, ErrorCode

C = TypeVar("C", bound="type[Command]")

WIRE_NAME = "wire_name"


def wire(name: str) -> Mapping[str, str]:
    """Field metadata: this field's JSON key is `name`."""
    return {WIRE_NAME: name}


def _key(f: Field[Any]) -> str:
    return str(f.metadata.get(WIRE_NAME, f.name))


def invalid(command: str, why: str) -> BrokerError:
    return BrokerError(ErrorCode.INVALID_REQUEST, f"invalid {command} command: {why}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Command:
    """A change to a replicated state; subclasses name their `op` and check their fields in
    `__post_init__` (raising `invalid(...)`)."""

    op: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op}
        for f in fields(self):
            out[_key(f)] = _plain(getattr(self, f.name))
        return out

    def encode(self) -> bytes:
        return json.dumps(self.to_json()).encode()


def _plain(value: Any) -> Any:
    """JSON's shapes of a field's value (tuples become lists, mappings dicts)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


class CommandSet:
    """The commands one state machine knows, by op: the one decode of its log's entries."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._by_op: dict[str, type[Command]] = {}

    def register(self, cls: C) -> C:
        """Class decorator: add a command type to this set."""
        if not cls.op or cls.op in self._by_op:
            raise ValueError(f"{self.name} command {cls.__name__}: op {cls.op!r} is empty or taken")
        self._by_op[cls.op] = cls
        return cls

    def __contains__(self, cls: object) -> bool:
        return isinstance(cls, type) and self._by_op.get(getattr(cls, "op", "")) is cls

    def __iter__(self) -> Iterator[type[Command]]:
        return iter(self._by_op.values())

    def decode(self, data: bytes) -> Command:
        try:
            raw = json.loads(data)
        except ValueError as e:
            raise invalid(self.name, f"not JSON ({e})") from None
        if not isinstance(raw, dict):
            raise invalid(self.name, "not a JSON object")
        op = raw.get("op")
        cls = self._by_op.get(op) if isinstance(op, str) else None
        if cls is None:
            raise BrokerError(ErrorCode.INVALID_REQUEST, f"unknown {self.name} command {op!r}")
        kwargs = {f.name: raw[_key(f)] for f in fields(cls) if _key(f) in raw}
        try:
            return cls(**kwargs)
        except TypeError as e:  # a required field is missing
            raise invalid(cls.op, str(e)) from None


# -- checks for __post_init__ -------------------------------------------------------------------
def check_int(command: str, name: str, value: object, lo: int = 0, hi: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid(command, f"{name} must be an integer, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise invalid(command, f"{name} {value} is outside {lo}..{hi if hi is not None else ''}")
    return value


def check_str(command: str, name: str, value: object, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise invalid(command, f"{name} must be a non-empty string, not {value!r}")
    return value


def check_str_list(command: str, name: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise invalid(command, f"{name} must be a list, not {value!r}")
    return tuple(check_str(command, name, v) for v in value)


def check_str_map(command: str, name: str, value: object, *, nulls: bool = False) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and (isinstance(v, str) or (nulls and v is None))
        for k, v in value.items()
    ):
        raise invalid(command, f"{name} must map strings to strings, not {value!r}")
    return dict(value)


def set_field(command: Command, name: str, value: object) -> None:
    """Store a normalised value on a frozen command (in its __post_init__ only)."""
    object.__setattr__(command, name, value)
