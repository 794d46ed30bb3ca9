"""JSON lines: one object per frame result, per event, and the summary at the end."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import IO

from edgeinfer.errors import InvalidInput
from edgeinfer.streams.events import EventQueue
from edgeinfer.streams.messages import FrameResult, StreamEvent
from edgeinfer.streams.sinks.base import SinkReport


class JsonlSink:
    """Appends ``{"type": "frame" | "event" | "summary", ...}`` lines to a file.

    Every line is written out as it comes (line buffering), so a frame counts as delivered only
    once its line reached the file. The first failed write (a full disk) ends the file: it is
    closed, reported once as an error, and every later frame is counted as not delivered.
    """

    name = "jsonl"

    def __init__(self, path: Path, events: EventQueue | None = None) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] | None = path.open("w", encoding="utf-8", buffering=1)
        except OSError as exc:
            raise InvalidInput(f"cannot write JSON lines to {path}: {exc.strerror or exc}") from exc
        self._events = events
        self._written = 0
        self._failed = 0
        self._error = ""

    def handle(self, result: FrameResult) -> None:
        if self._write(result.to_dict()):
            self._written += 1
        else:
            self._failed += 1

    def handle_event(self, event: StreamEvent) -> None:
        self._write(event.to_dict())

    def flush(self, timeout_s: float) -> SinkReport:
        detail = f"{self.path}; stopped: {self._error}" if self._error else str(self.path)
        return SinkReport(self.name, self._written, self._failed, detail)

    def close(self, summary: dict[str, object] | None) -> None:
        """Writes the summary line and closes the file. A failure is an error event, or, without an
        event queue, raised here."""
        if summary is not None:
            self._write({"type": "summary", **summary})
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError as exc:
                self._stop(exc)
        if self._error and self._events is None:
            raise OSError(f"{self.path} is incomplete: {self._error}")

    def _write(self, record: dict[str, object]) -> bool:
        if self._file is None:
            return False
        try:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        except OSError as exc:  # disk full: end the file, keep processing
            self._stop(exc)
            return False
        return True

    def _stop(self, exc: OSError) -> None:
        if self._error:
            return
        self._error = f"write failed: {exc.strerror or exc}"
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):  # the same error again, flushing what was buffered
                file.close()
        if self._events is not None:
            self._events.emit(
                self.name,
                "error",
                "jsonl_failed",
                f"writing {self.path} failed ({exc.strerror or exc}); later results are not written",
            )
