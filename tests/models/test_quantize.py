"""INT8 (and FP16) builds: real calibration on sample photos, the FP32 agreement gate, the engine."""

from __future__ import annotations

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
from edgeinfer.models.quantize import BuildSettings, Int8Recipe, builder
from edgeinfer.models.repository import ModelRepository, StoredModel
from edgeinfer.models.zoo import ZOO

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
    strict = GateSettings(min_top1_agreement=1.0, min_reference_confidence=0.0)
    build = builder(repo, ZOO["mobilenet_v2"], "int8", BuildSettings(recipe=TINY, gate=strict))
    target = ModelRepository(tmp_path)
    with pytest.raises(QualityGateFailed, match=r"below the required 100\.0%.*ALLOW_FAILED_QUALITY"):
        target.install("mobilenet_v2", "int8", build)
    assert target.find("mobilenet_v2", "int8") is None
    assert not [p for p in target.models_dir.iterdir() if p.name.startswith(".staging")]


def test_override_stores_a_failed_build_flagged(
    repo: ModelRepository, tmp_path: Path, photos: dict[str, Path]
) -> None:
    lenient = GateSettings(min_top1_agreement=1.0, min_reference_confidence=0.0, allow_failed=True)
    build = builder(repo, ZOO["mobilenet_v2"], "int8", BuildSettings(recipe=TINY, gate=lenient))
    stored = ModelRepository(tmp_path).install("mobilenet_v2", "int8", build)
    assert stored.config.quality is not None
    assert not stored.config.quality.passed
    assert stored.config.quality.top1_agreement < 1.0


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
    reference = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.1, 0.8, 0.1]], dtype=np.float32)
    candidate = np.array([[0.8, 0.1, 0.1], [0.3, 0.45, 0.25], [0.6, 0.3, 0.1]], dtype=np.float32)
    result = compare(reference, candidate, GateSettings(min_top1_agreement=0.5))
    assert result.report.images == 2  # the 0.4 near-tie is left out of the gate...
    assert result.report.top1_agreement == 0.5
    assert result.report.passed
    assert result.details["all_images_top1_agreement"] == pytest.approx(1 / 3, abs=1e-4)  # ...but recorded


@pytest.mark.slow
def test_fp16_build_keeps_float32_io_and_agrees(repo: ModelRepository, photos: dict[str, Path]) -> None:
    pytest.importorskip("onnxconverter_common")
    stored = repo.build("mobilenet_v2", "fp16")
    assert stored.config.inputs[0].dtype == "float32"
    assert stored.config.quality is not None and stored.config.quality.passed
    assert stored.size_bytes < 0.6 * repo.get("mobilenet_v2").size_bytes
