"""The Null runtime: validates its feeds like a real runtime and returns zeros, computing nothing.

It measures the engine's own overhead (decode, preprocess, batching, serving) and lets servers
and streams be tested without a model. It never takes part in ``runtime="auto"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edgeinfer.errors import IntegrityError, InvalidInput, NotFound, NotReady
from edgeinfer.runtimes.base import (
    ClosingRuntime,
    RuntimeOptions,
    TensorSpec,
    batch_size,
    check_feeds,
    model_format,
)

NAME = "null"


class NullRuntime(ClosingRuntime):
    """Zeros of each output's dtype and shape; a dynamic output dimension takes the input's batch."""

    name = NAME
    threads = 0

    def __init__(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
        if not inputs or not outputs:
            raise ValueError("the Null runtime needs at least one input and one output spec")
        self._inputs = list(inputs)
        self._outputs = list(outputs)
        self._closed = False

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        return list(self._outputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            raise NotReady("the Null runtime is closed")
        check_feeds(self._inputs, feeds)
        batch = batch_size(self._inputs, feeds)
        return {
            spec.name: np.zeros(
                tuple(batch if i == 0 and dim is None else (dim or 1) for i, dim in enumerate(spec.shape)),
                dtype=np.dtype(spec.dtype),
            )
            for spec in self._outputs
        }

    def close(self) -> None:
        self._closed = True


class NullFactory:
    """Loads a model file only to read its input and output specs."""

    name = NAME
    formats: tuple[str, ...] = ("onnx", "tflite")
    keeps_compiled = False

    def available(self) -> bool:
        return True

    def version(self) -> str | None:
        from edgeinfer import __version__

        return __version__

    def load(self, model_path: Path, options: RuntimeOptions) -> NullRuntime:
        if options.extra:  # nothing to run, so nothing to tune: threads are ignored, options refused
            raise InvalidInput(f"runtime 'null' takes no runtime options, got {sorted(options.extra)}")
        if not model_path.is_file():
            raise NotFound(f"model file {model_path} does not exist")
        if model_format(model_path) == "tflite":
            from edgeinfer.runtimes.litert import read_tflite_info

            info = read_tflite_info(model_path)
            return NullRuntime(info.inputs, info.outputs)
        inputs, outputs = onnx_specs(model_path)
        return NullRuntime(inputs, outputs)


def onnx_specs(model_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph inputs (initializers excluded) and outputs of an ONNX file, read with ``onnx``."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        graph = onnx.load(str(model_path), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError and friends for a corrupt file
        raise IntegrityError(f"cannot read ONNX model {model_path}: {exc}") from exc
    initializers = {init.name for init in graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        shape = tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in tensor.shape.dim)
        dtype = np.dtype(tensor_dtype_to_np_dtype(tensor.elem_type)).name
        return TensorSpec(name=value.name, dtype=dtype, shape=shape)

    inputs = [spec(value) for value in graph.input if value.name not in initializers]
    return inputs, [spec(value) for value in graph.output]
