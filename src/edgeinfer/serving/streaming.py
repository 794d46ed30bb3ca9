"""Video streams classified inside the server (``edgeinfer serve --stream URI``).

The streams run on the served model's first engine, in a background thread, with the same
latest-frame scheduling as ``edgeinfer stream``; their per-stream figures appear in the server's
``/metrics`` next to the request metrics. A stream that fails is reported and the server keeps
serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from edgeinfer.streams import CaptureOptions, PipelineOptions, StreamPipeline, open_source, stream_names
from edgeinfer.streams.metrics import StreamCollector, register_stream_metrics
from edgeinfer.streams.pipeline import StreamEngine
from edgeinfer.streams.stats import StreamSnapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamSettings:
    """Which sources to classify and at what frame rate (None: each source's own)."""

    uris: tuple[str, ...]
    fps: float | None = None
    join_timeout_s: float = 5.0


class ServerStreams:
    """Starts the stream pipeline on a thread and exposes its figures on a metrics registry."""

    def __init__(self, settings: StreamSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self._registry = registry
        self._pipeline: StreamPipeline | None = None
        self._thread: threading.Thread | None = None
        self._collector: StreamCollector = register_stream_metrics(registry, self.snapshots)

    def snapshots(self) -> list[StreamSnapshot]:
        return self._pipeline.snapshots() if self._pipeline is not None else []

    def start(self, engine: StreamEngine) -> None:
        capture = CaptureOptions(fps=self.settings.fps, loop=True)
        names = stream_names(self.settings.uris)
        sources = [
            (name, open_source(uri, capture)) for name, uri in zip(names, self.settings.uris, strict=True)
        ]
        self._pipeline = StreamPipeline(
            engine, sources, capture=capture, options=PipelineOptions(max_batch=len(sources)),
            on_event=lambda event: log.warning("stream %s: %s", event.stream, event.message),
        )  # fmt: skip
        self._thread = threading.Thread(target=self._run, name="server-streams", daemon=True)
        self._thread.start()
        log.info("classifying %d stream(s): %s", len(sources), ", ".join(self.settings.uris))

    def stop(self) -> None:
        if self._pipeline is not None:
            self._pipeline.stop()
        if self._thread is not None:
            self._thread.join(self.settings.join_timeout_s)
        self._registry.unregister(self._collector)  # type: ignore[arg-type]  # structural Collector

    def _run(self) -> None:
        assert self._pipeline is not None
        try:
            summary = self._pipeline.run()
            log.info("streams finished: %s", summary)
        except Exception:  # a stream failure must never take the server down
            log.exception("the stream pipeline stopped")


def stream_settings(uris: Sequence[str], fps: float | None) -> StreamSettings | None:
    return StreamSettings(tuple(uris), fps) if uris else None
