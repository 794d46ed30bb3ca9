"""Measured compute time per batch size, kept current while serving.

Warm-up measures every batch size the batcher may form; each real batch then updates its size's
figure with an exponentially weighted moving average, so the estimate follows the machine (other
load, thermal state) rather than a number fixed at start. A figure not refreshed for ``fresh_s``
falls back to the best time that size ever took: a slow spell in the past must not make the
batcher refuse (and so never re-measure) work the machine can now do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence


class ComputeProfile:
    """Nanoseconds to run a batch of each size from 1 to ``max_batch_size``."""

    def __init__(self, max_batch_size: int, smoothing: float = 0.2, fresh_s: float = 2.0) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.max_batch_size = max_batch_size
        self._smoothing = smoothing
        self._ns: list[float | None] = [None] * (max_batch_size + 1)
        self._best: list[int | None] = [None] * (max_batch_size + 1)
        self._seen_ns: list[int] = [0] * (max_batch_size + 1)
        self._fresh_ns = int(fresh_s * 1e9)
        self._lock = threading.Lock()

    def observe(self, batch_size: int, elapsed_ns: int, at_ns: int | None = None) -> None:
        """Fold one batch measured at ``at_ns`` (``time.monotonic_ns()``; default now) into its size."""
        if not 1 <= batch_size <= self.max_batch_size or elapsed_ns <= 0:
            return
        with self._lock:
            self._seen_ns[batch_size] = time.monotonic_ns() if at_ns is None else at_ns
            best = self._best[batch_size]
            self._best[batch_size] = elapsed_ns if best is None else min(best, elapsed_ns)
            previous = self._ns[batch_size]
            if previous is None:
                self._ns[batch_size] = float(elapsed_ns)
            else:
                self._ns[batch_size] = previous + self._smoothing * (elapsed_ns - previous)

    def compute_ns(self, batch_size: int) -> int:
        """Estimated time to run a batch of ``batch_size`` (0 before anything was measured).

        The moving average while it is fresh, else the best time seen. Sizes never measured are
        scaled from the nearest measured size, assuming linear cost.
        """
        size = max(1, min(batch_size, self.max_batch_size))
        now = time.monotonic_ns()
        with self._lock:
            exact = self._current(size, now)  # the usual case: one lookup, not the whole table
            if exact is not None:
                return int(exact)
            table = [self._current(b, now) for b in range(self.max_batch_size + 1)]
        return _scaled(table, size, self.max_batch_size)

    def _current(self, size: int, now: int) -> float | int | None:
        ewma = self._ns[size]
        return ewma if ewma is not None and now - self._seen_ns[size] <= self._fresh_ns else self._best[size]

    def _costs_per_sample(self, limit: int) -> list[float]:
        """Estimated cost per sample of each batch size 1..limit, from one snapshot of the table."""
        now = time.monotonic_ns()
        with self._lock:
            table = [self._current(b, now) for b in range(self.max_batch_size + 1)]
        return [_scaled(table, b, self.max_batch_size) / b for b in range(1, limit + 1)]

    def best_ns(self, batch_size: int) -> int:
        """The fastest this size ever ran (its uncontended cost), scaled like :meth:`compute_ns`."""
        with self._lock:
            return _scaled(self._best, batch_size, self.max_batch_size)

    def best_batch_size(self, available: int, tolerance: float = 0.05) -> int:
        """The batch size to run when ``available`` samples wait: the smallest whose per-sample cost is
        within ``tolerance`` of the cheapest. On CPUs where batching does not pay this stays small, so
        no request waits for a big batch that is no faster per image."""
        limit = max(1, min(available, self.max_batch_size))
        if limit == 1:
            return 1
        costs = self._costs_per_sample(limit)
        cheapest = min(costs)
        return next(b for b, cost in enumerate(costs, start=1) if cost <= cheapest * (1 + tolerance))

    def per_sample_ns(self) -> int:
        """The cheapest per-sample cost over all sizes: the best the batcher can do under load."""
        return int(min(self._costs_per_sample(self.max_batch_size)))

    def snapshot(self) -> dict[int, int]:
        """Measured sizes and their current estimates, for logs and metadata."""
        with self._lock:
            return {b: int(ns) for b, ns in enumerate(self._ns) if ns is not None}


def _scaled(table: Sequence[float | int | None], batch_size: int, max_batch_size: int) -> int:
    """``table[size]``, or scaled linearly from the nearest measured size; 0 when nothing is measured."""
    size = max(1, min(batch_size, max_batch_size))
    exact = table[size]
    if exact is not None:
        return int(exact)
    measured = [(b, ns) for b, ns in enumerate(table) if ns is not None]
    if not measured:
        return 0
    nearest, ns = min(measured, key=lambda pair: abs(pair[0] - size))
    return int(ns * size / nearest)
