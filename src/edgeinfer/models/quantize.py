"""Reduced-precision builds of zoo models, each behind the accuracy gate (``models/quality.py``).

INT8: ONNX Runtime static quantization in QDQ format, calibrated on real photos (see
``models/calibration.py``). The recipe is the one measurement chose on MobileNetV2 (the table is
in docs/BENCHMARKS.md, "INT8"): cross-layer equalization of Conv-ReLU6-Conv pairs and of the
residual streams first (``models/equalize.py``; both leave the FP32 function unchanged), then
per-channel weights and MinMax activation ranges, the final Softmax left in float (a uint8
probability ties the small classes and spoils the top-5, at no measurable speed cost), and last
an analytic correction of each layer's bias for its weight-rounding error
(:func:`correct_biases`). Entropy and Percentile calibration, reduced range, more calibration
variants, ONNX Runtime's pre-processing and leaving the first convolution, the depthwise
convolutions, the residual Adds or the classifier in FP32 were each no better or slower. GPTQ
weight rounding (``Int8Recipe.weight_rounding``, ``models/rounding.py``) lowers each layer's
output error but not the disagreement with FP32, so it is opt-in. Empirical bias correction
(``Int8Recipe.empirical_bias_correction``, ``models/bias.py``) brings the output distribution
25-45% closer to FP32's and passes the gate like the default does, but makes the build 3-4x
slower, so only the "accurate" recipe uses it.

On x86 CPUs without VNNI (or AMX), whose int8 kernels add pairs of u8 x s8 products in int16 and
saturate, the named recipes quantize weights to 7 bits (``reduce_range``), as ONNX Runtime's and
OpenVINO's documentation advise (``models/recipes.py``, :func:`for_this_cpu`).

FP16: weights and arithmetic in float16, inputs and outputs kept float32 (``onnxconverter-common``).

The repository calls :func:`builder` for every precision other than fp32 and runs the builder in a
staging folder: a build that fails the gate raises there, and nothing is stored.
"""

from __future__ import annotations

import importlib.util
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeinfer import __version__
from edgeinfer.errors import InvalidInput, ModelNotFound, NotFound
from edgeinfer.models.bias import channel_means, correct_biases_empirically
from edgeinfer.models.build import MODEL_FILE, onnx_io_specs
from edgeinfer.models.calibration import ImageSet, calibration_set, held_out_set
from edgeinfer.models.config import ModelConfig, QualityReport
from edgeinfer.models.quality import GateSettings, compare, enforce, predict
from edgeinfer.models.recipes import DEFAULT_RECIPE, Int8Recipe, named_recipe, recipe_name
from edgeinfer.models.repository import Builder, ModelRepository, sha256_file
from edgeinfer.models.zoo import ZooEntry
from edgeinfer.system.machine import int8_products_saturate


@dataclass(frozen=True)
class BuildSettings:
    """A reduced-precision build: the INT8 recipe and the gate (both apply to FP16's gate too)."""

    recipe: Int8Recipe = field(default_factory=lambda: named_recipe(DEFAULT_RECIPE))
    gate: GateSettings = field(default_factory=GateSettings.from_env)


def builder(
    repo: ModelRepository, entry: ZooEntry, precision: str, settings: BuildSettings | None = None
) -> Builder:
    """The Builder for ``entry`` at ``precision`` ("int8" or "fp16"), built from its FP32 build."""
    if precision not in ("int8", "fp16"):
        raise ModelNotFound(f"no {precision!r} build of {entry.name}; reduced precisions are int8 and fp16")
    chosen = settings or BuildSettings()

    def build(staging: Path) -> ModelConfig:
        reference = repo.get(entry.name, "fp32")
        reference.verify()
        if precision == "int8":
            return _build_int8(reference.config, reference.path, staging, chosen)
        return _build_fp16(reference.config, reference.path, staging, chosen)

    return build


