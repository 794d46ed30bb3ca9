"""Building zoo models: safe checkpoint read, ONNX graph emitted directly, config written beside it."""

from __future__ import annotations

import importlib
from pathlib import Path

import onnx

from edgeinfer import __version__
from edgeinfer.models.config import ModelConfig, Provenance
from edgeinfer.models.repository import Builder, sha256_file
from edgeinfer.models.zoo import ZooEntry
from edgeinfer.runtimes.base import TensorSpec

MODEL_FILE = "model.onnx"

_ONNX_DTYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.INT64: "int64",
}


def onnx_io_specs(model: onnx.ModelProto) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs of an ONNX graph as TensorSpecs (symbolic dimensions become None)."""
    initializers = {init.name for init in model.graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        return TensorSpec(value.name, _ONNX_DTYPES.get(int(tensor.elem_type), "float32"), dims)

    inputs = tuple(spec(v) for v in model.graph.input if v.name not in initializers)
    return inputs, tuple(spec(v) for v in model.graph.output)


def fp32_builder(entry: ZooEntry) -> Builder:
    """A Builder that reads ``entry``'s checkpoint and writes its FP32 ONNX model."""

    def build(staging: Path) -> ModelConfig:
        from edgeinfer.models.checkpoint import load_state_dict

        weights = entry.weights_path()
        state_dict = load_state_dict(weights, expected_sha256=entry.weights_sha256)
        graph_module = importlib.import_module(entry.builder)
        model: onnx.ModelProto = graph_module.build_onnx(state_dict)
        path = staging / MODEL_FILE
        onnx.save_model(model, str(path))
        inputs, outputs = onnx_io_specs(model)
        return ModelConfig(
            name=entry.name,
            version="1",
            task=entry.task,
            format="onnx",
            file=MODEL_FILE,
            precision="fp32",
            inputs=inputs,
            outputs=outputs,
            preprocessing=entry.preprocessing,
            labels=entry.labels,
            output_is_probability=True,
            provenance=Provenance(
                source_package=entry.distribution,
                source_version=entry.source_version(),
                source_file=entry.weights_file,
                source_sha256=entry.weights_sha256,
                license=entry.license,
                origin=entry.origin,
                builder_version=f"edgeinfer {__version__}",
            ),
            file_sha256=sha256_file(path),
        )

    return build
