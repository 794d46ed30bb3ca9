"""The benchmark report: a versioned schema as dataclasses, written as ``report.json`` + ``report.html``.

The same schema serves every tool that measures something (``edgeinfer bench``, the server's load
generator, the edge/cloud comparison): a :class:`BenchReport` holds :class:`ConfigurationResult` s,
each with :class:`ScenarioResult` s whose latencies are :class:`~edgeinfer.bench.stats.LatencySummary`.
Fields a tool does not measure stay ``None`` or empty. docs/REPORT_SCHEMA.md documents every field;
bump :data:`SCHEMA_VERSION` on any change that renames or removes one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edgeinfer.bench.resources import ResourceSummary
from edgeinfer.bench.stats import LatencySummary
from edgeinfer.errors import IntegrityError
from edgeinfer.system.files import write_atomically

SCHEMA = "edgeinfer.bench.report"
SCHEMA_VERSION = 1


# the summary's lines under these headings say what made a run INVALID and what would not
_LOADGEN_ADVICE = ("Early Stopping Result", "Recommendations")


@dataclass(frozen=True)
class LoadGenResult:
    """What MLPerf LoadGen itself concluded (parsed from ``mlperf_log_summary.txt``)."""

    scenario: str
    valid: bool
    metric: str
    metric_value: float | None
    constraints: dict[str, bool] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    log_dir: str | None = None

    def why_invalid(self) -> str:
        """Why LoadGen called the run INVALID, from its own summary ("" for a valid run)."""
        if self.valid:
            return ""
        unmet = [name.replace("_", " ") for name, held in self.constraints.items() if not held]
        parts = [f"unmet: {', '.join(unmet)}"] if unmet else []
        parts += [self.fields[key] for key in _LOADGEN_ADVICE if self.fields.get(key)]
        return "; ".join(parts) or "LoadGen gave no reason"


@dataclass(frozen=True)
class ServerTrial:
    """One Server run of the QPS search: the target, what was reached, and whether the bound held."""

    target_qps: float
    achieved_qps: float
    p99_ms: float
    errors: int
    met_latency_bound: bool
    loadgen_valid: bool


@dataclass(frozen=True)
class ScenarioResult:
    """One scenario on one configuration.

    ``latency`` is end to end per sample (encoded bytes to labelled prediction; see the schema doc for
    Server queueing and Offline). ``query_latency`` is per query (MultiStream: all its samples).
    ``stages`` splits a sample's service time into decode/preprocess/infer/postprocess (infer: the
    batch's runtime call divided by its size); ``infer_call`` is each runtime call whole.
    """

    scenario: str
    batch_size: int
    workers: int
    samples: int
    queries: int
    errors: int
    duration_s: float
    samples_per_s: float
    queries_per_s: float
    latency: LatencySummary
    query_latency: LatencySummary
    stages: dict[str, LatencySummary]
    infer_call: LatencySummary
    cpu_ms_per_inference: float | None
    resources: ResourceSummary | None
    loadgen: LoadGenResult | None = None
    target_qps: float | None = None
    server_search: tuple[ServerTrial, ...] = ()
    error_messages: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ColdStart:
    """Model load (open the built model on the runtime) and the first prediction after it, in ms.

    ``process_start_to_first_prediction_ms`` is measured when the configuration runs in its own fresh
    process: from the parent starting it to the first labelled prediction.
    """

    load_ms: float
    first_inference_ms: float
    process_start_to_first_prediction_ms: float | None = None
    compiled_cache: str | None = None


@dataclass(frozen=True)
class Warmup:
    """The work done before measuring, excluded from every figure."""

    samples: int
    duration_s: float
    sample_latency_ms: float


@dataclass(frozen=True)
class ModelOnly:
    """The runtime call alone on the samples' preprocessed tensors, batch 1 (no decode, no labels)."""

    batch_size: int
    call: str
    latency: LatencySummary
    samples_left_out: int = 0  # samples that failed to decode or preprocess (the scenarios count them)


@dataclass(frozen=True)
class EngineOverhead:
    """What the engine adds around the runtime: end-to-end latency over the sum of its parts.

    ``parts`` is the raw runtime call plus the measured decode and preprocess stages; the ratio is
    end-to-end latency over it (1.0: the engine adds nothing). The mean form is exact arithmetic.
    ``method`` says where the figures come from: ``paired`` (``Engine.classify`` and the raw
    ``runtime.run`` alternated sample by sample in one loop, so both see the same load; each
    round's parts are added up, and ``parts_p90_ms`` is the p90 of those sums) or ``single-stream``
    (LoadGen's SingleStream latency against the model-only phase, measured one after the other;
    ``parts_p90_ms`` adds the three p90s, which is more than the p90 of their sum, so that ratio
    leans low).
    """

    e2e_p90_ms: float
    parts_p90_ms: float
    ratio_p90: float
    e2e_mean_ms: float
    parts_mean_ms: float
    ratio_mean: float
    method: str = "single-stream"


