"""HDR latency statistics: percentiles as LoadGen computes them, errors kept, plots' points."""

from __future__ import annotations

import math
import random

import pytest

from edgeinfer.bench.stats import LatencyRecorder, decode_hdr, summarize_ns


def loadgen_percentile(values_ns: list[int], percentile: float) -> float:
    ordered = sorted(values_ns)
    return ordered[min(math.floor(len(ordered) * percentile / 100), len(ordered) - 1)] / 1e6


def test_percentiles_follow_loadgen_rank_rule_within_hdr_precision() -> None:
    rng = random.Random(7)
    values = [int(rng.lognormvariate(16.0, 0.6)) for _ in range(5000)]
    summary = summarize_ns(values)
    for p in (50.0, 90.0, 95.0, 99.0, 99.9):
        exact = loadgen_percentile(values, p)
        assert summary.percentile_ms(p) == pytest.approx(exact, rel=2e-3), p
    assert summary.count == 5000
    assert summary.min_ms == min(values) / 1e6
    assert summary.max_ms == max(values) / 1e6
    assert summary.mean_ms == pytest.approx(sum(values) / len(values) / 1e6)


def test_p99_of_a_hundred_is_the_maximum_as_in_loadgen() -> None:
    values = [1_000_000 * (i + 1) for i in range(100)]  # 1..100 ms
    summary = summarize_ns(values)
    assert summary.p99_ms == pytest.approx(100.0, rel=1e-3)
    assert summary.p50_ms == pytest.approx(51.0, rel=1e-3)


def test_errors_are_counted_and_stay_in_the_distribution() -> None:
    recorder = LatencyRecorder()
    for _ in range(9):
        recorder.record(2_000_000)
    recorder.record(500_000_000, error=True)
    summary = recorder.summary()
    assert (summary.count, summary.errors) == (10, 1)
    assert summary.max_ms == pytest.approx(500.0)


def test_cdf_and_histogram_describe_every_sample() -> None:
    rng = random.Random(1)
    summary = summarize_ns([int(rng.uniform(1e6, 50e6)) for _ in range(1000)])
    fractions = [f for _, f in summary.cdf]
    latencies = [v for v, _ in summary.cdf]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert latencies == sorted(latencies) and latencies[-1] == summary.max_ms
    assert sum(count for _, _, count in summary.histogram) == 1000
    assert summary.histogram[0][0] <= summary.min_ms * 1.01


def test_merge_and_encoded_histogram_round_trip() -> None:
    a, b = LatencyRecorder(), LatencyRecorder()
    for i in range(100):
        a.record(1_000_000 + i * 1000)
        b.record(9_000_000 + i * 1000, error=i == 0)
    a.merge(b)
    summary = a.summary()
    assert (summary.count, summary.errors) == (200, 1)
    decoded = decode_hdr(summary.hdr)
    assert decoded.get_total_count() == 200
    assert decoded.get_value_at_percentile(99) / 1e6 == pytest.approx(summary.p99_ms, rel=1e-3)


def test_empty_recorder_says_so() -> None:
    summary = LatencyRecorder().summary()
    assert summary.count == 0 and summary.p99_ms == 0.0 and summary.cdf == ()
    with pytest.raises(ValueError, match="percentile must be one of"):
        summary.percentile_ms(42.0)
