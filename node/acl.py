"""Access control lists as Kafka has them: values, filters, and the rules that match them.

An ACL (`AclBinding`) says: this principal, from this host, may (ALLOW) or may not (DENY) do this
operation on resources matching this pattern (a type, a name, and whether the name is LITERAL or
a PREFIXED one). The numbers of every enum are Kafka's (AclOperation, ResourceType, PatternType,
AclPermissionType), so the Kafka listener's DescribeAcls/CreateAcls/DeleteAcls carry them as is.

How a request is decided (`decide`), as Kafka's authorizer does:
- an ACL applies when its pattern matches the resource (LITERAL: the same name, or `*`;
  PREFIXED: the resource's name starts with it), its principal is the caller's or `User:*`, and
  its host is `*` (liferaft keeps only `*`: a client's address is not a credential);
- a DENY for the operation (or ALL) wins over any ALLOW;
- else an ALLOW for the operation (or ALL) allows; READ, WRITE, DELETE and ALTER each imply
  DESCRIBE, and ALTER_CONFIGS implies DESCRIBE_CONFIGS (an implied DESCRIBE is not denied by a
  DENY of what implies it: a DENY names exactly what it denies, or ALL);
- else the request is denied (allow.everyone.if.no.acl.found=false): super users and the
  authorizer's off switch live in node/authorizer.py, not here.
IDEMPOTENT_WRITE on the cluster is also granted to a principal allowed WRITE on some topic
(`may_write_some_topic`), as Kafka's InitProducerId does since 2.8 (KIP-679).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from node.errors import BrokerError, ErrorCode

__all__ = [
    "ANY_HOST",
    "CLUSTER_NAME",
    "MAX_ACL_NAME_CHARS",
    "MAX_PRINCIPAL_CHARS",
    "WILDCARD",
    "WILDCARD_PRINCIPAL",
    "AclBinding",
    "AclBindingFilter",
    "AclSet",
    "Operation",
    "PatternType",
    "Permission",
    "Resource",
    "ResourcePattern",
    "ResourceType",
    "decide",
]

WILDCARD = "*"
"""A LITERAL resource name matching every resource of its type."""
WILDCARD_PRINCIPAL = "User:*"
ANY_HOST = "*"
CLUSTER_NAME = "kafka-cluster"
"""The one cluster resource's name, as Kafka's clients send it."""
MAX_PRINCIPAL_CHARS = 1024
"""A principal may be a certificate's whole subject (`User:CN=...,O=...`)."""
MAX_ACL_NAME_CHARS = 255
"""A resource name in an ACL: topics (249), groups (249), transactional ids."""


class ResourceType(enum.IntEnum):
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class PatternType(enum.IntEnum):
    ANY = 1
    """Filters only: either pattern type, the name exactly."""
    MATCH = 2
    """Filters only: every pattern that would match the named resource."""
    LITERAL = 3
    PREFIXED = 4


class Operation(enum.IntEnum):
    ANY = 1
    """Filters only."""
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


class Permission(enum.IntEnum):
    ANY = 1
    """Filters only."""
    DENY = 2
    ALLOW = 3


_IMPLIED_BY: dict[Operation, frozenset[Operation]] = {
    Operation.DESCRIBE: frozenset(
        {Operation.DESCRIBE, Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER}
    ),
    Operation.DESCRIBE_CONFIGS: frozenset({Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS}),
}
"""An operation -> the ALLOWed operations that grant it (besides ALL)."""


def allowed_by(operation: Operation) -> frozenset[Operation]:
    """The operations whose ALLOW grants `operation` (ALL aside)."""
    return _IMPLIED_BY.get(operation, frozenset({operation}))


def invalid(why: str) -> BrokerError:
    return BrokerError(ErrorCode.INVALID_REQUEST, why)


def _enum(cls: type[enum.IntEnum], value: object, what: str) -> Any:
    """An enum member from a member, its Kafka number, or its name (any case)."""
    if isinstance(value, cls):
        return value
    try:
        if isinstance(value, str):
            return cls[value.upper()]
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
    except (KeyError, ValueError):
        pass
    names = ", ".join(m.name.lower() for m in cls)
    raise invalid(f"unknown {what} {value!r}: one of {names}")


