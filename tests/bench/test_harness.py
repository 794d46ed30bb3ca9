"""LoadGen drives the real engine stages (Null runtime: real decode and preprocessing) in every scenario."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest

from edgeinfer.bench.harness import (
    STAGES,
    LoadGenHarness,
    Measurements,
    Pipeline,
    WorkItem,
    read_loadgen_summary,
)
from edgeinfer.bench.results import scenario_result
from edgeinfer.bench.samples import Sample
from edgeinfer.bench.scenarios import Expectations, Scenario, ScenarioSettings
from edgeinfer.engine import Engine

EXPECT = Expectations(sample_latency_ns=5_000_000, samples_per_s=200.0)


def quick(scenario: Scenario, **changes: object) -> ScenarioSettings:
    return ScenarioSettings(scenario, min_duration_s=0.3, min_query_count=12).with_(**changes)


def test_pipeline_times_every_stage_and_records_top1(
    null_engine: Engine, bench_samples: list[Sample]
) -> None:
    measurements = Measurements()
    failed = Pipeline(null_engine, bench_samples).serve([WorkItem(7, 0, 0), WorkItem(8, 1, 0)], measurements)
    assert failed == set()
    assert measurements.infer_call.count == 1
    for stage in STAGES:
        assert measurements.stages[stage].count == 2, stage
    assert set(measurements.top1) == {0, 1}


def test_shared_preparation_gives_the_same_answers_and_counts_a_bad_sample_alone(
    null_engine: Engine, bench_samples: list[Sample]
) -> None:
    jpeg = next(s for s in bench_samples if s.format == "jpeg")
    samples = [*bench_samples[:6], Sample("truncated.jpg", jpeg.data[:300])]
    items = [WorkItem(100 + i, i, 0) for i in range(len(samples))]
    alone, shared = Measurements(), Measurements()
    assert Pipeline(null_engine, samples).serve(items, alone) == {106}
    assert Pipeline(null_engine, samples).serve(items, shared, shared=True) == {106}
    assert shared.top1 == alone.top1 and len(shared.top1) == 6
    assert shared.errors == alone.errors == 1
    assert shared.error_messages == alone.error_messages
    for stage in ("decode", "preprocess"):
        assert shared.stages[stage].count == 6, stage


def test_a_multistream_querys_samples_are_prepared_on_two_threads(
    null_engine: Engine, bench_samples: list[Sample], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[str] = set()
    decode = null_engine.decode

    def recording(source: bytes) -> np.ndarray:
        threads.add(threading.current_thread().name)
        return decode(source)

    monkeypatch.setattr(null_engine, "decode", recording)
    settings = quick(Scenario.MULTI_STREAM)
    run = LoadGenHarness(Pipeline(null_engine, bench_samples), settings, tmp_path).run(EXPECT)
    assert run.measurements.errors == 0
    assert any(name.startswith("edgeinfer-helper") for name in threads)


@pytest.mark.parametrize("scenario", list(Scenario))
def test_every_issued_query_completes(
    null_engine: Engine, bench_samples: list[Sample], scenario: Scenario, tmp_path: Path
) -> None:
    settings = quick(scenario, batch_size=4, server_target_qps=150.0)
    run = LoadGenHarness(Pipeline(null_engine, bench_samples), settings, tmp_path).run(EXPECT, 150.0)
    m = run.measurements
    assert m.errors == 0
    assert m.samples >= 12 and m.queries >= 1
    assert m.latency.count == m.samples
    assert m.stages["decode"].count == m.samples
    expected_queries = (
        1 if scenario is Scenario.OFFLINE else m.samples // (8 if scenario is Scenario.MULTI_STREAM else 1)
    )
    assert m.queries == expected_queries
    assert run.loadgen_summary["Scenario"] == scenario.loadgen_name
    assert (tmp_path / "mlperf_log_summary.txt").is_file()
    assert run.wall_s >= 0.3


def test_a_broken_sample_is_counted_and_the_run_goes_on(
    null_engine: Engine, bench_samples: list[Sample], tmp_path: Path
) -> None:
    jpeg = next(s for s in bench_samples if s.format == "jpeg")
    samples = [*bench_samples[:5], Sample("truncated.jpg", jpeg.data[:300])]
    settings = quick(Scenario.SINGLE_STREAM, min_query_count=60)
    run = LoadGenHarness(Pipeline(null_engine, samples), settings, tmp_path).run(EXPECT)
    m = run.measurements
    assert 0 < m.errors < m.samples
    assert m.latency.count == m.samples  # failures stay in the latency statistics
    assert m.latency.summary().errors == m.errors
    assert any("truncated" in msg.lower() or "image" in msg.lower() for msg in m.error_messages)
    result = scenario_result(settings, run, None)
    assert result.errors == m.errors and result.error_messages


def test_scenario_result_reads_loadgens_verdict(
    null_engine: Engine, bench_samples: list[Sample], tmp_path: Path
) -> None:
    settings = quick(Scenario.SINGLE_STREAM)
    run = LoadGenHarness(Pipeline(null_engine, bench_samples), settings, tmp_path).run(EXPECT)
    result = scenario_result(settings, run, None)
    assert result.loadgen is not None
    assert result.loadgen.scenario == "SingleStream"
    assert result.loadgen.metric.startswith("90")
    assert result.loadgen.metric_value is not None
    # LoadGen's p90 (from its own timestamps) and ours agree to within the HDR resolution plus a little.
    assert result.loadgen.metric_value == pytest.approx(result.latency.p90_ms, rel=0.05, abs=0.3)
    assert set(result.loadgen.constraints) >= {"min_duration", "min_queries"}
    assert result.samples_per_s > 0 and result.duration_s > 0


def test_loadgen_says_why_a_short_multistream_run_is_invalid(
    null_engine: Engine, bench_samples: list[Sample], tmp_path: Path
) -> None:
    settings = quick(Scenario.MULTI_STREAM)  # far fewer queries than p99's early stopping needs
    run = LoadGenHarness(Pipeline(null_engine, bench_samples), settings, tmp_path).run(EXPECT)
    verdict = scenario_result(settings, run, None).loadgen
    assert verdict is not None and not verdict.valid
    assert verdict.constraints["early_stopping"] is False
    why = verdict.why_invalid()
    assert why.startswith("unmet: early stopping; ")
    assert re.search(r"Need to process at least \d+ queries for early stopping", why), why


def test_the_summarys_advice_lines_go_to_the_key_above_them(tmp_path: Path) -> None:
    (tmp_path / "mlperf_log_summary.txt").write_text(
        "Result is : INVALID\n"
        "  Early stopping satisfied: NO\n"
        "Recommendations:\n"
        "Early Stopping Result:\n"
        " * Only processed 169 queries.\n"
        " * Need to process at least 662 queries for early stopping.\n"
        "Per-query latency:  \n"
        "Min latency (ns)                : 39713871\n"
        "Test Parameters Used\n"
        " * not read: below the results\n"
    )
    fields = read_loadgen_summary(tmp_path)
    assert fields["Early Stopping Result"] == (
        "Only processed 169 queries. Need to process at least 662 queries for early stopping."
    )
    assert "Recommendations" not in fields and "Per-query latency" not in fields  # nothing under them
    assert fields["Min latency (ns)"] == "39713871" and fields["Result is"] == "INVALID"
