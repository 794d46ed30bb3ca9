"""The paired measurement: the whole engine and the raw runtime call alternated on the same samples."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer.bench.paired import measure_paired
from edgeinfer.bench.samples import Sample
from edgeinfer.engine import Engine


class _SlowClassify:
    """A real engine whose ``classify`` adds 20 ms of 'engine overhead' around the same work."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.runtime = engine.runtime

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def classify(self, source: bytes) -> Any:
        time.sleep(0.02)
        return self._engine.classify(source)


def test_real_engine_adds_little_over_its_parts(built_home: Path, bench_samples: list[Sample]) -> None:
    with Engine.load("mobilenet_v2", runtime="onnxruntime", threads=1, repository=built_home) as engine:
        result = measure_paired(engine, bench_samples, 0.3)
    assert result is not None and result.overhead is not None
    model, overhead = result.model_only.latency, result.overhead
    assert model.count >= 20 and model.p50_ms > 0.5  # the real network ran on every round
    assert overhead.method == "paired"
    assert overhead.parts_mean_ms > model.mean_ms  # decode + preprocess are counted in the parts
    # classify also labels the scores; anything near 2x would mean a second inference or a copy storm
    assert 0.8 < overhead.ratio_mean < 1.5


def test_an_engine_that_adds_time_shows_it(built_home: Path, bench_samples: list[Sample]) -> None:
    with Engine.load("mobilenet_v2", runtime="null", threads=1, repository=built_home) as engine:
        plain = measure_paired(engine, bench_samples, 0.2)
        slow = measure_paired(_SlowClassify(engine), bench_samples, 0.2)
    assert plain and plain.overhead and slow and slow.overhead
    assert slow.overhead.e2e_mean_ms - plain.overhead.e2e_mean_ms > 15.0
    assert slow.overhead.ratio_mean > plain.overhead.ratio_mean + 0.5


def test_every_sample_is_used_and_zero_duration_skips(built_home: Path, bench_samples: list[Sample]) -> None:
    seen: list[int] = []
    with Engine.load("mobilenet_v2", runtime="null", threads=1, repository=built_home) as engine:
        original = engine.runtime.run

        def spy(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            seen.append(int(np.asarray(feeds[engine.runtime.inputs[0].name]).sum() * 1000) % 10**9)
            return original(feeds)

        engine.runtime.run = spy  # type: ignore[method-assign]
        result = measure_paired(engine, bench_samples, 0.0, min_rounds=len(bench_samples))
        assert result is None and not seen
        result = measure_paired(engine, bench_samples[:3], 0.01, min_rounds=6)
    assert result is not None and result.model_only.latency.count >= 6
    assert len(set(seen)) == 3  # three different samples' tensors reached the runtime


def test_a_sample_the_engine_refuses_is_left_out_and_counted(
    built_home: Path, bench_samples: list[Sample]
) -> None:
    broken = Sample("broken.jpg", b"\xff\xd8\xff not really a JPEG")
    with Engine.load("mobilenet_v2", runtime="null", threads=1, repository=built_home) as engine:
        result = measure_paired(engine, [broken, *bench_samples[:2]], 0.01, min_rounds=4)
        assert result is not None and result.model_only.latency.count >= 4
        assert result.model_only.samples_left_out == 1
        assert measure_paired(engine, [broken], 0.01) is None  # nothing left to time
