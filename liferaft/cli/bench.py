"""`liferaft bench`: measure produce and consume, and compare with NATS JetStream in one run.

    liferaft bench produce [--bootstrap ...] --records 200000 --record-size 1024 --acks all
    liferaft bench produce --client kafka --records 200000   # confluent-kafka, Kafka listeners
    liferaft bench produce --secure --records 200000       # TLS + SCRAM + ACLs (dev up --secure)
    liferaft --client-config F bench produce -b HOST:PORT   # a cluster whose clients log in
    liferaft bench consume [--bootstrap ...] --records 200000
    liferaft bench compare --records 200000 --runs 3      # liferaft, then NATS JetStream R3
    liferaft bench partitions --partitions 1000           # idle CPU and restart rejoin time
    liferaft bench e2e --rate 1000 --duration 15          # producer -> consumer latency

Without --bootstrap a command starts its own three-node local cluster (and stops and deletes it
afterwards). With --runs N it repeats the run N times on the same cluster (a fresh topic each
time) and reports the median of each figure. --json prints one JSON object on stdout:
records_per_s, requests_per_s, mb_per_s (MB = 2**20 bytes, as Kafka's perf tools count), p50_ms, p99_ms,
p999_ms and the settings that produced them. The progress bar goes to stderr. `partitions`
(liferaft/bench/scale.py) always starts its own cluster, since it kills and restarts a node.

Loaded by liferaft.cli when `liferaft bench` runs.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from liferaft.bench.scale import ScaleResult
    from liferaft.bench.stats import BenchResult
    from liferaft.bench.workload import ConsumeSpec, ProduceSpec

__all__ = ["app"]

app = typer.Typer(
    help="Measure throughput and latency (liferaft, and NATS JetStream side by side).",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


# -- options shared by the commands ----------------------------------------------------------
BootstrapOpt = Annotated[
    str | None,
    typer.Option(
        "--bootstrap",
        "-b",
        envvar="LIFERAFT_BOOTSTRAP",
        help="Run against this cluster; without it, start a local three-node one.",
        show_default=False,
    ),
]
TopicOpt = Annotated[
    str | None,
    typer.Option(help="Topic to use (default: a new bench-XXXXXX topic per run)."),
]
RecordSizeOpt = Annotated[int, typer.Option("--record-size", help="Bytes per record value.")]
RecordsOpt = Annotated[int, typer.Option("--records", help="Records per run (0: 100000).")]
DurationOpt = Annotated[
    float, typer.Option("--duration", help="Seconds per run, instead of --records.")
]
AcksOpt = Annotated[str, typer.Option("--acks", help="all, 1 or 0.")]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", help="Bytes of records per batch (Kafka's batch.size).")
]
LingerOpt = Annotated[
    float,
    typer.Option(
        "--linger-ms",
        help="With --throughput (and always with --client kafka: linger.ms): how long a batch "
        "waits to fill.",
    ),
]
PartitionsOpt = Annotated[int, typer.Option("--partitions", help="Partitions of the topic.")]
RfOpt = Annotated[int, typer.Option("--replication-factor", help="Replicas per partition.")]
ProducersOpt = Annotated[int, typer.Option("--producers", help="Independent producers.")]
InFlightOpt = Annotated[
    int, typer.Option("--in-flight", help="Requests (batches) in flight per producer.")
]
ThroughputOpt = Annotated[
    float,
    typer.Option("--throughput", help="Cap in records/s over all producers (0: no cap)."),
]
RunsOpt = Annotated[int, typer.Option("--runs", help="Repeat and report the medians.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
PlaintextOpt = Annotated[
    bool,
    typer.Option(
        "--insecure-plaintext-between-nodes",
        help="Start the local cluster without TLS between its nodes (to measure what TLS costs).",
    ),
]
SecureOpt = Annotated[
    bool,
    typer.Option(
        "--secure",
        help="Start the local cluster as `liferaft dev up --secure` does (TLS and SCRAM-SHA-512 "
        "logins on the client listeners, ACLs on) and log in as its first admin. Against "
        "--bootstrap, give the credentials as to any command: liferaft --client-config F, "
        "--security-protocol ... or LIFERAFT_* variables.",
    ),
]
GrpcOpt = Annotated[
    bool,
    typer.Option(
        "--grpc",
        help="The clients' ProduceStream and FetchStream on gRPC, not on the nodes' stream "
        "listeners (framed TCP, the default where a node has one): an A/B run is one flag.",
    ),
]


_SECURE_WITH_BOOTSTRAP = (
    "--secure starts a secure local cluster: leave out --bootstrap (give its credentials with "
    "liferaft --client-config)"
)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def _acks(value: str) -> int:
    text = value.strip().lower()
    if text in ("all", "-1"):
        return -1
    if text in ("0", "1"):
        return int(text)
    raise _fail(f"--acks must be all, 1 or 0, not {value!r}", 2)


@contextmanager
def _errors() -> Iterator[None]:
    from liferaft.bench.clusters import NatsUnavailable
    from liferaft.bench.target_liferaft import BenchError
    from liferaft.launcher import DevClusterError

    try:
        yield
    except (BenchError, DevClusterError, NatsUnavailable) as e:
        raise _fail(str(e)) from None
    except ValueError as e:
        raise _fail(str(e), 2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _progress_bar(quiet: bool) -> Progress | None:
    if quiet:
        return None
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


Runner = Callable[[Callable[[int], None] | None, int], Awaitable["BenchResult"]]


def _run_many(
    label: str, runs: int, total: int | None, runner: Runner, bar: Progress | None
) -> list[BenchResult]:
    """Run `runner` `runs` times, each with a progress bar, all in one event loop."""

    async def main() -> list[BenchResult]:
        out = []
        for run in range(1, runs + 1):
            callback = None
            if bar is not None:
                task = bar.add_task(f"{label} run {run}/{runs}", total=total, rate="")
                t0 = asyncio.get_running_loop().time()

                def callback(done: int, task: Any = task, t0: float = t0) -> None:
                    dt = asyncio.get_running_loop().time() - t0
                    rate = f"{done / dt:,.0f} rec/s" if dt > 0 else ""
                    bar.update(task, completed=done, rate=rate)

            result = await runner(callback, run)
            if bar is not None:
                bar.remove_task(task)
            out.append(result)
        return out

    return asyncio.run(main())


def _summary(results: list[BenchResult]) -> dict[str, Any]:
    from liferaft.bench.stats import median_of

    each = [r.to_dict() for r in results]
    if len(each) == 1:
        return each[0]
    out = median_of(each)
    out["each"] = [
        {
            k: r[k]
            for k in (
                "records_per_s",
                "requests_per_s",
                "mb_per_s",
                "p50_ms",
                "p99_ms",
                "p999_ms",
                "errors",
            )
        }
        for r in each
    ]
    return out


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}{unit}"
    return f"{value:,}{unit}"


def _print_report(title: str, summaries: dict[str, dict[str, Any]]) -> None:
    systems = list(summaries)
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for s in systems:
        table.add_column(s, justify="right")
    rows = [
        ("records", "records", ""),
        ("records/s", "records_per_s", ""),
        ("requests/s", "requests_per_s", ""),
        ("MB/s", "mb_per_s", ""),
        ("latency p50", "p50_ms", " ms"),
        ("latency p99", "p99_ms", " ms"),
        ("latency p99.9", "p999_ms", " ms"),
        ("errors", "errors", ""),
    ]
    for name, key, unit in rows:
        table.add_row(name, *(_fmt(summaries[s].get(key), unit) for s in systems))
    if len(systems) == 2:
        a, b = (summaries[s].get("mb_per_s") for s in systems)
        if a and b:
            table.add_row(f"{systems[0]} / {systems[1]}", f"{a / b:.2f}x", "")
    console.print(table)
    first = summaries[systems[0]]
    runs = first.get("runs", 1)
    settings = ", ".join(f"{k}={v}" for k, v in first["settings"].items() if v not in (None, []))
    console.print(f"[dim]{runs} run(s), medians; {settings}[/]")
    for s in systems:
        for failure in summaries[s]["settings"].get("failures", []) or []:
            err_console.print(f"[yellow]{s}: {escape(failure)}[/]")


def _emit(title: str, summaries: dict[str, dict[str, Any]], as_json: bool) -> None:
    if as_json:
        if len(summaries) == 1:
            obj = next(iter(summaries.values()))
        else:
            obj = dict(summaries)
            names = list(summaries)
            a, b = (summaries[n].get("mb_per_s") for n in names)
            obj["ratio_mb_per_s"] = round(a / b, 2) if a and b else None
        sys.stdout.write(json.dumps(obj) + "\n")
    else:
        _print_report(title, summaries)


def _topic(topic: str | None, run: int) -> str:
    return topic if topic else f"bench-{uuid.uuid4().hex[:6]}-r{run}"


def _produce_spec(topic: str, **kw: Any) -> ProduceSpec:
    from liferaft.bench.workload import ProduceSpec

    return ProduceSpec(topic=topic, **kw)


# -- liferaft bench produce --------------------------------------------------------------------
@app.command("produce")
def produce(
    bootstrap: BootstrapOpt = None,
    system: Annotated[str, typer.Option(help="liferaft or nats (a local NATS cluster).")] = (
        "liferaft"
    ),
    topic: TopicOpt = None,
    record_size: RecordSizeOpt = 1024,
    records: RecordsOpt = 0,
    duration: DurationOpt = 0.0,
    acks: AcksOpt = "all",
    batch_size: BatchOpt = 256 * 1024,
    linger_ms: LingerOpt = 5.0,
    partitions: PartitionsOpt = 3,
    replication_factor: RfOpt = 3,
    producers: ProducersOpt = 1,
    in_flight: InFlightOpt = 8,
    throughput: ThroughputOpt = 0.0,
    client: Annotated[
        str,
        typer.Option(
            help="raw: prebuilt batches on the wire; producer: client.Producer; kafka: "
            "confluent-kafka's idempotent producer on the Kafka listeners."
        ),
    ] = "raw",
    runs: RunsOpt = 1,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    plaintext: PlaintextOpt = False,
    secure: SecureOpt = False,
    use_grpc: GrpcOpt = False,
) -> None:
    """Produce records as fast as the cluster takes them (or at --throughput) and report."""
    from liferaft.bench.clusters import nats_cluster
    from liferaft.bench.target_liferaft import run_produce
    from liferaft.bench.target_nats import run_nats_produce

    if system not in ("liferaft", "nats"):
        raise _fail(f"--system must be liferaft or nats, not {system!r}", 2)
    if client not in ("raw", "producer", "kafka"):
        raise _fail(f"--client must be raw, producer or kafka, not {client!r}", 2)
    with _errors():
        kw = dict(
            record_size=record_size,
            records=records,
            duration_s=duration,
            acks=_acks(acks),
            batch_size=batch_size,
            linger_ms=linger_ms,
            partitions=partitions,
            replication_factor=replication_factor,
            producers=producers,
            in_flight=in_flight,
            throughput=throughput,
        )
        probe = _produce_spec("x", **kw)  # validate before starting anything
        bar = _progress_bar(quiet or as_json)
        with ExitStack() as stack:
            if bar is not None:
                stack.enter_context(bar)
            if system == "nats":
                nats = stack.enter_context(nats_cluster())

                async def nats_run(cb: Callable[[int], None] | None, run: int) -> BenchResult:
                    spec = _produce_spec(_topic(topic, run), **kw)
                    return await run_nats_produce(nats.servers, spec, progress=cb)

                results = _run_many("nats produce", runs, probe.total_records, nats_run, bar)
            else:
                if plaintext and bootstrap:
                    raise _fail(
                        "--insecure-plaintext-between-nodes is for the local cluster: "
                        "leave out --bootstrap",
                        2,
                    )
                if secure and bootstrap:
                    raise _fail(_SECURE_WITH_BOOTSTRAP, 2)
                if secure and plaintext:
                    raise _fail(
                        "--secure starts a secure local cluster: leave out "
                        "--insecure-plaintext-between-nodes",
                        2,
                    )
                addresses, security = _cluster(bootstrap, stack, tls=not plaintext, secure=secure)

                async def lr_run(cb: Callable[[int], None] | None, run: int) -> BenchResult:
                    spec = _produce_spec(_topic(topic, run), **kw)
                    return await run_produce(
                        addresses,
                        spec,
                        client=client,
                        progress=cb,
                        security=security,
                        stream_transport=not use_grpc,
                    )

                results = _run_many("liferaft produce", runs, probe.total_records, lr_run, bar)
        _emit("produce", {system: _summary(results)}, as_json)


def _cluster(
    bootstrap: str | None, stack: ExitStack, *, tls: bool = True, secure: bool = False
) -> tuple[list[str], dict[str, Any]]:
    """The cluster's addresses and the client's security options: the CLI's own (--client-config,
    --security-protocol...) for --bootstrap, the first admin's for a local --secure cluster,
    none for a local plaintext one."""
    from liferaft.cli._client import _client_config, security_settings

    if bootstrap:
        return _addresses(bootstrap, stack), security_settings()
    if not secure:
        return _addresses(None, stack, tls=tls), {}
    from liferaft.bench.clusters import liferaft_cluster

    with err_console.status("starting a local three-node liferaft cluster (--secure)..."):
        dev = stack.enter_context(liferaft_cluster(secure=True))
    return dev.bootstrap.split(","), _client_config(str(dev.client_config))


def _addresses(bootstrap: str | None, stack: ExitStack, *, tls: bool = True) -> list[str]:
    from liferaft.bench.clusters import liferaft_cluster

    if bootstrap:
        return [a.strip() for a in bootstrap.split(",") if a.strip()]
    what = "" if tls else " (plaintext between nodes)"
    with err_console.status(f"starting a local three-node liferaft cluster{what}..."):
        dev = stack.enter_context(liferaft_cluster(tls=tls))
    return dev.bootstrap.split(",")


# -- liferaft bench consume --------------------------------------------------------------------
@app.command("consume")
def consume(
    bootstrap: BootstrapOpt = None,
    system: Annotated[str, typer.Option(help="liferaft or nats (a local NATS cluster).")] = (
        "liferaft"
    ),
    topic: TopicOpt = None,
    record_size: RecordSizeOpt = 1024,
    records: Annotated[int, typer.Option("--records", help="Records to read per run.")] = 100_000,
    partitions: PartitionsOpt = 1,
    replication_factor: RfOpt = 3,
    fetch_max_bytes: Annotated[
        int, typer.Option("--fetch-max-bytes", help="Bytes per fetch answer.")
    ] = 4 << 20,
    client: Annotated[
        str,
        typer.Option(
            help="raw: count records from batch headers; consumer: client.Consumer; kafka: "
            "confluent-kafka's Consumer on the Kafka listeners."
        ),
    ] = "raw",
    runs: RunsOpt = 1,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    secure: SecureOpt = False,
    use_grpc: GrpcOpt = False,
) -> None:
    """Fill a topic (unmeasured), then read it from the start as fast as possible and report.
    Latency figures are per fetch request."""
    from liferaft.bench.clusters import nats_cluster
    from liferaft.bench.target_liferaft import run_consume
    from liferaft.bench.target_nats import run_nats_consume
    from liferaft.bench.workload import ConsumeSpec

    if system not in ("liferaft", "nats"):
        raise _fail(f"--system must be liferaft or nats, not {system!r}", 2)
    if client not in ("raw", "consumer", "kafka"):
        raise _fail(f"--client must be raw, consumer or kafka, not {client!r}", 2)
    with _errors():

        def spec(run: int) -> ConsumeSpec:
            return ConsumeSpec(
                topic=_topic(topic, run),
                record_size=record_size,
                records=records,
                partitions=partitions,
                replication_factor=replication_factor,
                fetch_max_bytes=fetch_max_bytes,
            )

        spec(0)
        bar = _progress_bar(quiet or as_json)
        with ExitStack() as stack:
            if bar is not None:
                stack.enter_context(bar)
            if system == "nats":
                nats = stack.enter_context(nats_cluster())

                async def nats_run(cb: Callable[[int], None] | None, run: int) -> BenchResult:
                    return await run_nats_consume(nats.servers, spec(run), progress=cb)

                results = _run_many("nats consume", runs, records, nats_run, bar)
            else:
                if secure and bootstrap:
                    raise _fail(_SECURE_WITH_BOOTSTRAP, 2)
                addresses, security = _cluster(bootstrap, stack, secure=secure)

                async def lr_run(cb: Callable[[int], None] | None, run: int) -> BenchResult:
                    return await run_consume(
                        addresses,
                        spec(run),
                        client=client,
                        progress=cb,
                        security=security,
                        stream_transport=not use_grpc,
                    )

                results = _run_many("liferaft consume", runs, records, lr_run, bar)
        _emit("consume", {system: _summary(results)}, as_json)


# -- liferaft bench compare --------------------------------------------------------------------
@app.command("compare")
def compare(
    bootstrap: BootstrapOpt = None,
    record_size: RecordSizeOpt = 1024,
    records: RecordsOpt = 0,
    duration: DurationOpt = 0.0,
    batch_size: BatchOpt = 256 * 1024,
    partitions: PartitionsOpt = 3,
    producers: ProducersOpt = 1,
    in_flight: InFlightOpt = 8,
    throughput: ThroughputOpt = 0.0,
    client: Annotated[
        str,
        typer.Option(help="liferaft's side: raw (prebuilt batches) or producer (client.Producer)."),
    ] = "raw",
    runs: RunsOpt = 3,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """The same produce workload (RF 3, acks=all) against liferaft and NATS JetStream R3, one
    after the other on this machine, side by side. NATS gets as many records in flight per
    producer as liferaft has (in-flight batches x records per batch)."""
    from liferaft.bench.clusters import nats_cluster
    from liferaft.bench.target_liferaft import run_produce
    from liferaft.bench.target_nats import run_nats_produce

    if client not in ("raw", "producer"):
        raise _fail(f"--client must be raw or producer, not {client!r}", 2)
    with _errors():
        kw = dict(
            record_size=record_size,
            records=records,
            duration_s=duration,
            acks=-1,
            batch_size=batch_size,
            partitions=partitions,
            replication_factor=3,
            producers=producers,
            in_flight=in_flight,
            throughput=throughput,
        )
        probe = _produce_spec("x", **kw)
        bar = _progress_bar(quiet or as_json)
        summaries: dict[str, dict[str, Any]] = {}
        with ExitStack() as stack:
            if bar is not None:
                stack.enter_context(bar)
            with ExitStack() as lr_stack:
                addresses = _addresses(bootstrap, lr_stack)

                async def lr_run(cb: Callable[[int], None] | None, run: int) -> BenchResult:
                    return await run_produce(
                        addresses,
                        _produce_spec(_topic(None, run), **kw),
                        client=client,
                        progress=cb,
                    )

                summaries["liferaft"] = _summary(
                    _run_many("liferaft", runs, probe.total_records, lr_run, bar)
                )
            with nats_cluster() as nats:

                async def nats_run(cb: Callable[[int], None] | None, run: int) -> BenchResult:
                    spec = _produce_spec(_topic(None, run), **kw)
                    return await run_nats_produce(nats.servers, spec, progress=cb)

                summaries["nats"] = _summary(
                    _run_many("nats", runs, probe.total_records, nats_run, bar)
                )
        _emit("produce, liferaft vs NATS JetStream (R3)", summaries, as_json)


# -- liferaft bench e2e ------------------------------------------------------------------------
@app.command("e2e")
def e2e(
    bootstrap: BootstrapOpt = None,
    topic: TopicOpt = None,
    rate: Annotated[float, typer.Option("--rate", help="Records per second.")] = 1000.0,
    duration: Annotated[float, typer.Option("--duration", help="Seconds per run.")] = 15.0,
    record_size: Annotated[
        int, typer.Option("--record-size", help="Bytes per record value (>= 8).")
    ] = 100,
    partitions: PartitionsOpt = 3,
    replication_factor: RfOpt = 3,
    linger_ms: Annotated[int, typer.Option("--linger-ms", help="The producer's linger.")] = 1,
    fetch_max_wait_ms: Annotated[
        int, typer.Option("--fetch-max-wait-ms", help="The consumer's fetch long-poll.")
    ] = 500,
    runs: RunsOpt = 1,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    use_grpc: GrpcOpt = False,
) -> None:
    """End to end at a fixed rate: the Python producer (acks=all) and a consumer assigned to
    every partition, in one process; latency is the time the consumer sees a record minus the
    send time in the record."""
    from liferaft.bench.e2e import E2ESpec, run_e2e

    with _errors():

        def spec(run: int) -> E2ESpec:
            return E2ESpec(
                topic=_topic(topic, run),
                rate=rate,
                duration_s=duration,
                record_size=record_size,
                partitions=partitions,
                replication_factor=replication_factor,
                linger_ms=linger_ms,
                fetch_max_wait_ms=fetch_max_wait_ms,
            )

        probe = spec(0)
        bar = _progress_bar(quiet or as_json)
        with ExitStack() as stack:
            if bar is not None:
                stack.enter_context(bar)
            addresses = _addresses(bootstrap, stack)

            async def lr_run(cb: Callable[[int], None] | None, run: int) -> BenchResult:
                return await run_e2e(
                    addresses, spec(run), progress=cb, stream_transport=not use_grpc
                )

            results = _run_many("liferaft e2e", runs, probe.total_records, lr_run, bar)
        _emit("end to end (producer -> consumer)", {"liferaft": _summary(results)}, as_json)


# -- liferaft bench partitions -----------------------------------------------------------------
def _target(value: float | None, limit: float, unit: str) -> str:
    if value is None:
        return f"< {limit:g}{unit}"
    verdict = "[green]ok[/]" if value < limit else "[red]over[/]"
    return f"< {limit:g}{unit} {verdict}"


def _print_scale(r: ScaleResult) -> None:
    from liferaft.bench.scale import TARGET_IDLE_CPU_PCT, TARGET_REJOIN_S

    d = r.to_dict()
    table = Table(
        title="partitions: idle cost and restart (targets are for 1,000)", title_justify="left"
    )
    table.add_column("")
    table.add_column("measured", justify="right")
    table.add_column("target", justify="left")
    table.add_row("partitions (RF 3)", _fmt(r.partitions), "")
    table.add_row("ready (full ISRs)", _fmt(d["ready_s"], " s"), "")
    for node_id, pct in sorted(r.idle_cpu_pct.items()):
        table.add_row(
            f"idle CPU node {node_id}",
            _fmt(round(pct, 2), " %"),
            _target(pct, TARGET_IDLE_CPU_PCT, " %"),
        )
    table.add_row("idle CPU median", _fmt(d["idle_cpu_pct_median"], " %"), "")
    table.add_row("incomplete at restart", _fmt(r.incomplete_at_restart), "")
    rejoin = d["rejoin_s"]
    table.add_row(
        f"rejoin node {r.settings['victim']} (all ISRs)",
        _fmt(rejoin, " s"),
        _target(rejoin, TARGET_REJOIN_S, " s") if rejoin is not None else "[red]timed out[/]",
    )

    def counts(c: dict[int, int]) -> str:
        return " / ".join(f"n{n}: {k}" for n, k in sorted(c.items())) or "-"

    table.add_row("leaders after rejoin", counts(r.leaders_after_rejoin), "")
    table.add_row(f"leaders after {r.settings['balance_s']:g} s", counts(r.leaders_balanced), "")
    console.print(table)
    skip = ("topic", "nodes", "replication_factor")
    settings = ", ".join(f"{k}={v}" for k, v in r.settings.items() if k not in skip)
    console.print(f"[dim]CPU is percent of one core; {settings}[/]")


@app.command("partitions")
def partitions_bench(
    partitions: Annotated[
        int, typer.Option("--partitions", help="Partitions of the topic (RF 3).")
    ] = 1000,
    settle_seconds: Annotated[
        float, typer.Option("--settle-seconds", help="Quiet time before sampling idle CPU.")
    ] = 5.0,
    idle_seconds: Annotated[
        float, typer.Option("--idle-seconds", help="How long idle CPU is sampled.")
    ] = 10.0,
    victim: Annotated[int, typer.Option("--victim", help="The node to kill and restart.")] = 3,
    down_seconds: Annotated[
        float, typer.Option("--down-seconds", help="How long the victim stays down.")
    ] = 3.0,
    balance_seconds: Annotated[
        float,
        typer.Option(
            "--balance-seconds", help="After the rejoin: wait before counting leaders again."
        ),
    ] = 10.0,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for readiness, and for the rejoin.")
    ] = 120.0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """On a fresh local three-node cluster: create N partitions (RF 3) and time until all have
    full ISRs, sample each node's idle CPU, then kill -9 a node, restart it and time until it
    is back in every ISR, and count leaders per node."""
    from liferaft.bench.clusters import liferaft_cluster
    from liferaft.bench.scale import ScaleSpec, run_scale

    with _errors():
        spec = ScaleSpec(
            partitions=partitions,
            settle_s=settle_seconds,
            idle_s=idle_seconds,
            victim=victim,
            down_s=down_seconds,
            balance_s=balance_seconds,
            timeout_s=timeout,
        )
        with ExitStack() as stack:
            note: Callable[[str], None] | None = None
            if not (quiet or as_json):
                status = stack.enter_context(
                    err_console.status("starting a local three-node liferaft cluster...")
                )
                note = status.update
            dev = stack.enter_context(liferaft_cluster(spec.nodes))
            result = asyncio.run(run_scale(dev, spec, note))
        if as_json:
            sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        else:
            _print_scale(result)
        if result.error:
            raise _fail(result.error)
