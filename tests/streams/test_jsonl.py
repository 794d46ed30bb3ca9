"""JSON lines on disk: a line counts as delivered once it is in the file, a full disk is one error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeinfer.engine import Prediction
from edgeinfer.streams import EventQueue
from edgeinfer.streams.messages import Frame, FrameResult, StageTimes
from edgeinfer.streams.sinks.jsonl import JsonlSink


def result(seq: int) -> FrameResult:
    frame = Frame("cam", seq, np.zeros((32, 32, 3), np.uint8), seq * 100_000_000, 0, 0)
    stages = StageTimes(0, 0, 0, 1_000_000, 0)
    return FrameResult(frame, (Prediction(967, "espresso", 0.9),), frame.capture_ns + 5_000_000, stages, 1)


@pytest.fixture
def full_disk(tmp_path: Path) -> Path:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    path = tmp_path / "full.jsonl"
    path.symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk
    return path


def test_each_line_is_in_the_file_as_soon_as_it_is_handled(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "out.jsonl")
    sink.handle(result(0))
    assert json.loads((tmp_path / "out.jsonl").read_text())["seq"] == 0
    sink.handle(result(1))
    report = sink.flush(timeout_s=1)
    sink.close({"errors": 0})
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["type"] for r in lines] == ["frame", "frame", "summary"]
    assert (report.delivered, report.undelivered) == (2, 0)


def test_a_full_disk_counts_every_frame_as_not_delivered_with_one_error(full_disk: Path) -> None:
    events = EventQueue()
    sink = JsonlSink(full_disk, events)
    for seq in range(5):
        sink.handle(result(seq))
    report = sink.flush(timeout_s=1)
    sink.close({"errors": 0})  # reported as an event, not raised
    assert (report.delivered, report.undelivered) == (0, 5)
    assert "No space left on device" in report.detail
    (error,) = events.drain()
    assert (error.level, error.kind) == ("error", "jsonl_failed")


def test_without_an_event_queue_the_failure_is_raised_at_close(full_disk: Path) -> None:
    sink = JsonlSink(full_disk)
    sink.handle(result(0))
    with pytest.raises(OSError, match="incomplete: write failed: No space left on device"):
        sink.close({"errors": 0})
