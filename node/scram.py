"""SCRAM credentials (RFC 5802/7677) as the controller keeps them, and the checks made with them.

A user's password is never stored: for each mechanism the controller's replicated state holds
the salt, the iteration count, StoredKey and ServerKey (what Kafka keeps in
`user.scram.credentials`), made by the CLI before the password ever leaves it. From those a
node can run the SASL/SCRAM exchange of the Kafka listener (`scramp` does the RFC's
arithmetic) and, for the gRPC API, check a password sent over TLS by recomputing StoredKey
from it (as SASL/PLAIN does: the password crosses TLS, never plaintext).

Users are changed by two controller commands, applied here so the controller's apply stays one
dispatch line each:

    {"op": "upsert_user", "name": N, "mechanism": M, "salt": b64, "iterations": I,
     "stored_key": b64, "server_key": b64}
    {"op": "delete_user", "name": N, "mechanism": M or null (every mechanism)}
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scramp import ScramMechanism

from node.errors import BrokerError, ErrorCode

__all__ = [
    "MECHANISMS",
    "ScramCredential",
    "apply_user_command",
    "check_password",
    "make_credential",
    "users_from_json",
    "users_to_json",
]

MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
MIN_ITERATIONS = 4096
"""RFC 7677's floor (and Kafka's); more costs every login that much more."""
MAX_ITERATIONS = 1 << 20
MAX_USER_CHARS = 256


@dataclass(frozen=True, slots=True)
class ScramCredential:
    mechanism: str
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def auth_info(self) -> tuple[bytes, bytes, bytes, int]:
        """What scramp's server asks its auth_fn for."""
        return self.salt, self.stored_key, self.server_key, self.iterations

    def to_json(self) -> dict[str, Any]:
        return {
            "mechanism": self.mechanism,
            "salt": base64.b64encode(self.salt).decode(),
            "iterations": self.iterations,
            "stored_key": base64.b64encode(self.stored_key).decode(),
            "server_key": base64.b64encode(self.server_key).decode(),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ScramCredential:
        """Checked, for a command from the log may come from any client: BrokerError if bad."""
        try:
            mechanism = str(raw["mechanism"])
            iterations = int(raw["iterations"])
            salt = base64.b64decode(str(raw["salt"]), validate=True)
            stored_key = base64.b64decode(str(raw["stored_key"]), validate=True)
            server_key = base64.b64decode(str(raw["server_key"]), validate=True)
        except (KeyError, TypeError, ValueError) as e:
            raise BrokerError(ErrorCode.INVALID_REQUEST, f"bad SCRAM credential: {e}") from None
        if mechanism not in MECHANISMS:
            raise BrokerError(
                ErrorCode.INVALID_REQUEST,
                f"unknown SCRAM mechanism {mechanism!r} (one of {', '.join(MECHANISMS)})",
            )
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise BrokerError(
                ErrorCode.INVALID_REQUEST,
                f"SCRAM iterations must be {MIN_ITERATIONS}..{MAX_ITERATIONS}, got {iterations}",
            )
        size = 32 if mechanism == "SCRAM-SHA-256" else 64
        if len(stored_key) != size or len(server_key) != size or not 16 <= len(salt) <= 128:
            raise BrokerError(
                ErrorCode.INVALID_REQUEST,
                f"bad SCRAM credential: {mechanism} keys are {size} bytes, salts 16..128",
            )
        return cls(mechanism, salt, iterations, stored_key, server_key)


def make_credential(
    password: str, mechanism: str = "SCRAM-SHA-512", iterations: int = MIN_ITERATIONS
) -> ScramCredential:
    """Salt and hash a password (on the client side of `liferaft user add`)."""
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {', '.join(MECHANISMS)}, got {mechanism!r}")
    if not password:
        raise ValueError("the password is empty")
    salt, stored_key, server_key, count = ScramMechanism(mechanism).make_auth_info(
        password, iteration_count=iterations
    )
    return ScramCredential(mechanism, salt, count, stored_key, server_key)


def check_password(credential: ScramCredential, password: str) -> bool:
    """Whether a password (sent over TLS) is the one this credential was made from."""
    _, stored_key, _, _ = ScramMechanism(credential.mechanism).make_auth_info(
        password, iteration_count=credential.iterations, salt=credential.salt
    )
    return hmac.compare_digest(stored_key, credential.stored_key)


Users = dict[str, dict[str, ScramCredential]]
"""user name -> mechanism -> credential."""


def _user_name(cmd: Mapping[str, Any]) -> str:
    name = cmd.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_USER_CHARS:
        raise BrokerError(
            ErrorCode.INVALID_REQUEST, f"a user name is 1..{MAX_USER_CHARS} characters"
        )
    if any(c in name for c in ",=") or not name.isprintable():
        raise BrokerError(
            ErrorCode.INVALID_REQUEST,
            f"user name {name!r} may not hold ',', '=' or unprintable characters (SCRAM's "
            "separators)",
        )
    return name


def apply_user_command(users: Users, cmd: Mapping[str, Any]) -> None:
    """Apply upsert_user or delete_user to `users`; a bad command changes nothing."""
    name = _user_name(cmd)
    if cmd.get("op") == "upsert_user":
        credential = ScramCredential.from_json(cmd)
        users.setdefault(name, {})[credential.mechanism] = credential
        return
    mechanism = cmd.get("mechanism")
    held = users.get(name)
    if held is None or (mechanism is not None and mechanism not in held):
        what = f"user {name!r}" + (f" has no {mechanism} credential" if held else " does not exist")
        raise BrokerError(ErrorCode.INVALID_REQUEST, what)
    if mechanism is None:
        del users[name]
    else:
        del held[mechanism]
        if not held:
            del users[name]


def users_to_json(users: Users) -> list[dict[str, Any]]:
    return [
        {"name": name, **cred.to_json()}
        for name, by_mechanism in sorted(users.items())
        for cred in by_mechanism.values()
    ]


def users_from_json(raw: list[dict[str, Any]]) -> Users:
    users: Users = {}
    for item in raw:
        cred = ScramCredential.from_json(item)
        users.setdefault(str(item["name"]), {})[cred.mechanism] = cred
    return users