@dataclass(frozen=True)
class Timeline:
    """Resource samples at a fixed rate: parallel columns, times in seconds since the sampler started."""

    interval_ms: int
    t_s: tuple[float, ...]
    process_cpu_percent: tuple[float, ...]
    rss_mb: tuple[float, ...]
    system_cpu_percent_per_core: tuple[tuple[float, ...], ...]
    marks: tuple[tuple[float, str], ...] = ()


@dataclass(frozen=True)
class ConfigurationResult:
    """One runtime x precision x threads configuration and everything measured on it."""

    label: str
    status: str  # "ok", "unavailable" (not installed / no such build), "failed"
    model: str
    runtime: str
    precision: str
    threads: int | None
    message: str = ""
    runtime_resolved: str | None = None
    runtime_version: str | None = None
    model_file: str | None = None
    model_size_bytes: int | None = None
    cold_start: ColdStart | None = None
    warmup: Warmup | None = None
    scenarios: tuple[ScenarioResult, ...] = ()
    model_only: ModelOnly | None = None
    engine_overhead: EngineOverhead | None = None
    engine_overhead_paired: EngineOverhead | None = None
    resources: ResourceSummary | None = None
    timeline: Timeline | None = None
    top1: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def scenario(self, name: str, batch_size: int | None = None) -> ScenarioResult | None:
        """The first result of scenario ``name`` (LoadGen spelling), optionally at ``batch_size``."""
        for result in self.scenarios:
            if result.scenario == name and (batch_size is None or result.batch_size == batch_size):
                return result
        return None


@dataclass(frozen=True)
class SpeedUp:
    """How a configuration compares with the baseline on one figure (ratio > 1: it is better)."""

    label: str
    baseline: str
    figure: str
    value: float
    baseline_value: float
    ratio: float


@dataclass(frozen=True)
class SampleSet:
    """The inputs: the same for every configuration of a run (``digest`` proves it)."""

    count: int
    seed: int
    digest: str
    total_bytes: int
    names: tuple[str, ...]
    encoding: str = "original"


@dataclass(frozen=True)
class BenchReport:
    """A whole run. ``kind`` says which tool wrote it (``bench``, ``loadgen``, ``edge-cloud``...)."""

    kind: str
    title: str
    created_utc: str
    edgeinfer_version: str
    command: tuple[str, ...]
    machine: dict[str, Any]
    versions: dict[str, str]
    settings: dict[str, Any]
    configurations: tuple[ConfigurationResult, ...]
    samples: SampleSet | None = None
    speedups: tuple[SpeedUp, ...] = ()
    notes: tuple[str, ...] = ()
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True)
class ReportPaths:
    json: Path
    html: Path


def utc_now() -> str:
    """A timestamp for the report header (wall clock; never used for durations)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def to_dict(obj: Any) -> Any:
    """Plain JSON values for any schema dataclass (tuples become lists)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) and not isinstance(obj, type) else obj


def to_json(report: BenchReport) -> str:
    return json.dumps(to_dict(report), allow_nan=False)  # compact: the HTML is for reading


T = TypeVar("T")


def from_dict(cls: type[T], raw: Any) -> T:
    """Rebuild a schema dataclass (and everything nested) from its :func:`to_dict` form."""
    return typing.cast(T, _convert(cls, raw))


def read_report(path: Path) -> BenchReport:
    """A report.json written by :func:`write_report`, checked against the schema version."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"cannot read report {path}: {exc}") from exc
    if raw.get("schema") != SCHEMA or raw.get("schema_version") != SCHEMA_VERSION:
        raise IntegrityError(
            f"{path} is schema {raw.get('schema')!r} version {raw.get('schema_version')!r}; "
            f"this edgeinfer reads {SCHEMA!r} version {SCHEMA_VERSION}"
        )
    try:
        return from_dict(BenchReport, raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"{path} does not match the report schema: {exc}") from exc


def write_report(report: BenchReport, out_dir: Path) -> ReportPaths:
    """Write ``report.json`` and the self-contained ``report.html`` into ``out_dir``."""
    from edgeinfer.bench.html import render_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "report.json"
    html_path = out / "report.html"
    write_atomically(json_path, to_json(report))
    write_atomically(html_path, render_html(report))
    return ReportPaths(json_path, html_path)


def _convert(tp: Any, raw: Any) -> Any:
    if raw is None:
        return None
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(options[0], raw) if len(options) == 1 else raw
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp) if f.name in raw]
        return tp(**{name: _convert(hints[name], raw[name]) for name in names})
    return _convert_value(tp, raw)


def _convert_value(tp: Any, raw: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        converted: Any = tuple(_convert(args[0], item) for item in raw)
    elif origin is tuple:
        converted = tuple(_convert(arg, item) for arg, item in zip(args, raw, strict=True))
    elif origin is list:
        converted = [_convert(args[0], item) for item in raw]
    elif origin is dict:
        converted = {key: _convert(args[1], value) for key, value in raw.items()}
    elif tp is float and isinstance(raw, int):
        converted = float(raw)
    else:
        converted = raw
    return converted
