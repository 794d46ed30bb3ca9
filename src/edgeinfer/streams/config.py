"""Settings of a stream run: frozen, validated on construction, units in the names."""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_BATCH_DELAY_US = 1_000_000  # past this, waiting to batch only adds latency


@dataclass(frozen=True)
class CaptureOptions:
    """How every source is captured.

    ``fps``: the capture rate; ``None`` keeps a video's native rate (a folder then plays at
    ``folder_fps``). A rate below the native one keeps the frames closest to a 1/fps grid.
    ``stall_timeout_s``: a source with no new frame for this long is reported as stalled (network
    reads also give up after it). ``min_side_px`` / ``max_pixels``: frames outside these are rejected.
    ``decoder_threads``: FFmpeg threads per video stream (0: FFmpeg decides). One is the cheapest
    in CPU when many streams already decode in parallel; more helps one large stream's latency.
    ``reconnect_max_s``: a live source (network stream, camera) that delivered frames and then
    stalls, drops its connection or ends is opened again after 1, 2, 4... seconds, at most this
    long apart, until the run stops (0: never; it is then reported failed or ended). One that never
    opened is reported failed at once: a wrong address should not look like a waiting camera.
    """

    fps: float | None = None
    folder_fps: float = 15.0
    loop: bool = False
    stall_timeout_s: float = 5.0
    min_side_px: int = 32
    max_pixels: int = 40_000_000
    decoder_threads: int = 1
    reconnect_max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.fps is not None and not 0 < self.fps <= 1000:
            raise ValueError(f"fps must be in (0, 1000], got {self.fps}; leave it out for the native rate")
        if not 0 < self.folder_fps <= 1000:
            raise ValueError(f"folder_fps must be in (0, 1000], got {self.folder_fps}")
        if not (math.isfinite(self.stall_timeout_s) and self.stall_timeout_s > 0):
            raise ValueError(f"stall_timeout_s must be positive and finite, got {self.stall_timeout_s}")
        if not (math.isfinite(self.reconnect_max_s) and self.reconnect_max_s >= 0):
            raise ValueError(
                f"reconnect_max_s must be >= 0 and finite (0: never), got {self.reconnect_max_s}"
            )
        if self.decoder_threads < 0:
            raise ValueError(f"decoder_threads must be >= 0 (0: FFmpeg decides), got {self.decoder_threads}")
        if self.min_side_px < 1 or self.max_pixels < self.min_side_px**2:
            raise ValueError("need min_side_px >= 1 and max_pixels >= min_side_px ** 2")


@dataclass(frozen=True)
class PipelineOptions:
    """How frames are scheduled onto the engine and how long the run lasts.

    ``max_batch``: at most this many frames (one per stream) per inference; ``max_batch_delay_us``:
    after the first frame is ready, wait up to this long for other streams' frames (0: take what is
    ready now). ``duration_s``: stop after this long (``None``: when every source has ended).
    ``preprocess_on_capture``: each capture thread preprocesses its frames, overlapping that work
    with inference (costs the preprocessing of frames that are later dropped).
    """

    max_batch: int = 8
    max_batch_delay_us: int = 0
    top_k: int = 5
    duration_s: float | None = None
    join_timeout_s: float = 2.0
    preprocess_on_capture: bool = False

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {self.max_batch}")
        if not 0 <= self.max_batch_delay_us <= MAX_BATCH_DELAY_US:
            raise ValueError(
                f"max_batch_delay_us must be 0..{MAX_BATCH_DELAY_US} (a frame waits at most a second for "
                f"others to batch with), got {self.max_batch_delay_us}"
            )
        if self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")
        if self.duration_s is not None and not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(
                f"duration_s must be positive and finite, got {self.duration_s}; "
                "leave it out to run to the end"
            )
