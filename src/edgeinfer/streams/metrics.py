"""Stream figures for Prometheus ``/metrics`` when streams run inside the server.

``register_stream_metrics(registry, snapshots)`` adds one collector that reads the streams'
snapshots at scrape time (nothing is updated on the frame path). ``snapshots`` is any callable
returning the current :class:`StreamSnapshot` list, e.g. ``pipeline.snapshots``, or a function
that returns ``[]`` while no pipeline runs. prometheus-client is imported only here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from edgeinfer.streams.stats import StreamSnapshot

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

SnapshotSource = Callable[[], list[StreamSnapshot]]

_COUNTERS = (
    ("captured", "frames captured"),
    ("dropped", "frames replaced by a newer one before inference (latest-frame scheduling)"),
    ("processed", "frames with a prediction"),
    ("rejected", "frames rejected at capture (wrong size or format, corrupt)"),
    ("failed", "frames whose preprocessing or inference failed"),
)
_GAUGES = (  # (metric name, snapshot field, help)
    ("achieved_fps", "achieved_fps", "predictions per second since the stream started"),
    ("recent_fps", "recent_fps", "predictions per second over the last 5 s"),
    ("capture_fps", "capture_fps", "frames captured per second"),
    ("drop_ratio", "drop_rate", "dropped / captured"),
)
_LATENCIES = (
    ("latency_p50_ms", "capture_to_prediction_p50_seconds", "median capture-to-prediction latency"),
    ("latency_p99_ms", "capture_to_prediction_p99_seconds", "99th percentile capture-to-prediction latency"),
    ("jitter_ms", "latency_jitter_seconds", "mean |difference| of consecutive frames' latencies"),
)


class StreamCollector:
    """A prometheus-client custom collector over stream snapshots."""

    def __init__(self, snapshots: SnapshotSource, prefix: str = "edgeinfer_stream") -> None:
        self._snapshots = snapshots
        self._prefix = prefix

    def describe(self) -> list[Any]:
        return []  # collected lazily: no families until streams run

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snaps = self._snapshots()
        p = self._prefix
        for field, text in _COUNTERS:
            family = CounterMetricFamily(f"{p}_frames_{field}", f"Stream {text}", labels=["stream"])
            for s in snaps:
                family.add_metric([s.stream], float(getattr(s, field)))
            yield family
        reconnects = CounterMetricFamily(
            f"{p}_reconnects",
            "Stream: times a live source was opened again after it stopped",
            labels=["stream"],
        )
        for s in snaps:
            reconnects.add_metric([s.stream], float(s.reconnects))
        yield reconnects
        for name, field, text in _GAUGES:
            gauge = GaugeMetricFamily(f"{p}_{name}", f"Stream {text}", labels=["stream"])
            for s in snaps:
                gauge.add_metric([s.stream], float(getattr(s, field)))
            yield gauge
        for field, name, text in _LATENCIES:
            gauge = GaugeMetricFamily(f"{p}_{name}", f"Stream {text}", labels=["stream"])
            for s in snaps:
                value = getattr(s, field)
                if value is not None:
                    gauge.add_metric([s.stream], value / 1000.0)
            yield gauge
        up = GaugeMetricFamily(
            f"{p}_up", "1 while the stream is running, else 0", labels=["stream", "status"]
        )
        for s in snaps:
            up.add_metric([s.stream, s.status], 1.0 if s.status == "running" else 0.0)
        yield up


def register_stream_metrics(
    registry: CollectorRegistry, snapshots: SnapshotSource, prefix: str = "edgeinfer_stream"
) -> StreamCollector:
    """Register the stream collector on ``registry``; keep the result to ``registry.unregister`` it."""
    collector = StreamCollector(snapshots, prefix)
    registry.register(collector)  # type: ignore[arg-type]  # structural Collector
    return collector
