"""Time several ways of doing the same call side by side: alternating rounds, one shared clock.

On a shared, noisy machine a comparison is only fair when every candidate sees the same moments:
each round runs ``runs`` calls of every candidate, in an order that reverses every other round.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def time_alternating(
    calls: dict[str, Callable[[int], object]], *, rounds: int, runs: int, warmup: int = 10
) -> dict[str, list[float]]:
    """Milliseconds of every call of every candidate; ``calls[key](i)`` runs ``key`` on input ``i``."""
    for call in calls.values():  # warm-up, not recorded
        for i in range(warmup):
            call(i)
    times: dict[str, list[float]] = {key: [] for key in calls}
    for r in range(rounds):
        order = list(calls) if r % 2 == 0 else list(calls)[::-1]
        for key in order:
            for i in range(runs):
                started = time.perf_counter_ns()
                calls[key](r * runs + i)
                times[key].append((time.perf_counter_ns() - started) / 1e6)
    return times


def p50_p90(values: list[float]) -> tuple[float, float]:
    p50, p90 = np.percentile(values, [50, 90])
    return float(p50), float(p90)
