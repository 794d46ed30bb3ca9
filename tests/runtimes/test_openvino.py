"""OpenVINO on the same ONNX files as ONNX Runtime: same numbers, dynamic batch, threads, errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgeinfer.errors import InvalidInput, NotReady
from edgeinfer.models.repository import StoredModel
from edgeinfer.runtimes.base import Runtime, RuntimeOptions, TensorSpec
from edgeinfer.runtimes.onnxruntime import OnnxRuntimeFactory
from edgeinfer.runtimes.openvino import OpenVinoFactory
from edgeinfer.system.threads import process_budget
from tests.runtimes.conftest import TinyModel

pytest.importorskip("openvino")
FACTORY = OpenVinoFactory()


def test_tiny_model_matches_numpy_at_every_batch_size(tiny_onnx: TinyModel) -> None:
    rng = np.random.default_rng(3)
    with FACTORY.load(tiny_onnx.path, RuntimeOptions(threads=1)) as runtime:
        assert isinstance(runtime, Runtime)
        assert runtime.inputs == [TensorSpec("x", "float32", (None, 3, 8, 8))]
        assert runtime.outputs == [TensorSpec("y", "float32", (None, 4))]
        results = []
        for batch in (1, 4, 1, 3):
            x = rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)
            y = runtime.run({"x": x})["y"]
            assert y.shape == (batch, 4)
            np.testing.assert_allclose(y, tiny_onnx.reference(x), rtol=1e-4, atol=1e-6)
            results.append(y)
        # outputs are copies: a later request must not overwrite an earlier result
        assert results[0] is not results[2]


def test_compiled_with_latency_hint_f32_and_the_leased_threads(tiny_onnx: TinyModel) -> None:
    with FACTORY.load(tiny_onnx.path, RuntimeOptions(threads=1)) as runtime:
        props = runtime.properties
        assert runtime.threads == 1
        assert props["INFERENCE_NUM_THREADS"] == "1"
        assert props["PERFORMANCE_HINT"] == "LATENCY"
        assert props["INFERENCE_PRECISION_HINT"] == "f32"


def test_thread_count_cannot_bypass_the_budget(tiny_onnx: TinyModel) -> None:
    free = process_budget().free
    with pytest.raises(InvalidInput, match="threads="):
        FACTORY.load(tiny_onnx.path, RuntimeOptions(threads=1, extra={"INFERENCE_NUM_THREADS": "8"}))
    with pytest.raises(InvalidInput, match="cannot compile"):
        FACTORY.load(tiny_onnx.path, RuntimeOptions(threads=1, extra={"NO_SUCH_PROPERTY": "1"}))
    assert process_budget().free == free


def test_wrong_inputs_raise_invalid_input_and_it_keeps_working(tiny_onnx: TinyModel) -> None:
    with FACTORY.load(tiny_onnx.path, RuntimeOptions(threads=1)) as runtime:
        for feeds in (
            {"input": np.zeros((1, 3, 8, 8), np.float32)},
            {"x": np.zeros((1, 3, 8, 7), np.float32)},
            {"x": np.zeros((1, 3, 8, 8), np.uint8)},
        ):
            with pytest.raises(InvalidInput):
                runtime.run(feeds)
        x = np.ones((2, 3, 8, 8), np.float32)
        np.testing.assert_allclose(runtime.run({"x": x})["y"], tiny_onnx.reference(x), rtol=1e-4)
    with pytest.raises(NotReady):
        runtime.run({"x": x})


def test_mobilenet_top5_equals_onnxruntime_on_real_photos(
    mobilenet: StoredModel, photo_batch: tuple[tuple[str, ...], np.ndarray]
) -> None:
    names, batch = photo_batch
    assert len(names) >= 5, f"too few sample photos installed: {names}"
    with OnnxRuntimeFactory().load(mobilenet.path, RuntimeOptions(threads=1)) as ort_runtime:
        name_in, name_out = ort_runtime.inputs[0].name, ort_runtime.outputs[0].name
        expected = ort_runtime.run({name_in: batch})[name_out]
    with FACTORY.load(mobilenet.path, RuntimeOptions(threads=1)) as ov_runtime:
        got = ov_runtime.run({name_in: batch})[name_out]
        one = ov_runtime.run({name_in: batch[:1]})[name_out]
    for name, want, have in zip(names, expected, got, strict=True):
        assert list(np.argsort(have)[::-1][:5]) == list(np.argsort(want)[::-1][:5]), name
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(one, expected[:1], atol=1e-4)


def test_results_keep_their_values_after_later_calls_and_inputs_are_untouched(tiny_onnx: TinyModel) -> None:
    """The request reads inputs in place and reuses its output buffers: what ``run`` returned must
    be a copy that later calls (batch 1 on the static compile, other batches on the dynamic one)
    cannot change, and the caller's input must not be written."""
    rng = np.random.default_rng(5)
    first = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    kept = first.copy()
    with FACTORY.load(tiny_onnx.path, RuntimeOptions(threads=1)) as runtime:
        y = runtime.run({"x": first})["y"]
        expected = y.copy()
        for batch in (1, 1, 5, 1):
            runtime.run({"x": rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)})
        np.testing.assert_array_equal(y, expected)
        np.testing.assert_array_equal(first, kept)
        np.testing.assert_allclose(runtime.run({"x": first})["y"], expected, rtol=1e-6)


