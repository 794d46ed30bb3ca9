"""The blog's own code path as a baseline (optional extra ``keras``: tensorflow-cpu + keras).

``keras.applications.MobileNetV2(weights=None)`` with torchvision's ImageNet weights copied in,
run through ``model.predict``: the path every benchmark compares against. Two changes make it
compute what torchvision (and our ONNX model) computes:

- Keras pads stride-2 convolutions asymmetrically (``ZeroPadding2D(((0, 1), (0, 1)))`` + valid,
  or ``padding="same"``, both pad only bottom/right); torchvision pads 1 on every side. The model
  graph is cloned with those paddings made symmetric.
- BatchNorm epsilon is 1e-3 in Keras and 1e-5 in torchvision.

It takes NCHW float32 input normalized like the ONNX model (transposed to NHWC inside) and
returns softmax probabilities. It reads the weights from the model's source checkpoint (a torch
state dict) with edgeinfer's safe loader; torch is never needed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer.errors import IntegrityError, InvalidInput, NotFound, NotReady, RuntimeUnavailable
from edgeinfer.runtimes.base import (
    ClosingRuntime,
    PackagedFactory,
    RuntimeOptions,
    TensorSpec,
    check_feeds,
)
from edgeinfer.system.threads import ThreadLease, process_budget

NAME = "keras"
INPUT = TensorSpec(name="input", dtype="float32", shape=(None, 3, 224, 224))
OUTPUT = TensorSpec(name="probabilities", dtype="float32", shape=(None, 1000))
TORCHVISION_BN_EPS = 1e-5
# MobileNetV2 blocks 1..16 in Keras are torchvision's features.2..17
_KERAS_BLOCKS = 16


class KerasMobileNetV2(ClosingRuntime):
    """``keras.applications.MobileNetV2`` with torchvision weights, run with ``model.predict``."""

    name = NAME

    def __init__(self, state_dict: Mapping[str, np.ndarray], lease: ThreadLease) -> None:
        self.lease = lease
        self.threads = lease.threads
        self.tf_threads = _configure_tensorflow(lease.threads)
        self._model: Any = build_mobilenet_v2(state_dict)
        self._lock = threading.Lock()
        self._release = process_budget().release_with(self, lease)

    @property
    def inputs(self) -> list[TensorSpec]:
        return [INPUT]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [OUTPUT]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._model is None:
            raise NotReady("the Keras model is closed")
        check_feeds([INPUT], feeds)
        nhwc = np.ascontiguousarray(feeds[INPUT.name].transpose(0, 2, 3, 1))
        with self._lock:
            probabilities = self._model.predict(nhwc, batch_size=len(nhwc), verbose=0)
        return {OUTPUT.name: np.asarray(probabilities, dtype=np.float32)}

    def close(self) -> None:
        self._model = None
        self._release()


class KerasFactory(PackagedFactory):
    """Registry entry. Its "format" is the model's source checkpoint, a torch state dict."""

    name = NAME
    formats: tuple[str, ...] = ("torch",)
    architectures: tuple[str, ...] = ("mobilenet_v2",)

    modules = ("tensorflow", "keras")
    distributions = ("tensorflow-cpu", "tensorflow", "keras")
    all_versions = True

    def load(
        self, model_path: Path, options: RuntimeOptions, expected_sha256: str | None = None
    ) -> KerasMobileNetV2:
        """Build MobileNetV2 from the torch checkpoint ``model_path``, checked against ``expected_sha256``."""
        if not self.available():
            raise RuntimeUnavailable("runtime 'keras' is not installed; pip install 'edgeinfer[keras]'")
        if options.extra:
            raise InvalidInput(f"runtime 'keras' takes no runtime options, got {sorted(options.extra)}")
        if not model_path.is_file():
            raise NotFound(f"checkpoint {model_path} does not exist")
        # The one import from the models layer: its safe checkpoint reader (no torch, no pickle.load).
        from edgeinfer.models.checkpoint import load_state_dict

        state_dict = load_state_dict(model_path, expected_sha256=expected_sha256)
        budget = process_budget()
        lease = budget.acquire(options.threads, owner=f"{NAME}:{model_path.name}")
        try:
            return KerasMobileNetV2(state_dict, lease)
        except BaseException:
            budget.release(lease)
            raise


