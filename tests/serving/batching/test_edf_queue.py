from __future__ import annotations

import asyncio

import numpy as np

from edgeinfer.serving.batching.edf_queue import EdfQueue, Pending


def _pending(deadline: int, seq: int, samples: int, loop: asyncio.AbstractEventLoop) -> Pending:
    return Pending(deadline, seq, np.zeros((samples, 1), np.float32), loop.create_future(), enqueued_ns=seq)


def test_pops_earliest_deadline_first_then_arrival_order() -> None:
    loop = asyncio.new_event_loop()
    try:
        queue = EdfQueue()
        for deadline, seq in ((300, 1), (100, 2), (200, 3), (100, 4)):
            queue.push(_pending(deadline, seq, 1, loop))
        assert queue.samples == 4
        batch = queue.pop_batch(8)
        assert [(p.deadline_ns, p.seq) for p in batch] == [(100, 2), (100, 4), (200, 3), (300, 1)]
        assert queue.samples == 0
    finally:
        loop.close()


def test_batch_holds_whole_requests_up_to_the_limit() -> None:
    loop = asyncio.new_event_loop()
    try:
        queue = EdfQueue()
        queue.push(_pending(1, 1, 3, loop))
        queue.push(_pending(2, 2, 3, loop))
        queue.push(_pending(3, 3, 1, loop))
        first = queue.pop_batch(4)  # 3 fit, the next 3 would not: EDF order is kept, nothing skipped
        assert [p.seq for p in first] == [1]
        assert queue.samples == 4
        assert queue.samples_due_by(2) == 3
        assert [p.seq for p in queue.pop_batch(4)] == [2, 3]
    finally:
        loop.close()
