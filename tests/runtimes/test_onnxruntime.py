"""ONNX Runtime on a tiny real ONNX graph (checked against numpy) and on MobileNetV2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeinfer.errors import IntegrityError, InvalidInput, NotFound, NotReady
from edgeinfer.models.repository import StoredModel
from edgeinfer.runtimes.base import Runtime, RuntimeOptions, TensorSpec
from edgeinfer.runtimes.onnxruntime import OnnxRuntimeFactory
from edgeinfer.system.threads import process_budget
from tests.runtimes.conftest import TinyModel

FACTORY = OnnxRuntimeFactory()


def test_describes_inputs_and_outputs_with_dynamic_batch(tiny_onnx: TinyModel) -> None:
    with FACTORY.load(tiny_onnx.path, RuntimeOptions(threads=1)) as runtime:
        assert isinstance(runtime, Runtime)
        assert runtime.inputs == [TensorSpec("x", "float32", (None, 3, 8, 8))]
        assert runtime.outputs == [TensorSpec("y", "float32", (None, 4))]


def test_computes_what_numpy_computes_at_any_batch(tiny_onnx: TinyModel) -> None:
    rng = np.random.default_rng(1)
    with FACTORY.load(tiny_onnx.path, RuntimeOptions(threads=1)) as runtime:
        for batch in (1, 5, 2):
            x = rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)
            y = runtime.run({"x": x})["y"]
            assert y.shape == (batch, 4) and y.dtype == np.float32
            np.testing.assert_allclose(y, tiny_onnx.reference(x), rtol=1e-5, atol=1e-6)


def test_session_options_default_to_the_measured_settings(tiny_onnx: TinyModel) -> None:
    import onnxruntime as ort

    with FACTORY.load(tiny_onnx.path, RuntimeOptions(threads=1)) as runtime:
        so = runtime.session_options
        assert runtime.threads == 1 and so.intra_op_num_threads == 1
        assert so.inter_op_num_threads == 1
        assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
        assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_extra_options_override_the_defaults(tiny_onnx: TinyModel) -> None:
    import onnxruntime as ort

    extra = {
        "session.intra_op.allow_spinning": "1",
        "graph_optimization_level": "basic",
        "execution_mode": "parallel",
        "inter_op_threads": "2",
        "enable_cpu_mem_arena": "0",
    }
    with FACTORY.load(tiny_onnx.path, RuntimeOptions(threads=1, extra=extra)) as runtime:
        so = runtime.session_options
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1"
        assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        assert so.execution_mode == ort.ExecutionMode.ORT_PARALLEL
        assert not so.enable_cpu_mem_arena
        x = np.ones((1, 3, 8, 8), dtype=np.float32)
        np.testing.assert_allclose(runtime.run({"x": x})["y"], tiny_onnx.reference(x), rtol=1e-5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"spinning": "off"}, "unknown onnxruntime option"),
        ({"graph_optimization_level": "max"}, "is not one of"),
        ({"inter_op_threads": "two"}, "whole number"),
        ({"execution_mode": "parallel"}, "needs inter_op_threads >= 2"),
    ],
)
def test_bad_options_are_rejected_and_release_the_threads(
    tiny_onnx: TinyModel, extra: dict[str, str], message: str
) -> None:
    free = process_budget().free
    with pytest.raises(InvalidInput, match=message):
        FACTORY.load(tiny_onnx.path, RuntimeOptions(threads=1, extra=extra))
    assert process_budget().free == free


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({"image": np.zeros((1, 3, 8, 8), np.float32)}, r"missing input\(s\) \['x'\] and unknown input\(s\)"),
        ({"x": np.zeros((1, 3, 9, 8), np.float32)}, r"must have shape \(-1, 3, 8, 8\)"),
        ({"x": np.zeros((3, 8, 8), np.float32)}, "must have shape"),
        ({"x": np.zeros((1, 3, 8, 8), np.float64)}, "must be float32, got float64"),
        ({"x": [[0.0]]}, "must be a numpy array"),
        ({}, "missing input"),
    ],
)
def test_wrong_inputs_raise_invalid_input_and_the_session_keeps_working(
    tiny_onnx: TinyModel, feeds: dict[str, np.ndarray], message: str
) -> None:
    with FACTORY.load(tiny_onnx.path, RuntimeOptions(threads=1)) as runtime:
        with pytest.raises(InvalidInput, match=message):
            runtime.run(feeds)
        x = np.zeros((2, 3, 8, 8), np.float32)
        np.testing.assert_allclose(runtime.run({"x": x})["y"], tiny_onnx.reference(x), rtol=1e-5)


def test_missing_and_corrupt_model_files(tmp_path: Path) -> None:
    free = process_budget().free
    with pytest.raises(NotFound, match="does not exist"):
        FACTORY.load(tmp_path / "absent.onnx", RuntimeOptions())
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf graph" * 10)
    with pytest.raises(IntegrityError, match="onnxruntime cannot load"):
        FACTORY.load(corrupt, RuntimeOptions())
    assert process_budget().free == free


def test_close_gives_threads_back_and_stops_runs(tiny_onnx: TinyModel) -> None:
    budget = process_budget()
    free = budget.free
    runtime = FACTORY.load(tiny_onnx.path, RuntimeOptions(threads=1))
    assert budget.free == free - 1
    runtime.close()
    runtime.close()
    assert budget.free == free
    with pytest.raises(NotReady):
        runtime.run({"x": np.zeros((1, 3, 8, 8), np.float32)})


def test_default_threads_take_every_free_core(tiny_onnx: TinyModel) -> None:
    budget = process_budget()
    free = budget.free
    with FACTORY.load(tiny_onnx.path, RuntimeOptions()) as runtime:
        assert runtime.threads == free
        assert runtime.session_options.intra_op_num_threads == free


def test_version_comes_from_package_metadata() -> None:
    import onnxruntime as ort

    assert FACTORY.available()
    assert FACTORY.version() == ort.__version__


def test_mobilenet_knows_a_cat_and_an_espresso(
    mobilenet: StoredModel, photo_batch: tuple[tuple[str, ...], np.ndarray]
) -> None:
    names, batch = photo_batch
    with FACTORY.load(mobilenet.path, RuntimeOptions(threads=1)) as runtime:
        probabilities = runtime.run({runtime.inputs[0].name: batch})[runtime.outputs[0].name]
    top1 = dict(zip(names, probabilities.argmax(axis=1).tolist(), strict=True))
    assert top1["chelsea"] == 285  # Egyptian cat
    assert top1["coffee"] == 967  # espresso
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
