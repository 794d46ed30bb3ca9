"""OpenVINO on the CPU (optional extra ``openvino``), running the same ONNX file as ONNX Runtime.

Compiled with the LATENCY performance hint, ``INFERENCE_NUM_THREADS`` from the process thread
budget, and f32 inference precision: on CPUs with AVX512_BF16 or AMX, OpenVINO otherwise runs
FP32 models in bfloat16, which changes the numbers. One infer request per compiled model is reused
(under a lock), reading the caller's input array in place and copying only the output out.

A model whose one input has a dynamic batch dimension is compiled twice: reshaped to batch 1 (the
latency path: a static shape lets OpenVINO plan every kernel ahead, 10-15% faster for the INT8
and bfloat16 graphs measured in docs/BENCHMARKS.md) at load, and with the batch left dynamic on
the first call with another batch size, so any batch runs without recompiling again.

Compiled models are kept in ``openvino/`` under ``RuntimeOptions.compiled_cache_dir`` when one is
given (OpenVINO's ``CACHE_DIR``, keyed by the model's contents and the compile settings): the next
load imports the result instead of transforming the graph again (INT8 MobileNetV2: 0.15 s against
0.5 s; the outputs are the same). A cache that cannot be written or used is left out; one over
``CACHE_MAX_BYTES`` loses its longest-ago compiled models first.

``RuntimeOptions.extra`` entries are passed to ``compile_model`` as OpenVINO properties and
override these defaults, for example ``{"INFERENCE_PRECISION_HINT": "bf16"}``.
"""

from __future__ import annotations

import logging
import os
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
CACHE_MAX_BYTES = 256 * 1024 * 1024  # compiled models kept (MobileNetV2: 4 MB INT8, 14 MB FP32)
logger = logging.getLogger(__name__)


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
        cache = _cache_dir(options.compiled_cache_dir)
        self._config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
            **({"CACHE_DIR": str(cache)} if cache is not None else {}),
            **options.extra,
            "INFERENCE_NUM_THREADS": lease.threads,
        }
        self._core = ov.Core()
        try:
            self._model: Any = self._core.read_model(str(model_path))
        except RuntimeError as exc:
            raise IntegrityError(f"OpenVINO cannot read {model_path}: {exc}") from exc
        self._has_extra = bool(options.extra)
        self._inputs = [_spec(port) for port in self._model.inputs]
        self._outputs = [_spec(port) for port in self._model.outputs]
        # batch -> (compiled model, its request); None: the model as read (any batch it allows)
        self._compiled: dict[int | None, tuple[Any, Any]] = {}
        single = _batch_one(self._model)
        compiled = self._compile(self._model if single is None else single)
        self._compiled[None if single is None else 1] = (compiled, compiled.create_infer_request())
        self._lock = threading.Lock()
        self._release = process_budget().release_with(self, lease)

    def _compile(self, model: Any) -> Any:
        try:
            return self._core.compile_model(model, DEVICE, self._config)
        except RuntimeError as exc:
            if "CACHE_DIR" in self._config:  # a damaged cache must not cost the model: without it
                cache_dir = self._config.pop("CACHE_DIR")
                compiled = self._compile(model)  # raises the real error where it was not the cache
                logger.warning(
                    "OpenVINO could not use its cache %s (%s); compiled without it", cache_dir, exc
                )
                return compiled
            # with options given, they are the likely culprit; without, the model is
            error = InvalidInput if self._has_extra else IntegrityError
            raise error(f"OpenVINO cannot compile {self.model_path.name} with {self._config}: {exc}") from exc

    def _for_batch(self, batch: int) -> tuple[Any, Any]:
        """The compiled model and request that run ``batch`` samples (under the lock)."""
        found = self._compiled.get(batch) or self._compiled.get(None)
        if found is None:
            compiled = self._compile(self._model)
            found = self._compiled[None] = (compiled, compiled.create_infer_request())
        return found

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        return list(self._outputs)

    @property
    def properties(self) -> dict[str, str]:
        """The compiled model's settings that matter for a report."""
        if not self._compiled:
            raise NotReady(f"the OpenVINO model {self.model_path.name} is closed")
        compiled = next(iter(self._compiled.values()))[0]
        keys = (
            "PERFORMANCE_HINT",
            "INFERENCE_NUM_THREADS",
            "INFERENCE_PRECISION_HINT",
            "NUM_STREAMS",
            "LOADED_FROM_CACHE",
        )
        values = {key: compiled.get_property(key) for key in keys}
        # element types print as "<Type: 'float32'>"; their short name ("f32") is what configs use
        return {k: v.to_string() if hasattr(v, "to_string") else str(v) for k, v in values.items()}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feeds(self._inputs, feeds)
        inputs = {spec.name: feeds[spec.name] for spec in self._inputs}
        batch = len(next(iter(inputs.values()))) if inputs else 1
        with self._lock:
            if not self._compiled:
                raise NotReady(f"the OpenVINO model {self.model_path.name} is closed")
            compiled, request = self._for_batch(batch)
            try:
                # the request reads the caller's arrays in place (the call is synchronous) and its
                # outputs are views of its own buffers, copied out before the next call reuses them
                results = request.infer(inputs, share_inputs=True, share_outputs=True)
            except RuntimeError as exc:
                raise InvalidInput(f"OpenVINO could not run {self.model_path.name}: {exc}") from exc
            return {
                spec.name: np.array(results[port], copy=True)
                for spec, port in zip(self._outputs, compiled.outputs, strict=True)
            }

    def close(self) -> None:
        with self._lock:
            self._compiled.clear()
            self._model = None
        self._release()


