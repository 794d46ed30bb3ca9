"""MLPerf Inference scenarios and the settings that drive LoadGen through them.

Vocabulary and rules are MLPerf's (``loadgen/test_settings.h``): a *query* carries one or more
*samples*; a run lasts at least ``min_duration_s`` and at least ``min_query_count`` queries (Offline:
samples). The quick defaults here take seconds; ``mlperf=True`` takes the official minimums from the
``mlperf.conf`` compiled into LoadGen for ``resnet50``, the MLPerf image-classification benchmark
closest to ours (600 s each; 662 MultiStream queries; 24,576 Offline samples; 1,024 performance samples).
:meth:`ScenarioSettings.official` builds those settings with the caller's choices on top, so that the
settings (and the report) say what LoadGen is actually told.
"""

from __future__ import annotations

import enum
import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeinfer.errors import EdgeInferError

MLPERF_REFERENCE_MODEL = "resnet50"
# Official minimums the caller may raise but not lower; every other official value may be replaced.
_OFFICIAL_FLOORS = ("min_duration_s", "min_query_count")


class Scenario(enum.Enum):
    """The four MLPerf scenarios; the value is the CLI spelling."""

    SINGLE_STREAM = "single-stream"
    MULTI_STREAM = "multi-stream"
    SERVER = "server"
    OFFLINE = "offline"

    @property
    def loadgen_name(self) -> str:
        return {
            Scenario.SINGLE_STREAM: "SingleStream",
            Scenario.MULTI_STREAM: "MultiStream",
            Scenario.SERVER: "Server",
            Scenario.OFFLINE: "Offline",
        }[self]

    @property
    def metric(self) -> str:
        """What MLPerf reports for this scenario."""
        return {
            Scenario.SINGLE_STREAM: "p90 latency (ms)",
            Scenario.MULTI_STREAM: "p99 query latency (ms)",
            Scenario.SERVER: "highest QPS meeting the p99 latency bound",
            Scenario.OFFLINE: "samples per second",
        }[self]

    @classmethod
    def parse(cls, text: str) -> Scenario:
        key = text.strip().lower().replace("_", "-")
        aliases = {s.value.replace("-", ""): s for s in cls} | {s.value: s for s in cls}
        found = aliases.get(key) or aliases.get(key.replace("-", ""))
        if found is None:
            choices = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown scenario {text!r}; choose from {choices}")
        return found


#: Server's and Offline's default workers on a box with two or more cores: on the 2-core development
#: machine two answered 20-27% more images/s than one in Offline and 28-70% more queries/s within
#: Server's latency bound (docs/BENCHMARKS.md, "Server and Offline with two workers").
QUEUE_WORKERS = 2


def default_workers(scenario: Scenario) -> int:
    """How many threads serve ``scenario`` unless told: Server and Offline queue their queries for
    :data:`QUEUE_WORKERS` (at most one per core); SingleStream and MultiStream run on LoadGen's thread."""
    from edgeinfer.system.threads import physical_cores

    queued = scenario in (Scenario.SERVER, Scenario.OFFLINE)
    return min(QUEUE_WORKERS, physical_cores()) if queued else 1


