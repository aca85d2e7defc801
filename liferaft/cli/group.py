"""The `liferaft` commands that talk to a cluster as a client: topic, cluster, group, produce,
consume.

They use the Python client's blocking facade (client.sync), so the main thread reads stdin and
prints while the client's event loop runs on its own thread, and Ctrl-C cancels cleanly.

Every command takes --bootstrap HOST:PORT,... (or LIFERAFT_BOOTSTRAP); those that print data
take --json. A cluster error prints one line, its code and message, and exits 1; bad usage
exits 2. Record values are printed as text (UTF-8, undecodable bytes replaced); --json shows
non-UTF-8 bytes as {"base64": ...}.

Registered on liferaft/cli/__init__.py's app by `register(app)`; this module does not import liferaft/cli/__init__.py
(that would be a cycle).
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from client import (
    ConsumerRecord,
    LiferaftError,
    PartitionMetadata,
    SyncAdminClient,
    SyncConsumer,
    SyncProducer,
    TopicPartition,
)

__all__ = ["register"]

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

topic_app = typer.Typer(help="Create, list, describe and delete topics.", no_args_is_help=True)
cluster_app = typer.Typer(help="What the cluster looks like.", no_args_is_help=True)
group_app = typer.Typer(
    help="Consumer groups: list, describe (members, offsets, lag), reset offsets.",
    no_args_is_help=True,
)

BootstrapOpt = Annotated[
    str | None,
    typer.Option(
        "--bootstrap",
        "-b",
        envvar="LIFERAFT_BOOTSTRAP",
        help="Any nodes of the cluster: HOST:PORT,HOST:PORT,...",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def register(app: typer.Typer) -> None:
    """Add the client commands to the `liferaft` app."""
    app.add_typer(topic_app, name="topic")
    app.add_typer(cluster_app, name="cluster")
    app.add_typer(group_app, name="group")
    app.command("produce")(produce)
    app.command("consume")(consume)


# -- plumbing ----------------------------------------------------------------------------------
def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def _bootstrap(value: str | None) -> str:
    if not value or not value.strip():
        raise _fail("no cluster given: pass --bootstrap HOST:PORT,... or set LIFERAFT_BOOTSTRAP", 2)
    return value


@contextmanager
def _client_errors() -> Iterator[None]:
    """The CLI's one error boundary: cluster errors exit 1, bad arguments exit 2."""
    try:
        yield
    except LiferaftError as e:
        raise _fail(f"{e.code_name}: {e.message}") from None
    except ValueError as e:
        raise _fail(str(e), 2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data))


def _node(node_id: int) -> int | None:
    return node_id if node_id > 0 else None


def _partition_json(p: PartitionMetadata) -> dict[str, Any]:
    return {
        "partition": p.partition,
        "leader": _node(p.leader),
        "leader_epoch": p.leader_epoch,
        "replicas": list(p.replicas),
        "isr": list(p.isr),
        "high_watermark": p.high_watermark,
        "log_start_offset": p.log_start_offset,
    }


def _ids(ids: tuple[int, ...]) -> str:
    return ",".join(map(str, ids)) or "-"


def _parse_configs(items: list[str] | None) -> dict[str, str]:
    configs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _fail(
                f"--config {item!r} must look like NAME=VALUE, e.g. retention.ms=3600000", 2
            )
        configs[key.strip()] = value.strip()
    return configs


def _bytes_json(value: bytes | None) -> str | dict[str, str] | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode("ascii")}


def _text(value: bytes | None) -> str:
    return "null" if value is None else value.decode("utf-8", errors="replace")


def _record_json(r: ConsumerRecord) -> dict[str, Any]:
    return {
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp_ms": r.timestamp_ms,
        "key": _bytes_json(r.key),
        "value": _bytes_json(r.value),
        "headers": [[k, _bytes_json(v)] for k, v in r.headers],
    }


# -- liferaft topic ----------------------------------------------------------------------------
@topic_app.command("create")
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


