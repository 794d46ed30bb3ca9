"""Preprocessing matches torchvision's Resize + CenterCrop + Normalize."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeinfer.errors import InvalidInput
from edgeinfer.imaging.preprocess import Preprocessor
from edgeinfer.models.config import Preprocessing


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
