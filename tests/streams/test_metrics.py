"""Stream figures in Prometheus exposition format (for the server's /metrics)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeinfer.engine import Prediction
from edgeinfer.streams.messages import Frame, FrameResult, StageTimes, StreamStatus
from edgeinfer.streams.metrics import register_stream_metrics
from edgeinfer.streams.stats import StreamSnapshot, StreamStats

prometheus_client = pytest.importorskip("prometheus_client")


def snapshots() -> list[StreamSnapshot]:
    stats = StreamStats("cam1", "cam1.mp4")
    stats.set_status(StreamStatus.RUNNING)
    pixels = np.zeros((32, 32, 3), np.uint8)
    for seq in range(4):
        stats.captured(seq * 66_000_000)
    stats.dropped(1)
    stats.reconnecting()  # the source dropped once and was opened again
    stats.set_status(StreamStatus.RUNNING)
    for seq, latency_ms in enumerate((20, 40, 30)):
        frame = Frame("cam1", seq, pixels, seq * 66_000_000, 0, 0)
        stats.processed(
            FrameResult(
                frame,
                (Prediction(967, "espresso", 0.9),),
                frame.capture_ns + latency_ms * 1_000_000,
                StageTimes(0, 0, 0, 0, 0),
                1,
            )
        )
    return [stats.snapshot()]


def test_stream_figures_appear_in_the_registry_and_can_be_removed() -> None:
    registry = prometheus_client.CollectorRegistry()
    collector = register_stream_metrics(registry, snapshots)
    text = prometheus_client.generate_latest(registry).decode()
    assert 'edgeinfer_stream_frames_captured_total{stream="cam1"} 4.0' in text
    assert 'edgeinfer_stream_frames_dropped_total{stream="cam1"} 1.0' in text
    assert 'edgeinfer_stream_frames_processed_total{stream="cam1"} 3.0' in text
    assert 'edgeinfer_stream_reconnects_total{stream="cam1"} 1.0' in text
    assert 'edgeinfer_stream_drop_ratio{stream="cam1"} 0.25' in text
    assert 'edgeinfer_stream_capture_to_prediction_p50_seconds{stream="cam1"} 0.03' in text
    assert 'edgeinfer_stream_latency_jitter_seconds{stream="cam1"} 0.015' in text
    assert 'edgeinfer_stream_up{status="running",stream="cam1"} 1.0' in text
    registry.unregister(collector)
    assert "edgeinfer_stream" not in prometheus_client.generate_latest(registry).decode()


def test_no_streams_no_samples() -> None:
    registry = prometheus_client.CollectorRegistry()
    register_stream_metrics(registry, list)
    text = prometheus_client.generate_latest(registry).decode()
    assert "stream=" not in text
