"""`liferaft bench`: produce and consume workloads, measured, against liferaft or NATS JetStream.

    workload.py          the workloads as values (ProduceSpec, ConsumeSpec) and the pacer
    target_liferaft.py   running them against a liferaft cluster (raw wire or the Python client)
    target_nats.py       running them against NATS JetStream (nats-py)
    clusters.py          throw-away local three-node clusters of either
    stats.py             what a run measured: records/s, MB/s, latency percentiles

The command line is liferaft/cli/bench.py; the README's "Benchmarks" section shows how to use it.
"""

from liferaft.bench.stats import BenchResult, LatencyRecorder, median_of
from liferaft.bench.workload import ConsumeSpec, ProduceSpec

__all__ = ["BenchResult", "ConsumeSpec", "LatencyRecorder", "ProduceSpec", "median_of"]
