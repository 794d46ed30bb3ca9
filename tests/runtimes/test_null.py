"""The Null runtime: zeros of the right shape and dtype, the same input checks as a real runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeinfer.errors import IntegrityError, InvalidInput, NotReady
from edgeinfer.runtimes.base import Runtime, RuntimeOptions, TensorSpec
from edgeinfer.runtimes.null import NullFactory, NullRuntime
from edgeinfer.system.threads import process_budget
from tests.runtimes.conftest import TinyModel

IMAGE = TensorSpec("input", "float32", (None, 3, 224, 224))
SCORES = TensorSpec("probabilities", "float32", (None, 1000))
INDEX = TensorSpec("argmax", "int64", (None,))


def test_returns_zeros_with_the_input_batch_and_each_outputs_dtype() -> None:
    runtime = NullRuntime([IMAGE], [SCORES, INDEX])
    assert isinstance(runtime, Runtime)
    assert runtime.threads == 0
    for batch in (1, 7):
        out = runtime.run({"input": np.ones((batch, 3, 224, 224), np.float32)})
        assert out["probabilities"].shape == (batch, 1000) and out["probabilities"].dtype == np.float32
        assert out["argmax"].shape == (batch,) and out["argmax"].dtype == np.int64
        assert not out["probabilities"].any()


def test_checks_inputs_like_a_real_runtime() -> None:
    runtime = NullRuntime([IMAGE], [SCORES])
    with pytest.raises(InvalidInput, match="must have shape"):
        runtime.run({"input": np.ones((1, 224, 224, 3), np.float32)})
    with pytest.raises(InvalidInput, match="must be float32"):
        runtime.run({"input": np.ones((1, 3, 224, 224), np.uint8)})
    with pytest.raises(InvalidInput, match="missing input"):
        runtime.run({})
    runtime.close()
    with pytest.raises(NotReady):
        runtime.run({"input": np.ones((1, 3, 224, 224), np.float32)})


def test_loads_specs_from_an_onnx_file_without_taking_threads(tiny_onnx: TinyModel) -> None:
    free = process_budget().free
    with NullFactory().load(tiny_onnx.path, RuntimeOptions()) as runtime:
        assert process_budget().free == free
        assert runtime.inputs == [TensorSpec("x", "float32", (None, 3, 8, 8))]
        assert runtime.outputs == [TensorSpec("y", "float32", (None, 4))]
        assert runtime.run({"x": np.zeros((3, 3, 8, 8), np.float32)})["y"].shape == (3, 4)


def test_runtime_options_are_refused_not_ignored(tiny_onnx: TinyModel) -> None:
    with pytest.raises(InvalidInput, match=r"runtime 'null' takes no runtime options, got \['foo'\]"):
        NullFactory().load(tiny_onnx.path, RuntimeOptions(extra={"foo": "bar"}))


def test_loads_specs_from_a_tflite_file(efficientnet_tflite: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    with NullFactory().load(efficientnet_tflite, RuntimeOptions()) as runtime:
        out = runtime.run({"images": np.zeros((2, 224, 224, 3), np.float32)})
    assert out["Softmax"].shape == (2, 1000) and out["Softmax"].dtype == np.float32


def test_corrupt_onnx_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff" * 64)
    with pytest.raises(IntegrityError, match="cannot read ONNX model"):
        NullFactory().load(bad, RuntimeOptions())


def test_needs_specs() -> None:
    with pytest.raises(ValueError, match="at least one input"):
        NullRuntime([], [SCORES])
