"""Where frames come from: video files and network streams (PyAV/FFmpeg), camera devices, image
folders, and in-memory arrays. Each source only reads and decodes; pacing, timestamping and
scheduling belong to the capture thread (``capture.py``).

A source's ``read`` returns the next :class:`RawFrame`, ``None`` at the end, raises
:class:`BadFrame` for one unusable picture (the stream goes on) and any other
:class:`EdgeInferError` when the stream cannot go on.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import numpy as np

from edgeinfer.errors import EdgeInferError, InvalidInput, NotFound, UpstreamError
from edgeinfer.imaging.decode import IMAGE_SUFFIXES, decode_image, image_files
from edgeinfer.streams.config import CaptureOptions
from edgeinfer.streams.messages import RawFrame

NETWORK_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt", "rtp"})
_MAX_CONSECUTIVE_DECODE_ERRORS = 25


class BadFrame(InvalidInput):
    """One picture that cannot be used (corrupt, wrong size or format); the stream continues."""


class Source(Protocol):
    """A stream of pictures. ``live`` sources (cameras, network) deliver in real time by
    themselves; the others are paced by their timestamps to behave like one."""

    uri: str
    live: bool

    @property
    def native_fps(self) -> float | None:
        """The rate the source was made at, if it says."""
        ...

    def open(self) -> None: ...

    def read(self) -> RawFrame | None: ...

    def rewind(self) -> None:
        """Start again from the first picture (for ``--loop``); live sources raise."""
        ...

    def close(self) -> None: ...


def check_frame(rgb: object, options: CaptureOptions) -> np.ndarray:
    """Return ``rgb`` if it is an HWC uint8 RGB picture within the size limits, else raise BadFrame."""
    if not isinstance(rgb, np.ndarray):
        raise BadFrame(f"a frame must be a numpy array, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise BadFrame(f"a frame must be height x width x 3 uint8 RGB, got shape {rgb.shape} {rgb.dtype}")
    height, width = rgb.shape[:2]
    if min(height, width) < options.min_side_px:
        raise BadFrame(f"frame is {width}x{height}: both sides must be at least {options.min_side_px} px")
    if height * width > options.max_pixels:
        raise BadFrame(f"frame is {width}x{height}, over the limit of {options.max_pixels} pixels")
    return rgb


class VideoSource:
    """A video file, network stream or camera device decoded by FFmpeg through PyAV."""

    def __init__(
        self,
        uri: str,
        *,
        live: bool = False,
        container_format: str | None = None,
        options: dict[str, str] | None = None,
        timeout_s: float = 5.0,
        decoder_threads: int = 1,
    ) -> None:
        self.uri = redact_uri(uri)  # what messages, events and the report say: no password
        self._open_uri = uri
        self._decoder_threads = decoder_threads
        self.live = live
        self._format = container_format
        self._options = dict(options or {})
        self._timeout_s = timeout_s
        self._container: Any = None
        self._stream: Any = None
        self._pending: Iterator[Any] = iter(())
        self._packets: Iterator[Any] = iter(())
        self._first_pts_s: float | None = None
        self._count = 0
        self._native_fps: float | None = None

    @property
    def native_fps(self) -> float | None:
        return self._native_fps

    def open(self) -> None:
        import av

        if "://" not in self.uri and not Path(self.uri).exists():
            what = "camera" if self._format == "v4l2" else "source"
            raise NotFound(f"{what} {self.uri!r} does not exist")
        try:
            container = av.open(
                self._open_uri,
                format=self._format,
                options=self._options,
                timeout=(self._timeout_s, self._timeout_s),
            )
        except av.FFmpegError as exc:
            raise _map_av_error(self.uri, "open", exc, self._open_uri) from exc
        if not container.streams.video:
            container.close()
            raise InvalidInput(f"source {self.uri!r} has no video stream")
        self._container = container
        self._stream = container.streams.video[0]
        self._stream.codec_context.thread_count = self._decoder_threads
        rate = self._stream.average_rate or self._stream.guessed_rate
        self._native_fps = float(rate) if rate else None
        self._packets = iter(container.demux(self._stream))
        self._pending = iter(())
        self._first_pts_s = None
        self._count = 0

    def read(self) -> RawFrame | None:
        import av

        started = time.perf_counter_ns()
        errors = 0
        while True:
            frame = next(self._pending, None)
            if frame is not None:
                rgb = upright(frame.to_ndarray(format="rgb24"), frame.rotation)
                return RawFrame(rgb, self._pts_s(frame), time.perf_counter_ns() - started)
            try:
                packet = next(self._packets, None)
                if packet is None:
                    return None
                self._pending = iter(packet.decode())
                errors = 0
            except (av.error.InvalidDataError, av.error.UndefinedError) as exc:
                errors += 1
                if errors > _MAX_CONSECUTIVE_DECODE_ERRORS:
                    raise InvalidInput(f"source {self.uri!r} cannot be decoded: {exc}") from exc
            except av.FFmpegError as exc:
                raise _map_av_error(self.uri, "read", exc, self._open_uri) from exc

    def rewind(self) -> None:
        if self.live:
            raise InvalidInput(f"{self.uri!r} is live and cannot loop")
        self.close()
        self.open()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _pts_s(self, frame: Any) -> float:
        self._count += 1
        when = frame.time
        if when is None:
            return (self._count - 1) / (self._native_fps or 30.0)
        if self._first_pts_s is None:
            self._first_pts_s = float(when)
        return float(when) - self._first_pts_s


def upright(rgb: np.ndarray, rotation_deg: float) -> np.ndarray:
    """``rgb`` turned the way its video's display matrix says it is meant to be seen, as images
    follow their EXIF orientation. ``rotation_deg`` is PyAV's ``VideoFrame.rotation``: the
    counterclockwise turn that shows the stored picture upright (a phone held upright records
    sideways pictures tagged -90: they are turned a quarter clockwise). Rounded to quarter turns.
    """
    quarter_turns = round(rotation_deg / 90) % 4
    if not quarter_turns:
        return rgb
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns))  # rot90 turns counterclockwise


class FolderSource:
    """The images of a folder, in name order, played at ``fps``."""

    live = False

    def __init__(self, folder: Path, fps: float) -> None:
        self.uri = str(folder)
        self._folder = folder
        self._fps = _checked_fps(fps, self.uri)
        self._files: list[Path] = []
        self._next = 0

    @property
    def native_fps(self) -> float | None:
        return self._fps

    def open(self) -> None:
        if not self._folder.is_dir():
            raise NotFound(f"source folder {self.uri!r} does not exist")
        self._files = image_files(self._folder)
        if not self._files:
            raise InvalidInput(
                f"source folder {self.uri!r} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        self._next = 0

    def read(self) -> RawFrame | None:
        if self._next >= len(self._files):
            return None
        index = self._next
        self._next += 1
        path = self._files[index]
        started = time.perf_counter_ns()
        try:
            rgb = decode_image(path)
        except EdgeInferError as exc:
            raise BadFrame(f"{path.name}: {exc}") from exc
        return RawFrame(rgb, index / self._fps, time.perf_counter_ns() - started)

    def rewind(self) -> None:
        self._next = 0

    def close(self) -> None:
        self._files = []


_END = object()  # an iterator's end: a None among the frames is a bad frame, not the end


def _checked_fps(fps: object, uri: str) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 1000:
        raise InvalidInput(f"{uri!r}: fps must be a number in (0, 1000], got {fps!r}")
    return float(fps)


class ArraySource:
    """Pictures an application already holds (numpy arrays), played at ``fps``.

    For programs that capture frames themselves and hand them to the pipeline; the frames are
    checked like any other (a wrong shape or dtype is rejected with a message).
    """

    live = False

    def __init__(self, frames: Iterable[object], fps: float, uri: str = "arrays") -> None:
        self.uri = uri
        self._frames = frames
        self._fps = _checked_fps(fps, uri)
        self._it: Iterator[object] = iter(())
        self._index = 0

    @property
    def native_fps(self) -> float | None:
        return self._fps

    def open(self) -> None:
        self._it = iter(self._frames)
        self._index = 0

    def read(self) -> RawFrame | None:
        item = next(self._it, _END)
        if item is _END:
            return None
        index = self._index
        self._index += 1
        return RawFrame(item, index / self._fps, 0)  # type: ignore[arg-type]  # checked by capture

    def rewind(self) -> None:
        if isinstance(self._frames, Iterator):
            raise InvalidInput(f"{self.uri!r} is a one-shot iterator and cannot loop; pass a list")
        self.open()

    def close(self) -> None:
        self._it = iter(())


class RefusedSource:
    """An argument :func:`open_source` refused (``ftp://...``): its stream fails with that error as
    it starts, so the run reports it like any other failed source (events, summary, exit code)."""

    live = False

    def __init__(self, uri: str, error: EdgeInferError) -> None:
        self.uri = uri
        self.error = error

    @property
    def native_fps(self) -> float | None:
        return None

    def open(self) -> None:
        raise self.error

    def read(self) -> RawFrame | None:
        return None

    def rewind(self) -> None:
        """Nothing to play."""

    def close(self) -> None:
        """Nothing was opened."""


def open_source(uri: str, options: CaptureOptions) -> Source:
    """The source for a command-line argument: URL, camera device, folder or video file.

    Only a malformed argument raises here; a source that does not exist or cannot be read is
    reported when its capture thread opens it, so the other streams still start.
    """
    try:
        scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
    except ValueError as exc:  # e.g. rtsp://[::1/x: an IPv6 host without its closing bracket
        raise InvalidInput(f"source {redact_uri(uri)!r} is not a valid URL: {exc}") from None
    if scheme in NETWORK_SCHEMES:
        uri = scheme + uri[uri.index("://") :]  # FFmpeg knows its protocols in lower case only
        net: dict[str, str] = {"analyzeduration": "1000000", "probesize": "1000000"}
        if scheme.startswith("rtsp"):
            net["rtsp_transport"] = "tcp"
        return VideoSource(
            uri,
            live=True,
            options=net,
            timeout_s=options.stall_timeout_s,
            decoder_threads=options.decoder_threads,
        )
    if scheme and scheme != "file":
        raise InvalidInput(
            f"source {redact_uri(uri)!r}: unsupported scheme {scheme!r} (use "
            f"{', '.join(sorted(NETWORK_SCHEMES))})"
        )
    if scheme == "file":
        uri = file_url_path(uri)
    if uri.isdigit() or uri.startswith("/dev/video"):
        device = f"/dev/video{uri}" if uri.isdigit() else uri
        cam: dict[str, str] = {"framerate": f"{options.fps:g}"} if options.fps else {}
        return VideoSource(
            device,
            live=True,
            container_format="v4l2",
            options=cam,
            timeout_s=options.stall_timeout_s,
            decoder_threads=options.decoder_threads,
        )
    path = Path(uri)
    if path.is_dir():
        return FolderSource(path, options.fps or options.folder_fps)
    return VideoSource(
        uri, live=False, timeout_s=options.stall_timeout_s, decoder_threads=options.decoder_threads
    )


def file_url_path(uri: str) -> str:
    """The local path a ``file://`` URL names, percent-decoded (``file:///media/cam%202.mp4`` is
    ``/media/cam 2.mp4``); InvalidInput for a URL naming another host, or no path at all."""
    parts = urlsplit(uri)
    if parts.netloc and parts.netloc.lower() != "localhost":
        raise InvalidInput(
            f"source {redact_uri(uri)!r}: a file URL names a file on this machine "
            f"(file:///path or file://localhost/path), not on host {parts.netloc!r}"
        )
    path = unquote(parts.path)
    if not path:
        raise InvalidInput(
            f"source {redact_uri(uri)!r}: the file URL names no file (file:///path/to/video.mp4)"
        )
    if "\x00" in path:
        raise InvalidInput(f"source {redact_uri(uri)!r} is not a file path: it holds a NUL character (%00)")
    return path


def stream_names(uris: Sequence[str]) -> list[str]:
    """A short, unique, MQTT-topic-safe name per source: file stem, folder, device or host."""
    names: list[str] = []
    for uri in uris:
        base = _base_name(uri)
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def _base_name(uri: str) -> str:
    try:
        return _name_of(uri)
    except ValueError:  # a malformed URL: open_source says what is wrong with it
        return "stream"


def _name_of(uri: str) -> str:
    if uri.lower().startswith("file://"):
        uri = unquote(urlsplit(uri).path)
    if "://" in uri:
        parts = urlsplit(uri)
        raw = f"{parts.hostname or 'stream'}{parts.path}".rstrip("/")
    elif uri.isdigit():
        raw = f"video{uri}"
    else:
        path = Path(uri.rstrip("/"))
        raw = path.stem if path.suffix else path.name
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("_.")
    return cleaned or "stream"


def redact_uri(uri: str) -> str:
    """``uri`` with its password replaced (``rtsp://admin:***@camera/live``): a camera's
    credentials must not reach the console, the events or the report."""
    scheme, sep, rest = uri.partition("://")
    netloc, slash, tail = rest.partition("/")
    user, at, host = netloc.rpartition("@")
    if not sep or not at or ":" not in user:
        return uri
    return f"{scheme}://{user.split(':', 1)[0]}:***@{host}{slash}{tail}"


def _map_av_error(uri: str, action: str, exc: Exception, secret: str | None = None) -> EdgeInferError:
    import av

    detail = getattr(exc, "strerror", None) or str(exc)
    if secret:
        detail = detail.replace(secret, uri)  # FFmpeg's messages may quote the URL it was given
    if isinstance(exc, av.error.FileNotFoundError):
        return NotFound(f"source {uri!r} does not exist ({detail})")
    if isinstance(exc, (av.error.ExitError, av.error.TimeoutError)):
        return UpstreamError(f"source {uri!r} stalled: no data within the timeout while trying to {action}")
    if isinstance(exc, (av.error.ConnectionRefusedError, av.error.ConnectionResetError, av.error.OSError)):
        return UpstreamError(f"source {uri!r}: cannot {action} ({detail})")
    if isinstance(exc, (av.error.HTTPServerError, av.error.HTTPTooManyRequestsError)):
        return UpstreamError(f"source {uri!r}: cannot {action} for now ({detail})")
    if isinstance(exc, av.error.InvalidDataError):
        return InvalidInput(f"source {uri!r} cannot be decoded: {detail}")
    return InvalidInput(f"source {uri!r}: cannot {action}: {detail}")
