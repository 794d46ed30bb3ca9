"""Split computing: the first layers on the device, the rest in the cloud (Neurosurgeon, ASPLOS 2017).

A model is cut where exactly one tensor flows from the layers before to the layers after (in
MobileNetV2: between inverted-residual blocks, never inside one, where the skip connection would
need a second tensor). :func:`partition` extracts the head and the tail with
``onnx.utils.Extractor``. The intermediate tensor travels as FP32, FP16, or INT8 (uint8 with a
per-tensor scale and zero point calibrated on real images); the tail model starts with the matching
``Cast`` or ``DequantizeLinear``, so the server receives exactly what the device sends.

:func:`profile_layers` times every node with ONNX Runtime's profiler; :func:`choose_cut` adds the
head's time on the device, the transfer of the cut tensor over the link, and the tail's time in
the cloud, and picks the cheapest cut (0 = send the preprocessed input, the last = all on device).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeinfer.errors import InvalidInput
from edgeinfer.network.profiles import LinkProfile

Transport = Literal["fp32", "fp16", "int8"]
TRANSPORTS: tuple[Transport, ...] = ("fp32", "fp16", "int8")
BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "int8": 1}
TAIL_INPUT = "intermediate"


@dataclass(frozen=True)
class CutPoint:
    """Cut ``index`` runs nodes ``[0, index)`` on the device and sends ``tensor`` to the cloud."""

    index: int
    tensor: str
    node: str
    shape: tuple[int, ...]  # one sample, no batch axis

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    def bytes(self, transport: Transport) -> int:
        return self.elements * BYTES_PER_ELEMENT[transport]


@dataclass(frozen=True)
class SplitArtifacts:
    """One split on disk: the head and tail models, and how the cut tensor travels."""

    name: str  # what the tail is served as
    cut: CutPoint
    transport: Transport
    quantizer: Quantizer | None
    head: Path
    tail: Path


@dataclass(frozen=True)
class Quantizer:
    """uint8 affine quantization of one tensor: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int

    @classmethod
    def calibrate(cls, samples: Sequence[np.ndarray]) -> Quantizer:
        low = min(0.0, *(float(s.min()) for s in samples))
        high = max(0.0, *(float(s.max()) for s in samples))
        scale = (high - low) / 255.0 or 1.0
        return cls(scale, round(-low / scale))

    def quantize(self, x: np.ndarray) -> np.ndarray:
        q: np.ndarray = np.clip(np.rint(x / self.scale) + self.zero_point, 0, 255).astype(np.uint8)
        return q


def load(path: Path) -> onnx.ModelProto:
    model = onnx.load(str(path))
    return onnx.shape_inference.infer_shapes(model)


def cut_points(model: onnx.ModelProto) -> list[CutPoint]:
    """Every place the (topologically sorted) graph can be cut through a single tensor."""
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    shapes = _shapes(model)
    outputs = {o.name for o in graph.output}
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            last_use[name] = i
    graph_input = graph.input[0].name
    points = [CutPoint(0, graph_input, "(input)", shapes[graph_input])]
    live: set[str] = {graph_input}
    for i, node in enumerate(graph.node):
        live |= {o for o in node.output if o}
        live = {t for t in live if last_use.get(t, -1) > i or t in outputs}
        flowing = live - constants
        if len(flowing) == 1 and i + 1 < len(graph.node):
            (tensor,) = flowing
            if tensor in shapes:
                points.append(CutPoint(i + 1, tensor, node.name, shapes[tensor]))
    return points


def partition(
    model: onnx.ModelProto, cut: CutPoint, transport: Transport = "fp32", quantizer: Quantizer | None = None
) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The head (input to the cut tensor) and the tail (the transported tensor to the output)."""
    graph = model.graph
    output = graph.output[0].name
    extractor = onnx.utils.Extractor(model)
    head = extractor.extract_model([graph.input[0].name], [cut.tensor])
    tail = extractor.extract_model([cut.tensor], [output])
    return head, _with_transport(tail, cut, transport, quantizer)


def _with_transport(
    tail: onnx.ModelProto, cut: CutPoint, transport: Transport, quantizer: Quantizer | None
) -> onnx.ModelProto:
    """Rename the tail's input to :data:`TAIL_INPUT` and decode the transport in the graph."""
    graph = tail.graph
    wire_type = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16, "int8": TensorProto.UINT8}[transport]
    dims: list[Any] = ["batch", *cut.shape]
    new_input = helper.make_tensor_value_info(TAIL_INPUT, wire_type, dims)
    if transport == "fp32":
        nodes = [helper.make_node("Identity", [TAIL_INPUT], [cut.tensor], name="transport.identity")]
    elif transport == "fp16":
        nodes = [
            helper.make_node("Cast", [TAIL_INPUT], [cut.tensor], to=TensorProto.FLOAT, name="transport.cast")
        ]
    else:
        if quantizer is None:
            raise InvalidInput("an int8 transport needs a calibrated quantizer")
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(quantizer.scale, dtype=np.float32), "transport.scale"),
                numpy_helper.from_array(
                    np.array(quantizer.zero_point, dtype=np.uint8), "transport.zero_point"
                ),
            ]
        )
        nodes = [
            helper.make_node(
                "DequantizeLinear",
                [TAIL_INPUT, "transport.scale", "transport.zero_point"],
                [cut.tensor],
                name="transport.dequantize",
            )
        ]
    kept = [n for n in graph.node]
    del graph.node[:]
    graph.node.extend(nodes + kept)
    del graph.input[:]
    graph.input.append(new_input)
    onnx.checker.check_model(tail)
    return tail


