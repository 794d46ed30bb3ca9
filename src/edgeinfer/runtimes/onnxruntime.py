"""ONNX Runtime on the CPU: the embedded default runtime.

Session settings, each measured on MobileNetV2 (batch 1, 2-core Xeon with AVX-512, 100 runs each):

- intra-op threads from the process thread budget (default: every free physical core);
- inter-op threads 1 and sequential execution (the parallel executor was slower and burnt more CPU);
- graph optimization level ALL (its NCHWc layout transforms were 2-3x faster than EXTENDED);
- thread spinning OFF: spinning saved ~5% latency but keeps idle workers burning the cores
  that decode and other runtimes need.

``RuntimeOptions.extra`` overrides them: ``graph_optimization_level`` (disable, basic, extended,
all), ``execution_mode`` (sequential, parallel: needs ``inter_op_threads`` >= 2, threads that the
thread budget does not count, so use it only to measure), ``inter_op_threads``, ``enable_cpu_mem_arena``
and ``enable_mem_pattern`` (0/1), ``optimized_model_path``, and any dotted ONNX Runtime session
config key, for example ``{"session.intra_op.allow_spinning": "1"}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer.errors import IntegrityError, InvalidInput, NotFound, NotReady
from edgeinfer.runtimes.base import (
    ClosingRuntime,
    PackagedFactory,
    RuntimeOptions,
    TensorSpec,
    check_feeds,
)
from edgeinfer.system.threads import ThreadLease, process_budget

NAME = "onnxruntime"

DEFAULT_SESSION_CONFIG = {
    "session.intra_op.allow_spinning": "0",
    "session.inter_op.allow_spinning": "0",
}
_OPTION_KEYS = (
    "graph_optimization_level",
    "execution_mode",
    "inter_op_threads",
    "enable_cpu_mem_arena",
    "enable_mem_pattern",
    "optimized_model_path",
)

# ONNX Runtime's element type names, as ``session.get_inputs()[i].type`` spells them.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


class OnnxRuntimeSession(ClosingRuntime):
    """One ONNX model in an ``onnxruntime.InferenceSession`` on the CPU execution provider."""

    name = NAME

    def __init__(self, model_path: Path, options: RuntimeOptions, lease: ThreadLease) -> None:
        import onnxruntime as ort

        self.model_path = model_path
        self.lease = lease
        self.threads = lease.threads
        session_options = _session_options(ort, options, lease.threads)
        try:
            self._session = ort.InferenceSession(
                str(model_path), session_options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/InvalidProtobuf types
            raise IntegrityError(f"onnxruntime cannot load {model_path}: {exc}") from exc
        self._inputs = [_spec(arg) for arg in self._session.get_inputs()]
        self._outputs = [_spec(arg) for arg in self._session.get_outputs()]
        self._output_names = [spec.name for spec in self._outputs]
        self._release = process_budget().release_with(self, lease)

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        return list(self._outputs)

    @property
    def session_options(self) -> Any:
        """The ``onnxruntime.SessionOptions`` the session was created with (for tests and reports)."""
        return self._session.get_session_options()

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._session is None:
            raise NotReady(f"the onnxruntime session for {self.model_path.name} is closed")
        check_feeds(self._inputs, feeds)
        try:
            results = self._session.run(self._output_names, dict(feeds))
        except Exception as exc:  # a shape the graph cannot take surfaces only here
            raise InvalidInput(f"onnxruntime could not run {self.model_path.name}: {exc}") from exc
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        self._session = None
        self._release()


class OnnxRuntimeFactory(PackagedFactory):
    """Registry entry: availability and version from package metadata, import only on load."""

    name = NAME
    formats: tuple[str, ...] = ("onnx",)

    modules = ("onnxruntime",)
    distributions = ("onnxruntime", "onnxruntime-openvino", "onnxruntime-gpu", "onnxruntime-directml")

    def load(self, model_path: Path, options: RuntimeOptions) -> OnnxRuntimeSession:
        if not model_path.is_file():
            raise NotFound(f"model file {model_path} does not exist")
        budget = process_budget()
        lease = budget.acquire(options.threads, owner=f"{NAME}:{model_path.name}")
        try:
            return OnnxRuntimeSession(model_path, options, lease)
        except BaseException:
            budget.release(lease)
            raise


def _session_options(ort: Any, options: RuntimeOptions, threads: int) -> Any:
    extra = dict(options.extra)
    unknown = [key for key in extra if "." not in key and key not in _OPTION_KEYS]
    if unknown:
        raise InvalidInput(
            f"unknown onnxruntime option(s) {unknown}; use one of {list(_OPTION_KEYS)} "
            "or a dotted session config key such as 'session.intra_op.allow_spinning'"
        )
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = _int_option(extra, "inter_op_threads", 1)
    so.execution_mode = _choice(
        extra,
        "execution_mode",
        "sequential",
        {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL, "parallel": ort.ExecutionMode.ORT_PARALLEL},
    )
    so.graph_optimization_level = _choice(
        extra,
        "graph_optimization_level",
        "all",
        {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        },
    )
    if so.execution_mode == ort.ExecutionMode.ORT_PARALLEL and so.inter_op_num_threads < 2:
        # ONNX Runtime silently falls back to sequential with one inter-op thread
        raise InvalidInput("execution_mode=parallel needs inter_op_threads >= 2")
    so.enable_cpu_mem_arena = _int_option(extra, "enable_cpu_mem_arena", 1) == 1
    so.enable_mem_pattern = _int_option(extra, "enable_mem_pattern", 1) == 1
    if "optimized_model_path" in extra:
        so.optimized_model_filepath = extra["optimized_model_path"]
    config = {**DEFAULT_SESSION_CONFIG, **{k: v for k, v in extra.items() if "." in k}}
    for key, value in config.items():
        so.add_session_config_entry(key, str(value))
    return so


def _choice(extra: Mapping[str, str], key: str, default: str, choices: Mapping[str, Any]) -> Any:
    value = str(extra.get(key, default)).lower()
    if value not in choices:
        raise InvalidInput(f"onnxruntime option {key}={value!r} is not one of {sorted(choices)}")
    return choices[value]


def _int_option(extra: Mapping[str, str], key: str, default: int) -> int:
    raw = extra.get(key, default)
    try:
        value = int(raw)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"onnxruntime option {key} must be a whole number, got {raw!r}") from exc
    if value < 0:
        raise InvalidInput(f"onnxruntime option {key} must be >= 0, got {value}")
    return value


def _spec(arg: Any) -> TensorSpec:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise IntegrityError(f"tensor {arg.name!r} has type {arg.type}, which edgeinfer does not handle")
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else None for dim in arg.shape)
    return TensorSpec(name=arg.name, dtype=dtype, shape=shape)
