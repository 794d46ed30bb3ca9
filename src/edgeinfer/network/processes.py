"""The real processes a comparison runs beside itself: ``edgeinfer serve`` and ``edgeinfer link``.

Each is started on a free port and waited for the way a client would: the server until
``/v2/health/ready`` answers 200, the link until it accepts a TCP connection. Both stop with
SIGTERM (then SIGKILL after a grace period). The server's ``/metrics`` is read to split a
request's time into its server-side stages.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from edgeinfer.errors import NotReady, UpstreamError
from edgeinfer.network.profiles import LinkProfile


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeinfer.cli.main", *args]


class ChildProcess:
    """A subprocess with its output in a log file; stops on exit from a ``with`` block."""

    def __init__(
        self, args: list[str], log_path: Path, env: dict[str, str] | None = None, cpus: set[int] | None = None
    ) -> None:
        self.args = args
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        pin = None if not cpus else (lambda: os.sched_setaffinity(0, cpus))
        self.process = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=pin,  # noqa: PLW1509 - only a system call between fork and exec
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def pin(self, cpus: set[int]) -> None:
        """Move every thread of the process onto ``cpus`` (Linux: one affinity per thread)."""
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                os.sched_setaffinity(int(task.name), cpus)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): its sockets stay open but nothing moves, a stalled link."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self, grace_s: float = 10.0) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return int(self.process.returncode)

    def kill(self) -> None:
        """Cut it at once (SIGKILL): every connection through it breaks."""
        if self.alive():
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ServerProcess(ChildProcess):
    """``edgeinfer serve`` (HTTP only) on a free port of 127.0.0.1."""

    def __init__(
        self,
        model: str,
        log_path: Path,
        *,
        runtime: str = "auto",
        precision: str | None = None,
        threads: int | None = None,
        port: int | None = None,
        extra: tuple[str, ...] = (),
        cpus: set[int] | None = None,
    ) -> None:
        self.port = port or free_port()
        args = [
            "serve",
            "--model",
            model,
            "--http-port",
            str(self.port),
            "--no-grpc",
            "--runtime",
            runtime,
            *extra,
        ]
        if precision:
            args += ["--precision", precision]
        if threads:
            args += ["--threads", str(threads)]
        super().__init__(_cli(*args), log_path, cpus=cpus)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise UpstreamError(f"the server exited with {self.process.returncode}: {self.log_tail()}")
            if http_status("127.0.0.1", self.port, "/v2/health/ready") == 200:
                return
            time.sleep(0.1)
        raise NotReady(f"the server on port {self.port} was not ready within {timeout_s:.0f} s")

    def metrics(self) -> dict[str, float]:
        """The server's counters and histogram sums, all models summed (Prometheus text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        totals: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name = line.split("{", 1)[0].split(" ", 1)[0]
                with contextlib.suppress(ValueError):
                    totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        return totals


class LinkProcess(ChildProcess):
    """``edgeinfer link`` from a free port of 127.0.0.1 to ``target`` with every figure explicit."""

    def __init__(
        self,
        profile: LinkProfile,
        target: tuple[str, int],
        log_path: Path,
        *,
        seed: int | None = None,
        port: int | None = None,
        cpus: set[int] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.profile = profile
        self.target = target
        args = [
            "link",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--target",
            f"{target[0]}:{target[1]}",
            "--rtt-ms",
            f"{profile.rtt_ms:g}",
            "--jitter-ms",
            f"{profile.jitter_ms:g}",
            "--loss",
            f"{profile.loss_pct:g}",
        ]
        if profile.up_mbps is not None:
            args += ["--up-mbps", f"{profile.up_mbps:g}"]
        if profile.down_mbps is not None:
            args += ["--down-mbps", f"{profile.down_mbps:g}"]
        if seed is not None:
            args += ["--seed", str(seed)]
        super().__init__(_cli(*args), log_path, cpus=cpus)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise UpstreamError(f"the link exited with {self.process.returncode}: {self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        raise NotReady(f"the link on port {self.port} did not accept within {timeout_s:.0f} s")


def http_status(host: str, port: int, path: str, timeout_s: float = 2.0) -> int | None:
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


@dataclass(frozen=True)
class ServerWork:
    """Mean server-side time per request over a window, from ``/metrics`` before and after."""

    requests: int
    request_ms: float | None
    prepare_ms: float | None
    queue_ms: float | None
    compute_ms: float | None
    cpu_ms: float

    @classmethod
    def between(cls, before: dict[str, float], after: dict[str, float]) -> ServerWork:
        def delta(name: str) -> float:
            return after.get(name, 0.0) - before.get(name, 0.0)

        def mean_ms(family: str) -> float | None:
            count = delta(f"{family}_count")
            return 1e3 * delta(f"{family}_sum") / count if count > 0 else None

        batches = delta("edgeinfer_batch_size_count")
        per_batch = mean_ms("edgeinfer_compute_seconds")
        samples = delta("edgeinfer_batch_size_sum")
        compute = None if per_batch is None or not samples else per_batch * batches / samples
        return cls(
            requests=int(delta("edgeinfer_request_seconds_count")),
            request_ms=mean_ms("edgeinfer_request_seconds"),
            prepare_ms=mean_ms("edgeinfer_prepare_seconds"),
            queue_ms=mean_ms("edgeinfer_queue_seconds"),
            compute_ms=compute,
            cpu_ms=1e3 * delta("process_cpu_seconds_total"),
        )