def _text(value: object, what: str, max_chars: int) -> str:
    if not isinstance(value, str) or not value:
        raise invalid(f"{what} must be a non-empty string, not {value!r}"[:300])
    if len(value) > max_chars or not value.isprintable():
        raise invalid(f"{what} must be at most {max_chars} printable characters")
    return value


def check_principal(value: object) -> str:
    """`Type:name`, as Kafka writes principals (`User:alice`, `User:*`)."""
    p = _text(value, "principal", MAX_PRINCIPAL_CHARS)
    kind, sep, name = p.partition(":")
    if not sep or not kind or not name:
        raise invalid(f"principal {p[:80]!r} must look like User:NAME (or User:* for everyone)")
    return p


@dataclass(frozen=True, slots=True)
class Resource:
    """What a request acts on: a topic, group, transactional id, or the cluster."""

    type: ResourceType
    name: str

    def __str__(self) -> str:
        if self.type == ResourceType.CLUSTER:
            return "the cluster"
        return f"{self.type.name.lower().replace('_', ' ')} {_shown(self.name)}"


def _shown(name: str) -> str:
    if len(name) <= 64 and name.isprintable() and name:
        return name
    return f"{name[:64]!r}" + (f"... ({len(name)} characters)" if len(name) > 64 else "")


def topic(name: str) -> Resource:
    return Resource(ResourceType.TOPIC, name)


def group(name: str) -> Resource:
    return Resource(ResourceType.GROUP, name)


def transactional_id(name: str) -> Resource:
    return Resource(ResourceType.TRANSACTIONAL_ID, name)


CLUSTER = Resource(ResourceType.CLUSTER, CLUSTER_NAME)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourcePattern:
    """The resources an ACL is about: one type, a name, LITERAL (that name, or `*` for all) or
    PREFIXED (every name starting with it)."""

    type: ResourceType
    name: str
    pattern_type: PatternType = PatternType.LITERAL

    def __post_init__(self) -> None:
        t = _enum(ResourceType, self.type, "resource type")
        pt = _enum(PatternType, self.pattern_type, "resource pattern type")
        if t == ResourceType.ANY:
            raise invalid("an ACL names one resource type, not any")
        if pt not in (PatternType.LITERAL, PatternType.PREFIXED):
            raise invalid("an ACL's pattern type is literal or prefixed")
        name = _text(self.name, "resource name", MAX_ACL_NAME_CHARS)
        if t == ResourceType.CLUSTER and (name != CLUSTER_NAME or pt != PatternType.LITERAL):
            raise invalid(f"the cluster resource is the literal {CLUSTER_NAME!r}")
        if pt == PatternType.PREFIXED and name == WILDCARD:
            raise invalid(
                "a prefixed pattern '*' matches only names starting with '*': use literal"
            )
        object.__setattr__(self, "type", t)
        object.__setattr__(self, "pattern_type", pt)

    def matches(self, resource: Resource) -> bool:
        if resource.type != self.type:
            return False
        if self.pattern_type == PatternType.PREFIXED:
            return resource.name.startswith(self.name)
        return self.name in (WILDCARD, resource.name)


