"""The blog's Keras path: keras.applications.MobileNetV2 with torchvision weights, via model.predict."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgeinfer.errors import IntegrityError, InvalidInput, RuntimeUnavailable
from edgeinfer.models.repository import StoredModel
from edgeinfer.runtimes import registry
from edgeinfer.runtimes.base import RuntimeOptions
from edgeinfer.runtimes.keras import TORCHVISION_BN_EPS, KerasFactory, KerasMobileNetV2
from edgeinfer.runtimes.onnxruntime import OnnxRuntimeFactory

pytestmark = pytest.mark.slow
pytest.importorskip("tensorflow")
pytest.importorskip("keras")


@pytest.fixture(scope="module")
def onnx_probabilities(mobilenet: StoredModel, photo_batch: tuple[tuple[str, ...], np.ndarray]) -> np.ndarray:
    """The ONNX model's answers, computed (and its threads returned) before Keras takes a thread."""
    with OnnxRuntimeFactory().load(mobilenet.path, RuntimeOptions(threads=1)) as runtime:
        return runtime.run({runtime.inputs[0].name: photo_batch[1]})[runtime.outputs[0].name]


@pytest.fixture(scope="module")
def keras_runtime(mobilenet: StoredModel, onnx_probabilities: np.ndarray) -> Iterator[KerasMobileNetV2]:
    runtime = registry.open_runtime("keras", mobilenet, RuntimeOptions(threads=1))
    assert isinstance(runtime, KerasMobileNetV2)
    yield runtime
    runtime.close()


def test_top5_equals_the_onnx_model_on_real_photos(
    keras_runtime: KerasMobileNetV2,
    onnx_probabilities: np.ndarray,
    photo_batch: tuple[tuple[str, ...], np.ndarray],
) -> None:
    names, batch = photo_batch
    assert len(names) >= 5, f"too few sample photos installed: {names}"
    expected = onnx_probabilities
    got = keras_runtime.run({"input": batch})["probabilities"]
    assert got.shape == expected.shape and got.dtype == np.float32
    for name, want, have in zip(names, expected, got, strict=True):
        assert list(np.argsort(have)[::-1][:5]) == list(np.argsort(want)[::-1][:5]), name
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_padding_is_symmetric_and_batch_norm_uses_torchvisions_epsilon(
    keras_runtime: KerasMobileNetV2,
) -> None:
    import keras

    model = keras_runtime._model
    pads = [layer for layer in model.layers if isinstance(layer, keras.layers.ZeroPadding2D)]
    assert len(pads) == 5  # the stem and the four stride-2 depthwise convolutions
    assert all(tuple(map(tuple, layer.padding)) == ((1, 1), (1, 1)) for layer in pads)
    strided = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D) and layer.strides != (1, 1)
    ]
    assert len(strided) == 5 and all(layer.padding == "valid" for layer in strided)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 52 and all(layer.epsilon == TORCHVISION_BN_EPS for layer in norms)


def test_threads_and_input_checks(keras_runtime: KerasMobileNetV2) -> None:
    assert keras_runtime.threads == 1
    with pytest.raises(InvalidInput, match="must have shape"):
        keras_runtime.run({"input": np.zeros((1, 224, 224, 3), np.float32)})
    out = keras_runtime.run({"input": np.zeros((2, 3, 224, 224), np.float32)})
    assert out["probabilities"].shape == (2, 1000)


def test_keras_is_never_auto_and_needs_a_known_architecture(tmp_path: Path) -> None:
    assert "keras" not in registry.auto_candidates("onnx")
    with pytest.raises(RuntimeUnavailable, match="needs the model's source weights"):
        registry.open_runtime("keras", tmp_path / "model.onnx")


def test_keras_refuses_a_build_it_would_not_really_run(mobilenet: StoredModel) -> None:
    """Keras rebuilds the network from the FP32 checkpoint, so an INT8 build is refused, not faked."""
    int8 = replace(mobilenet, config=replace(mobilenet.config, precision="int8"))
    with pytest.raises(RuntimeUnavailable, match="FP32 source weights only, not a int8 build"):
        registry.open_runtime("keras", int8, RuntimeOptions(threads=1))


def test_runtime_options_are_refused_not_ignored(mobilenet: StoredModel) -> None:
    with pytest.raises(InvalidInput, match=r"runtime 'keras' takes no runtime options, got \['foo'\]"):
        registry.open_runtime("keras", mobilenet, RuntimeOptions(threads=1, extra={"foo": "bar"}))


def test_a_checkpoint_with_the_wrong_checksum_is_refused(mobilenet: StoredModel) -> None:
    checkpoint = registry._keras_checkpoint(mobilenet)
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        KerasFactory().load(checkpoint, RuntimeOptions(threads=1), expected_sha256="0" * 64)
