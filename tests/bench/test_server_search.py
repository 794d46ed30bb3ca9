"""The Server search brackets the highest arrival rate whose p99 stays within the bound."""

from __future__ import annotations

from edgeinfer.bench.harness import HarnessRun, Measurements
from edgeinfer.bench.scenarios import Scenario, ScenarioSettings
from edgeinfer.bench.server_search import search_peak_qps, trial_of

BOUND_MS = 50.0


def synthetic_run(qps: float, knee_qps: float, loadgen: dict[str, str] | None = None) -> HarnessRun:
    """A queue that keeps p99 at 10 ms below ``knee_qps`` and blows past the bound above it."""
    m = Measurements()
    p99_ms = 10.0 if qps <= knee_qps else 10.0 + (qps - knee_qps) * 20.0
    for i in range(200):
        m.note_issue(1 + i)
        m.query_latency.record(int((p99_ms if i >= 197 else 5.0) * 1e6))
    m.note_complete(int(1e9) + 1, 200)
    return HarnessRun(m, loadgen or {}, None, 1.0)


def settings(**changes: object) -> ScenarioSettings:
    return ScenarioSettings(Scenario.SERVER, server_latency_bound_ms=BOUND_MS, server_search_steps=6).with_(
        **changes
    )


def test_search_converges_below_the_knee() -> None:
    tried: list[float] = []

    def run_at(qps: float) -> HarnessRun:
        tried.append(qps)
        return synthetic_run(qps, knee_qps=80.0)

    outcome = search_peak_qps(settings(), capacity_qps=100.0, run_at=run_at)
    assert len(tried) == 6 and len(outcome.trials) == 6
    assert outcome.best_qps is not None
    threshold = 82.0  # p99 = 10 + (qps - 80) * 20 ms reaches the 50 ms bound at 82 QPS
    assert threshold * 0.85 <= outcome.best_qps <= threshold
    passing = [t.target_qps for t in outcome.trials if t.met_latency_bound]
    failing = [t.target_qps for t in outcome.trials if not t.met_latency_bound]
    assert max(passing) == outcome.best_qps
    assert all(f > threshold for f in failing)


def test_no_rate_within_bound_reports_none_and_the_gentlest_run() -> None:
    outcome = search_peak_qps(
        settings(server_search_steps=3), 100.0, lambda q: synthetic_run(q, knee_qps=0.0)
    )
    assert outcome.best_qps is None
    assert outcome.best_target_qps == min(t.target_qps for t in outcome.trials)


def test_a_bound_below_the_service_time_stops_the_search_at_once() -> None:
    tried: list[float] = []

    def run_at(qps: float) -> HarnessRun:
        tried.append(qps)
        return synthetic_run(qps, knee_qps=80.0)  # every query takes at least 5 ms

    outcome = search_peak_qps(settings(server_latency_bound_ms=2.0), 100.0, run_at)
    assert len(tried) == 1 and outcome.best_qps is None
    search_peak_qps(settings(server_latency_bound_ms=8.0), 100.0, run_at)  # 5 ms fits: it searches on
    assert len(tried) > 2


def test_fixed_target_runs_once() -> None:
    outcome = search_peak_qps(settings(server_target_qps=42.0), 100.0, lambda q: synthetic_run(q, 80.0))
    assert [t.target_qps for t in outcome.trials] == [42.0]
    assert outcome.best_qps == 42.0


def test_loadgens_verdict_wins_over_our_p99() -> None:
    run = synthetic_run(10.0, knee_qps=80.0, loadgen={"Performance constraints satisfied": "No"})
    assert not trial_of(settings(), 10.0, run).met_latency_bound
    assert trial_of(settings(), 10.0, synthetic_run(10.0, 80.0)).met_latency_bound


def test_errors_fail_a_trial() -> None:
    run = synthetic_run(10.0, knee_qps=80.0)
    run.measurements.errors = 1
    assert not trial_of(settings(), 10.0, run).met_latency_bound
