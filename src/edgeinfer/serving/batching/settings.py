"""What a batcher is told (settings, split lanes) and what it hands out (admission tickets)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

InferFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BatcherSettings:
    """``max_queue_size`` counts samples (admitted, decoding or queued) across the model.

    ``answer_margin_us`` is kept in hand before every deadline for what happens after the batcher
    and outside the server's clock: writing the answer, the network, a busy client reading it.
    ``idle_fast_path`` lets ``run_inline`` run a lone client's request on the event-loop thread
    while the model is idle and its batch takes at most ``inline_max_us``. ``prefetch`` hands a busy
    split lane's thread its next batch while the current one runs.
    """

    max_batch_size: int = 8
    max_queue_delay_us: int = 2000
    max_queue_size: int = 64
    answer_margin_us: int = 5000
    idle_fast_path: bool = True
    inline_max_us: int = 50_000
    prefetch: bool = True

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if self.answer_margin_us < 0:
            raise ValueError(f"answer_margin_us must be >= 0, got {self.answer_margin_us}")
        if self.max_queue_size < self.max_batch_size:
            raise ValueError(
                f"max_queue_size ({self.max_queue_size}) must be at least "
                f"max_batch_size ({self.max_batch_size})"
            )


@dataclass
class Ticket:
    """An admitted request's claim on queue space until its samples are queued or it gives up."""

    samples: int
    deadline_ns: int
    admitted_ns: int = 0
    estimate_ns: int = 0
    prep_ns: int = 0
    open: bool = field(default=True)
    # set by the batcher once the request's rows are back: its wait for a batch and the run of
    # that batch (the whole batch's time, as Triton's statistics count it for each request in it)
    queue_ns: int = 0
    compute_ns: int = 0


@dataclass(frozen=True)
class SplitLanes:
    """Single-thread runs that replace the wide instance while ``min_backlog`` or more samples wait.

    ``infer_fn`` must be safe to call from ``lanes`` threads at once (one single-thread ONNX Runtime
    session is: each call computes on its caller's thread). ``warm_sizes`` batch sizes are warmed and
    measured (larger ones are scaled from them): on CPUs where batching does not pay the split lanes
    run batches of 1-2, so warming more would only grow the runtime's memory arena.
    """

    infer_fn: InferFn
    lanes: int
    min_backlog: int = 2
    warm_sizes: int = 2

    def __post_init__(self) -> None:
        if self.lanes < 2:
            raise ValueError(f"split lanes must be >= 2 to be worth having, got {self.lanes}")
        if self.min_backlog < 1 or self.warm_sizes < 1:
            raise ValueError("min_backlog and warm_sizes must be >= 1")
