"""The servable's instance shapes: the adaptive default loads within the process thread budget."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeinfer.engine.engine import Engine
from edgeinfer.serving.servable import ModelEngine, load_adaptive
from edgeinfer.system import threads
from edgeinfer.system.threads import ThreadBudget, process_budget


def _loader(runtime: str) -> tuple[list[Engine], Callable[[int], ModelEngine]]:
    opened: list[Engine] = []

    def load(threads: int) -> ModelEngine:
        engine = Engine.load("mobilenet_v2", runtime=runtime, threads=threads)
        opened.append(engine)
        return engine

    return opened, load


def test_adaptive_shape_is_a_wide_runtime_and_a_single_thread_twin_within_the_budget(
    edgeinfer_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threads, "_budget", ThreadBudget(total=2))  # a 2-core process, whatever else ran
    budget = process_budget()
    free = budget.free
    opened, load = _loader("onnxruntime")
    loaded = load_adaptive(load, 2)
    try:
        assert loaded.split is not None and loaded.split_lanes == 2
        assert loaded.instances[0].runtime.threads == 2
        assert loaded.split.runtime.threads == 1
        assert budget.free == free - 2  # the twin never runs beside the wide runtime: no threads of its own
    finally:
        for engine in opened:
            engine.close()
    assert budget.free == free


def test_adaptive_shape_falls_back_to_one_instance_where_the_runtime_cannot_be_shared(
    edgeinfer_home: Path,
) -> None:
    opened, load = _loader("null")
    loaded = load_adaptive(load, 2)
    try:
        assert loaded.split is None and loaded.split_lanes == 0
        assert len(loaded.instances) == 1
    finally:
        for engine in opened:
            engine.close()


def test_the_adaptive_shape_under_auto_runs_its_twin_on_the_wide_instances_runtime(
    edgeinfer_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeinfer.runtimes import registry
    from edgeinfer.serving.dataplane import load_engines
    from edgeinfer.serving.settings import ServeSettings

    monkeypatch.setattr(threads, "_budget", ThreadBudget(total=2))
    monkeypatch.setenv(threads.CORES_ENV, "2")
    asked: list[int | None] = []

    def choose_auto(*args: object, **kwargs: object) -> registry.AutoChoice:
        options = args[3] if len(args) > 3 else kwargs["options"]
        asked.append(options.threads)  # type: ignore[attr-defined]
        # a single-thread probe that prefers a runtime the twin cannot share, as LiteRT can be
        chosen = "null" if options.threads == 1 else "onnxruntime"  # type: ignore[attr-defined]
        return registry.AutoChoice(runtime=chosen, results=(), cached=True, key="k")

    monkeypatch.setattr(registry, "choose_auto", choose_auto)
    loaded = load_engines("mobilenet_v2", ServeSettings(runtime="auto"))
    assert not isinstance(loaded, list)
    try:
        assert asked == [2]  # auto decided once, for the wide instance
        assert loaded.split is not None and loaded.split_lanes == 2
        assert {e.runtime.name for e in [*loaded.instances, loaded.split]} == {"onnxruntime"}
    finally:
        for engine in [*loaded.instances, loaded.split]:
            engine.close()


@pytest.mark.parametrize(
    ("fast_ms", "ort_ms", "served_on"),
    [(4.0, 5.2, "onnxruntime"), (4.0, 6.0, "null")],  # "null" stands in for a faster runtime
)
def test_the_server_under_auto_takes_split_lanes_over_a_somewhat_faster_single_instance(
    edgeinfer_home: Path, monkeypatch: pytest.MonkeyPatch, fast_ms: float, ort_ms: float, served_on: str
) -> None:
    from edgeinfer.runtimes import registry

    monkeypatch.setattr(threads, "_budget", ThreadBudget(total=2))
    monkeypatch.setenv(threads.CORES_ENV, "2")

    def choose_auto(*args: object, **kwargs: object) -> registry.AutoChoice:
        results = (
            registry.ProbeResult("null", "1", 20, fast_ms, fast_ms, 10.0),
            registry.ProbeResult("onnxruntime", "1", 20, ort_ms, ort_ms, 30.0),
        )
        return registry.AutoChoice(runtime="null", results=results, cached=True, key="k")

    monkeypatch.setattr(registry, "choose_auto", choose_auto)
    runtimes, split = _served_under_auto()
    assert runtimes == {served_on}
    assert split == (served_on == "onnxruntime")


def _served_under_auto() -> tuple[set[str], bool]:
    """The runtimes the server's default shape loads under ``auto``, and whether it has a twin."""
    from edgeinfer.serving.dataplane import load_engines
    from edgeinfer.serving.settings import ServeSettings

    loaded = load_engines("mobilenet_v2", ServeSettings(runtime="auto"))
    assert not isinstance(loaded, list)
    engines = [*loaded.instances, *([loaded.split] if loaded.split is not None else [])]
    try:
        return {e.runtime.name for e in engines}, loaded.split is not None
    finally:
        for engine in engines:
            engine.close()


