"""The `liferaft` command: run a node, run a local dev cluster, and talk to a cluster.

Every command that talks to a cluster takes --bootstrap HOST:PORT,... (or LIFERAFT_BOOTSTRAP);
commands that print data take --json. Errors are printed as one line a person can act on, with
exit code 1 (2 for bad usage, as click does).

One module per sub-command (liferaft/cli/<name>.py, each with a typer `app`), loaded only when
that sub-command runs (or --help lists them all), and each imports the package it drives inside
its command functions. So `liferaft node`, the broker process, loads node/ and nothing of the
client, chaos or the other tools; tests/test_house.py checks that of a real process.
"""

from __future__ import annotations

import importlib
import os
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

COMMANDS = ("node", "demo", "produce", "consume", "trace", "health")
"""Sub-commands that are one command each: liferaft/cli/<name>.py's `app` holds just that one."""

GROUPS = ("dev", "topic", "partition", "cluster", "group", "user", "acl", "bench", "chaos", "certs")
"""Sub-commands with commands of their own (`liferaft topic create`): liferaft/cli/<name>.py."""

SUBCOMMANDS = (*COMMANDS, *GROUPS)
"""In the order `liferaft --help` lists them."""


def _flags_take_no_value(command: Any) -> Any:
    """Show boolean flags (--json, --help) without typer's `<bool>` placeholder: they take no
    value, and a placeholder tells a reader they do. Applied to a command and its sub-commands."""
    for param in getattr(command, "params", ()):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    if not getattr(command, "_liferaft_quiet_help", False):
        make_help = command.get_help_option

        def get_help_option(ctx: Any) -> Any:
            option = make_help(ctx)
            if option is not None:
                option.metavar = ""
            return option

        command.get_help_option = get_help_option
        command._liferaft_quiet_help = True
    for sub in getattr(command, "commands", {}).values():
        _flags_take_no_value(sub)
    return command


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("liferaft")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


class LazyGroup(TyperGroup):
    """A click group that imports a sub-command's module when that sub-command is asked for."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    def list_commands(self, ctx: Any) -> list[str]:
        return [*SUBCOMMANDS, *(n for n in super().list_commands(ctx) if n not in SUBCOMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in SUBCOMMANDS:
            return super().get_command(ctx, cmd_name)
        sub = importlib.import_module(f"liferaft.cli.{cmd_name}").app
        # get_group keeps a group of one command (`cluster info`) a group.
        command = typer.main.get_group(sub) if cmd_name in GROUPS else typer.main.get_command(sub)
        command.name = cmd_name
        return _flags_take_no_value(command)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        # `liferaft node` runs a broker; `liferaft node decommission N` is the admin command of
        # liferaft.cli._decommission.py (issue 19), routed here so the broker's module stays as
        # it is.
        if args[:2] == ["node", "decommission"]:
            sub = importlib.import_module("liferaft.cli._decommission").app
            command = _flags_take_no_value(typer.main.get_command(sub))
            command.name = "node decommission"
            return "node decommission", command, args[2:]
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=LazyGroup,
    help="liferaft: a Raft-replicated message broker cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"liferaft {_version()}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            callback=_print_version,
            is_eager=True,
            metavar="",
            help="Print liferaft's version and exit.",
        ),
    ] = False,
    security_protocol: Annotated[
        str | None,
        typer.Option(
            "--security-protocol",
            envvar="LIFERAFT_SECURITY_PROTOCOL",
            help="How client commands reach the cluster: PLAINTEXT (default), SSL, SASL_SSL or "
            "SASL_PLAINTEXT.",
            show_default=False,
        ),
    ] = None,
    ssl_cafile: Annotated[
        str | None,
        typer.Option(
            "--ssl-cafile",
            envvar="LIFERAFT_SSL_CAFILE",
            help="The CA the nodes' certificates chain to (with SSL; default: the system's).",
            show_default=False,
        ),
    ] = None,
    ssl_certfile: Annotated[
        str | None,
        typer.Option(
            "--ssl-certfile",
            envvar="LIFERAFT_SSL_CERTFILE",
            help="A client certificate (`liferaft certs create-client`), with --ssl-keyfile.",
            show_default=False,
        ),
    ] = None,
    ssl_keyfile: Annotated[
        str | None,
        typer.Option(
            "--ssl-keyfile", envvar="LIFERAFT_SSL_KEYFILE", help="Its key.", show_default=False
        ),
    ] = None,
    sasl_mechanism: Annotated[
        str | None,
        typer.Option(
            "--sasl-mechanism",
            envvar="LIFERAFT_SASL_MECHANISM",
            help="SCRAM-SHA-512 (default) or SCRAM-SHA-256, with SASL_*.",
            show_default=False,
        ),
    ] = None,
    sasl_username: Annotated[
        str | None,
        typer.Option(
            "--sasl-username",
            envvar="LIFERAFT_SASL_USERNAME",
            help="The user to log in as, with SASL_*.",
            show_default=False,
        ),
    ] = None,
    client_config: Annotated[
        str | None,
        typer.Option(
            "--client-config",
            envvar="LIFERAFT_CLIENT_CONFIG",
            help="A TOML file of these settings (security_protocol, ssl_cafile, sasl_mechanism, "
            "sasl_plain_username, sasl_plain_password), as `liferaft dev up --secure` writes; "
            "flags and LIFERAFT_* variables win over it. The password is read only from "
            "LIFERAFT_SASL_PASSWORD or this file, never from the command line.",
            show_default=False,
        ),
    ] = None,
) -> None:
    # Sub-commands come from LazyGroup; typer needs a callback to build a group with none of its
    # own. The security options go before the sub-command (`liferaft --security-protocol SSL
    # topic list`) and are handed on in the environment, where client commands read them
    # (liferaft/cli/_client.py: security_settings), as if given as LIFERAFT_* variables.
    for env, value in (
        ("LIFERAFT_SECURITY_PROTOCOL", security_protocol),
        ("LIFERAFT_SSL_CAFILE", ssl_cafile),
        ("LIFERAFT_SSL_CERTFILE", ssl_certfile),
        ("LIFERAFT_SSL_KEYFILE", ssl_keyfile),
        ("LIFERAFT_SASL_MECHANISM", sasl_mechanism),
        ("LIFERAFT_SASL_USERNAME", sasl_username),
        ("LIFERAFT_CLIENT_CONFIG", client_config),
    ):
        if value:
            os.environ[env] = value


def main() -> None:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    app()


if __name__ == "__main__":
    main()
