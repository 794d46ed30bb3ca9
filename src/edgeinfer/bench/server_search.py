"""MLPerf Server: find the highest Poisson arrival rate whose p99 latency stays within the bound.

Each trial is a full LoadGen Server run (its minimum duration and query count apply). The search
brackets the answer between a rate that met the bound and one that did not and halves the bracket
``server_search_steps`` times, starting from the capacity the warm-up or Offline run measured;
it stops early when even the fastest query of a failing trial took longer than the bound (no
gentler rate can meet it).
A trial meets the bound when LoadGen says its latency constraint held (our own p99 of query latency
when LoadGen gave no verdict) and no query failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgeinfer.bench.harness import HarnessRun
from edgeinfer.bench.report import ServerTrial
from edgeinfer.bench.results import loadgen_result
from edgeinfer.bench.scenarios import Scenario, ScenarioSettings

FIRST_TRIAL_FRACTION = 0.7
MIN_QPS = 0.5

RunAt = Callable[[float], HarnessRun]


@dataclass(frozen=True)
class SearchOutcome:
    """Every trial, and the run at the best rate that met the bound (or the gentlest tried)."""

    trials: tuple[ServerTrial, ...]
    best_qps: float | None
    best_run: HarnessRun
    best_target_qps: float


def trial_of(settings: ScenarioSettings, target_qps: float, run: HarnessRun) -> ServerTrial:
    m = run.measurements
    p99_ms = m.query_latency.summary().p99_ms
    verdict = loadgen_result(Scenario.SERVER, run)
    within = verdict.constraints.get("latency_bound") if verdict else None
    if within is None:
        within = p99_ms <= settings.server_latency_bound_ms
    return ServerTrial(
        target_qps=round(target_qps, 3),
        achieved_qps=m.queries / m.duration_s if m.duration_s else 0.0,
        p99_ms=p99_ms,
        errors=m.errors,
        met_latency_bound=bool(within) and m.errors == 0 and m.queries > 0,
        loadgen_valid=bool(verdict and verdict.valid),
    )


def _service_alone_exceeds(settings: ScenarioSettings, run: HarnessRun) -> bool:
    """Whether the fastest query of a run was already over the bound: its service time, with no
    queue in front of it, so lower arrival rates cannot bring p99 within the bound."""
    fastest = run.measurements.query_latency.summary()
    return fastest.count > 0 and fastest.min_ms > settings.server_latency_bound_ms


def search_peak_qps(settings: ScenarioSettings, capacity_qps: float, run_at: RunAt) -> SearchOutcome:
    """Bisect the arrival rate; ``run_at(qps)`` runs one LoadGen Server test at that rate."""
    if settings.server_target_qps is not None:
        run = run_at(settings.server_target_qps)
        trial = trial_of(settings, settings.server_target_qps, run)
        best = trial.target_qps if trial.met_latency_bound else None
        return SearchOutcome((trial,), best, run, settings.server_target_qps)
    low, high = 0.0, max(capacity_qps, MIN_QPS) * 1.25
    target = max(capacity_qps * FIRST_TRIAL_FRACTION, MIN_QPS)
    trials: list[ServerTrial] = []
    runs: list[tuple[float, HarnessRun, bool]] = []
    for _ in range(settings.server_search_steps):
        run = run_at(target)
        trial = trial_of(settings, target, run)
        trials.append(trial)
        runs.append((target, run, trial.met_latency_bound))
        if trial.met_latency_bound:
            low = target
        else:
            high = target
            if low == 0 and _service_alone_exceeds(settings, run):
                break  # no gentler rate can help: even a query that did not wait took too long
        target = (low + high) / 2 if low > 0 else high / 2
        if target < MIN_QPS:
            break
    passing = [(qps, run) for qps, run, ok in runs if ok]
    if passing:
        best_qps, best_run = max(passing, key=lambda item: item[0])
        return SearchOutcome(tuple(trials), round(best_qps, 3), best_run, best_qps)
    gentlest_qps, gentlest_run, _ = min(runs, key=lambda item: item[0])
    return SearchOutcome(tuple(trials), None, gentlest_run, gentlest_qps)
