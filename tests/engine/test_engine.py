"""The engine end to end on the real models and real photos."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeinfer import EngineOptions
from edgeinfer.engine import Engine
from edgeinfer.engine.prepare import prepare_images
from edgeinfer.errors import InvalidInput, ModelNotFound, NotFound, RuntimeUnavailable
from edgeinfer.imaging import preprocess
from edgeinfer.models.repository import ModelRepository
from edgeinfer.system import helper

# Photos whose subject is unambiguous, with MobileNetV2's ImageNet top-1 (torchvision weights).
EXPECTED_TOP1 = {
    "chelsea": (285, "Egyptian cat"),
    "coffee": (967, "espresso"),
    "motorcycle_left": (665, "moped"),
    "china": (698, "palace"),
    "camera": (872, "tripod"),
}


@pytest.fixture(scope="module")
def engine(repo: ModelRepository) -> Iterator[Engine]:
    # One thread, so the tests below can open a second runtime without exceeding the cores.
    with Engine.load("mobilenet_v2", runtime="onnxruntime", threads=1, repository=repo) as loaded:
        yield loaded


@pytest.mark.parametrize("name", sorted(EXPECTED_TOP1))
def test_known_top1(engine: Engine, photos: dict[str, Path], name: str) -> None:
    result = engine.classify(photos[name], top_k=5)
    index, label = EXPECTED_TOP1[name]
    assert (result.top.index, result.top.label) == (index, label)
    assert len(result.predictions) == 5
    scores = [p.score for p in result.predictions]
    assert scores == sorted(scores, reverse=True)


def test_scores_match_the_reference_figures(engine: Engine, photos: dict[str, Path]) -> None:
    assert engine.classify(photos["chelsea"]).top.score == pytest.approx(0.71, abs=0.02)
    assert engine.classify(photos["coffee"]).top.score == pytest.approx(0.99, abs=0.01)


def test_every_source_type_gives_the_same_answer(engine: Engine, photos: dict[str, Path]) -> None:
    path = photos["chelsea"]
    pil = Image.open(path)
    answers = {
        engine.classify(source).predictions
        for source in (path, str(path), path.read_bytes(), pil, np.asarray(pil.convert("RGB")))
    }
    assert len(answers) == 1


def test_stages_compose_to_classify(engine: Engine, photos: dict[str, Path]) -> None:
    rgb = engine.decode(photos["coffee"])
    sample = engine.preprocess(rgb)
    assert sample.shape == (3, 224, 224)
    probs = engine.infer(sample[None])
    assert probs.shape == (1, 1000)
    assert probs.sum() == pytest.approx(1.0, abs=1e-4)
    assert engine.postprocess(probs[0], top_k=1)[0].label == "espresso"


def test_batch_equals_singles(engine: Engine, photos: dict[str, Path]) -> None:
    names = ["chelsea", "coffee", "china"]
    batch = engine.classify_batch([photos[n] for n in names], top_k=3)
    for name, result in zip(names, batch, strict=True):
        single = engine.classify(photos[name], top_k=3)
        assert [p.index for p in result.predictions] == [p.index for p in single.predictions]
        assert result.predictions[0].score == pytest.approx(single.predictions[0].score, abs=1e-5)


def test_a_batch_is_prepared_on_two_threads_and_timed_as_one(
    engine: Engine, photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["chelsea", "coffee", "china", "astronaut", "rocket", "camera"]
    alone = np.stack([engine.preprocess(engine.decode(photos[n])) for n in names])
    threads: list[str] = []
    decode = engine.decode

    def recording(source: object) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return decode(source)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "decode", recording)
    started = time.perf_counter_ns()
    prepared = prepare_images([photos[n] for n in names], engine.decode, engine.preprocess)
    wall_ns = time.perf_counter_ns() - started
    np.testing.assert_array_equal(prepared.batch, alone)  # the same tensors, whoever made them
    assert len(threads) == len(names)
    assert prepared.decode_ns > 0 and prepared.preprocess_ns > 0
    results = engine.classify_batch([photos[n] for n in names])
    assert any(name.startswith("edgeinfer-helper") for name in threads)
    timings = results[0].timings
    # the batch's decode + preprocess is the wall time they took together, not the threads' sum
    assert timings.decode_ns > 0 and timings.preprocess_ns > 0
    assert timings.decode_ns + timings.preprocess_ns < 3 * wall_ns


def test_one_image_still_has_its_lower_half_made_on_the_helper_thread(
    engine: Engine, photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    fromarray = preprocess.Image.fromarray

    def recording(array: np.ndarray, mode: str) -> Image.Image:
        threads.append(threading.current_thread().name)
        return fromarray(array, mode)

    monkeypatch.setattr(preprocess.Image, "fromarray", recording)
    for _ in range(10):
        engine.classify(photos["astronaut"])
    assert len(threads) == 20
    assert any(name.startswith("edgeinfer-helper") for name in threads)


def test_timings_are_recorded(engine: Engine, photos: dict[str, Path]) -> None:
    timings = engine.classify(photos["coffee"]).timings
    assert timings.decode_ns > 0 and timings.preprocess_ns > 0 and timings.infer_ns > 0
    assert (
        timings.total_ns
        == timings.decode_ns + timings.preprocess_ns + timings.infer_ns + timings.postprocess_ns
    )


def test_efficientnet_lite0_uses_its_own_preprocessing(
    repo: ModelRepository, photos: dict[str, Path]
) -> None:
    with Engine.load("efficientnet_lite0", runtime="onnxruntime", threads=1, repository=repo) as lite:
        assert lite.config.preprocessing.mean == (127.0, 127.0, 127.0)
        assert lite.classify(photos["coffee"]).top.label == "espresso"


def test_null_runtime_returns_right_shape(repo: ModelRepository, photos: dict[str, Path]) -> None:
    with Engine.load("mobilenet_v2", runtime="null", repository=repo) as null:
        result = null.classify(photos["coffee"], top_k=3)
        assert len(result.predictions) == 3


def test_bad_inputs(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such image file"):
        engine.classify(tmp_path / "missing.jpg")
    with pytest.raises(InvalidInput, match="not a supported image"):
        engine.classify(b"GIF89a-but-not-really")
    with pytest.raises(InvalidInput, match="top_k"):
        engine.postprocess(np.zeros(1000, dtype=np.float32), top_k=0)
    with pytest.raises(InvalidInput, match="batch"):
        engine.infer(np.zeros((3, 224, 224), dtype=np.float32))
    with pytest.raises(InvalidInput, match="shape"):
        engine.infer(np.zeros((1, 3, 200, 200), dtype=np.float32))
    with pytest.raises(InvalidInput, match="float32"):
        engine.infer(np.zeros((1, 3, 224, 224), dtype=np.float64))
    scores = engine.infer(np.zeros((1, 3, 224, 224), dtype=np.float32))
    with pytest.raises(InvalidInput, match=r"one row of scores; got shape \(1, 1000\)"):
        engine.postprocess(scores)  # infer's whole output, not a row of it
    for top_k in (2.5, None, "3", True):
        with pytest.raises(InvalidInput, match="top_k must be a whole number >= 1"):
            engine.classify(np.zeros((64, 64, 3), np.uint8), top_k=top_k)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="no pixels"):
        engine.preprocess(np.zeros((0, 0, 3), np.uint8))
    # ...and the engine keeps working afterwards.
    assert engine.infer(np.zeros((2, 3, 224, 224), dtype=np.float32)).shape == (2, 1000)


def test_classify_batch_takes_a_sequence_or_a_stack_and_names_the_bad_image(
    engine: Engine, photos: dict[str, Path]
) -> None:
    coffee = photos["coffee"]
    for single in (str(coffee), coffee, coffee.read_bytes(), Image.open(coffee)):
        with pytest.raises(InvalidInput, match="takes a sequence of images; use classify for one"):
            engine.classify_batch(single)  # type: ignore[arg-type]
    picture = np.asarray(Image.open(coffee).convert("RGB"))
    stacked = engine.classify_batch(np.stack([picture, picture[::-1]]))
    assert [r.top.index for r in stacked] == [
        r.top.index for r in engine.classify_batch([picture, picture[::-1]])
    ]
    with pytest.raises(InvalidInput, match="array of N pictures"):
        engine.classify_batch(picture)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"image 1: .*not a supported image"):
        engine.classify_batch([picture, b"junk", coffee])
    for _ in range(5):  # the first bad image by position is named, whichever thread failed first
        with pytest.raises(InvalidInput, match=r"^image 2: .*not a supported image"):
            engine.classify_batch([picture, coffee, b"junk", b"more junk", np.zeros((0, 4, 3), np.uint8)])
    with pytest.raises(NotFound, match=r"^no such image file"):  # one image: no position
        engine.classify(coffee.with_name("missing.jpg"))


def test_classify_each_gives_classify_s_answers_in_order_with_each_bad_image_s_error_in_its_place(
    engine: Engine, photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["chelsea", "coffee", "astronaut", "china", "camera", "rocket"]
    sources: list[object] = [photos[n] for n in names]
    sources[2:2] = [b"junk"]
    sources.append(photos["coffee"].with_name("missing.jpg"))
    sources.append(photos["motorcycle_left"])
    decoded_on: list[str] = []
    decode = engine.decode

    def recording(source: object) -> np.ndarray:
        decoded_on.append(threading.current_thread().name)
        return decode(source)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "decode", recording)
    outcomes = list(engine.classify_each(sources, top_k=3))  # type: ignore[arg-type]
    assert len(outcomes) == len(sources)
    assert isinstance(outcomes[2], InvalidInput) and "not a supported image" in str(outcomes[2])
    assert isinstance(outcomes[-2], NotFound) and "no such image file" in str(outcomes[-2])
    assert sum(not isinstance(o, Exception) for o in outcomes) == len(names) + 1
    for source, outcome in zip(sources, outcomes, strict=True):
        if isinstance(outcome, Exception):
            continue
        alone = engine.classify(source, top_k=3)  # type: ignore[arg-type]
        assert [p.index for p in outcome.predictions] == [p.index for p in alone.predictions]
        assert [p.score for p in outcome.predictions] == pytest.approx([p.score for p in alone.predictions])
        timings = outcome.timings
        assert timings.decode_ns > 0 and timings.preprocess_ns > 0 and timings.infer_ns > 0
    # the next image was read and decoded ahead, on the helper thread, while one was inferred
    assert any(name.startswith("edgeinfer-helper") for name in decoded_on)


def test_classify_each_takes_its_images_lazily_and_leaves_nothing_running_when_stopped(
    engine: Engine, photos: dict[str, Path]
) -> None:
    picture = np.asarray(Image.open(photos["coffee"]).convert("RGB"))
    pulled: list[int] = []

    def frames() -> Iterator[np.ndarray]:
        for index in range(1000):
            pulled.append(index)
            yield picture

    results = engine.classify_each(frames())
    first = next(results)
    assert not isinstance(first, Exception) and first.top.label == "espresso"
    assert len(pulled) <= 2  # this frame and, at most, the one prepared ahead
    results.close()
    # the frame that was being prepared ahead is finished or taken back: the helper is free
    assert helper._helper().submit(threading.current_thread).result(timeout=5) is not None
    stacked = list(engine.classify_each(np.stack([picture, picture[::-1]])))
    assert [r.top.index for r in stacked] == [  # type: ignore[union-attr]
        r.top.index for r in engine.classify_batch([picture, picture[::-1]])
    ]
    assert list(engine.classify_each([])) == []


def test_classify_each_refuses_a_lone_image_or_bad_top_k_when_called(
    engine: Engine, photos: dict[str, Path]
) -> None:
    coffee = photos["coffee"]
    for single in (str(coffee), coffee, coffee.read_bytes(), Image.open(coffee)):
        with pytest.raises(InvalidInput, match="takes an iterable of images; use classify for one"):
            engine.classify_each(single)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="array of N pictures"):
        engine.classify_each(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(InvalidInput, match="top_k must be a whole number >= 1"):
        engine.classify_each([coffee], top_k=0)


def test_unknown_model_and_runtime(repo: ModelRepository) -> None:
    with pytest.raises(ModelNotFound, match="not in the zoo"):
        Engine.load("no_such_model", repository=repo)
    with pytest.raises(RuntimeUnavailable):
        Engine.load("mobilenet_v2", runtime="tensorrt", repository=repo)


def test_threads_below_one_are_invalid_input(repo: ModelRepository) -> None:
    for threads in (0, -2, 1.5, "2", True):
        with pytest.raises(InvalidInput, match="threads must be a whole number >= 1"):
            Engine.load("mobilenet_v2", runtime="onnxruntime", threads=threads, repository=repo)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="runtime must be a runtime's name"):
        Engine.load("mobilenet_v2", runtime=None, repository=repo)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (EngineOptions(), None),
        ({"fast_decode": True}, "options must be an EngineOptions, got dict"),
    ],
)
def test_bad_engine_options_are_refused_before_anything_opens(
    engine: Engine, repo: ModelRepository, options: object, message: str | None
) -> None:
    if message is None:  # the good case first: a load, closed, leaves the threads it took
        Engine.load(
            "mobilenet_v2", runtime="onnxruntime", threads=1, repository=repo, options=options
        ).close()  # type: ignore[arg-type]
        return
    with pytest.raises(InvalidInput, match=message):
        Engine.load("mobilenet_v2", runtime="onnxruntime", threads=1, repository=repo, options=options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_image_pixels", 0), ("max_image_bytes", -1), ("max_image_pixels", 1.5), ("fast_decode", "yes")],
)
def test_engine_options_name_their_own_bad_field(field: str, value: object) -> None:
    with pytest.raises(InvalidInput, match=f"EngineOptions.{field} must be"):
        EngineOptions(**{field: value})  # type: ignore[arg-type]


def test_a_load_that_fails_after_the_runtime_opened_gives_its_threads_back(
    engine: Engine, repo: ModelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeinfer.engine import engine as engine_module
    from edgeinfer.errors import StorageError
    from edgeinfer.system.threads import process_budget

    def unreadable(*args: object) -> list[str]:
        raise StorageError("labels unreadable")  # as a damaged labels file would

    free = process_budget().free
    with monkeypatch.context() as patch:
        patch.setattr(engine_module, "load_labels", unreadable)
        with pytest.raises(StorageError, match="labels unreadable"):
            Engine.load("mobilenet_v2", runtime="onnxruntime", threads=1, repository=repo)
    assert process_budget().free == free  # the runtime it opened was closed (its thread leaked)
    Engine.load("mobilenet_v2", runtime="onnxruntime", threads=1, repository=repo).close()


def test_runtime_options_reach_the_named_runtime(
    engine: Engine, repo: ModelRepository, photos: dict[str, Path]
) -> None:
    pytest.importorskip("openvino")
    from edgeinfer.system.machine import isa_flags

    bf16 = {"INFERENCE_PRECISION_HINT": "bf16"}
    with Engine.load(
        "mobilenet_v2", runtime="openvino", threads=1, repository=repo, runtime_options=bf16
    ) as e:
        # OpenVINO computes in bfloat16 where the CPU can (AVX512_BF16 or AMX), in f32 elsewhere
        native = {"AVX512_BF16", "AMX_BF16"} & set(isa_flags())
        assert e.runtime.properties["INFERENCE_PRECISION_HINT"] == ("bf16" if native else "f32")
        for name, (index, _) in EXPECTED_TOP1.items():
            assert e.classify(photos[name]).top.index == index
    # options need a named runtime, and each runtime refuses what it does not know
    with pytest.raises(InvalidInput, match=r"name it \(runtime=\.\.\.\) instead of auto"):
        Engine.load("mobilenet_v2", repository=repo, runtime_options=bf16)
    with pytest.raises(InvalidInput, match=r"unknown onnxruntime option\(s\) \['INFERENCE_PRECISION_HINT'\]"):
        Engine.load("mobilenet_v2", runtime="onnxruntime", threads=1, repository=repo, runtime_options=bf16)
    with pytest.raises(InvalidInput, match="OpenVINO cannot compile"):
        Engine.load(
            "mobilenet_v2",
            runtime="openvino",
            threads=1,
            repository=repo,
            runtime_options={"INFERENCE_PRECISION_HINT": "int3"},
        )
    assert engine.classify(photos["coffee"]).top.label == "espresso"  # nothing else disturbed


def test_thread_budget_is_never_oversubscribed(engine: Engine, repo: ModelRepository) -> None:
    from edgeinfer.errors import Overloaded
    from edgeinfer.system.threads import process_budget

    total = process_budget().total
    with Engine.load("mobilenet_v2", runtime="onnxruntime", threads=total, repository=repo) as second:
        # The module's engine holds one thread, so the second gets what is left, not what it asked for.
        assert second.runtime.threads == total - 1
        if total == 2:
            with pytest.raises(Overloaded, match="no CPU threads left"):
                Engine.load("mobilenet_v2", runtime="onnxruntime", repository=repo)


def test_choose_runtime_says_what_load_would_open(repo: ModelRepository) -> None:
    assert Engine.choose_runtime("mobilenet_v2", runtime="ort", repository=repo) == "onnxruntime"
    chosen = Engine.choose_runtime("mobilenet_v2", threads=1, repository=repo)  # auto: probed, cached
    engine = Engine.load("mobilenet_v2", threads=1, repository=repo)
    try:
        assert engine.runtime.name == chosen
    finally:
        engine.close()
    with pytest.raises(RuntimeUnavailable, match="unknown runtime 'tpu'"):
        Engine.choose_runtime("mobilenet_v2", runtime="tpu", repository=repo)


def test_bf16_is_the_fp32_build_computed_by_openvino_in_bfloat16(
    repo: ModelRepository, photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("openvino")
    from edgeinfer.system import machine

    if not {"AVX512_BF16", "AMX_BF16"} & set(machine.isa_flags()):
        pytest.skip("this CPU has no bfloat16 arithmetic")
    assert Engine.choose_runtime("mobilenet_v2", precision="bf16", repository=repo) == "openvino"
    with Engine.load("mobilenet_v2", precision="bf16", threads=1, repository=repo) as e:
        assert (e.runtime.name, e.precision, e.config.precision) == ("openvino", "bf16", "fp32")
        assert e.runtime.properties["INFERENCE_PRECISION_HINT"] == "bf16"
        for name, (index, _) in EXPECTED_TOP1.items():
            assert e.classify(photos[name]).top.index == index, name
    with pytest.raises(RuntimeUnavailable, match="computed by openvino only"):
        Engine.load("mobilenet_v2", runtime="onnxruntime", precision="bf16", repository=repo)
    with pytest.raises(InvalidInput, match="a runtime option cannot change it"):
        Engine.load(
            "mobilenet_v2",
            runtime="openvino",
            precision="bf16",
            threads=1,
            repository=repo,
            runtime_options={"INFERENCE_PRECISION_HINT": "f32"},
        )
    with pytest.raises(InvalidInput, match="unknown precision 'bf17'; choose one of fp32, fp16, int8, bf16"):
        Engine.load("mobilenet_v2", precision="bf17", repository=repo)
    monkeypatch.setattr(machine, "this_cpu_flags", lambda: ("AVX2",))
    with pytest.raises(RuntimeUnavailable, match="this CPU has no bf16 arithmetic"):
        Engine.load("mobilenet_v2", precision="bf16", repository=repo)
