"""Empirical bias correction: the INT8 network's mean output error, measured layer by layer, removed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgeinfer.models.bias import channel_means, correct_biases_empirically
from tests.models.qdq import quantize_qdq, run


def _two_convs(rng: np.random.Generator) -> onnx.ModelProto:
    """Conv -> Relu -> Conv, with a few large weights that round coarsely and shift the means."""
    w1 = (rng.normal(0, 0.1, (16, 4, 3, 3)) + (rng.random((16, 4, 3, 3)) < 0.03) * 2).astype(np.float32)
    w2 = (rng.normal(0, 0.1, (8, 16, 1, 1)) + (rng.random((8, 16, 1, 1)) < 0.05) * 2).astype(np.float32)
    nodes = [
        onnx.helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="first", pads=[1, 1, 1, 1]),
        onnx.helper.make_node("Relu", ["h"], ["r"], name="relu"),
        onnx.helper.make_node("Conv", ["r", "w2", "b2"], ["y"], name="second"),
    ]
    graph = onnx.helper.make_graph(
        nodes,
        "two_convs",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 4, 10, 10])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(np.zeros(16, np.float32), "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(np.zeros(8, np.float32), "b2"),
        ],
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_the_measured_mean_error_of_the_int8_network_is_removed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    model = _two_convs(rng)
    calibration = (rng.random((32, 4, 10, 10)) * 2 + 1).astype(np.float32)
    unseen = (rng.random((32, 4, 10, 10)) * 2 + 1).astype(np.float32)
    quantized = quantize_qdq(model, calibration, tmp_path)
    source_bytes = model.SerializeToString()
    before = {name: run(quantized, x) - run(model, x) for name, x in (("cal", calibration), ("new", unseen))}

    assert correct_biases_empirically(quantized, model, calibration) == 2  # both convolutions

    for name, x in (("cal", calibration), ("new", unseen)):  # per output channel, away from the border
        after = run(quantized, x) - run(model, x)
        mean_before = np.abs(before[name][:, :, 1:-1, 1:-1].mean(axis=(0, 2, 3))).mean()
        mean_after = np.abs(after[:, :, 1:-1, 1:-1].mean(axis=(0, 2, 3))).mean()
        assert mean_after < mean_before / 3, name
    assert model.SerializeToString() == source_bytes  # the float model is only read


def test_channel_means_of_the_input_and_of_inner_tensors() -> None:
    rng = np.random.default_rng(1)
    model = _two_convs(rng)
    x = rng.random((20, 4, 10, 10)).astype(np.float32)  # 20: a last batch shorter than the others
    means = channel_means(model, ["x", "y"], x)
    np.testing.assert_allclose(means["x"], x.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(means["y"], run(model, x).mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
