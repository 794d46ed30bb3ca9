"""The one interface every runtime implements.

A runtime loads one model file, runs a batch and describes its inputs and outputs.
It knows nothing about images, labels or serving: that is the engine's job.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

import numpy as np

from edgeinfer.errors import InvalidInput


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of a tensor: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and shape of a model input or output; ``None`` is a dynamic dimension.

    ``dtype`` is what :meth:`Runtime.run` takes or returns. ``quantization`` is set where the model
    itself stores the tensor quantized (a uint8 LiteRT model): the runtime then quantizes float
    input and dequantizes output with it, so callers always see ``dtype`` (float32).
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    quantization: Quantization | None = None

    def check(self, array: np.ndarray) -> None:
        """Raise :class:`InvalidInput` unless ``array`` fits this spec."""
        if array.dtype != np.dtype(self.dtype):
            raise InvalidInput(f"input {self.name!r} must be {self.dtype}, got {array.dtype}")
        if array.ndim != len(self.shape) or any(
            want is not None and want != got for want, got in zip(self.shape, array.shape, strict=False)
        ):
            want_shape = tuple(-1 if d is None else d for d in self.shape)
            raise InvalidInput(
                f"input {self.name!r} must have shape {want_shape} (-1: any), got {array.shape}"
            )


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run: intra-op threads (None: physical cores) and runtime-specific switches.

    ``compiled_cache_dir``: where a runtime that compiles a model for this machine may keep the
    result for the next load (OpenVINO does, under ``openvino/``); None keeps nothing.
    """

    threads: int | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    compiled_cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 (or None for all physical cores), got {self.threads}")


def check_feeds(specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray]) -> None:
    """Raise :class:`InvalidInput` unless ``feeds`` has exactly one array per spec, each fitting it."""
    expected = [spec.name for spec in specs]
    missing = [name for name in expected if name not in feeds]
    unknown = [name for name in feeds if name not in expected]
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing input(s) {missing}")
        if unknown:
            problems.append(f"unknown input(s) {unknown}")
        raise InvalidInput(f"{' and '.join(problems)}; the model takes {expected}")
    for spec in specs:
        array = feeds[spec.name]
        if not isinstance(array, np.ndarray):
            raise InvalidInput(f"input {spec.name!r} must be a numpy array, got {type(array).__name__}")
        spec.check(array)


def batch_size(specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray]) -> int:
    """The batch (leading dimension) of the first input; 1 for a scalar input."""
    first = feeds[specs[0].name]
    return int(first.shape[0]) if first.ndim else 1


def model_format(path: Path) -> str:
    """The model format from the file name: ``onnx`` or ``tflite``."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in ("onnx", "tflite"):
        raise InvalidInput(f"{path}: unknown model format {suffix!r}; expected a .onnx or .tflite file")
    return suffix


@runtime_checkable
class Runtime(Protocol):
    """A loaded model on one inference runtime.

    ``threads`` is the number of compute threads it holds from the process's thread budget
    (0 for the Null runtime, which computes nothing). ``run`` validates its feeds and raises
    :class:`InvalidInput` for a wrong name, shape or dtype; the runtime stays usable afterwards.
    """

    name: str
    threads: int

    @property
    def inputs(self) -> list[TensorSpec]:
        """The model's inputs, in order."""
        ...

    @property
    def outputs(self) -> list[TensorSpec]:
        """The model's outputs, in order."""
        ...

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; ``feeds`` maps every input name to an array of its dtype."""
        ...

    def close(self) -> None:
        """Release the model's memory and threads."""
        ...


class RuntimeFactory(Protocol):
    """What a runtime module exports: its name, formats, availability and a loader."""

    name: str
    formats: tuple[str, ...]
    # whether load keeps what it compiles for this machine in RuntimeOptions.compiled_cache_dir
    keeps_compiled: bool

    def available(self) -> bool: ...

    def version(self) -> str | None: ...

    def load(self, model_path: Path, options: RuntimeOptions) -> Runtime: ...


class ClosingRuntime:
    """``with``-statement support for runtimes: leaving the block calls ``close``."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class PackagedFactory:
    """Availability and version of a runtime shipped as Python packages, without importing them.

    ``modules`` must all be importable for the runtime to be available; ``distributions`` are the
    PyPI names whose installed versions make up :meth:`version` (the first found, or with
    ``all_versions`` every one found, as ``"name version"`` joined by commas).
    """

    modules: tuple[str, ...] = ()
    distributions: tuple[str, ...] = ()
    all_versions: bool = False
    keeps_compiled: bool = False

    def available(self) -> bool:
        return all(importlib.util.find_spec(module) is not None for module in self.modules)

    def version(self) -> str | None:
        found: list[str] = []
        for distribution in self.distributions:
            try:
                number = importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                continue
            if not self.all_versions:
                return number
            found.append(f"{distribution} {number}")
        return ", ".join(found) or None
