"""The benchmark's inputs: real photos, held in memory as the encoded bytes a camera or client sends.

The photos ship with scikit-image, matplotlib and scikit-learn (the ``samples`` extra;
:mod:`edgeinfer.imaging.samples` finds them). Their files are read as they are (PNG or JPEG).
When a run asks for more samples than there are photos, seeded variants are added: a random
crop, maybe a mirror, a resize to a realistic capture size, re-encoded as JPEG. The same seed
gives byte-identical samples, so every configuration compared in a run sees the same inputs.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image

from edgeinfer.errors import NotFound
from edgeinfer.imaging.samples import available_photos

# The natural photos among the ones edgeinfer.imaging.samples finds (no charts, textures or logos).
BENCH_PHOTOS = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "motorcycle_left",
    "hubble_deep_field",
    "camera",
    "grace_hopper",
    "china",
    "flower",
)
VARIANT_SHORT_SIDES_PX = (224, 256, 300, 360, 480)
VARIANT_JPEG_QUALITY = 90
ENCODINGS = ("original", "jpeg")


@dataclass(frozen=True)
class Sample:
    """One encoded image: ``name`` says where it came from (``chelsea.png``, ``china.jpg#v3``)."""

    name: str
    data: bytes

    @property
    def format(self) -> str:
        return "png" if self.data[:8] == b"\x89PNG\r\n\x1a\n" else "jpeg"


def photo_paths() -> list[Path]:
    """The bundled photos found in the installed packages, in :data:`BENCH_PHOTOS` order."""
    found = available_photos(BENCH_PHOTOS)
    return [found[name] for name in BENCH_PHOTOS if name in found]


def load_samples(count: int | None = None, seed: int = 0, encoding: str = "original") -> list[Sample]:
    """``count`` samples (default: one per photo): the photos first, then seeded variants of them.

    ``encoding="original"`` keeps each photo's file bytes (most are lossless PNGs, slow to decode);
    ``"jpeg"`` re-encodes them as a camera would deliver them (quality 90). Variants are always JPEG.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"sample encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    paths = photo_paths()
    if not paths:
        raise NotFound(
            "no sample photos found: install the samples extra (pip install 'edgeinfer[samples]') "
            "for the photos shipped by scikit-image, matplotlib and scikit-learn"
        )
    photos = [Sample(p.name, p.read_bytes()) for p in paths]
    if encoding == "jpeg":
        photos = [_as_jpeg(photo) for photo in photos]
    wanted = len(photos) if count is None else count
    if wanted < 1:
        raise ValueError(f"sample count must be >= 1, got {wanted}")
    if wanted <= len(photos):
        return photos[:wanted]
    rng = random.Random(seed)
    variants = [
        _variant(photos[i % len(photos)], i // len(photos) + 1, rng) for i in range(wanted - len(photos))
    ]
    return photos + variants


class Encoded(Protocol):
    """Anything holding an encoded input (the bench's samples, the load generator's)."""

    @property
    def data(self) -> bytes: ...


def samples_digest(samples: Sequence[Encoded]) -> str:
    """sha256 over every sample's sha256, in order: equal digests mean identical inputs (the same
    figure from every tool that writes a report)."""
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(hashlib.sha256(sample.data).digest())
    return digest.hexdigest()


def _as_jpeg(photo: Sample) -> Sample:
    if photo.format == "jpeg":
        return photo
    with Image.open(io.BytesIO(photo.data)) as opened:
        image = opened.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=VARIANT_JPEG_QUALITY)
    return Sample(f"{photo.name}.jpg", buffer.getvalue())


def _variant(photo: Sample, round_number: int, rng: random.Random) -> Sample:
    with Image.open(io.BytesIO(photo.data)) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    area_fraction = rng.uniform(0.5, 1.0)
    aspect = rng.uniform(0.75, 1.33)
    crop_w = min(width, max(32, int((width * height * area_fraction * aspect) ** 0.5)))
    crop_h = min(height, max(32, int((width * height * area_fraction / aspect) ** 0.5)))
    left = rng.randint(0, width - crop_w)
    top = rng.randint(0, height - crop_h)
    image = image.crop((left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    short_side = rng.choice(VARIANT_SHORT_SIDES_PX)
    scale = short_side / min(image.size)
    size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=VARIANT_JPEG_QUALITY)
    return Sample(f"{photo.name}#v{round_number}", buffer.getvalue())
