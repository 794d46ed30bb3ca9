"""INT8 (and FP16) builds: real calibration on sample photos, the FP32 agreement gate, the engine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeinfer.engine import Engine
from edgeinfer.errors import InvalidInput, QualityGateFailed
from edgeinfer.models.calibration import (
    CALIBRATION_PHOTOS,
    HELD_OUT_PHOTOS,
    calibration_set,
    held_out_set,
)
from edgeinfer.models.quality import GateSettings, compare
from edgeinfer.models.quantize import BuildSettings, builder, correct_biases
from edgeinfer.models.recipes import Int8Recipe, built_with
from edgeinfer.models.repository import ModelRepository, StoredModel
from edgeinfer.models.zoo import ZOO
from tests.models.qdq import quantize_qdq, run

# A small recipe for the tests that build on purpose to fail or pass a gate (a few seconds each).
TINY = Int8Recipe(calibration_variants=1, held_out_variants=2)


@pytest.fixture(scope="module")
def int8(repo: ModelRepository, photos: dict[str, Path]) -> StoredModel:
    """The default INT8 build, as `edgeinfer models build mobilenet_v2 --precision int8` makes it."""
    return repo.build("mobilenet_v2", "int8")


def test_int8_build_records_its_agreement_with_fp32(int8: StoredModel, repo: ModelRepository) -> None:
    quality = int8.config.quality
    assert quality is not None
    assert quality.reference == "fp32"
    assert quality.passed
    assert quality.threshold == 0.99
    assert quality.top1_agreement >= 0.99
    assert 0.0 < quality.top5_overlap <= 1.0
    assert quality.images >= 30
    details = int8.config.extra["quality"]
    assert details["held_out_images"] >= quality.images
    assert 0.0 < details["all_images_top1_agreement"] <= 1.0
    assert details["recipe"]["per_channel"] and details["recipe"]["equalize"]
    assert details["equalized_residual_streams"] == 5  # MobileNetV2's 24/32/64/96/160-channel stages
    assert details["bias_corrected_layers"] == 53  # 52 convolutions and the classifier
    agreed, originals = map(int, details["original_photos_top1_agreement"].split("/"))
    assert originals == len(details["held_out_photos"]) and 0 <= agreed <= originals
    assert 0.0 < details["kl_divergence_median"] < 0.5
    # it really is quantized: QDQ nodes and int8 weights, about a quarter of the FP32 file
    model = onnx.load(str(int8.path))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert int8.size_bytes < 0.4 * repo.get("mobilenet_v2").size_bytes
    assert int8.config.inputs[0].dtype == "float32"
    int8.verify()


def test_held_out_photos_are_never_calibration_photos(int8: StoredModel, photos: dict[str, Path]) -> None:
    assert not set(HELD_OUT_PHOTOS) & set(CALIBRATION_PHOTOS)
    details = int8.config.extra["quality"]
    assert set(details["held_out_photos"]) <= set(HELD_OUT_PHOTOS)
    assert not set(details["held_out_photos"]) & set(details["calibration_photos"])
    spec = int8.config.preprocessing
    calibration, held_out = calibration_set(spec, 2), held_out_set(spec, 2)
    assert not calibration.photos & held_out.photos
    # not even a pixel-identical sample crosses over
    flat_cal = calibration.samples.reshape(len(calibration), -1)
    for sample in held_out.samples.reshape(len(held_out), -1):
        assert not np.any(np.all(flat_cal == sample, axis=1))


def test_variants_are_seeded_and_distinct(repo: ModelRepository, photos: dict[str, Path]) -> None:
    spec = repo.get("mobilenet_v2").config.preprocessing
    first, again = held_out_set(spec, 3, seed=7), held_out_set(spec, 3, seed=7)
    assert first.names == again.names
    np.testing.assert_array_equal(first.samples, again.samples)
    assert not np.array_equal(first.samples[0], first.samples[1])  # photo vs. its first variant


def test_engine_int8_classifies_coffee_as_espresso(
    int8: StoredModel, repo: ModelRepository, photos: dict[str, Path]
) -> None:
    with Engine.load(
        "mobilenet_v2", runtime="onnxruntime", precision="int8", threads=1, repository=repo
    ) as engine:
        assert engine.config.precision == "int8"
        result = engine.classify(photos["coffee"])
    assert result.top.label == "espresso"


def test_gate_refuses_below_threshold_and_stores_nothing(
    repo: ModelRepository, tmp_path: Path, photos: dict[str, Path]
) -> None:
    strict = GateSettings(min_top1_agreement=1.0, min_reference_confidence=0.0, min_reference_lead=1.0)
    build = builder(repo, ZOO["mobilenet_v2"], "int8", BuildSettings(recipe=TINY, gate=strict))
    target = ModelRepository(tmp_path)
    with pytest.raises(QualityGateFailed, match=r"below the required 100\.00%.*ALLOW_FAILED_QUALITY"):
        target.install("mobilenet_v2", "int8", build)
    assert target.find("mobilenet_v2", "int8") is None
    assert not [p for p in target.models_dir.iterdir() if p.name.startswith(".staging")]


def test_excluding_an_unknown_node_is_a_clear_error(repo: ModelRepository, photos: dict[str, Path]) -> None:
    recipe = Int8Recipe(
        calibration_variants=1, held_out_variants=1, exclude_nodes=("features.16.add", "nope")
    )
    build = builder(repo, ZOO["mobilenet_v2"], "int8", BuildSettings(recipe=recipe))
    with pytest.raises(InvalidInput, match="does not have: nope"):
        build(Path("unused"))


def test_override_stores_a_failed_build_flagged(
    repo: ModelRepository, tmp_path: Path, photos: dict[str, Path]
) -> None:
    lenient = GateSettings(
        min_top1_agreement=1.0, min_reference_confidence=0.0, min_reference_lead=1.0, allow_failed=True
    )
    build = builder(repo, ZOO["mobilenet_v2"], "int8", BuildSettings(recipe=TINY, gate=lenient))
    stored = ModelRepository(tmp_path).install("mobilenet_v2", "int8", build)
    assert stored.config.quality is not None
    assert not stored.config.quality.passed
    assert stored.config.quality.top1_agreement < 1.0


def _one_conv(weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    node = onnx.helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])
    graph = onnx.helper.make_graph(
        [node],
        "one_conv",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 8, 12, 12])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(weight, "w"), onnx.numpy_helper.from_array(bias, "b")],
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_bias_correction_removes_the_mean_error_of_weight_rounding(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # coarse weights (a few large ones per channel) round badly; inputs have a large common mean
    weight = (rng.normal(0, 0.05, (16, 8, 3, 3)) + (rng.random((16, 8, 3, 3)) < 0.02) * 3).astype(np.float32)
    model = _one_conv(weight, rng.normal(0, 0.1, 16).astype(np.float32))
    inputs = (rng.random((32, 8, 12, 12)) * 4 + 2).astype(np.float32)
    quantized = quantize_qdq(model, inputs, tmp_path, per_channel=True)
    reference = run(model, inputs)
    before = run(quantized, inputs)
    assert correct_biases(quantized, model, inputs) == 1
    after = run(quantized, inputs)
    # the per-channel mean error (away from the zero-padded border) drops; the float model is untouched
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    mean_before = np.abs((before - reference)[inner].mean(axis=(0, 2, 3))).mean()
    mean_after = np.abs((after - reference)[inner].mean(axis=(0, 2, 3))).mean()
    assert mean_after < mean_before / 3
    np.testing.assert_array_equal(run(model, inputs), reference)


def test_gate_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEINFER_MIN_TOP1_AGREEMENT", "0.95")
    monkeypatch.setenv("EDGEINFER_ALLOW_FAILED_QUALITY", "1")
    settings = GateSettings.from_env()
    assert settings.min_top1_agreement == 0.95 and settings.allow_failed
    for bad in ("lots", "99"):
        monkeypatch.setenv("EDGEINFER_MIN_TOP1_AGREEMENT", bad)
        with pytest.raises(InvalidInput, match="EDGEINFER_MIN_TOP1_AGREEMENT"):
            GateSettings.from_env()


def test_compare_counts_agreement_on_decisive_images_only() -> None:
    reference = np.array(
        [[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.1, 0.8, 0.1], [0.55, 0.42, 0.03]], dtype=np.float32
    )
    candidate = np.array(
        [[0.8, 0.1, 0.1], [0.3, 0.45, 0.25], [0.6, 0.3, 0.1], [0.45, 0.5, 0.05]], dtype=np.float32
    )
    result = compare(reference, candidate, GateSettings(min_top1_agreement=0.5))
    # the 0.4 near-tie is left out of the gate, and so is the 0.55 whose runner-up is within 1.5x...
    assert result.report.images == 2
    assert result.report.top1_agreement == 0.5
    assert result.report.passed
    assert result.details["all_images_top1_agreement"] == pytest.approx(1 / 4, abs=1e-4)  # ...but recorded
    assert result.details["min_reference_lead"] == 1.5
    assert result.details["kl_divergence_median"] > 0.0
    assert compare(reference, reference, GateSettings()).details["kl_divergence_median"] == 0.0
    # confidence alone (lead 1) counts the 0.55 too; confidence 0 and lead 1 count every image
    assert compare(reference, candidate, GateSettings(min_reference_lead=1.0)).report.images == 3
    every = compare(reference, candidate, GateSettings(min_reference_confidence=0.0, min_reference_lead=1.0))
    assert every.report.images == 4 and every.report.top1_agreement == 0.25
    with pytest.raises(ValueError, match=r"no held-out image reaches FP32 confidence 0\.95 with a lead"):
        compare(reference, candidate, GateSettings(min_reference_confidence=0.95))


def test_the_verdict_judges_the_figure_as_stored() -> None:
    """24,749 of 25,000 agree (0.98996), stored as 0.99: the build's verdict must be what loading
    the stored figure says under the same threshold, not the opposite."""
    reference = np.tile(np.array([[0.9, 0.05, 0.05]], dtype=np.float32), (25_000, 1))
    candidate = reference.copy()
    candidate[:251] = [0.05, 0.9, 0.05]
    report = compare(reference, candidate, GateSettings(min_top1_agreement=0.99)).report
    assert (report.top1_agreement, report.passed) == (0.99, True)


def test_gate_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"min_reference_lead must be at least 1, got 0\.9"):
        GateSettings(min_reference_lead=0.9)
    with pytest.raises(ValueError, match=r"min_top1_agreement must be within 0\.\.1"):
        GateSettings(min_top1_agreement=99)


@pytest.mark.slow
def test_fp16_build_keeps_float32_io_and_agrees(repo: ModelRepository, photos: dict[str, Path]) -> None:
    pytest.importorskip("onnxconverter_common")
    stored = repo.build("mobilenet_v2", "fp16")
    assert stored.config.inputs[0].dtype == "float32"
    assert stored.config.quality is not None and stored.config.quality.passed
    assert stored.size_bytes < 0.6 * repo.get("mobilenet_v2").size_bytes


def test_accurate_recipe_keeps_the_first_conv_and_the_last_stream_in_float(
    tmp_path: Path, photos: dict[str, Path]
) -> None:
    repo = ModelRepository(tmp_path)
    stored = repo.build("mobilenet_v2", "int8", recipe="accurate")
    assert stored.config.quality is not None and stored.config.quality.passed
    assert stored.config.extra["quality"]["recipe"]["last_stream_in_float"] is True
    assert stored.config.extra["quality"]["empirically_bias_corrected_layers"] > 40  # of the 53 Conv + Gemm
    assert stored.config.extra["quality"]["recipe_name"] == "accurate"  # shown by `models list`
    assert built_with(stored.config, "accurate") and not built_with(stored.config, "fast")
    model = onnx.load(str(stored.path))
    weights = {init.name for init in model.graph.initializer}
    floats = {node.name for node in model.graph.node if node.op_type == "Conv" and node.input[1] in weights}
    assert floats == {  # the first Conv, the stream's 3 writers and 3 readers: float; every other int8
        "features.0.0",
        "features.14.conv.2",
        "features.15.conv.2",
        "features.16.conv.2",
        "features.15.conv.0.0",
        "features.16.conv.0.0",
        "features.17.conv.0.0",
    }
    assert sum(node.op_type == "Conv" for node in model.graph.node) == 52
    # asking again for the same recipe keeps the build; the file is not rewritten
    before = stored.path.stat().st_mtime_ns
    assert repo.build("mobilenet_v2", "int8", recipe="accurate").path.stat().st_mtime_ns == before
    # another recipe replaces it (no --force needed); without --recipe the stored build is used as it is
    fast = repo.build("mobilenet_v2", "int8", recipe="fast")
    assert built_with(fast.config, "fast") and fast.config.quality is not None and fast.config.quality.passed
    assert fast.config.extra["quality"]["recipe_name"] == "fast"
    assert repo.build("mobilenet_v2", "int8").config.file_sha256 == fast.config.file_sha256


def test_reduce_range_builds_7_bit_weights_and_gptq_keeps_them(repo: ModelRepository, tmp_path: Path) -> None:
    """What the named recipes build on x86 without VNNI: every int8 weight within -64..64 (so two
    u8 x s8 products cannot saturate an int16 sum), also after GPTQ re-rounds the depthwise ones."""
    recipe = replace(TINY, reduce_range=True, weight_rounding="gptq-depthwise")
    lenient = GateSettings(allow_failed=True)
    stored = ModelRepository(tmp_path).install(
        "mobilenet_v2", "int8", builder(repo, ZOO["mobilenet_v2"], "int8", BuildSettings(recipe, lenient))
    )
    assert stored.config.extra["quality"]["gptq_rounded_layers"] == 17
    model = onnx.load(str(stored.path))
    weights = [
        onnx.numpy_helper.to_array(init)
        for init in model.graph.initializer
        if init.data_type == onnx.TensorProto.INT8 and init.name.endswith("_quantized")
    ]
    assert len(weights) == 53  # 52 convolutions and the classifier
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == 64


def test_opt_in_corrections_run_in_a_real_build(
    repo: ModelRepository, tmp_path: Path, photos: dict[str, Path]
) -> None:
    recipe = replace(TINY, empirical_bias_correction=True, weight_rounding="gptq-depthwise")
    lenient = GateSettings(allow_failed=True)
    stored = ModelRepository(tmp_path).install(
        "mobilenet_v2", "int8", builder(repo, ZOO["mobilenet_v2"], "int8", BuildSettings(recipe, lenient))
    )
    details = stored.config.extra["quality"]
    assert details["empirically_bias_corrected_layers"] == 53
    assert details["gptq_rounded_layers"] == 17  # MobileNetV2's depthwise convolutions
    assert details["recipe_name"] == "custom"
    assert 0.0 < details["kl_divergence_median"] < 0.5
