"""Importing a model file the user brings (``.tflite`` or ``.onnx``) into the local repository."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from edgeinfer import __version__
from edgeinfer.errors import InvalidInput, NotFound
from edgeinfer.models.config import ModelConfig, Preprocessing, Provenance
from edgeinfer.models.labels import read_label_lines
from edgeinfer.models.repository import ModelRepository, StoredModel, check_model_name, sha256_file
from edgeinfer.models.zoo import IMAGENET_LABELS, ZOO
from edgeinfer.runtimes.base import TensorSpec, model_format

LABELS_FILE = "labels.txt"
IMAGENET_CROP_RATIO = 0.875  # 224 / 256: the usual resize-then-crop ratio of ImageNet models


@dataclass(frozen=True)
class ImportOptions:
    """What the file cannot tell us itself. ``None`` means: take it from the file, or the usual default.

    ``preprocessing`` replaces what the file implies as a whole; ``scale``, ``mean`` and ``std``
    replace only that part of it (the crop and layout still come from the model's input).
    """

    name: str
    labels_file: Path | None = None
    preprocessing: Preprocessing | None = None
    scale: float | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    output_is_probability: bool = True
    license: str = "unknown (brought by the user)"
    origin: str | None = None


def import_model(repo: ModelRepository, source: Path, options: ImportOptions) -> StoredModel:
    """Copy ``source`` into the repository with a config built from what the file says."""
    check_model_name(options.name)
    if options.name in ZOO:
        raise InvalidInput(f"{options.name!r} is a zoo model name; import under another name")
    if not source.is_file():
        raise NotFound(f"model file {source} does not exist")
    fmt = model_format(source)
    if fmt == "tflite":
        inputs, outputs, preprocessing, labels = _describe_tflite(source)
    else:
        inputs, outputs, preprocessing, labels = _describe_onnx(source)
    if not inputs or not outputs:
        raise InvalidInput(f"{source.name} has no graph inputs or outputs: it is not a usable model")
    preprocessing = _preprocessing(preprocessing, options)
    if options.labels_file is not None:
        labels = _read_labels(options.labels_file)
    classes = outputs[0].shape[-1] if outputs[0].shape else None
    if labels is None and classes != 1000:
        shown = "an unknown number of" if classes is None else str(classes)
        raise InvalidInput(
            f"{source.name} has {shown} output classes and no embedded labels; pass --labels FILE"
        )
    if labels is not None and isinstance(classes, int) and len(labels) != classes:
        where = options.labels_file or "its embedded labels"
        raise InvalidInput(
            f"{source.name} has {classes} output classes but {where} names {len(labels)}: "
            "give one label a line, one line per class"
        )

    def build(staging: Path) -> ModelConfig:
        target = staging / f"model.{fmt}"
        shutil.copyfile(source, target)
        labels_spec = IMAGENET_LABELS
        if labels is not None:
            (staging / LABELS_FILE).write_text("\n".join(labels) + "\n")
            labels_spec = f"file:{LABELS_FILE}"
        source_sha = sha256_file(source)
        return ModelConfig(
            name=options.name,
            version="1",
            task="image-classification",
            format="tflite" if fmt == "tflite" else "onnx",
            file=target.name,
            precision=_precision(inputs),
            inputs=inputs,
            outputs=outputs,
            preprocessing=preprocessing,
            labels=labels_spec,
            output_is_probability=options.output_is_probability,
            provenance=Provenance(
                source_package="(imported file)",
                source_version="-",
                source_file=str(source.resolve()),
                source_sha256=source_sha,
                license=options.license,
                origin=options.origin or f"imported from {source.name}",
                builder_version=f"edgeinfer {__version__}",
            ),
            file_sha256=sha256_file(target),
        )

    return repo.install(options.name, "fp32" if fmt == "onnx" else _precision(inputs), build)


def _describe_tflite(
    source: Path,
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], Preprocessing, tuple[str, ...] | None]:
    from edgeinfer.runtimes.litert import read_tflite_info

    info = read_tflite_info(source)
    if info.layout is None or info.input_hw is None:
        raise InvalidInput(f"{source.name}: input shape {info.inputs[0].shape} is not an image (N,H,W,3)")
    crop = info.input_hw[0]
    preprocessing = Preprocessing(
        resize_shorter_px=round(crop / IMAGENET_CROP_RATIO),
        crop_px=crop,
        layout=info.layout,
        scale=1.0 / 127.5,
        mean=(1.0, 1.0, 1.0),
        std=(1.0, 1.0, 1.0),
    )
    raw = info.raw_pixel_normalization()
    if raw is not None:
        # A uint8 model takes raw pixels: choose the float transform that quantizes back to them.
        scale, mean, std = raw
        preprocessing = replace(preprocessing, scale=scale, mean=(mean,) * 3, std=(std,) * 3)
    return info.inputs, info.outputs, preprocessing, info.labels


def _describe_onnx(
    source: Path,
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], Preprocessing, tuple[str, ...] | None]:
    import onnx

    from edgeinfer.models.build import onnx_io_specs

    try:
        model = onnx.load(str(source), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise InvalidInput(f"{source.name} is not a readable ONNX model: {exc}") from exc
    inputs, outputs = onnx_io_specs(model)
    shape = inputs[0].shape if inputs else ()
    crop = shape[2] if len(shape) == 4 and isinstance(shape[2], int) else 224
    return (
        inputs,
        outputs,
        Preprocessing(resize_shorter_px=round(crop / IMAGENET_CROP_RATIO), crop_px=crop),
        None,
    )


def _preprocessing(found: Preprocessing, options: ImportOptions) -> Preprocessing:
    """What the file implies, with the caller's replacements."""
    base = options.preprocessing or found
    try:
        return replace(
            base,
            scale=base.scale if options.scale is None else options.scale,
            mean=base.mean if options.mean is None else options.mean,
            std=base.std if options.std is None else options.std,
        )
    except ValueError as exc:
        raise InvalidInput(f"preprocessing: {exc}") from exc


def _precision(inputs: tuple[TensorSpec, ...]) -> str:
    quantized = any(spec.quantization is not None for spec in inputs)
    return "int8" if quantized else "fp32"


def _read_labels(path: Path) -> tuple[str, ...]:
    try:
        return read_label_lines(path)
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"labels file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from exc
    except OSError as exc:
        raise NotFound(f"cannot read labels file {path}: {exc.strerror or exc}") from exc
