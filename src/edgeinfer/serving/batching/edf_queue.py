"""A bounded earliest-deadline-first queue of pending requests.

Requests are whole (a request of n samples is never split across batches). The queue counts
samples, not requests, since a batch's cost grows with its samples.
"""

from __future__ import annotations

import asyncio
import heapq
from dataclasses import dataclass, field

import numpy as np


@dataclass(order=True)
class Pending:
    """One admitted request waiting for a batch. Ordered by deadline, then arrival."""

    deadline_ns: int
    seq: int
    samples: np.ndarray = field(compare=False)
    future: asyncio.Future[np.ndarray] = field(compare=False)
    enqueued_ns: int = field(compare=False)
    due_ns: int = field(default=0, compare=False)  # when its batch should end, by the profile
    queue_ns: int = field(default=0, compare=False)  # from enqueued to its batch's start
    compute_ns: int = field(default=0, compare=False)  # its batch's run

    @property
    def count(self) -> int:
        return int(self.samples.shape[0])


class EdfQueue:
    """A min-heap on (deadline, arrival). Not thread-safe: used from the event loop only."""

    def __init__(self) -> None:
        self._heap: list[Pending] = []
        self._samples = 0

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def samples(self) -> int:
        return self._samples

    def push(self, item: Pending) -> None:
        heapq.heappush(self._heap, item)
        self._samples += item.count

    def peek(self) -> Pending | None:
        return self._heap[0] if self._heap else None

    def oldest_enqueued_ns(self) -> int | None:
        return min((item.enqueued_ns for item in self._heap), default=None)

    def samples_due_by(self, deadline_ns: int) -> int:
        """Samples that EDF serves before a request with this deadline."""
        return sum(item.count for item in self._heap if item.deadline_ns <= deadline_ns)

    def pop_batch(self, max_samples: int) -> list[Pending]:
        """Earliest-deadline requests, in order, while they fit in ``max_samples``."""
        batch: list[Pending] = []
        total = 0
        while self._heap and total + self._heap[0].count <= max_samples:
            item = heapq.heappop(self._heap)
            batch.append(item)
            total += item.count
        self._samples -= total
        return batch

    def drain(self) -> list[Pending]:
        items = sorted(self._heap)
        self._heap.clear()
        self._samples = 0
        return items
