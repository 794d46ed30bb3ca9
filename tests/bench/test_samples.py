"""The benchmark's inputs: real photos as encoded bytes, seeded variants, one digest."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from edgeinfer.bench.samples import BENCH_PHOTOS, load_samples, samples_digest


def test_photos_come_first_as_their_original_bytes(photos: dict[str, Path]) -> None:
    samples = load_samples()
    assert 5 <= len(samples) <= len(BENCH_PHOTOS)
    assert samples[0].name == "chelsea.png" and samples[0].data == photos["chelsea"].read_bytes()
    assert {s.format for s in samples} == {"png", "jpeg"}


def test_variants_are_seeded_decodable_jpegs(photos: dict[str, Path]) -> None:
    a, b, c = load_samples(25, seed=3), load_samples(25, seed=3), load_samples(25, seed=4)
    assert samples_digest(a) == samples_digest(b) != samples_digest(c)
    variants = [s for s in a if "#v" in s.name]
    assert len(variants) == 25 - len(load_samples())
    for sample in variants:
        with Image.open(io.BytesIO(sample.data)) as image:
            assert image.format == "JPEG" and min(image.size) >= 224


def test_jpeg_encoding_delivers_every_photo_as_a_camera_would(photos: dict[str, Path]) -> None:
    original, jpeg = load_samples(), load_samples(encoding="jpeg")
    assert len(jpeg) == len(original)
    assert {s.format for s in jpeg} == {"jpeg"}
    for before, after in zip(original, jpeg, strict=True):
        if before.format == "jpeg":
            assert after == before  # shipped JPEGs stay byte-identical
        else:
            assert after.name == before.name + ".jpg"
            with Image.open(io.BytesIO(before.data)) as a, Image.open(io.BytesIO(after.data)) as b:
                assert a.size == b.size


def test_unknown_encoding_is_refused(photos: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="original, jpeg"):
        load_samples(encoding="webp")
