"""`liferaft bench` end to end, briefly: the commands run, print the JSON they promise, and the
NATS JetStream harness starts its cluster and measures it. Nothing is asserted about speed (CI
runs this on a shared machine); only that records flowed without errors.

The NATS part needs Debian's nats-server and the nats-py client; without them it is skipped
with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from liferaft.bench.clusters import NatsUnavailable, check_nats_client, nats_server_path
from tests.integration.conftest import MakeCluster

FIGURES = ("records_per_s", "requests_per_s", "mb_per_s", "p50_ms", "p99_ms", "p999_ms")


def _bench(*args: str, timeout: float = 180, before: list[str] | None = None) -> dict[str, object]:
    """`liferaft [before...] bench args... --json`, its JSON."""
    env = dict(os.environ, GRPC_VERBOSITY="ERROR")
    proc = subprocess.run(
        [sys.executable, "-m", "liferaft", *(before or []), "bench", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, f"bench {args} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check(result: dict[str, object]) -> None:
    for key in FIGURES:
        assert key in result, f"{key} missing from {result}"
    assert isinstance(result["records"], int) and result["records"] > 0
    assert result["errors"] == 0, result["settings"]


def _nats_or_skip() -> None:
    try:
        nats_server_path()
        check_nats_client()
    except NatsUnavailable as e:
        # CI installs NATS and sets this: there a skip would hide a break.
        if os.environ.get("LIFERAFT_REQUIRE_NATS") == "1":
            pytest.fail(str(e))
        pytest.skip(str(e))


def test_bench_produce_and_consume_against_a_cluster(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(3)
    b = ["--bootstrap", cluster.bootstrap]
    r = _bench("produce", *b, "--duration", "1", "--partitions", "2")
    _check(r)
    assert isinstance(r["requests"], int) and 0 < r["requests"] <= r["records"], r
    # Through the Python client, with a throughput cap (open loop, linger).
    r = _bench(
        "produce",
        *b,
        "--client",
        "producer",
        "--records",
        "600",
        "--throughput",
        "2000",
        "--batch-size",
        "65536",
    )
    _check(r)
    assert r["records"] == 600
    assert r["settings"]["transport"] == "stream", r  # type: ignore[index]
    # The same on gRPC (an A/B run is one flag).
    r = _bench("produce", *b, "--client", "producer", "--records", "300", "--grpc")
    _check(r)
    assert r["records"] == 300 and r["settings"]["transport"] == "grpc", r  # type: ignore[index]
    _check(_bench("consume", *b, "--records", "3000", "--runs", "2"))
    _check(_bench("consume", *b, "--records", "500", "--client", "consumer"))
    # End to end: every record the producer sent reaches the consumer, with a latency each.
    r = _bench("e2e", *b, "--rate", "200", "--duration", "2", "--partitions", "2")
    _check(r)
    settings = r["settings"]
    assert isinstance(settings, dict), r
    assert r["records"] == 400 and settings["acked"] == 400, r
    assert settings["transport"] == "stream", r
    assert settings["ack_p50_ms"] is not None and r["p50_ms"] is not None, r
    assert r["requests"] is None and r["requests_per_s"] is None, r  # unknown, not 0


def test_bench_with_confluent_kafka_on_the_kafka_listeners(make_cluster: MakeCluster) -> None:
    """`--client kafka`: librdkafka's idempotent producer and its consumer, through the nodes'
    Kafka listeners (found from the gRPC addresses by the port table)."""
    cluster = make_cluster(3)
    b = ["--bootstrap", cluster.bootstrap]
    r = _bench(
        "produce", *b, "--client", "kafka", "--records", "3000", "--partitions", "2",
        "--batch-size", "65536", "--runs", "2",
    )  # fmt: skip
    _check(r)
    settings = r["settings"]
    assert isinstance(settings, dict) and settings["client"] == "kafka", r
    assert settings["requests_counted"] is True, r
    assert r["records"] == 3000, r
    # 64 records per batch: at least 3000 / 64 Produce requests carried them.
    assert isinstance(r["requests"], int) and 3000 // 64 <= r["requests"] <= 3000, r
    assert isinstance(r["p50_ms"], float) and 0 < r["p50_ms"] <= r["p99_ms"], r  # type: ignore[operator]
    r = _bench("consume", *b, "--client", "kafka", "--records", "2000", "--partitions", "2")
    _check(r)
    assert r["records"] == 2000, r


def test_bench_on_a_secure_cluster(make_cluster: MakeCluster) -> None:
    """Against a cluster whose clients must log in (as `dev up --secure` starts one), the bench
    logs in with the CLI's client options (--client-config) through every client; without
    them it is refused with the cluster's reason. `--secure` starts such a cluster itself."""
    from liferaft.launcher import secure_args

    cluster = make_cluster(3, *secure_args(3))
    assert cluster.make_first_admin() is not None
    login = ["--client-config", str(cluster.client_config)]
    b = ["--bootstrap", cluster.bootstrap, "--records", "1500", "--partitions", "2"]
    for client in ("raw", "producer", "kafka"):
        r = _bench("produce", *b, "--client", client, "--batch-size", "65536", before=login)
        _check(r)
        assert r["records"] == 1500, r
        if client != "kafka":
            assert r["settings"]["security_protocol"] == "SASL_SSL", r  # type: ignore[index]
    for client in ("raw", "consumer", "kafka"):
        r = _bench(
            "consume", "--bootstrap", cluster.bootstrap, "--records", "1000", "--client", client,
            before=login,
        )  # fmt: skip
        _check(r)
        assert r["records"] == 1000, r
    env = dict(os.environ, GRPC_VERBOSITY="ERROR")
    refused = subprocess.run(
        [sys.executable, "-m", "liferaft", "bench", "produce", *b, "--json"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "no bootstrap node answered Metadata" in refused.stderr, refused.stderr
    r = _bench("produce", "--secure", "--records", "1000", "--partitions", "2")
    _check(r)
    assert r["settings"]["security_protocol"] == "SASL_SSL", r  # type: ignore[index]


def test_bench_compare_runs_liferaft_and_nats_side_by_side() -> None:
    _nats_or_skip()
    result = _bench("compare", "--duration", "1", "--runs", "1", timeout=300)
    _check(result["liferaft"])  # type: ignore[arg-type]
    _check(result["nats"])  # type: ignore[arg-type]
    assert result["ratio_mb_per_s"] is not None


def test_bench_consume_from_nats() -> None:
    _nats_or_skip()
    _check(_bench("consume", "--system", "nats", "--records", "2000"))


def test_bench_partitions_kills_restarts_and_reports() -> None:
    # Its own cluster (it kills and restarts a node), a handful of partitions, short phases.
    result = _bench(
        "partitions",
        "--partitions",
        "6",
        "--idle-seconds",
        "1",
        "--settle-seconds",
        "1",
        "--down-seconds",
        "1",
        "--balance-seconds",
        "1",
    )
    for key in (
        "partitions",
        "ready_s",
        "idle_cpu_pct",
        "idle_cpu_pct_median",
        "rejoin_s",
        "leaders_after_rejoin",
        "leaders_balanced",
        "settings",
    ):
        assert key in result, f"{key} missing from {result}"
    assert result["partitions"] == 6
    idle = result["idle_cpu_pct"]
    assert isinstance(idle, list) and len(idle) == 3
    rejoin = result["rejoin_s"]
    assert isinstance(rejoin, int | float) and rejoin > 0, result
    for key in ("leaders_after_rejoin", "leaders_balanced"):
        counts = result[key]
        assert isinstance(counts, dict) and set(counts) == {"1", "2", "3"}, result
        assert sum(counts.values()) == 6, result


def test_missing_nats_server_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    monkeypatch.setattr("liferaft.bench.clusters.Path.exists", lambda _self: False)
    with pytest.raises(NatsUnavailable, match="apt-get install nats-server"):
        nats_server_path()


def test_bad_bench_options_are_refused_before_anything_starts() -> None:
    from typer.testing import CliRunner

    from liferaft.cli.bench import app

    runner = CliRunner()
    r = runner.invoke(app, ["compare", "--client", "kafka"])
    assert r.exit_code == 2 and "--client must be raw or producer" in r.output, r.output
    r = runner.invoke(app, ["produce", "--client", "rdkafka", "--bootstrap", "127.0.0.1:1"])
    assert r.exit_code == 2 and "--client must be raw, producer or kafka" in r.output, r.output
    r = runner.invoke(app, ["consume", "--client", "producer", "--bootstrap", "127.0.0.1:1"])
    assert r.exit_code == 2 and "--client must be raw, consumer or kafka" in r.output, r.output
    r = runner.invoke(app, ["produce", "--secure", "--bootstrap", "127.0.0.1:1"])
    assert r.exit_code == 2 and "--secure starts a secure local cluster" in r.output, r.output
    assert "--client-config" in r.output, r.output
    r = runner.invoke(app, ["consume", "--secure", "--bootstrap", "127.0.0.1:1"])
    assert r.exit_code == 2 and "--secure starts a secure local cluster" in r.output, r.output
    r = runner.invoke(app, ["produce", "--secure", "--insecure-plaintext-between-nodes"])
    assert r.exit_code == 2 and "--secure starts a secure local cluster" in r.output, r.output
    r = runner.invoke(app, ["e2e", "--record-size", "4", "--bootstrap", "127.0.0.1:1"])
    assert r.exit_code == 2 and "record size must be >= 8" in r.output, r.output
