"""The config file stored beside every built model (``config.json``).

It says everything needed to use the model without its source package: inputs and outputs,
layout, preprocessing, labels, precision, and where the weights came from.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgeinfer.errors import IntegrityError
from edgeinfer.models.json_types import mistyped
from edgeinfer.runtimes.base import Quantization, TensorSpec

CONFIG_SCHEMA_VERSION = 1
Layout = Literal["NCHW", "NHWC"]


@dataclass(frozen=True)
class Preprocessing:
    """Image to tensor: resize the shorter side, centre-crop, then (x * scale - mean) / std per channel."""

    resize_shorter_px: int = 256
    crop_px: int = 224
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    layout: Layout = "NCHW"

    def __post_init__(self) -> None:
        if self.crop_px < 1 or self.resize_shorter_px < self.crop_px:
            raise ValueError(
                "need 1 <= crop_px <= resize_shorter_px, "
                f"got crop {self.crop_px}, resize {self.resize_shorter_px}"
            )
        if not _positive_and_finite(self.scale):
            raise ValueError(
                f"scale must be a positive finite number (1/255 for pixels in 0..1), got {self.scale}"
            )
        if not all(_positive_and_finite(s) for s in self.std):
            raise ValueError(f"std must be positive finite numbers (it divides), got {self.std}")
        if not all(math.isfinite(m) for m in self.mean):
            raise ValueError(f"mean must be finite numbers, got {self.mean}")


def _positive_and_finite(value: float) -> bool:
    return math.isfinite(value) and value > 0


@dataclass(frozen=True)
class Provenance:
    """Where the weights came from and what built the model."""

    source_package: str
    source_version: str
    source_file: str
    source_sha256: str
    license: str
    origin: str
    builder_version: str


@dataclass(frozen=True)
class QualityReport:
    """How a reduced-precision build compares with FP32 on held-out images."""

    reference: str
    images: int
    top1_agreement: float
    top5_overlap: float
    threshold: float
    passed: bool


@dataclass(frozen=True)
class ModelConfig:
    """A built model as stored in the local repository."""

    name: str
    version: str
    task: str
    format: Literal["onnx", "tflite"]
    file: str
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocessing: Preprocessing
    labels: str
    output_is_probability: bool
    provenance: Provenance
    file_sha256: str
    quality: QualityReport | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = CONFIG_SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        try:
            config = cls(
                name=raw["name"],
                version=raw["version"],
                task=raw["task"],
                format=raw["format"],
                file=raw["file"],
                precision=raw["precision"],
                inputs=_specs(raw["inputs"], "inputs"),
                outputs=_specs(raw["outputs"], "outputs"),
                preprocessing=Preprocessing(
                    **{
                        **raw["preprocessing"],
                        "mean": tuple(raw["preprocessing"]["mean"]),
                        "std": tuple(raw["preprocessing"]["std"]),
                    }
                ),
                labels=raw["labels"],
                output_is_probability=raw["output_is_probability"],
                provenance=Provenance(**raw["provenance"]),
                file_sha256=raw["file_sha256"],
                quality=QualityReport(**raw["quality"]) if raw.get("quality") else None,
                extra=raw.get("extra", {}),
                schema_version=raw.get("schema_version", CONFIG_SCHEMA_VERSION),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"model config is malformed ({exc!r}); rebuild the model") from exc
        wrong = mistyped(config, ModelConfig) or _mistyped_build_details(config.extra)
        if wrong is not None:
            raise IntegrityError(f"model config is malformed ({wrong}); rebuild the model")
        return config

    @classmethod
    def read(cls, path: Path) -> ModelConfig:
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise IntegrityError(f"cannot read model config {path}: {exc}; rebuild the model") from exc
        return cls.from_dict(raw)


def _specs(raw: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise TypeError(f"{where}: expected a list of tensor objects, got {raw!r}")
    return tuple(_spec(item) for item in raw)


def _spec(raw: dict[str, Any]) -> TensorSpec:
    quant = raw.get("quantization")
    return TensorSpec(
        name=raw["name"],
        dtype=raw["dtype"],
        shape=tuple(raw["shape"]),
        quantization=Quantization(**quant) if quant else None,
    )


# What a build records beyond the gate (``extra["quality"]``) and is read back: each of its type
_DETAIL_TYPES: dict[str, tuple[type, ...]] = {
    "recipe": (dict,),
    "recipe_name": (str,),
    "all_images_top1_agreement": (int, float),
    "all_images_top5_overlap": (int, float),
}


def _mistyped_build_details(extra: dict[str, Any]) -> str | None:
    """What is wrong with the recorded build details, or None (absent ones are fine)."""
    details = extra.get("quality")
    if details is None:
        return None
    if not isinstance(details, dict):
        return f"extra.quality must be an object, got {type(details).__name__}"
    for key, types in _DETAIL_TYPES.items():
        value = details.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            return f"extra.quality.{key} must be {' or '.join(t.__name__ for t in types)}, got {value!r}"
    return None
