"""`liferaft demo`: the guided tour (liferaft/demo.py) on a cluster of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from liferaft_proto.ports import RAFT_PORT_OFFSET

app = typer.Typer(add_completion=False)


@app.command("demo")
def demo_cmd(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="Keep the demo cluster here (default: a temporary folder)."
        ),
    ] = None,
    base_port: Annotated[
        int | None,
        typer.Option(
            "--base-port",
            help=f"Node N serves gRPC on base-port + N - 1, Raft on that + {RAFT_PORT_OFFSET} "
            "(default: free).",
        ),
    ] = None,
    records: Annotated[
        int, typer.Option("--records", help="Records to produce before and after the kill.")
    ] = 200,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the cluster running afterwards.")
    ] = False,
) -> None:
    """Start a local 3-node cluster, produce with acks=all, kill -9 a leader, read it all back."""
    from liferaft.demo import demo

    raise typer.Exit(demo(data_dir, base_port, records, keep))
