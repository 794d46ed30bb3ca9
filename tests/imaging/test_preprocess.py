"""Preprocessing matches torchvision's Resize + CenterCrop + Normalize."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeinfer.errors import InvalidInput
from edgeinfer.imaging import preprocess
from edgeinfer.imaging.preprocess import Preprocessor
from edgeinfer.models.config import Preprocessing
from edgeinfer.system import helper


def _reference(rgb: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """Resize the whole image, then crop: what torchvision's transforms do on a PIL image."""
    h, w = rgb.shape[:2]
    short = spec.resize_shorter_px
    new_w, new_h = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    full = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BILINEAR))
    top, left = round((new_h - spec.crop_px) / 2), round((new_w - spec.crop_px) / 2)
    crop = full[top : top + spec.crop_px, left : left + spec.crop_px].astype(np.float32) * spec.scale
    return ((crop - np.asarray(spec.mean)) / np.asarray(spec.std)).transpose(2, 0, 1)


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut", "rocket", "grace_hopper", "china"])
def test_matches_full_resize_then_crop(photos: dict[str, Path], name: str) -> None:
    rgb = np.asarray(Image.open(photos[name]).convert("RGB"))
    spec = Preprocessing()
    ours = Preprocessor(spec)(rgb)
    assert ours.shape == (3, 224, 224)
    assert ours.dtype == np.float32
    # One grey level of rounding at most, on a handful of pixels.
    np.testing.assert_allclose(ours, _reference(rgb, spec), atol=1.01 / 255 / 0.225)


@pytest.mark.parametrize("size", [None, (230, 300), (300, 229)], ids=["native", "portrait", "landscape"])
@pytest.mark.parametrize("name", ["chelsea", "rocket", "grace_hopper"])
def test_all_but_a_few_values_equal_torchvisions(
    photos: dict[str, Path], name: str, size: tuple[int, int] | None
) -> None:
    """Pillow rounds the resized region's corners to float32: given in whole-image coordinates
    they moved 5-15% of an upscaled portrait's values by a level; relative to the rows read, <0.5%."""
    image = Image.open(photos[name]).convert("RGB")
    rgb = np.asarray(image if size is None else image.resize(size))
    spec = Preprocessing()
    off = np.abs(Preprocessor(spec)(rgb) - _reference(rgb, spec)) > 1e-3
    assert off.mean() < (0.001 if size is None else 0.005)


@pytest.mark.parametrize("size", [None, (230, 300), (1000, 700)], ids=["native", "small", "large"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_the_tensor_is_the_same_with_or_without_the_helper_thread(
    photos: dict[str, Path], size: tuple[int, int] | None, layout: str
) -> None:
    image = Image.open(photos["astronaut"]).convert("RGB")
    rgb = np.asarray(image if size is None else image.resize(size))
    odd = Preprocessing(resize_shorter_px=255, crop_px=223, layout=layout)
    tiny = Preprocessing(resize_shorter_px=2, crop_px=1, layout=layout)  # one row: no halves
    for spec in (Preprocessing(layout=layout), odd, tiny):
        alone = Preprocessor(spec, parallel=False)
        helped = Preprocessor(spec)
        for _ in range(3):
            np.testing.assert_array_equal(helped(rgb), alone(rgb))
        np.testing.assert_array_equal(helped.crop(rgb), alone.crop(rgb))
        np.testing.assert_array_equal(alone.normalize(alone.crop(rgb)), alone(rgb))


def test_the_helper_thread_resizes_the_lower_half(
    photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    fromarray = Image.fromarray

    def recording(array: np.ndarray, mode: str) -> Image.Image:
        threads.append(threading.current_thread().name)
        return fromarray(array, mode)

    monkeypatch.setattr(preprocess.Image, "fromarray", recording)
    rgb = np.asarray(Image.open(photos["astronaut"]).convert("RGB"))
    for _ in range(20):
        Preprocessor(Preprocessing())(rgb)
    assert len(threads) == 40
    assert any(name.startswith("edgeinfer-helper") for name in threads)  # not every time: see the next test


def test_a_busy_helper_thread_makes_nobody_wait(photos: dict[str, Path]) -> None:
    release = threading.Event()
    blocker = helper._helper().submit(release.wait, 30)
    try:
        time.sleep(0.05)  # the helper is inside release.wait
        rgb = np.asarray(Image.open(photos["chelsea"]).convert("RGB"))
        spec = Preprocessing()
        out = Preprocessor(spec)(rgb)  # the lower half is taken back from the helper's queue
        assert not blocker.done()  # returned while the helper was still busy
        np.testing.assert_array_equal(out, Preprocessor(spec, parallel=False)(rgb))
    finally:
        release.set()
        blocker.result(5)


def test_nhwc_layout_and_other_normalization() -> None:
    spec = Preprocessing(scale=1.0, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0), layout="NHWC")
    out = Preprocessor(spec)(np.full((300, 400, 3), 255, dtype=np.uint8))
    assert out.shape == (224, 224, 3)
    np.testing.assert_allclose(out, (255 - 127) / 128, rtol=1e-6)


def test_small_images_are_upscaled() -> None:
    out = Preprocessor(Preprocessing())(np.zeros((20, 30, 3), dtype=np.uint8))
    assert out.shape == (3, 224, 224)


def test_rejects_non_rgb_arrays() -> None:
    with pytest.raises(InvalidInput, match="HWC uint8 RGB"):
        Preprocessor(Preprocessing())(np.zeros((20, 30), dtype=np.uint8))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="crop_px"):
        Preprocessing(resize_shorter_px=200, crop_px=224)


def test_a_helper_that_takes_no_work_leaves_it_to_the_caller(
    photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    class ShutDown:
        def submit(self, *args: object) -> None:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    monkeypatch.setattr(helper, "_helper", ShutDown)
    rgb = np.asarray(Image.open(photos["chelsea"]).convert("RGB"))
    spec = Preprocessing()
    np.testing.assert_array_equal(Preprocessor(spec)(rgb), Preprocessor(spec, parallel=False)(rgb))
