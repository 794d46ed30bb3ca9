"""The zoo's FP32 ONNX graphs as TFLite flatbuffers, for LiteRT, without TensorFlow.

The zoo builds its models from a handful of ONNX ops (``models/graph.py``): Conv (any group,
explicit pads), Clip to 0..6, Add, GlobalAveragePool + Flatten, Gemm, Softmax, Identity. Each maps
to one TFLite builtin; the file is written with the TFLite schema's object API that
``ai-edge-litert`` ships (``schema_py_generated``). The result is a drop-in for the ONNX model:
the same ``input`` [N, 3, H, W] NCHW float32 (a leading TRANSPOSE hands LiteRT the NHWC it
computes in), the same output name and values. Convolutions whose pads are TFLite's SAME or VALID
use them; others (torchvision pads a stride-2 3x3 by 1 on every side, SAME would pad only the
bottom/right) get an explicit PAD first. ReLU6 is fused into the convolution before it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgeinfer.errors import IntegrityError, RuntimeUnavailable
from edgeinfer.models.repository import sha256_file
from edgeinfer.system.files import write_atomically

TFLITE_FILE = "model.tflite"
SCHEMA_VERSION = 3
WRITER_VERSION = 1  # raise when the conversion changes: twins written by an older one are redone
_RELU6 = (0.0, 6.0)


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:
        raise RuntimeUnavailable(
            "writing a .tflite needs LiteRT's schema; pip install 'edgeinfer[litert]'"
        ) from exc
    return schema


@dataclass
class _Writer:
    """The flatbuffer under construction: tensors, buffers, operator codes, operators."""

    schema: Any
    tensors: list[Any] = field(default_factory=list)
    buffers: list[Any] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)
    operators: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.buffers.append(self.schema.BufferT())  # buffer 0: the empty sentinel

    def tensor(self, name: str, shape: tuple[int, ...], data: np.ndarray | None = None) -> int:
        s = self.schema
        t = s.TensorT()
        t.name = name
        t.shape = [1 if d < 0 else d for d in shape]
        t.shapeSignature = list(shape)
        t.type = s.TensorType.FLOAT32
        if data is not None:
            t.type = s.TensorType.INT32 if data.dtype == np.int32 else s.TensorType.FLOAT32
            buffer = s.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            self.buffers.append(buffer)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def constant(self, name: str, data: np.ndarray) -> int:
        return self.tensor(name, tuple(data.shape), data)

    def op(
        self, code: int, inputs: list[int], outputs: list[int], kind: int = 0, options: Any = None
    ) -> None:
        s = self.schema
        if code not in self.codes:
            self.codes[code] = len(self.codes)
        o = s.OperatorT()
        o.opcodeIndex = self.codes[code]
        o.inputs, o.outputs = inputs, outputs
        if options is not None:
            o.builtinOptionsType, o.builtinOptions = kind, options
        self.operators.append(o)

    def finish(self, inputs: list[int], outputs: list[int], description: str) -> bytes:
        import flatbuffers

        s = self.schema
        graph = s.SubGraphT()
        graph.tensors, graph.operators = self.tensors, self.operators
        graph.inputs, graph.outputs, graph.name = inputs, outputs, "main"
        model = s.ModelT()
        model.version, model.description = SCHEMA_VERSION, description
        model.subgraphs, model.buffers = [graph], self.buffers
        model.operatorCodes = []
        for code in sorted(self.codes, key=self.codes.__getitem__):
            entry = s.OperatorCodeT()
            entry.builtinCode, entry.deprecatedBuiltinCode, entry.version = code, min(code, 127), 1
            model.operatorCodes.append(entry)
        builder = flatbuffers.Builder(1 << 20)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def onnx_to_tflite(model: onnx.ModelProto) -> bytes:
    """The TFLite flatbuffer of a zoo ONNX graph; :class:`IntegrityError` for ops outside the subset."""
    return _Converter(model).convert()


class _Converter:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.s = _schema()
        self.w = _Writer(self.s)
        self.constants = {init.name: numpy_helper.to_array(init) for init in self.graph.initializer}
        self.readers: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                self.readers[name] = self.readers.get(name, 0) + 1
        self.values: dict[str, tuple[int, tuple[int, ...]]] = {}  # ONNX name -> (tensor, NHWC shape)
        self.fused: set[str] = set()  # outputs of nodes written together with the node before

    def convert(self) -> bytes:
        s = self.s
        (graph_input,) = [v for v in self.graph.input if v.name not in self.constants]
        dims = [d.dim_value if d.dim_value > 0 else -1 for d in graph_input.type.tensor_type.shape.dim]
        if len(dims) != 4:
            raise IntegrityError(f"expected an NCHW image input, got {len(dims)} dimensions")
        n, c, h, w = dims
        nchw = self.w.tensor(graph_input.name, (n, c, h, w))
        nhwc = self.w.tensor(f"{graph_input.name}.nhwc", (n, h, w, c))
        perm = self.w.constant("nchw_to_nhwc", np.array([0, 2, 3, 1], np.int32))
        self.w.op(s.BuiltinOperator.TRANSPOSE, [nchw, perm], [nhwc], s.BuiltinOptions.TransposeOptions,
                  s.TransposeOptionsT())  # fmt: skip
        self.values[graph_input.name] = (nhwc, (n, h, w, c))
        nodes = list(self.graph.node)
        for i, node in enumerate(nodes):
            self._node(node, nodes[i + 1] if i + 1 < len(nodes) else None)
        (graph_output,) = self.graph.output
        output, _ = self.values[graph_output.name]
        self.w.tensors[output].name = graph_output.name
        return self.w.finish([nchw], [output], f"edgeinfer: {self.graph.name} converted from ONNX")

    def _node(self, node: onnx.NodeProto, following: onnx.NodeProto | None) -> None:
        handler = getattr(self, f"_{node.op_type.lower()}", None)
        if node.output[0] in self.fused:
            return
        if handler is None:
            raise IntegrityError(f"cannot write ONNX op {node.op_type} ({node.name}) as TFLite")
        try:
            handler(node, following)
        except KeyError as exc:  # an input that no written op produced: a constant, or a skipped op
            raise IntegrityError(f"{node.name}: input {exc} is not a tensor this writer can feed") from exc

    def _attrs(self, node: onnx.NodeProto) -> dict[str, Any]:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def _is_relu6(self, node: onnx.NodeProto | None, source: str) -> bool:
        if node is None or node.op_type != "Clip" or node.input[0] != source or self.readers.get(source) != 1:
            return False
        return self._bounds_are_relu6(node)

    def _conv(self, node: onnx.NodeProto, following: onnx.NodeProto | None) -> None:
        s, w = self.s, self.w
        x, (n, h, wd, c) = self.values[node.input[0]]
        weight = self.constants[node.input[1]]
        bias = self.constants[node.input[2]] if len(node.input) > 2 else np.zeros(weight.shape[0], np.float32)
        attrs = self._attrs(node)
        strides = [int(v) for v in attrs.get("strides", [1, 1])]
        square = weight.ndim == 4 and weight.shape[-1] == weight.shape[-2] and strides[0] == strides[1]
        undilated = all(int(v) == 1 for v in attrs.get("dilations", [1, 1]))
        plain = undilated and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
        if not (square and plain):
            raise IntegrityError(f"{node.name}: only square 2-D convolutions without dilation are written")
        stride = strides[0]
        group = int(attrs.get("group", 1))
        k = int(weight.shape[-1])
        top, left, bottom, right = (int(p) for p in attrs.get("pads", [0, 0, 0, 0]))
        out_h = (h + top + bottom - k) // stride + 1
        out_w = (wd + left + right - k) // stride + 1
        padding = s.Padding.VALID
        if (top, left, bottom, right) == _same_pads(h, wd, k, stride) and (top or bottom or left or right):
            padding = s.Padding.SAME
        elif top or left or bottom or right:
            paddings = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32)
            padded = w.tensor(f"{node.name}.pad", (n, h + top + bottom, wd + left + right, c))
            w.op(s.BuiltinOperator.PAD, [x, w.constant(f"{node.name}.paddings", paddings)], [padded],
                 s.BuiltinOptions.PadOptions, s.PadOptionsT())  # fmt: skip
            x = padded
        fuse = self._is_relu6(following, node.output[0])
        activation = s.ActivationFunctionType.RELU6 if fuse else s.ActivationFunctionType.NONE
        out_c = int(weight.shape[0])
        name = following.output[0] if fuse and following is not None else node.output[0]
        y = w.tensor(name, (n, out_h, out_w, out_c))
        b = w.constant(f"{node.name}.bias", bias.astype(np.float32))
        if group == 1:
            filt = w.constant(f"{node.name}.weight", weight.transpose(0, 2, 3, 1).astype(np.float32))
            options = s.Conv2DOptionsT()
            kind, code = s.BuiltinOptions.Conv2DOptions, s.BuiltinOperator.CONV_2D
        elif group == c == out_c and weight.shape[1] == 1:
            filt = w.constant(f"{node.name}.weight", weight.transpose(1, 2, 3, 0).astype(np.float32))
            options = s.DepthwiseConv2DOptionsT()
            options.depthMultiplier = 1
            kind, code = s.BuiltinOptions.DepthwiseConv2DOptions, s.BuiltinOperator.DEPTHWISE_CONV_2D
        else:
            raise IntegrityError(f"{node.name}: grouped convolution (group {group}) has no TFLite op")
        options.padding, options.strideH, options.strideW = padding, stride, stride
        options.dilationHFactor = options.dilationWFactor = 1
        options.fusedActivationFunction = activation
        w.op(code, [x, filt, b], [y], kind, options)
        self.values[node.output[0]] = self.values[name] = (y, (n, out_h, out_w, out_c))
        if fuse and following is not None:
            self.fused.add(following.output[0])

    def _clip(self, node: onnx.NodeProto, following: onnx.NodeProto | None) -> None:
        del following
        if not self._bounds_are_relu6(node):
            raise IntegrityError(f"{node.name}: only Clip to 0..6 (ReLU6) has a TFLite op here")
        x, shape = self.values[node.input[0]]
        y = self.w.tensor(node.output[0], shape)
        self.w.op(self.s.BuiltinOperator.RELU6, [x], [y])
        self.values[node.output[0]] = (y, shape)

    def _bounds_are_relu6(self, node: onnx.NodeProto) -> bool:
        bounds = [self.constants.get(name) for name in node.input[1:3]]
        if any(b is None or b.size != 1 for b in bounds):
            return False
        return tuple(float(b.reshape(-1)[0]) for b in bounds if b is not None) == _RELU6

    def _add(self, node: onnx.NodeProto, following: onnx.NodeProto | None) -> None:
        del following
        (a, shape), (b, other) = self.values[node.input[0]], self.values[node.input[1]]
        if shape != other:
            raise IntegrityError(f"{node.name}: only Add of two equal shapes (a residual) is written")
        y = self.w.tensor(node.output[0], shape)
        self.w.op(
            self.s.BuiltinOperator.ADD, [a, b], [y], self.s.BuiltinOptions.AddOptions, self.s.AddOptionsT()
        )
        self.values[node.output[0]] = (y, shape)

    def _globalaveragepool(self, node: onnx.NodeProto, following: onnx.NodeProto | None) -> None:
        flattens = (
            following is not None
            and following.op_type == "Flatten"
            and following.input[0] == node.output[0]
            and self._attrs(following).get("axis", 1) == 1
        )
        if following is None or not flattens:
            raise IntegrityError(f"{node.name}: GlobalAveragePool is written only when Flatten follows it")
        s, w = self.s, self.w
        x, (n, _, _, c) = self.values[node.input[0]]
        y = w.tensor(following.output[0], (n, c))
        options = s.ReducerOptionsT()
        options.keepDims = False
        axes = w.constant(f"{node.name}.axes", np.array([1, 2], np.int32))
        w.op(s.BuiltinOperator.MEAN, [x, axes], [y], s.BuiltinOptions.ReducerOptions, options)
        self.values[following.output[0]] = (y, (n, c))
        self.fused.add(following.output[0])

    def _gemm(self, node: onnx.NodeProto, following: onnx.NodeProto | None) -> None:
        del following
        attrs = self._attrs(node)
        scaled = attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0
        if attrs.get("transB") != 1 or attrs.get("transA", 0) != 0 or scaled:
            raise IntegrityError(f"{node.name}: only Gemm with transB=1 (torch's Linear) is written")
        s, w = self.s, self.w
        x, (n, _) = self.values[node.input[0]]
        weight = self.constants[node.input[1]].astype(np.float32)
        bias = self.constants[node.input[2]].astype(np.float32)
        y = w.tensor(node.output[0], (n, int(weight.shape[0])))
        inputs = [x, w.constant(f"{node.name}.weight", weight), w.constant(f"{node.name}.bias", bias)]
        w.op(s.BuiltinOperator.FULLY_CONNECTED, inputs, [y], s.BuiltinOptions.FullyConnectedOptions,
             s.FullyConnectedOptionsT())  # fmt: skip
        self.values[node.output[0]] = (y, (n, int(weight.shape[0])))

    def _softmax(self, node: onnx.NodeProto, following: onnx.NodeProto | None) -> None:
        del following
        s, w = self.s, self.w
        x, shape = self.values[node.input[0]]
        if len(shape) != 2 or self._attrs(node).get("axis", -1) not in (1, -1):
            raise IntegrityError(f"{node.name}: only Softmax over the classes of (N, classes) is written")
        y = w.tensor(node.output[0], shape)
        options = s.SoftmaxOptionsT()
        options.beta = 1.0
        w.op(s.BuiltinOperator.SOFTMAX, [x], [y], s.BuiltinOptions.SoftmaxOptions, options)
        self.values[node.output[0]] = (y, shape)

    def _identity(self, node: onnx.NodeProto, following: onnx.NodeProto | None) -> None:
        del following
        self.values[node.output[0]] = self.values[node.input[0]]


def _same_pads(h: int, w: int, k: int, stride: int) -> tuple[int, int, int, int]:
    """TFLite's SAME padding (top, left, bottom, right): the odd pixel goes to the bottom/right."""

    def pads(size: int) -> tuple[int, int]:
        total = max((-(-size // stride) - 1) * stride + k - size, 0)
        return total // 2, total - total // 2

    (top, bottom), (left, right) = pads(h), pads(w)
    return top, left, bottom, right


def tflite_twin(onnx_path: Path, onnx_sha256: str) -> Path:
    """The LiteRT twin of the float ONNX model at ``onnx_path`` (whose verified sha256 is given).

    Written beside it on first use as ``model.tflite``, with ``model.tflite.json`` recording which
    ONNX file (by sha256) it came from, its own sha256 and the writer's version; written again when
    any of them changed or the twin no longer matches its record. Writes go through a temporary
    file and a rename, so concurrent callers each see a whole file.
    """
    twin = onnx_path.with_name(TFLITE_FILE)
    record_path = onnx_path.with_name(TFLITE_FILE + ".json")
    try:
        record = json.loads(record_path.read_text())
        current = record.get("onnx_sha256") == onnx_sha256 and record.get("writer") == WRITER_VERSION
        if current and record.get("tflite_sha256") == sha256_file(twin):
            return twin
    except (OSError, ValueError, AttributeError):
        pass
    data = onnx_to_tflite(onnx.load(str(onnx_path)))
    record = {
        "onnx_sha256": onnx_sha256,
        "tflite_sha256": hashlib.sha256(data).hexdigest(),
        "writer": WRITER_VERSION,
    }
    try:
        write_atomically(twin, data)
        write_atomically(record_path, json.dumps(record, indent=2))
    except OSError as exc:
        raise RuntimeUnavailable(f"cannot write the LiteRT twin of {onnx_path}: {exc}") from exc
    return twin
