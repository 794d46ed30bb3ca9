"""Streams inside the server: `edgeinfer serve --stream clip.mp4` classifies the video in the
background, shows per-stream figures in /metrics, and keeps answering requests."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.serving.conftest import start_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _metric(text: str, name: str, stream: str) -> float:
    match = re.search(rf'^{name}\{{[^}}]*stream="{stream}"[^}}]*\}} ([0-9.e+-]+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else -1.0


def test_streams_run_inside_the_server_and_show_in_metrics(photos: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("av")
    from edgeinfer.streams.clips import make_clip

    clip = make_clip(photos["coffee"], tmp_path / "coffee.mp4", frames=30, fps=15)
    missing = tmp_path / "no-such-camera.mp4"
    server = start_server(
        tmp_path, "--threads", "1", "--no-grpc", "--stream", str(clip), "--stream", str(missing),
        "--stream-fps", "15",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        processed = -1.0
        while time.monotonic() < deadline:
            status, _, body = server.request("GET", "/metrics")
            assert status == 200
            text = body.decode()
            processed = _metric(text, "edgeinfer_stream_frames_processed_total", "coffee")
            if processed >= 10:
                break
            time.sleep(0.5)
        assert processed >= 10, text[-2000:]
        assert _metric(text, "edgeinfer_stream_frames_captured_total", "coffee") >= processed
        # The missing source is reported as its own stream; the other one and the server go on.
        assert 'stream="no-such-camera"' in text
        status, _, answer = server.request(
            "POST", "/v1/models/mobilenet_v2/classify?top_k=1", photos["coffee"].read_bytes()
        )
        assert status == 200 and b"espresso" in answer
    finally:
        code = server.stop()
    assert code == 0, server.log
