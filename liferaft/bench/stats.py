"""What a benchmark run measured: counts, time, and a latency distribution per record.

Latencies are kept exactly (one float per record, or one per batch with a weight when every
record of the batch waited the same), so p99.9 of a million records is a real order statistic,
not a histogram bucket's edge. Throughput counts payload bytes (the record values) the way
Kafka's perf-test tools do, with MB meaning 2**20 bytes.
"""

from __future__ import annotations

import math
import statistics
from array import array
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MB", "BenchResult", "LatencyRecorder", "median_of"]

MB = 1 << 20
"""A megabyte as kafka-producer-perf-test counts it."""


class LatencyRecorder:
    """Per-record latencies in milliseconds, each with a weight (records that share it)."""

    __slots__ = ("_lat", "_weight")

    def __init__(self) -> None:
        self._lat = array("d")
        self._weight = array("q")

    def add(self, latency_ms: float, records: int = 1) -> None:
        self._lat.append(latency_ms)
        self._weight.append(records)

    def add_many(self, latencies_ms: list[float]) -> None:
        self._lat.extend(latencies_ms)
        self._weight.extend([1] * len(latencies_ms))

    def merge(self, other: LatencyRecorder) -> None:
        """Take in every latency `other` recorded (one recorder per producer thread)."""
        self._lat.extend(other._lat)
        self._weight.extend(other._weight)

    def __len__(self) -> int:
        return int(sum(self._weight))

    def percentiles(self, *qs: float) -> list[float]:
        """The q-quantiles (0 < q <= 1) by the nearest-rank rule over records; NaN if empty."""
        total = sum(self._weight)
        if total == 0:
            return [math.nan for _ in qs]
        pairs = sorted(zip(self._lat, self._weight, strict=True))
        out: list[float] = []
        for q in qs:
            rank = max(1, math.ceil(q * total))  # the rank-th smallest record latency
            seen = 0
            value = pairs[-1][0]
            for lat, w in pairs:
                seen += w
                if seen >= rank:
                    value = lat
                    break
            out.append(value)
        return out

    def mean(self) -> float:
        total = sum(self._weight)
        if total == 0:
            return math.nan
        return sum(lat * w for lat, w in zip(self._lat, self._weight, strict=True)) / total

    def max(self) -> float:
        return max(self._lat) if self._lat else math.nan


@dataclass(slots=True, kw_only=True)
class BenchResult:
    """One run of one workload against one system."""

    system: str
    """"liferaft" or "nats"."""
    workload: str
    """"produce" or "consume"."""
    records: int
    payload_bytes: int
    seconds: float
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    errors: int = 0
    requests: int | None = 0
    """Requests that carried the records: produce requests (liferaft: one per batch; NATS: one
    publish per record) or fetches (pulls). The broker's cost is largely per request. None
    where the workload cannot see them (e2e: the producer batches as it will)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The workload's parameters, echoed so a figure always travels with how it was made."""

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def requests_per_s(self) -> float | None:
        if self.requests is None:
            return None
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.payload_bytes / MB / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        p50, p99, p999 = self.latency.percentiles(0.5, 0.99, 0.999)
        rps = self.requests_per_s
        return {
            "system": self.system,
            "workload": self.workload,
            "records": self.records,
            "bytes": self.payload_bytes,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.records_per_s, 1),
            "requests": self.requests,
            "requests_per_s": None if rps is None else round(rps, 1),
            "mb_per_s": round(self.mb_per_s, 2),
            "p50_ms": _ms(p50),
            "p99_ms": _ms(p99),
            "p999_ms": _ms(p999),
            "mean_ms": _ms(self.latency.mean()),
            "max_ms": _ms(self.latency.max()),
            "errors": self.errors,
            "settings": dict(self.settings),
        }


def _ms(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


def median_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over several runs' to_dict()s (the settings of the first)."""
    if not results:
        raise ValueError("no runs to take the median of")
    out = dict(results[0])
    for key in (
        "records_per_s",
        "requests_per_s",
        "mb_per_s",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "mean_ms",
        "max_ms",
    ):
        values = [r[key] for r in results if r.get(key) is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    out["runs"] = len(results)
    return out
