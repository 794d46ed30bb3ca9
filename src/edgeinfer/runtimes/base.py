"""The one interface every runtime implements.

A runtime loads one model file, runs a batch and describes its inputs and outputs.
It knows nothing about images, labels or serving: that is the engine's job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from edgeinfer.errors import InvalidInput


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of a tensor: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and shape of a model input or output; ``None`` is a dynamic dimension."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    quantization: Quantization | None = None

    def check(self, array: np.ndarray) -> None:
        """Raise :class:`InvalidInput` unless ``array`` fits this spec."""
        if array.dtype != np.dtype(self.dtype):
            raise InvalidInput(
                f"input {self.name!r} must be {self.dtype}, got {array.dtype}"
            )
        if array.ndim != len(self.shape) or any(
            want is not None and want != got for want, got in zip(self.shape, array.shape)
        ):
            want_shape = tuple(-1 if d is None else d for d in self.shape)
            raise InvalidInput(
                f"input {self.name!r} must have shape {want_shape} (-1: any), got {array.shape}"
            )


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run: intra-op threads (None: physical cores) and runtime-specific switches."""

    threads: int | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 (or None for all physical cores), got {self.threads}")


@runtime_checkable
class Runtime(Protocol):
    """A loaded model on one inference runtime."""

    name: str

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

    def available(self) -> bool: ...

    def version(self) -> str | None: ...

    def load(self, model_path: Path, options: RuntimeOptions) -> Runtime: ...
