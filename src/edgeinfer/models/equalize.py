"""Cross-layer equalization (Nagel et al., "Data-Free Quantization", 2019), kept exact for ReLU6.

For two convolutions joined by an activation, ``Conv A -> Clip(0, 6) -> Conv B``, scaling A's
output channel ``i`` by ``1/s_i`` and B's input channel ``i`` by ``s_i`` leaves the network
unchanged as long as the activation commutes with the scaling. With ``s_i = sqrt(r1_i / r2_i)``
(``r1``, ``r2`` the channel's weight ranges in A and B) both layers end up with equal per-channel
ranges, which is what per-tensor activation and per-channel weight quantization need:
MobileNetV2's folded batch norms leave channels whose ranges differ by 1000x.

ReLU does commute with positive scaling; ReLU6 does not (it clips at 6). The paper replaces ReLU6
with ReLU, which (with equalization) changed FP32's own top-1 on 6.9% of our held-out images.
Instead, each channel's observed maximum on calibration data bounds its scale so the clip point
never moves below what the data reaches, and channels the model does clip are left unscaled: on
the calibration data the equalized FP32 model computes the same function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from edgeinfer.models.probe import probe_batches

_EPS = 1e-12


@dataclass(frozen=True)
class _Pair:
    first: onnx.NodeProto
    activation: onnx.NodeProto
    second: onnx.NodeProto


def equalize(
    model: onnx.ModelProto, samples: np.ndarray, *, iterations: int = 4, margin: float = 0.95
) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every Conv-Clip-Conv pair equalized; also the number of pairs."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    pairs = _pairs(graph)
    if not pairs:
        return result, 0
    bounds = {id(p.activation): _clip_bounds(graph, p.activation) for p in pairs}
    pairs = [p for p in pairs if bounds[id(p.activation)][0] == 0.0]  # only x -> max(x, 0)-like ones commute
    if not pairs:
        return result, 0
    observed = _channel_max(model, [p.first.output[0] for p in pairs], samples)
    tensors = {init.name: init for init in graph.initializer}
    weights = {name: numpy_helper.to_array(tensors[name]).astype(np.float32) for name in _param_names(pairs)}
    pairs = [p for p in pairs if _equalizable(p, weights)]
    applied = {p.first.output[0]: np.ones_like(observed[p.first.output[0]]) for p in pairs}
    for _ in range(iterations):
        for pair in pairs:
            w1 = weights[pair.first.input[1]]
            w2 = weights[pair.second.input[1]]
            r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
            r2 = _input_channel_range(w2, _group(pair.second))
            scale = np.sqrt(np.maximum(r1, _EPS) / np.maximum(r2, _EPS))
            limit = bounds[id(pair.activation)][1]
            if limit is not None:
                seen = observed[pair.first.output[0]]
                done = applied[pair.first.output[0]]
                # the scaled channel clips at limit * done * scale: keep that above what the data reaches,
                # and leave channels the model really clips exactly as they were
                scale = np.maximum(scale, seen / (limit * margin * done))
                scale = np.where(seen >= limit * margin, 1.0 / done, scale)
            scale = np.where((r1 < _EPS) | (r2 < _EPS), 1.0, scale).astype(np.float32)
            w1 /= scale[:, None, None, None]
            if len(pair.first.input) > 2:
                weights[pair.first.input[2]] /= scale
            if _group(pair.second) > 1:
                w2 *= scale[:, None, None, None]
            else:
                w2 *= scale[None, :, None, None]
            applied[pair.first.output[0]] *= scale
    for name, array in weights.items():
        tensors[name].CopyFrom(numpy_helper.from_array(array.astype(np.float32), name))
    return result, len(pairs)


def _pairs(graph: onnx.GraphProto) -> list[_Pair]:
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {value.name for value in graph.output}
    initializers = {init.name for init in graph.initializer}
    pairs = []
    for first in graph.node:
        if first.op_type != "Conv" or len(first.input) < 2 or first.input[1] not in initializers:
            continue
        after = consumers.get(first.output[0], [])
        if len(after) != 1 or after[0].op_type not in ("Clip", "Relu") or first.output[0] in outputs:
            continue
        activation = after[0]
        following = consumers.get(activation.output[0], [])
        if len(following) != 1 or following[0].op_type != "Conv" or activation.output[0] in outputs:
            continue
        second = following[0]
        if second.input[0] != activation.output[0] or second.input[1] not in initializers:
            continue
        pairs.append(_Pair(first, activation, second))
    return pairs


def _param_names(pairs: list[_Pair]) -> set[str]:
    names = set()
    for pair in pairs:
        names.update(pair.first.input[1:3])
        names.update(pair.second.input[1:3])
    return names


def _group(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def _input_channel_range(weight: np.ndarray, group: int) -> np.ndarray:
    """Per input channel of the next layer: its weights' largest magnitude."""
    magnitude = np.abs(weight)
    if group == 1:  # dense: input channel i is axis 1
        magnitude = magnitude.transpose(1, 0, 2, 3)
    # depthwise: output channel i reads input channel i only, so axis 0 already is the input channel
    result: np.ndarray = magnitude.reshape(magnitude.shape[0], -1).max(axis=1)
    return result


