"""Benchmark one configuration: load, first prediction, warm-up, each scenario, model-only, resources.

The order is fixed and stated in the report: build the model if it is missing (not timed), load it
(timed: cold start), classify one sample (timed: first inference), warm up on every sample (excluded
from all figures; it also records each sample's top-1 so configurations can be checked against each
other), run each scenario through LoadGen, then time the runtime call alone.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeinfer.bench.harness import HarnessRun, LoadGenHarness, Measurements, Pipeline, WorkItem
from edgeinfer.bench.loading import ConfigurationSpec, LoadedEngine, ensure_built, load_engine, settle
from edgeinfer.bench.paired import measure_paired
from edgeinfer.bench.report import (
    ColdStart,
    ConfigurationResult,
    ScenarioResult,
    Timeline,
    Warmup,
)
from edgeinfer.bench.resources import MIN_INTERVAL_MS, ResourceSampler, Window
from edgeinfer.bench.results import engine_overhead, scenario_result
from edgeinfer.bench.samples import Sample
from edgeinfer.bench.scenarios import Expectations, Scenario, ScenarioSettings
from edgeinfer.bench.server_search import search_peak_qps
from edgeinfer.bench.versions import runtime_version
from edgeinfer.errors import ModelNotFound, RuntimeUnavailable

Progress = Callable[[str], None]
BATCH_TIMINGS = 3  # batches timed at each Offline batch size; the fastest sizes LoadGen's query


@dataclass(frozen=True)
class RunOptions:
    """How to measure every configuration of a run (the same for all, so they compare)."""

    scenarios: tuple[ScenarioSettings, ...]
    batch_sizes: tuple[int, ...] = (1,)
    top_k: int = 5
    warmup_s: float = 1.0
    model_only_s: float = 3.0
    sample_interval_ms: int = 100
    log_root: Path | None = None
    repository: Path | None = None

    def __post_init__(self) -> None:
        if not self.scenarios:
            raise ValueError("choose at least one scenario")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        for name in ("warmup_s", "model_only_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.sample_interval_ms < MIN_INTERVAL_MS:
            raise ValueError(
                f"sample_interval_ms must be >= {MIN_INTERVAL_MS}, got {self.sample_interval_ms}"
            )


@dataclass
class _State:
    sampler: ResourceSampler
    progress: Progress
    window: Window
    scenarios: list[ScenarioResult] = field(default_factory=list)


def run_configuration(
    spec: ConfigurationSpec,
    samples: Sequence[Sample],
    options: RunOptions,
    progress: Progress | None = None,
    loaded: LoadedEngine | None = None,
) -> ConfigurationResult:
    """Measure one configuration; a runtime that is missing or fails gives a result that says so."""
    say = progress or (lambda _: None)
    sampler = ResourceSampler(options.sample_interval_ms)
    sampler.start()
    window = sampler.begin()
    try:
        if loaded is None:
            say("loading")
            sampler.mark("load")
            ensure_built(spec.model, spec.precision, options.repository)
            settle(spec, options.repository)
            loaded = load_engine(spec, options.repository, samples[0].data)
        return _measure(spec, samples, options, loaded, _State(sampler, say, window))
    except (RuntimeUnavailable, ModelNotFound) as exc:
        return not_run(spec, "unavailable", str(exc))
    except Exception as exc:  # one configuration's failure is reported; the others still run
        return not_run(spec, "failed", f"{type(exc).__name__}: {exc}")
    finally:
        sampler.stop()
        if loaded is not None:
            loaded.engine.close()


def _measure(
    spec: ConfigurationSpec,
    samples: Sequence[Sample],
    options: RunOptions,
    loaded: LoadedEngine,
    state: _State,
) -> ConfigurationResult:
    engine = loaded.engine
    pipeline = Pipeline(engine, samples, options.top_k)
    state.progress("warm-up")
    state.sampler.mark("warm-up")
    warmup, top1, expect = _warm_up(pipeline, options)
    with tempfile.TemporaryDirectory(prefix="edgeinfer-loadgen-") as tmp:
        log_root = (options.log_root or Path(tmp)) / _safe(spec.label)
        for settings in options.scenarios:
            for batch_size in _batch_sizes(settings, options):
                rate = expect.get(batch_size, expect[1])
                _run_scenario(pipeline, settings.with_(batch_size=batch_size), rate, log_root, state)
    state.progress("model-only")
    state.sampler.mark("model-only")
    paired = measure_paired(engine, samples, options.model_only_s)
    model_only = paired.model_only if paired else None
    state.sampler.mark("end")
    resources = state.sampler.summarize(state.window)
    stored = getattr(engine, "stored", None)
    resolved = getattr(engine.runtime, "name", spec.runtime)
    # the file the runtime runs: LiteRT runs an FP32 ONNX build's TFLite twin
    model_path = getattr(engine.runtime, "model_path", None) or (stored.path if stored is not None else None)
    return ConfigurationResult(
        label=spec.label,
        status="ok",
        model=spec.model,
        runtime=spec.runtime,
        precision=spec.precision,
        threads=spec.threads,
        runtime_resolved=resolved,
        runtime_version=runtime_version(resolved),
        model_file=str(model_path) if model_path is not None else None,
        model_size_bytes=model_path.stat().st_size if model_path is not None else None,
        cold_start=ColdStart(
            load_ms=loaded.load_ns / 1e6,
            first_inference_ms=loaded.first_inference_ns / 1e6,
            process_start_to_first_prediction_ms=(
                loaded.process_start_to_first_prediction_ns / 1e6
                if loaded.process_start_to_first_prediction_ns is not None
                else None
            ),
            compiled_cache=loaded.compiled_cache,
        ),
        warmup=warmup,
        scenarios=tuple(state.scenarios),
        model_only=model_only,
        engine_overhead=engine_overhead(
            next((s for s in state.scenarios if s.scenario == "SingleStream"), None), model_only
        ),
        engine_overhead_paired=paired.overhead if paired else None,
        resources=resources,
        timeline=_timeline(state.sampler),
        top1={samples[i].name: cls for i, cls in sorted(top1.items())},
    )


def _warm_up(
    pipeline: Pipeline, options: RunOptions
) -> tuple[Warmup, dict[int, int], dict[int, Expectations]]:
    """Every sample once (recording top-1), then more until ``warmup_s``; nothing here is reported.

    Also measures what LoadGen needs to size its queries: the single-sample latency, and the rate
    at each batch size (see :func:`offline_rate`; the first pass allocates the batch's buffers).
    """
    measurements = Measurements()
    count = len(pipeline.samples)
    started = time.perf_counter_ns()
    served = 0
    while served < count or time.perf_counter_ns() - started < options.warmup_s * 1e9:
        index = served % count
        pipeline.serve([WorkItem(served, index, 0)], measurements)
        served += 1
    elapsed_ns = time.perf_counter_ns() - started
    if measurements.errors == served:
        raise RuntimeError(f"every warm-up sample failed: {'; '.join(measurements.error_messages)}")
    per_sample_ns = max(elapsed_ns // served, 1)
    expect = {1: Expectations(sample_latency_ns=per_sample_ns, samples_per_s=1e9 / per_sample_ns)}
    for size in sorted(set(options.batch_sizes) - {1}):
        items = [WorkItem(i, i % count, 0) for i in range(size)]
        pipeline.serve(items, measurements)
        batch_ns = []
        for _ in range(BATCH_TIMINGS):
            t0 = time.perf_counter_ns()
            pipeline.serve(items, measurements)
            batch_ns.append(time.perf_counter_ns() - t0)
        rate = offline_rate(size, batch_ns, expect[1].samples_per_s)
        expect[size] = Expectations(sample_latency_ns=per_sample_ns, samples_per_s=rate)
        served += (1 + BATCH_TIMINGS) * size
    total_s = (time.perf_counter_ns() - started) / 1e9
    return Warmup(served, total_s, per_sample_ns / 1e6), dict(measurements.top1), expect


def offline_rate(size: int, batch_ns: Sequence[int], single_rate: float) -> float:
    """Samples/s to expect at batch ``size``, erring high: LoadGen sizes its one Offline query from it.

    Too low a rate makes the query too small and the run shorter than its minimum duration (LoadGen
    then calls it INVALID), so take the fastest of the timed batches (one slow batch on a busy
    machine must not set it), and never less than the single-sample rate (batching rarely slows).
    """
    fastest = size * 1e9 / max(min(batch_ns), 1)
    return max(fastest, single_rate)


def _batch_sizes(settings: ScenarioSettings, options: RunOptions) -> tuple[int, ...]:
    if settings.scenario in (Scenario.OFFLINE, Scenario.SERVER):
        return options.batch_sizes if settings.scenario is Scenario.OFFLINE else (max(options.batch_sizes),)
    return (1,)


def _run_scenario(
    pipeline: Pipeline, settings: ScenarioSettings, expect: Expectations, log_root: Path, state: _State
) -> None:
    name = settings.scenario.loadgen_name
    tag = f"{name}" + (f"-b{settings.batch_size}" if settings.scenario is Scenario.OFFLINE else "")
    state.progress(tag)
    if settings.scenario is not Scenario.SERVER:
        state.sampler.mark(tag)
        window = state.sampler.begin()
        run = LoadGenHarness(pipeline, settings, log_root / tag).run(expect)
        state.scenarios.append(scenario_result(settings, run, state.sampler.summarize(window)))
        return
    windows: dict[float, Any] = {}
    resources: dict[float, Any] = {}

    def run_at(qps: float) -> HarnessRun:
        state.progress(f"{tag} @ {qps:.1f} QPS")
        state.sampler.mark(f"{tag} @ {qps:.1f} QPS")
        windows[qps] = state.sampler.begin()
        run = LoadGenHarness(pipeline, settings, log_root / f"{tag}-{qps:.1f}qps").run(expect, qps)
        resources[qps] = state.sampler.summarize(windows[qps])
        return run

    capacity = _capacity(state.scenarios, expect)
    outcome = search_peak_qps(settings, capacity, run_at)
    result = scenario_result(
        settings, outcome.best_run, resources[outcome.best_target_qps], target_qps=outcome.best_qps
    )
    state.scenarios.append(_with_trials(result, outcome.trials))


def _capacity(done: list[ScenarioResult], expect: Expectations) -> float:
    offline = [r.samples_per_s for r in done if r.scenario == "Offline" and r.samples_per_s > 0]
    return max(offline) if offline else expect.samples_per_s


def _with_trials(result: ScenarioResult, trials: tuple[Any, ...]) -> ScenarioResult:
    return replace(result, server_search=trials)


def _timeline(sampler: ResourceSampler) -> Timeline:
    samples, marks = sampler.timeline()
    return Timeline(
        interval_ms=sampler.interval_ms,
        t_s=tuple(round(s.t_s, 3) for s in samples),
        process_cpu_percent=tuple(round(s.process_cpu_percent, 1) for s in samples),
        rss_mb=tuple(round(s.rss_mb, 1) for s in samples),
        system_cpu_percent_per_core=tuple(s.system_cpu_percent_per_core for s in samples),
        marks=tuple((round(m.t_s, 3), m.name) for m in marks),
    )


def not_run(spec: ConfigurationSpec, status: str, message: str) -> ConfigurationResult:
    return ConfigurationResult(
        label=spec.label,
        status=status,
        model=spec.model,
        runtime=spec.runtime,
        precision=spec.precision,
        threads=spec.threads,
        message=message,
    )


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
