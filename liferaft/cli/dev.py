"""`liferaft dev`: a local cluster of node processes (liferaft.launcher) from the shell.

The cluster's state lives in its data directory, so each command works across invocations.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from liferaft.cli._common import console, fail
from liferaft_proto.ports import DEFAULT_BASE_PORT, RAFT_PORT_OFFSET

if TYPE_CHECKING:
    from liferaft.launcher import DevCluster

app = typer.Typer(
    help="A local cluster of node processes (demos, tests, chaos).",
    no_args_is_help=True,
    add_completion=False,
)

DEFAULT_DEV_DIR = Path(".liferaft/dev")


DataDirOpt = Annotated[
    Path,
    typer.Option(
        "--data-dir", envvar="LIFERAFT_DEV_DIR", help="Where the dev cluster keeps state and logs."
    ),
]


def _load(data_dir: Path) -> DevCluster:
    from liferaft.launcher import DevCluster, DevClusterError

    try:
        return DevCluster.load(data_dir)
    except DevClusterError as e:
        raise fail(str(e)) from None


@app.command("up")
def dev_up(
    nodes: Annotated[int, typer.Option("--nodes", help="How many nodes.")] = 3,
    data_dir: DataDirOpt = DEFAULT_DEV_DIR,
    base_port: Annotated[
        int,
        typer.Option(
            "--base-port",
            help=f"Node N serves gRPC on base-port + N - 1, Raft on that + {RAFT_PORT_OFFSET}.",
        ),
    ] = DEFAULT_BASE_PORT,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a healthy cluster.")] = 60.0,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="TLS, SCRAM logins and ACLs on both client listeners (SASL_SSL, --authorizer); "
            "makes a first user `admin` (a super user) with a random password, printed once and "
            "kept in DATA_DIR/client.toml.",
        ),
    ] = False,
) -> None:
    """Start a local cluster as background processes and wait until it is healthy."""
    from liferaft.launcher import DevCluster, DevClusterError, secure_args

    try:
        try:
            cluster = DevCluster.load(data_dir)
            if len(cluster.nodes) != nodes:
                raise fail(
                    f"{data_dir} holds a {len(cluster.nodes)}-node cluster; use that many --nodes, "
                    "or another --data-dir, or `liferaft dev down --wipe` first"
                )
            if secure and not cluster.secure:
                raise fail(
                    f"{data_dir} holds a cluster without --secure; use another --data-dir, or "
                    "`liferaft dev down --wipe` first"
                )
        except DevClusterError:
            cluster = DevCluster.create(
                data_dir, nodes, base_port, secure_args(nodes) if secure else []
            )
        cluster.start()
        with console.status(f"waiting for {nodes} nodes to elect a controller..."):
            cluster.wait_healthy(timeout)
        password = cluster.make_first_admin() if cluster.secure else None
    except DevClusterError as e:
        raise fail(str(e)) from None
    console.print(f"[green]cluster up[/]: {nodes} nodes, data and logs in {cluster.data_dir}")
    if cluster.tls:
        console.print(f"mutual TLS between the nodes; certificates in {cluster.tls_dir}")
    console.print(f"bootstrap: [bold]{cluster.bootstrap}[/]")
    console.print(f"[dim]export LIFERAFT_BOOTSTRAP={cluster.bootstrap}[/]")
    console.print(f"kafka: [bold]{cluster.kafka_bootstrap}[/] (docs/kafka.md)")
    if cluster.secure:
        console.print(
            "clients log in: SASL_SSL, SCRAM-SHA-512, CA "
            f"{cluster.tls_dir / 'ca.crt'} (docs/security.md)"
        )
        if password is not None:
            console.print(
                f"first user: [bold]admin[/], password [bold]{password}[/] (shown once; kept in "
                f"{cluster.client_config}, mode 0600)"
            )
        console.print(f"[dim]export LIFERAFT_CLIENT_CONFIG={cluster.client_config}[/]")


@app.command("status")
def dev_status(
    data_dir: DataDirOpt = DEFAULT_DEV_DIR,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Which nodes run, and what each says about the cluster."""
    from rich.table import Table

    cluster = _load(data_dir)
    rows = []
    for n in cluster.nodes.values():
        running = cluster.is_running(n.node_id)
        controller = brokers = None
        if running:
            try:
                md = cluster.metadata(n.node_id)
                controller, brokers = md.controller_id, len(md.brokers)
            except Exception:
                pass
        rows.append(
            {
                "node_id": n.node_id,
                "address": n.address,
                "pid": n.pid if running else None,
                "running": running,
                "controller": controller,
                "brokers": brokers,
            }
        )
    if json_out:
        import json

        console.print_json(json.dumps({"bootstrap": cluster.bootstrap, "nodes": rows}))
        return
    table = Table("node", "address", "pid", "state", "controller leader", "brokers")
    for r in rows:
        state = "[green]running[/]" if r["running"] else "[red]down[/]"
        table.add_row(
            str(r["node_id"]),
            str(r["address"]),
            str(r["pid"] or "-"),
            state,
            str(r["controller"] or "-"),
            str(r["brokers"] or "-"),
        )
    console.print(table)
    console.print(f"bootstrap: {cluster.bootstrap}")


