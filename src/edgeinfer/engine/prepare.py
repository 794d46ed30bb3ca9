"""Several images to one batch of model inputs, on this thread and the process's helper thread."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeinfer.errors import EdgeInferError, in_batch
from edgeinfer.system.helper import share


@dataclass(frozen=True)
class PreparedBatch:
    """The stacked samples and the time each stage took, summed over the images (what one thread
    would have taken; with the helper's share the wall time is less)."""

    batch: np.ndarray
    decode_ns: int
    preprocess_ns: int


def prepare_images(
    sources: Sequence[Any] | np.ndarray,
    decode: Callable[[Any], np.ndarray],
    preprocess: Callable[[np.ndarray], np.ndarray],
) -> PreparedBatch:
    """``preprocess(decode(source))`` for every source, this thread and the helper taking them in
    turn (a lone image offers the helper the lower half of its preprocessing instead). The first
    image that fails, by position, raises, named ``image i: `` when there are several."""
    count = len(sources)

    def one(index: int) -> tuple[np.ndarray, int, int]:
        try:
            t0 = time.perf_counter_ns()
            rgb = decode(sources[index])
            t1 = time.perf_counter_ns()
            sample = preprocess(rgb)
            return sample, t1 - t0, time.perf_counter_ns() - t1
        except EdgeInferError as exc:
            in_batch(exc, index, count)
            raise

    prepared: list[tuple[np.ndarray, int, int]] = []
    for outcome in share(count, one):
        if isinstance(outcome, Exception):
            raise outcome
        prepared.append(outcome)
    batch = prepared[0][0][np.newaxis] if count == 1 else np.stack([sample for sample, _, _ in prepared])
    return PreparedBatch(batch, sum(p[1] for p in prepared), sum(p[2] for p in prepared))
