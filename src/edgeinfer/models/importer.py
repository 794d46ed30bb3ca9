"""Importing a model file the user brings (``.tflite`` or ``.onnx``) into the local repository."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

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
    _check_model_file(source)
    fmt = model_format(source)
    external = False
    if fmt == "tflite":
        inputs, outputs, preprocessing, labels = _describe_tflite(source)
    else:
        inputs, outputs, preprocessing, labels, external = _describe_onnx(source)
    if not inputs or not outputs:
        raise InvalidInput(f"{source.name} has no graph inputs or outputs: it is not a usable model")
    _check_classifier(source.name, inputs[0], outputs[0], preprocessing.layout)
    preprocessing = _preprocessing(preprocessing, options)
    labels = _labels(source.name, outputs[0], labels, options.labels_file)

    def build(staging: Path) -> ModelConfig:
        target = staging / f"model.{fmt}"
        if external:
            _inline_external_data(source, target)  # one file, its weights in it, under one checksum
        else:
            shutil.copyfile(source, target)
        labels_spec = IMAGENET_LABELS
        extra = {}
        if labels is not None:
            (staging / LABELS_FILE).write_text("\n".join(labels) + "\n")
            labels_spec = f"file:{LABELS_FILE}"
            extra["labels_sha256"] = sha256_file(staging / LABELS_FILE)  # checked with the model's
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
            extra=extra,
        )

    precision = "fp32" if fmt == "onnx" else _precision(inputs)
    stored = repo.install(options.name, precision, build)
    for other in repo.builds(options.name):  # the new file replaces the model, not one build of it
        if other.config.precision != precision:
            repo.remove(options.name, other.config.precision)
    return stored


def _check_model_file(source: Path) -> None:
    """NotFound for a path that is not there; InvalidInput for a folder or anything else that is
    not a file (a SavedModel folder, or the folder the model is in)."""
    if source.is_dir():
        raise InvalidInput(
            f"{source} is a directory, not a model file: give the .tflite or .onnx file itself"
        )
    if not source.exists():
        raise NotFound(f"model file {source} does not exist")
    if not source.is_file():
        raise InvalidInput(f"{source} is not a regular file: give the .tflite or .onnx file itself")


def _labels(
    name: str, scores: TensorSpec, embedded: tuple[str, ...] | None, labels_file: Path | None
) -> tuple[str, ...] | None:
    """The class names (None: ImageNet's), one per output class."""
    labels = embedded if labels_file is None else _read_labels(labels_file)
    classes = scores.shape[-1] if scores.shape else None
    if labels is None and classes != 1000:
        shown = "an unknown number of" if classes is None else str(classes)
        raise InvalidInput(f"{name} has {shown} output classes and no embedded labels; pass --labels FILE")
    if labels is not None and isinstance(classes, int) and len(labels) != classes:
        where = labels_file or "its embedded labels"
        raise InvalidInput(
            f"{name} has {classes} output classes but {where} names {len(labels)}: "
            "give one label a line, one line per class"
        )
    return labels


def _check_classifier(name: str, image: TensorSpec, scores: TensorSpec, layout: str) -> None:
    """An image classifier: a 3-channel square picture in, one row of class scores per image out."""
    shape = image.shape
    channels = shape[1] if layout == "NCHW" else shape[-1]
    if len(shape) != 4 or channels != 3:
        raise InvalidInput(
            f"{name}: input {image.name!r} has shape {shape}; edgeinfer feeds RGB pictures "
            "(N,3,H,W or N,H,W,3)"
        )
    height, width = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    if isinstance(height, int) and isinstance(width, int) and height != width:
        raise InvalidInput(
            f"{name}: input {image.name!r} is {height}x{width}; edgeinfer centre-crops square pictures"
        )
    if len(scores.shape) != 2:
        raise InvalidInput(
            f"{name}: output {scores.name!r} has shape {scores.shape}; edgeinfer imports image "
            "classifiers, whose first output is one row of class scores per image (N, classes)"
        )


def _inline_external_data(source: Path, target: Path) -> None:
    import onnx

    try:
        model = onnx.load(str(source))  # with the weights kept beside it
    except Exception as exc:  # a missing or short weights file
        raise InvalidInput(f"cannot read the weights {source.name} keeps in other files: {exc}") from exc
    if model.ByteSize() >= 2**31:
        raise InvalidInput(f"{source.name} with its weights is over 2 GB: too large to keep in one file")
    onnx.save_model(model, str(target))


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
        try:
            preprocessing = replace(preprocessing, scale=scale, mean=(mean,) * 3, std=(std,) * 3)
        except ValueError as exc:  # a quantization scale of 0: no pixel maps to its input
            raise InvalidInput(f"{source.name}: its uint8 input's quantization is unusable: {exc}") from exc
    return info.inputs, info.outputs, preprocessing, info.labels


def _describe_onnx(
    source: Path,
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], Preprocessing, tuple[str, ...] | None, bool]:
    """What the file says, and whether its weights are in other files (external data)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    from edgeinfer.models.build import onnx_io_specs

    try:
        model = onnx.load(str(source), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise InvalidInput(f"{source.name} is not a readable ONNX model: {exc}") from exc
    inputs, outputs = onnx_io_specs(model)
    shape = inputs[0].shape if inputs else ()
    # NHWC where the last axis holds the 3 colours and the second does not
    nhwc = len(shape) == 4 and shape[3] == 3 and shape[1] != 3
    layout: Literal["NCHW", "NHWC"] = "NHWC" if nhwc else "NCHW"
    side = shape[1 if layout == "NHWC" else 2] if len(shape) == 4 else None
    crop = side if isinstance(side, int) else 224
    external = any(uses_external_data(tensor) for tensor in model.graph.initializer)
    return (
        inputs,
        outputs,
        Preprocessing(resize_shorter_px=round(crop / IMAGENET_CROP_RATIO), crop_px=crop, layout=layout),
        None,
        external,
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
