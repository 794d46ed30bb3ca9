"""Decoding: every supported source type and format, and what each bad input gets."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
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


def test_premultiplied_alpha_is_taken_like_plain_alpha(chelsea: Image.Image) -> None:
    la = chelsea.convert("LA")  # Pillow converts La to LA only (it was refused as "corrupt")
    assert np.array_equal(decode_image(la.convert("La")), decode_image(la))  # opaque: the same grey
    rgba = chelsea.convert("RGBA")
    assert np.array_equal(decode_image(rgba.convert("RGBa")), decode_image(rgba))


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


def test_a_damaged_exif_field_beside_the_orientation_costs_nothing(chelsea: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Canon"  # Make, an ASCII field...
    jpeg = _encode(chelsea, "JPEG", quality=95, exif=exif.tobytes())
    damaged = jpeg.replace(b"\x01\x0f\x00\x02", b"\x01\x07\x00\x02", 1)  # ...retagged as a SHORT
    assert damaged != jpeg
    upright = decode_image(jpeg)
    assert np.array_equal(decode_image(damaged), upright)  # rotated all the same (was struct.error)
    assert upright.shape == (451, 300, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillows_own_transpose(chelsea: Image.Image, orientation: int) -> None:
    from PIL import ImageOps

    exif = Image.Exif()
    exif[0x0112] = orientation
    png = _encode(chelsea, "PNG", exif=exif.tobytes())
    with Image.open(io.BytesIO(png)) as opened:
        expected = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
        assert np.array_equal(decode_image(opened), expected)  # a caller's PIL image
        assert opened.getexif()[0x0112] == orientation  # ...left as it was
    assert np.array_equal(decode_image(png), expected)


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


def test_a_jpeg_with_a_libjpeg_warning_decodes_as_pillow_decodes_it(chelsea: Image.Image) -> None:
    """Stray bytes before the end marker make libjpeg warn ("1 extraneous bytes before marker
    0xd9"), which failed the strict decode: such a file was refused though Pillow reads it."""
    data = _encode(chelsea, "JPEG", optimize=True)
    damaged = data[:-2] + b"\x00\x01\x02" + data[-2:]
    with pytest.raises(ValueError, match="extraneous bytes before marker"):
        simplejpeg.decode_jpeg(damaged, strict=True)  # what the strict decode says of it
    expected = np.asarray(Image.open(io.BytesIO(damaged)).convert("RGB"))
    np.testing.assert_array_equal(decode_image(damaged), expected)
    np.testing.assert_array_equal(decode_image(data), expected)  # the same pixels as undamaged


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


def test_wide_greyscale_is_scaled_to_8_bits_not_clipped(chelsea: Image.Image) -> None:
    grey = np.asarray(chelsea.convert("L"))
    expected = decode_image(grey)
    sixteen = Image.fromarray(grey.astype(np.uint16) * 257)  # 16-bit samples, as a 16-bit PNG holds
    assert sixteen.mode.startswith("I;16")
    for source in (_encode(sixteen, "PNG"), sixteen, _encode(sixteen, "TIFF")):
        assert np.array_equal(decode_image(source), expected)
    eight_in_32 = Image.fromarray(grey.astype(np.int32))  # mode I with 8-bit samples
    assert np.array_equal(decode_image(eight_in_32), expected)
    unit_float = Image.fromarray(grey.astype(np.float32) / 255)  # mode F from 0 to 1
    assert np.array_equal(decode_image(unit_float), expected)
    with pytest.raises(InvalidInput, match="from 0 to 1"):
        decode_image(Image.fromarray(np.full((8, 8), 300.0, dtype=np.float32)))
    with pytest.raises(InvalidInput, match="from 0 to 65535"):
        decode_image(Image.fromarray(np.full((8, 8), -5, dtype=np.int32)))


def _with_header_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` whose frame header claims another size (as a decompression bomb's does)."""
    data = bytearray(jpeg)
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_a_bomb_with_exif_orientation_is_refused_like_any_other() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    tiny = _encode(Image.new("RGB", (16, 16)), "JPEG", exif=exif.tobytes())
    for side in (7_000, 10_000, 20_000):  # under Pillow's own limit (89.5 M), above it, above twice it
        with pytest.raises(ImageTooLarge, match="over the limit of 40000000 pixels"):
            decode_image(_with_header_size(tiny, side, side))


def test_a_raised_pixel_limit_is_pillows_for_that_decode_only(chelsea: Image.Image) -> None:
    before = Image.MAX_IMAGE_PIXELS
    assert before is not None
    png = _encode(chelsea, "PNG")
    assert decode_image(png, DecodeOptions(max_pixels=before * 5)).shape == (300, 451, 3)
    assert before == Image.MAX_IMAGE_PIXELS  # every other Pillow user in the process keeps its guard


def test_the_configured_pixel_limit_decides_not_pillows(
    chelsea: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # Pillow's guard far below the image
    png = _encode(chelsea, "PNG")  # 451x300 = 135300 pixels
    assert decode_image(png, DecodeOptions(max_pixels=200_000)).shape == (300, 451, 3)
    with pytest.raises(ImageTooLarge, match="135300 pixels, over the limit of 100000 pixels"):
        decode_image(png, DecodeOptions(max_pixels=100_000))


def test_exif_after_the_first_64_kib_is_found(chelsea: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    jpeg = _encode(chelsea, "JPEG", quality=95, exif=exif.tobytes())
    comment = b"\xff\xfe" + (65000).to_bytes(2, "big") + b"c" * 64998  # two 65 kB comments first
    padded = jpeg[:2] + comment + comment + jpeg[2:]
    upright = decode_image(jpeg)
    assert upright.shape == (451, 300, 3)
    assert np.array_equal(decode_image(padded), upright)


def test_reading_stops_at_the_byte_limit_for_pipes(tmp_path: Path) -> None:
    import os
    import threading

    fifo = tmp_path / "camera.pipe"
    os.mkfifo(fifo)
    released = threading.Event()
    timed_out: list[bool] = []

    def write() -> None:
        with fifo.open("wb") as pipe:
            pipe.write(b"\xff" * 5000)
            pipe.flush()
            timed_out.append(not released.wait(20))  # the pipe stays open: no end of file

    writer = threading.Thread(target=write)
    writer.start()
    try:
        with pytest.raises(ImageTooLarge, match="more than 1000 bytes"):
            decode_image(fifo, DecodeOptions(max_bytes=1000))
    finally:
        released.set()
        writer.join()
    assert timed_out == [False]  # refused while the writer still held the pipe open


def test_closed_and_unusable_pil_images_are_invalid_input(chelsea: Image.Image) -> None:
    closed = chelsea.copy()
    closed.close()
    with pytest.raises(InvalidInput, match="unusable"):
        decode_image(closed)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "path is empty"),
        ("http://camera.local/frame.jpg", "is a URL"),
        ("  ", "path is empty"),
        ("a\x00b.jpg", "holds a NUL character"),  # was a raw ValueError from the OS layer
    ],
)
def test_paths_that_are_not_files(path: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_image(path)
    if "\x00" in path:
        with pytest.raises(InvalidInput, match=message):
            decode_image(Path(path))


def test_unidentified_bytes_get_a_message_without_internals() -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_image(b"GIF89a but not really an image at all")
    assert "BytesIO" not in str(caught.value) and "0x" not in str(caught.value)
