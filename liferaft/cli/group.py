"""`liferaft group`: consumer groups: list, describe (members, offsets, lag), reset offsets,
delete."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

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
    _print_json,
    admin_client,
    console,
    plural,
)

app = typer.Typer(
    help="Consumer groups: list, describe (members, offsets, lag), reset offsets, delete.",
    no_args_is_help=True,
    add_completion=False,
)


def _age(ms: int) -> str:
    if ms < 0:
        return "?"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


@app.command("list")
def group_list(
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Every consumer group, with its state and how many members are alive."""
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
        groups = admin.list_groups()
    if json_out:
        _print_json([{"group": g.group_id, "state": g.state, "members": g.members} for g in groups])
        return
    for g in groups:
        typer.echo(f"{g.group_id}\t{g.state}\t{plural(g.members, 'member')}")


@app.command("describe")
def group_describe(
    group: Annotated[str, typer.Argument(help="The consumer group.")],
    bootstrap: BootstrapOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    json_out: JsonOpt = False,
) -> None:
    """Members, their partitions, and per partition the committed offset and the lag (records,
    and the age of the oldest unconsumed record, as the partition leader computes it)."""
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
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
        f"{plural(len(desc.members), 'member')}, coordinator node {desc.coordinator_id}"
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


@app.command("reset-offsets")
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
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
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
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
        live = {g.group_id: g for g in admin.list_groups()}.get(group)
        if live is not None and live.members:
            raise _fail(
                f"NON_EMPTY_GROUP: group {group!r} has {plural(live.members, 'live member')}; stop them "
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


@app.command("seek")
def group_seek(
    group: Annotated[str, typer.Argument(help="The consumer group.")],
    topic: Annotated[str, typer.Option("--topic", "-t", help="The topic.")],
    to_offset: Annotated[
        int, typer.Option("--to-offset", help="The next offset the group will read.")
    ],
    partition: Annotated[
        list[int] | None,
        typer.Option("--partition", "-p", help="Only this partition (repeatable; default: all)."),
    ] = None,
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Set a group's committed offset of a topic's partitions to exactly --to-offset (rpk's
    `group seek`): refused, changing nothing, if the offset is outside any partition's log
    (use reset-offsets to clamp) or while the group has live members."""
    from client import TopicPartition

    if to_offset < 0:
        raise _fail("--to-offset must be >= 0", 2)
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
        all_partitions = admin.describe_topics([topic])[topic].partitions
        known = [p.partition for p in all_partitions]
        chosen = sorted(set(partition)) if partition else known
        unknown = [p for p in chosen if p not in known]
        if unknown:
            raise _fail(
                f"topic {topic!r} has partitions 0..{len(known) - 1}, not {_join(unknown)}; "
                "nothing changed"
            )
        live = {g.group_id: g for g in admin.list_groups()}.get(group)
        if live is not None and live.members:
            raise _fail(
                f"NON_EMPTY_GROUP: group {group!r} has {plural(live.members, 'live member')}; "
                "stop them before moving its offsets; nothing changed"
            )
        tps = [TopicPartition(topic, p) for p in chosen]
        starts = admin.list_offsets({tp: "earliest" for tp in tps})
        ends = admin.list_offsets({tp: "latest" for tp in tps})
        outside = [
            f"{tp.partition} [{starts[tp].offset}, {ends[tp].offset}]"
            for tp in tps
            if not starts[tp].offset <= to_offset <= ends[tp].offset
        ]
        if outside:
            raise _fail(
                f"offset {to_offset} is outside the log of partition(s) "
                f"{', '.join(outside)} (log start, high watermark); nothing changed",
                1,
            )
        admin.reset_offsets(group, {tp: to_offset for tp in tps})
    if json_out:
        _print_json({"group": group, "topic": topic, "offset": to_offset, "partitions": chosen})
        return
    console.print(
        f"group [bold]{escape(group)}[/] will read {escape(topic)} partition(s) "
        f"{_join(chosen)} from offset {to_offset}"
    )


def _join(items: list[int]) -> str:
    return ", ".join(map(str, items))


@app.command("delete")
def group_delete(
    group: Annotated[str, typer.Argument(help="The consumer group.")],
    bootstrap: BootstrapOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Delete an empty consumer group and its committed offsets. Refused while the group has a
    live member (stop its consumers first), and for a group that does not exist."""
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
        admin.delete_groups([group])
    console.print(f"deleted group [bold]{escape(group)}[/] and its committed offsets")
