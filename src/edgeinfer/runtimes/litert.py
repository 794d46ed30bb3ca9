"""LiteRT (the TensorFlow Lite interpreter, PyPI ``ai-edge-litert``) for ``.tflite`` models.

The engine always sees float: a quantized (uint8/int8) input takes float32 values in the model's
real domain and is quantized here with the tensor's scale and zero point; quantized outputs are
dequantized to float32. A model with a fixed batch of 1 runs a larger batch sample by sample
(resizing such models fails in XNNPACK for common classifiers); a model whose signature has a
dynamic batch is resized instead.

A ``.tflite`` with metadata is also a zip file; :func:`read_tflite_labels` lists the label file
inside it without LiteRT installed.
"""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgeinfer.errors import IntegrityError, InvalidInput, NotFound, NotReady, RuntimeUnavailable
from edgeinfer.runtimes.base import (
    ClosingRuntime,
    PackagedFactory,
    Quantization,
    RuntimeOptions,
    TensorSpec,
    batch_size,
    check_feeds,
)
from edgeinfer.system.threads import ThreadLease, process_budget

NAME = "litert"
_QUANTIZED = (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int16))


@dataclass(frozen=True)
class _Tensor:
    """One interpreter tensor and how it maps to what callers see."""

    index: int
    spec: TensorSpec
    model_dtype: np.dtype[Any]
    dynamic_batch: bool

    def quantize(self, values: np.ndarray) -> np.ndarray:
        quant = self.spec.quantization
        if quant is None:
            return values
        limits = np.iinfo(self.model_dtype)
        scaled = np.rint(values / np.float32(quant.scale)) + quant.zero_point
        clipped: np.ndarray = np.clip(scaled, limits.min, limits.max)
        return clipped.astype(self.model_dtype)

    def dequantize(self, values: np.ndarray) -> np.ndarray:
        quant = self.spec.quantization
        if quant is None:
            return values
        return (values.astype(np.float32) - np.float32(quant.zero_point)) * np.float32(quant.scale)


