"""Measured compute time per batch size, kept current while serving.

Warm-up measures every batch size the batcher may form; each real batch then updates its size's
figure with an exponentially weighted moving average, so the estimate follows the machine (other
load, thermal state) rather than a number fixed at start.
"""

from __future__ import annotations

import threading


class ComputeProfile:
    """Nanoseconds to run a batch of each size from 1 to ``max_batch_size``."""

    def __init__(self, max_batch_size: int, smoothing: float = 0.2) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.max_batch_size = max_batch_size
        self._smoothing = smoothing
        self._ns: list[float | None] = [None] * (max_batch_size + 1)
        self._lock = threading.Lock()

    def observe(self, batch_size: int, elapsed_ns: int) -> None:
        """Fold one measured batch into its size's estimate."""
        if not 1 <= batch_size <= self.max_batch_size or elapsed_ns <= 0:
            return
        with self._lock:
            previous = self._ns[batch_size]
            if previous is None:
                self._ns[batch_size] = float(elapsed_ns)
            else:
                self._ns[batch_size] = previous + self._smoothing * (elapsed_ns - previous)

    def compute_ns(self, batch_size: int) -> int:
        """Estimated time to run a batch of ``batch_size`` (0 before anything was measured).

        Sizes not measured yet are scaled from the nearest measured size, assuming linear cost.
        """
        size = max(1, min(batch_size, self.max_batch_size))
        with self._lock:
            exact = self._ns[size]
            if exact is not None:
                return int(exact)
            measured = [(b, ns) for b, ns in enumerate(self._ns) if ns is not None]
        if not measured:
            return 0
        nearest, ns = min(measured, key=lambda pair: abs(pair[0] - size))
        return int(ns * size / nearest)

    def per_sample_ns(self) -> int:
        """The cheapest per-sample cost over all sizes: the best the batcher can do under load."""
        costs = [self.compute_ns(b) / b for b in range(1, self.max_batch_size + 1)]
        return int(min(costs))

    def snapshot(self) -> dict[int, int]:
        """Measured sizes and their current estimates, for logs and metadata."""
        with self._lock:
            return {b: int(ns) for b, ns in enumerate(self._ns) if ns is not None}