def _build_int8(fp32: ModelConfig, fp32_path: Path, staging: Path, settings: BuildSettings) -> ModelConfig:
    _require_quantization_tools()
    recipe = settings.recipe
    started = time.perf_counter_ns()
    calibration = calibration_set(fp32.preprocessing, recipe.calibration_variants, seed=recipe.seed)
    held_out = held_out_set(fp32.preprocessing, recipe.held_out_variants, seed=recipe.seed + 1)
    _check_disjoint(calibration, held_out)
    model = onnx.load(str(fp32_path))
    unknown = sorted(set(recipe.exclude_nodes) - {node.name for node in model.graph.node})
    if unknown:
        raise InvalidInput(f"exclude_nodes names nodes that {fp32.name} does not have: {', '.join(unknown)}")
    pairs = streams = corrected = measured = rounded = 0
    if recipe.equalize:
        from edgeinfer.models.equalize import equalize, equalize_residuals

        model, pairs = equalize(model, calibration.samples)
        if recipe.residual_strength > 0:
            model, streams = equalize_residuals(model, calibration.samples, strength=recipe.residual_strength)
    source = staging / "fp32-prepared.onnx"
    onnx.save_model(model, str(source))
    path = staging / MODEL_FILE
    _quantize(source, path, model, calibration, recipe)
    quantized = onnx.load(str(path))  # the corrections below change its initializers in place
    if recipe.weight_rounding != "nearest":
        from edgeinfer.models.rounding import round_weights

        depthwise_only = recipe.weight_rounding == "gptq-depthwise"
        rounded = round_weights(
            quantized,
            model,
            calibration.samples,
            depthwise_only=depthwise_only,
            reduce_range=recipe.reduce_range,
        )
    if recipe.bias_correction:
        corrected = correct_biases(quantized, model, calibration.samples)
    if recipe.empirical_bias_correction:
        measured = correct_biases_empirically(quantized, model, calibration.samples)
    onnx.save_model(quantized, str(path))
    source.unlink()
    reference, candidate = predict(fp32_path, held_out), predict(path, held_out)
    comparison = compare(reference, candidate, settings.gate)
    enforce(comparison, settings.gate, f"the INT8 build of {fp32.name}")
    originals = np.array([name.endswith("#0") for name in held_out.names])  # the unaltered photos
    same = reference[originals].argmax(axis=1) == candidate[originals].argmax(axis=1)
    details = {
        **comparison.details,
        "original_photos_top1_agreement": f"{int(same.sum())}/{len(same)}",
        "calibration_images": len(calibration),
        "calibration_photos": sorted(calibration.photos),
        "held_out_photos": sorted(held_out.photos),
        "recipe": asdict(recipe),
        "recipe_name": recipe_name(recipe),
        "int8_products_saturate_here": int8_products_saturate(),  # named recipes then use 7-bit weights
        "equalized_pairs": pairs,
        "equalized_residual_streams": streams,
        "bias_corrected_layers": corrected,
        "empirically_bias_corrected_layers": measured,
        "gptq_rounded_layers": rounded,
        "build_s": round((time.perf_counter_ns() - started) / 1e9, 1),
    }
    return _config(fp32, path, "int8", comparison.report, details)


def _build_fp16(fp32: ModelConfig, fp32_path: Path, staging: Path, settings: BuildSettings) -> ModelConfig:
    if importlib.util.find_spec("onnxconverter_common") is None:
        raise NotFound("FP16 builds need onnxconverter-common: pip install 'edgeinfer[optimize]'")
    from onnxconverter_common import float16  # type: ignore[import-untyped]

    with warnings.catch_warnings():  # it warns once per weight it rounds to float16's range
        warnings.simplefilter("ignore", UserWarning)
        model = float16.convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    path = staging / MODEL_FILE
    onnx.save_model(model, str(path))
    recipe = settings.recipe
    held_out = held_out_set(fp32.preprocessing, recipe.held_out_variants, seed=recipe.seed + 1)
    comparison = compare(predict(fp32_path, held_out), predict(path, held_out), settings.gate)
    enforce(comparison, settings.gate, f"the FP16 build of {fp32.name}")
    details = {**comparison.details, "held_out_photos": sorted(held_out.photos)}
    return _config(fp32, path, "fp16", comparison.report, details)


def _quantize(
    source: Path, target: Path, model: onnx.ModelProto, images: ImageSet, recipe: Int8Recipe
) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    # ONNX Runtime's tooling logs a pre-processing hint on the root logger at WARNING; we measured
    # that step (no gain, docs/BENCHMARKS.md), so to our users the hint is noise.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(
            str(source),
            str(target),
            _Reader(model.graph.input[0].name, images.samples),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            calibrate_method=methods[recipe.calibration_method],
            nodes_to_exclude=_excluded_nodes(model, recipe),
        )
    finally:
        root.setLevel(level)


