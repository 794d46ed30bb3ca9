"""Turn whatever the caller has (path, bytes, PIL image, array) into an HWC uint8 RGB array.

JPEG goes through libjpeg-turbo (simplejpeg), which can also scale by n/8 (1/8 to 7/8) inside the
DCT when the caller only needs a smaller image: the cheapest pixels are the ones never decoded.
Everything else goes through Pillow. Pixel and byte limits are checked from the header, before any
pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from struct import error as struct_error
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from edgeinfer.errors import ImageTooLarge, InvalidInput, NotFound

ImageSource = str | Path | bytes | bytearray | memoryview | Image.Image | np.ndarray

_JPEG_MAGIC = b"\xff\xd8\xff"
_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that makes the picture upright (as Pillow's exif_transpose)
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class DecodeOptions:
    """Limits and shortcuts for decoding.

    ``min_shorter_px``: when set, a JPEG may be decoded at a reduced scale as long as its shorter
    side stays at least this long (the preprocessing then resizes it anyway).
    """

    max_pixels: int = 40_000_000
    max_bytes: int = 64 * 1024 * 1024
    min_shorter_px: int | None = None

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.max_bytes < 1:
            raise InvalidInput("max_pixels and max_bytes must be positive")


DEFAULT_DECODE = DecodeOptions()


def decode_image(source: ImageSource, options: DecodeOptions = DEFAULT_DECODE) -> np.ndarray:
    """Decode ``source`` to a C-contiguous HWC uint8 RGB array."""
    if isinstance(source, np.ndarray):
        return _from_array(source, options)
    if isinstance(source, Image.Image):
        return _from_pil(source, options)
    if isinstance(source, (str, Path)):
        return decode_bytes(_read_file(_as_path(source), options), options, name=str(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_bytes(bytes(source), options)
    raise InvalidInput(
        f"cannot read an image from {type(source).__name__}; "
        "give a path, encoded bytes, a PIL image or an HWC uint8 array"
    )


def decode_bytes(data: bytes, options: DecodeOptions = DEFAULT_DECODE, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, WebP, BMP, ...)."""
    if not data:
        raise InvalidInput(f"{name} is empty (0 bytes)")
    if len(data) > options.max_bytes:
        raise ImageTooLarge(f"{name} is {len(data)} bytes, over the limit of {options.max_bytes}")
    if data.startswith(_JPEG_MAGIC) and _exif_orientation(data) in (None, 1):
        fast = _decode_jpeg(data, options, name)
        if fast is not None:
            return fast
    return _decode_with_pillow(data, options, name)


# the file names taken as images where a folder is given (``classify``, stream folders)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (by suffix, any case), in name order; OSError where
    it cannot be read."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def header_pixels(data: bytes) -> int | None:
    """Width x height of an encoded JPEG or PNG, read from its header only (microseconds; no
    pixel is decoded), or None for other formats and for anything unreadable."""
    if data.startswith(_JPEG_MAGIC):
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            return None
        return int(height) * int(width)
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big") * int.from_bytes(data[20:24], "big")
    return None


def _as_path(source: str | Path) -> Path:
    if "\x00" in str(source):
        raise InvalidInput(f"{str(source)!r} is not a file path: it holds a NUL character")
    if isinstance(source, str):
        if not source.strip():
            raise InvalidInput("the image path is empty")
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source):
            raise InvalidInput(
                f"{source} is a URL: edgeinfer reads local files only (nothing downloads at run time); "
                "fetch the image and give its bytes"
            )
    return Path(source)


def _read_file(path: Path, options: DecodeOptions) -> bytes:
    try:
        if path.stat().st_size > options.max_bytes:
            raise ImageTooLarge(
                f"{path} is {path.stat().st_size} bytes, over the limit of {options.max_bytes}"
            )
        with path.open("rb") as file:  # at most one byte past the limit: pipes and devices have no size
            data = file.read(options.max_bytes + 1)
    except FileNotFoundError as exc:
        raise NotFound(f"no such image file: {path}") from exc
    except IsADirectoryError as exc:
        raise InvalidInput(f"{path} is a directory, not an image file") from exc
    except PermissionError as exc:
        raise InvalidInput(f"cannot read {path}: permission denied") from exc
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > options.max_bytes:
        raise ImageTooLarge(f"{path} is more than {options.max_bytes} bytes, the limit")
    return data


def _check_pixels(width: int, height: int, options: DecodeOptions, name: str) -> None:
    if width < 1 or height < 1:
        raise InvalidInput(f"{name} has no pixels ({width}x{height})")
    if width * height > options.max_pixels:
        raise ImageTooLarge(
            f"{name} is {width}x{height} = {width * height} pixels, over the limit of "
            f"{options.max_pixels} pixels (a decompression-bomb guard; if you trust the image, raise "
            "EngineOptions.max_image_pixels, or max_image_pixels in the server's settings)"
        )


