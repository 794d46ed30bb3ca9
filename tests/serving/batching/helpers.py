"""What the batcher tests share: one-sample inputs and deadlines a given time from now."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgeinfer.serving.batching.batcher import Batcher
from edgeinfer.serving.batching.observer import BatchObserver
from edgeinfer.serving.batching.settings import BatcherSettings

MS = 1_000_000


def sample(value: float) -> np.ndarray:
    """One request of one sample; the stand-in models answer its first value times 10."""
    return np.full((1, 2), value, dtype=np.float32)


def deadline_in(ms: float) -> int:
    return time.monotonic_ns() + int(ms * MS)


async def started(
    model: Callable[[np.ndarray], np.ndarray], observer: BatchObserver | None = None, **settings: Any
) -> Batcher:
    """A batcher on ``model`` alone, warmed (one run per batch size) and accepting requests."""
    batcher = Batcher([model], BatcherSettings(**settings), observer=observer)
    await batcher.warm_up((2,), np.dtype(np.float32), runs=1)
    batcher.start()
    return batcher