@dataclass(frozen=True)
class ScenarioSettings:
    """How long and how hard to drive one scenario.

    ``batch_size`` is how many samples one runtime call takes (Offline; Server queries are single
    samples and are batched only when they queue up). ``workers`` is how many threads serve Server and
    Offline queries (SingleStream and MultiStream are served on LoadGen's own thread: one query at a
    time by definition); 0 picks the scenario's default, :data:`QUEUE_WORKERS` where there are that
    many cores (one worker decodes and preprocesses while another's batch runs).
    ``server_latency_bound_ms`` is the Server p99 bound (MLPerf's resnet50 uses
    15 ms). ``seed`` seeds LoadGen's sample order and Poisson schedule; ``None`` uses the official
    MLPerf seeds. ``mlperf=True`` starts LoadGen from its built-in ``mlperf.conf`` and applies these
    values on top, never going below the official minimum duration and query count; build such
    settings with :meth:`official` so they hold the official values unless the caller chose others.
    """

    scenario: Scenario
    min_duration_s: float = 10.0
    min_query_count: int = 100
    max_duration_s: float = 0.0
    seed: int | None = 0
    batch_size: int = 1
    workers: int = 0
    multi_stream_samples_per_query: int = 8
    server_latency_bound_ms: float = 50.0
    server_target_qps: float | None = None
    server_search_steps: int = 5
    mlperf: bool = False

    def __post_init__(self) -> None:
        if self.workers == 0:
            object.__setattr__(self, "workers", default_workers(self.scenario))
        for name in ("min_duration_s", "max_duration_s", "server_latency_bound_ms", "server_target_qps"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.min_duration_s <= 0:
            raise ValueError(f"min_duration_s must be > 0, got {self.min_duration_s}")
        if self.min_query_count < 1:
            raise ValueError(f"min_query_count must be >= 1, got {self.min_query_count}")
        if self.max_duration_s and self.max_duration_s < self.min_duration_s:
            raise ValueError(
                f"max_duration_s ({self.max_duration_s}) must be 0 (no limit) or >= min_duration_s "
                f"({self.min_duration_s})"
            )
        for name in ("batch_size", "workers", "multi_stream_samples_per_query", "server_search_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.server_latency_bound_ms <= 0:
            raise ValueError(f"server_latency_bound_ms must be > 0, got {self.server_latency_bound_ms}")
        if self.server_target_qps is not None and self.server_target_qps <= 0:
            raise ValueError(f"server_target_qps must be > 0, got {self.server_target_qps}")

    @classmethod
    def official(cls, scenario: Scenario, **chosen: Any) -> ScenarioSettings:
        """MLPerf's settings for ``scenario`` (LoadGen's ``mlperf.conf``), with ``chosen`` applied on top.

        A ``chosen`` value of ``None`` keeps the official one. ``min_duration_s`` and
        ``min_query_count`` can only raise the official minimums; any other field replaces the
        official value (``server_latency_bound_ms``, ``multi_stream_samples_per_query``, ``seed``).
        """
        import mlperf_loadgen as lg

        ts = lg.TestSettings()
        _apply_official_config(ts, scenario)
        values: dict[str, Any] = {
            "min_duration_s": ts.min_duration_ms / 1000,
            "min_query_count": ts.min_query_count,
            "server_latency_bound_ms": ts.server_target_latency_ns / 1e6,
            "multi_stream_samples_per_query": ts.multi_stream_samples_per_query,
            "seed": None,
        }
        for name, value in chosen.items():
            if value is not None:
                values[name] = max(values[name], value) if name in _OFFICIAL_FLOORS else value
        return cls(scenario, mlperf=True, **values)

    def with_(self, **changes: Any) -> ScenarioSettings:
        return replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """The settings as plain JSON values (for the report)."""
        return {
            "scenario": self.scenario.loadgen_name,
            "min_duration_s": self.min_duration_s,
            "min_query_count": self.min_query_count,
            "max_duration_s": self.max_duration_s,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "workers": self.workers,
            "multi_stream_samples_per_query": self.multi_stream_samples_per_query,
            "server_latency_bound_ms": self.server_latency_bound_ms,
            "server_target_qps": self.server_target_qps,
            "server_search_steps": self.server_search_steps,
            "mlperf": self.mlperf,
        }


@dataclass(frozen=True)
class Expectations:
    """What the warm-up measured; LoadGen sizes its pre-generated queries from these."""

    sample_latency_ns: int
    samples_per_s: float


def loadgen_settings(
    settings: ScenarioSettings, expect: Expectations, sample_count: int, target_qps: float | None = None
) -> Any:
    """A ``mlperf_loadgen.TestSettings`` for one performance run."""
    import mlperf_loadgen as lg

    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, settings.scenario.loadgen_name)
    ts.mode = lg.TestMode.PerformanceOnly
    floor_ms, floor_queries = 0, 0
    if settings.mlperf:
        _apply_official_config(ts, settings.scenario)
        floor_ms, floor_queries = ts.min_duration_ms, ts.min_query_count
    # the settings' own values win over mlperf.conf's, so the report says what LoadGen was told
    ts.min_duration_ms = max(round(settings.min_duration_s * 1000), floor_ms)
    ts.min_query_count = max(settings.min_query_count, floor_queries)
    ts.server_target_latency_ns = round(settings.server_latency_bound_ms * 1e6)
    ts.multi_stream_samples_per_query = settings.multi_stream_samples_per_query
    if settings.max_duration_s:
        ts.max_duration_ms = round(settings.max_duration_s * 1000)
    if settings.seed is not None:
        ts.qsl_rng_seed = settings.seed
        ts.sample_index_rng_seed = settings.seed
        ts.schedule_rng_seed = settings.seed
    ts.performance_sample_count_override = sample_count
    latency_ns = max(expect.sample_latency_ns, 1000)
    ts.single_stream_expected_latency_ns = latency_ns
    ts.multi_stream_expected_latency_ns = latency_ns * ts.multi_stream_samples_per_query
    # LoadGen issues Offline as one query sized from the expected QPS; overestimate so the run is
    # never shorter than its minimum duration. The rate was measured on one thread: workers on
    # separate cores can be up to that many times faster.
    from edgeinfer.system.threads import usable_cores

    parallel = max(1, min(settings.workers, usable_cores()))
    ts.offline_expected_qps = max(expect.samples_per_s * 1.5 * parallel, 1.0)
    if target_qps is not None:
        ts.server_target_qps = target_qps
    return ts


def _apply_official_config(ts: Any, scenario: Scenario) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        empty_user_conf = Path(tmp) / "user.conf"
        empty_user_conf.write_text("")
        # conf_type 0: only LoadGen's built-in mlperf.conf, no user overrides.
        status = ts.FromConfig(str(empty_user_conf), MLPERF_REFERENCE_MODEL, scenario.loadgen_name, 0)
    if status != 0:
        raise EdgeInferError(
            f"LoadGen refused its own mlperf.conf for {scenario.loadgen_name} (status {status})"
        )
