"""Turn a harness run (our timings + LoadGen's summary + resource use) into report records."""

from __future__ import annotations

import re

from edgeinfer.bench.harness import HarnessRun
from edgeinfer.bench.report import (
    ConfigurationResult,
    EngineOverhead,
    LoadGenResult,
    ModelOnly,
    ScenarioResult,
)
from edgeinfer.bench.resources import ResourceSummary
from edgeinfer.bench.scenarios import Scenario, ScenarioSettings
from edgeinfer.bench.stats import LatencySummary

_PERCENTILE_KEY = re.compile(r"^\d+(\.\d+)?th percentile latency \(ns\)$")
_CONSTRAINTS = {
    "Min duration satisfied": "min_duration",
    "Min queries satisfied": "min_queries",
    "Early stopping satisfied": "early_stopping",
    "Performance constraints satisfied": "latency_bound",
}


def loadgen_result(scenario: Scenario, run: HarnessRun) -> LoadGenResult | None:
    """LoadGen's verdict and headline metric, or None when it wrote no summary."""
    fields = run.loadgen_summary
    if not fields:
        return None
    metric, value = _metric(scenario, fields)
    constraints = {
        short: fields[key].strip().lower() == "yes" for key, short in _CONSTRAINTS.items() if key in fields
    }
    return LoadGenResult(
        scenario=scenario.loadgen_name,
        valid=fields.get("Result is", "").strip().upper() == "VALID",
        metric=metric,
        metric_value=value,
        constraints=constraints,
        fields=dict(fields),
        log_dir=str(run.log_dir) if run.log_dir else None,
    )


def scenario_result(
    settings: ScenarioSettings,
    run: HarnessRun,
    resources: ResourceSummary | None,
    target_qps: float | None = None,
) -> ScenarioResult:
    m = run.measurements
    duration_s = m.duration_s
    return ScenarioResult(
        scenario=settings.scenario.loadgen_name,
        batch_size=_effective_batch(settings),
        workers=settings.workers if settings.scenario in (Scenario.SERVER, Scenario.OFFLINE) else 1,
        samples=m.samples,
        queries=m.queries,
        errors=m.errors,
        duration_s=duration_s,
        samples_per_s=m.samples / duration_s if duration_s else 0.0,
        queries_per_s=m.queries / duration_s if duration_s else 0.0,
        latency=m.latency.summary(),
        query_latency=m.query_latency.summary(),
        stages=m.stage_summaries(),
        infer_call=m.infer_call.summary(),
        cpu_ms_per_inference=resources.cpu_ms / m.samples if resources and m.samples else None,
        resources=resources,
        loadgen=loadgen_result(settings.scenario, run),
        target_qps=target_qps,
        error_messages=tuple(m.error_messages),
        settings=settings.describe(),
    )


def engine_overhead(
    single_stream: ScenarioResult | None, model_only: ModelOnly | None
) -> EngineOverhead | None:
    """End to end against runtime call + decode + preprocess (see :class:`EngineOverhead`)."""
    if single_stream is None or model_only is None or not single_stream.latency.count:
        return None
    stages = single_stream.stages
    return overhead_of(
        single_stream.latency, model_only.latency, stages["decode"], stages["preprocess"], "single-stream"
    )


def overhead_of(
    whole: LatencySummary,
    model: LatencySummary,
    decode: LatencySummary,
    preprocess: LatencySummary,
    method: str,
    *,
    summed: LatencySummary | None = None,
) -> EngineOverhead | None:
    """``whole`` against the sum of its parts, at p90 and on average; None when the parts are empty.

    ``summed``: the parts added up call by call (paired measurements), whose p90 is the parts'
    p90; without it (parts measured apart) the three p90s are added, which is more than the p90
    of their sum, so that ratio leans low."""
    parts_p90 = summed.p90_ms if summed is not None else model.p90_ms + decode.p90_ms + preprocess.p90_ms
    parts_mean = model.mean_ms + decode.mean_ms + preprocess.mean_ms
    if parts_p90 <= 0 or parts_mean <= 0:
        return None
    return EngineOverhead(
        e2e_p90_ms=whole.p90_ms,
        parts_p90_ms=parts_p90,
        ratio_p90=whole.p90_ms / parts_p90,
        e2e_mean_ms=whole.mean_ms,
        parts_mean_ms=parts_mean,
        ratio_mean=whole.mean_ms / parts_mean,
        method=method,
    )


def headline(result: ScenarioResult) -> tuple[str, float]:
    """The figure MLPerf ranks this scenario by, from our own measurements."""
    scenario = Scenario.parse(result.scenario)
    if scenario is Scenario.SINGLE_STREAM:
        return "p90 latency ms", result.latency.p90_ms
    if scenario is Scenario.MULTI_STREAM:
        return "p99 query latency ms", result.query_latency.p99_ms
    if scenario is Scenario.SERVER:
        return "QPS within bound", result.target_qps or 0.0
    return "samples/s", result.samples_per_s


def _effective_batch(settings: ScenarioSettings) -> int:
    if settings.scenario is Scenario.SINGLE_STREAM:
        return 1
    if settings.scenario is Scenario.MULTI_STREAM:
        return settings.multi_stream_samples_per_query
    return settings.batch_size


def _metric(scenario: Scenario, fields: dict[str, str]) -> tuple[str, float | None]:
    if scenario in (Scenario.SINGLE_STREAM, Scenario.MULTI_STREAM):
        for key, value in fields.items():
            number = _number(value)
            if _PERCENTILE_KEY.match(key):
                return key.replace("(ns)", "(ms)"), number / 1e6 if number is not None else None
        return "percentile latency (ms)", None
    key = "Completed samples per second" if scenario is Scenario.SERVER else "Samples per second"
    return key, _number(fields.get(key, ""))


def _number(text: str) -> float | None:
    try:
        return float(text.split(maxsplit=1)[0])
    except (ValueError, IndexError):
        return None


def overhead_p90(config: ConfigurationResult) -> float | None:
    """The engine-overhead ratio to show: the paired measurement when there is one."""
    overhead = config.engine_overhead_paired or config.engine_overhead
    return overhead.ratio_p90 if overhead else None
