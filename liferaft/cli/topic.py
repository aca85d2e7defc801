"""`liferaft topic`: create, list, describe and delete topics."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from liferaft.cli._client import (
    BootstrapOpt,
    JsonOpt,
    _bootstrap,
    _client_errors,
    _ids,
    _parse_configs,
    _partition_json,
    _print_json,
    console,
)

app = typer.Typer(
    help="Create, list, describe and delete topics.", no_args_is_help=True, add_completion=False
)


@app.command("create")
def topic_create(
    name: Annotated[str, typer.Argument(help="The topic's name: [a-zA-Z0-9._-], 1-249 chars.")],
    partitions: Annotated[
        int, typer.Option("--partitions", "-p", help="How many partitions (0: the default).")
    ] = 0,
    replication_factor: Annotated[
        int,
        typer.Option("--replication-factor", "-r", help="Replicas per partition (0: the default)."),
    ] = 0,
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config",
            "-c",
            help="A topic setting NAME=VALUE (repeatable), e.g. retention.ms=60000.",
        ),
    ] = None,
    validate_only: Annotated[
        bool, typer.Option("--validate-only", help="Check everything, create nothing.")
    ] = False,
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a topic."""
    from client import SyncAdminClient

    configs = _parse_configs(config)
    with _client_errors(), SyncAdminClient(_bootstrap(bootstrap)) as admin:
        created = admin.create_topic(
            name, partitions, replication_factor, configs, validate_only=validate_only
        )
    if json_out:
        _print_json(
            {
                "name": created.name,
                "partitions": created.partitions,
                "replication_factor": created.replication_factor,
                "validate_only": validate_only,
            }
        )
        return
    verb = "would create" if validate_only else "created"
    console.print(
        f"{verb} topic [bold]{escape(created.name)}[/]: {created.partitions} partitions, "
        f"replication factor {created.replication_factor}"
    )


@app.command("list")
def topic_list(bootstrap: BootstrapOpt = None, json_out: JsonOpt = False) -> None:
    """The cluster's topics, one per line."""
    from client import SyncAdminClient

    with _client_errors(), SyncAdminClient(_bootstrap(bootstrap)) as admin:
        names = admin.list_topics()
    if json_out:
        _print_json(names)
        return
    for name in names:
        typer.echo(name)


@app.command("describe")
def topic_describe(
    name: Annotated[str, typer.Argument(help="The topic.")],
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Per partition: leader, replicas, ISR, high watermark, log start; and the topic's config."""
    from client import SyncAdminClient

    with _client_errors(), SyncAdminClient(_bootstrap(bootstrap)) as admin:
        desc = admin.describe_topics([name])[name]
    if json_out:
        _print_json(
            {"name": desc.name, "partitions": [_partition_json(p) for p in desc.partitions]}
        )
        return
    table = Table(
        "partition",
        "leader",
        "epoch",
        "replicas",
        "isr",
        "high watermark",
        "log start",
        title=f"{escape(desc.name)} (replication factor {desc.replication_factor})",
    )
    for p in desc.partitions:
        under = set(p.isr) != set(p.replicas)
        isr = f"[yellow]{_ids(p.isr)}[/]" if under else _ids(p.isr)
        table.add_row(
            str(p.partition),
            str(p.leader) if p.leader else "[red]none[/]",
            str(p.leader_epoch),
            _ids(p.replicas),
            isr,
            str(p.high_watermark),
            str(p.log_start_offset),
        )
    console.print(table)
    overrides = {k: v for k, v in desc.configs.items() if v.source == "topic"}
    if overrides:
        console.print(
            "config: " + ", ".join(f"{escape(k)}={escape(v.value)}" for k, v in overrides.items())
        )


@app.command("delete")
def topic_delete(
    name: Annotated[str, typer.Argument(help="The topic.")],
    bootstrap: BootstrapOpt = None,
) -> None:
    """Delete a topic and all its records."""
    from client import SyncAdminClient

    with _client_errors(), SyncAdminClient(_bootstrap(bootstrap)) as admin:
        admin.delete_topic(name)
    console.print(f"deleted topic [bold]{escape(name)}[/]")
