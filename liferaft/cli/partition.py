"""`liferaft partition`: move partitions onto other replicas, and see the moves under way.

A move goes on in the cluster after the command returns: the partition's leader adds each new
replica as a Raft learner, promotes it once it has caught up, then removes the old ones, one
change at a time, while the partition serves (docs/operations.md). `partition moves` shows where
each one is.
"""

from __future__ import annotations

import json
from pathlib import Path
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
    _ids,
    _print_json,
    admin_client,
    console,
    plural,
)

app = typer.Typer(
    help="Move partitions onto other replicas; see the moves under way.",
    no_args_is_help=True,
    add_completion=False,
)

ThrottleOpt = Annotated[
    float,
    typer.Option(
        "--throttle-mb-s",
        min=0,
        help="Feed each new replica at most this many MB/s (1 MB = 10^6 bytes; 0: no limit), "
        "so the move does not starve produce traffic.",
    ),
]


def parse_replicas(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; refuses what is not a comma-separated list of node ids."""
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise _fail(
            f"--replicas {text!r}: give node ids separated by commas, e.g. 1,2,4", 2
        ) from None
    if not ids:
        raise _fail("--replicas: give at least one node id (replication factor 0 is impossible)", 2)
    return ids


def read_plan(path: Path) -> list[tuple[str, int, list[int]]]:
    """A plan as kafka-reassign-partitions writes it:
    {"version": 1, "partitions": [{"topic": "t", "partition": 0, "replicas": [1, 2, 4]}]}."""
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise _fail(f"cannot read the plan {path}: {e.strerror}", 2) from None
    except ValueError as e:
        raise _fail(f"the plan {path} is not JSON: {e}", 2) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("partitions"), list):
        raise _fail(f'the plan {path} needs {{"version": 1, "partitions": [...]}}', 2)
    if raw.get("version", 1) != 1:
        raise _fail(f"the plan {path} has version {raw.get('version')!r}; only 1 is known", 2)
    out: list[tuple[str, int, list[int]]] = []
    for i, p in enumerate(raw["partitions"]):
        ok = (
            isinstance(p, dict)
            and isinstance(p.get("topic"), str)
            and isinstance(p.get("partition"), int)
            and isinstance(p.get("replicas"), list)
            and all(isinstance(n, int) and not isinstance(n, bool) for n in p["replicas"])
        )
        if not ok:
            raise _fail(
                f"the plan {path}: entry {i} needs a topic (string), a partition (integer) and "
                f"replicas (a list of node ids), not {json.dumps(p)[:200]}",
                2,
            )
        out.append((p["topic"], p["partition"], list(p["replicas"])))
    return out


def _move_json(m: Any) -> dict[str, Any]:
    return {
        "topic": m.topic,
        "partition": m.partition,
        "replicas": list(m.replicas),
        "target": list(m.target),
        "learners": list(m.learners),
        "origin": list(m.origin),
        "throttle_bytes_s": m.throttle_bytes_s,
        "cancelled": m.cancelled,
    }


@app.command("move")
def partition_move(
    topic: Annotated[str | None, typer.Argument(help="The topic (or use --plan).")] = None,
    partition: Annotated[int | None, typer.Argument(help="The partition.")] = None,
    replicas: Annotated[
        str | None,
        typer.Option(
            "--replicas", help="The new replicas, e.g. 1,2,4; the first is the preferred leader."
        ),
    ] = None,
    plan: Annotated[
        Path | None,
        typer.Option(
            "--plan",
            help="A JSON plan for many partitions, as kafka-reassign-partitions writes it: "
            '{"version":1,"partitions":[{"topic":..,"partition":..,"replicas":[..]}]}.',
        ),
    ] = None,
    throttle_mb_s: ThrottleOpt = 0,
    validate_only: Annotated[
        bool, typer.Option("--validate-only", help="Check everything, move nothing.")
    ] = False,
    cancel: Annotated[
        bool,
        typer.Option(
            "--cancel",
            help="Cancel the move of TOPIC PARTITION (or of every partition of the --plan): it "
            "goes back to the replicas it had when the move began.",
        ),
    ] = False,
    bootstrap: BootstrapOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    json_out: JsonOpt = False,
) -> None:
    """Move a partition (or every partition of a --plan) onto new replicas, while it serves.
    All or nothing: one bad entry (an unknown topic or node, a node named twice, no replica)
    and none starts. With --cancel, turn moves under way back instead."""
    if cancel:
        _cancel(topic, partition, replicas, plan, validate_only, bootstrap, timeout, json_out)
        return
    if plan is not None:
        if topic is not None or replicas is not None:
            raise _fail("give either TOPIC PARTITION --replicas or --plan, not both", 2)
        wishes = read_plan(plan)
    else:
        if topic is None or partition is None or replicas is None:
            raise _fail("give TOPIC PARTITION --replicas 1,2,4 (or --plan FILE)", 2)
        wishes = [(topic, partition, parse_replicas(replicas))]
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
        started = admin.move_partitions(
            wishes, throttle_bytes_s=int(throttle_mb_s * 1_000_000), validate_only=validate_only
        )
    if json_out:
        _print_json({"started": [_move_json(m) for m in started], "validate_only": validate_only})
        return
    verb = "would start" if validate_only else "started"
    console.print(f"{verb} {plural(len(started), 'move')}")
    for m in started:
        console.print(f"  {escape(m.topic)}-{m.partition}: {_ids(m.replicas)} -> {_ids(m.target)}")
    skipped = len(wishes) - len(started)
    if skipped:
        console.print(f"{plural(skipped, 'partition')} already on their replicas: nothing to do")


def _cancel(
    topic: str | None,
    partition: int | None,
    replicas: str | None,
    plan: Path | None,
    validate_only: bool,
    bootstrap: str | None,
    timeout: float,
    json_out: bool,
) -> None:
    if replicas is not None:
        raise _fail("--cancel takes no --replicas: the partition goes back where it was", 2)
    if plan is not None:
        if topic is not None:
            raise _fail("give either TOPIC PARTITION --cancel or --plan FILE --cancel", 2)
        which = [(t, p) for t, p, _ in read_plan(plan)]
    elif topic is None or partition is None:
        raise _fail("give TOPIC PARTITION --cancel (or --plan FILE --cancel)", 2)
    else:
        which = [(topic, partition)]
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
        cancelled = admin.cancel_partition_moves(which, validate_only=validate_only)
    if json_out:
        _print_json(
            {"cancelled": [_move_json(m) for m in cancelled], "validate_only": validate_only}
        )
        return
    verb = "would cancel" if validate_only else "cancelled"
    console.print(f"{verb} {plural(len(cancelled), 'move')}")
    for m in cancelled:
        console.print(
            f"  {escape(m.topic)}-{m.partition}: {_ids(m.replicas)} -> back to {_ids(m.target)}"
        )


@app.command("moves")
def partition_moves(
    bootstrap: BootstrapOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    json_out: JsonOpt = False,
) -> None:
    """The moves under way: each partition's replicas now, its target, the new replicas still
    catching up; and the decommissioned nodes with the replicas they still hold."""
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
        moves, retired = admin.list_partition_moves()
    if json_out:
        _print_json(
            {
                "moves": [_move_json(m) for m in moves],
                "decommissioned": {str(n): held for n, held in sorted(retired.items())},
            }
        )
        return
    if not moves:
        console.print("no moves under way")
    else:
        table = Table("partition", "replicas", "target", "catching up", "throttle")
        for m in moves:
            rate = f"{m.throttle_bytes_s / 1e6:g} MB/s" if m.throttle_bytes_s else "-"
            table.add_row(
                f"{escape(m.topic)}-{m.partition}",
                _ids(m.replicas),
                _ids(m.target) + (" (cancelled: going back)" if m.cancelled else ""),
                _ids(m.learners) if m.learners else "-",
                rate,
            )
        console.print(table)
    for n, held in sorted(retired.items()):
        state = "empty" if not held else f"still holds {plural(held, 'replica')}"
        console.print(f"node {n}: decommissioned, {state}")
