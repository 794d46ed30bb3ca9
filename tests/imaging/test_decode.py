"""Decoding: every supported source type and format, and what each bad input gets."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeinfer.errors import ImageTooLarge, InvalidInput, NotFound
from edgeinfer.imaging.decode import DecodeOptions, decode_image


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def chelsea(photos: dict[str, Path]) -> Image.Image:
    return Image.open(photos["chelsea"]).convert("RGB")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_formats_decode_to_hwc_uint8_rgb(chelsea: Image.Image, fmt: str) -> None:
    data = _encode(chelsea, fmt, quality=95) if fmt in ("JPEG", "WEBP") else _encode(chelsea, fmt)
    rgb = decode_image(data)
    assert rgb.shape == (300, 451, 3)
    assert rgb.dtype == np.uint8
    # lossy formats stay close to the original pixels
    assert np.abs(rgb.astype(int) - np.asarray(chelsea, dtype=int)).mean() < 3


def test_sources_path_bytes_pil_array_agree(photos: dict[str, Path], chelsea: Image.Image) -> None:
    path = photos["chelsea"]
    from_path = decode_image(path)
    assert np.array_equal(from_path, decode_image(str(path)))
    assert np.array_equal(from_path, decode_image(path.read_bytes()))
    assert np.array_equal(from_path, decode_image(chelsea))
    assert np.array_equal(from_path, decode_image(np.asarray(chelsea)))


def test_greyscale_and_rgba_become_rgb(chelsea: Image.Image) -> None:
    grey = decode_image(_encode(chelsea.convert("L"), "PNG"))
    assert grey.shape == (300, 451, 3)
    assert np.array_equal(grey[..., 0], grey[..., 2])
    rgba = chelsea.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: composited on white
    assert decode_image(_encode(rgba, "PNG")).min() == 255
    assert decode_image(np.asarray(chelsea.convert("L"))).shape == (300, 451, 3)


def test_exif_orientation_is_respected(chelsea: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rotated = decode_image(_encode(chelsea, "JPEG", quality=95, exif=exif.tobytes()))
    assert rotated.shape == (451, 300, 3)


def test_fast_jpeg_decode_scales_down_but_keeps_the_shorter_side() -> None:
    big = Image.new("RGB", (2000, 1200), (10, 200, 30))
    data = _encode(big, "JPEG")
    scaled = decode_image(data, DecodeOptions(min_shorter_px=256))
    assert scaled.shape[0] >= 256
    assert scaled.shape[0] < 1200  # decoded at a reduced DCT scale
    assert decode_image(data).shape == (1200, 2000, 3)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such image file"):
        decode_image(tmp_path / "absent.jpg")


def test_directory_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is a directory"):
        decode_image(tmp_path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_is_invalid(chelsea: Image.Image, fmt: str) -> None:
    data = _encode(chelsea, fmt)
    with pytest.raises(InvalidInput, match=r"corrupt or truncated|not a decodable JPEG"):
        decode_image(data[: len(data) // 2])


def test_garbage_and_empty_bytes_are_invalid() -> None:
    with pytest.raises(InvalidInput, match="not a supported image"):
        decode_image(b"this is not an image at all")
    with pytest.raises(InvalidInput, match="empty"):
        decode_image(b"")


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # A 20000x20000 PNG of one colour compresses to a few hundred KB but would need 1.2 GB.
    bomb = _encode(Image.new("L", (20000, 20000)), "PNG")
    with pytest.raises(ImageTooLarge, match="over the limit"):
        decode_image(bomb)
    jpeg = _encode(Image.new("RGB", (3000, 2000)), "JPEG")
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_image(jpeg, DecodeOptions(max_pixels=1_000_000))


def test_byte_limit(chelsea: Image.Image) -> None:
    with pytest.raises(ImageTooLarge, match="bytes"):
        decode_image(_encode(chelsea, "PNG"), DecodeOptions(max_bytes=1000))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((10, 10, 3), dtype=np.float32), "must be uint8"),
        (np.zeros((10, 10, 2), dtype=np.uint8), "HxW"),
        (np.zeros((10,), dtype=np.uint8), "HxW"),
        (np.zeros((0, 10, 3), dtype=np.uint8), "no pixels"),
    ],
)
def test_bad_arrays(array: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_image(array)


def test_unsupported_source_type() -> None:
    with pytest.raises(InvalidInput, match="cannot read an image from int"):
        decode_image(42)  # type: ignore[arg-type]