@app.command("down")
def dev_down(
    data_dir: DataDirOpt = DEFAULT_DEV_DIR,
    wipe: Annotated[
        bool, typer.Option("--wipe", help="Also delete the cluster's data and logs.")
    ] = False,
) -> None:
    """Stop every node gracefully (SIGTERM)."""
    import shutil

    cluster = _load(data_dir)
    cluster.stop()
    if wipe:
        shutil.rmtree(cluster.data_dir, ignore_errors=True)
        console.print(f"cluster stopped and {cluster.data_dir} deleted")
    else:
        console.print("cluster stopped (data kept; `liferaft dev up` starts it again)")


@app.command("kill")
def dev_kill(
    node_id: Annotated[int, typer.Argument(help="The node to kill.")],
    data_dir: DataDirOpt = DEFAULT_DEV_DIR,
    sig: Annotated[
        str,
        typer.Option(
            "--signal", help="KILL (crash), TERM (graceful), STOP (pause), CONT (resume)."
        ),
    ] = "KILL",
) -> None:
    """Send a node a signal: by default SIGKILL, a crash with no goodbye."""
    from liferaft.launcher import DevClusterError

    cluster = _load(data_dir)
    try:
        signum = signal.Signals["SIG" + sig.upper().removeprefix("SIG")]
    except KeyError:
        raise fail(f"unknown signal {sig!r}; use KILL, TERM, STOP or CONT", 2) from None
    try:
        if signum == signal.SIGKILL:
            cluster.kill(node_id)
        elif signum == signal.SIGTERM:
            cluster.stop_node(node_id)
        else:
            cluster.signal_node(node_id, signum)
    except DevClusterError as e:
        raise fail(str(e)) from None
    console.print(f"node {node_id}: sent SIG{signum.name.removeprefix('SIG')}")


@app.command("restart")
def dev_restart(
    node_id: Annotated[int, typer.Argument()], data_dir: DataDirOpt = DEFAULT_DEV_DIR
) -> None:
    """Start a node again (stopping it first if it runs)."""
    from liferaft.launcher import DevClusterError

    cluster = _load(data_dir)
    try:
        cluster.stop_node(node_id)
        cluster.start_node(node_id)
        cluster.wait_healthy(60.0, nodes=[node_id])
    except DevClusterError as e:
        raise fail(str(e)) from None
    console.print(f"node {node_id} restarted (pid {cluster.node(node_id).pid})")


@app.command("add-node")
def dev_add_node(data_dir: DataDirOpt = DEFAULT_DEV_DIR) -> None:
    """Start one more node that joins the running cluster (--join): the controller adds it as
    a learner, and as a voter while it has fewer than controller_voters (docs/operations.md)."""
    from liferaft.launcher import DevClusterError

    cluster = _load(data_dir)
    try:
        node = cluster.add_node()
        cluster.start_node(node.node_id)
        cluster.wait_healthy(60.0, nodes=[node.node_id])
    except DevClusterError as e:
        raise fail(str(e)) from None
    console.print(
        f"node {node.node_id} joined on {node.address} (pid {node.pid}); "
        f"`liferaft dev status` shows it"
    )
