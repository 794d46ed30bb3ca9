"""JSON lines: one object per frame result, per event, and the summary at the end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from edgeinfer.errors import InvalidInput
from edgeinfer.streams.messages import FrameResult, StreamEvent
from edgeinfer.streams.sinks.base import SinkReport


class JsonlSink:
    """Appends ``{"type": "frame" | "event" | "summary", ...}`` lines to a file."""

    name = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] | None = path.open("w", encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"cannot write JSON lines to {path}: {exc.strerror or exc}") from exc
        self._written = 0
        self._failed = 0
        self._error = ""

    def handle(self, result: FrameResult) -> None:
        if self._write(result.to_dict()):
            self._written += 1

    def handle_event(self, event: StreamEvent) -> None:
        self._write(event.to_dict())

    def flush(self, timeout_s: float) -> SinkReport:
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as exc:
                self._error = str(exc)
        return SinkReport(self.name, self._written, self._failed, self._error or str(self.path))

    def close(self, summary: dict[str, object] | None) -> None:
        if summary is not None:
            self._write({"type": "summary", **summary})
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, record: dict[str, object]) -> bool:
        if self._file is None:
            return False
        try:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        except OSError as exc:  # disk full: count it, keep processing
            self._failed += 1
            self._error = f"write failed: {exc.strerror or exc}"
            return False
        return True
