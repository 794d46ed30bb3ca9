"""Real engines and real samples for the benchmark tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeinfer.bench.loading import ConfigurationSpec
from edgeinfer.bench.report import ConfigurationResult
from edgeinfer.bench.runner import RunOptions, run_configuration
from edgeinfer.bench.samples import Sample, load_samples
from edgeinfer.bench.scenarios import Scenario, ScenarioSettings
from edgeinfer.engine import Engine
from edgeinfer.models.repository import ModelRepository


@pytest.fixture(scope="session")
def bench_samples(photos: dict[str, Path]) -> list[Sample]:
    """The ten bundled photos and two seeded variants, as encoded bytes."""
    return load_samples(12, seed=0)


@pytest.fixture(scope="session")
def built_home(repo: ModelRepository, edgeinfer_home: Path) -> Path:
    """The session's repository with MobileNetV2 FP32 built."""
    repo.get("mobilenet_v2", "fp32")
    return edgeinfer_home


@pytest.fixture(scope="module")
def null_engine(built_home: Path) -> Iterator[Engine]:
    """MobileNetV2's real decode and preprocessing on the Null runtime (zeros, no model cost)."""
    with Engine.load("mobilenet_v2", runtime="null", threads=1, repository=built_home) as engine:
        yield engine


def quick_options(home: Path, *scenarios: Scenario, batch_sizes: tuple[int, ...] = (1,)) -> RunOptions:
    """Runs of a fraction of a second: enough to exercise everything, too short for real figures."""
    return RunOptions(
        scenarios=tuple(ScenarioSettings(s, min_duration_s=0.3, min_query_count=10) for s in scenarios),
        batch_sizes=batch_sizes,
        warmup_s=0.1,
        model_only_s=0.1,
        sample_interval_ms=20,
        repository=home,
    )


@pytest.fixture(scope="session")
def null_result(built_home: Path, bench_samples: list[Sample]) -> ConfigurationResult:
    """A whole configuration (SingleStream, Offline at batch 1 and 4) on the Null runtime, in process."""
    spec = ConfigurationSpec("mobilenet_v2", "null", "fp32", 1)
    opts = quick_options(built_home, Scenario.SINGLE_STREAM, Scenario.OFFLINE, batch_sizes=(1, 4))
    phases: list[str] = []
    result = run_configuration(spec, bench_samples, opts, phases.append)
    assert phases[:2] == ["loading", "warm-up"] and "model-only" in phases
    return result
