"""GPTQ weight rounding: same grid as ONNX Runtime's, smaller output error than rounding to nearest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnxruntime.quantization import QuantType

from edgeinfer.models.recipes import Int8Recipe
from edgeinfer.models.rounding import round_weights
from tests.models.qdq import quantize_qdq, run

CHANNELS = 8


def _conv_model(weight: np.ndarray, group: int, strides: int) -> onnx.ModelProto:
    node = onnx.helper.make_node(
        "Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1], group=group, strides=[strides] * 2
    )
    bias = np.zeros(weight.shape[0], dtype=np.float32)
    graph = onnx.helper.make_graph(
        [node],
        "conv",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, CHANNELS, 16, 16])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def _smooth_inputs(rng: np.random.Generator, count: int) -> np.ndarray:
    """Spatially and across-channel correlated inputs, like image features (neighbours move together)."""
    base = rng.normal(0, 1, (count, 1, 16, 16)).cumsum(axis=2).cumsum(axis=3) / 4
    return (base + 0.3 * rng.normal(0, 1, (count, CHANNELS, 16, 16))).astype(np.float32)


def _quantize(model: onnx.ModelProto, calibration: np.ndarray, folder: Path) -> onnx.ModelProto:
    """As edgeinfer's INT8 builds quantize: uint8 activations, int8 weights per output channel."""
    return quantize_qdq(
        model,
        calibration,
        folder,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )


def _stored(quantized: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(i for i in quantized.graph.initializer if i.name == name))


def _with_weight(model: onnx.ModelProto, weight: np.ndarray) -> onnx.ModelProto:
    """The float model with its weights replaced (to measure the weight error alone)."""
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    target = next(i for i in changed.graph.initializer if i.name == "w")
    target.CopyFrom(numpy_helper.from_array(weight.astype(np.float32), "w"))
    return changed


@pytest.mark.parametrize(
    ("group", "strides"), [(1, 1), (CHANNELS, 2)], ids=["dense 3x3", "depthwise stride 2"]
)
def test_gptq_lowers_the_output_error_of_weight_rounding(tmp_path: Path, group: int, strides: int) -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.2, (16 if group == 1 else CHANNELS, CHANNELS // group, 3, 3)).astype(np.float32)
    model = _conv_model(weight, group, strides)
    calibration, unseen = _smooth_inputs(rng, 48), _smooth_inputs(rng, 48)
    quantized = _quantize(model, calibration, tmp_path)
    scale = _stored(quantized, "w_scale").reshape(-1, 1, 1, 1)
    nearest = _stored(quantized, "w_quantized").copy()

    assert round_weights(quantized, model, calibration) == 1

    rounded = _stored(quantized, "w_quantized")
    assert rounded.dtype == nearest.dtype == np.int8
    assert np.abs(rounded.astype(int)).max() <= 127  # ONNX Runtime's symmetric grid, scales untouched
    np.testing.assert_array_equal(_stored(quantized, "w_scale").reshape(-1, 1, 1, 1), scale)
    assert 0.02 < (rounded != nearest).mean() < 0.5  # some weights go the other way, most stay
    assert np.abs(rounded.astype(int) - nearest.astype(int)).max() <= 2
    for inputs in (calibration, unseen):  # not just fitted to the calibration inputs
        reference = run(model, inputs)
        error_nearest = np.mean((run(_with_weight(model, nearest * scale), inputs) - reference) ** 2)
        error_gptq = np.mean((run(_with_weight(model, rounded * scale), inputs) - reference) ** 2)
        assert error_gptq < 0.7 * error_nearest


def test_depthwise_only_leaves_dense_layers_as_rounded(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    model = _conv_model(rng.normal(0, 0.2, (16, CHANNELS, 3, 3)).astype(np.float32), 1, 1)
    calibration = _smooth_inputs(rng, 16)
    quantized = _quantize(model, calibration, tmp_path)
    before = _stored(quantized, "w_quantized").copy()
    assert round_weights(quantized, model, calibration, depthwise_only=True) == 0
    np.testing.assert_array_equal(_stored(quantized, "w_quantized"), before)


def test_recipe_refuses_an_unknown_rounding() -> None:
    with pytest.raises(ValueError, match="weight_rounding must be one of nearest, gptq, gptq-depthwise"):
        Int8Recipe(weight_rounding="stochastic")
