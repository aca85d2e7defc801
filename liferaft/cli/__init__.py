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
from typing import Any

import typer
from typer.core import TyperGroup

COMMANDS = ("node", "demo", "produce", "consume", "health")
"""Sub-commands that are one command each: liferaft/cli/<name>.py's `app` holds just that one."""

GROUPS = ("dev", "topic", "cluster", "group", "bench", "chaos", "certs")
"""Sub-commands with commands of their own (`liferaft topic create`): liferaft/cli/<name>.py."""

SUBCOMMANDS = (*COMMANDS, *GROUPS)
"""In the order `liferaft --help` lists them."""


class LazyGroup(TyperGroup):
    """A click group that imports a sub-command's module when that sub-command is asked for."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*SUBCOMMANDS, *(n for n in super().list_commands(ctx) if n not in SUBCOMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in SUBCOMMANDS:
            return super().get_command(ctx, cmd_name)
        sub = importlib.import_module(f"liferaft.cli.{cmd_name}").app
        # get_group keeps a group of one command (`cluster info`) a group.
        command = typer.main.get_group(sub) if cmd_name in GROUPS else typer.main.get_command(sub)
        command.name = cmd_name
        return command


app = typer.Typer(
    cls=LazyGroup,
    help="liferaft: a Raft-replicated message broker cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    # Sub-commands come from LazyGroup; typer needs a callback to build a group with none of its own.
    pass


def main() -> None:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    app()


if __name__ == "__main__":
    main()
