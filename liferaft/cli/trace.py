"""`liferaft trace TOPIC PARTITION OFFSET`: where one record is.

Every replica of the partition is asked directly (DescribeReplica, a short deadline each; a
replica that does not answer is shown unreachable) for its own view: whether the record is in
its log, in which batch and Raft entry, whether that entry is on its disk (fsynced) and
committed, and its log start, high watermark and log end. The partition's high watermark is
its leader's (only the leader's is authoritative; without a leader answering, the highest a
replica reports, marked as such). Then every consumer group's committed offset of the partition
says which groups have read past the record (committed offset > OFFSET) and which have not.

A verdict line sums it up: committed (and on how many disks), written but not yet committed,
not written yet, or gone (below the log start: retention or delete-records removed it).
Exit 0 when at least one replica answered, 1 when none did, 2 for bad usage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

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

if TYPE_CHECKING:
    from client.admin import ReplicaDescription

app = typer.Typer(add_completion=False)


def verdict(offset: int, answers: dict[int, Any]) -> tuple[str, int, int]:
    """(status, high watermark, leader) from the replicas' answers (ReplicaDescription or an
    error each). status: committed, uncommitted, not_written, deleted, or unknown."""
    views: list[ReplicaDescription] = [a for a in answers.values() if hasattr(a, "found")]
    if not views:
        return "unknown", -1, 0
    leaders = [v for v in views if v.is_leader]
    lead = max(leaders, key=lambda v: v.term) if leaders else None
    hw = lead.high_watermark if lead else max(v.high_watermark for v in views)
    start = lead.log_start_offset if lead else max(v.log_start_offset for v in views)
    if offset < start:
        return "deleted", hw, lead.node_id if lead else 0
    if offset < hw:
        return "committed", hw, lead.node_id if lead else 0
    if any(v.found for v in views):
        return "uncommitted", hw, lead.node_id if lead else 0
    return "not_written", hw, lead.node_id if lead else 0


@app.command("trace")
def trace(
    topic: Annotated[str, typer.Argument(help="The topic.")],
    partition: Annotated[int, typer.Argument(help="The partition.")],
    offset: Annotated[int, typer.Argument(help="The record's offset.")],
    probe_timeout: Annotated[
        float,
        typer.Option(
            "--probe-timeout",
            min=0.1,
            help="Seconds each replica has to answer (then: unreachable).",
        ),
    ] = 2.0,
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Where one record is: which replicas hold it, on disk and committed; the high watermark;
    which consumer groups have read past it."""
    from client import LiferaftError, TopicPartition

    if partition < 0 or offset < 0:
        raise _fail("PARTITION and OFFSET must be >= 0", 2)
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
        answers = admin.describe_replicas(
            topic, partition, offset, timeout_ms=int(probe_timeout * 1000)
        )
        try:
            groups = admin.committed_by_groups(TopicPartition(topic, partition))
            groups_error = ""
        except LiferaftError as e:  # the coordinator is down: the replicas still answer
            groups, groups_error = {}, f"{e.code_name}: {e.message}"
    status, hw, leader = verdict(offset, answers)
    past = {g: o for g, o in groups.items() if o > offset}
    before = {g: o for g, o in groups.items() if o <= offset}
    holders = [n for n, a in answers.items() if getattr(a, "found", False)]
    on_disk = [n for n, a in answers.items() if getattr(a, "persisted", False)]
    entries = {(a.raft_index, a.raft_term) for a in answers.values() if getattr(a, "found", False)}
    if json_out:
        _print_json(
            {
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "status": status,
                "high_watermark": hw if hw >= 0 else None,
                "leader": leader or None,
                "replicas": [_replica_json(n, a) for n, a in answers.items()],
                "same_entry_everywhere": len(entries) <= 1,
                "groups_past": past,
                "groups_not_past": before,
                "groups_error": groups_error or None,
            }
        )
    else:
        _print_text(topic, partition, offset, status, hw, leader, answers, holders, on_disk)
        if len(entries) > 1:
            console.print(
                "[bold red]the replicas hold it in different Raft entries:[/] "
                + ", ".join(f"index {i} term {t}" for i, t in sorted(entries))
            )
        if groups_error:
            console.print(f"consumer groups: could not ask ({escape(groups_error)})")
        else:
            console.print(
                f"read past it (committed offset > {offset}): {escape(_groups(past)) or 'no group'}"
            )
            if before:
                console.print(f"not yet: {escape(_groups(before))}")
    if status == "unknown":
        raise typer.Exit(1)


def _groups(groups: dict[str, int]) -> str:
    return ", ".join(f"{g} (at {o})" for g, o in groups.items())


def _replica_json(node: int, a: Any) -> dict[str, Any]:
    if not hasattr(a, "found"):
        return {"node_id": node, "reachable": False, "error": f"{a.code_name}: {a.message}"}
    doc: dict[str, Any] = {"node_id": node, "reachable": True}
    for f in (
        "is_leader",
        "term",
        "leader_id",
        "found",
        "committed",
        "persisted",
        "batch_base_offset",
        "batch_record_count",
        "raft_index",
        "raft_term",
        "log_start_offset",
        "high_watermark",
        "log_end_offset",
        "commit_index",
        "applied_index",
        "persisted_index",
        "last_index",
    ):
        doc[f] = getattr(a, f)
    return doc


def _yes(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[red]no[/]"


def _print_text(
    topic: str,
    partition: int,
    offset: int,
    status: str,
    hw: int,
    leader: int,
    answers: dict[int, Any],
    holders: list[int],
    on_disk: list[int],
) -> None:
    where = f"{topic}-{partition} offset {offset}"
    hw_text = f"high watermark {hw}" if hw >= 0 else "high watermark unknown"
    lead_text = f"leader node {leader}" if leader else "no leader answered"
    said = {
        "committed": f"[green]committed[/]: in {plural(len(holders), 'replica')} "
        f"({', '.join(map(str, holders)) or '-'}), on the disk of {len(on_disk)}",
        "uncommitted": "[yellow]written, not committed yet[/]: in the log of "
        f"{', '.join(map(str, holders))}; a consumer does not see it until the high watermark "
        "passes it",
        "not_written": "[yellow]not written yet[/]: no replica's log reaches it",
        "deleted": "[yellow]gone[/]: below the log start (retention or delete-records)",
        "unknown": "[red]unknown[/]: no replica answered",
    }[status]
    console.print(f"{escape(where)}: {said}; {hw_text}, {lead_text}")
    table = Table(
        "node",
        "role",
        "has it",
        "batch",
        "entry",
        "fsynced",
        "committed",
        "start",
        "hw",
        "end",
        caption="entry: Raft index@term; start, hw, end: this replica's log start, high "
        "watermark and log end",
    )
    for node, a in answers.items():
        if not hasattr(a, "found"):
            table.add_row(str(node), "[red]DOWN[/]", *["?"] * 8)
            continue
        batch = (
            f"{a.batch_base_offset}..{a.batch_base_offset + a.batch_record_count - 1}"
            if a.found
            else "-"
        )
        table.add_row(
            str(node),
            "leader" if a.is_leader else "follower",
            _yes(a.found),
            batch,
            f"{a.raft_index}@{a.raft_term}" if a.found else "-",
            _yes(a.persisted) if a.found else "-",
            _yes(a.committed) if a.found else "-",
            str(a.log_start_offset),
            str(a.high_watermark),
            str(a.log_end_offset),
        )
    console.print(table)
    for node, a in answers.items():
        if not hasattr(a, "found"):
            console.print(
                f"[red]node {node} unreachable:[/] {escape(f'{a.code_name}: {a.message}')}"
            )