@dataclass(frozen=True)
class TfliteInfo:
    """What a ``.tflite`` file says about itself: tensors, layout and embedded labels."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    layout: Literal["NHWC", "NCHW"] | None
    input_hw: tuple[int, int] | None
    labels: tuple[str, ...] | None
    label_file: str | None

    def raw_pixel_normalization(self) -> tuple[float, float, float] | None:
        """``(scale, mean, std)`` with ``(pixel * scale - mean) / std`` equal to the float value that
        quantizes back to the raw uint8 pixel, for a uint8-input model; None otherwise.

        Such a model expects raw pixels; feeding it through the float path with these constants
        reproduces them exactly.
        """
        first = self.inputs[0] if self.inputs else None
        if first is None or first.quantization is None or first.quantization.zero_point < 0:
            return None
        scale = first.quantization.scale
        return scale, scale * first.quantization.zero_point, 1.0


class LiteRtInterpreter(ClosingRuntime):
    """One ``.tflite`` model in a LiteRT ``Interpreter`` (XNNPACK on the CPU), float in and out."""

    name = NAME

    def __init__(self, model_path: Path, options: RuntimeOptions, lease: ThreadLease) -> None:
        self.model_path = model_path
        self.lease = lease
        self.threads = lease.threads
        self._interpreter = _interpreter(model_path, lease.threads, options)
        self._inputs = [_tensor(d) for d in self._interpreter.get_input_details()]
        self._outputs = [_tensor(d) for d in self._interpreter.get_output_details()]
        self._batch = 1
        self._lock = threading.Lock()
        self._release = process_budget().release_with(self, lease)

    @property
    def inputs(self) -> list[TensorSpec]:
        return [tensor.spec for tensor in self._inputs]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [tensor.spec for tensor in self._outputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._interpreter is None:
            raise NotReady(f"the LiteRT interpreter for {self.model_path.name} is closed")
        check_feeds(self.inputs, feeds)
        batch = batch_size(self.inputs, feeds)
        quantized = {t.spec.name: t.quantize(feeds[t.spec.name]) for t in self._inputs}
        with self._lock:
            if all(t.dynamic_batch for t in self._inputs):
                raw = self._invoke(quantized, batch)
            else:
                rows = [
                    self._invoke({k: v[i : i + 1] for k, v in quantized.items()}, 1) for i in range(batch)
                ]
                raw = {name: np.concatenate([row[name] for row in rows]) for name in rows[0]}
        return {t.spec.name: t.dequantize(raw[t.spec.name]) for t in self._outputs}

    def _invoke(self, feeds: Mapping[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
        interpreter = self._interpreter
        if batch != self._batch:
            for tensor in self._inputs:
                shape = list(feeds[tensor.spec.name].shape)
                interpreter.resize_tensor_input(tensor.index, shape, strict=False)
            interpreter.allocate_tensors()
            self._batch = batch
        for tensor in self._inputs:
            interpreter.set_tensor(tensor.index, np.ascontiguousarray(feeds[tensor.spec.name]))
        interpreter.invoke()
        return {t.spec.name: interpreter.get_tensor(t.index) for t in self._outputs}

    def close(self) -> None:
        self._interpreter = None
        self._release()


class LiteRtFactory(PackagedFactory):
    """Registry entry: ``ai-edge-litert``, imported only when a model is loaded."""

    name = NAME
    formats: tuple[str, ...] = ("tflite",)

    modules = ("ai_edge_litert",)
    distributions = ("ai-edge-litert",)

    def load(self, model_path: Path, options: RuntimeOptions) -> LiteRtInterpreter:
        if not model_path.is_file():
            raise NotFound(f"model file {model_path} does not exist")
        budget = process_budget()
        lease = budget.acquire(options.threads, owner=f"{NAME}:{model_path.name}")
        try:
            return LiteRtInterpreter(model_path, options, lease)
        except BaseException:
            budget.release(lease)
            raise


def read_tflite_labels(model_path: Path) -> tuple[tuple[str, ...], str] | None:
    """The labels packed in a ``.tflite``'s metadata zip, with the file's name; None if none."""
    try:
        with zipfile.ZipFile(model_path) as archive:
            names = [n for n in archive.namelist() if n.lower().endswith(".txt")]
            names.sort(key=lambda n: ("label" not in n.lower(), n))
            for name in names:
                lines = archive.read(name).decode("utf-8", errors="replace").splitlines()
                labels = tuple(line.strip() for line in lines if line.strip())
                if labels:
                    return labels, name
    except (zipfile.BadZipFile, OSError):
        return None
    return None


def read_tflite_info(model_path: Path) -> TfliteInfo:
    """Tensors (as the runtime presents them), layout, input size and embedded labels of a ``.tflite``."""
    if not model_path.is_file():
        raise NotFound(f"model file {model_path} does not exist")
    interpreter = _interpreter(model_path, 1, RuntimeOptions())
    inputs = tuple(_tensor(d).spec for d in interpreter.get_input_details())
    outputs = tuple(_tensor(d).spec for d in interpreter.get_output_details())
    layout: Literal["NHWC", "NCHW"] | None = None
    input_hw: tuple[int, int] | None = None
    shape = inputs[0].shape if inputs else ()
    if len(shape) == 4 and shape[3] in (1, 3) and shape[1] and shape[2]:
        layout, input_hw = "NHWC", (shape[1], shape[2])
    elif len(shape) == 4 and shape[1] in (1, 3) and shape[2] and shape[3]:
        layout, input_hw = "NCHW", (shape[2], shape[3])
    found = read_tflite_labels(model_path)
    return TfliteInfo(
        inputs=inputs,
        outputs=outputs,
        layout=layout,
        input_hw=input_hw,
        labels=found[0] if found else None,
        label_file=found[1] if found else None,
    )


def _interpreter(model_path: Path, threads: int, options: RuntimeOptions) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise RuntimeUnavailable(
            "runtime 'litert' is not installed; pip install 'edgeinfer[litert]'"
        ) from exc
    unknown = set(options.extra) - {"xnnpack"}
    if unknown:
        raise InvalidInput(f"unknown litert option(s) {sorted(unknown)}; the one option is xnnpack=0|1")
    xnnpack = str(options.extra.get("xnnpack", "1")).strip()
    if xnnpack not in ("0", "1"):
        raise InvalidInput(f"litert option xnnpack must be 0 or 1, got {xnnpack!r}")
    kwargs: dict[str, Any] = {}
    if xnnpack == "0":
        from ai_edge_litert.interpreter import OpResolverType

        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = Interpreter(model_path=str(model_path), num_threads=threads, **kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise IntegrityError(f"LiteRT cannot load {model_path}: {exc}") from exc
    return interpreter


def _tensor(detail: Mapping[str, Any]) -> _Tensor:
    model_dtype = np.dtype(detail["dtype"])
    signature = [int(d) for d in detail.get("shape_signature", detail["shape"])]
    shape = tuple(None if d < 0 else d for d in signature)
    dynamic_batch = bool(shape) and shape[0] is None
    if not dynamic_batch and shape and shape[0] == 1:
        shape = (None, *shape[1:])  # batches run sample by sample, so any batch is accepted
    params = detail.get("quantization_parameters", {})
    scales = np.asarray(params.get("scales", ()), dtype=np.float64)
    zero_points = np.asarray(params.get("zero_points", ()), dtype=np.int64)
    quantization = None
    if model_dtype in _QUANTIZED and scales.size:
        if scales.size != 1:
            raise IntegrityError(
                f"tensor {detail['name']!r} is quantized per channel; edgeinfer handles per-tensor only"
            )
        quantization = Quantization(scale=float(scales[0]), zero_point=int(zero_points[0]))
    dtype = "float32" if quantization is not None else model_dtype.name
    spec = TensorSpec(name=str(detail["name"]), dtype=dtype, shape=shape, quantization=quantization)
    return _Tensor(
        index=int(detail["index"]), spec=spec, model_dtype=model_dtype, dynamic_batch=dynamic_batch
    )