@pytest.mark.parametrize(
    ("fast_ms", "ort_ms", "served_on"), [(4.0, 5.2, "onnxruntime"), (4.0, 6.0, "openvino")]
)
def test_the_server_applies_the_same_preference_to_a_tuned_choice(
    edgeinfer_home: Path, monkeypatch: pytest.MonkeyPatch, fast_ms: float, ort_ms: float, served_on: str
) -> None:
    pytest.importorskip("openvino")  # the faster runtime tune found (null and keras never win a tuning)
    from edgeinfer.models.repository import ModelRepository
    from edgeinfer.runtimes import registry
    from edgeinfer.system.machine import machine_key
    from edgeinfer.tune import store

    monkeypatch.setattr(threads, "_budget", ThreadBudget(total=2))
    monkeypatch.setenv(threads.CORES_ENV, "2")

    def trial(runtime: str, threads: int, batch_size: int, p50_ms: float) -> dict[str, object]:
        return {
            "runtime": runtime, "precision": "fp32", "threads": threads, "batch_size": batch_size,
            "runs": 20, "p50_ms": p50_ms, "p90_ms": p50_ms * 1.1, "p99_ms": p50_ms * 1.3,
            "images_per_s": 1000 * batch_size / p50_ms, "error": None,
        }  # fmt: skip

    trials = [
        trial("openvino", 2, 1, fast_ms),
        trial("onnxruntime", 2, 1, ort_ms),
        trial("onnxruntime", 1, 1, fast_ms * 0.9),  # another thread count: not the wide instance's
        trial("onnxruntime", 2, 4, fast_ms),  # a batch: not what the preference compares
    ]
    sha = ModelRepository(edgeinfer_home).get("mobilenet_v2").config.file_sha256
    entry = {
        "trials": trials,
        "best_by_precision": {"fp32": {"latency": trials[0]}},
        "file_sha256": {"fp32": sha},
    }
    monkeypatch.setattr(store, "read_entries", lambda root, model: {machine_key(): entry})

    def no_probe(*args: object, **kwargs: object) -> registry.AutoChoice:
        raise AssertionError("a tuned model is not probed")

    monkeypatch.setattr(registry, "choose_auto", no_probe)
    assert _served_under_auto()[0] == {served_on}


def test_decode_cost_prices_images_by_size_and_one_huge_image_does_not_move_small_ones() -> None:
    from edgeinfer.serving.servable import DecodeCost

    cost = DecodeCost()
    for _ in range(3):
        cost.learn([3_072], 300_000)  # 64x48: the fixed part, 0.3 ms
    cost.learn([307_200], 2_300_000)  # 640x480: 2.3 ms, 2 ms of it per pixel
    camera = cost.estimate_ns(307_200)
    assert camera == pytest.approx(2.3e6, rel=0.01)
    cost.learn([28_800_000], 190_000_000)  # one 29-megapixel photo at the same cost per pixel
    assert cost.estimate_ns(307_200) == pytest.approx(camera, rel=0.05)
    assert cost.estimate_ns(28_800_000) > 150e6  # priced by its size
    cost.learn([None], 50_000_000)  # an image of unknown size teaches nothing about the two parts
    assert cost.estimate_ns(307_200) == pytest.approx(camera, rel=0.05)


def test_a_requests_images_are_prepared_on_two_threads_named_by_position_and_priced_one_by_one(
    edgeinfer_home: Path, photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from edgeinfer.errors import InvalidInput
    from edgeinfer.serving.batching.settings import BatcherSettings
    from edgeinfer.serving.metrics import ServerMetrics
    from edgeinfer.serving.servable import Servable

    names = ["chelsea", "coffee", "china", "astronaut", "rocket", "camera"]
    images = np.array([photos[n].read_bytes() for n in names], dtype=object)
    with Engine.load("mobilenet_v2", runtime="null", threads=1) as engine, ThreadPoolExecutor(1) as pool:
        servable = Servable(
            "m", [engine], BatcherSettings(), ServerMetrics().for_model("m"), decode_pool=pool
        )
        alone = np.stack([engine.preprocess(engine.decode(bytes(image))) for image in images])
        threads: list[str] = []
        decode = engine.decode

        def recording(source: bytes) -> np.ndarray:
            threads.append(threading.current_thread().name)
            return decode(source)

        monkeypatch.setattr(engine, "decode", recording)
        for _ in range(3):
            started = time.perf_counter_ns()
            batch, work_ns = pool.submit(servable._decode_batch, images).result()
            wall_ns = time.perf_counter_ns() - started
            np.testing.assert_array_equal(batch, alone)
            assert work_ns > 0.8 * wall_ns  # the images' own times, which admission learns from
        assert any(name.startswith("edgeinfer-helper") for name in threads)
        bad = images.copy()
        bad[2], bad[4] = b"junk", b"more junk"
        with pytest.raises(InvalidInput, match=r"^image 2: "):
            pool.submit(servable._decode_batch, bad).result()
