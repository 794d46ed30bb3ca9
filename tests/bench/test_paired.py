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


class _Anticorrelated:
    """An engine whose decoding is slow exactly on the rounds its runtime call is fast (10 ms one way,
    nothing the other): every call and every round's parts take 10 ms, while the two parts' p90s
    are both 10 ms."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.runtime = self
        self.inputs = engine.runtime.inputs
        self._runs = self._classifies = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._runs += 1
        if self._runs % 2 == 0:
            time.sleep(0.01)
        return {}

    def classify(self, source: bytes) -> Any:
        from types import SimpleNamespace

        from edgeinfer.engine.results import StageTimings

        self._classifies += 1  # 10 ms either way: decoding, or the runtime call as the raw one
        decode_ns = 10_000_000 if self._classifies % 2 == 1 else 0
        time.sleep(0.01)
        return SimpleNamespace(timings=StageTimings(decode_ns, 0, 10_000_000 - decode_ns, 0))


def test_the_p90_ratio_compares_the_whole_with_the_p90_of_the_parts_summed_round_by_round(
    built_home: Path, bench_samples: list[Sample]
) -> None:
    """Before, the parts' p90 was the sum of their p90s (20 ms here, against 10 ms for any round),
    which halved this ratio: an engine that added nothing read 0.5."""
    with Engine.load("mobilenet_v2", runtime="null", threads=1, repository=built_home) as engine:
        result = measure_paired(_Anticorrelated(engine), bench_samples[:2], 0.01, min_rounds=40)
    assert result is not None and result.overhead is not None
    overhead = result.overhead
    assert 9.5 < overhead.parts_p90_ms < 12.0  # each round's runtime call + decode: 10 ms
    assert 0.9 < overhead.ratio_p90 < 1.2 and 0.9 < overhead.ratio_mean < 1.2
