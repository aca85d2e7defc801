"""`liferaft cluster`: what the cluster looks like."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from liferaft.cli._client import (
    BootstrapOpt,
    JsonOpt,
    _bootstrap,
    _client_errors,
    _node,
    _print_json,
    console,
)

app = typer.Typer(help="What the cluster looks like.", no_args_is_help=True, add_completion=False)


@app.command("info")
def cluster_info(bootstrap: BootstrapOpt = None, json_out: JsonOpt = False) -> None:
    """Nodes, the controller leader, and which partitions each node leads."""
    from client import SyncAdminClient

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
