"""Configurations to compare (runtime x precision x threads) and how each compares with a baseline.

The baseline is the blog's own path, Keras ``model.predict``, when it ran; otherwise the first
configuration that ran on a real runtime (the Null runtime only measures the engine's overhead).
Speed-ups are ratios measured in the same run on the same inputs, oriented so that above 1 is
better: baseline latency / latency, throughput / baseline throughput.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from edgeinfer.bench.loading import ConfigurationSpec
from edgeinfer.bench.report import ConfigurationResult, ScenarioResult, SpeedUp
from edgeinfer.models.precision import PRECISIONS
from edgeinfer.runtimes.registry import ALIASES, FACTORIES

# the registry's names and aliases, and auto
RUNTIME_ALIASES = {**{name: name for name in FACTORIES}, **ALIASES, "auto": "auto"}
BASELINE_RUNTIME = "keras"

# (figure name, how to read it from a configuration, True when lower is better)
Figure = tuple[str, Callable[[ConfigurationResult], float | None], bool]


def runtime_name(text: str) -> str:
    """The registry name for a CLI spelling (``ort`` -> ``onnxruntime``)."""
    key = text.strip().lower()
    if key not in RUNTIME_ALIASES:
        raise ValueError(f"unknown runtime {text!r}; choose from {', '.join(sorted(set(RUNTIME_ALIASES)))}")
    return RUNTIME_ALIASES[key]


def precision_name(text: str) -> str:
    """The precision for a CLI spelling (``FP16`` -> ``fp16``)."""
    key = text.strip().lower()
    if key not in PRECISIONS:
        raise ValueError(f"unknown precision {text!r}; choose from {', '.join(PRECISIONS)}")
    return key


def expand(
    model: str, runtimes: Sequence[str], precisions: Sequence[str], threads: Sequence[int | None]
) -> list[ConfigurationSpec]:
    """Every combination, in the order given (runtime-major), without duplicates; Keras at FP32 only.

    :func:`skipped` says which combinations are left out and why.
    """
    precisions = [precision_name(p) for p in precisions]
    specs: list[ConfigurationSpec] = []
    for runtime in runtimes:
        for precision in precisions:
            if _keras_beyond_fp32(runtime, precision):
                continue  # the blog's path is Keras FP32; a Keras "int8" would run the FP32 weights
            for count in threads:
                spec = ConfigurationSpec(model, runtime_name(runtime), precision, count)
                if spec not in specs:
                    specs.append(spec)
    return specs


def skipped(runtimes: Sequence[str], precisions: Sequence[str]) -> list[str]:
    """One line for each runtime x precision combination that :func:`expand` leaves out, saying why."""
    return [
        f"{runtime}/{precision} is skipped: Keras, the blog's path, runs its FP32 weights only"
        for runtime in dict.fromkeys(runtime_name(r) for r in runtimes)
        for precision in dict.fromkeys(precision_name(p) for p in precisions)
        if _keras_beyond_fp32(runtime, precision)
    ]


def _keras_beyond_fp32(runtime: str, precision: str) -> bool:
    return runtime_name(runtime) == BASELINE_RUNTIME and precision_name(precision) != "fp32"


def pick_baseline(configs: Sequence[ConfigurationResult]) -> ConfigurationResult | None:
    ran = [c for c in configs if c.status == "ok"]
    blog = [c for c in ran if (c.runtime_resolved or c.runtime) == BASELINE_RUNTIME]
    real = [c for c in ran if (c.runtime_resolved or c.runtime) != "null"]
    chosen = blog or real or ran
    return chosen[0] if chosen else None


def _single_stream_p90(c: ConfigurationResult) -> float | None:
    r = c.scenario("SingleStream")
    return r.latency.p90_ms if r and r.latency.count else None


def _multi_stream_p99(c: ConfigurationResult) -> float | None:
    r = c.scenario("MultiStream")
    return r.query_latency.p99_ms if r and r.query_latency.count else None


def _server_qps(c: ConfigurationResult) -> float | None:
    r = c.scenario("Server")
    return r.target_qps if r else None


def _offline_best(c: ConfigurationResult) -> float | None:
    values = [r.samples_per_s for r in c.scenarios if r.scenario == "Offline" and r.samples_per_s > 0]
    return max(values) if values else None


def _model_only_p90(c: ConfigurationResult) -> float | None:
    return c.model_only.latency.p90_ms if c.model_only and c.model_only.latency.count else None


FIGURES: tuple[Figure, ...] = (
    ("SingleStream p90 latency (ms)", _single_stream_p90, True),
    ("MultiStream p99 query latency (ms)", _multi_stream_p99, True),
    ("Server QPS within bound", _server_qps, False),
    ("Offline samples/s (best batch)", _offline_best, False),
    ("model-only p90 latency (ms)", _model_only_p90, True),
)


def speedups(configs: Sequence[ConfigurationResult]) -> tuple[SpeedUp, ...]:
    """Each configuration against the baseline, on every figure both of them have."""
    baseline = pick_baseline(configs)
    if baseline is None:
        return ()
    found: list[SpeedUp] = []
    for config in configs:
        if config is baseline or config.status != "ok" or config.runtime == "null":
            continue  # the Null runtime measures overhead; it is no contender
        for name, read, lower_is_better in FIGURES:
            value, base = read(config), read(baseline)
            if not value or not base:
                continue
            ratio = base / value if lower_is_better else value / base
            found.append(SpeedUp(config.label, baseline.label, name, value, base, ratio))
    return tuple(found)


def with_agreement(configs: Sequence[ConfigurationResult]) -> list[ConfigurationResult]:
    """Add each configuration's top-1 agreement with the baseline on the warm-up samples to ``extra``.

    Nothing is added when no other configuration ran. The baseline is marked as such (it could only
    agree with itself), and the Null runtime gets no figure (its scores are zeros, not predictions).
    """
    baseline = pick_baseline(configs)
    others = [c for c in configs if c is not baseline and c.status == "ok" and c.top1]
    if baseline is None or not baseline.top1 or not others:
        return list(configs)
    updated = []
    for config in configs:
        shared = [name for name in config.top1 if name in baseline.top1]
        if config is baseline:
            updated.append(replace(config, extra={**config.extra, "baseline": config.label}))
        elif config.status == "ok" and shared and "null" not in (config.runtime, config.runtime_resolved):
            agree = sum(config.top1[n] == baseline.top1[n] for n in shared) / len(shared)
            extra = {**config.extra, "top1_agreement_with_baseline": agree, "baseline": baseline.label}
            updated.append(replace(config, extra=extra))
        else:
            updated.append(config)
    return updated


def headline_rows(configs: Sequence[ConfigurationResult]) -> list[tuple[ConfigurationResult, ScenarioResult]]:
    """(configuration, scenario) pairs in report order, for tables."""
    return [(c, r) for c in configs for r in c.scenarios]
