"""`liferaft certs`: certificates for mutual TLS between nodes (liferaft/certs.py, docs/security.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from liferaft.cli._common import console, fail

app = typer.Typer(
    help="Certificates for TLS between nodes and for clients (docs/security.md).",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("create")
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
    cluster: Annotated[str, typer.Option("--cluster-id", help="Named in the CA's subject.")] = (
        "liferaft"
    ),
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


@app.command("create-client")
def certs_create_client(
    directory: Annotated[Path, typer.Option("--dir", help="The CA's folder (`certs create`).")],
    name: Annotated[str, typer.Option("--name", help="The client's name: its CN.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing one.")] = False,
) -> None:
    """Sign a client certificate with the cluster CA, for client listeners that require one
    (`liferaft node --client-tls --client-tls-auth required`)."""
    from liferaft.certs import CertsError, create_client_cert

    try:
        folder = create_client_cert(directory, name, force=force)
    except CertsError as e:
        raise fail(str(e), 2) from None
    except OSError as e:
        raise fail(f"cannot write to {directory}: {e}") from None
    console.print(
        f"client {name}: {folder}/client.crt, client.key, ca.crt (principal User:CN={name})"
    )
