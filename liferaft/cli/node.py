"""`liferaft node`: run one broker in the foreground.

The broker process is this module, liferaft.cli's app and node/: nothing of the client, chaos or
the rest of the CLI's tooling is loaded (tests/test_house.py checks a real process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from liferaft.cli._common import fail
from liferaft_proto.ports import RAFT_PORT_OFFSET

app = typer.Typer(add_completion=False)


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
    join: Annotated[
        str | None,
        typer.Option(
            "--join",
            envvar="LIFERAFT_JOIN",
            help="HOST:PORT of any member of a running cluster to join (instead of --peers).",
        ),
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
            help="Every node's Raft transport listens on its gRPC port plus this "
            f"(default {RAFT_PORT_OFFSET}).",
        ),
    ] = None,
    no_stream_listener: Annotated[
        bool,
        typer.Option(
            "--no-stream-listener",
            envvar="LIFERAFT_NO_STREAM_LISTENER",
            help="Do not serve the clients' produce and fetch streams over framed TCP (port + "
            "400, stream_port_offset); clients then use gRPC's streams.",
        ),
    ] = False,
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
    metrics_listen: Annotated[
        str | None,
        typer.Option(
            "--metrics-listen",
            envvar="LIFERAFT_METRICS_LISTEN",
            help="Where to serve Prometheus metrics (GET /metrics), HOST:PORT, or off "
            "(default: the --listen host, its port + 300).",
        ),
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
    client_tls: Annotated[
        bool,
        typer.Option(
            "--client-tls",
            envvar="LIFERAFT_CLIENT_TLS",
            help="TLS on the client listeners (gRPC and Kafka) with this node's certificate "
            "(default: plaintext; docs/security.md).",
        ),
    ] = False,
    client_tls_auth: Annotated[
        str | None,
        typer.Option(
            "--client-tls-auth",
            envvar="LIFERAFT_CLIENT_TLS_AUTH",
            help="none (default) or required: clients present a certificate signed by the "
            "cluster CA (`liferaft certs create-client`).",
        ),
    ] = None,
    authorizer: Annotated[
        bool,
        typer.Option(
            "--authorizer",
            envvar="LIFERAFT_AUTHORIZER",
            help="ACLs decide who may do what (`liferaft acl`): a request no ACL allows is "
            "refused (default: off, everyone may do everything).",
        ),
    ] = False,
    super_users: Annotated[
        str | None,
        typer.Option(
            "--super-users",
            envvar="LIFERAFT_SUPER_USERS",
            help="Principals the authorizer always allows, separated by ';' "
            "(User:admin;User:CN=ops,O=acme).",
        ),
    ] = None,
    client_security_protocol: Annotated[
        str | None,
        typer.Option(
            "--client-security-protocol",
            envvar="LIFERAFT_CLIENT_SECURITY_PROTOCOL",
            help="PLAINTEXT, SSL, SASL_SSL or SASL_PLAINTEXT: how clients of both listeners "
            "connect; SASL_* asks for a SCRAM username and password (`liferaft user add`).",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", envvar="LIFERAFT_LOG_LEVEL")] = "info",
    log_format: Annotated[
        str | None,
        typer.Option("--log-format", envvar="LIFERAFT_LOG_FORMAT", help="text (default) or json."),
    ] = None,
    event_loop: Annotated[
        str | None,
        typer.Option(
            "--event-loop",
            envvar="LIFERAFT_EVENT_LOOP",
            help="uvloop (default) or asyncio (the standard library's loop).",
        ),
    ] = None,
) -> None:
    """Run one node in the foreground until SIGINT/SIGTERM (then hand off leadership and stop)."""
    from node.config import ConfigError, NodeConfig, load_toml, parse_peers, parse_super_users

    settings: dict[str, Any] = {}
    try:
        if config_file is not None:
            settings.update(load_toml(config_file))
        given = {
            "node_id": node_id,
            "listen": listen,
            "advertise": advertise,
            "peers": parse_peers(peers) if peers else None,
            "join": join,
            "data_dir": data_dir,
            "cluster_id": cluster_id,
            "raft_port_offset": raft_port_offset,
            "stream_port_offset": 0 if no_stream_listener else None,
            "tick_ms": tick_ms,
            "election_ticks": election_ticks,
            "retention_check_ms": retention_check_ms,
            "metrics_listen": metrics_listen,
            "log_format": log_format,
            "event_loop": event_loop,
            "tls_dir": tls_dir,
            "tls_ca": tls_ca,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
            "insecure_plaintext_between_nodes": insecure_plaintext or None,
            "client_tls": client_tls or None,
            "client_tls_auth": client_tls_auth,
            "authorizer": authorizer or None,
            "super_users": parse_super_users(super_users) if super_users is not None else None,
            "client_security_protocol": client_security_protocol,
        }
        settings.update({k: v for k, v in given.items() if v is not None})
        missing = [
            f"--{k.replace('_', '-')}"
            for k in ("node_id", "listen", "peers", "data_dir")
            if k not in settings and not (k == "peers" and settings.get("join"))
        ]
        if missing:
            raise ConfigError(
                f"missing {', '.join(missing)} (flags, LIFERAFT_* variables or --config)"
            )
        if settings.get("join"):
            settings.setdefault("peers", {})  # learnt from the member it joins through
        cfg = NodeConfig(**settings).validate()
    except (ConfigError, TypeError) as e:
        raise fail(str(e), 2) from None
    from node import event_loop as loops
    from node import logs
    from node.server import serve

    logs.configure(log_level, cfg.log_format, cfg.node_id)

    try:
        loops.run(serve(cfg), cfg.event_loop)
    except ConfigError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        pass