@dataclass(frozen=True, slots=True, kw_only=True)
class AclBinding:
    """One ACL: `principal` from `host` is ALLOWed or DENYed `operation` on `pattern`."""

    pattern: ResourcePattern
    principal: str
    operation: Operation
    permission: Permission
    host: str = ANY_HOST

    def __post_init__(self) -> None:
        check_principal(self.principal)
        if self.host != ANY_HOST:
            raise invalid(f"host {str(self.host)[:80]!r}: liferaft's ACLs take only host '*'")
        op = _enum(Operation, self.operation, "operation")
        perm = _enum(Permission, self.permission, "permission")
        if op == Operation.ANY:
            raise invalid("an ACL names one operation (or all), not any")
        if perm == Permission.ANY:
            raise invalid("an ACL either allows or denies, not any")
        object.__setattr__(self, "operation", op)
        object.__setattr__(self, "permission", perm)

    def applies_to(self, principal: str) -> bool:
        return self.principal in (principal, WILDCARD_PRINCIPAL)

    def to_json(self) -> dict[str, str]:
        return {
            "resource_type": self.pattern.type.name.lower(),
            "name": self.pattern.name,
            "pattern_type": self.pattern.pattern_type.name.lower(),
            "principal": self.principal,
            "host": self.host,
            "operation": self.operation.name.lower(),
            "permission": self.permission.name.lower(),
        }

    @classmethod
    def from_json(cls, raw: object) -> AclBinding:
        if not isinstance(raw, dict):
            raise invalid(f"an ACL must be an object, not {type(raw).__name__}")
        try:
            return cls(
                pattern=ResourcePattern(
                    type=raw["resource_type"],
                    name=raw["name"],
                    pattern_type=raw.get("pattern_type", "literal"),
                ),
                principal=raw["principal"],
                host=raw.get("host", ANY_HOST),
                operation=raw["operation"],
                permission=raw["permission"],
            )
        except KeyError as e:
            raise invalid(f"an ACL needs {e.args[0]!r}") from None

    def __str__(self) -> str:
        return (
            f"{self.principal} {self.permission.name} {self.operation.name} on "
            f"{self.pattern.pattern_type.name.lower()} {self.pattern.type.name.lower()} "
            f"{self.pattern.name!r}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AclBindingFilter:
    """Which ACLs to list or delete (Kafka's AclBindingFilter): each field None/ANY for any.

    `pattern_type` MATCH with a name selects the ACLs that would apply to the resource of that
    name (LITERAL equal or `*`, PREFIXED a prefix of it); ANY selects either type with exactly
    that name; LITERAL/PREFIXED that type with exactly that name."""

    resource_type: ResourceType = ResourceType.ANY
    name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: Operation = Operation.ANY
    permission: Permission = Permission.ANY

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "resource_type", _enum(ResourceType, self.resource_type, "resource type")
        )
        object.__setattr__(
            self, "pattern_type", _enum(PatternType, self.pattern_type, "pattern type")
        )
        object.__setattr__(self, "operation", _enum(Operation, self.operation, "operation"))
        object.__setattr__(self, "permission", _enum(Permission, self.permission, "permission"))
        if self.name is not None:
            _text(self.name, "resource name", MAX_ACL_NAME_CHARS)
        if self.principal is not None:
            check_principal(self.principal)
        if self.host is not None:
            _text(self.host, "host", 255)

    def matches(self, acl: AclBinding) -> bool:
        p = acl.pattern
        if self.resource_type not in (ResourceType.ANY, p.type):
            return False
        if self.pattern_type not in (PatternType.ANY, PatternType.MATCH, p.pattern_type):
            return False
        if self.name is not None:
            if self.pattern_type == PatternType.MATCH:
                if not p.matches(Resource(p.type, self.name)):
                    return False
            elif self.name != p.name:
                return False
        if self.principal is not None and self.principal != acl.principal:
            return False
        if self.host is not None and self.host != acl.host:
            return False
        if self.operation not in (Operation.ANY, acl.operation):
            return False
        return self.permission in (Permission.ANY, acl.permission)

    def to_json(self) -> dict[str, str | None]:
        return {
            "resource_type": self.resource_type.name.lower(),
            "name": self.name,
            "pattern_type": self.pattern_type.name.lower(),
            "principal": self.principal,
            "host": self.host,
            "operation": self.operation.name.lower(),
            "permission": self.permission.name.lower(),
        }

    @classmethod
    def from_json(cls, raw: object) -> AclBindingFilter:
        if not isinstance(raw, dict):
            raise invalid(f"an ACL filter must be an object, not {type(raw).__name__}")
        return cls(
            resource_type=raw.get("resource_type", "any"),
            name=raw.get("name"),
            pattern_type=raw.get("pattern_type", "any"),
            principal=raw.get("principal"),
            host=raw.get("host"),
            operation=raw.get("operation", "any"),
            permission=raw.get("permission", "any"),
        )