def _blobs(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.blob"))


def test_a_compiled_model_is_kept_and_the_next_load_imports_it(
    mobilenet: StoredModel, photo_batch: tuple[tuple[str, ...], np.ndarray], tmp_path: Path
) -> None:
    _, batch = photo_batch
    options = RuntimeOptions(threads=1, compiled_cache_dir=tmp_path)
    with FACTORY.load(mobilenet.path, RuntimeOptions(threads=1)) as plain:
        name_in, name_out = plain.inputs[0].name, plain.outputs[0].name
        expected = plain.run({name_in: batch[:1]})[name_out]
        assert plain.properties["LOADED_FROM_CACHE"] == "False"
    with FACTORY.load(mobilenet.path, options) as first:
        assert first.properties["LOADED_FROM_CACHE"] == "False"
        np.testing.assert_array_equal(first.run({name_in: batch[:1]})[name_out], expected)
    assert len(_blobs(tmp_path / "openvino")) == 1  # the batch-1 compile
    with FACTORY.load(mobilenet.path, options) as second:
        assert second.properties["LOADED_FROM_CACHE"] == "True"
        np.testing.assert_array_equal(second.run({name_in: batch[:1]})[name_out], expected)


def test_a_damaged_or_unwritable_cache_costs_nothing_but_time(tiny_onnx: TinyModel, tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    options = RuntimeOptions(threads=1, compiled_cache_dir=tmp_path)
    with FACTORY.load(tiny_onnx.path, options) as runtime:
        expected = runtime.run({"x": x})["y"]
    for blob in _blobs(tmp_path / "openvino"):
        blob.chmod(0o600)
        blob.write_bytes(b"not a compiled model" * 10)
    with FACTORY.load(tiny_onnx.path, options) as runtime:
        np.testing.assert_allclose(runtime.run({"x": x})["y"], expected, rtol=1e-6)
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "openvino").write_text("a file where the cache folder would go")
    with FACTORY.load(tiny_onnx.path, RuntimeOptions(threads=1, compiled_cache_dir=blocked)) as runtime:
        np.testing.assert_allclose(runtime.run({"x": x})["y"], expected, rtol=1e-6)
        assert runtime.properties["LOADED_FROM_CACHE"] == "False"


def test_a_bad_option_is_reported_as_such_not_blamed_on_the_cache(
    tiny_onnx: TinyModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the cache's warning ("could not use its cache ... compiling without it") came first."""
    options = RuntimeOptions(threads=1, extra={"NONSENSE": "1"}, compiled_cache_dir=tmp_path)
    with caplog.at_level("WARNING"), pytest.raises(InvalidInput, match="NONSENSE"):
        FACTORY.load(tiny_onnx.path, options)
    assert "cache" not in caplog.text


def test_the_cache_keeps_the_most_recently_compiled_models_within_its_size(tmp_path: Path) -> None:
    from edgeinfer.runtimes import openvino

    for age, name in enumerate(["new", "middle", "old"]):
        blob = tmp_path / f"{name}.blob"
        blob.write_bytes(b"x" * 100)
        os.utime(blob, (1_000_000 - age * 1000, 1_000_000 - age * 1000))
    (tmp_path / "other.txt").write_bytes(b"y" * 1000)  # not OpenVINO's: left alone
    openvino._prune(tmp_path, max_bytes=250)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["middle.blob", "new.blob", "other.txt"]
    openvino._prune(tmp_path, max_bytes=1000)
    assert len(list(tmp_path.glob("*.blob"))) == 2
