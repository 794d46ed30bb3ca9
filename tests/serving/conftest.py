"""Fixtures for the server tests: the real ``edgeinfer serve`` process on free ports, the real model.

A server is ready when ``/v2/health/ready`` says so; tests never wait on a log line or a fixed sleep.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgeinfer.engine.engine import Engine

RUNTIME = "onnxruntime"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A running ``edgeinfer serve`` subprocess."""

    http_port: int
    grpc_port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)
        try:
            conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
            response = conn.getresponse()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            conn.close()

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                status, _, _ = self.request("GET", "/v2/health/ready")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)  # poll interval, not a wait for readiness
        raise TimeoutError(f"server not ready after {timeout_s} s:\n{self.log()}")

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    tmp: Path,
    *args: str,
    config: str = "",
    env: dict[str, str] | None = None,
    wait: bool = True,
) -> ServerProcess:
    """Start ``edgeinfer serve`` on free ports with ``args`` (and a TOML ``config`` if given)."""
    http_port, grpc_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "edgeinfer.cli.main", "serve",
        "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--runtime", RUNTIME,
        "--log-level", "warning", *args,
    ]  # fmt: skip
    if config:
        config_path = tmp / f"serve-{http_port}.toml"
        config_path.write_text(config)
        command += ["--config", str(config_path)]
    log_path = tmp / f"serve-{http_port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    server = ServerProcess(http_port, grpc_port, process, log_path)
    if wait:
        try:
            server.wait_ready()
        except BaseException:
            server.stop(5)
            raise
    return server


@pytest.fixture(scope="package")
def engine(edgeinfer_home: Path) -> Iterator[Engine]:
    """The in-process engine the server's answers are compared with (also builds the model once)."""
    with Engine.load("mobilenet_v2", runtime=RUNTIME, threads=1) as loaded:
        yield loaded


SHARED_CONFIG = """
[serve]
max_batch_size = 4
max_queue_delay_us = 1000
max_request_bytes = 8388608
max_image_pixels = 30000000
body_timeout_s = 1.5
default_timeout_ms = 10000
"""


@pytest.fixture(scope="package")
def server(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server shared by the protocol and bad-input tests."""
    running = start_server(tmp_path_factory.mktemp("server"), config=SHARED_CONFIG)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def images(photos: dict[str, Path]) -> dict[str, bytes]:
    wanted = ("chelsea", "coffee", "grace_hopper")
    missing = [name for name in wanted if name not in photos]
    if missing:
        pytest.skip(f"sample photos {missing} are not installed")
    return {name: photos[name].read_bytes() for name in wanted}


def b64(data: bytes) -> str:
    """``data`` as the base64 text a JSON BYTES element carries."""
    import base64

    return base64.b64encode(data).decode()
