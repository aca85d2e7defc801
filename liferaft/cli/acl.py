"""`liferaft acl`: who may do what (add, list, remove), with kafka-acls' options.

    liferaft acl add --allow-principal User:alice --operation write --topic orders
    liferaft acl add --allow-principal User:etl --operation read --topic pay. \\
        --resource-pattern-type prefixed
    liferaft acl add --deny-principal User:bob --operation all --topic '*'
    liferaft acl list [--topic orders] [--principal User:alice]
    liferaft acl remove --allow-principal User:alice --operation write --topic orders

A cluster enforces ACLs only when its nodes run with --authorizer (docs/security.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from liferaft.cli._client import (
    DEFAULT_TIMEOUT_S,
    BootstrapOpt,
    JsonOpt,
    TimeoutOpt,
    _client_errors,
    _fail,
    _print_json,
    admin_client,
    plural,
)

if TYPE_CHECKING:
    from client import Acl, AclFilter

app = typer.Typer(
    help="ACLs: who may do what (add, list, remove), as kafka-acls.",
    no_args_is_help=True,
    add_completion=False,
)

OPERATIONS = (
    "all",
    "read",
    "write",
    "create",
    "delete",
    "alter",
    "describe",
    "cluster_action",
    "describe_configs",
    "alter_configs",
    "idempotent_write",
)
CLUSTER_NAME = "kafka-cluster"

AllowOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-principal",
        metavar="PRINCIPAL",
        help="A principal to allow (User:alice, User:*); repeat.",
    ),
]
DenyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--deny-principal",
        metavar="PRINCIPAL",
        help="A principal to deny (User:bob, User:*); repeat.",
    ),
]
OperationOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--operation", metavar="OPERATION", help=f"One of {', '.join(OPERATIONS)}; repeat."
    ),
]
TopicOpt = Annotated[
    list[str] | None, typer.Option("--topic", metavar="TOPIC", help="A topic (or '*'); repeat.")
]
GroupOpt = Annotated[
    list[str] | None, typer.Option("--group", metavar="GROUP", help="A group (or '*'); repeat.")
]
ClusterOpt = Annotated[bool, typer.Option("--cluster", help="The cluster itself.")]
TxnOpt = Annotated[
    list[str] | None,
    typer.Option("--transactional-id", metavar="ID", help="A transactional id (or '*'); repeat."),
]


def _resources(
    topics: list[str] | None, groups: list[str] | None, cluster: bool, txns: list[str] | None
) -> list[tuple[str, str]]:
    out = [("topic", t) for t in topics or ()]
    out += [("group", g) for g in groups or ()]
    out += [("transactional_id", t) for t in txns or ()]
    if cluster:
        out.append(("cluster", CLUSTER_NAME))
    return out


def _operations(values: list[str] | None) -> list[str]:
    ops = [v.strip().lower().replace("-", "_") for v in values or ()]
    bad = [v for v in ops if v not in OPERATIONS]
    if bad:
        raise _fail(f"unknown operation {bad[0]!r}: one of {', '.join(OPERATIONS)}", 2)
    return ops


def _pattern(value: str, allowed: tuple[str, ...]) -> str:
    v = value.strip().lower()
    if v not in allowed:
        raise _fail(
            f"--resource-pattern-type must be one of {', '.join(allowed)}, not {value!r}", 2
        )
    return v


def _principals(allow: list[str] | None, deny: list[str] | None) -> list[tuple[str, str]]:
    return [("allow", p) for p in allow or ()] + [("deny", p) for p in deny or ()]


def _acl_json(a: Acl) -> dict[str, Any]:
    return {
        "principal": a.principal,
        "permission": a.permission,
        "operation": a.operation,
        "resource_type": a.resource_type,
        "resource_name": a.resource_name,
        "pattern_type": a.pattern_type,
        "host": a.host,
    }


@app.command("add")
def acl_add(
    allow: AllowOpt = None,
    deny: DenyOpt = None,
    operation: OperationOpt = None,
    topic: TopicOpt = None,
    group: GroupOpt = None,
    cluster: ClusterOpt = False,
    transactional_id: TxnOpt = None,
    pattern_type: Annotated[
        str,
        typer.Option(
            "--resource-pattern-type", metavar="TYPE", help="literal (default) or prefixed."
        ),
    ] = "literal",
    bootstrap: BootstrapOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Allow or deny principals operations on resources: one ACL for each principal, operation
    and resource given, all created or (one is refused) none."""
    from client import Acl

    who = _principals(allow, deny)
    ops = _operations(operation)
    resources = _resources(topic, group, cluster, transactional_id)
    pattern = _pattern(pattern_type, ("literal", "prefixed"))
    if not who or not ops or not resources:
        raise _fail(
            "give --allow-principal or --deny-principal, --operation, and a resource "
            "(--topic, --group, --cluster or --transactional-id)",
            2,
        )
    acls = [
        Acl(
            principal=p,
            permission=perm,
            operation=op,
            resource_type=rtype,
            resource_name=name,
            pattern_type="literal" if rtype == "cluster" else pattern,
        )
        for perm, p in who
        for op in ops
        for rtype, name in resources
    ]
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
        created = admin.create_acls(acls)
    typer.echo(f"added {plural(created, 'ACL')} ({len(acls) - created} already there)")
    for a in acls:
        typer.echo(f"  {a}")


