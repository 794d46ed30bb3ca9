"""The annotated video: every processed frame, its label drawn on it, readable by FFmpeg."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeinfer.engine import Engine, Prediction
from edgeinfer.errors import InvalidInput
from edgeinfer.models.repository import ModelRepository
from edgeinfer.streams import CaptureOptions, EventQueue, StreamPipeline, open_source
from edgeinfer.streams.annotate import AnnotateSink, annotated_path, draw_label
from edgeinfer.streams.messages import Frame, FrameResult, StageTimes
from tests.streams.conftest import Clip
from tests.streams.test_pipeline import Recorder

av = pytest.importorskip("av")


def test_draw_label_puts_a_dark_band_with_text_on_a_copy() -> None:
    rgb = np.full((240, 320, 3), 255, np.uint8)
    out = draw_label(rgb, "espresso 99%  12 ms")
    assert rgb.min() == 255  # the frame itself is untouched
    band = out[: 240 // 18]
    assert (band < 30).mean() > 0.5  # mostly dark
    assert (band > 200).any()  # with white text
    assert np.array_equal(out[60:], rgb[60:])


def test_one_file_per_stream_when_there_are_several(tmp_path: Path) -> None:
    assert annotated_path(tmp_path / "out.mp4", "cam", 1) == tmp_path / "out.mp4"
    assert annotated_path(tmp_path / "out.mp4", "cam", 2) == tmp_path / "out.cam.mp4"
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(InvalidInput, match="annotated video"):
        AnnotateSink(tmp_path / "folder.mp4", ["cam"])  # a folder, not a file


@pytest.mark.parametrize("name", ["out", "out.txt", "out.webm"])
@pytest.mark.parametrize("streams", [["cam"], ["cam", "door"]])
def test_a_name_without_a_video_suffix_is_refused_for_one_stream_or_several(
    tmp_path: Path, name: str, streams: list[str]
) -> None:
    with pytest.raises(InvalidInput, match=r"must end in a video suffix \(\.mp4"):
        AnnotateSink(tmp_path / name, streams)


def results(stream: str, count: int, noise: bool) -> list[FrameResult]:
    """Frames that compress to almost nothing (flat) or to tens of kB each (noise)."""
    rng = np.random.default_rng(0)
    out = []
    for seq in range(count):
        rgb = rng.integers(0, 256, (240, 320, 3), np.uint8) if noise else np.full((240, 320, 3), 90, np.uint8)
        frame = Frame(stream, seq, rgb, seq * 50_000_000, 0, 0)
        stages = StageTimes(0, 0, 0, 1_000_000, 0)
        out.append(
            FrameResult(frame, (Prediction(967, "espresso", 0.9),), frame.capture_ns + 5_000_000, stages, 1)
        )
    return out


@pytest.mark.parametrize("noise", [True, False], ids=["fails-while-writing", "fails-at-close"])
def test_a_full_disk_counts_every_frame_as_not_delivered_with_one_error(tmp_path: Path, noise: bool) -> None:
    full = tmp_path / "full.mp4"
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    full.symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk
    events = EventQueue()
    sink = AnnotateSink(full, ["cam"], events)
    for result in results("cam", 20, noise):
        sink.handle(result)
    report = sink.flush(timeout_s=30)
    assert (report.delivered, report.undelivered) == (0, 20)
    assert "No space left on device" in report.detail
    (error,) = [e for e in events.drain() if e.level == "error"]
    assert error.kind == "annotate_failed" and "No space left on device" in error.message


@pytest.mark.e2e
def test_the_annotated_video_has_every_processed_frame(
    repo: ModelRepository, coffee_clip: Clip, tmp_path: Path
) -> None:
    out = tmp_path / "annotated.mp4"
    capture = CaptureOptions(fps=15)
    recorder = Recorder()
    with Engine.load("mobilenet_v2", runtime="onnxruntime", repository=repo) as engine:
        sink = AnnotateSink(out, ["coffee"])
        summary = StreamPipeline(
            engine,
            [("coffee", open_source(str(coffee_clip.path), capture))],
            capture=capture,
            sinks=[sink, recorder],
        ).run()
    (report,) = [r for r in summary.sinks if r.sink == "annotate"]
    assert report.delivered == summary.streams[0].processed == len(recorder.results)
    assert report.undelivered == 0
    with av.open(str(out)) as container:
        decoded = list(container.decode(video=0))
    frames = [f.to_ndarray(format="rgb24") for f in decoded]
    times = [f.time for f in decoded]
    assert len(frames) == len(recorder.results)
    assert frames[0].shape == (240, 320, 3)
    assert (frames[0][:5] < 40).mean() > 0.8  # the label band
    assert np.diff(times).min() > 0 and times[-1] == pytest.approx(
        (recorder.results[-1].frame.capture_ns - recorder.results[0].frame.capture_ns) / 1e9, abs=0.01
    )
