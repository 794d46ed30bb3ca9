"""Cross-layer equalization: same function as FP32 (ReLU6 kept exact), evened-out weight ranges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgeinfer.errors import NotFound
from edgeinfer.models import calibration
from edgeinfer.models.calibration import calibration_set, held_out_set
from edgeinfer.models.equalize import equalize, equalize_residuals, last_residual_stream
from edgeinfer.models.quality import predict
from edgeinfer.models.repository import ModelRepository


def _ranges(model: onnx.ModelProto, name: str) -> np.ndarray:
    weight = next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)
    return np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)


def test_equalized_model_computes_the_same_function(
    repo: ModelRepository, photos: dict[str, Path], tmp_path: Path
) -> None:
    stored = repo.get("mobilenet_v2")
    spec = stored.config.preprocessing
    original = onnx.load(str(stored.path))
    equalized, pairs = equalize(original, calibration_set(spec, 2).samples)
    assert pairs == 34  # every expand->depthwise and depthwise->project pair of MobileNetV2
    path = tmp_path / "equalized.onnx"
    onnx.save_model(equalized, str(path))
    held_out = held_out_set(spec, 2)
    before, after = predict(stored.path, held_out), predict(path, held_out)
    np.testing.assert_array_equal(before.argmax(axis=1), after.argmax(axis=1))
    assert np.abs(before - after).max() < 0.02
    # the first depthwise layer's per-channel weight ranges are far more even than before
    name = "features.1.conv.0.0.weight"
    spread_before = _ranges(original, name).max() / _ranges(original, name).min()
    spread_after = _ranges(equalized, name).max() / _ranges(equalized, name).min()
    assert spread_after < spread_before / 2
    # the input model is left untouched
    assert onnx.load(str(stored.path)).SerializeToString() == original.SerializeToString()


def _channel_peaks(model: onnx.ModelProto, tensor: str, samples: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    value = session.run([tensor], {session.get_inputs()[0].name: samples})[0]
    return np.asarray(np.abs(value).max(axis=(0, 2, 3)))


def test_residual_streams_are_equalized_without_changing_the_function(
    repo: ModelRepository, photos: dict[str, Path], tmp_path: Path
) -> None:
    stored = repo.get("mobilenet_v2")
    spec = stored.config.preprocessing
    original = onnx.load(str(stored.path))
    samples = calibration_set(spec, 1).samples
    equalized, streams = equalize_residuals(original, samples, strength=0.5)
    assert streams == 5  # the 24, 32, 64, 96 and 160-channel stages (the others have no Add)
    path = tmp_path / "residuals.onnx"
    onnx.save_model(equalized, str(path))
    held_out = held_out_set(spec, 1)
    before, after = predict(stored.path, held_out), predict(path, held_out)
    np.testing.assert_array_equal(before.argmax(axis=1), after.argmax(axis=1))
    assert np.abs(before - after).max() < 1e-4
    # the last stage's stream: its channels' ranges are closer together (max/median 5.1 -> 2.9)
    peaks_before = _channel_peaks(original, "features.16.add", samples)
    peaks_after = _channel_peaks(equalized, "features.16.add", samples)
    assert peaks_after.max() / np.median(peaks_after) < 0.7 * peaks_before.max() / np.median(peaks_before)


def test_missing_sample_photos_give_a_clear_error(
    repo: ModelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calibration, "available_photos", lambda names=None: {})
    with pytest.raises(NotFound, match=r"pip install 'edgeinfer\[samples\]'"):
        calibration_set(repo.get("mobilenet_v2").config.preprocessing)


def test_last_residual_stream_of_mobilenet_v2(repo: ModelRepository) -> None:
    graph = onnx.load(str(repo.get("mobilenet_v2").path)).graph
    assert last_residual_stream(graph) == [
        "features.14.conv.2",
        "features.15.conv.0.0",
        "features.15.conv.2",
        "features.15.add",
        "features.16.conv.0.0",
        "features.16.conv.2",
        "features.16.add",
        "features.17.conv.0.0",
    ]


def test_a_graph_without_residual_streams_has_no_last_stream() -> None:
    node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    graph = onnx.helper.make_graph(
        [node],
        "plain",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((4, 3, 1, 1), dtype=np.float32), "w")],
    )
    assert last_residual_stream(graph) == []