class _Reader:
    """ONNX Runtime's CalibrationDataReader over preprocessed samples, 8 at a time."""

    def __init__(self, input_name: str, samples: np.ndarray, batch: int = 8) -> None:
        self._input_name = input_name
        self._samples = samples
        self._batch = batch
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._samples):
            return None
        chunk = self._samples[self._next : self._next + self._batch]
        self._next += self._batch
        return {self._input_name: chunk}

    def rewind(self) -> None:
        self._next = 0

    def __iter__(self) -> _Reader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def correct_biases(quantized: onnx.ModelProto, source: onnx.ModelProto, samples: np.ndarray) -> int:
    """Fold each layer's expected weight-rounding error into its quantized bias; the number of layers.

    Rounding a Conv or Gemm weight ``W`` to ``W + dW`` shifts output channel ``o`` by
    ``sum_i dW[o, i] * x_i``; its expectation ``dW @ E[x]`` (``E[x]``: the layer's per-channel
    input mean over ``samples`` in the float ``source`` model) is subtracted from the bias
    (Nagel et al. 2019, analytic bias correction of the weight error only). ``quantized`` is the
    QDQ model ONNX Runtime made from ``source``; it is changed in place.
    """
    from onnx import numpy_helper

    stored = {init.name: init for init in quantized.graph.initializer}
    floats = {init.name: init for init in source.graph.initializer}
    layers = [
        node
        for node in source.graph.node
        if node.op_type in ("Conv", "Gemm")
        and len(node.input) > 2
        and f"{node.input[1]}_quantized" in stored
        and f"{node.input[1]}_zero_point" in stored
        and f"{node.input[2]}_quantized" in stored
        and f"{node.input[2]}_quantized_scale" in stored
        and (node.op_type == "Conv" or _attribute(node, "transB") == 1)  # weights (out, in, ...)
    ]
    means = channel_means(source, [node.input[0] for node in layers], samples)

    def array(name: str) -> np.ndarray:
        return np.asarray(numpy_helper.to_array(stored[name]), dtype=np.float64)

    corrected = 0
    for node in layers:
        weight = np.asarray(numpy_helper.to_array(floats[node.input[1]]), dtype=np.float64)
        scale = array(f"{node.input[1]}_scale").reshape((-1,) + (1,) * (weight.ndim - 1))
        zero = array(f"{node.input[1]}_zero_point").reshape(scale.shape)
        error = (array(f"{node.input[1]}_quantized") - zero) * scale - weight
        mean, group = means[node.input[0]], _group(node)
        if weight.ndim == 2:  # Gemm with transB=1: (out, in)
            shift = error @ mean
        elif weight.ndim == 4 and group == 1:
            shift = error.sum(axis=(2, 3)) @ mean
        elif weight.ndim == 4 and group == weight.shape[0] == len(mean) and weight.shape[1] == 1:
            shift = error.sum(axis=(1, 2, 3)) * mean  # depthwise: output channel o reads input channel o
        else:  # other grouped or 1-D/3-D convolutions: left as they are
            continue
        name = f"{node.input[2]}_quantized"
        bias_scale = array(f"{name}_scale")
        bias = array(name) * bias_scale - shift
        stored[name].CopyFrom(numpy_helper.from_array(np.round(bias / bias_scale).astype(np.int32), name))
        corrected += 1
    return corrected


def _group(node: onnx.NodeProto) -> int:
    return _attribute(node, "group", 1)


def _attribute(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _excluded_nodes(model: onnx.ModelProto, recipe: Int8Recipe) -> list[str]:
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    excluded = [node.name for node in model.graph.node if node.op_type in recipe.exclude_op_types]
    excluded += [node.name for node in model.graph.node if node.name in recipe.exclude_nodes]
    if recipe.exclude_first_conv and convs:
        excluded.append(convs[0].name)
    if recipe.last_stream_in_float:
        from edgeinfer.models.equalize import last_residual_stream

        excluded += last_residual_stream(model.graph)
    if recipe.exclude_depthwise:
        excluded += [
            node.name for node in convs if any(a.name == "group" and a.i > 1 for a in node.attribute)
        ]
    return excluded


def _check_disjoint(calibration: ImageSet, held_out: ImageSet) -> None:
    shared = calibration.photos & held_out.photos
    if shared:  # a programming error in the photo split, never a user error
        raise AssertionError(f"held-out photos {sorted(shared)} were also used for calibration")


def _require_quantization_tools() -> None:
    if importlib.util.find_spec("onnxruntime.quantization") is None:
        raise NotFound("INT8 builds need onnxruntime's quantization tools (pip install onnxruntime)")


def _config(
    fp32: ModelConfig, path: Path, precision: str, report: QualityReport, details: dict[str, Any]
) -> ModelConfig:
    inputs, outputs = onnx_io_specs(onnx.load(str(path)))
    provenance = replace(fp32.provenance, builder_version=f"edgeinfer {__version__}")
    return replace(
        fp32,
        precision=precision,
        file=path.name,
        inputs=inputs,
        outputs=outputs,
        provenance=provenance,
        file_sha256=sha256_file(path),
        quality=report,
        extra={**fp32.extra, "quality": details},
    )
