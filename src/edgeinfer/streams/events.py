"""A thread-safe mailbox of :class:`StreamEvent` from capture threads, sinks and the pipeline."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

from edgeinfer.streams.messages import Level, StreamEvent


class EventQueue:
    """Capture threads and sinks ``emit``; the pipeline ``drain``s and hands events to the sinks."""

    def __init__(self, wake: Callable[[], None] | None = None) -> None:
        self._queue: queue.SimpleQueue[StreamEvent] = queue.SimpleQueue()
        self._wake = wake

    def wake_with(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` after every emit (the pipeline passes its scheduler's wake-up)."""
        self._wake = wake

    def emit(self, stream: str, level: Level, kind: str, message: str) -> StreamEvent:
        event = StreamEvent(stream, level, kind, message, time.monotonic_ns())
        self._queue.put(event)
        if self._wake is not None:
            self._wake()
        return event

    def drain(self) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        while True:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                return events