def _equalizable(pair: _Pair, weights: dict[str, np.ndarray]) -> bool:
    """4-D convolutions whose channels line up: the second is dense or depthwise."""
    w1, w2 = weights[pair.first.input[1]], weights[pair.second.input[1]]
    if w1.ndim != 4 or w2.ndim != 4:
        return False
    group = _group(pair.second)
    if group == 1:
        return bool(w2.shape[1] == w1.shape[0])
    return bool(group == w2.shape[0] == w1.shape[0] and w2.shape[1] == 1)


def _clip_bounds(graph: onnx.GraphProto, activation: onnx.NodeProto) -> tuple[float, float | None]:
    """The activation's (lower, upper) clip: (0, None) for ReLU, (0, 6) for ReLU6."""
    if activation.op_type == "Relu":
        return 0.0, None
    attributes = {a.name: float(a.f) for a in activation.attribute}
    if "min" in attributes or "max" in attributes:  # opset < 11 keeps the bounds as attributes
        return attributes.get("min", float("-inf")), attributes.get("max")
    tensors = {init.name: init for init in graph.initializer}
    bounds: list[float | None] = []
    for index in (1, 2):
        name = activation.input[index] if len(activation.input) > index else ""
        if not name:
            bounds.append(None)
        elif name in tensors:
            bounds.append(float(numpy_helper.to_array(tensors[name]).reshape(-1)[0]))
        else:
            return float("-inf"), None  # a computed bound: treat as not equalizable
    low = bounds[0] if bounds[0] is not None else float("-inf")
    return low, bounds[1]


def _channel_max(
    model: onnx.ModelProto, names: list[str], samples: np.ndarray, *, magnitude: bool = False
) -> dict[str, np.ndarray]:
    """Per output channel, the largest value (``magnitude``: absolute value) each tensor in ``names``
    takes on ``samples``."""
    found: dict[str, np.ndarray] = {}
    for values in probe_batches(model, names, samples):
        for name in names:
            peak = (np.abs(values[name]) if magnitude else values[name]).max(axis=(0, 2, 3))
            found[name] = np.maximum(found[name], peak) if name in found else peak
    return found


@dataclass(frozen=True)
class _Stream:
    """A residual stream: tensors joined by Add nodes, written by Convs and read by Adds and Convs."""

    tensors: tuple[str, ...]
    producers: tuple[onnx.NodeProto, ...]
    consumers: tuple[onnx.NodeProto, ...]


