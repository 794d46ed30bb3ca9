"""Sources: PyAV video files, image folders, arrays; naming; frame checks; rate conversion."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeinfer.errors import InvalidInput, NotFound, UpstreamError
from edgeinfer.streams.capture import RateConverter
from edgeinfer.streams.config import CaptureOptions
from edgeinfer.streams.sources import (
    ArraySource,
    BadFrame,
    FolderSource,
    VideoSource,
    check_frame,
    open_source,
    redact_uri,
    stream_names,
)
from tests.streams.conftest import Clip, write_rotated

OPTIONS = CaptureOptions()


def read_all(source: VideoSource | FolderSource) -> list:
    source.open()
    frames = []
    while (raw := source.read()) is not None:
        frames.append(raw)
    source.close()
    return frames


def test_a_video_file_gives_every_frame_with_its_timestamp(coffee_clip: Clip) -> None:
    source = open_source(str(coffee_clip.path), OPTIONS)
    assert isinstance(source, VideoSource) and not source.live
    frames = read_all(source)
    assert len(frames) == coffee_clip.frames
    assert source.native_fps == pytest.approx(coffee_clip.fps)
    assert frames[0].rgb.shape == (240, 320, 3) and frames[0].rgb.dtype == np.uint8
    pts = [f.pts_s for f in frames]
    assert pts[0] == 0.0
    assert np.allclose(np.diff(pts), 1 / coffee_clip.fps, atol=1e-3)
    assert all(f.decode_ns > 0 for f in frames)


@pytest.mark.parametrize(("rotation", "suffix"), [(-90, ".mp4"), (90, ".mp4"), (180, ".mp4"), (-90, ".mkv")])
def test_a_rotated_video_gives_upright_frames(tmp_path: Path, rotation: int, suffix: str) -> None:
    upright = np.random.default_rng(0).integers(0, 256, (64, 48, 3), np.uint8)  # portrait, no symmetry
    stored = np.rot90(upright, -rotation // 90)  # what the camera wrote: the picture turned back
    path = write_rotated(tmp_path / f"rotated{rotation}{suffix}", np.ascontiguousarray(stored), rotation)
    source = open_source(str(path), OPTIONS)
    assert isinstance(source, VideoSource)
    frames = read_all(source)
    assert len(frames) == 3
    for frame in frames:
        assert frame.rgb.flags.c_contiguous
        assert np.array_equal(frame.rgb, upright)


def test_a_phone_video_tagged_minus_90_is_turned_a_quarter_clockwise(tmp_path: Path) -> None:
    """The direction, from the file itself: the MP4 track matrix of a -90 tag is QuickTime's
    ``rotate=90`` (0, 1, -1, 0: x' = -y, y' = x, a clockwise quarter turn on screen)."""
    arrow = np.zeros((48, 64, 3), np.uint8)
    arrow[:, 56:] = 255  # stored landscape, white band on the right
    path = write_rotated(tmp_path / "phone.mp4", arrow, -90, frames=1)
    data = path.read_bytes()
    tkhd = data.index(b"tkhd") + 4
    assert data[tkhd] == 0  # version 0: 32-bit times, the matrix 40 bytes in
    matrix_at = tkhd + 4 + 4 * 5 + 8 + 8
    assert struct.unpack(">4i", data[matrix_at : matrix_at + 16]) == (0, 65536, 0, -65536)
    (frame,) = read_all(VideoSource(str(path)))
    assert frame.rgb.shape == (64, 48, 3)
    assert frame.rgb[56:].min() == 255 and frame.rgb[:56].max() == 0  # right side turned to the bottom


def test_rewind_starts_the_file_again(coffee_clip: Clip) -> None:
    source = VideoSource(str(coffee_clip.path))
    source.open()
    first = source.read()
    while source.read() is not None:
        pass
    source.rewind()
    again = source.read()
    source.close()
    assert first is not None and again is not None
    assert again.pts_s == 0.0
    assert np.array_equal(first.rgb, again.rgb)


def test_a_folder_plays_its_images_in_name_order(tmp_path: Path, photos: dict[str, Path]) -> None:
    for i, name in enumerate(["coffee", "chelsea"]):
        Image.open(photos[name]).convert("RGB").save(tmp_path / f"{i:02d}-{name}.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source(str(tmp_path), CaptureOptions(fps=5))
    assert isinstance(source, FolderSource)
    frames = read_all(source)
    assert [f.pts_s for f in frames] == [0.0, 0.2]
    assert frames[0].rgb.shape == (400, 600, 3)  # coffee.png
    assert frames[1].rgb.shape == (300, 451, 3)  # chelsea.png


def test_a_corrupt_image_in_a_folder_is_one_bad_frame(tmp_path: Path, photos: dict[str, Path]) -> None:
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff this is not a jpeg")
    Image.open(photos["coffee"]).save(tmp_path / "b.png")
    source = FolderSource(tmp_path, fps=10)
    source.open()
    with pytest.raises(BadFrame, match=r"a\.jpg"):
        source.read()
    good = source.read()
    assert good is not None and good.rgb.shape == (400, 600, 3)


def test_sources_that_do_not_exist_or_cannot_be_decoded(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        open_source(str(tmp_path / "missing.mp4"), OPTIONS).open()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01 definitely not a video " * 100)
    with pytest.raises(InvalidInput, match=r"cannot be decoded|cannot open"):
        open_source(str(garbage), OPTIONS).open()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInput, match="no images"):
        open_source(str(empty), OPTIONS).open()
    with pytest.raises(NotFound, match="camera '/dev/video97' does not exist"):
        open_source("/dev/video97", OPTIONS).open()
    with pytest.raises(InvalidInput, match="unsupported scheme"):
        open_source("gopher://example/stream", OPTIONS)


def test_a_refused_network_stream_is_an_upstream_error() -> None:
    from tests.streams.conftest import free_port

    source = open_source(f"tcp://127.0.0.1:{free_port()}", CaptureOptions(stall_timeout_s=2))
    assert source.live
    with pytest.raises(UpstreamError):
        source.open()


def test_a_truncated_video_ends_early_or_is_reported(tmp_path: Path, cat_clip: Clip) -> None:
    data = cat_clip.path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: unreadable
    with pytest.raises(InvalidInput, match="cannot be decoded"):
        VideoSource(str(cut)).open()


def test_frame_checks_name_the_problem() -> None:
    ok = np.zeros((48, 64, 3), np.uint8)
    assert check_frame(ok, OPTIONS) is ok
    cases = [
        (np.zeros((48, 64), np.uint8), "height x width x 3"),
        (np.zeros((48, 64, 4), np.uint8), "height x width x 3"),
        (np.zeros((48, 64, 3), np.float32), "uint8"),
        (np.zeros((8, 640, 3), np.uint8), "at least 32 px"),
        (np.zeros((100, 100, 3), np.uint8), "over the limit"),
        ("not an array", "numpy array"),
    ]
    small = CaptureOptions(max_pixels=5000)
    for frame, message in cases:
        with pytest.raises(BadFrame, match=message):
            check_frame(frame, small)


@pytest.mark.parametrize("fps", [0, -5, float("nan"), float("inf"), 1001, "15", True])
def test_a_source_played_at_an_impossible_rate_is_refused_when_made(tmp_path: Path, fps: object) -> None:
    for make in (lambda: ArraySource([], fps=fps), lambda: FolderSource(tmp_path, fps=fps)):  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match=r"fps must be a number in \(0, 1000\]"):
            make()


def test_stream_names_are_short_unique_and_topic_safe() -> None:
    names = stream_names(
        [
            "/data/cam1.mp4",
            "/other/cam1.mp4",
            "rtsp://10.0.0.5:554/live/main",
            "/dev/video0",
            "0",
            "images/",
            "/x/weird+name#.mp4",
        ]
    )
    assert names == ["cam1", "cam1-2", "10.0.0.5_live_main", "video0", "video0-2", "images", "weird_name"]


def test_a_file_url_is_named_like_the_path_it_points_to() -> None:
    assert stream_names(["file:///media/shots/", "file:///media/cam2.mp4"]) == ["shots", "cam2"]


def test_a_file_url_is_percent_decoded(tmp_path: Path, coffee_clip: Clip) -> None:
    video = tmp_path / "my clips" / "cam 2 100%.mp4"
    video.parent.mkdir()
    video.write_bytes(coffee_clip.path.read_bytes())
    url = video.as_uri()
    assert url.endswith("/my%20clips/cam%202%20100%25.mp4")
    for uri in (url, url.replace("file://", "file://localhost", 1), url.replace("file", "FILE", 1)):
        source = open_source(uri, OPTIONS)
        assert isinstance(source, VideoSource) and source.uri == str(video)
        assert len(read_all(source)) == coffee_clip.frames
    folder = open_source(video.parent.as_uri(), OPTIONS)
    assert isinstance(folder, FolderSource) and folder.uri == str(video.parent)
    assert stream_names([url, video.parent.as_uri() + "/"]) == ["cam_2_100", "my_clips"]


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("file://nas/media/cam.mp4", "a file URL names a file on this machine .* not on host 'nas'"),
        ("file://", "the file URL names no file"),
        ("file:///media/cam%00.mp4", "NUL character"),
    ],
)
def test_a_file_url_for_another_host_or_no_file_is_refused(uri: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        open_source(uri, OPTIONS)


@pytest.mark.parametrize(
    ("native", "wanted", "expected"), [(30, 15, 15), (25, 15, 15), (15, 15, 15), (10, 15, 10)]
)
def test_rate_conversion_keeps_the_requested_rate(native: float, wanted: float, expected: int) -> None:
    rate = RateConverter(wanted, native)
    kept = sum(rate.keep(i / native) for i in range(int(native) * 4))
    assert kept == pytest.approx(expected * 4, abs=1)


def test_a_url_that_cannot_be_parsed_is_refused_and_still_named() -> None:
    with pytest.raises(InvalidInput, match=r"source 'rtsp://\[::1/x' is not a valid URL"):
        open_source("rtsp://[::1/x", CaptureOptions())
    assert stream_names(["rtsp://[::1/x", "rtsp://[::1/y"]) == ["stream", "stream-2"]


def test_passwords_are_redacted_wherever_a_source_is_shown() -> None:
    assert (
        redact_uri("rtsp://admin:s3cret@cam.local:554/live?x=1") == "rtsp://admin:***@cam.local:554/live?x=1"
    )
    assert redact_uri("rtsp://admin@cam.local/live") == "rtsp://admin@cam.local/live"  # no password
    assert redact_uri("media/cat.mp4") == "media/cat.mp4"
    source = open_source("RTSP://admin:s3cret@127.0.0.1:9/live", CaptureOptions())
    assert source.uri == "rtsp://admin:***@127.0.0.1:9/live"  # the scheme FFmpeg knows, no password
    with pytest.raises(InvalidInput, match=r"'ftp://u:\*\*\*@h/x': unsupported scheme 'ftp'") as refused:
        open_source("ftp://u:pw@h/x", CaptureOptions())
    assert "pw" not in str(refused.value)
