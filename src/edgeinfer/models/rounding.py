"""Weight rounding that minimises each layer's output error on calibration data (GPTQ).

ONNX Runtime rounds every INT8 weight to the nearest step of its channel's grid. Rounding weight
``i`` of a row up or down changes the layer's output by ``dW_i * x_i``; when the inputs are
correlated (neighbouring pixels, channels that fire together), the errors of neighbouring weights
can cancel instead of adding up. GPTQ (Frantar et al. 2023, after Optimal Brain Quantization)
rounds one input column at a time and moves the not-yet-rounded weights of the row to make up for
the rounding just done, weighted by the inverse of ``H = E[x x^T]``, the layer's input second
moment on calibration images. The grid (each channel's scale and zero point) stays the one ONNX
Runtime chose, so the graph, its kernels and its speed do not change: only which integer each
weight becomes.

:func:`round_weights` rewrites the ``*_quantized`` weight initializers of a QDQ model in place,
from the float ``source`` model the quantizer was given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from edgeinfer.models.probe import probe_batches

# Inputs per batch when collecting statistics: the largest depthwise patch matrix is then ~120 MB.
_BATCH = 8


@dataclass(frozen=True)
class _Layer:
    """A Conv or Gemm whose weights ONNX Runtime quantized, and how its inputs form rows of x."""

    node: onnx.NodeProto
    weight: str
    kind: str  # "dense": one H for the whole layer; "depthwise": one H per channel
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]


def round_weights(
    quantized: onnx.ModelProto,
    source: onnx.ModelProto,
    samples: np.ndarray,
    *,
    depthwise_only: bool = False,
    reduce_range: bool = False,
    damping: float = 0.01,
) -> int:
    """Re-round the weights of ``quantized`` (QDQ, made from ``source``) with GPTQ; the layer count.

    ``depthwise_only`` limits it to the depthwise convolutions, whose 9-tap ``H`` per channel is
    well determined by a hundred images (a 1x1 convolution's or the classifier's is up to
    1280 x 1280). ``reduce_range``: the weights were quantized to 7 bits and must stay there.
    ``damping`` is added to the diagonal of each ``H`` as a fraction of its mean
    diagonal, which keeps the inverse defined for inputs that calibration never excites.
    """
    stored = {init.name: init for init in quantized.graph.initializer}
    floats = {init.name: init for init in source.graph.initializer}
    layers = [
        layer
        for node in source.graph.node
        if (layer := _layer(node, stored, floats)) is not None
        and (layer.kind == "depthwise" or not depthwise_only)
    ]
    if not layers:
        return 0
    hessians = _hessians(source, layers, samples)
    for layer in layers:
        weight = np.asarray(numpy_helper.to_array(floats[layer.weight]), dtype=np.float64)
        rows = weight.reshape(weight.shape[0], -1)
        target = stored[f"{layer.weight}_quantized"]
        current = numpy_helper.to_array(target)
        scale = _per_row(numpy_helper.to_array(stored[f"{layer.weight}_scale"]), len(rows))
        zero = _per_row(numpy_helper.to_array(stored[f"{layer.weight}_zero_point"]), len(rows))
        low, high = _grid(current.dtype, zero, reduce_range)
        hessian = hessians[layer.weight]
        if layer.kind == "depthwise":
            upper = np.stack([_inverse_factor(h, damping) for h in hessian])
        else:
            upper = _inverse_factor(hessian, damping)
        rounded = _gptq(rows, upper, _Grid(scale, zero, low, high))
        values = rounded.reshape(current.shape).astype(current.dtype)
        target.CopyFrom(numpy_helper.from_array(values, target.name))
    return len(layers)


def _layer(
    node: onnx.NodeProto, stored: dict[str, onnx.TensorProto], floats: dict[str, onnx.TensorProto]
) -> _Layer | None:
    if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2:
        return None
    weight = node.input[1]
    needed = (f"{weight}_quantized", f"{weight}_scale", f"{weight}_zero_point")
    if weight not in floats or any(name not in stored for name in needed):
        return None
    dims = list(floats[weight].dims)
    if node.op_type == "Gemm":  # with transB=0 the weights are stored (in, out): rows are not outputs
        gemm = _ints(node, "transB", [0])[0] == 1 and len(dims) == 2
        return _Layer(node, weight, "dense", (1, 1), (1, 1), (0, 0, 0, 0)) if gemm else None
    return _conv_layer(node, dims)


def _conv_layer(node: onnx.NodeProto, dims: list[int]) -> _Layer | None:
    """A 2-D convolution, dense or depthwise, without dilation or automatic padding; else None."""
    plain = len(dims) == 4 and _ints(node, "dilations", [1, 1]) == [1, 1]
    if not plain or any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for a in node.attribute):
        return None
    group = _ints(node, "group", [1])[0]
    if group == 1:
        kind = "dense"
    elif group == dims[0] and dims[1] == 1:
        kind = "depthwise"
    else:
        return None
    strides = _ints(node, "strides", [1, 1])
    pads = _ints(node, "pads", [0, 0, 0, 0])
    return _Layer(
        node,
        node.input[1],
        kind,
        (dims[2], dims[3]),
        (strides[0], strides[1]),
        (pads[0], pads[1], pads[2], pads[3]),
    )


def _ints(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    for attribute in node.attribute:
        if attribute.name == name:
            return list(attribute.ints) if attribute.ints else [int(attribute.i)]
    return default


def _per_row(values: np.ndarray, rows: int) -> np.ndarray:
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    return np.broadcast_to(flat, (rows,)).copy() if flat.size in (1, rows) else flat


# The grids ONNX Runtime's quantizer uses with ``reduce_range`` (7-bit weights).
_REDUCED_GRIDS = {np.dtype(np.int8): (-64, 64), np.dtype(np.uint8): (0, 127)}


def _grid(dtype: np.dtype, zero: np.ndarray, reduce_range: bool) -> tuple[int, int]:
    """The integers the quantizer rounded onto (re-rounding must stay on them)."""
    if reduce_range:
        return _REDUCED_GRIDS[np.dtype(dtype)]
    info = np.iinfo(dtype)
    if info.min < 0 and np.all(zero == 0):
        return -info.max, info.max  # symmetric signed weights: ONNX Runtime uses -127..127
    return int(info.min), int(info.max)


def _hessians(model: onnx.ModelProto, layers: list[_Layer], samples: np.ndarray) -> dict[str, np.ndarray]:
    """Per layer (by weight name), the mean of x x^T over every row x its weights multiply."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for values in probe_batches(model, [layer.node.input[0] for layer in layers], samples, _BATCH):
        for layer in layers:
            rows = _rows(np.asarray(values[layer.node.input[0]], dtype=np.float32), layer)
            if layer.kind == "depthwise":  # (channels, positions, taps)
                moment = np.matmul(rows.transpose(0, 2, 1), rows).astype(np.float64)
                count = rows.shape[1]
            else:  # (positions, features)
                moment = (rows.T @ rows).astype(np.float64)
                count = rows.shape[0]
            sums[layer.weight] = sums.get(layer.weight, 0.0) + moment
            counts[layer.weight] = counts.get(layer.weight, 0) + count
    return {name: sums[name] / counts[name] for name in sums}


