"""`liferaft user`: SCRAM users (add, remove, list) for SASL logins on both listeners.

The password is read from standard input (--password-stdin) or a prompt, never from the
command line, and is salted and hashed here (client/admin.py: upsert_user): the cluster, its
log and its snapshots hold only the salt, iteration count, StoredKey and ServerKey.

The first user of a cluster that wants SASL can only be added by someone who can already act
for the cluster: `--as-node DIR` signs the request with a node's certificate and key (as a node
forwarding a request does, node/authn.py), so whoever can read a node's key, who could forge
its replicated data anyway, can make the first admin (`liferaft dev up --secure` does).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

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
)

app = typer.Typer(
    help="SCRAM users for SASL logins (Kafka's SCRAM-SHA-256/512): add, remove, list.",
    no_args_is_help=True,
    add_completion=False,
)

MechanismOpt = Annotated[
    str,
    typer.Option("--mechanism", help="SCRAM-SHA-512 or SCRAM-SHA-256."),
]
AsNodeOpt = Annotated[
    Path | None,
    typer.Option(
        "--as-node",
        help="Act for the cluster with the node certificate and key in DIR (ca.crt, node.crt, "
        "node.key): how the first user is made where every client must log in.",
        show_default=False,
    ),
]


def _read_password(stdin: bool) -> str:
    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise _fail("the password is empty", 2)
    return password


def _admin(bootstrap: str | None, timeout: float, as_node: Path | None):  # type: ignore[no-untyped-def]
    if as_node is None:
        return admin_client(bootstrap, timeout)
    from client import SyncAdminClient
    from liferaft.cli._client import _bootstrap, security_settings
    from liferaft.launcher import node_interceptor

    try:
        interceptor = node_interceptor(as_node)
        return SyncAdminClient(
            _bootstrap(bootstrap),
            timeout_ms=int(timeout * 1000),
            grpc_interceptors=[interceptor],
            **security_settings(),
        )
    except (OSError, ValueError) as e:
        raise _fail(f"--as-node {as_node}: {e}", 2) from None


@app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="The user name (principal User:NAME).")],
    mechanism: MechanismOpt = "SCRAM-SHA-512",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    iterations: Annotated[int, typer.Option(min=4096, help="PBKDF2 iterations.")] = 4096,
    as_node: AsNodeOpt = None,
    bootstrap: BootstrapOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Add a user, or set its password for one mechanism."""
    password = _read_password(password_stdin)
    with _client_errors(), _admin(bootstrap, timeout, as_node) as admin:
        admin.upsert_user(name, password, mechanism=mechanism.upper(), iterations=iterations)
    typer.echo(f"user {name}: {mechanism.upper()} credential set")


@app.command("remove")
def user_remove(
    name: Annotated[str, typer.Argument(help="The user name.")],
    mechanism: Annotated[
        str | None,
        typer.Option("--mechanism", help="Remove only this mechanism's credential."),
    ] = None,
    as_node: AsNodeOpt = None,
    bootstrap: BootstrapOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Remove a user (or one of its credentials): its logins fail from then on."""
    with _client_errors(), _admin(bootstrap, timeout, as_node) as admin:
        admin.delete_user(name, mechanism=mechanism.upper() if mechanism else None)
    typer.echo(
        f"user {name}: " + (f"{mechanism.upper()} credential removed" if mechanism else "removed")
    )


@app.command("list")
def user_list(
    as_node: AsNodeOpt = None,
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Every user and its SCRAM mechanisms (never a salt or key)."""
    with _client_errors(), _admin(bootstrap, timeout, as_node) as admin:
        users = admin.describe_users()
    if json_out:
        _print_json([{"user": n, "mechanisms": m} for n, m in sorted(users.items())])
        return
    for n, m in sorted(users.items()):
        typer.echo(f"{n}\t{','.join(m)}")
