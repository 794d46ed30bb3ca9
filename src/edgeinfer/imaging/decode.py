"""Turn whatever the caller has (path, bytes, PIL image, array) into an HWC uint8 RGB array.

JPEG goes through libjpeg-turbo (simplejpeg), which can also scale by 1/2, 1/4 or 1/8 inside the
DCT when the caller only needs a smaller image: the cheapest pixels are the ones never decoded.
Everything else goes through Pillow. Pixel and byte limits are checked from the header, before any
pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

from edgeinfer.errors import ImageTooLarge, InvalidInput, NotFound

ImageSource = str | Path | bytes | bytearray | memoryview | Image.Image | np.ndarray

_JPEG_MAGIC = b"\xff\xd8\xff"
_EXIF_ORIENTATION = 0x0112


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
            raise ValueError("max_pixels and max_bytes must be positive")


DEFAULT_DECODE = DecodeOptions()


def decode_image(source: ImageSource, options: DecodeOptions = DEFAULT_DECODE) -> np.ndarray:
    """Decode ``source`` to a C-contiguous HWC uint8 RGB array."""
    if isinstance(source, np.ndarray):
        return _from_array(source, options)
    if isinstance(source, Image.Image):
        return _from_pil(source, options)
    if isinstance(source, (str, Path)):
        return decode_bytes(_read_file(Path(source), options), options, name=str(source))
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


def _read_file(path: Path, options: DecodeOptions) -> bytes:
    try:
        size = path.stat().st_size
        if size > options.max_bytes:
            raise ImageTooLarge(f"{path} is {size} bytes, over the limit of {options.max_bytes}")
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFound(f"no such image file: {path}") from exc
    except IsADirectoryError as exc:
        raise InvalidInput(f"{path} is a directory, not an image file") from exc
    except PermissionError as exc:
        raise InvalidInput(f"cannot read {path}: permission denied") from exc


def _check_pixels(width: int, height: int, options: DecodeOptions, name: str) -> None:
    if width < 1 or height < 1:
        raise InvalidInput(f"{name} has no pixels ({width}x{height})")
    if width * height > options.max_pixels:
        raise ImageTooLarge(
            f"{name} is {width}x{height} = {width * height} pixels, over the limit of "
            f"{options.max_pixels} (a decompression-bomb guard; raise max_pixels if you trust it)"
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
        raise InvalidInput(f"{name} is not a decodable JPEG: {exc}") from exc
    return array


def _decode_with_pillow(data: bytes, options: DecodeOptions, name: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_pixels(image.width, image.height, options, name)
            image.load()
    except (ImageTooLarge, InvalidInput):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"{name} is over the limit of {options.max_pixels} pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidInput(f"{name} is not a supported image (JPEG, PNG, WebP, BMP...): {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"{name} is corrupt or truncated: {exc}") from exc
    return _from_pil(image, options)


def _from_pil(image: Image.Image, options: DecodeOptions) -> np.ndarray:
    _check_pixels(image.width, image.height, options, "image")
    try:
        image = ImageOps.exif_transpose(image)
        if image.mode != "RGB":
            image = _to_rgb(image)
        return np.asarray(image, dtype=np.uint8)
    except OSError as exc:
        raise InvalidInput(f"image is corrupt or truncated: {exc}") from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _from_array(array: np.ndarray, options: DecodeOptions) -> np.ndarray:
    if array.dtype != np.uint8:
        raise InvalidInput(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InvalidInput(f"image arrays must be HxW, HxWx1, HxWx3 or HxWx4, got shape {array.shape}")
    _check_pixels(array.shape[1], array.shape[0], options, "image array")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        array = _from_pil(Image.fromarray(array, "RGBA"), options)
    return np.ascontiguousarray(array)


def _exif_orientation(data: bytes) -> int | None:
    """The EXIF orientation of a JPEG, read from its header only (None: no EXIF)."""
    if b"Exif" not in data[:65536]:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            exif: Any = image.getexif()
            value = exif.get(_EXIF_ORIENTATION)
            return int(value) if value is not None else None
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError):
        return None
