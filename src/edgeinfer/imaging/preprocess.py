"""Image to model tensor: resize the shorter side, centre-crop, scale, normalize, lay out.

Matches torchvision's ``Resize(n)`` + ``CenterCrop(m)`` on PIL images (bilinear with antialias),
but resizes only the source region that lands inside the crop, for less work. Pillow takes that
region as float32 coordinates, whose rounding moves a filter tap by up to ~1e-5 pixel and so a few
output values by one grey level; the region is therefore given relative to the rows the filter
reads (small coordinates round 100x finer), which keeps all but ~0.06% of the values equal to
torchvision's on the benchmark's photos (0.7% with whole-image coordinates) and converts only
those rows to a Pillow image. The crop is made as two halves of rows, the lower one on the
process's helper thread (:mod:`edgeinfer.system.helper`) when it is free (Pillow and numpy
release the GIL): the second core of a small box sits idle while one image is prepared.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from edgeinfer.errors import InvalidInput
from edgeinfer.models.config import Preprocessing
from edgeinfer.system.helper import offer


@dataclass(frozen=True)
class CropBox:
    """The source rectangle (float pixels) that becomes the output crop."""

    left: float
    top: float
    right: float
    bottom: float


def crop_box(width: int, height: int, spec: Preprocessing) -> CropBox:
    """Where torchvision's Resize(shorter) + CenterCrop(crop) takes its pixels from."""
    if width <= height:
        new_w = spec.resize_shorter_px
        new_h = int(spec.resize_shorter_px * height / width)
    else:
        new_h = spec.resize_shorter_px
        new_w = int(spec.resize_shorter_px * width / height)
    top = round((new_h - spec.crop_px) / 2.0)
    left = round((new_w - spec.crop_px) / 2.0)
    sx, sy = width / new_w, height / new_h
    return CropBox(left * sx, top * sy, (left + spec.crop_px) * sx, (top + spec.crop_px) * sy)


def _rows_read(top: float, bottom: float, out_rows: int, height: int) -> tuple[int, int]:
    """The source rows ``[first, last)`` that a bilinear resize of ``top..bottom`` to ``out_rows``
    reads: the region plus the filter's reach (1 px, times the scale when shrinking) and a row of
    margin, so no tap is cut off where the full image has pixels."""
    reach = max((bottom - top) / out_rows, 1.0)
    return max(0, math.floor(top - reach) - 1), min(height, math.ceil(bottom + reach) + 1)


class Preprocessor:
    """Callable that turns an HWC uint8 RGB array into one sample tensor (no batch axis).

    The output is made in two halves of rows, each resized from its own source region and
    normalized on its own; ``parallel``: the lower half is offered to a shared helper thread while
    this one does the upper (when the helper has not started it by then, this thread does it too,
    so a busy helper never makes anyone wait). The halves are the same computation either way, so
    the tensor depends on the image only, never on threads or load.
    """

    def __init__(self, spec: Preprocessing, *, parallel: bool = True) -> None:
        self.spec = spec
        self.parallel = parallel
        std = np.asarray(spec.std, dtype=np.float32)
        self._gain = (np.float32(spec.scale) / std).astype(np.float32)
        self._offset = (np.asarray(spec.mean, dtype=np.float32) / std).astype(np.float32)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        c = self.spec.crop_px
        return (3, c, c) if self.spec.layout == "NCHW" else (c, c, 3)

    def crop(self, rgb: np.ndarray) -> np.ndarray:
        """Resize + centre-crop to ``crop_px`` square, still HWC uint8."""
        c = self.spec.crop_px
        out = np.empty((c, c, 3), dtype=np.uint8)

        def put(rows: np.ndarray, start: int, stop: int) -> None:
            out[start:stop] = rows

        self._in_halves(rgb, put)
        return out

    def normalize(self, cropped: np.ndarray) -> np.ndarray:
        """(x * scale - mean) / std per channel, as float32 in the model's layout."""
        height, width = cropped.shape[:2]
        shape = (3, height, width) if self.spec.layout == "NCHW" else (height, width, 3)
        out = np.empty(shape, dtype=np.float32)
        self._normalize_rows(cropped, out, 0, height)
        return out

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        out = np.empty(self.sample_shape, dtype=np.float32)
        self._in_halves(rgb, lambda rows, start, stop: self._normalize_rows(rows, out, start, stop))
        return out

    def _normalize_rows(self, rows: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
        if self.spec.layout == "NHWC":
            np.multiply(rows, self._gain, out=out[start:stop], casting="unsafe")
            out[start:stop] -= self._offset
            return
        # Channel by channel straight into the planar layout: one pass over each plane, no
        # intermediate HWC float copy and no transpose (5x faster than cast + transpose).
        for channel in range(3):
            plane = out[channel, start:stop]
            np.multiply(rows[:, :, channel], self._gain[channel], out=plane, casting="unsafe")
            plane -= self._offset[channel]

    def _in_halves(self, rgb: np.ndarray, put: Callable[[np.ndarray, int, int], None]) -> None:
        """Resize the upper and lower halves of the crop and hand each to ``put(rows, start, stop)``."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InvalidInput(f"expected an HWC uint8 RGB image, got shape {rgb.shape} {rgb.dtype}")
        height, width = rgb.shape[:2]
        if height < 1 or width < 1:
            raise InvalidInput(f"the image has no pixels ({width}x{height})")
        box = crop_box(width, height, self.spec)
        c = self.spec.crop_px
        half = c // 2
        middle = box.top + (box.bottom - box.top) * half / c

        def rows(start: int, stop: int, top: float, bottom: float) -> None:
            first, last = _rows_read(top, bottom, stop - start, height)
            image = Image.fromarray(rgb[first:last], "RGB")  # C-contiguous rows: no copy
            resized = image.resize(
                (c, stop - start),
                Image.Resampling.BILINEAR,
                box=(box.left, top - first, box.right, bottom - first),
            )
            put(np.asarray(resized), start, stop)

        if half == 0:  # a one-row crop has no halves
            rows(0, c, box.top, box.bottom)
            return
        lower = offer(rows, half, c, middle, box.bottom) if self.parallel else None
        rows(0, half, box.top, middle)
        if lower is None or lower.cancel():
            rows(half, c, middle, box.bottom)
        else:
            lower.result()
