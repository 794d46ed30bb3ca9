"""Per-model inference statistics in Triton's shape (its statistics extension).

Triton's clients read them with ``get_inference_statistics`` and perf_analyzer reports the
server's side of each request from them: cumulative counts and nanoseconds of successful and
failed requests, and for each successful one the time it queued, prepared its inputs
(``compute_input``: decode + preprocess here, nothing for a preprocessed tensor), ran
(``compute_infer``: its whole batch's run, as Triton counts it) and turned the scores into the
answer's outputs (``compute_output``); plus batches run and their compute time per batch size.
A request's four stage figures are added together when it succeeds, as Triton does (perf_analyzer
refuses statistics whose stage counts differ). Updates come from the event loop and from worker
threads.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Duration:
    """A cumulative count and its total time."""

    count: int = 0
    ns: int = 0


@dataclass(frozen=True)
class BatchStatistics:
    """Compute time of the batches of one size (``count``: batches run)."""

    batch_size: int
    compute_infer: Duration


@dataclass(frozen=True)
class ModelStatistics:
    name: str
    version: str
    last_inference_ms: int  # Unix time of the last batch run, 0 before any
    inference_count: int  # samples run
    execution_count: int  # batches run
    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration
    batches: tuple[BatchStatistics, ...]


class _Total:
    __slots__ = ("count", "ns")

    def __init__(self) -> None:
        self.count = 0
        self.ns = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def frozen(self) -> Duration:
        return Duration(self.count, self.ns)


class StatisticsRecorder:
    """Accumulates one model's statistics; :meth:`snapshot` reads them all at one moment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._success, self._fail, self._queue = _Total(), _Total(), _Total()
        self._input, self._infer, self._output = _Total(), _Total(), _Total()
        self._batches: dict[int, _Total] = {}
        self._samples = 0
        self._last_ms = 0

    def answered(self, elapsed_ns: int, ok: bool) -> None:
        with self._lock:
            (self._success if ok else self._fail).add(max(0, elapsed_ns))

    def succeeded(self, input_ns: int, queue_ns: int, infer_ns: int, output_ns: int) -> None:
        """A successful request's stages."""
        with self._lock:
            self._input.add(max(0, input_ns))
            self._queue.add(max(0, queue_ns))
            self._infer.add(max(0, infer_ns))
            self._output.add(max(0, output_ns))

    def batch_ran(self, size: int, compute_ns: int) -> None:
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            self._batches.setdefault(size, _Total()).add(compute_ns)
            self._samples += size
            self._last_ms = now_ms

    def snapshot(self, name: str, version: str) -> ModelStatistics:
        with self._lock:
            batches = tuple(
                BatchStatistics(size, total.frozen()) for size, total in sorted(self._batches.items())
            )
            return ModelStatistics(
                name=name,
                version=version,
                last_inference_ms=self._last_ms,
                inference_count=self._samples,
                execution_count=sum(b.compute_infer.count for b in batches),
                success=self._success.frozen(),
                fail=self._fail.frozen(),
                queue=self._queue.frozen(),
                compute_input=self._input.frozen(),
                compute_infer=self._infer.frozen(),
                compute_output=self._output.frozen(),
                batches=batches,
            )
