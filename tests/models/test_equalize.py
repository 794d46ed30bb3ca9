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
from edgeinfer.models.equalize import equalize
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


def test_missing_sample_photos_give_a_clear_error(
    repo: ModelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calibration, "available_photos", lambda names=None: {})
    with pytest.raises(NotFound, match=r"pip install 'edgeinfer\[samples\]'"):
        calibration_set(repo.get("mobilenet_v2").config.preprocessing)
