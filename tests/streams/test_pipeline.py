"""The pipeline end to end: real MobileNetV2 on ONNX Runtime, videos made from real photos."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeinfer.engine import Engine, Prediction
from edgeinfer.models.repository import ModelRepository
from edgeinfer.streams import (
    ArraySource,
    CaptureOptions,
    FrameResult,
    PipelineOptions,
    RunSummary,
    StreamEngine,
    StreamEvent,
    StreamPipeline,
    open_source,
)
from edgeinfer.streams.clips import encode_video, render_motion
from edgeinfer.streams.sinks.base import SinkReport
from tests.streams.conftest import Clip, free_port

CATS = {"Egyptian cat", "tabby", "tiger cat"}


class Recorder:
    """A sink that keeps every result and event (what the other sinks would receive)."""

    name = "recorder"

    def __init__(self) -> None:
        self.results: list[FrameResult] = []
        self.events: list[StreamEvent] = []
        self.summary: dict[str, object] | None = None

    def handle(self, result: FrameResult) -> None:
        self.results.append(result)

    def handle_event(self, event: StreamEvent) -> None:
        self.events.append(event)

    def flush(self, timeout_s: float) -> SinkReport:
        return SinkReport(self.name, len(self.results), 0)

    def close(self, summary: dict[str, object] | None) -> None:
        self.summary = summary

    def kinds(self, stream: str) -> list[str]:
        return [e.kind for e in self.events if e.stream == stream]


class SlowEngine:
    """The real engine on a slower device: every inference takes ``extra_s`` longer."""

    def __init__(self, engine: Engine, extra_s: float) -> None:
        self._engine = engine
        self._extra_s = extra_s

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        return self._engine.preprocess(rgb)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self._extra_s)
        return self._engine.infer(batch)

    def postprocess(self, scores: np.ndarray, top_k: int = 5) -> list[Prediction]:
        return self._engine.postprocess(scores, top_k)


@pytest.fixture(scope="module")
def engine(repo: ModelRepository) -> Iterator[Engine]:
    with Engine.load("mobilenet_v2", runtime="onnxruntime", repository=repo) as loaded:
        loaded.warmup((1, 2, 3))
        yield loaded


def run(
    engine: StreamEngine, sources: list[tuple[str, str]], capture: CaptureOptions, **options: Any
) -> tuple[Recorder, RunSummary]:
    recorder = Recorder()
    pipeline = StreamPipeline(
        engine,
        [(name, open_source(uri, capture)) for name, uri in sources],
        capture=capture,
        options=PipelineOptions(**options),
        sinks=[recorder],
    )
    return recorder, pipeline.run()


def assert_every_frame_counted(summary: RunSummary) -> None:
    for s in summary.streams:
        assert s.captured == s.processed + s.dropped + s.rejected + s.failed, s


@pytest.mark.e2e
@pytest.mark.parametrize("on_capture", [False, True], ids=["preprocess-in-loop", "preprocess-on-capture"])
def test_two_videos_at_15_fps_give_their_known_labels(
    engine: Engine, coffee_clip: Clip, cat_clip: Clip, on_capture: bool
) -> None:
    sources = [("coffee", str(coffee_clip.path)), ("cat", str(cat_clip.path))]
    rec, summary = run(engine, sources, CaptureOptions(fps=15), preprocess_on_capture=on_capture)
    assert_every_frame_counted(summary)
    by_stream = {s.stream: s for s in summary.streams}
    for name in ("coffee", "cat"):
        s = by_stream[name]
        assert s.status == "ended"
        assert s.captured == coffee_clip.frames // 2  # 30 fps source captured at 15 fps
        assert s.decimated == coffee_clip.frames // 2
        assert s.processed >= s.captured - 2  # two streams at 15 fps are light work
    coffee = [r for r in rec.results if r.stream == "coffee"]
    cats = [r for r in rec.results if r.stream == "cat"]
    assert sum(r.top.label == "espresso" for r in coffee) >= 0.9 * len(coffee)
    assert sum(r.top.label in CATS for r in cats) >= 0.9 * len(cats)
    for r in rec.results:
        stages = r.stages
        assert 0 < r.latency_ns < 2_000_000_000
        assert stages.wait_ns + stages.preprocess_ns + stages.infer_ns <= r.latency_ns
        assert stages.decode_ns > 0 and stages.preprocess_ns > 0 and 1 <= r.batch_size <= 2
        assert (r.frame.sample is not None) == on_capture
    captures = [r.frame.capture_ns for r in coffee]
    assert captures == sorted(captures)
    spacing_ms = np.diff(captures) / 1e6
    assert np.median(spacing_ms) == pytest.approx(1000 / 15, abs=10)  # paced like a 15 fps camera
    assert rec.summary is not None and rec.summary["batches"] == summary.batches


@pytest.mark.e2e
def test_a_slow_engine_drops_stale_frames_counts_them_and_keeps_latency_bounded(
    engine: Engine, coffee_clip: Clip, cat_clip: Clip
) -> None:
    slow = SlowEngine(engine, extra_s=0.15)  # ~6 inferences/s for 3 streams at 30 fps
    sources = [("a", str(coffee_clip.path)), ("b", str(cat_clip.path)), ("c", str(coffee_clip.path))]
    rec, summary = run(slow, sources, CaptureOptions(), max_batch=1)
    assert_every_frame_counted(summary)
    for s in summary.streams:
        assert s.dropped > s.captured / 2  # most frames were stale before the engine got to them
        assert s.processed >= 2
    processed = [s.processed for s in summary.streams]
    assert max(processed) - min(processed) <= 2  # round-robin: nobody starves
    # Nothing queues: a frame waits at most for the batch in flight and one batch of each other
    # stream ahead of it in the round, then its own: 4 batch times here (with a little slack).
    slowest_batch_ns = max(r.stages.infer_ns + r.stages.preprocess_ns for r in rec.results)
    worst_ns = max(r.latency_ns for r in rec.results)
    assert worst_ns < 4 * slowest_batch_ns + 100_000_000


@pytest.mark.e2e
def test_duration_stops_a_looping_stream(engine: Engine, coffee_clip: Clip) -> None:
    started = time.monotonic()
    rec, summary = run(
        engine, [("coffee", str(coffee_clip.path))], CaptureOptions(fps=15, loop=True), duration_s=1.5
    )
    elapsed = time.monotonic() - started
    (s,) = summary.streams
    assert 1.4 < elapsed < 4.0
    assert s.status == "stopped"
    assert s.captured > coffee_clip.frames // 2  # it went round at least once
    assert_every_frame_counted(summary)
    seqs = [r.frame.seq for r in rec.results]
    assert seqs == sorted(seqs)


@pytest.mark.e2e
def test_bad_sources_and_bad_frames_are_reported_and_the_others_continue(
    engine: Engine, coffee_clip: Clip, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all " * 500)
    frames: list[object] = [
        np.full((48, 64, 3), 128, np.uint8),
        np.zeros((48, 64), np.uint8),  # grey, not RGB
        None,  # a hole in the frames, not their end
        np.zeros((4, 4, 3), np.uint8),  # too small
        np.zeros((48, 64, 3), np.float32),  # wrong dtype (its message is one too many: counted only)
        np.full((48, 64, 3), 200, np.uint8),
    ]
    capture = CaptureOptions(fps=15)
    recorder = Recorder()
    sources = [
        ("coffee", open_source(str(coffee_clip.path), capture)),
        ("missing", open_source(str(tmp_path / "missing.mp4"), capture)),
        ("garbage", open_source(str(garbage), capture)),
        ("arrays", ArraySource(frames, fps=15)),
    ]
    summary = StreamPipeline(engine, sources, capture=capture, sinks=[recorder]).run()
    by_stream = {s.stream: s for s in summary.streams}
    assert by_stream["missing"].status == "failed"
    assert by_stream["garbage"].status == "failed"
    messages = {e.stream: e.message for e in recorder.events if e.level == "error"}
    assert "does not exist" in messages["missing"]
    assert "cannot be decoded" in messages["garbage"]
    arrays = by_stream["arrays"]
    assert (arrays.rejected, arrays.captured) == (4, 6)
    assert arrays.processed + arrays.dropped == 2  # the frame after the hole too
    bad = [e.message for e in recorder.events if e.kind == "bad_frame"]
    assert any("height x width x 3" in m for m in bad) and any("at least 32 px" in m for m in bad)
    assert any("got NoneType" in m for m in bad)
    assert by_stream["coffee"].status == "ended"
    assert by_stream["coffee"].processed >= by_stream["coffee"].captured - 2
    assert summary.errors == 2


@pytest.mark.e2e
def test_a_network_stream_that_stalls_is_reported_and_the_others_continue(
    engine: Engine, coffee_clip: Clip, cat_clip: Clip, photos: dict[str, Path], tmp_path: Path
) -> None:
    ts = encode_video(tmp_path / "cat.ts", render_motion(photos["chelsea"], 60, (320, 240), "zoom"), 30)
    data = ts.read_bytes()
    port = free_port()
    server = socket.create_server(("127.0.0.1", port))
    release = threading.Event()

    def serve() -> None:  # sends half the stream, then goes silent with the connection open
        conn, _ = server.accept()
        with conn:
            conn.sendall(data[: len(data) // 2])
            release.wait(30)

    threading.Thread(target=serve, daemon=True).start()
    try:
        rec, summary = run(
            engine,
            [("coffee", str(coffee_clip.path)), ("net", f"tcp://127.0.0.1:{port}")],
            CaptureOptions(fps=15, stall_timeout_s=1.0, reconnect_max_s=0),
        )
    finally:
        release.set()
        server.close()
    by_stream = {s.stream: s for s in summary.streams}
    assert by_stream["net"].processed > 0  # it worked until it stalled
    assert by_stream["net"].status == "failed"
    net_events = [e for e in rec.events if e.stream == "net"]
    assert any("stalled" in e.message for e in net_events), net_events
    assert by_stream["coffee"].status == "ended"
    assert by_stream["coffee"].processed >= by_stream["coffee"].captured - 2
    assert_every_frame_counted(summary)


def _reconnecting_run(
    engine: Engine,
    server: socket.socket,
    handle: Callable[[socket.socket, int], None],
    done: threading.Event,
    *,
    source: tuple[str, str],
    duration_s: float,
) -> tuple[Recorder, RunSummary]:
    """Run ``source`` (reopened after 1 s at most) while ``server`` hands each connection, numbered
    from 1, to ``handle`` on a thread of its own; then stop the server."""

    def serve() -> None:
        number = 0
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            number += 1
            threading.Thread(target=handle, args=(conn, number), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        return run(
            engine, [source], CaptureOptions(stall_timeout_s=1.0, reconnect_max_s=1.0), duration_s=duration_s
        )
    finally:
        done.set()
        server.close()


@pytest.mark.e2e
def test_a_network_stream_that_drops_is_opened_again_and_keeps_giving_frames(
    engine: Engine, photos: dict[str, Path], tmp_path: Path
) -> None:
    """A camera that drops its connection mid-stream, then one that stalls, and comes back each
    time: the stream is opened again, frames flow again, and the run ends stopped, not failed."""
    ts = encode_video(tmp_path / "cat.ts", render_motion(photos["chelsea"], 45, (320, 240), "zoom"), 30)
    data = ts.read_bytes()
    port = free_port()
    server = socket.create_server(("127.0.0.1", port))
    done = threading.Event()

    def handle(conn: socket.socket, number: int) -> None:
        with conn, contextlib.suppress(OSError):  # a client that gave up is gone
            if number == 1:  # drops the connection halfway through
                conn.sendall(data[: len(data) // 2])
            elif number == 2:  # sends half, then goes silent: a stall
                conn.sendall(data[: len(data) // 2])
                done.wait(3)
            else:  # the whole stream, then holds the connection open
                conn.sendall(data)
                done.wait(30)

    rec, summary = _reconnecting_run(
        engine, server, handle, done, source=("net", f"tcp://127.0.0.1:{port}"), duration_s=8.0
    )
    (net,) = summary.streams
    kinds = rec.kinds("net")
    assert kinds.count("reconnecting") >= 2 and kinds.count("reconnected") >= 2, kinds
    assert net.reconnects >= 2
    # more frames than the first two connections' halves hold: the third one's came through
    assert net.captured > 60, net
    second = [e.at_ns for e in rec.events if e.kind == "reconnected"][1]
    after = [r for r in rec.results if r.frame.capture_ns > second]
    assert after and {r.top.label for r in after} & CATS
    assert net.status == "stopped" and summary.errors == 0
    assert_every_frame_counted(summary)


@pytest.mark.e2e
def test_a_camera_that_answers_503_while_it_restarts_comes_back_and_its_password_stays_secret(
    engine: Engine, photos: dict[str, Path], tmp_path: Path
) -> None:
    """An HTTP camera drops its stream, answers 503 while it restarts, then serves again: opened
    again each time. Its URL, scheme in capitals and with a password, works and is never shown
    with the password."""
    ts = encode_video(tmp_path / "cat.ts", render_motion(photos["chelsea"], 45, (320, 240), "zoom"), 30)
    data = ts.read_bytes()
    port = free_port()
    server = socket.create_server(("127.0.0.1", port))
    done = threading.Event()
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n"
    busy = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

    def handle(conn: socket.socket, number: int) -> None:
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)  # the request
            if number == 1:
                conn.sendall(ok + data[: len(data) // 2])
            elif number == 2:
                conn.sendall(busy)
            else:
                conn.sendall(ok + data)
                done.wait(30)

    source = ("cam", f"HTTP://admin:s3cret@127.0.0.1:{port}/live.ts")
    rec, summary = _reconnecting_run(engine, server, handle, done, source=source, duration_s=7.0)
    (cam,) = summary.streams
    kinds = rec.kinds("cam")
    assert kinds.count("reconnecting") >= 2 and "reconnected" in kinds, kinds
    said = " ".join(e.message for e in rec.events) + str(summary.to_dict())
    assert "5XX" in said and "s3cret" not in said and "admin:***@" in cam.uri
    assert cam.status == "stopped" and summary.errors == 0, kinds


def test_a_live_source_that_never_opened_is_not_retried(engine: Engine) -> None:
    port = free_port()  # nothing listens here
    rec, summary = run(
        engine, [("net", f"tcp://127.0.0.1:{port}")], CaptureOptions(stall_timeout_s=1.0), duration_s=5.0
    )
    (net,) = summary.streams
    assert net.status == "failed" and net.reconnects == 0
    assert "reconnecting" not in rec.kinds("net")


class FailsToClose(Recorder):
    """A sink whose last write (its summary, on a full disk) fails."""

    name = "fails-to-close"

    def close(self, summary: dict[str, object] | None) -> None:
        raise OSError(28, "No space left on device")


@pytest.mark.e2e
def test_a_sink_that_fails_to_close_counts_in_the_summary(engine: Engine) -> None:
    frames = [np.full((48, 64, 3), 128, np.uint8)] * 3
    sink = FailsToClose()
    summary = StreamPipeline(engine, [("arrays", ArraySource(frames, fps=30))], sinks=[sink]).run()
    assert summary.errors == 1
    assert any(e.kind == "sink_failed" and "No space left" in e.message for e in sink.events)


@pytest.mark.e2e
def test_a_source_slower_than_the_stall_timeout_is_not_stalled(engine: Engine) -> None:
    frames = [np.full((48, 64, 3), 128, np.uint8)] * 4  # one frame every 0.5 s
    capture = CaptureOptions(stall_timeout_s=0.3)
    recorder = Recorder()
    summary = StreamPipeline(
        engine, [("slow", ArraySource(frames, fps=2))], capture=capture, sinks=[recorder]
    ).run()
    assert summary.streams[0].processed == 4
    assert "stalled" not in recorder.kinds("slow") and summary.warnings == 0
