"""``edgeinfer stream`` as a user runs it: a real process, a real broker, files on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from edgeinfer.models.repository import ModelRepository
from tests.streams.conftest import Broker, Clip, Subscriber
from tests.streams.test_pipeline import CATS

av = pytest.importorskip("av")


@pytest.mark.e2e
def test_stream_command_with_every_output_and_bad_inputs(  # noqa: PLR0917  (pytest fixtures)
    repo: ModelRepository,
    broker: Broker,
    subscriber: Subscriber,
    coffee_clip: Clip,
    photos: dict[str, Path],
    tmp_path: Path,
) -> None:
    repo.build("mobilenet_v2")
    folder = tmp_path / "shots"
    folder.mkdir()
    Image.open(photos["chelsea"]).convert("RGB").save(folder / "01-cat.jpg")
    (folder / "02-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    Image.new("RGB", (8, 8)).save(folder / "03-tiny.png")
    jsonl, video = tmp_path / "out.jsonl", tmp_path / "annotated.mp4"
    done = subprocess.run(
        [
            sys.executable, "-m", "edgeinfer.cli.main", "stream",
            str(coffee_clip.path), str(folder), str(tmp_path / "missing.mp4"),
            "--fps", "15", "--loop", "--duration", "2", "--runtime", "onnxruntime", "--no-display",
            "--jsonl", str(jsonl), "--mqtt", broker.url, "--annotate", str(video),
        ],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "EDGEINFER_HOME": str(repo.root)},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # one source failed: the exit code says so
    assert "missing: source" in done.stderr and "does not exist" in done.stderr
    assert "02-broken.jpg" in done.stderr and "at least 32 px" in done.stderr
    assert "captured" in done.stdout and "espresso" in done.stdout

    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    frames = [r for r in records if r["type"] == "frame"]
    summary = records[-1]
    assert summary["type"] == "summary"
    streams = {s["stream"]: s for s in summary["streams"]}
    assert set(streams) == {coffee_clip.path.stem, "shots", "missing"}
    assert streams["missing"]["status"] == "failed"
    shots = streams["shots"]
    assert shots["status"] == "stopped" and shots["rejected"] >= 2 and shots["processed"] >= 4
    for s in streams.values():
        assert s["captured"] == s["processed"] + s["dropped"] + s["rejected"] + s["failed"]
    coffee_labels = [f["label"] for f in frames if f["stream"] == coffee_clip.path.stem]
    assert len(coffee_labels) >= 20 and coffee_labels.count("espresso") >= 0.9 * len(coffee_labels)
    assert all(f["label"] in CATS for f in frames if f["stream"] == "shots")

    mqtt = next(r for r in summary["sinks"] if r["sink"] == "mqtt")
    assert (mqtt["delivered"], mqtt["undelivered"]) == (len(frames), 0)
    received = subscriber.wait_for(len(frames))
    assert sorted((p["stream"], p["seq"], p["label"]) for _, p in received) == sorted(
        (f["stream"], f["seq"], f["label"]) for f in frames
    )
    for name in (coffee_clip.path.stem, "shots"):
        with av.open(str(tmp_path / f"annotated.{name}.mp4")) as container:
            count = sum(1 for _ in container.decode(video=0))
        assert count == streams[name]["processed"]
