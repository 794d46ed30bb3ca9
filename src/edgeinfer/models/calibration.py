"""Real images for INT8 calibration and for the accuracy gate, kept apart.

The sample photos that ship with scikit-image, matplotlib and scikit-learn are split once, by
name, into a calibration set and a held-out set: no held-out photo (nor any variant of one) is
ever shown to the calibrator. Each photo also yields seeded variants: random crops, horizontal
flips and colour jitter (brightness, contrast, saturation), so a couple of dozen photos give a
few hundred distinct inputs.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance

from edgeinfer.errors import NotFound
from edgeinfer.imaging.decode import decode_image
from edgeinfer.imaging.preprocess import Preprocessor
from edgeinfer.imaging.samples import PHOTOS, available_photos
from edgeinfer.models.config import Preprocessing

# Never used for calibration: a mix of clear subjects, people, machines, textures and greyscale.
HELD_OUT_PHOTOS: tuple[str, ...] = (
    "coffee",
    "rocket",
    "motorcycle_right",
    "horse",
    "camera",
    "brick",
    "flower",
    "hubble_deep_field",
    "text",
    "minduka_present",
)
CALIBRATION_PHOTOS: tuple[str, ...] = tuple(p.name for p in PHOTOS if p.name not in HELD_OUT_PHOTOS)
MIN_PHOTOS = 4


@dataclass(frozen=True)
class ImageSet:
    """Preprocessed samples (N, C, H, W float32) and the ``photo#variant`` name of each row."""

    samples: np.ndarray
    names: tuple[str, ...]

    @property
    def photos(self) -> frozenset[str]:
        return frozenset(name.split("#")[0] for name in self.names)

    def __len__(self) -> int:
        return len(self.names)


def calibration_set(spec: Preprocessing, variants_per_photo: int = 8, seed: int = 0) -> ImageSet:
    """The calibration photos and their variants (the first variant of each is the photo itself)."""
    return _image_set(CALIBRATION_PHOTOS, spec, variants_per_photo, seed)


def held_out_set(spec: Preprocessing, variants_per_photo: int = 64, seed: int = 1) -> ImageSet:
    """The held-out photos and their variants, for comparing a build against FP32."""
    return _image_set(HELD_OUT_PHOTOS, spec, variants_per_photo, seed)


def _image_set(names: tuple[str, ...], spec: Preprocessing, variants: int, seed: int) -> ImageSet:
    if variants < 1:
        raise ValueError(f"variants_per_photo must be at least 1, got {variants}")
    paths = available_photos(names)
    if len(paths) < MIN_PHOTOS:
        raise NotFound(
            f"INT8 calibration and its accuracy gate need the sample photos shipped by scikit-image, "
            f"matplotlib and scikit-learn; found {len(paths)} of {len(names)}. "
            "Install them with: pip install 'edgeinfer[samples]'"
        )
    preprocessor = Preprocessor(spec)
    samples: list[np.ndarray] = []
    labels: list[str] = []
    for name in names:  # fixed order, so a seed always gives the same set
        if name not in paths:
            continue
        rgb = decode_image(paths[name])
        rng = np.random.default_rng([seed, _stable_hash(name)])
        for index, variant in enumerate(_variants(rgb, variants, rng)):
            samples.append(preprocessor(variant))
            labels.append(f"{name}#{index}")
    return ImageSet(np.stack(samples), tuple(labels))


def _variants(rgb: np.ndarray, count: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    yield rgb
    for _ in range(count - 1):
        yield _jitter(_flip(_random_crop(rgb, rng), rng), rng)


def _random_crop(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A crop keeping 35-100% of the area with aspect ratio 3/4..4/3 (as in Inception training)."""
    height, width = rgb.shape[:2]
    area = height * width * rng.uniform(0.35, 1.0)
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    crop_w = int(min(width, max(32, round(np.sqrt(area * aspect)))))
    crop_h = int(min(height, max(32, round(np.sqrt(area / aspect)))))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    return rgb[top : top + crop_h, left : left + crop_w]


def _flip(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rgb[:, ::-1] if rng.random() < 0.5 else rgb


def _jitter(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by a factor in 0.7..1.3."""
    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(float(rng.uniform(0.7, 1.3)))
    return np.asarray(image)


def _stable_hash(name: str) -> int:
    return zlib.crc32(name.encode())