@topic_app.command("list")
def topic_list(bootstrap: BootstrapOpt = None, json_out: JsonOpt = False) -> None:
    """The cluster's topics, one per line."""
    with _client_errors(), SyncAdminClient(_bootstrap(bootstrap)) as admin:
        names = admin.list_topics()
    if json_out:
        _print_json(names)
        return
    for name in names:
        typer.echo(name)


@topic_app.command("describe")
def topic_describe(
    name: Annotated[str, typer.Argument(help="The topic.")],
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Per partition: leader, replicas, ISR, high watermark, log start; and the topic's config."""
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


@topic_app.command("delete")
def topic_delete(
    name: Annotated[str, typer.Argument(help="The topic.")],
    bootstrap: BootstrapOpt = None,
) -> None:
    """Delete a topic and all its records."""
    with _client_errors(), SyncAdminClient(_bootstrap(bootstrap)) as admin:
        admin.delete_topic(name)
    console.print(f"deleted topic [bold]{escape(name)}[/]")


# -- liferaft cluster --------------------------------------------------------------------------
@cluster_app.command("info")
def cluster_info(bootstrap: BootstrapOpt = None, json_out: JsonOpt = False) -> None:
    """Nodes, the controller leader, and which partitions each node leads."""
    with _client_errors(), SyncAdminClient(_bootstrap(bootstrap)) as admin:
        info = admin.describe_cluster()
    leaders = info.leaders_by_node()
    if json_out:
        _print_json(
            {
                "cluster_id": info.cluster_id,
                "controller_id": _node(info.controller_id),
                "nodes": [
                    {
                        "node_id": b.node_id,
                        "address": b.address,
                        "rack": b.rack or None,
                        "is_controller": b.node_id == info.controller_id,
                        "leader_of": [str(tp) for tp in leaders.get(b.node_id, [])],
                    }
                    for b in info.brokers
                ],
            }
        )
        return
    controller = str(info.controller_id) if info.controller_id else "[red]none[/]"
    console.print(
        f"cluster [bold]{escape(info.cluster_id)}[/], controller leader: node {controller}"
    )
    table = Table("node", "address", "role", "leads", "partitions led")
    for b in info.brokers:
        led = leaders.get(b.node_id, [])
        table.add_row(
            str(b.node_id),
            b.address,
            "controller" if b.node_id == info.controller_id else "",
            str(len(led)),
            escape(", ".join(map(str, led))) or "-",
        )
    console.print(table)
    leaderless = [
        f"{name}-{p.partition}"
        for name, tm in sorted(info.topics.items())
        for p in tm.partitions
        if not p.leader
    ]
    if leaderless:
        console.print(f"[red]without a leader:[/] {escape(', '.join(leaderless))}")


# -- liferaft produce / consume ----------------------------------------------------------------
def produce(
    topic: Annotated[str, typer.Argument(help="The topic to write to.")],
    acks: Annotated[
        str, typer.Option("--acks", help="all: committed to the ISR; 1: on the leader; 0: sent.")
    ] = "all",
    key: Annotated[str | None, typer.Option("--key", "-k", help="A key for every record.")] = None,
    partition: Annotated[
        int | None, typer.Option("--partition", "-p", help="Write to this partition.")
    ] = None,
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send each line of stdin as one record; print where each landed."""
    with _client_errors(), SyncProducer(_bootstrap(bootstrap), acks=acks) as producer:
        for line in sys.stdin:
            meta = producer.send_and_wait(topic, line.rstrip("\r\n"), key=key, partition=partition)
            if json_out:
                _print_json(
                    {
                        "topic": meta.topic,
                        "partition": meta.partition,
                        "offset": meta.offset,
                        "timestamp_ms": meta.timestamp_ms,
                    }
                )
            else:
                offset = str(meta.offset) if meta.offset >= 0 else "unknown (acks=0)"
                typer.echo(f"{meta.topic} partition {meta.partition} offset {offset}")


def consume(
    topic: Annotated[str, typer.Argument(help="The topic to read.")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the log start, not the end.")
    ] = False,
    offset: Annotated[
        int | None, typer.Option("--offset", help="Start at this offset (in every partition read).")
    ] = None,
    partition: Annotated[
        int | None, typer.Option("--partition", "-p", help="Read only this partition.")
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", "-n", help="Stop after this many records.")
    ] = None,
    idle_timeout_ms: Annotated[
        int | None,
        typer.Option("--timeout-ms", help="Stop when no record arrives for this long."),
    ] = None,
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print records as they arrive: each value on its own line (--json: whole records)."""
    if from_beginning and offset is not None:
        raise _fail("give --from-beginning or --offset, not both", 2)
    if offset is not None and offset < 0:
        raise _fail("--offset must be >= 0", 2)
    if count is not None and count < 1:
        raise _fail("--count must be >= 1", 2)
    reset = "earliest" if from_beginning else "latest"
    with _client_errors(), SyncConsumer(_bootstrap(bootstrap), auto_offset_reset=reset) as consumer:
        partitions = [partition] if partition is not None else consumer.partitions_for(topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        for tp in tps:
            if offset is not None:
                consumer.seek(tp, offset)
            else:
                consumer.position(tp)  # fix the starting point now, before anything is produced
        seen = 0
        wait_ms = idle_timeout_ms if idle_timeout_ms is not None else 1000
        while count is None or seen < count:
            limit = count - seen if count is not None else None
            got = consumer.getmany(timeout_ms=wait_ms, max_records=limit)
            if not got and idle_timeout_ms is not None:
                break
            for tp_records in got.values():
                for r in tp_records:
                    typer.echo(json.dumps(_record_json(r)) if json_out else _text(r.value))
                    seen += 1


# -- liferaft group ----------------------------------------------------------------------------
def _age(ms: int) -> str:
    if ms < 0:
        return "?"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


@group_app.command("list")
def group_list(bootstrap: BootstrapOpt = None, json_out: JsonOpt = False) -> None:
    """Every consumer group, with its state and how many members are alive."""
    with _client_errors(), SyncAdminClient(_bootstrap(bootstrap)) as admin:
        groups = admin.list_groups()
    if json_out:
        _print_json([{"group": g.group_id, "state": g.state, "members": g.members} for g in groups])
        return
    for g in groups:
        typer.echo(f"{g.group_id}\t{g.state}\t{g.members} members")


@group_app.command("describe")
def group_describe(
    group: Annotated[str, typer.Argument(help="The consumer group.")],
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Members, their partitions, and per partition the committed offset and the lag (records,
    and the age of the oldest unconsumed record, as the partition leader computes it)."""
    with _client_errors(), SyncAdminClient(_bootstrap(bootstrap)) as admin:
        desc = admin.describe_group(group)
    if json_out:
        _print_json(
            {
                "group": desc.group_id,
                "state": desc.state,
                "generation": desc.generation,
                "coordinator": desc.coordinator_id,
                "members": [
                    {
                        "member_id": m.member_id,
                        "client_id": m.client_id,
                        "topics": list(m.topics),
                        "assignment": [str(tp) for tp in sorted(m.assignment)],
                        "target": [str(tp) for tp in sorted(m.target)],
                    }
                    for m in desc.members
                ],
                "partitions": [
                    {
                        "topic": p.topic,
                        "partition": p.partition,
                        "committed": p.committed,
                        "high_watermark": p.high_watermark if p.error is None else None,
                        "lag": p.lag_records if p.error is None else None,
                        "lag_ms": p.lag_ms if p.error is None else None,
                        "member": p.member_id,
                        "error": str(p.error) if p.error is not None else None,
                    }
                    for p in desc.partitions
                ],
            }
        )
        return
    console.print(
        f"group [bold]{escape(desc.group_id)}[/]: {desc.state}, generation {desc.generation}, "
        f"{len(desc.members)} members, coordinator node {desc.coordinator_id}"
    )
    table = Table("topic", "partition", "committed", "high watermark", "lag", "lag time", "member")
    for p in desc.partitions:
        table.add_row(
            escape(p.topic),
            str(p.partition),
            str(p.committed) if p.committed is not None else "-",
            str(p.high_watermark) if p.error is None else "?",
            str(p.lag_records) if p.error is None else "?",
            _age(p.lag_ms) if p.error is None else escape(p.error.code_name),
            escape(p.member_id or "-"),
        )
    console.print(table)
    for m in desc.members:
        moving = set(m.target) - set(m.assignment)
        extra = f" (getting {', '.join(map(str, sorted(moving)))})" if moving else ""
        console.print(
            f"member {escape(m.member_id)} ({escape(m.client_id)}): "
            f"{escape(', '.join(map(str, sorted(m.assignment))) or 'nothing')}{escape(extra)}"
        )


@group_app.command("reset-offsets")
def group_reset_offsets(
    group: Annotated[str, typer.Argument(help="The consumer group.")],
    topic: Annotated[str, typer.Option("--topic", "-t", help="The topic whose offsets to reset.")],
    to_earliest: Annotated[bool, typer.Option("--to-earliest", help="The log start.")] = False,
    to_latest: Annotated[bool, typer.Option("--to-latest", help="The high watermark.")] = False,
    to_offset: Annotated[
        int | None, typer.Option("--to-offset", help="This offset (clamped to the log).")
    ] = None,
    to_datetime: Annotated[
        str | None,
        typer.Option("--to-datetime", help="The first record at or after this ISO 8601 time."),
    ] = None,
    execute: Annotated[
        bool, typer.Option("--execute", help="Commit the new offsets (default: show the plan).")
    ] = False,
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Move a group's committed offsets for a topic. A dry run unless --execute; refused while
    the group has live members (they would overwrite the offsets)."""
    chosen = [to_earliest, to_latest, to_offset is not None, to_datetime is not None]
    if sum(chosen) != 1:
        raise _fail(
            "give exactly one of --to-earliest, --to-latest, --to-offset N, --to-datetime ISO", 2
        )
    spec: Any
    offset = -1
    if to_earliest:
        spec = "earliest"
    elif to_latest:
        spec = "latest"
    elif to_offset is not None:
        if to_offset < 0:
            raise _fail("--to-offset must be >= 0", 2)
        spec, offset = "offset", to_offset
    else:
        assert to_datetime is not None
        try:
            when = datetime.fromisoformat(to_datetime)
        except ValueError:
            raise _fail(f"--to-datetime {to_datetime!r} is not an ISO 8601 time", 2) from None
        if when.tzinfo is None:
            when = when.astimezone()  # local time, as Kafka's tool reads it
        spec = int(when.timestamp() * 1000)
    with _client_errors(), SyncAdminClient(_bootstrap(bootstrap)) as admin:
        live = {g.group_id: g for g in admin.list_groups()}.get(group)
        if live is not None and live.members:
            raise _fail(
                f"NON_EMPTY_GROUP: group {group!r} has {live.members} live members; stop them "
                "before resetting its offsets"
            )
        plan = admin.plan_offset_reset(group, topic, spec, offset)
        if execute:
            admin.reset_offsets(group, {tp: new for tp, (_, new) in plan.items()})
    rows = [
        {"topic": tp.topic, "partition": tp.partition, "current": cur, "new": new}
        for tp, (cur, new) in sorted(plan.items())
    ]
    if json_out:
        _print_json({"group": group, "executed": execute, "offsets": rows})
        return
    table = Table("topic", "partition", "current offset", "new offset")
    for r in rows:
        table.add_row(
            escape(str(r["topic"])),
            str(r["partition"]),
            str(r["current"]) if r["current"] is not None else "-",
            str(r["new"]),
        )
    console.print(table)
    if execute:
        console.print(f"offsets of group [bold]{escape(group)}[/] reset")
    else:
        console.print("dry run: nothing changed (add --execute to commit these offsets)")
