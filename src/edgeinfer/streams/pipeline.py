"""The stream pipeline: capture threads feed latest-frame slots; one loop batches across streams,
runs the shared engine and hands results to the sinks.

The loop runs on the caller's thread (``run``); ``stop`` may be called from any thread. A stream
that fails, ends or stalls is reported and the others continue; a frame the engine rejects is
counted as failed and the rest of its batch continues.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from edgeinfer.engine import Prediction
from edgeinfer.errors import EdgeInferError
from edgeinfer.streams.capture import Capture
from edgeinfer.streams.config import CaptureOptions, PipelineOptions
from edgeinfer.streams.events import EventQueue
from edgeinfer.streams.messages import Frame, FrameResult, StageTimes, StreamEvent, StreamStatus
from edgeinfer.streams.scheduler import FrameScheduler
from edgeinfer.streams.sinks.base import Sink, SinkReport
from edgeinfer.streams.sources import Source
from edgeinfer.streams.stats import StreamSnapshot, StreamStats

_TICK_S = 0.1  # how often the loop looks at stalls, events and the deadline when no frame comes


class StreamEngine(Protocol):
    """What the pipeline needs from :class:`edgeinfer.Engine`."""

    def preprocess(self, rgb: np.ndarray) -> np.ndarray: ...

    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def postprocess(self, scores: np.ndarray, top_k: int = 5) -> list[Prediction]: ...


@dataclass(frozen=True)
class RunSummary:
    """The figures of a finished run: per stream, per sink, and the problems reported."""

    duration_s: float
    streams: tuple[StreamSnapshot, ...]
    sinks: tuple[SinkReport, ...]
    errors: int
    warnings: int
    batches: int
    mean_batch_size: float
    settings: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "duration_s": round(self.duration_s, 3),
            "streams": [s.to_dict() for s in self.streams],
            "sinks": [r.to_dict() for r in self.sinks],
            "errors": self.errors,
            "warnings": self.warnings,
            "batches": self.batches,
            "mean_batch_size": round(self.mean_batch_size, 3),
            "settings": self.settings,
        }


class StreamPipeline:
    """Many sources, one engine, latest-frame scheduling, fair cross-stream batches."""

    def __init__(
        self,
        engine: StreamEngine,
        sources: Sequence[tuple[str, Source]],
        *,
        capture: CaptureOptions | None = None,
        options: PipelineOptions | None = None,
        sinks: Sequence[Sink] = (),
        events: EventQueue | None = None,
        on_event: Callable[[StreamEvent], None] | None = None,
    ) -> None:
        if not sources:
            raise ValueError("a pipeline needs at least one source")
        self.capture_options = capture or CaptureOptions()
        self.options = options or PipelineOptions()
        self._engine = engine
        names = [name for name, _ in sources]
        self.scheduler = FrameScheduler(names, self.options.max_batch, self.options.max_batch_delay_us)
        self.events = events or EventQueue()
        self.events.wake_with(self.scheduler.wake)
        self.sinks = list(sinks)
        self.on_event = on_event
        self._stop = threading.Event()
        self.stats = {name: StreamStats(name, src.uri) for name, src in sources}
        self.captures = [
            Capture(
                name,
                src,
                scheduler=self.scheduler,
                stats=self.stats[name],
                events=self.events,
                options=self.capture_options,
                stop=self._stop,
                prepare=engine.preprocess if self.options.preprocess_on_capture else None,
            )
            for name, src in sources
        ]
        self._sink_broken: set[str] = set()
        self._batches = 0
        self._batched_frames = 0
        self._errors = 0
        self._warnings = 0
        self._started_ns: int | None = None

    # -- control --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the run to finish (from any thread); ``run`` then returns its summary."""
        self._stop.set()
        self.scheduler.wake()

    def snapshots(self) -> list[StreamSnapshot]:
        """Every stream's figures now (for the live display and /metrics)."""
        return [s.snapshot() for s in self.stats.values()]

    def run(self) -> RunSummary:
        self._started_ns = time.monotonic_ns()
        duration = self.options.duration_s
        deadline_ns = self._started_ns + int(duration * 1e9) if duration else None
        for capture in self.captures:
            capture.start()
        try:
            while not self._stop.is_set():
                now = time.monotonic_ns()
                if deadline_ns is not None and now >= deadline_ns:
                    break
                wait_s = _TICK_S if deadline_ns is None else min(_TICK_S, (deadline_ns - now) / 1e9)
                batch = self.scheduler.next_batch(wait_s)
                if batch:
                    self._process(batch)
                self._dispatch_events()
                self._watch_stalls()
                if self.scheduler.exhausted:
                    break
        finally:
            summary = self._shutdown()
        return summary

    # -- the work -------------------------------------------------------------------------------

    def _process(self, batch: list[Frame]) -> None:
        picked_ns = time.monotonic_ns()
        samples: list[np.ndarray] = []
        kept: list[tuple[Frame, int]] = []
        for frame in batch:
            if frame.sample is not None:
                samples.append(frame.sample)
                kept.append((frame, frame.preprocess_ns))
                continue
            started = time.perf_counter_ns()
            try:
                samples.append(self._engine.preprocess(frame.rgb))
            except Exception as exc:
                self._frame_failed([frame], f"frame {frame.seq} cannot be preprocessed: {_say(exc)}")
                continue
            kept.append((frame, time.perf_counter_ns() - started))
        if not kept:
            return
        started = time.perf_counter_ns()
        try:
            scores = self._engine.infer(np.stack(samples))
            if scores.shape[0] != len(kept):
                raise EdgeInferError(f"the engine returned {scores.shape[0]} rows for {len(kept)} frames")
        except Exception as exc:
            self._frame_failed(
                [f for f, _ in kept], f"inference failed for a batch of {len(kept)}: {_say(exc)}"
            )
            return
        infer_ns = time.perf_counter_ns() - started
        self._batches += 1
        self._batched_frames += len(kept)
        results: list[FrameResult] = []
        for (frame, pre_ns), row in zip(kept, scores, strict=True):
            started = time.perf_counter_ns()
            predictions = tuple(self._engine.postprocess(row, self.options.top_k))
            post_ns = time.perf_counter_ns() - started
            waited_ns = (
                picked_ns - frame.capture_ns - (frame.preprocess_ns if frame.sample is not None else 0)
            )
            stages = StageTimes(frame.decode_ns, waited_ns, pre_ns, infer_ns, post_ns)
            results.append(FrameResult(frame, predictions, time.monotonic_ns(), stages, len(kept)))
        for result in results:
            self.stats[result.stream].processed(result)
            self._to_sinks(result)

    def _frame_failed(self, frames: list[Frame], message: str) -> None:
        for frame in frames:
            self.stats[frame.stream].failed()
        for stream in sorted({f.stream for f in frames}):
            self.events.emit(stream, "warning", "frame_failed", message)

    def _to_sinks(self, result: FrameResult) -> None:
        for sink in self.sinks:
            if sink.name in self._sink_broken:
                continue
            try:
                sink.handle(result)
            except Exception as exc:  # a broken sink must not stop the streams
                self._sink_broken.add(sink.name)
                self.events.emit(sink.name, "error", "sink_failed", f"{sink.name} stopped: {_say(exc)}")

    def _watch_stalls(self) -> None:
        """A stream is stalled after ``stall_timeout_s`` without a frame, or two frame intervals
        when its rate is slower than that (``--fps 0.2``, a slideshow)."""
        now = time.monotonic_ns()
        timeout_ns = int(self.capture_options.stall_timeout_s * 1e9)
        for capture in self.captures:
            stats = self.stats[capture.stream]
            status = stats.status
            limit_ns = max(timeout_ns, 2 * capture.frame_interval_ns)
            if (
                status in (StreamStatus.RUNNING, StreamStatus.STARTING)
                and now - capture.last_frame_ns > limit_ns
            ):
                stats.set_status(StreamStatus.STALLED)
                self.scheduler.stalled(capture.stream)  # batches stop waiting for it
                doing = "the source to open" if status is StreamStatus.STARTING else "a new frame"
                self.events.emit(
                    capture.stream,
                    "warning",
                    "stalled",
                    f"no frame for {limit_ns / 1e9:.4g} s while waiting for {doing}; "
                    "the other streams continue",
                )

    def _dispatch_events(self) -> None:
        for event in self.events.drain():
            if event.level == "error":
                self._errors += 1
            elif event.level == "warning":
                self._warnings += 1
            for sink in self.sinks:
                if sink.name not in self._sink_broken:
                    try:
                        sink.handle_event(event)
                    except Exception as exc:
                        self._sink_broken.add(sink.name)
                        self.events.emit(
                            sink.name, "error", "sink_failed", f"{sink.name} stopped: {_say(exc)}"
                        )
            if self.on_event is not None:
                self.on_event(event)

    def _shutdown(self) -> RunSummary:
        self._stop.set()
        self.scheduler.close()
        join_until = time.monotonic() + self.options.join_timeout_s
        for capture in self.captures:
            capture.join(max(0.0, join_until - time.monotonic()))
            if capture.is_alive():
                self.stats[capture.stream].set_status(StreamStatus.STALLED)
                self.events.emit(
                    capture.stream,
                    "warning",
                    "abandoned",
                    "the source is blocked in a read and was left behind",
                )
        for frame in self.scheduler.drain():
            self.stats[frame.stream].dropped()
        end_ns = time.monotonic_ns()
        for stats in self.stats.values():
            stats.finish(end_ns)
        self._dispatch_events()
        reports = tuple(sink.flush(timeout_s=5.0) for sink in self.sinks)
        self._dispatch_events()
        summary = RunSummary(
            duration_s=(end_ns - (self._started_ns or end_ns)) / 1e9,
            streams=tuple(s.snapshot(now_ns=end_ns) for s in self.stats.values()),
            sinks=reports,
            errors=self._errors,
            warnings=self._warnings,
            batches=self._batches,
            mean_batch_size=self._batched_frames / self._batches if self._batches else 0.0,
            settings={
                "fps": self.capture_options.fps,
                "loop": self.capture_options.loop,
                "max_batch": self.options.max_batch,
                "max_batch_delay_us": self.options.max_batch_delay_us,
                "duration_s": self.options.duration_s,
            },
        )
        for sink in self.sinks:
            try:
                sink.close(summary.to_dict())
            except Exception as exc:
                self.events.emit(sink.name, "error", "sink_failed", f"closing {sink.name}: {_say(exc)}")
        self._dispatch_events()
        # a sink that failed to close (its summary line on a full disk) still counts in the result
        return replace(summary, errors=self._errors, warnings=self._warnings)


def _say(exc: Exception) -> str:
    return str(exc) if isinstance(exc, EdgeInferError) else f"{type(exc).__name__}: {exc}"
