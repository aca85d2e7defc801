"""`liferaft chaos run`: a seeded nemesis against a local or compose cluster, and the history check.

    liferaft chaos run --faults kill,pause,partition --duration 120 --seed 7 --out chaos-out
    liferaft chaos run --target compose --bootstrap 127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094
    liferaft chaos run --client kafka --faults kill,pause,partition --duration 60 --seed 1
    liferaft chaos run --secure --faults kill,pause,partition --duration 60 --seed 1

--client picks the client library under test (chaos/clients.py): liferaft's own (gRPC, the
default) or confluent-kafka (librdkafka) on the nodes' Kafka listeners (each node's address +
the port table's Kafka offset); the nemesis, the checker and the replica comparison are the
same. librdkafka's own log lines go to OUT/kafka-client.log.

--secure (local target, liferaft's client) starts the cluster as `liferaft dev up --secure` does
(SASL_SSL on both client listeners, ACLs on), makes its first admin (a super user) and gives
every client of the run that login (WorkloadConfig.security): the producers and readers, the
nemesis's admin client and the replica comparison.

--target local starts its own cluster: a Toxiproxy-compatible proxy (python -m chaos.proxy, a
process of its own) with two proxies on every node-to-node link (gRPC, and the Raft transport
RAFT_PORT_OFFSET ports above it, liferaft_proto/ports.py), and three node processes (--nodes; four
with the move fault, so that a replica has somewhere to go) whose --peers point at those proxies
(chaos/local.py). Its data and logs go to OUT/cluster (node data is deleted
afterwards unless --keep-data; logs stay). With `power` among the faults, each node's data
directory OUT/cluster/node-N is a power-loss disk: a FUSE mount over OUT/cluster/node-N.disk that
forgets every write not fsynced when the nemesis cuts the power (chaos/lazyfs.py). That needs
/dev/fuse, libfuse2 and fusepy, and root (or fusermount).

--target compose drives a running compose cluster started with the chaos-local (or chaos)
profile: nodes by `docker kill/start/pause/unpause`, links through the proxy API published at
--toxiproxy, or with --network iptables through DROP rules in the node containers' namespaces
(for a cluster whose peers dial each other directly).

The output folder gets history.jsonl, summary.json and plot.png. The last five lines printed are
`lost: N`, `duplicated: N`, `inconsistent_offsets: N`, `aborted_reads: N` and
`replica_differences: N`; the exit code is 1 when anything acknowledged was lost or corrupted
(lost, inconsistent offsets, aborted, wrong-offset or phantom reads), the log could not be read
back whole, or the replicas differ (a partition log up to the high watermark, the controller or
the groups state not the same on every node, chaos/replicas.py), 3 when the run could not be carried
out (the cluster did not start, a fault could not be injected), 2 for bad usage. Duplicates do
not fail a run: a producer without idempotence may write a retried send twice.

The local cluster is chaos/local.py's (it starts nodes with liferaft.launcher); this module is
only the command, and imports chaos/ when it runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["app"]

app = typer.Typer(
    help="Chaos runs: faults against a cluster, and a check that nothing acknowledged was lost.",
    no_args_is_help=True,
    add_completion=False,
)


def _fail(message: str, code: int = 2) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return typer.Exit(code)


def _say(text: str) -> None:
    print(text, flush=True)


def _missing_chaos_extra(target: str, network: str, client: str = "liferaft") -> list[str]:
    """The chaos extra's libraries this run would import and cannot (matplotlib is optional:
    without it a run writes no plot)."""
    import importlib.util

    needs_proxy = target == "local" or network == "proxy"
    wanted = (["toxiproxy"] if needs_proxy else []) + (
        ["confluent_kafka"] if client == "kafka" else []
    )
    return [lib for lib in wanted if importlib.util.find_spec(lib) is None]


@app.command("run")
def chaos_run(
    faults: Annotated[
        str,
        typer.Option(
            help="Comma-separated fault kinds: kill, pause, partition, power, latency, "
            "bandwidth, answers, move (power: local target, needs FUSE; move: local target, "
            "4 nodes by default)."
        ),
    ] = "kill,pause,partition",
    duration: Annotated[float, typer.Option(help="Seconds the workload runs.")] = 60.0,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the fault schedule (default: random, printed).")
    ] = None,
    target: Annotated[str, typer.Option(help="local (own processes) or compose.")] = "local",
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default chaos-<seed>-<time>).")
    ] = None,
    bootstrap: Annotated[
        str,
        typer.Option(envvar="LIFERAFT_BOOTSTRAP", help="compose: the nodes' host addresses."),
    ] = "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094",
    toxiproxy: Annotated[
        str, typer.Option(help="compose: the fault proxy's API (HOST:PORT).")
    ] = "127.0.0.1:8474",
    network: Annotated[
        str, typer.Option(help="compose: link faults via 'proxy' or 'iptables'.")
    ] = "proxy",
    project: Annotated[
        str | None, typer.Option(help="compose: the project name (default: the only one).")
    ] = None,
    nodes: Annotated[
        int | None,
        typer.Option(
            help="local: how many nodes (default 3, or 4 with the move fault: a replica needs "
            "somewhere to go)."
        ),
    ] = None,
    client: Annotated[
        str,
        typer.Option(
            help="The client library under test: liferaft (gRPC) or kafka (confluent-kafka "
            "over the nodes' Kafka listeners)."
        ),
    ] = "liferaft",
    in_flight: Annotated[
        int, typer.Option(help="Sends each producer has outstanding (one history process each).")
    ] = 1,
    partitions: Annotated[int, typer.Option(help="Partitions of the topic.")] = 6,
    producers_per_partition: Annotated[int, typer.Option()] = 1,
    rate: Annotated[
        float, typer.Option(help="Most sends per second per producer (0: no limit).")
    ] = 0.0,
    request_timeout_ms: Annotated[
        int, typer.Option(help="Clients' per-attempt deadline (a paused leader costs this).")
    ] = 3_000,
    retry_backoff_ms: Annotated[
        int, typer.Option(help="Clients' first retry backoff (doubles per retry).")
    ] = 100,
    retry_backoff_max_ms: Annotated[int, typer.Option(help="Clients' largest backoff.")] = 1_000,
    settle: Annotated[
        bool, typer.Option(help="Wait for every replica in sync before each fault.")
    ] = True,
    plot: Annotated[bool, typer.Option(help="Write plot.png (needs matplotlib).")] = True,
    keep_data: Annotated[
        bool, typer.Option(help="local: keep the nodes' data folders afterwards.")
    ] = False,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="local: start the cluster as `liferaft dev up --secure` does (TLS and "
            "SCRAM-SHA-512 logins on the client listeners, ACLs on); every client of the run "
            "logs in as its first admin (a super user).",
        ),
    ] = False,
) -> None:
    """Run a workload under a seeded nemesis, then check that nothing acknowledged was lost."""
    if client not in ("liferaft", "kafka"):
        raise _fail(f"--client must be liferaft or kafka, not {client!r}")
    missing = _missing_chaos_extra(target, network, client)
    if missing:
        raise _fail(
            f"chaos runs need {', '.join(missing)}, which this install lacks: "
            "pip install 'liferaft[chaos]' (or pip install -e '.[chaos]' in a clone)",
            3,
        )
    from chaos.faults import Faults
    from chaos.history import History
    from chaos.local import local_chaos_cluster
    from chaos.nemesis import parse_fault_kinds, plan_faults
    from chaos.network import IptablesNetwork, Network, ToxiproxyNetwork
    from chaos.summary import format_run_summary, write_outputs
    from chaos.targets import ComposeNodes, ProcessNodes, TargetError
    from chaos.workload import WorkloadConfig, run_chaos
    from liferaft.cli._client import _client_config
    from liferaft.launcher import DevClusterError, secure_args

    try:
        kinds = parse_fault_kinds(faults)
    except ValueError as e:
        raise _fail(str(e)) from None
    if target not in ("local", "compose"):
        raise _fail(f"--target must be local or compose, not {target!r}")
    if "power" in kinds:
        from chaos.lazyfs import fuse_unavailable

        if target != "local":
            raise _fail("power faults need --target local (its nodes run on FUSE disks)")
        why = fuse_unavailable()
        if why is not None:
            raise _fail(f"power faults need FUSE: {why}")
    if client == "kafka" and "answers" in kinds:
        raise _fail(
            "the answers fault drops produce answers inside liferaft's client (a gRPC "
            "interceptor); it has no hook in librdkafka: leave it out with --client kafka"
        )
    if "move" in kinds and target != "local":
        raise _fail(
            "the move fault needs a node outside every replica set: use --target local "
            "(4 nodes by default with move)"
        )
    if nodes is None:
        nodes = 4 if "move" in kinds else 3
    if "move" in kinds and nodes < 4:
        raise _fail(
            f"the move fault needs more nodes than the replication factor (3): --nodes {nodes} "
            "leaves a replica nowhere to go; give --nodes 4 or more"
        )
    if nodes < 1:
        raise _fail("--nodes must be positive")
    if secure and target != "local":
        raise _fail(
            "--secure starts a secure local cluster: use it with --target local (the compose "
            "cluster's clients take no credentials yet)"
        )
    if secure and client != "liferaft":
        raise _fail("--secure runs liferaft's client (--client liferaft) for now")
    if network not in ("proxy", "iptables"):
        raise _fail(f"--network must be proxy or iptables, not {network!r}")
    if duration <= 0 or partitions < 1 or producers_per_partition < 1 or in_flight < 1:
        raise _fail(
            "--duration, --partitions, --producers-per-partition and --in-flight must be positive"
        )
    if seed is None:
        seed = random.SystemRandom().randrange(1, 1_000_000)
    plan = plan_faults(kinds, duration, seed, partitions=partitions)
    if not plan:
        raise _fail(
            f"--duration {duration:g} leaves no room for a fault (the first starts at 4 s, one "
            "lasts up to 5 s, and the last ends 6 s before the run does): a run that injects "
            "nothing proves nothing; give --duration 15 or more"
        )
    out = out or Path(f"chaos-{seed}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    topic = f"chaos-s{seed}-{secrets.token_hex(2)}"
    config = WorkloadConfig(
        topic=topic,
        partitions=partitions,
        client=client,
        producers_per_partition=producers_per_partition,
        sends_in_flight=in_flight,
        rate_per_producer=rate,
        request_timeout_ms=request_timeout_ms,
        retry_backoff_ms=retry_backoff_ms,
        retry_backoff_max_ms=retry_backoff_max_ms,
        recover_timeout_s=90.0 if target == "local" else 120.0,
        senders_on_grpc="answers" in kinds,
    )
    run: dict[str, Any] = {
        "target": target,
        "faults": ",".join(kinds),
        "duration_s": duration,
        "seed": seed,
        "topic": topic,
        "client": client,
    }
    if secure:
        run["secure"] = "SASL_SSL,SCRAM-SHA-512,acls"
    if in_flight != 1:
        run["in_flight"] = in_flight
    if (request_timeout_ms, retry_backoff_ms, retry_backoff_max_ms) != (3_000, 100, 1_000):
        run["client_timeouts"] = (
            f"request={request_timeout_ms}ms,backoff={retry_backoff_ms}..{retry_backoff_max_ms}ms"
        )
    _say(
        "chaos run: "
        + " ".join(f"{k}={v}" for k, v in run.items())
        + f"; {len(plan)} faults planned; output in {out}"
    )
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if client == "kafka":
        # librdkafka logs every refused connection to a killed node: to a file, not the screen.
        kafka_log = logging.getLogger("liferaft.chaos.kafka")
        kafka_log.addHandler(logging.FileHandler(out / "kafka-client.log"))
        kafka_log.setLevel(logging.INFO)
        kafka_log.propagate = False

    with open(out / "history.jsonl", "w", encoding="utf-8") as stream:
        history = History(stream_to=stream)
        try:
            if target == "local":
                with local_chaos_cluster(
                    out / "cluster",
                    nodes,
                    secure_args(nodes) if secure else None,
                    power="power" in kinds,
                ) as local:
                    _say(
                        f"local cluster: {local.bootstrap}, links through the proxy at "
                        f"{local.proxy_api}"
                    )
                    if secure:
                        local.cluster.make_first_admin()
                        config = dataclasses.replace(
                            config, security=_client_config(str(local.cluster.client_config))
                        )
                        _say(
                            "clients log in as admin over SASL_SSL (SCRAM-SHA-512), ACLs on: "
                            f"{local.cluster.client_config}"
                        )
                    chaos = Faults(
                        ProcessNodes(local.cluster, local.node_ids, local.disks),
                        ToxiproxyNetwork(local.proxy_api),
                    )
                    try:
                        result = asyncio.run(
                            run_chaos(
                                local.bootstrap,
                                chaos,
                                plan,
                                history,
                                config,
                                duration,
                                settle=settle,
                                say=_say,
                            )
                        )
                    finally:
                        chaos.close()
                if not keep_data:
                    for n in local.node_ids:
                        shutil.rmtree(out / "cluster" / f"node-{n}", ignore_errors=True)
                        shutil.rmtree(out / "cluster" / f"node-{n}.disk", ignore_errors=True)
                run["bootstrap"] = local.bootstrap
            else:
                compose_nodes = ComposeNodes(project=project)
                link_net: Network = (
                    ToxiproxyNetwork(toxiproxy)
                    if network == "proxy"
                    else IptablesNetwork(compose_nodes)
                )
                chaos = Faults(compose_nodes, link_net)
                try:
                    result = asyncio.run(
                        run_chaos(
                            bootstrap,
                            chaos,
                            plan,
                            history,
                            config,
                            duration,
                            settle=settle,
                            say=_say,
                        )
                    )
                finally:
                    chaos.close()
                run["bootstrap"] = bootstrap
                run["project"] = compose_nodes.project
                run["network"] = network
        except (DevClusterError, TargetError, RuntimeError, OSError) as e:
            raise _fail(f"the chaos run could not complete: {e}", 3) from None

    try:
        written = write_outputs(result, run, out, plot=plot)
    except ImportError as e:
        written = write_outputs(result, run, out, plot=False)
        _say(f"no plot: {e} (pip install matplotlib)")
    _say("wrote " + ", ".join(str(p) for p in [out / "history.jsonl", *written]))
    _say(format_run_summary(result, run))
    raise typer.Exit(0 if result.ok else 1)
