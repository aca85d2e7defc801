"""The move-under-load benchmark (tests/integration/bench_moves.py), briefly: a throttled move
there and back while acks=all traffic runs, on a four-node cluster. Nothing is asserted about
speed (CI runs on a shared machine); only that the benchmark runs its phases, that each move
ends on its target (the benchmark checks that itself and fails otherwise), and that no
produce request failed while the replica moved."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_the_move_benchmark_moves_a_replica_there_and_back_under_produce_traffic() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.bench_moves",
            "--size-mb",
            "8",
            "--throttle-mb-s",
            "4",
            "--max-rate",
            "2000",
            "--sets",
            "2",
            "--without-s",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, GRPC_VERBOSITY="ERROR"),
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["half_records_s"] == 1000
    assert out["errors"] == 0
    assert len(out["move_s"]) == 2 and all(s > 0 for s in out["move_s"])
    assert len(out["load_averages"]) == 5  # without, with, without, with, without
    # Each node's CPU over each phase: every node is busy under acks=all traffic (RF 3 of 4).
    assert len(out["cores"]) == 5
    assert all(sorted(c) == ["1", "2", "3", "4"] and min(c.values()) > 0 for c in out["cores"])
    for key in ("without_p50_ms", "without_p99_ms", "with_p50_ms", "with_p99_ms"):
        assert out[key] > 0, out