def encode(x: np.ndarray, transport: Transport, quantizer: Quantizer | None = None) -> np.ndarray:
    """The device side of the transport: FP32 as is, FP16 by rounding, INT8 by quantizing."""
    if transport == "fp32":
        return x.astype(np.float32, copy=False)
    if transport == "fp16":
        return x.astype(np.float16)
    if quantizer is None:
        raise InvalidInput("an int8 transport needs a calibrated quantizer")
    return quantizer.quantize(x)


# -- per-layer profiles and the choice ----------------------------------------------------------


def profile_layers(
    model_path: Path, sample: np.ndarray, runs: int = 20, threads: int | None = None
) -> dict[str, float]:
    """Mean ms per node of the full model on this machine (ONNX Runtime's profiler, after warm-up).

    The session is optimised as the engine's is; nodes the optimiser removed or merged get no
    entry, and layout reorders get none either (:func:`estimate` scales the sum to measured time).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    if threads:
        options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "layers")
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: sample[np.newaxis].astype(np.float32)}
        for _ in range(3 + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, list[float]] = {}
    for event in events:
        name = str(event.get("name", ""))
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            # Fused nodes keep the name of their last member plus a layout suffix ("_nchwc"), so a
            # fused Conv + Clip is charged to the Clip: exact at every cut that does not split it.
            node = name.removesuffix("_kernel_time").removesuffix("_nchwc")
            totals.setdefault(node, []).append(event["dur"] / 1e3)
    return {name: float(np.mean(values[3:] or values)) for name, values in totals.items()}


@dataclass(frozen=True)
class SplitEstimate:
    """Predicted cost of one cut on one link (ms)."""

    cut: CutPoint
    transport: Transport
    head_ms: float
    tail_ms: float
    upload_bytes: int
    transfer_ms: float
    total_ms: float


def estimate(
    model: onnx.ModelProto,
    layers_ms: dict[str, float],
    cut: CutPoint,
    transport: Transport,
    profile: LinkProfile,
    *,
    speedup: float = 1.0,
    overhead_ms: float = 0.0,
    prepare_ms: float = 0.0,
    scale: float = 1.0,
    down_bytes: int = 4400,
) -> SplitEstimate:
    """Device decode + preprocess + head, then transfer and cloud tail for ``cut``.

    ``scale`` maps profiled node times to measured inference time; ``overhead_ms`` is the fixed
    cost of one request (HTTP, serialisation). The cut after the last node (everything on the
    device) has no transfer and no tail.
    """
    names = [n.name for n in model.graph.node]
    head = prepare_ms + scale * sum(layers_ms.get(n, 0.0) for n in names[: cut.index])
    tail = scale * sum(layers_ms.get(n, 0.0) for n in names[cut.index :]) / speedup
    if cut.index >= len(names):
        return SplitEstimate(cut, transport, head, 0.0, 0, 0.0, head)
    sent = cut.bytes(transport) + 400
    up_s = 0.0 if profile.up_bytes_per_s is None else sent / profile.up_bytes_per_s
    down_s = 0.0 if profile.down_bytes_per_s is None else down_bytes / profile.down_bytes_per_s
    transfer = profile.rtt_ms + 1e3 * (up_s + down_s) + overhead_ms
    return SplitEstimate(cut, transport, head, tail, sent, transfer, head + transfer + tail)


def choose_cut(
    model: onnx.ModelProto,
    layers_ms: dict[str, float],
    profile: LinkProfile,
    transports: Sequence[Transport] = TRANSPORTS,
    **kwargs: Any,
) -> list[SplitEstimate]:
    """Every cut and transport, cheapest first; the first entry is the choice."""
    points = cut_points(model)
    everything_local = CutPoint(len(model.graph.node), model.graph.output[0].name, "(all on device)", ())
    found = [estimate(model, layers_ms, p, t, profile, **kwargs) for p in points for t in transports]
    found.append(estimate(model, layers_ms, everything_local, "fp32", profile, **kwargs))
    return sorted(found, key=lambda e: e.total_ms)


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes (batch axis dropped) of every tensor shape inference could resolve."""
    found: dict[str, tuple[int, ...]] = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        sizes = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if len(sizes) >= 2 and all(s is not None for s in sizes[1:]):
            found[value.name] = tuple(int(s) for s in sizes[1:] if s is not None)
    return found
