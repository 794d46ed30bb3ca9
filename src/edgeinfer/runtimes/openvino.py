"""OpenVINO on the CPU (optional extra ``openvino``), running the same ONNX file as ONNX Runtime.

Compiled with the LATENCY performance hint, ``INFERENCE_NUM_THREADS`` from the process thread
budget, and f32 inference precision: on CPUs with AVX512_BF16 or AMX, OpenVINO otherwise runs
FP32 models in bfloat16, which changes the numbers. One infer request is reused (under a lock);
a dynamic batch dimension stays dynamic, so any batch size runs without recompiling the model.

``RuntimeOptions.extra`` entries are passed to ``compile_model`` as OpenVINO properties and
override these defaults, for example ``{"INFERENCE_PRECISION_HINT": "bf16"}``.
"""

from __future__ import annotations

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

NAME = "openvino"
DEVICE = "CPU"


class OpenVinoModel(ClosingRuntime):
    """One model compiled for OpenVINO's CPU plugin, with one reusable infer request."""

    name = NAME

    def __init__(self, model_path: Path, options: RuntimeOptions, lease: ThreadLease) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise RuntimeUnavailable(
                "runtime 'openvino' is not installed; pip install 'edgeinfer[openvino]'"
            ) from exc
        self.model_path = model_path
        self.lease = lease
        self.threads = lease.threads
        if "INFERENCE_NUM_THREADS" in options.extra:
            raise InvalidInput("set OpenVINO's thread count with threads=..., not INFERENCE_NUM_THREADS")
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
            **options.extra,
            "INFERENCE_NUM_THREADS": lease.threads,
        }
        core = ov.Core()
        try:
            model = core.read_model(str(model_path))
        except RuntimeError as exc:
            raise IntegrityError(f"OpenVINO cannot read {model_path}: {exc}") from exc
        try:
            self._compiled = core.compile_model(model, DEVICE, config)
        except RuntimeError as exc:
            # with options given, they are the likely culprit; without, the model is
            error = InvalidInput if options.extra else IntegrityError
            raise error(f"OpenVINO cannot compile {model_path.name} with {config}: {exc}") from exc
        self._request = self._compiled.create_infer_request()
        self._inputs = [_spec(port) for port in self._compiled.inputs]
        self._outputs = [_spec(port) for port in self._compiled.outputs]
        self._lock = threading.Lock()
        self._release = process_budget().release_with(self, lease)

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        return list(self._outputs)

    @property
    def properties(self) -> dict[str, str]:
        """The compiled model's settings that matter for a report."""
        keys = ("PERFORMANCE_HINT", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT", "NUM_STREAMS")
        values = {key: self._compiled.get_property(key) for key in keys}
        # element types print as "<Type: 'float32'>"; their short name ("f32") is what configs use
        return {k: v.to_string() if hasattr(v, "to_string") else str(v) for k, v in values.items()}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._request is None:
            raise NotReady(f"the OpenVINO model {self.model_path.name} is closed")
        check_feeds(self._inputs, feeds)
        with self._lock:
            try:
                results = self._request.infer({spec.name: feeds[spec.name] for spec in self._inputs})
            except RuntimeError as exc:
                raise InvalidInput(f"OpenVINO could not run {self.model_path.name}: {exc}") from exc
            # infer() returns copies, so the arrays survive the next request
            return {
                spec.name: np.asarray(results[port])
                for spec, port in zip(self._outputs, self._compiled.outputs, strict=True)
            }

    def close(self) -> None:
        self._request = None
        self._compiled = None
        self._release()


class OpenVinoFactory(PackagedFactory):
    """Registry entry: ``openvino`` is imported only when a model is loaded."""

    name = NAME
    formats: tuple[str, ...] = ("onnx",)

    modules = ("openvino",)
    distributions = ("openvino",)

    def load(self, model_path: Path, options: RuntimeOptions) -> OpenVinoModel:
        if not model_path.is_file():
            raise NotFound(f"model file {model_path} does not exist")
        budget = process_budget()
        lease = budget.acquire(options.threads, owner=f"{NAME}:{model_path.name}")
        try:
            return OpenVinoModel(model_path, options, lease)
        except BaseException:
            budget.release(lease)
            raise


def _spec(port: Any) -> TensorSpec:
    shape = tuple(dim.get_length() if dim.is_static else None for dim in port.get_partial_shape())
    dtype = np.dtype(port.get_element_type().to_dtype()).name
    return TensorSpec(name=port.get_any_name(), dtype=dtype, shape=shape)
