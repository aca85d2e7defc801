"""CPU per request of the clients' streams on the nodes' stream listeners against gRPC (issue 18).

    python -m tests.integration.bench_stream_cpu produce [--rounds 3] [--records 2000]
    python -m tests.integration.bench_stream_cpu e2e [--rounds 3] [--duration 10]
    python -m tests.integration.bench_stream_cpu produce --secure   # TLS + SCRAM to the nodes

One fresh bench cluster (`liferaft bench`'s own: three node processes, TLS between them), the
two transports alternating on it, `rounds` times each: `produce` is `liferaft bench produce
--batch-size 1024 --in-flight 1 --partitions 1` (the raw client, one request at a time), `e2e`
is `liferaft bench e2e` (Producer and Consumer, 1,000 records/s). Prints one JSON line per run:
p50 and p99, and the CPU per request (produce) or per record (e2e) of the client (this process,
every thread: gRPC's own included) and of each node (utime + stime from /proc). CPU per request
moves less with the machine's load than latency does, which is why this exists beside `liferaft
bench ... --grpc`. A measurement, not a test: nothing asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from liferaft.bench.clusters import liferaft_cluster
from liferaft.bench.e2e import E2ESpec, run_e2e
from liferaft.bench.target_liferaft import run_produce
from liferaft.bench.workload import ProduceSpec
from liferaft.cli._client import _client_config

TICK = os.sysconf("SC_CLK_TCK")


def node_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=("produce", "e2e"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=2000, help="produce: requests per run")
    parser.add_argument("--duration", type=float, default=10.0, help="e2e: seconds per run")
    parser.add_argument(
        "--secure", action="store_true", help="produce: as `bench produce --secure` (TLS, SCRAM)"
    )
    args = parser.parse_args()
    if args.secure and args.workload != "produce":
        parser.error("--secure is for produce")
    with liferaft_cluster(secure=args.secure) as dev:
        pids = {n: dev.node(n).pid for n in dev.nodes}
        bootstrap = dev.bootstrap.split(",")
        security = _client_config(str(dev.client_config)) if args.secure else None
        for r in range(args.rounds):
            for stream_transport in (True, False):
                topic = f"cpu-{r}-{'stream' if stream_transport else 'grpc'}"
                c0 = time.process_time()
                n0 = {n: node_cpu_s(p) for n, p in pids.items()}
                if args.workload == "produce":
                    spec = ProduceSpec(
                        topic=topic,
                        records=args.records,
                        batch_size=1024,
                        partitions=1,
                        in_flight=1,
                    )
                    result = asyncio.run(
                        run_produce(
                            bootstrap, spec, security=security, stream_transport=stream_transport
                        )
                    )
                    count = result.requests or result.records
                else:
                    e2e = E2ESpec(topic=topic, duration_s=args.duration)
                    result = asyncio.run(run_e2e(bootstrap, e2e, stream_transport=stream_transport))
                    count = result.records
                c1 = time.process_time()
                n1 = {n: node_cpu_s(p) for n, p in pids.items()}
                p50, p99 = result.latency.percentiles(0.5, 0.99)
                row = {
                    "transport": "stream" if stream_transport else "grpc",
                    "count": count,
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "client_cpu_ms": (c1 - c0) * 1e3 / count,
                    "nodes_cpu_ms": sorted(round((n1[n] - n0[n]) * 1e3 / count, 3) for n in pids),
                    "load": os.getloadavg()[0],
                }
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
