"""Stream fixtures: videos made from real photos (pans and zooms, encoded with PyAV), a real
Mosquitto broker started on a free port, and an MQTT subscriber that keeps every message."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeinfer.streams.clips import Motion
from edgeinfer.streams.clips import make_clip as make_video

av = pytest.importorskip("av")


@dataclass(frozen=True)
class Clip:
    """A test video: where it is, what is in it, how it was made."""

    path: Path
    photo: str
    frames: int
    fps: int
    size: tuple[int, int]


def make_clip(
    folder: Path,
    photos: dict[str, Path],
    photo: str,
    *,
    frames: int = 24,
    fps: int = 30,
    size: tuple[int, int] = (320, 240),
    motion: Motion = "pan",
    suffix: str = ".mp4",
) -> Clip:
    path = folder / f"{photo}-{motion}-{fps}fps-{frames}{suffix}"
    make_video(photos[photo], path, frames=frames, fps=fps, size=size, motion=motion)
    return Clip(path, photo, frames, fps, size)


def write_rotated(path: Path, stored: np.ndarray, rotation_deg: int, frames: int = 3) -> Path:
    """A lossless video of ``stored`` whose display matrix says to turn it ``rotation_deg``
    counterclockwise (FFmpeg's ``rotation``: -90 is what a phone held upright writes)."""
    codec = "ffv1" if path.suffix == ".mkv" else "libx264rgb"
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg has no {codec} encoder")
    container: Any = av.open(str(path), mode="w")
    stream = container.add_stream(codec, rate=10)
    stream.height, stream.width = stored.shape[:2]
    stream.pix_fmt = "bgr0" if codec == "ffv1" else "rgb24"
    if codec == "libx264rgb":
        stream.options = {"crf": "0", "preset": "ultrafast"}
    stream.set_display_rotation(rotation_deg)
    for _ in range(frames):
        for packet in stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    return path


@pytest.fixture(scope="session")
def clips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def coffee_clip(clips_dir: Path, photos: dict[str, Path]) -> Clip:
    return make_clip(clips_dir, photos, "coffee", motion="pan")


@pytest.fixture(scope="session")
def cat_clip(clips_dir: Path, photos: dict[str, Path]) -> Clip:
    return make_clip(clips_dir, photos, "chelsea", motion="zoom")


# -- the broker -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class Broker:
    """A real Mosquitto on 127.0.0.1:``port``, which a test can stop and start again."""

    def __init__(self, folder: Path) -> None:
        exe = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if exe is None:
            pytest.skip("needs Debian's mosquitto (apt-get install -y mosquitto)")
        self.exe = exe
        self.port = free_port()
        self.config = folder / "mosquitto.conf"
        self.allow_anonymous(True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}/edgeinfer-test"

    def allow_anonymous(self, allowed: bool) -> None:
        """Whether clients without a known user may connect (takes effect at the next start)."""
        flag = "true" if allowed else "false"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous {flag}\npersistence false\n")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_listening(self.port)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.kill()


@pytest.fixture
def broker_down(tmp_path: Path) -> Iterator[Broker]:
    """A broker configured on a free port but not started (the test starts it when it wants)."""
    b = Broker(tmp_path)
    yield b
    b.kill()


@dataclass
class Subscriber:
    """Keeps every message published under ``prefix/#`` (QoS 1), decoded from JSON."""

    port: int
    prefix: str
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    bad: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{self.port}")
        client.on_connect = lambda c, *_: c.subscribe(f"{self.prefix}/#", qos=1)
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_message
        client.reconnect_delay_set(1, 1)
        client.connect_async("127.0.0.1", self.port)
        client.loop_start()
        self._client = client
        if not self._subscribed.wait(10):
            raise TimeoutError("the test subscriber could not subscribe")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            payload = json.loads(message.payload)
        except ValueError:
            with self._lock:
                self.bad.append(message.payload)
            return
        with self._lock:
            self.messages.append((message.topic, payload))

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    break
            time.sleep(0.02)
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def subscriber(broker: Broker) -> Iterator[Subscriber]:
    sub = Subscriber(broker.port, "edgeinfer-test")
    yield sub
    sub.close()