def _cache_dir(root: Path | None) -> Path | None:
    """``root/openvino`` made if need be, or None where it cannot be written (a read-only
    repository loads its models as before, compiling each time)."""
    if root is None:
        return None
    directory = root / NAME
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.info("OpenVINO keeps no compiled models: cannot make %s (%s)", directory, exc)
        return None
    if not os.access(directory, os.W_OK | os.X_OK):
        logger.info("OpenVINO keeps no compiled models: %s is not writable", directory)
        return None
    _prune(directory, CACHE_MAX_BYTES)
    return directory


def _prune(directory: Path, max_bytes: int) -> None:
    """Remove the longest-ago compiled models until ``directory`` holds at most ``max_bytes`` (a
    rebuilt model or new settings compile anew; nothing else ever removes the old ones)."""
    blobs = []
    for path in directory.glob("*.blob"):
        try:
            status = path.stat()
        except OSError:
            continue
        blobs.append((status.st_mtime, status.st_size, path))
    total = sum(size for _, size, _ in blobs)
    for _, size, path in sorted(blobs):
        if total <= max_bytes:
            return
        try:
            path.unlink()
        except OSError:
            continue
        total -= size


class OpenVinoFactory(PackagedFactory):
    """Registry entry: ``openvino`` is imported only when a model is loaded."""

    name = NAME
    formats: tuple[str, ...] = ("onnx",)

    modules = ("openvino",)
    distributions = ("openvino",)
    keeps_compiled = True

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


def _batch_one(model: Any) -> Any | None:
    """A copy of ``model`` with batch 1, when its one input's batch is its only dynamic dimension."""
    if len(model.inputs) != 1:
        return None
    shape = model.inputs[0].get_partial_shape()
    if shape.rank.is_dynamic or len(shape) < 1 or shape[0].is_static:
        return None
    if any(dim.is_dynamic for dim in list(shape)[1:]):
        return None
    single = model.clone()
    single.reshape([1, *(dim.get_length() for dim in list(shape)[1:])])
    return single


def _spec(port: Any) -> TensorSpec:
    shape = tuple(dim.get_length() if dim.is_static else None for dim in port.get_partial_shape())
    dtype = np.dtype(port.get_element_type().to_dtype()).name
    return TensorSpec(name=port.get_any_name(), dtype=dtype, shape=shape)
