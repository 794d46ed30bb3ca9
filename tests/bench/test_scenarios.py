"""Scenario settings and the LoadGen TestSettings they become (quick and official MLPerf)."""

from __future__ import annotations

import mlperf_loadgen as lg
import pytest

from edgeinfer.bench.scenarios import Expectations, Scenario, ScenarioSettings, loadgen_settings

EXPECT = Expectations(sample_latency_ns=10_000_000, samples_per_s=100.0)


@pytest.mark.parametrize(
    ("text", "scenario"),
    [
        ("single-stream", Scenario.SINGLE_STREAM),
        ("SingleStream", Scenario.SINGLE_STREAM),
        ("multi_stream", Scenario.MULTI_STREAM),
        ("Server", Scenario.SERVER),
        ("offline", Scenario.OFFLINE),
    ],
)
def test_parse_accepts_cli_and_loadgen_spellings(text: str, scenario: Scenario) -> None:
    assert Scenario.parse(text) is scenario


def test_unknown_scenario_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="single-stream, multi-stream, server, offline"):
        Scenario.parse("batch")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("min_duration_s", 0.0, "min_duration_s must be > 0"),
        ("batch_size", 0, "batch_size must be >= 1"),
        ("max_duration_s", 1.0, "max_duration_s"),
        ("server_target_qps", -1.0, "server_target_qps"),
        ("min_duration_s", float("nan"), "min_duration_s must be a finite number"),
        ("max_duration_s", float("inf"), "max_duration_s must be a finite number"),
        ("server_latency_bound_ms", float("nan"), "server_latency_bound_ms must be a finite number"),
        ("server_target_qps", float("nan"), "server_target_qps must be a finite number"),
    ],
)
def test_bad_settings_say_how_to_fix(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScenarioSettings(Scenario.SINGLE_STREAM, **{"min_duration_s": 5.0, field: value})  # type: ignore[arg-type]


def test_quick_settings_reach_loadgen() -> None:
    settings = ScenarioSettings(Scenario.MULTI_STREAM, min_duration_s=2.5, min_query_count=40, seed=11)
    ts = loadgen_settings(settings, EXPECT, sample_count=12)
    assert ts.scenario == lg.TestScenario.MultiStream
    assert ts.mode == lg.TestMode.PerformanceOnly
    assert (ts.min_duration_ms, ts.min_query_count) == (2500, 40)
    assert (ts.qsl_rng_seed, ts.sample_index_rng_seed, ts.schedule_rng_seed) == (11, 11, 11)
    assert ts.performance_sample_count_override == 12
    assert ts.multi_stream_samples_per_query == 8
    assert ts.multi_stream_expected_latency_ns == 80_000_000


def test_offline_sizes_its_query_for_every_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warm-up measures one thread's rate; with two workers on two cores the run goes up to twice
    as fast, and a query sized for one would end before the minimum duration (LoadGen: INVALID)."""
    from edgeinfer.system import threads

    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    for workers, expected in ((1, 1.5), (2, 3.0), (8, 3.0)):  # no more parallel than the cores
        settings = ScenarioSettings(Scenario.OFFLINE, min_duration_s=1.0, workers=workers)
        ts = loadgen_settings(settings, EXPECT, sample_count=12)
        assert ts.offline_expected_qps == pytest.approx(EXPECT.samples_per_s * expected)


def test_server_bound_and_rate() -> None:
    settings = ScenarioSettings(Scenario.SERVER, server_latency_bound_ms=20.0)
    ts = loadgen_settings(settings, EXPECT, sample_count=12, target_qps=37.5)
    assert ts.server_target_latency_ns == 20_000_000
    assert ts.server_target_qps == pytest.approx(37.5)


@pytest.mark.parametrize(
    ("scenario", "min_queries"),
    [(Scenario.SINGLE_STREAM, 100), (Scenario.MULTI_STREAM, 662), (Scenario.OFFLINE, 24576)],
)
def test_mlperf_flag_takes_loadgens_official_minimums(scenario: Scenario, min_queries: int) -> None:
    settings = ScenarioSettings(scenario, seed=None, mlperf=True)
    ts = loadgen_settings(settings, EXPECT, sample_count=1024)
    assert ts.min_duration_ms == 600_000
    assert ts.min_query_count == min_queries
    assert ts.qsl_rng_seed == 2085463073848966840  # mlperf.conf's official seed
    assert ts.performance_sample_count_override == 1024


def test_mlperf_server_uses_resnet50_latency_bound() -> None:
    settings = ScenarioSettings.official(Scenario.SERVER)
    assert settings.server_latency_bound_ms == 15.0 and settings.seed is None
    ts = loadgen_settings(settings, EXPECT, 1024, 10.0)
    assert ts.server_target_latency_ns == 15_000_000


def test_official_settings_take_the_callers_values_on_top() -> None:
    settings = ScenarioSettings.official(
        Scenario.MULTI_STREAM,
        min_duration_s=5.0,  # below the official 600 s: the official minimum stays
        min_query_count=1000,  # above the official 662: raises it
        server_latency_bound_ms=100.0,
        multi_stream_samples_per_query=4,
        seed=7,
        workers=None,  # None keeps the default
    )
    assert (settings.min_duration_s, settings.min_query_count) == (600.0, 1000)
    assert (settings.server_latency_bound_ms, settings.multi_stream_samples_per_query) == (100.0, 4)
    ts = loadgen_settings(settings, EXPECT, sample_count=1024, target_qps=10.0)
    assert (ts.min_duration_ms, ts.min_query_count) == (600_000, 1000)
    assert (ts.server_target_latency_ns, ts.multi_stream_samples_per_query) == (100_000_000, 4)
    assert ts.qsl_rng_seed == 7
    assert ts.server_target_latency_percentile == pytest.approx(0.99)


def test_queued_scenarios_take_two_workers_where_there_are_two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeinfer.system import threads

    monkeypatch.setattr(threads, "physical_cores", lambda: 4)
    assert ScenarioSettings(Scenario.OFFLINE).workers == 2  # one prepares while another's batch runs
    assert ScenarioSettings(Scenario.SERVER).workers == 2
    assert ScenarioSettings(Scenario.SINGLE_STREAM).workers == 1  # LoadGen's own thread
    assert ScenarioSettings(Scenario.MULTI_STREAM).workers == 1
    assert ScenarioSettings(Scenario.OFFLINE, workers=3).workers == 3  # a count given is kept
    assert ScenarioSettings(Scenario.OFFLINE).describe()["workers"] == 2  # and reported
    monkeypatch.setattr(threads, "physical_cores", lambda: 1)
    assert ScenarioSettings(Scenario.OFFLINE).workers == ScenarioSettings(Scenario.SERVER).workers == 1
    with pytest.raises(ValueError, match="workers must be >= 1"):
        ScenarioSettings(Scenario.OFFLINE, workers=-1)
