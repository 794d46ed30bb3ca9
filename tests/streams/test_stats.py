"""Per-stream counters, percentiles and jitter."""

from __future__ import annotations

import numpy as np
import pytest

from edgeinfer.engine import Prediction
from edgeinfer.streams.messages import Frame, FrameResult, StageTimes, StreamStatus
from edgeinfer.streams.stats import StreamStats

PIXELS = np.zeros((32, 32, 3), np.uint8)


def result(seq: int, capture_ns: int, latency_ms: float, label: str = "espresso") -> FrameResult:
    frame = Frame("cam", seq, PIXELS, capture_ns, 0, 1_000_000)
    stages = StageTimes(1_000_000, 2_000_000, 3_000_000, 4_000_000, 10_000)
    return FrameResult(frame, (Prediction(967, label, 0.9),), capture_ns + int(latency_ms * 1e6), stages, 1)


def test_percentiles_jitter_and_rates_from_known_latencies() -> None:
    stats = StreamStats("cam", "cam.mp4")
    latencies = [10.0, 20.0, 10.0, 30.0, 10.0]
    for i, lat in enumerate(latencies):
        capture = i * 100_000_000  # 10 fps for 0.5 s
        stats.captured(capture)
        stats.processed(result(i, capture, lat))
    stats.finish(500_000_000)
    snap = stats.snapshot()
    assert snap.processed == snap.captured == 5
    assert snap.latency_p50_ms == pytest.approx(10.0)
    assert snap.latency_p99_ms == pytest.approx(np.percentile(latencies, 99))
    assert snap.latency_max_ms == pytest.approx(30.0)
    assert snap.jitter_ms == pytest.approx((10 + 10 + 20 + 20) / 4)  # mean |consecutive difference|
    assert snap.achieved_fps == pytest.approx(10.0)
    assert snap.mean_wait_ms == pytest.approx(2.0)
    assert snap.mean_infer_ms == pytest.approx(4.0)
    assert (snap.last_label, snap.last_score) == ("espresso", 0.9)


def test_every_captured_frame_lands_in_one_bucket() -> None:
    stats = StreamStats("cam", "cam.mp4")
    for i in range(10):
        stats.captured(i)
    stats.dropped(4)
    stats.rejected()
    stats.failed()
    for i in range(4):
        stats.processed(result(i, i, 5.0))
    snap = stats.snapshot()
    assert snap.captured == snap.dropped + snap.rejected + snap.failed + snap.processed
    assert snap.drop_rate == pytest.approx(0.4)


def test_an_empty_stream_has_no_latency_figures() -> None:
    stats = StreamStats("cam", "cam.mp4")
    stats.set_status(StreamStatus.FAILED)
    snap = stats.snapshot()
    assert snap.status == "failed"
    assert snap.latency_p50_ms is None and snap.jitter_ms is None and snap.drop_rate == 0.0
    assert snap.to_dict()["stream"] == "cam"


@pytest.mark.parametrize("status", [StreamStatus.ENDED, StreamStatus.FAILED])
def test_a_stream_that_ended_early_keeps_its_own_rate(status: StreamStatus) -> None:
    """10 frames at 10 fps, then the source ends; the run goes on for 9 s more."""
    stats = StreamStats("cam", "cam.mp4")
    stats.set_status(StreamStatus.RUNNING)
    for i in range(10):
        capture = i * 100_000_000
        stats.captured(capture)
        stats.processed(result(i, capture, 10.0))
    stats.set_status(status)
    stats.finish(10_000_000_000)
    snap = stats.snapshot()
    assert snap.elapsed_s == pytest.approx(0.91)  # first capture to the last prediction
    # ten frames span nine intervals: the last frame's own completes the time (not 11 fps)
    assert snap.capture_fps == snap.achieved_fps == pytest.approx(10 / 1.01, rel=1e-3)


def test_a_stream_still_running_at_the_end_is_measured_to_the_end() -> None:
    stats = StreamStats("cam", "cam.mp4")
    stats.set_status(StreamStatus.RUNNING)
    stats.captured(0)
    stats.processed(result(0, 0, 10.0))
    stats.finish(2_000_000_000)
    assert stats.snapshot().elapsed_s == pytest.approx(2.0)
