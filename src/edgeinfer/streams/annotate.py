"""``--annotate out.mp4``: the processed frames with their top label and latency drawn on them.

One file per stream (``out.mp4`` for a single stream, ``out.<stream>.mp4`` for several). Frames
keep their capture timing (millisecond timestamps), so the video plays at the rate the frames
were processed; dropped frames are not in it. Encoding runs on its own thread behind a bounded
queue so it never delays inference; frames that do not fit in the queue are counted as skipped.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from edgeinfer.errors import InvalidInput
from edgeinfer.streams.events import EventQueue
from edgeinfer.streams.messages import FrameResult, StreamEvent
from edgeinfer.streams.sinks.base import SinkReport


@dataclass(frozen=True)
class _Job:
    stream: str
    rgb: np.ndarray
    capture_ns: int
    text: str


_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".ts")  # containers that take H.264 or MPEG-4


def annotated_path(path: Path, stream: str, streams: int) -> Path:
    """``out.mp4`` for one stream, ``out.<stream>.mp4`` for several."""
    return path if streams == 1 else path.with_name(f"{path.stem}.{stream}{path.suffix}")


def annotated_paths(path: Path, streams: list[str]) -> dict[str, Path]:
    """Each stream's output file, checked before anything runs (the CLI calls this before it loads
    the engine); raises :class:`InvalidInput` with what to change."""
    if path.suffix.lower() not in _SUFFIXES:
        raise InvalidInput(
            f"cannot write the annotated video {path}: the name must end in a video suffix "
            f"({', '.join(_SUFFIXES)})"
        )
    paths = {s: annotated_path(path, s, len(streams)) for s in streams}
    for out in paths.values():
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInput(f"cannot write the annotated video {out}: {exc.strerror or exc}") from exc
        if not os.access(out.parent, os.W_OK) or out.is_dir():
            raise InvalidInput(f"cannot write the annotated video {out}: not a writable file path")
    return paths


def draw_label(rgb: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``rgb`` with ``text`` in white on a dark band across the top."""
    image = Image.fromarray(rgb, "RGB").copy()
    draw = ImageDraw.Draw(image)
    size = max(12, image.height // 18)
    font = ImageFont.load_default(size=size)
    draw.rectangle((0, 0, image.width, int(size * 1.6)), fill=(0, 0, 0))
    draw.text((size // 3, size // 4), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


class AnnotateSink:
    """Encodes annotated frames to MP4 (H.264 when available, else MPEG-4 Part 2)."""

    name = "annotate"

    def __init__(
        self, path: Path, streams: list[str], events: EventQueue | None = None, queue_frames: int = 64
    ) -> None:
        self.paths = annotated_paths(path, streams)
        self._events = events
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_frames)
        self._outputs: dict[str, _Output] = {}
        self._written = 0
        self._skipped = 0
        self._failed: str | None = None
        self._thread = threading.Thread(target=self._work, name="annotate", daemon=True)
        self._thread.start()

    def handle(self, result: FrameResult) -> None:
        top = result.top
        text = f"{result.stream}  {top.label} {top.score:.0%}  {result.latency_ns / 1e6:.0f} ms"
        job = _Job(result.stream, result.frame.rgb, result.frame.capture_ns, text)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._skipped += 1

    def handle_event(self, event: StreamEvent) -> None:
        """Nothing to draw for events."""

    def flush(self, timeout_s: float) -> SinkReport:
        self._queue.put(None)
        self._thread.join(timeout_s)
        detail = ", ".join(str(self.paths[s]) for s in self._outputs) or "no frames to write"
        if self._failed:
            detail = f"{detail}; stopped: {self._failed}"
        elif self._thread.is_alive():
            detail = f"{detail}; encoder still busy after {timeout_s:g} s"
        return SinkReport(self.name, self._written, self._skipped, detail)

    def close(self, summary: dict[str, object] | None) -> None:
        """The encoder thread closes the files when ``flush`` tells it to finish."""

    def _work(self) -> None:
        """Encode until ``flush`` sends ``None``. A frame counts as delivered only once its file is
        finished: when a write or the final close fails (a full disk), every frame of that file
        is counted as not delivered, and the frames still to come are skipped."""
        while (job := self._queue.get()) is not None:
            if self._failed:
                self._skipped += 1
                continue
            out = self._outputs.get(job.stream)
            try:
                if out is None:
                    out = self._outputs[job.stream] = _Output(self.paths[job.stream], job.rgb, job.capture_ns)
                out.write(draw_label(job.rgb, job.text), job.capture_ns)
            except Exception as exc:  # encoder trouble: report it, the pipeline goes on without video
                self._skipped += 1
                self._fail(out, exc)
                continue
            out.frames += 1
            self._written += 1
        for out in self._outputs.values():
            try:
                out.close()
            except Exception as exc:
                self._fail(out, exc)

    def _fail(self, out: _Output | None, exc: Exception) -> None:
        """Count ``out``'s frames as not delivered; report the first failure of the run only."""
        if out is not None and not out.lost:
            out.lost = True
            self._written -= out.frames
            self._skipped += out.frames
        if self._failed:
            return
        self._failed = _say(exc)
        if self._events is not None:
            self._events.emit(
                "annotate", "error", "annotate_failed", f"writing the annotated video failed: {self._failed}"
            )


def _say(exc: Exception) -> str:
    detail = getattr(exc, "strerror", None)
    return f"{type(exc).__name__}: {detail or exc}"


class _Output:
    """One MP4 file; every frame is scaled to the first frame's (even) size.

    ``frames`` counts the frames written to it; ``lost`` is set when the file cannot be finished.
    """

    def __init__(self, path: Path, first: np.ndarray, start_ns: int) -> None:
        import av

        self._container: Any = av.open(str(path), mode="w")
        height, width = (first.shape[0] // 2) * 2, (first.shape[1] // 2) * 2
        try:
            stream = self._container.add_stream("libx264", rate=30)
            stream.options = {"preset": "ultrafast"}
        except (av.FFmpegError, ValueError):
            stream = self._container.add_stream("mpeg4", rate=30)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        self._stream = stream
        self._size = (width, height)
        self._start_ns = start_ns
        self._last_pts = -1
        self._broken = False
        self.frames = 0
        self.lost = False

    def write(self, rgb: np.ndarray, capture_ns: int) -> None:
        import av

        if (rgb.shape[1], rgb.shape[0]) != self._size:
            rgb = np.asarray(Image.fromarray(rgb, "RGB").resize(self._size, Image.Resampling.BILINEAR))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        pts = max((capture_ns - self._start_ns) // 1_000_000, self._last_pts + 1)
        frame.pts, frame.time_base = pts, Fraction(1, 1000)
        self._last_pts = pts
        for packet in self._stream.encode(frame):
            self._mux(packet)

    def close(self) -> None:
        """Flush the encoder and write the trailer. After a failed write only the file is released:
        muxing again once FFmpeg failed a write crashes the process."""
        try:
            if not self._broken:
                for packet in self._stream.encode(None):
                    self._mux(packet)
        finally:
            self._container.close()

    def _mux(self, packet: Any) -> None:
        try:
            self._container.mux(packet)
        except Exception:
            self._broken = True
            raise