def _decode_jpeg(data: bytes, options: DecodeOptions, name: str) -> np.ndarray | None:
    """Decode with libjpeg-turbo; None means 'let Pillow try' (e.g. CMYK, odd markers)."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    _check_pixels(width, height, options, name)
    if colorspace not in ("Gray", "YCbCr", "RGB"):
        return None
    min_h = min_w = 0
    if options.min_shorter_px is not None:
        if height <= width:
            min_h = options.min_shorter_px
        else:
            min_w = options.min_shorter_px
    try:
        array: np.ndarray = simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_height=min_h, min_width=min_w, strict=True
        )
    except ValueError as exc:
        # libjpeg's warnings fail a strict decode too ("extraneous bytes before marker", common in
        # files straight from cameras): Pillow decodes those and still refuses a truncated file
        try:
            return _decode_with_pillow(data, options, name)
        except InvalidInput:
            raise InvalidInput(f"{name} is not a decodable JPEG: {exc}") from exc
    return array


def _decode_with_pillow(data: bytes, options: DecodeOptions, name: str) -> np.ndarray:
    try:
        with _pillow_limit(options):
            image = Image.open(io.BytesIO(data))
            _check_pixels(image.width, image.height, options, name)
            image.load()
    except (ImageTooLarge, InvalidInput):
        raise
    except Image.DecompressionBombError as exc:
        raise _too_large_for_pillow(exc, options, name) from exc
    except UnidentifiedImageError as exc:
        raise InvalidInput(f"{name} is not a supported image (JPEG, PNG, WebP, BMP, GIF, TIFF...)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"{name} is corrupt or truncated: {exc}") from exc
    return _from_pil(image, options)


_raised_limit = threading.Lock()


@contextmanager
def _pillow_limit(options: DecodeOptions) -> Iterator[None]:
    """Pillow's own decompression-bomb guard, set no lower than ours so that only ours decides.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` (89.5 million by default) and refuses above
    twice that, process-wide; a configured limit above it raises Pillow's to the same value for
    this decode only (one such decode at a time; the process's own setting is put back after).
    Inside, Pillow's warning is silenced: every image is checked against our limit from its header.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        limit = Image.MAX_IMAGE_PIXELS
        if limit is None or options.max_pixels <= limit:
            yield
            return
        with _raised_limit:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = max(options.max_pixels, saved or 0)
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = saved


def _too_large_for_pillow(exc: Exception, options: DecodeOptions, name: str) -> ImageTooLarge:
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{found.group(1)} pixels" if found else "larger than Pillow allows"
    return ImageTooLarge(
        f"{name} is {size}, over the limit of {options.max_pixels} pixels (a decompression-bomb guard)"
    )


def _from_pil(image: Image.Image, options: DecodeOptions) -> np.ndarray:
    """An HWC uint8 RGB array of ``image``, upright (the caller's image is left as it was)."""
    _check_pixels(image.width, image.height, options, "image")
    try:
        upright = _UPRIGHT.get(_pil_orientation(image))
        if upright is not None:
            image = image.transpose(upright)
        if image.mode != "RGB":
            image = _to_rgb(image)
        return np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"image is corrupt, truncated or unusable: {exc}") from exc


def _pil_orientation(image: Image.Image) -> int:
    """The EXIF orientation of a PIL image; 1 (as stored) where its EXIF is missing or unreadable:
    a damaged EXIF field elsewhere must not cost a picture that decodes."""
    try:
        value: Any = image.getexif().get(_EXIF_ORIENTATION, 1)
        return int(value)
    except Exception:  # Pillow's EXIF parser raises many kinds on damaged blocks
        return 1


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I") or image.mode == "F":
        return _wide_grey_to_rgb(image)
    if image.mode == "La":  # premultiplied alpha, which Pillow converts only to LA
        image = image.convert("LA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _wide_grey_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale scaled to 8 bits (Pillow's convert clips them at 255)."""
    values = np.asarray(image)
    if image.mode == "F":
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if not np.isfinite(values).all() or low < 0:
            raise InvalidInput("a floating-point image must hold finite values from 0 to 1 (or to 255)")
        if high <= 1.0:
            values = values * 255.0
        elif high > 255.0:
            raise InvalidInput(
                f"a floating-point image must hold values from 0 to 1 (or to 255); this one reaches {high:g}"
            )
        grey = np.round(values).astype(np.uint8)
    else:
        wide = values.astype(np.int64)
        low, high = (int(wide.min()), int(wide.max())) if wide.size else (0, 0)
        if low < 0 or high > 65535:
            raise InvalidInput(
                f"a {image.mode} image must hold values from 0 to 65535; this one has {low} to {high}"
            )
        is_8_bit = image.mode == "I" and high <= 255  # 8-bit samples stored in 32-bit integers
        grey = (wide if is_8_bit else (wide * 255 + 32767) // 65535).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")


def _from_array(array: np.ndarray, options: DecodeOptions) -> np.ndarray:
    if array.dtype != np.uint8:
        raise InvalidInput(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InvalidInput(
            f"image arrays must be HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA), got shape {array.shape}"
        )
    _check_pixels(array.shape[1], array.shape[0], options, "image array")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        array = _from_pil(Image.fromarray(array, "RGBA"), options)
    return np.ascontiguousarray(array)


def _exif_orientation(data: bytes) -> int | None:
    """The EXIF orientation of a JPEG, read from its APP1 segment only (None: no EXIF)."""
    segment = _jpeg_exif_segment(data)
    if segment is None:
        return None
    try:
        exif = Image.Exif()
        exif.load(segment)
        value: Any = exif.get(_EXIF_ORIENTATION)
        return int(value) if value is not None else None
    except (OSError, ValueError, SyntaxError, TypeError, struct_error):
        return None


def _jpeg_exif_segment(data: bytes) -> bytes | None:
    """The ``Exif\\0\\0`` APP1 segment of a JPEG, found by walking its markers up to the scan."""
    at = 2  # after SOI
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None  # not a marker where one must be: leave the file to the decoder
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            at += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image: EXIF comes before
            return None
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if length < 2:
            return None
        if marker == 0xE1 and data[at + 4 : at + 10] == b"Exif\x00\x00":
            return data[at + 4 : at + 2 + length]
        at += 2 + length
    return None
