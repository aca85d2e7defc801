"""`liferaft cluster`: what the cluster looks like (info) and whether it is well (health).

Both ask every registered node directly, each with a short deadline (--probe-timeout): a node
that does not answer is shown down, with the error. A partition's leader (and the controller
leader) is shown only when that node itself answered as the leader, so a dead node that the
others still remember as leader is never shown leading.

`cluster health` exit codes, chosen so that a script can tell "the cluster is unwell" from "the
check could not be made": 0 healthy; 3 degraded (it serves every partition, but with less
redundancy: a node down, a partition under-replicated); 4 unavailable (something cannot be
served: no node answers, no controller leader, a partition without a leader). 1 and 2 keep the
meaning they have for every liferaft command (1: an error the command could not get past, 2:
bad usage, as click uses it), which a monitoring check should treat as "unknown", not as a
verdict. (Nagios's 0/1/2 would make a typo in a flag read as "unavailable".)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from liferaft.cli._client import (
    BootstrapOpt,
    JsonOpt,
    _bootstrap,
    _client_errors,
    _ids,
    _node,
    _print_json,
    console,
    err_console,
    plural,
    security_settings,
)

if TYPE_CHECKING:
    from client import ClusterDescription

app = typer.Typer(
    help="What the cluster looks like, and whether it is well.",
    no_args_is_help=True,
    add_completion=False,
)

HEALTHY, DEGRADED, UNAVAILABLE = "healthy", "degraded", "unavailable"
EXIT_CODES = {HEALTHY: 0, DEGRADED: 3, UNAVAILABLE: 4}

ProbeOpt = Annotated[
    float,
    typer.Option(
        "--probe-timeout", min=0.1, help="Seconds each node has to answer before it counts as down."
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", min=0.5, help="Seconds to find any node of the cluster at all."),
]


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str
    """DEGRADED or UNAVAILABLE: what it does to the verdict."""
    kind: str
    """node_down, no_controller, leaderless, under_replicated, no_node."""
    subject: str
    reason: str


def assess(info: ClusterDescription) -> tuple[str, list[Finding]]:
    """The verdict and the findings behind it (plain: no I/O; tests feed it descriptions)."""
    findings: list[Finding] = []
    for node, why in info.down.items():
        findings.append(Finding(DEGRADED, "node_down", f"node {node}", f"did not answer: {why}"))
    if not info.controller_id:
        alive = ", ".join(map(str, info.live)) or "none"
        findings.append(
            Finding(
                UNAVAILABLE,
                "no_controller",
                "controller",
                f"no node answers as the controller leader (live nodes: {alive}); topics cannot "
                "be created or deleted, and a majority of the nodes is needed to elect one",
            )
        )
    live = set(info.live)
    for name, tm in sorted(info.topics.items()):
        for p in tm.partitions:
            subject = f"{name}-{p.partition}"
            if not p.leader:
                up = [r for r in p.replicas if r in live]
                findings.append(
                    Finding(
                        UNAVAILABLE,
                        "leaderless",
                        subject,
                        f"no leader; replicas {_ids(p.replicas)}, of which "
                        f"{_ids(tuple(up)) if up else 'none'} answer"
                        + ("" if 2 * len(up) > len(p.replicas) else ": a majority is down"),
                    )
                )
            elif set(p.isr) != set(p.replicas) or not set(p.replicas) <= live:
                # A replica on a node that is down counts even before the leader's ISR has
                # dropped it (that takes the ISR lag bound).
                missing = sorted((set(p.replicas) - set(p.isr)) | (set(p.replicas) - live))
                findings.append(
                    Finding(
                        DEGRADED,
                        "under_replicated",
                        subject,
                        f"in-sync replicas {_ids(p.isr)} of {_ids(p.replicas)}; "
                        f"{'node' if len(missing) == 1 else 'nodes'} "
                        f"{_ids(tuple(missing))} behind or down",
                    )
                )
    if any(f.severity == UNAVAILABLE for f in findings):
        return UNAVAILABLE, findings
    return (DEGRADED if findings else HEALTHY), findings


def _describe(bootstrap: str | None, timeout: float, probe: float) -> ClusterDescription:
    from client import SyncAdminClient

    ms = int(timeout * 1000)
    with SyncAdminClient(
        _bootstrap(bootstrap),
        timeout_ms=ms,
        request_timeout_ms=min(ms, int(probe * 1000)),
        **security_settings(),
    ) as admin:
        return admin.describe_cluster(probe_timeout_ms=int(probe * 1000))


@app.command("health")
def cluster_health(
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
    timeout: TimeoutOpt = 10.0,
    probe_timeout: ProbeOpt = 2.0,
) -> None:
    """Healthy (exit 0), degraded (3) or unavailable (4), with a reason per finding: nodes
    down, no controller leader, partitions without a leader or under-replicated."""
    from client import LiferaftError

    try:
        info = _describe(bootstrap, timeout, probe_timeout)
        verdict, findings = assess(info)
    except LiferaftError as e:
        info = None
        verdict = UNAVAILABLE
        findings = [Finding(UNAVAILABLE, "no_node", "cluster", f"{e.code_name}: {e.message}")]
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if json_out:
        _print_json(
            {
                "status": verdict,
                "exit_code": EXIT_CODES[verdict],
                "nodes": {
                    "live": list(info.live) if info else [],
                    "down": {str(n): why for n, why in info.down.items()} if info else {},
                },
                "controller_id": _node(info.controller_id) if info else None,
                "findings": [
                    {
                        "severity": f.severity,
                        "kind": f.kind,
                        "subject": f.subject,
                        "reason": f.reason,
                    }
                    for f in findings
                ],
            }
        )
    else:
        style = {HEALTHY: "green", DEGRADED: "yellow", UNAVAILABLE: "red"}[verdict]
        summary = ""
        if info is not None:
            partitions = sum(len(tm.partitions) for tm in info.topics.values())
            summary = (
                f": {len(info.live)} of {plural(len(info.brokers), 'node')} up, controller "
                f"leader {info.controller_id or 'none'}, {plural(partitions, 'partition')}"
            )
        console.print(f"[bold {style}]{verdict}[/]{escape(summary)}")
        for f in findings:
            console.print(f"  {f.severity}: {escape(f.subject)}: {escape(f.reason)}")
    raise typer.Exit(EXIT_CODES[verdict])


@app.command("info")
def cluster_info(
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
    timeout: TimeoutOpt = 10.0,
    probe_timeout: ProbeOpt = 2.0,
) -> None:
    """Nodes (up or down), the controller leader, and which partitions each node leads."""
    with _client_errors():
        info = _describe(bootstrap, timeout, probe_timeout)
    leaders = info.leaders_by_node()
    leaderless = [
        f"{name}-{p.partition}"
        for name, tm in sorted(info.topics.items())
        for p in tm.partitions
        if not p.leader
    ]
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
                        "up": b.node_id not in info.down,
                        "error": info.down.get(b.node_id),
                        "is_controller": b.node_id == info.controller_id,
                        "leader_of": [str(tp) for tp in leaders.get(b.node_id, [])],
                    }
                    for b in info.brokers
                ],
                "without_leader": leaderless,
            }
        )
        return
    controller = str(info.controller_id) if info.controller_id else "[red]none[/]"
    console.print(
        f"cluster [bold]{escape(info.cluster_id)}[/], controller leader: node {controller}"
    )
    table = Table("node", "address", "state", "role", "leads", "partitions led")
    for b in info.brokers:
        led = leaders.get(b.node_id, [])
        down = b.node_id in info.down
        table.add_row(
            str(b.node_id),
            b.address,
            "[bold red]DOWN[/]" if down else "[green]up[/]",
            "controller" if b.node_id == info.controller_id else "",
            str(len(led)),
            escape(", ".join(map(str, led))) or "-",
        )
    console.print(table)
    for node, why in info.down.items():
        console.print(f"[red]node {node} is down:[/] {escape(why)}")
    if leaderless:
        console.print(f"[red]without a leader:[/] {escape(', '.join(leaderless))}")
    if info.down or leaderless or not info.controller_id:
        err_console.print("see `liferaft cluster health` for a verdict and an exit code")


@app.command("rebalance")
def cluster_rebalance(
    execute: Annotated[
        bool, typer.Option("--execute", help="Start the moves (default: only show the plan).")
    ] = False,
    throttle_mb_s: Annotated[
        float,
        typer.Option(
            "--throttle-mb-s", min=0, help="Feed each new replica at most this many MB/s."
        ),
    ] = 0,
    bootstrap: BootstrapOpt = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.5)] = 15.0,
    json_out: JsonOpt = False,
) -> None:
    """Plan the replica moves that even out replicas and preferred leaders over the brokers
    (after one joined, say); a dry run unless --execute (docs/operations.md)."""
    from liferaft.cli._client import _client_errors as errors
    from liferaft.cli._client import admin_client
    from liferaft.cli.partition import _move_json

    with errors(), admin_client(bootstrap, timeout) as admin:
        planned = admin.rebalance(execute=execute, throttle_bytes_s=int(throttle_mb_s * 1e6))
    if json_out:
        _print_json({"planned": [_move_json(m) for m in planned], "executed": execute})
        return
    if not planned:
        console.print("balanced: nothing to move")
        return
    verb = "started" if execute else "would start"
    console.print(f"{verb} {plural(len(planned), 'move')}")
    for m in planned:
        console.print(f"  {escape(m.topic)}-{m.partition}: {_ids(m.replicas)} -> {_ids(m.target)}")
    if not execute:
        console.print("a dry run: pass --execute to start them")
