"""The `liferaft` command: run a node, run a local dev cluster, and talk to a cluster.

Every command that talks to a cluster takes --bootstrap HOST:PORT,... (or LIFERAFT_BOOTSTRAP);
commands that print data take --json. Errors are printed as one line a person can act on, with
exit code 1 (2 for bad usage, as click does).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from node.config import ConfigError, NodeConfig, load_toml, parse_peers
from node.devcluster import DevCluster, DevClusterError

app = typer.Typer(
    help="liferaft: a Raft-replicated message broker cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
dev_app = typer.Typer(
    help="A local cluster of node processes (demos, tests, chaos).", no_args_is_help=True
)
app.add_typer(dev_app, name="dev")

console = Console()
err_console = Console(stderr=True)

DEFAULT_DEV_DIR = Path(".liferaft/dev")


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# -- liferaft node ---------------------------------------------------------------------------------
@app.command("node")
def node_cmd(
    node_id: Annotated[
        int | None,
        typer.Option("--node-id", envvar="LIFERAFT_NODE_ID", help="This node's id (>= 1)."),
    ] = None,
    listen: Annotated[
        str | None, typer.Option(envvar="LIFERAFT_LISTEN", help="HOST:PORT to serve on.")
    ] = None,
    advertise: Annotated[
        str | None, typer.Option(envvar="LIFERAFT_ADVERTISE", help="HOST:PORT clients should use.")
    ] = None,
    peers: Annotated[
        str | None,
        typer.Option(envvar="LIFERAFT_PEERS", help="Every node: 1@HOST:PORT,2@HOST:PORT,..."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", envvar="LIFERAFT_DATA_DIR", help="Where this node keeps its data."
        ),
    ] = None,
    cluster_id: Annotated[
        str | None, typer.Option("--cluster-id", envvar="LIFERAFT_CLUSTER_ID")
    ] = None,
    raft_port_offset: Annotated[
        int | None,
        typer.Option(
            "--raft-port-offset",
            envvar="LIFERAFT_RAFT_PORT_OFFSET",
            help="Every node's Raft transport listens on its gRPC port plus this (default 100).",
        ),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", envvar="LIFERAFT_CONFIG", help="A TOML file with these settings."),
    ] = None,
    tick_ms: Annotated[int | None, typer.Option("--tick-ms", envvar="LIFERAFT_TICK_MS")] = None,
    election_ticks: Annotated[
        int | None, typer.Option("--election-ticks", envvar="LIFERAFT_ELECTION_TICKS")
    ] = None,
    retention_check_ms: Annotated[
        int | None, typer.Option("--retention-check-ms", envvar="LIFERAFT_RETENTION_CHECK_MS")
    ] = None,
    tls_dir: Annotated[
        Path | None,
        typer.Option(
            "--tls-dir",
            envvar="LIFERAFT_TLS_DIR",
            help="This node's ca.crt, node.crt, node.key (or DIR/node-N/ of "
            "`liferaft certs create`): mutual TLS with the other nodes.",
        ),
    ] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            "--tls-ca", envvar="LIFERAFT_TLS_CA", help="The cluster CA (else in --tls-dir)."
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", envvar="LIFERAFT_TLS_CERT", help="This node's certificate."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", envvar="LIFERAFT_TLS_KEY", help="Its key.")
    ] = None,
    insecure_plaintext: Annotated[
        bool,
        typer.Option(
            "--insecure-plaintext-between-nodes",
            envvar="LIFERAFT_INSECURE_PLAINTEXT_BETWEEN_NODES",
            help="UNSAFE: no TLS between nodes; anyone who reaches the Raft port can forge "
            "replication. Only where every process on the network is trusted.",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", envvar="LIFERAFT_LOG_LEVEL")] = "info",
) -> None:
    """Run one node in the foreground until SIGINT/SIGTERM (then hand off leadership and stop)."""
    settings: dict[str, Any] = {}
    try:
        if config_file is not None:
            settings.update(load_toml(config_file))
        given = {
            "node_id": node_id,
            "listen": listen,
            "advertise": advertise,
            "peers": parse_peers(peers) if peers else None,
            "data_dir": data_dir,
            "cluster_id": cluster_id,
            "raft_port_offset": raft_port_offset,
            "tick_ms": tick_ms,
            "election_ticks": election_ticks,
            "retention_check_ms": retention_check_ms,
            "tls_dir": tls_dir,
            "tls_ca": tls_ca,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
            "insecure_plaintext_between_nodes": insecure_plaintext or None,
        }
        settings.update({k: v for k, v in given.items() if v is not None})
        missing = [
            f"--{k.replace('_', '-')}"
            for k in ("node_id", "listen", "peers", "data_dir")
            if k not in settings
        ]
        if missing:
            raise ConfigError(
                f"missing {', '.join(missing)} (flags, LIFERAFT_* variables or --config)"
            )
        cfg = NodeConfig(**settings).validate()
    except (ConfigError, TypeError) as e:
        raise fail(str(e), 2) from None
    setup_logging(log_level)
    from node.server import serve

    try:
        asyncio.run(serve(cfg))
    except ConfigError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        pass


# -- liferaft dev ----------------------------------------------------------------------------------
DataDirOpt = Annotated[
    Path,
    typer.Option(
        "--data-dir", envvar="LIFERAFT_DEV_DIR", help="Where the dev cluster keeps state and logs."
    ),
]


def _load(data_dir: Path) -> DevCluster:
    try:
        return DevCluster.load(data_dir)
    except DevClusterError as e:
        raise fail(str(e)) from None


@dev_app.command("up")
def dev_up(
    nodes: Annotated[int, typer.Option("--nodes", help="How many nodes.")] = 3,
    data_dir: DataDirOpt = DEFAULT_DEV_DIR,
    base_port: Annotated[
        int,
        typer.Option(
            "--base-port", help="Node N serves gRPC on base-port + N - 1, Raft on that + 100."
        ),
    ] = 9092,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a healthy cluster.")] = 60.0,
) -> None:
    """Start a local cluster as background processes and wait until it is healthy."""
    try:
        try:
            cluster = DevCluster.load(data_dir)
            if len(cluster.nodes) != nodes:
                raise fail(
                    f"{data_dir} holds a {len(cluster.nodes)}-node cluster; use that many --nodes, "
                    "or another --data-dir, or `liferaft dev down --wipe` first"
                )
        except DevClusterError:
            cluster = DevCluster.create(data_dir, nodes, base_port)
        cluster.start()
        with console.status(f"waiting for {nodes} nodes to elect a controller..."):
            cluster.wait_healthy(timeout)
    except DevClusterError as e:
        raise fail(str(e)) from None
    console.print(f"[green]cluster up[/]: {nodes} nodes, data and logs in {cluster.data_dir}")
    if cluster.tls:
        console.print(f"mutual TLS between the nodes; certificates in {cluster.tls_dir}")
    console.print(f"bootstrap: [bold]{cluster.bootstrap}[/]")
    console.print(f"[dim]export LIFERAFT_BOOTSTRAP={cluster.bootstrap}[/]")


@dev_app.command("status")
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


@dev_app.command("down")
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


@dev_app.command("kill")
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


@dev_app.command("restart")
def dev_restart(
    node_id: Annotated[int, typer.Argument()], data_dir: DataDirOpt = DEFAULT_DEV_DIR
) -> None:
    """Start a node again (stopping it first if it runs)."""
    cluster = _load(data_dir)
    try:
        cluster.stop_node(node_id)
        cluster.start_node(node_id)
        cluster.wait_healthy(60.0, nodes=[node_id])
    except DevClusterError as e:
        raise fail(str(e)) from None
    console.print(f"node {node_id} restarted (pid {cluster.node(node_id).pid})")


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
            help="Node N serves gRPC on base-port + N - 1, Raft on that + 100 (default: free).",
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
    from node.demo import demo

    raise typer.Exit(demo(data_dir, base_port, records, keep))


# -- liferaft certs ---------------------------------------------------------------------------------
certs_app = typer.Typer(
    help="Certificates for mutual TLS between nodes (docs/security.md).", no_args_is_help=True
)
app.add_typer(certs_app, name="certs")


@certs_app.command("create")
def certs_create(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to write the CA and the node-N/ folders.")
    ],
    nodes: Annotated[str, typer.Option("--nodes", help="Node ids: 1,2,3 or 1-5.")],
    hosts: Annotated[
        str,
        typer.Option(
            "--hosts",
            help="Host names or addresses to add to every node certificate, comma-separated "
            "(for tools that check a host name; a node is known by its id alone).",
        ),
    ] = "",
    cluster: Annotated[
        str, typer.Option("--cluster-id", help="Named in the CA's subject.")
    ] = "liferaft",
    force: Annotated[
        bool,
        typer.Option("--force", help="Make a new key and certificate for nodes that have one."),
    ] = False,
) -> None:
    """Make a cluster CA (or reuse the one in --dir) and a certificate and key per node."""
    from liferaft.certs import CertsError, create_certs, parse_node_ids

    try:
        ids = parse_node_ids(nodes)
        host_list = [h.strip() for h in hosts.split(",") if h.strip()]
        done = create_certs(directory, ids, host_list, cluster=cluster, force=force)
    except CertsError as e:
        raise fail(str(e), 2) from None
    except OSError as e:
        raise fail(f"cannot write to {directory}: {e}") from None
    ca = "made" if done.ca_created else "reused"
    console.print(f"CA {ca}: {directory / 'ca.crt'} (keep {directory / 'ca.key'} off the nodes)")
    for node_id in done.made:
        console.print(f"node {node_id}: {directory / f'node-{node_id}'}/ made")
    for node_id in done.kept:
        console.print(f"node {node_id}: {directory / f'node-{node_id}'}/ kept (--force remakes it)")


from node.cli_bench import register as register_bench  # noqa: E402
from node.cli_chaos import register as register_chaos  # noqa: E402
from node.cli_client import register  # noqa: E402
from node.cli_health import health_cmd  # noqa: E402

register(app)
register_bench(app)
register_chaos(app)
app.command("health")(health_cmd)


def main() -> None:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    app()


if __name__ == "__main__":
    main()
