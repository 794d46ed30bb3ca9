"""One thread per source: read, pace to real time, convert the rate, timestamp, hand over.

A file or folder is played like a camera: each picture becomes available at its own timestamp
(the decode happens ahead of that moment, as a camera's sensor readout does), and that moment is
its capture timestamp (``time.monotonic_ns``); a picture decoded late keeps its due time. Live
sources (cameras, network streams) arrive in real time by themselves and are timestamped on
arrival.

A live source that stops giving frames after it gave some (stalled past the read timeout,
connection dropped, stream ended) is opened again with a growing pause (``reconnect_max_s``): a
network camera that reboots comes back into the run by itself.

A requested rate below the native one keeps the frames nearest a 1/fps grid; the rest are
``decimated`` (rate conversion, not drops). Every captured frame goes into the stream's
latest-frame slot; the frame it replaces is counted as dropped. With ``prepare`` (the engine's
preprocess) the thread also turns the frame into a model input before handing it over, so that
work overlaps with the inference of other frames instead of following it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import numpy as np

from edgeinfer.errors import EdgeInferError
from edgeinfer.streams.config import CaptureOptions
from edgeinfer.streams.events import EventQueue
from edgeinfer.streams.messages import Frame, RawFrame, StreamStatus
from edgeinfer.streams.scheduler import FrameScheduler
from edgeinfer.streams.sources import BadFrame, Source, check_frame
from edgeinfer.streams.stats import StreamStats

_ACTIVE = (StreamStatus.STARTING, StreamStatus.RUNNING, StreamStatus.STALLED)
_BAD_FRAME_MESSAGES = 3  # per stream, then one line per 100 more


class _Lost(Exception):
    """A live source that was giving frames stopped (its stream ended or its connection broke)."""


class RateConverter:
    """Keeps the frames nearest a 1/``fps`` grid of media time (all of them when ``fps`` is None)."""

    def __init__(self, fps: float | None, native_fps: float | None) -> None:
        self._interval_s = 1.0 / fps if fps and (native_fps is None or fps < native_fps * 0.999) else None
        self._tolerance_s = 0.5 / native_fps if native_fps else 0.001
        self._next_due_s = 0.0

    def keep(self, pts_s: float) -> bool:
        if self._interval_s is None:
            return True
        if pts_s < self._next_due_s - self._tolerance_s:
            return False
        self._next_due_s += self._interval_s
        if self._next_due_s < pts_s:
            self._next_due_s = pts_s + self._interval_s
        return True


class Capture(threading.Thread):
    """Runs one source until it ends, fails or ``stop`` is set."""

    def __init__(
        self,
        stream: str,
        source: Source,
        *,
        scheduler: FrameScheduler,
        stats: StreamStats,
        events: EventQueue,
        options: CaptureOptions,
        stop: threading.Event,
        prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        super().__init__(name=f"capture-{stream}", daemon=True)
        self.stream = stream
        self.source = source
        self._scheduler = scheduler
        self._stats = stats
        self._events = events
        self._options = options
        self._stopping = stop
        self._prepare = prepare
        self._seq = 0
        self._bad = 0
        self._good = 0
        self.last_frame_ns = time.monotonic_ns()
        self.frame_interval_ns = 0  # the expected time between frames, once the source is open

    def run(self) -> None:
        try:
            self._run_reconnecting()
        except EdgeInferError as exc:
            self._fail("source_failed", str(exc))
        except Exception as exc:  # a bug or a library surprise: report it, keep the other streams
            self._fail("source_failed", f"{self.source.uri!r} failed unexpectedly: {exc!r}")
        finally:
            if self._stopping.is_set() and self._stats.status in _ACTIVE:
                self._stats.set_status(StreamStatus.STOPPED)
            self._scheduler.finish_stream(self.stream)
            try:
                self.source.close()
            except Exception as exc:
                self._events.emit(self.stream, "warning", "close_failed", f"closing the source: {exc!r}")

    def _run_reconnecting(self) -> None:
        """``_run`` until the source ends or fails for good; a live source that was working is
        opened again after each loss or failed opening, pausing 1, 2, 4... s (at most
        ``reconnect_max_s``)."""
        attempt = 0
        while True:
            good_before = self._good
            try:
                self._run(reconnecting=attempt > 0)
                return
            except (_Lost, EdgeInferError) as exc:
                # a live source that was working is tried again whatever opening it says now: a
                # rebooting camera answers 503 or 404, its /dev/video* vanishes for a moment
                if not self._may_reconnect():
                    if isinstance(exc, _Lost):
                        self._end()
                        return
                    raise
                reason = str(exc)
            if self._good > good_before:
                attempt = 0  # it worked since the last connection: start the pauses again
            delay_s = min(self._options.reconnect_max_s, 2.0**attempt)
            attempt += 1
            self._stats.reconnecting()
            self._events.emit(
                self.stream,
                "warning",
                "reconnecting",
                f"{reason}; opening it again in {delay_s:g} s (attempt {attempt})",
            )
            with contextlib.suppress(Exception):  # a broken connection may not close cleanly
                self.source.close()
            if self._stopping.wait(delay_s):
                return

    def _may_reconnect(self) -> bool:
        return (
            self.source.live
            and self._options.reconnect_max_s > 0
            and self._good > 0
            and not self._stopping.is_set()
        )

    def _run(self, *, reconnecting: bool = False) -> None:
        if not reconnecting:
            self._stats.set_status(StreamStatus.STARTING)
        self.last_frame_ns = time.monotonic_ns()
        self.source.open()
        native = self.source.native_fps
        self._stats.set_status(StreamStatus.RUNNING)
        if reconnecting:
            self._events.emit(self.stream, "info", "reconnected", f"{self.source.uri!r} is open again")
            return self._frames(native)
        wanted = self._options.fps
        if wanted and native and wanted > native * 1.001:
            self._events.emit(
                self.stream,
                "info",
                "rate_capped",
                f"asked for {wanted:g} fps, the source gives {native:g} fps",
            )
        self._frames(native)

    def _frames(self, native: float | None) -> None:
        wanted = self._options.fps
        rate = RateConverter(wanted, native)
        slowest = min((f for f in (wanted, native) if f), default=None)
        self.frame_interval_ns = int(1e9 / slowest) if slowest else 0
        start_ns: int | None = None
        offset_s = 0.0
        last_pts_s = 0.0
        frames_this_pass = 0
        while not self._stopping.is_set():
            try:
                raw = self.source.read()
            except BadFrame as exc:
                self._reject(str(exc), time.monotonic_ns())
                continue
            if raw is None:
                if self.source.live:
                    raise _Lost(f"{self.source.uri!r} ended its stream")
                if not (self._options.loop and frames_this_pass):
                    self._end()
                    return
                offset_s = last_pts_s + 1.0 / (native or self._options.folder_fps)
                frames_this_pass = 0
                self.source.rewind()
                continue
            frames_this_pass += 1
            last_pts_s = offset_s + raw.pts_s
            if not rate.keep(last_pts_s):
                self._stats.decimated()
                self.last_frame_ns = time.monotonic_ns()  # a skipped frame still shows the source lives
                continue
            due_ns: int | None = None
            if not self.source.live:
                if start_ns is None:
                    start_ns = time.monotonic_ns() - int(last_pts_s * 1e9)
                due_ns = start_ns + int(last_pts_s * 1e9)
                delay_ns = due_ns - time.monotonic_ns()
                if delay_ns > 0 and self._stopping.wait(delay_ns / 1e9):
                    return
            self._deliver(raw, due_ns)

    def _deliver(self, raw: RawFrame, due_ns: int | None) -> None:
        """Timestamp and hand over. A paced frame that comes late (decoding fell behind) keeps its
        due time as capture time, as a camera's frame would: the lag counts in its latency."""
        now_ns = time.monotonic_ns()
        capture_ns = now_ns if due_ns is None else min(now_ns, due_ns)
        # wall clock for remote consumers only, never for durations
        capture_unix_ns = time.time_ns() - (now_ns - capture_ns)
        self.last_frame_ns = now_ns
        if self._stats.status is StreamStatus.STALLED:
            self._stats.set_status(StreamStatus.RUNNING)
            self._events.emit(self.stream, "info", "recovered", "frames are arriving again")
        try:
            rgb = check_frame(raw.rgb, self._options)
        except BadFrame as exc:
            self._reject(f"frame {self._seq}: {exc}", capture_ns)
            self._seq += 1
            return
        self._stats.captured(capture_ns)
        self._good += 1
        seq = self._seq
        self._seq += 1
        sample, prepare_ns = None, 0
        if self._prepare is not None:
            started = time.perf_counter_ns()
            try:
                sample = self._prepare(rgb)
            except Exception as exc:  # the engine refused this frame: count it, go on
                self._stats.failed()
                self._events.emit(
                    self.stream, "warning", "frame_failed", f"frame {seq} cannot be preprocessed: {exc}"
                )
                return
            prepare_ns = time.perf_counter_ns() - started
        frame = Frame(self.stream, seq, rgb, capture_ns, capture_unix_ns, raw.decode_ns, sample, prepare_ns)
        if self._scheduler.put(frame) is not None:
            self._stats.dropped()

    def _reject(self, message: str, at_ns: int) -> None:
        self._stats.captured(at_ns)
        self._stats.rejected()
        self._bad += 1
        if self._bad <= _BAD_FRAME_MESSAGES or self._bad % 100 == 0:
            more = (
                " (further bad frames are counted, one message per 100)"
                if self._bad == _BAD_FRAME_MESSAGES
                else ""
            )
            self._events.emit(self.stream, "warning", "bad_frame", f"rejected {message}{more}")

    def _end(self) -> None:
        self._stats.set_status(StreamStatus.ENDED)
        if self._good == 0:
            self._events.emit(self.stream, "warning", "ended", "source ended without a single usable frame")
        else:
            self._events.emit(self.stream, "info", "ended", f"source ended after {self._good} frames")

    def _fail(self, kind: str, message: str) -> None:
        self._stats.set_status(StreamStatus.FAILED)
        self._events.emit(self.stream, "error", kind, message)
