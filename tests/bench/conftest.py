"""Real engines and real samples for the benchmark tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeinfer.bench.samples import Sample, load_samples
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
