"""`liferaft node decommission N`: move every replica off node N and take it out of placement.

Each of N's replicas moves to the least loaded other broker (by replicas, then preferred
leaderships), one Raft change at a time while the partitions serve; N gets no new replica from
then on. `liferaft partition moves` shows the progress and when N holds nothing; then it can be
stopped for good.
"""

from __future__ import annotations

from typing import Annotated

import typer

from liferaft.cli._client import (
    DEFAULT_TIMEOUT_S,
    BootstrapOpt,
    JsonOpt,
    TimeoutOpt,
    _client_errors,
    _ids,
    _print_json,
    admin_client,
    console,
    plural,
)
from liferaft.cli.partition import ThrottleOpt, _move_json

app = typer.Typer(add_completion=False)


@app.command("decommission")
def node_decommission(
    node_id: Annotated[int, typer.Argument(help="The node to empty and retire.", min=1)],
    throttle_mb_s: ThrottleOpt = 0,
    validate_only: Annotated[
        bool, typer.Option("--validate-only", help="Plan and show the moves; start nothing.")
    ] = False,
    cancel: Annotated[
        bool,
        typer.Option(
            "--cancel",
            help="Undo a decommission: the node takes new replicas again and the moves "
            "emptying it go back.",
        ),
    ] = False,
    bootstrap: BootstrapOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    json_out: JsonOpt = False,
) -> None:
    """Move every replica off a node (each to the least loaded other broker) and take it out
    of placement (--cancel: put it back, and turn the moves emptying it around)."""
    with _client_errors(), admin_client(bootstrap, timeout) as admin:
        started = admin.decommission_node(
            node_id,
            throttle_bytes_s=int(throttle_mb_s * 1_000_000),
            validate_only=validate_only,
            cancel=cancel,
        )
    if json_out:
        _print_json(
            {
                "node_id": node_id,
                "cancel": cancel,
                "started": [_move_json(m) for m in started],
                "validate_only": validate_only,
            }
        )
        return
    if cancel:
        verb = "would take back" if validate_only else "back in placement"
        console.print(
            f"node {node_id}: {verb}; {plural(len(started), 'move')} off it "
            + ("to cancel" if validate_only else "cancelled")
        )
        for m in started:
            console.print(f"  {m.topic}-{m.partition}: {_ids(m.replicas)} -> {_ids(m.target)}")
        return
    verb = "would move" if validate_only else "moving"
    console.print(f"node {node_id}: {verb} {plural(len(started), 'replica')} off it")
    for m in started:
        console.print(f"  {m.topic}-{m.partition}: {_ids(m.replicas)} -> {_ids(m.target)}")
    if not validate_only:
        console.print("`liferaft partition moves` shows the progress")
