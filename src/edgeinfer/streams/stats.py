"""Per-stream counters and latency statistics, safe to update from several threads.

Every captured frame ends in exactly one bucket, so ``captured == rejected + dropped + processed +
failed`` once a run is over (frames still pending at the stop are counted as dropped). Frames a
rate conversion skips (``--fps`` below the native rate) are ``decimated``, not dropped: they were
never captured.

Jitter is the mean absolute difference between consecutive frames' capture-to-prediction
latencies (RFC 3550's interarrival jitter, without its smoothing).
"""

from __future__ import annotations

import random
import threading
import time
from array import array
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

from edgeinfer.streams.messages import FrameResult, StreamStatus

_RESERVOIR = 100_000
_WINDOW_NS = 5_000_000_000


@dataclass(frozen=True)
class StreamSnapshot:
    """One stream's figures at one moment (rates in frames/s, times in ms)."""

    stream: str
    uri: str
    status: str
    captured: int
    decimated: int
    rejected: int
    dropped: int
    processed: int
    failed: int
    pending: int
    elapsed_s: float
    capture_fps: float
    achieved_fps: float
    recent_fps: float
    drop_rate: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    jitter_ms: float | None
    mean_wait_ms: float | None
    mean_preprocess_ms: float | None
    mean_infer_ms: float | None
    last_label: str | None
    last_score: float | None
    reconnects: int = 0  # times a live source was opened again after it stopped

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class StreamStats:
    """The running totals of one stream."""

    def __init__(self, stream: str, uri: str) -> None:
        self.stream = stream
        self.uri = uri
        self._lock = threading.Lock()
        self._status = StreamStatus.STARTING
        self._captured = self._decimated = self._rejected = self._dropped = 0
        self._processed = self._failed = 0
        self._reconnects = 0
        self._first_capture_ns: int | None = None
        self._last_seen_ns: int | None = None  # its last capture or prediction, whichever is later
        self._last_capture_ns: int | None = None
        self._end_ns: int | None = None
        self._latencies = array("q")
        self._seen = 0
        self._rng = random.Random(0)
        self._last_latency_ns: int | None = None
        self._jitter_sum_ns = 0
        self._jitter_n = 0
        self._stage_sums_ns = [0, 0, 0]
        self._recent_done: deque[int] = deque()
        self._last_label: str | None = None
        self._last_score: float | None = None

    # -- updates --------------------------------------------------------------------------------

    def set_status(self, status: StreamStatus) -> None:
        with self._lock:
            self._status = status

    @property
    def status(self) -> StreamStatus:
        with self._lock:
            return self._status

    def captured(self, capture_ns: int) -> None:
        with self._lock:
            self._captured += 1
            if self._first_capture_ns is None:
                self._first_capture_ns = capture_ns
            self._last_capture_ns = capture_ns
            self._last_seen_ns = max(capture_ns, self._last_seen_ns or capture_ns)

    def reconnecting(self) -> None:
        """The source stopped and is about to be opened again: no frames until then."""
        with self._lock:
            self._reconnects += 1
            self._status = StreamStatus.STALLED

    def decimated(self) -> None:
        with self._lock:
            self._decimated += 1

    def rejected(self) -> None:
        with self._lock:
            self._rejected += 1

    def dropped(self, count: int = 1) -> None:
        with self._lock:
            self._dropped += count

    def failed(self, count: int = 1) -> None:
        with self._lock:
            self._failed += count

    def processed(self, result: FrameResult) -> None:
        latency = result.latency_ns
        with self._lock:
            self._processed += 1
            self._record_latency(latency)
            if self._last_latency_ns is not None:
                self._jitter_sum_ns += abs(latency - self._last_latency_ns)
                self._jitter_n += 1
            self._last_latency_ns = latency
            self._stage_sums_ns[0] += result.stages.wait_ns
            self._stage_sums_ns[1] += result.stages.preprocess_ns
            self._stage_sums_ns[2] += result.stages.infer_ns
            self._recent_done.append(result.done_ns)
            self._last_seen_ns = max(result.done_ns, self._last_seen_ns or result.done_ns)
            self._last_label = result.top.label
            self._last_score = result.top.score

    def finish(self, end_ns: int) -> None:
        """Freeze the elapsed time (rates stop decaying after the run). A stream that ended or
        failed before the run did is measured to its last frame, not diluted by the rest of the run."""
        with self._lock:
            if self._status in (StreamStatus.ENDED, StreamStatus.FAILED) and self._last_seen_ns is not None:
                end_ns = min(end_ns, self._last_seen_ns)
            self._end_ns = end_ns

    # -- reading --------------------------------------------------------------------------------

    def snapshot(self, pending: int = 0, now_ns: int | None = None) -> StreamSnapshot:
        now = now_ns if now_ns is not None else time.monotonic_ns()
        with self._lock:
            end = self._end_ns if self._end_ns is not None else now
            start = self._first_capture_ns
            elapsed_s = (end - start) / 1e9 if start is not None and end > start else 0.0
            rate_s = elapsed_s + self._last_interval_s()
            while self._recent_done and self._recent_done[0] < end - _WINDOW_NS:
                self._recent_done.popleft()
            window_s = min(elapsed_s, _WINDOW_NS / 1e9)
            lat = np.frombuffer(self._latencies, dtype=np.int64) if self._latencies else None
            n = self._processed
            p50, p99, pmax = (
                (float(v) / 1e6 for v in np.percentile(lat, [50, 99, 100]))
                if lat is not None
                else (None,) * 3
            )
            return StreamSnapshot(
                stream=self.stream,
                uri=self.uri,
                status=self._status.value,
                captured=self._captured,
                decimated=self._decimated,
                rejected=self._rejected,
                dropped=self._dropped,
                processed=n,
                failed=self._failed,
                pending=pending,
                elapsed_s=round(elapsed_s, 3),
                capture_fps=_rate(self._captured, rate_s),
                achieved_fps=_rate(n, rate_s),
                recent_fps=_rate(len(self._recent_done), window_s),
                drop_rate=round(self._dropped / self._captured, 4) if self._captured else 0.0,
                latency_p50_ms=_r(p50),
                latency_p99_ms=_r(p99),
                latency_max_ms=_r(pmax),
                jitter_ms=_r(self._jitter_sum_ns / self._jitter_n / 1e6) if self._jitter_n else None,
                mean_wait_ms=_r(self._stage_sums_ns[0] / n / 1e6) if n else None,
                mean_preprocess_ms=_r(self._stage_sums_ns[1] / n / 1e6) if n else None,
                mean_infer_ms=_r(self._stage_sums_ns[2] / n / 1e6) if n else None,
                last_label=self._last_label,
                last_score=_r(self._last_score, 4),
                reconnects=self._reconnects,
            )

    def _last_interval_s(self) -> float:
        """For a stream that ended (or failed): its mean frame interval. N frames from the first to
        the last span N - 1 intervals; the last frame's own interval completes the time they took,
        or 30 frames at 15 fps would read 15.5 fps."""
        start, last = self._first_capture_ns, self._last_capture_ns
        ended = self._status in (StreamStatus.ENDED, StreamStatus.FAILED)
        if not ended or start is None or last is None or self._captured < 2 or last <= start:
            return 0.0
        return (last - start) / (self._captured - 1) / 1e9

    def _record_latency(self, latency_ns: int) -> None:
        self._seen += 1
        if len(self._latencies) < _RESERVOIR:
            self._latencies.append(latency_ns)
            return
        slot = self._rng.randrange(self._seen)  # Algorithm R: a uniform sample of all latencies
        if slot < _RESERVOIR:
            self._latencies[slot] = latency_ns


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 3) if seconds > 0 else 0.0


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
