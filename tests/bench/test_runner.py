"""One configuration measured in process, end to end, on the real engine (Null and ONNX Runtime)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeinfer.bench.loading import ConfigurationSpec
from edgeinfer.bench.report import ConfigurationResult
from edgeinfer.bench.runner import RunOptions, offline_rate, run_configuration
from edgeinfer.bench.samples import Sample
from edgeinfer.bench.scenarios import Scenario, ScenarioSettings
from tests.bench.conftest import quick_options as options


def test_every_figure_is_there(null_result: ConfigurationResult, bench_samples: list[Sample]) -> None:
    r = null_result
    assert r.status == "ok", r.message
    assert r.runtime_resolved == "null" and r.runtime_version
    assert r.model_size_bytes and r.model_size_bytes > 1_000_000
    assert r.cold_start and r.cold_start.load_ms > 0 and r.cold_start.first_inference_ms > 0
    assert r.cold_start.process_start_to_first_prediction_ms is None  # in process: not measured
    assert r.cold_start.compiled_cache is None  # the Null runtime compiles nothing
    assert r.warmup and r.warmup.samples >= len(bench_samples)
    assert set(r.top1) == {s.name for s in bench_samples}
    assert [(s.scenario, s.batch_size) for s in r.scenarios] == [
        ("SingleStream", 1),
        ("Offline", 1),
        ("Offline", 4),
    ]
    assert r.model_only and r.model_only.latency.count >= 10
    overhead = r.engine_overhead
    assert overhead is not None and overhead.e2e_p90_ms == r.scenarios[0].latency.p90_ms
    assert 0.5 < overhead.ratio_mean < 3.0  # decode + preprocess dominate on the Null runtime
    paired = r.engine_overhead_paired
    assert paired is not None and paired.method == "paired" and overhead.method == "single-stream"
    assert 0.5 < paired.ratio_mean < 3.0
    assert r.resources and r.resources.rss_peak_mb > 10 and r.resources.cpu_ms > 0
    assert r.timeline and len(r.timeline.t_s) >= 5
    assert [name for _, name in r.timeline.marks][:2] == ["load", "warm-up"]


def test_scenario_figures_are_consistent(null_result: ConfigurationResult) -> None:
    for s in null_result.scenarios:
        assert s.errors == 0
        assert s.latency.count == s.samples
        assert s.samples_per_s == pytest.approx(s.samples / s.duration_s)
        assert s.cpu_ms_per_inference and s.cpu_ms_per_inference > 0
        assert s.resources and s.resources.duration_s > 0
        stage_sum = sum(s.stages[name].mean_ms for name in ("decode", "preprocess", "infer", "postprocess"))
        assert stage_sum <= s.latency.mean_ms * 1.05  # the stages fit inside the end-to-end latency
        assert s.loadgen is not None and s.loadgen.scenario == s.scenario


def test_openvinos_timed_load_imports_what_it_compiled_before(
    built_home: Path, bench_samples: list[Sample]
) -> None:
    pytest.importorskip("openvino")
    compiled = built_home / "compiled" / "openvino"
    for blob in compiled.glob("*.blob"):  # whatever earlier tests left: this run compiles afresh
        blob.unlink()
    spec = ConfigurationSpec("mobilenet_v2", "openvino", "fp32", 1)
    result = run_configuration(spec, bench_samples[:2], options(built_home, Scenario.SINGLE_STREAM))
    assert result.status == "ok", result.message
    assert result.cold_start is not None and result.cold_start.compiled_cache == "loaded"
    assert list(compiled.glob("*.blob"))


def test_a_missing_runtime_is_reported_not_raised(built_home: Path, bench_samples: list[Sample]) -> None:
    # the Keras baseline rebuilds MobileNetV2 only (and may not be installed at all)
    spec = ConfigurationSpec("efficientnet_lite0", "keras", "fp32", 1)
    result = run_configuration(spec, bench_samples, options(built_home, Scenario.SINGLE_STREAM))
    assert result.status in ("unavailable", "failed")
    assert result.message and result.scenarios == ()
    assert "mobilenet_v2 only" in result.message or "not installed" in result.message


def test_a_missing_model_is_unavailable(built_home: Path, bench_samples: list[Sample]) -> None:
    spec = ConfigurationSpec("no_such_model", "onnxruntime", "fp32", 1)
    result = run_configuration(spec, bench_samples, options(built_home, Scenario.SINGLE_STREAM))
    assert result.status == "unavailable" and "no_such_model" in result.message


@pytest.mark.slow
def test_onnxruntime_end_to_end_is_model_time_plus_decode(
    built_home: Path, bench_samples: list[Sample]
) -> None:
    spec = ConfigurationSpec("mobilenet_v2", "onnxruntime", "fp32", 1)
    result = run_configuration(spec, bench_samples, options(built_home, Scenario.SINGLE_STREAM))
    assert result.status == "ok", result.message
    (ss,) = result.scenarios
    assert result.model_only is not None
    infer = ss.stages["infer"].mean_ms
    assert infer > 0.5  # a real network, unlike the Null runtime
    assert ss.latency.mean_ms >= infer + ss.stages["decode"].mean_ms
    assert set(result.top1.values()) - {0}  # real predictions, not the Null runtime's zeros


def test_offline_rate_errs_high_so_the_run_lasts_its_minimum() -> None:
    # one slow batch (a busy moment) must not shrink LoadGen's Offline query
    assert offline_rate(4, [100_000_000, 40_000_000, 50_000_000], single_rate=50.0) == pytest.approx(100.0)
    # batching rarely slows a sample: the single-sample rate is the floor
    assert offline_rate(8, [1_000_000_000], single_rate=50.0) == 50.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"warmup_s": float("nan")}, "warmup_s must be a finite number"),
        ({"model_only_s": float("inf")}, "model_only_s must be a finite number"),
        ({"top_k": 0}, "top_k must be >= 1"),
        ({"sample_interval_ms": 0}, "sample_interval_ms must be >= 10"),
    ],
)
def test_bad_run_options_are_refused_on_construction(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunOptions(scenarios=(ScenarioSettings(Scenario.SINGLE_STREAM),), **changes)  # type: ignore[arg-type]


def test_the_report_names_the_repository_used_also_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeinfer.bench import session

    monkeypatch.setenv("EDGEINFER_HOME", str(tmp_path / "home"))
    options = RunOptions(scenarios=(ScenarioSettings(Scenario.SINGLE_STREAM),))
    settings = session._settings(session.BenchRequest(options))
    assert settings["repository"] == str(tmp_path / "home")
