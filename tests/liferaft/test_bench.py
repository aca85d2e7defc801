"""The benchmark's arithmetic: percentiles by nearest rank, the pacer's batches, medians."""

from __future__ import annotations

import math

import pytest

from liferaft.bench.stats import MB, BenchResult, LatencyRecorder, median_of
from liferaft.bench.workload import Pacer, ProduceSpec, record_latencies_ms


def test_percentiles_are_order_statistics_over_records() -> None:
    rec = LatencyRecorder()
    for v in range(1, 101):  # 1..100 ms, one record each
        rec.add(float(v))
    assert rec.percentiles(0.5, 0.99, 0.999, 1.0) == [50.0, 99.0, 100.0, 100.0]
    assert len(rec) == 100


def test_a_batch_weighs_as_many_records_as_it_carries() -> None:
    rec = LatencyRecorder()
    rec.add(1.0, records=99)
    rec.add(1000.0, records=1)
    assert rec.percentiles(0.5, 0.99, 0.999) == [1.0, 1.0, 1000.0]
    assert rec.mean() == pytest.approx((99 + 1000) / 100)


def test_empty_recorder_has_no_percentiles() -> None:
    assert all(math.isnan(v) for v in LatencyRecorder().percentiles(0.5, 0.99))


def test_result_reports_mb_as_kafka_counts_them() -> None:
    r = BenchResult(system="x", workload="produce", records=1024, payload_bytes=MB, seconds=0.5)
    d = r.to_dict()
    assert d["mb_per_s"] == 2.0 and d["records_per_s"] == 2048.0
    assert d["p50_ms"] is None


def test_requests_a_workload_cannot_see_are_unknown_not_zero() -> None:
    r = BenchResult(
        system="x", workload="e2e", records=10, payload_bytes=10, seconds=1.0, requests=None
    )
    d = r.to_dict()
    assert d["requests"] is None and d["requests_per_s"] is None
    known = BenchResult(system="x", workload="produce", records=10, payload_bytes=10, seconds=2.0)
    assert known.to_dict()["requests_per_s"] == 0.0
    runs = [dict(d, settings={}), dict(d, settings={})]
    assert median_of(runs)["requests_per_s"] is None


def test_median_of_runs() -> None:
    runs = [{"records_per_s": v, "mb_per_s": v, "p50_ms": v, "settings": {}} for v in (3, 1, 2)]
    m = median_of(runs)
    assert m["records_per_s"] == 2 and m["runs"] == 3


def test_closed_loop_pacer_cuts_full_batches_then_a_remainder() -> None:
    p = Pacer(batch_records=100, total=250, deadline=None, rate=0, linger_s=0.005, start=0.0)
    sizes = []
    while (b := p.next()) is not None:
        sizes.append(b.records)
    assert sizes == [100, 100, 50]


def test_open_loop_pacer_closes_batches_on_linger() -> None:
    # 1000 records/s, linger 5 ms: a batch holds the 6 records that arrive within its linger
    # and closes 5 ms after its first; records keep their own arrival times.
    p = Pacer(batch_records=100, total=12, deadline=None, rate=1000.0, linger_s=0.005, start=10.0)
    b1, b2 = p.next(), p.next()
    assert b1 is not None and b2 is not None
    assert (b1.records, b2.records) == (6, 6)
    assert p.next() is None  # all 12 records handed out
    assert b1.ready_at == pytest.approx(10.005)
    assert b2.arrivals[0] == pytest.approx(10.006)  # type: ignore[index]
    lat = record_latencies_ms(b1, 10.010)
    assert isinstance(lat, list) and lat[0] == pytest.approx(10.0) and lat[-1] == pytest.approx(5.0)


def test_open_loop_pacer_fills_a_batch_before_linger_at_high_rates() -> None:
    p = Pacer(
        batch_records=10, total=None, deadline=11.0, rate=100_000.0, linger_s=0.005, start=10.0
    )
    b = p.next()
    assert b is not None and b.records == 10
    assert b.ready_at == pytest.approx(10.0 + 9 / 100_000)


def test_spec_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        ProduceSpec(records=10, duration_s=1.0)
    with pytest.raises(ValueError):
        ProduceSpec(acks=2)
    assert ProduceSpec(record_size=1024, batch_size=256 * 1024).batch_records == 256
    assert ProduceSpec(in_flight=8, batch_size=256 * 1024).records_in_flight == 2048
