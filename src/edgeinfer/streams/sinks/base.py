"""Where results go: the one small interface every sink implements."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

from edgeinfer.streams.messages import FrameResult, StreamEvent


@dataclass(frozen=True)
class SinkReport:
    """What a sink delivered and what it could not (``undelivered``), with the reason."""

    sink: str
    delivered: int
    undelivered: int
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class Sink(Protocol):
    """Receives every result and event on the pipeline's thread; must not block for long.

    ``flush`` finishes delivery (waiting at most ``timeout_s``) and reports; ``close`` gets the
    run's summary (as a dict) to record if the sink keeps one, then releases everything.
    """

    name: str

    def handle(self, result: FrameResult) -> None: ...

    def handle_event(self, event: StreamEvent) -> None: ...

    def flush(self, timeout_s: float) -> SinkReport: ...

    def close(self, summary: dict[str, object] | None) -> None: ...