def _filters(
    who: list[tuple[str, str]] | list[tuple[None, str]],
    ops: list[str],
    resources: list[tuple[str, str]],
    pattern: str | None,
) -> list[AclFilter]:
    from client import AclFilter

    return [
        AclFilter(
            principal=p,
            permission=perm,
            operation=op,
            resource_type=rtype,
            resource_name=name,
            pattern_type=pattern,
        )
        for perm, p in (who or [(None, None)])
        for op in (ops or [None])  # type: ignore[list-item]
        for rtype, name in (resources or [(None, None)])  # type: ignore[list-item]
    ]


@app.command("list")
def acl_list(
    principal: Annotated[
        str | None, typer.Option("--principal", help="Only this principal's ACLs.")
    ] = None,
    topic: TopicOpt = None,
    group: GroupOpt = None,
    cluster: ClusterOpt = False,
    transactional_id: TxnOpt = None,
    pattern_type: Annotated[
        str,
        typer.Option(
            "--resource-pattern-type",
            metavar="TYPE",
            help="any (default: either, that name), match (every ACL that applies to the "
            "resource: literal, '*' and prefixes), literal or prefixed.",
        ),
    ] = "any",
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """The ACLs, all or those of the resources and principal given."""
    pattern = _pattern(pattern_type, ("any", "match", "literal", "prefixed"))
    resources = _resources(topic, group, cluster, transactional_id)
    who: list[tuple[None, str]] = [(None, principal)] if principal else []
    filters = _filters(who, [], resources, pattern)
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
        found: dict[Acl, None] = {}
        for f in filters:
            found.update(dict.fromkeys(admin.describe_acls(f)))
    acls = list(found)
    if json_out:
        _print_json([_acl_json(a) for a in acls])
        return
    for a in acls:
        typer.echo(str(a))


@app.command("remove")
def acl_remove(
    allow: AllowOpt = None,
    deny: DenyOpt = None,
    operation: OperationOpt = None,
    topic: TopicOpt = None,
    group: GroupOpt = None,
    cluster: ClusterOpt = False,
    transactional_id: TxnOpt = None,
    pattern_type: Annotated[
        str,
        typer.Option(
            "--resource-pattern-type", metavar="TYPE", help="literal (default) or prefixed."
        ),
    ] = "literal",
    bootstrap: BootstrapOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Remove the ACLs of the resources given: all of them, or only those of the principals
    and operations given."""
    resources = _resources(topic, group, cluster, transactional_id)
    if not resources:
        raise _fail("give the resource: --topic, --group, --cluster or --transactional-id", 2)
    pattern = _pattern(pattern_type, ("literal", "prefixed"))
    filters = _filters(_principals(allow, deny), _operations(operation), resources, pattern)
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
        removed = [a for gone in admin.delete_acls(filters) for a in gone]
    typer.echo(f"removed {plural(len(removed), 'ACL')}")
    for a in removed:
        typer.echo(f"  {a}")