def equalize_residuals(
    model: onnx.ModelProto, samples: np.ndarray, *, strength: float = 0.5
) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every residual stream's channels rescaled; also the number of streams.

    A residual stream (``Conv -> Add -> Add ...``, read by the next blocks' convolutions) carries
    no activation function, so channel ``c`` of every tensor in it can be divided by ``s_c``
    (the writing convolutions' output channel ``c`` divided, the reading convolutions' input
    channel ``c`` multiplied) and the network computes exactly the same function. Per-tensor
    activation quantization of the stream then sees evened-out channel ranges. With ``a_c`` the
    channel's largest magnitude on ``samples`` and ``w_c`` the readers' largest weight for it,
    ``s_c = (a_c / w_c) ** strength`` (SmoothQuant's migration; 0.5 balances the two).
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    streams = _streams(graph)
    if not streams:
        return result, 0
    peaks = _channel_peak(model, sorted({t for s in streams for t in s.tensors}), samples)
    tensors = {init.name: init for init in graph.initializer}
    for stream in streams:
        active = np.max([peaks[t] for t in stream.tensors], axis=0)
        readers = [numpy_helper.to_array(tensors[n.input[1]]) for n in stream.consumers]
        reach = np.max([_input_channel_range(w, 1) for w in readers], axis=0)
        usable = (active > _EPS) & (reach > _EPS)
        scale = np.ones_like(active)
        ratio = np.where(usable, active / np.maximum(reach, _EPS), 1.0) ** strength
        scale[usable] = ratio[usable] / np.exp(np.log(ratio[usable]).mean())
        scale = scale.astype(np.float32)
        for node in stream.producers:
            _rescale(tensors, node.input[1], 1.0 / scale[:, None, None, None])
            if len(node.input) > 2 and node.input[2]:
                _rescale(tensors, node.input[2], 1.0 / scale)
        for node in stream.consumers:
            _rescale(tensors, node.input[1], scale[None, :, None, None])
    return result, len(streams)


def last_residual_stream(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes of the graph's last residual stream: its writers, its Adds, its readers.

    In MobileNetV2 that is the 160-channel stage at 7 x 7 (8 nodes), the tensors whose int8 rounding
    moves the output most (docs/BENCHMARKS.md, "INT8"). Empty for a graph without residual streams.
    """
    streams = _streams(graph)
    if not streams:
        return []
    position = {id(node): index for index, node in enumerate(graph.node)}
    last = max(streams, key=lambda stream: max(position[id(node)] for node in stream.producers))
    adds = [node for node in graph.node if node.op_type == "Add" and node.output[0] in last.tensors]
    chosen = {id(node) for node in (*last.producers, *adds, *last.consumers)}
    return [node.name for node in graph.node if id(node) in chosen]


def _rescale(tensors: dict[str, onnx.TensorProto], name: str, factor: np.ndarray) -> None:
    array = numpy_helper.to_array(tensors[name]).astype(np.float32) * factor
    tensors[name].CopyFrom(numpy_helper.from_array(array.astype(np.float32), name))


def _streams(graph: onnx.GraphProto) -> list[_Stream]:
    """Residual streams whose writers are all Convs and whose readers are Adds or dense Convs."""
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initializers = {init.name: init for init in graph.initializer}
    excluded = {value.name for value in graph.output} | set(initializers)
    streams = []
    for names in _joined_by_add(graph):
        writers = [producers[n] for n in names if n in producers and producers[n].op_type == "Conv"]
        readers = [r for n in names for r in consumers.get(n, []) if r.op_type != "Add"]
        writable = all(n in producers and producers[n].op_type in ("Conv", "Add") for n in names)
        readable = all(r.op_type == "Conv" and r.input[0] in names and _group(r) == 1 for r in readers)
        weighted = all(
            node.input[1] in initializers and len(initializers[node.input[1]].dims) == 4
            for node in writers + readers
        )
        if writers and readers and writable and readable and weighted and not excluded & set(names):
            streams.append(_Stream(tuple(sorted(names)), tuple(writers), tuple(readers)))
    return streams


def _joined_by_add(graph: onnx.GraphProto) -> list[set[str]]:
    """The groups of tensors that two-input Add nodes connect (inputs and output of each)."""
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    for node in graph.node:
        if node.op_type == "Add" and len(node.input) == 2:
            for name in node.input:
                parent[root(name)] = root(node.output[0])
    groups: dict[str, set[str]] = {}
    for name in parent:
        groups.setdefault(root(name), set()).add(name)
    return list(groups.values())


def _channel_peak(model: onnx.ModelProto, names: list[str], samples: np.ndarray) -> dict[str, np.ndarray]:
    """Per channel, the largest magnitude each tensor in ``names`` takes on ``samples``."""
    return _channel_max(model, names, samples, magnitude=True)
