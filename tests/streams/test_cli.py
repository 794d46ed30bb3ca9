"""``edgeinfer stream`` as a user runs it: a real process, a real broker, files on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeinfer.cli.main import main
from edgeinfer.models.repository import ModelRepository
from edgeinfer.streams.clips import render_motion
from tests.streams.conftest import Broker, Clip, Subscriber, write_rotated
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


def edgeinfer(repo: ModelRepository, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edgeinfer.cli.main",
        "stream",
        *args,
        "--runtime",
        "onnxruntime",
        "--no-display",
    ]


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("option", ["--duration", "--stall-timeout"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_duration_or_stall_timeout_that_is_not_a_finite_number_is_one_line(
    option: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stream", str(tmp_path), f"{option}={value}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "positive and finite" in err


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_reconnect_pause_that_is_negative_or_not_finite_is_one_line(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stream", str(tmp_path), f"--reconnect-max-s={value}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reconnect_max_s must be >= 0 and finite" in err


@pytest.mark.parametrize("name", ["out", "out.txt"])
@pytest.mark.parametrize("sources", [1, 2])
def test_an_annotate_name_without_a_video_suffix_is_refused_before_the_engine_loads(
    name: str,
    sources: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def no_engine(args: object) -> None:
        raise AssertionError("the engine was loaded")

    monkeypatch.setattr("edgeinfer.cli.stream.load_engine", no_engine)
    folders = [str(tmp_path / f"cam{i}") for i in range(sources)]
    assert main(["stream", *folders, "--annotate", str(tmp_path / name)]) == 2
    assert "must end in a video suffix" in capsys.readouterr().err


@pytest.mark.parametrize(
    "case",
    [(o, s) for o in ("--jsonl", "--annotate") for s in ("plain", "relative", "file-uri", "hard-link")],
)
def test_an_output_that_is_a_source_is_refused_before_anything_is_written(
    case: tuple[str, str],
    coffee_clip: Clip,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before, ``--jsonl cam.mp4`` truncated the video before it was read and ``--annotate cam.mp4``
    overwrote it while it was read (exit 0): the source was lost either way."""

    def no_engine(args: object) -> None:
        raise AssertionError("the engine was loaded")

    monkeypatch.setattr("edgeinfer.cli.stream.load_engine", no_engine)
    output, spelling = case
    video = tmp_path / "cam 1.mp4"
    video.write_bytes(coffee_clip.path.read_bytes())
    original = video.read_bytes()
    monkeypatch.chdir(tmp_path)
    source, target = str(video), str(video)
    if spelling == "relative":
        target = "./sub/../cam 1.mp4"
        (tmp_path / "sub").mkdir()
    elif spelling == "file-uri":
        source = "file://" + str(video).replace(" ", "%20")
    elif spelling == "hard-link":
        target = str(tmp_path / "link.mp4")
        os.link(video, target)
    assert main(["stream", source, output, target]) == 2
    assert "writing it would destroy the source" in capsys.readouterr().err
    assert video.read_bytes() == original


@pytest.mark.e2e
def test_a_source_named_like_markup_is_shown_as_it_is(repo: ModelRepository, tmp_path: Path) -> None:
    """Before, ``nope[/]x.mp4`` crashed with rich's MarkupError and ``[bold]y.mp4`` showed as ``y.mp4``."""
    repo.build("mobilenet_v2")
    done = subprocess.run(
        edgeinfer(repo, str(tmp_path / "nope[/]x.mp4"), str(tmp_path / "[bold]y.mp4")),
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "EDGEINFER_HOME": str(repo.root)},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # every source failed
    assert "Traceback" not in done.stderr
    assert "nope[/]x.mp4' does not exist" in done.stderr and "[bold]y.mp4' does not exist" in done.stderr


def test_two_outputs_that_are_one_file_are_refused(
    coffee_clip: Clip, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out.mp4")
    assert main(["stream", str(coffee_clip.path), "--jsonl", out, "--annotate", out]) == 2
    assert "two outputs are the same file" in capsys.readouterr().err


@pytest.mark.e2e
def test_a_source_refused_at_startup_is_a_failed_stream(
    repo: ModelRepository, coffee_clip: Clip, tmp_path: Path
) -> None:
    repo.build("mobilenet_v2")
    jsonl = tmp_path / "out.jsonl"
    done = subprocess.run(
        edgeinfer(repo, str(coffee_clip.path), "ftp://127.0.0.1/x.mp4", "--duration=1", f"--jsonl={jsonl}"),
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "EDGEINFER_HOME": str(repo.root)},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("unsupported scheme 'ftp'") == 1
    assert "127.0.0.1_x.mp4: captured 0" in done.stdout
    summary = records(jsonl)[-1]
    streams = {s["stream"]: s for s in summary["streams"]}  # type: ignore[attr-defined]
    assert streams["127.0.0.1_x.mp4"]["status"] == "failed" and summary["errors"] == 1


@pytest.mark.e2e
def test_sigterm_stops_the_run_like_ctrl_c(repo: ModelRepository, coffee_clip: Clip, tmp_path: Path) -> None:
    repo.build("mobilenet_v2")
    jsonl, video = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    proc = subprocess.Popen(
        edgeinfer(repo, str(coffee_clip.path), "--loop", "--jsonl", str(jsonl), "--annotate", str(video)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "EDGEINFER_HOME": str(repo.root)},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (jsonl.exists() and '"type":"frame"' in jsonl.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "captured" in out
    summary = records(jsonl)[-1]
    assert summary["type"] == "summary"
    (stream,) = summary["streams"]  # type: ignore[misc]
    assert stream["status"] == "stopped"
    with av.open(str(video)) as container:  # finished: the MP4 can be read
        assert sum(1 for _ in container.decode(video=0)) == stream["processed"]


@pytest.mark.e2e
def test_a_phone_video_is_classified_and_annotated_upright(
    repo: ModelRepository, photos: dict[str, Path], tmp_path: Path
) -> None:
    repo.build("mobilenet_v2")
    (upright,) = render_motion(photos["coffee"], 1, (240, 320), "pan")  # portrait
    stored = np.ascontiguousarray(np.rot90(upright))  # recorded sideways, tagged to turn back
    phone = write_rotated(tmp_path / "phone.mp4", stored, -90, frames=10)
    jsonl, video = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    done = subprocess.run(
        edgeinfer(repo, str(phone), f"--jsonl={jsonl}", f"--annotate={video}"),
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "EDGEINFER_HOME": str(repo.root)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    labels = [r["label"] for r in records(jsonl) if r["type"] == "frame"]
    assert labels and set(labels) == {"espresso"}
    with av.open(str(video)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert first.shape == (320, 240, 3)
    below_band = np.abs(first[40:].astype(int) - upright[40:]).mean()
    assert below_band < 10  # the picture itself, upright (H.264 loses a little)


@pytest.mark.e2e
def test_a_run_that_processed_nothing_says_why(
    repo: ModelRepository, tmp_path: Path, photos: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    repo.build("mobilenet_v2")
    Image.open(photos["chelsea"]).convert("RGB").save(tmp_path / "cat.jpg")
    args = ["stream", str(tmp_path), "--duration", "1e-12", "--runtime", "onnxruntime", "--no-display"]
    assert main(args) == 1
    err = capsys.readouterr().err
    # the folder's first frame is due at once, so it may be captured before the run stops (and
    # then dropped, never processed): either way the message says why nothing was processed
    assert (
        "no frame was processed: no source delivered a frame within --duration 1e-12 s" in err
        or "no frame was processed: every captured frame was rejected, dropped or failed" in err
    ), err
