"""`liferaft topic`: create, list, describe, add partitions to, alter the config of, delete
records from, and delete topics."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from liferaft.cli._client import (
    DEFAULT_TIMEOUT_S,
    BootstrapOpt,
    JsonOpt,
    TimeoutOpt,
    _client_errors,
    _fail,
    _ids,
    _parse_configs,
    _partition_json,
    _print_json,
    admin_client,
    console,
    plural,
)

app = typer.Typer(
    help="Create, list, describe, trim (delete records) and delete topics.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("create")
def topic_create(
    name: Annotated[
        str, typer.Argument(help="The topic's name: 1-249 characters of \\[a-zA-Z0-9._-].")
    ],
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
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    json_out: JsonOpt = False,
) -> None:
    """Create a topic."""
    configs = _parse_configs(config)
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
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
        f"{verb} topic [bold]{escape(created.name)}[/]: {plural(created.partitions, 'partition')}, "
        f"replication factor {created.replication_factor}"
    )


@app.command("list")
def topic_list(
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """The cluster's topics, one per line."""
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
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
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    json_out: JsonOpt = False,
) -> None:
    """Per partition: leader, replicas, ISR, high watermark, log start; and the topic's config."""
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
        desc = admin.describe_topics([name])[name]
    if json_out:
        _print_json(
            {
                "name": desc.name,
                "replication_factor": desc.replication_factor,
                "partitions": [_partition_json(p) for p in desc.partitions],
                "configs": {
                    k: {"value": v.value, "source": v.source} for k, v in desc.configs.items()
                },
            }
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


@app.command("add-partitions")
def topic_add_partitions(
    name: Annotated[str, typer.Argument(help="The topic.")],
    count: Annotated[
        int,
        typer.Option(
            "--count",
            "-n",
            help="The new number of partitions in all (not the number to add); must be larger.",
        ),
    ],
    validate_only: Annotated[
        bool, typer.Option("--validate-only", help="Check everything, create nothing.")
    ] = False,
    bootstrap: BootstrapOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    json_out: JsonOpt = False,
) -> None:
    """Grow a topic to --count partitions (partitions are never removed). Keyed records written
    from now on may land in another partition than the same key's earlier records."""
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
        now = admin.create_partitions(name, count, validate_only=validate_only)
    if json_out:
        _print_json({"name": name, "partitions": now, "validate_only": validate_only})
        return
    verb = "would grow" if validate_only else "grew"
    console.print(f"{verb} topic [bold]{escape(name)}[/] to {plural(now, 'partition')}")


@app.command("alter-config")
def topic_alter_config(
    name: Annotated[str, typer.Argument(help="The topic.")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="A setting NAME=VALUE to set (repeatable)."),
    ] = None,
    delete: Annotated[
        list[str] | None,
        typer.Option("--delete", "-d", help="A setting to return to its default (repeatable)."),
    ] = None,
    validate_only: Annotated[
        bool, typer.Option("--validate-only", help="Check the change, make none.")
    ] = False,
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Change a topic's settings (retention.ms, retention.bytes, min.insync.replicas,
    max.message.bytes, ...): all of them, or (a bad value) none."""
    if not set_ and not delete:
        raise _fail("nothing to change: give --set NAME=VALUE or --delete NAME", 2)
    configs = _parse_configs(set_, "--set")
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
        now = admin.alter_topic_config(name, configs, delete or [], validate_only=validate_only)
    if json_out:
        _print_json(
            {
                "name": name,
                "validate_only": validate_only,
                "configs": {k: {"value": v.value, "source": v.source} for k, v in now.items()},
            }
        )
        return
    verb = "would set" if validate_only else "set"
    own = ", ".join(f"{k}={v.value}" for k, v in now.items() if v.source == "topic")
    console.print(f"{verb} topic [bold]{escape(name)}[/]'s config: {escape(own) or 'all defaults'}")


@app.command("delete-records")
def topic_delete_records(
    name: Annotated[str, typer.Argument(help="The topic.")],
    offset: Annotated[
        int,
        typer.Option(
            "--offset",
            "-o",
            help="Delete the records before this offset: the partition's log will start there "
            "(-1: at the high watermark, deleting every record).",
        ),
    ],
    partition: Annotated[
        list[int] | None,
        typer.Option("--partition", "-p", help="A partition to trim (repeatable)."),
    ] = None,
    all_partitions: Annotated[
        bool, typer.Option("--all-partitions", help="Trim every partition of the topic.")
    ] = False,
    bootstrap: BootstrapOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    json_out: JsonOpt = False,
) -> None:
    """Delete the records before --offset (Kafka's DeleteRecords, rpk's `topic trim-prefix`):
    each partition's log start moves there, on every replica; consumers below it move per
    their auto_offset_reset. Refused, changing nothing, for an unknown partition or an offset
    above a partition's high watermark. An offset at or below the log start changes nothing."""
    from client import TopicPartition

    if offset < -1:
        raise _fail(f"--offset must be >= 0, or -1 for the high watermark, not {offset}", 2)
    if partition and all_partitions:
        raise _fail("give --partition P (repeatable) or --all-partitions, not both", 2)
    if not partition and not all_partitions:
        raise _fail("which partitions? give --partition P (repeatable) or --all-partitions", 2)
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
        known = [p.partition for p in admin.describe_topics([name])[name].partitions]
        chosen = sorted(known) if all_partitions else sorted(set(partition or []))
        unknown = [p for p in chosen if p not in known]
        if unknown:
            raise _fail(
                f"UNKNOWN_TOPIC_OR_PARTITION: topic {name!r} has partitions "
                f"0..{len(known) - 1}, not {', '.join(map(str, unknown))}; nothing was deleted"
            )
        tps = [TopicPartition(name, p) for p in chosen]
        starts = admin.list_offsets({tp: "earliest" for tp in tps})
        ends = admin.list_offsets({tp: "latest" for tp in tps})
        above = [
            f"{tp.partition} (high watermark {ends[tp].offset})"
            for tp in tps
            if offset > ends[tp].offset
        ]
        if above:
            raise _fail(
                f"OFFSET_OUT_OF_RANGE: offset {offset} is above the high watermark of "
                f"partition(s) {', '.join(above)}; nothing was deleted"
            )
        lows = admin.delete_records({tp: offset for tp in tps})
    rows = [
        {
            "partition": tp.partition,
            "log_start_before": starts[tp].offset,
            "low_watermark": lows[tp],
            "deleted": max(0, lows[tp] - starts[tp].offset),
        }
        for tp in tps
    ]
    if json_out:
        _print_json({"name": name, "offset": offset, "partitions": rows})
        return
    table = Table("partition", "log start before", "log start now", "records deleted")
    for row in rows:
        table.add_row(*(str(row[k]) for k in row))
    console.print(table)
    total = sum(int(r["deleted"]) for r in rows)
    console.print(
        f"deleted {plural(total, 'record')} from topic [bold]{escape(name)}[/] "
        f"({plural(len(rows), 'partition')})"
    )


@app.command("delete")
def topic_delete(
    name: Annotated[str, typer.Argument(help="The topic.")],
    bootstrap: BootstrapOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Delete a topic and all its records."""
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
        admin.delete_topic(name)
    console.print(f"deleted topic [bold]{escape(name)}[/]")