def _rows(x: np.ndarray, layer: _Layer) -> np.ndarray:
    """The input rows the layer's weight rows are dotted with, in the weights' (C, kh, kw) order."""
    if x.ndim == 2:
        return x
    if x.ndim > 2 and layer.node.op_type == "Gemm":
        return x.reshape(len(x), -1)
    kh, kw = layer.kernel
    top, left, bottom, right = layer.pads
    if (kh, kw) == (1, 1) and layer.strides == (1, 1) and not any(layer.pads) and layer.kind == "dense":
        return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
    windows = windows[:, :, :: layer.strides[0], :: layer.strides[1]]  # (N, C, Ho, Wo, kh, kw)
    c = windows.shape[1]
    if layer.kind == "depthwise":
        return np.ascontiguousarray(windows.transpose(1, 0, 2, 3, 4, 5)).reshape(c, -1, kh * kw)
    return np.ascontiguousarray(windows.transpose(0, 2, 3, 1, 4, 5)).reshape(-1, c * kh * kw)


@dataclass(frozen=True)
class _Grid:
    """Each row's quantization grid, as ONNX Runtime chose it: q = clip(round(w / scale) + zero)."""

    scale: np.ndarray
    zero: np.ndarray
    low: int
    high: int


def _gptq(weights: np.ndarray, upper: np.ndarray, grid: _Grid) -> np.ndarray:
    """GPTQ over the columns of ``weights`` (rows, inputs).

    ``upper`` is the upper Cholesky factor of H^-1: one (inputs, inputs) matrix all rows share, or
    one per row (rows, inputs, inputs) for depthwise channels.
    """
    work = weights.copy()
    shared = upper.ndim == 2
    rounded = np.empty(work.shape, dtype=np.int64)
    for i in range(work.shape[1]):
        q = np.clip(np.round(work[:, i] / grid.scale) + grid.zero, grid.low, grid.high)
        rounded[:, i] = q
        pivot = upper[i, i] if shared else upper[:, i, i]
        error = (work[:, i] - (q - grid.zero) * grid.scale) / pivot
        if shared:
            work[:, i + 1 :] -= np.outer(error, upper[i, i + 1 :])
        else:
            work[:, i + 1 :] -= error[:, None] * upper[:, i, i + 1 :]
    return rounded


def _inverse_factor(hessian: np.ndarray, damping: float) -> np.ndarray:
    """The upper Cholesky factor of H^-1 (damped), as GPTQ's column updates use it."""
    h = hessian.copy()
    diagonal = np.diag(h)
    dead = diagonal <= 0
    h[dead, dead] = 1.0  # inputs that never fire: any rounding of their weights is exact
    h[np.diag_indices_from(h)] += damping * max(float(np.mean(diagonal)), 1e-12)
    inverse = np.linalg.inv(h)
    factor: np.ndarray = np.linalg.cholesky((inverse + inverse.T) / 2).T
    return factor
