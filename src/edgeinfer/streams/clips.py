"""Test and demo videos made from real photos: a slow pan or zoom over a picture, encoded with PyAV.

The subject stays in view in every frame, so the right label is known for the whole clip (the
tests and the stream benchmark rely on it), and the motion makes every frame a different picture
for the decoder and the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

Motion = Literal["pan", "zoom"]


def render_motion(photo: Path, frames: int, size: tuple[int, int], motion: Motion) -> list[np.ndarray]:
    """Frames (HWC uint8 RGB, ``size`` = width x height) of a left-to-right pan at 90 % of the
    picture, or a zoom from the whole picture in to 80 %."""
    image = Image.open(photo).convert("RGB")
    width, height = image.size
    aspect = size[0] / size[1]
    out: list[np.ndarray] = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        scale = 0.9 if motion == "pan" else 1.0 - 0.2 * t
        crop_h = min(height, width / aspect) * scale
        crop_w = crop_h * aspect
        cx = (crop_w / 2 + t * (width - crop_w)) if motion == "pan" else width / 2
        cy = height / 2
        box = (cx - crop_w / 2, cy - crop_h / 2, cx + crop_w / 2, cy + crop_h / 2)
        out.append(np.asarray(image.resize(size, Image.Resampling.BILINEAR, box=box)))
    return out


def encode_video(path: Path, frames: list[np.ndarray], fps: int, codec: str = "libx264") -> Path:
    """Write ``frames`` to ``path`` (the container follows the suffix: .mp4, .ts, .mkv...)."""
    import av

    container: Any = av.open(str(path), mode="w")
    try:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    finally:
        container.close()
    return path


def make_clip(
    photo: Path,
    out: Path,
    *,
    frames: int,
    fps: int,
    size: tuple[int, int] = (320, 240),
    motion: Motion = "pan",
) -> Path:
    """``out`` if it exists already, else the clip rendered and encoded there."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        encode_video(out, render_motion(photo, frames, size, motion), fps)
    return out