class AclSet:
    """The cluster's ACLs, kept in the order they were created, indexed by resource type so a
    decision looks only at the ACLs of the resource's type."""

    def __init__(self, acls: Iterable[AclBinding] = ()) -> None:
        self._acls: dict[AclBinding, None] = {}
        self._by_type: dict[ResourceType, dict[AclBinding, None]] = {}
        for acl in acls:
            self.add(acl)

    def __len__(self) -> int:
        return len(self._acls)

    def __iter__(self) -> Iterator[AclBinding]:
        return iter(self._acls)

    def __contains__(self, acl: object) -> bool:
        return acl in self._acls

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AclSet) and list(self._acls) == list(other._acls)

    __hash__ = None  # type: ignore[assignment]

    def add(self, acl: AclBinding) -> bool:
        """Add `acl`; False if it was there already (creating an ACL twice is not an error)."""
        if acl in self._acls:
            return False
        self._acls[acl] = None
        self._by_type.setdefault(acl.pattern.type, {})[acl] = None
        return True

    def remove_matching(self, flt: AclBindingFilter) -> list[AclBinding]:
        gone = [acl for acl in self._acls if flt.matches(acl)]
        for acl in gone:
            del self._acls[acl]
            del self._by_type[acl.pattern.type][acl]
        return gone

    def matching(self, flt: AclBindingFilter) -> list[AclBinding]:
        return [acl for acl in self._acls if flt.matches(acl)]

    def of_type(self, rtype: ResourceType) -> Iterable[AclBinding]:
        return self._by_type.get(rtype, {}).keys()

    def to_json(self) -> list[dict[str, str]]:
        return [acl.to_json() for acl in self._acls]

    @classmethod
    def from_json(cls, raw: object) -> AclSet:
        if not isinstance(raw, list):
            raise invalid("ACLs must be a list")
        return cls(AclBinding.from_json(r) for r in raw)


def decide(acls: AclSet, principal: str, operation: Operation, resource: Resource) -> bool:
    """Whether the ACLs allow `principal` `operation` on `resource` (the module's rules)."""
    grants = allowed_by(operation)
    allowed = False
    for acl in acls.of_type(resource.type):
        if not acl.applies_to(principal) or not acl.pattern.matches(resource):
            continue
        if acl.permission == Permission.DENY:
            if acl.operation in (operation, Operation.ALL):
                return False
        elif acl.operation == Operation.ALL or acl.operation in grants:
            allowed = True
    return allowed


def may_write_some_topic(acls: AclSet, principal: str) -> bool:
    """Whether `principal` may WRITE some topic: Kafka's authorizeByResourceType(WRITE, TOPIC),
    which grants IDEMPOTENT_WRITE on the cluster. An ALLOW counts unless a DENY of WRITE (or ALL)
    covers every name the ALLOW's pattern matches: a DENY on literal `*`, a DENY PREFIXED by a
    prefix of the ALLOW's name, or a DENY of the same LITERAL name as a LITERAL ALLOW."""
    mine = [acl for acl in acls.of_type(ResourceType.TOPIC) if acl.applies_to(principal)]
    denies = [
        acl.pattern
        for acl in mine
        if acl.permission == Permission.DENY and acl.operation in (Operation.WRITE, Operation.ALL)
    ]
    for acl in mine:
        if acl.permission != Permission.ALLOW or acl.operation not in (
            Operation.WRITE,
            Operation.ALL,
        ):
            continue
        if not any(_covers(deny, acl.pattern) for deny in denies):
            return True
    return False


def _covers(deny: ResourcePattern, allow: ResourcePattern) -> bool:
    """Whether every name `allow` matches is matched by `deny`."""
    if deny.pattern_type == PatternType.LITERAL:
        if deny.name == WILDCARD:
            return True
        return allow.pattern_type == PatternType.LITERAL and allow.name == deny.name
    # A PREFIXED deny covers the names starting with its prefix; a LITERAL `*` allow also
    # matches names that do not.
    if allow.pattern_type == PatternType.LITERAL and allow.name == WILDCARD:
        return False
    return allow.name.startswith(deny.name)
