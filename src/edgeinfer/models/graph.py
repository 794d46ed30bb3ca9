"""A small builder for the ONNX classification graphs of the zoo, on top of ``onnx.helper``.

It knows the handful of layers a mobile CNN needs (convolution with BatchNorm folded in, ReLU6,
residual add, global average pool, the final Linear, Softmax) and produces a checked model with
opset 17, input ``input`` ``[N, 3, H, W]`` float32 NCHW and output ``probabilities`` (or ``logits``)
``[N, classes]``, where ``N`` is a dynamic batch dimension.

:class:`Weights` reads a state dict by name and shape, so a checkpoint that does not fit the
architecture fails with a clear :class:`IntegrityError` instead of a broken graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeinfer.errors import IntegrityError

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17: older runtimes (OpenVINO, converters) accept it
INPUT_NAME = "input"
PROBABILITIES_NAME = "probabilities"
LOGITS_NAME = "logits"
BATCH_DIM = "N"

Pads = tuple[int, int, int, int]  # ONNX order: top, left, bottom, right


def symmetric_pads(kernel_px: int) -> Pads:
    """PyTorch-style ``padding=(k - 1) // 2`` on every side."""
    p = (kernel_px - 1) // 2
    return (p, p, p, p)


def same_pads(input_px: int, kernel_px: int, stride: int) -> Pads:
    """TensorFlow ``SAME`` padding for a square input: the odd pixel goes to the bottom/right."""
    output_px = -(-input_px // stride)
    total = max((output_px - 1) * stride + kernel_px - input_px, 0)
    return (total // 2, total // 2, total - total // 2, total - total // 2)


@dataclass(frozen=True)
class BatchNorm:
    """Inference-time BatchNorm parameters of one layer."""

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float

    def fold(self, weight: np.ndarray, bias: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Fold this BatchNorm into the preceding convolution: return float32 (weight, bias)."""
        scale = self.gamma.astype(np.float64) / np.sqrt(self.var.astype(np.float64) + self.eps)
        shift = self.beta.astype(np.float64) - self.mean.astype(np.float64) * scale
        if bias is not None:
            shift = shift + bias.astype(np.float64) * scale
        folded = weight.astype(np.float64) * scale.reshape(-1, *([1] * (weight.ndim - 1)))
        return folded.astype(np.float32), shift.astype(np.float32)


class Weights:
    """A state dict read by name and expected shape; ``finish`` rejects keys nobody asked for."""

    IGNORED_SUFFIXES = (".num_batches_tracked",)

    def __init__(self, state_dict: Mapping[str, np.ndarray], model: str) -> None:
        self._state = state_dict
        self._model = model
        self._used: set[str] = set()

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        array = self._state.get(name)
        if array is None:
            raise IntegrityError(f"{self._model}: state dict has no {name!r}; is this the right checkpoint?")
        if tuple(array.shape) != shape:
            raise IntegrityError(f"{self._model}: {name!r} has shape {tuple(array.shape)}, expected {shape}")
        if not np.issubdtype(array.dtype, np.floating):
            raise IntegrityError(f"{self._model}: {name!r} has dtype {array.dtype}, expected floating point")
        self._used.add(name)
        return array

    def batch_norm(self, prefix: str, channels: int, eps: float) -> BatchNorm:
        return BatchNorm(
            gamma=self.take(f"{prefix}.weight", (channels,)),
            beta=self.take(f"{prefix}.bias", (channels,)),
            mean=self.take(f"{prefix}.running_mean", (channels,)),
            var=self.take(f"{prefix}.running_var", (channels,)),
            eps=eps,
        )

    def finish(self) -> None:
        unused = [k for k in self._state if k not in self._used and not k.endswith(self.IGNORED_SUFFIXES)]
        if unused:
            shown = ", ".join(unused[:5]) + (" ..." if len(unused) > 5 else "")
            raise IntegrityError(f"{self._model}: state dict has {len(unused)} unexpected keys: {shown}")


class GraphBuilder:
    """Accumulates nodes and initializers; every layer method returns the name of its output."""

    def __init__(self, name: str, *, channels: int = 3, image_px: int = 224) -> None:
        self.name = name
        self.image_px = image_px
        self._channels = channels
        self._nodes: list[onnx.NodeProto] = []
        self._initializers: list[onnx.TensorProto] = []
        self._names: set[str] = set()
        self._relu6_bounds: tuple[str, str] | None = None

    @property
    def input(self) -> str:
        return INPUT_NAME

    def _unique(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self._names:
            n += 1
            candidate = f"{name}_{n}"
        self._names.add(candidate)
        return candidate

    def constant(self, name: str, array: np.ndarray) -> str:
        unique = self._unique(name)
        self._initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), unique))
        return unique

    def node(self, op: str, inputs: list[str], name: str, **attributes: Any) -> str:
        output = self._unique(name)
        self._nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def conv(
        self,
        x: str,
        weight: np.ndarray,
        bias: np.ndarray,
        *,
        name: str,
        stride: int = 1,
        pads: Pads | None = None,
        group: int = 1,
    ) -> str:
        kernel = int(weight.shape[-1])
        inputs = [x, self.constant(f"{name}.weight", weight), self.constant(f"{name}.bias", bias)]
        return self.node(
            "Conv",
            inputs,
            name,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=list(pads or symmetric_pads(kernel)),
            group=group,
        )

    def conv_bn(
        self,
        x: str,
        weight: np.ndarray,
        bn: BatchNorm,
        *,
        name: str,
        stride: int = 1,
        pads: Pads | None = None,
        group: int = 1,
        relu6: bool = False,
    ) -> str:
        """Convolution (bias-free) followed by BatchNorm, folded into one Conv; optionally ReLU6."""
        folded_weight, folded_bias = bn.fold(weight)
        y = self.conv(x, folded_weight, folded_bias, name=name, stride=stride, pads=pads, group=group)
        return self.relu6(y, name=f"{name}.relu6") if relu6 else y

    def relu6(self, x: str, *, name: str) -> str:
        if self._relu6_bounds is None:
            low = self.constant("relu6.min", np.array(0.0, np.float32))
            high = self.constant("relu6.max", np.array(6.0, np.float32))
            self._relu6_bounds = (low, high)
        return self.node("Clip", [x, *self._relu6_bounds], name)

    def add(self, a: str, b: str, *, name: str) -> str:
        return self.node("Add", [a, b], name)

    def global_average_pool(self, x: str, *, name: str = "pool") -> str:
        pooled = self.node("GlobalAveragePool", [x], name)
        return self.node("Flatten", [pooled], f"{name}.flatten", axis=1)

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray, *, name: str) -> str:
        """``x @ weight.T + bias`` as Gemm, with torch's (out, in) weight layout."""
        inputs = [x, self.constant(f"{name}.weight", weight), self.constant(f"{name}.bias", bias)]
        return self.node("Gemm", inputs, name, transB=1)

    def finish(self, logits: str, classes: int, *, softmax: bool = True, doc: str = "") -> onnx.ModelProto:
        """Name the output, add Softmax if asked, and return a model that passed ``onnx.checker``."""
        output = PROBABILITIES_NAME if softmax else LOGITS_NAME
        if softmax:
            self._nodes.append(helper.make_node("Softmax", [logits], [output], name="softmax", axis=1))
        else:
            self._nodes.append(helper.make_node("Identity", [logits], [output], name="output"))
        graph = helper.make_graph(
            self._nodes,
            self.name,
            [helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, self._channels, self.image_px, self.image_px]
            )],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, [BATCH_DIM, classes])],
            initializer=self._initializers,
            doc_string=doc,
        )  # fmt: skip
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="edgeinfer",
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        return model