def build_mobilenet_v2(state_dict: Mapping[str, np.ndarray]) -> Any:
    """``keras.applications.MobileNetV2(weights=None)``, padded and normalized like torchvision, weighted."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    base = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=1000)
    model = _symmetric_padding(keras, base)
    _copy_weights(model, state_dict)
    return model


def _symmetric_padding(keras: Any, model: Any) -> Any:
    """Clone ``model`` with torchvision's padding (1 on every side before 3x3 stride-2) and BN eps."""
    layers = keras.layers

    def stride2_same(layer: Any) -> bool:
        return (
            isinstance(layer, layers.Conv2D | layers.DepthwiseConv2D)
            and tuple(layer.strides) != (1, 1)
            and layer.padding == "same"
        )

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        if isinstance(layer, layers.ZeroPadding2D):
            config["padding"] = ((1, 1), (1, 1))
        elif stride2_same(layer):
            config["padding"] = "valid"
        elif isinstance(layer, layers.BatchNormalization):
            config["epsilon"] = TORCHVISION_BN_EPS
        return layer.__class__.from_config(config)

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        original = model.get_layer(layer.name)
        if stride2_same(original):
            pad = (original.kernel_size[0] - 1) // 2
            padded = layers.ZeroPadding2D(padding=pad, name=f"{layer.name}_pad")(args[0])
            return layer(padded, *args[1:], **kwargs)
        return layer(*args, **kwargs)

    return keras.models.clone_model(model, clone_function=clone, call_function=call)


def _torch_prefixes() -> dict[str, str]:
    """Keras layer name -> torchvision state-dict prefix."""
    names = {
        "Conv1": "features.0.0",
        "bn_Conv1": "features.0.1",
        "expanded_conv_depthwise": "features.1.conv.0.0",
        "expanded_conv_depthwise_BN": "features.1.conv.0.1",
        "expanded_conv_project": "features.1.conv.1",
        "expanded_conv_project_BN": "features.1.conv.2",
        "Conv_1": "features.18.0",
        "Conv_1_bn": "features.18.1",
        "predictions": "classifier.1",
    }
    for block in range(1, _KERAS_BLOCKS + 1):
        torch_block = f"features.{block + 1}.conv"
        names |= {
            f"block_{block}_expand": f"{torch_block}.0.0",
            f"block_{block}_expand_BN": f"{torch_block}.0.1",
            f"block_{block}_depthwise": f"{torch_block}.1.0",
            f"block_{block}_depthwise_BN": f"{torch_block}.1.1",
            f"block_{block}_project": f"{torch_block}.2",
            f"block_{block}_project_BN": f"{torch_block}.3",
        }
    return names


def _keras_weights(layer: Any, prefix: str, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torchvision tensors (by key) in the order and layout of ``layer.get_weights()``."""
    kind = type(layer).__name__
    if kind == "BatchNormalization":
        keys = [f"{prefix}.{n}" for n in ("weight", "bias", "running_mean", "running_var")]
        return {key: state[key] for key in keys}
    weight = f"{prefix}.weight"
    if kind == "DepthwiseConv2D":  # torch (C, 1, kh, kw) -> keras (kh, kw, C, 1)
        return {weight: state[weight].transpose(2, 3, 0, 1)}
    if kind == "Conv2D":  # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
        return {weight: state[weight].transpose(2, 3, 1, 0)}
    if kind == "Dense":  # torch (out, in) -> keras (in, out)
        return {weight: state[weight].T, f"{prefix}.bias": state[f"{prefix}.bias"]}
    raise IntegrityError(f"no torchvision mapping for Keras layer {layer.name} ({kind})")


def _copy_weights(model: Any, state_dict: Mapping[str, np.ndarray]) -> None:
    prefixes = _torch_prefixes()
    used: set[str] = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = prefixes.get(layer.name)
        if prefix is None:
            raise IntegrityError(f"Keras layer {layer.name!r} has weights but no torchvision counterpart")
        try:
            weights = _keras_weights(layer, prefix, state_dict)
        except KeyError as exc:
            raise IntegrityError(
                f"the checkpoint lacks {exc.args[0]!r}: it is not torchvision MobileNetV2"
            ) from exc
        shapes = [w.shape for w in weights.values()]
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if shapes != expected:
            raise IntegrityError(
                f"checkpoint tensors under {prefix} have shapes {shapes}, "
                f"Keras layer {layer.name} needs {expected}"
            )
        layer.set_weights([np.ascontiguousarray(w, dtype=np.float32) for w in weights.values()])
        used.update(weights)
    left = [k for k in state_dict if k not in used and not k.endswith("num_batches_tracked")]
    if left:
        raise IntegrityError(f"checkpoint tensors not used by the Keras MobileNetV2: {left[:5]}")


def _configure_tensorflow(threads: int) -> int:
    """Set TensorFlow's intra-op threads (inter-op 1) before it starts; return what it runs with."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow already started in this process; its first setting stays
    return int(tf.config.threading.get_intra_op_parallelism_threads())
