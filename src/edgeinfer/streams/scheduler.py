"""Latest-frame scheduling: one slot per stream, fair batches across streams.

Each stream owns a slot that holds at most its newest undelivered frame. A new frame replaces
the old one, and the replaced frame is returned to the caller to be counted as dropped: nothing
ever queues behind a slow engine, so the engine always sees the freshest picture.

Batches take at most one frame per stream, visiting the streams round-robin from just after the
last stream served. With ``max_batch`` below the number of ready streams, every ready stream is
therefore served within ``ceil(streams / max_batch)`` batches: none starves, however fast the
others produce. (Picking the oldest frame first would starve a fast stream, whose frame is always
young because it is always being replaced.)

Waiting is on a condition variable, never polling.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from edgeinfer.streams.messages import Frame


class FrameScheduler:
    """Latest-frame slots for a fixed set of streams, drained in fair batches."""

    def __init__(self, streams: Sequence[str], max_batch: int, max_batch_delay_us: int = 0) -> None:
        if len(set(streams)) != len(streams):
            raise ValueError(f"stream names must be unique, got {list(streams)}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._order = list(streams)
        self._slots: dict[str, Frame | None] = dict.fromkeys(streams)
        self._open = set(streams)
        self._stalled: set[str] = set()  # open, but not worth waiting for (see stalled())
        self._max_batch = max_batch
        self._delay_ns = max_batch_delay_us * 1000
        self._next = 0
        self._ready = 0
        self._closed = False
        self._woken = False  # set by wake(): a batch waiting for more frames goes with what it has
        self._cond = threading.Condition()

    @property
    def streams(self) -> list[str]:
        return list(self._order)

    def put(self, frame: Frame) -> Frame | None:
        """Make ``frame`` its stream's pending frame; return the frame it replaced (now dropped).

        After :meth:`close` nothing is taken any more, so ``frame`` itself comes back as dropped.
        """
        with self._cond:
            if frame.stream not in self._slots:
                raise KeyError(f"unknown stream {frame.stream!r}")
            if self._closed:
                return frame
            old = self._slots[frame.stream]
            self._slots[frame.stream] = frame
            self._stalled.discard(frame.stream)  # it delivers again
            if old is None:
                self._ready += 1
                self._cond.notify_all()
            return old

    def finish_stream(self, stream: str) -> None:
        """The stream will put no more frames (ended, failed or stopped)."""
        with self._cond:
            self._open.discard(stream)
            self._cond.notify_all()

    def stalled(self, stream: str) -> None:
        """The stream has gone quiet (its capture is stalled): a batch no longer waits for its
        frame, until it puts one again."""
        with self._cond:
            self._stalled.add(stream)
            self._cond.notify_all()

    def wake(self) -> None:
        """Make a waiting ``next_batch`` return now (for events and stop requests), and one that is
        waiting for more frames to batch take what it has."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def close(self) -> None:
        """No more batches: waiters return at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def exhausted(self) -> bool:
        """True when every stream has finished and every pending frame has been taken."""
        with self._cond:
            return not self._open and self._ready == 0

    def pending(self) -> int:
        with self._cond:
            return self._ready

    def next_batch(self, timeout_s: float) -> list[Frame]:
        """Wait up to ``timeout_s`` for a ready frame, then take a fair batch ([] on timeout/wake)."""
        with self._cond:
            if self._ready == 0 and not self._closed:
                self._cond.wait(timeout_s)
            if self._ready == 0 or self._closed:
                return []
            if self._delay_ns:
                self._wait_for_more()
            return self._take()

    def drain(self) -> list[Frame]:
        """Take every pending frame, fairness aside (at shutdown, to count them)."""
        with self._cond:
            frames = [f for f in self._slots.values() if f is not None]
            self._slots = dict.fromkeys(self._order)
            self._ready = 0
            return frames

    def _wait_for_more(self) -> None:
        want = min(self._max_batch, len(self._open - self._stalled) or 1)
        deadline = time.monotonic_ns() + self._delay_ns
        self._woken = False
        while self._ready < want and not self._closed and not self._woken:
            left_ns = deadline - time.monotonic_ns()
            if left_ns <= 0:
                break
            self._cond.wait(left_ns / 1e9)

    def _take(self) -> list[Frame]:
        batch: list[Frame] = []
        count = len(self._order)
        last_served = -1
        for step in range(count):
            index = (self._next + step) % count
            frame = self._slots[self._order[index]]
            if frame is None:
                continue
            batch.append(frame)
            self._slots[self._order[index]] = None
            self._ready -= 1
            last_served = index
            if len(batch) == self._max_batch:
                break
        self._next = (last_served + 1) % count
        return batch
