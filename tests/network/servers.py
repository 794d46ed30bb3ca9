"""Real TCP servers for the link tests: echo, sink (records arrival times) and source (sends N bytes).

Each runs on its own thread with blocking sockets, so it does not share an event loop with the
proxy under test. Times are ``time.monotonic_ns()``, comparable with the test's own clock.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def connect(address: tuple[str, int], timeout_s: float = 10.0) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, nbytes: int) -> bytes:
    parts, got = [], 0
    while got < nbytes:
        chunk = sock.recv(min(65536, nbytes - got))
        if not chunk:
            raise ConnectionError(f"connection closed after {got} of {nbytes} bytes")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class _ThreadedServer:
    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self._sock.getsockname()[:2]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve_quietly, args=(conn,), daemon=True).start()

    def _serve_quietly(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self.serve(conn)

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._sock.close()


class EchoServer(_ThreadedServer):
    def serve(self, conn: socket.socket) -> None:
        while data := conn.recv(65536):
            conn.sendall(data)


@dataclass
class Arrivals:
    """When each chunk of one connection arrived at the sink."""

    times_ns: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def total(self) -> int:
        return sum(self.sizes)


class SinkServer(_ThreadedServer):
    """Reads until EOF, recording arrivals, then replies b"ok"."""

    def __init__(self) -> None:
        self.arrivals: list[Arrivals] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        record = Arrivals()
        while data := conn.recv(65536):
            if not record.times_ns:
                self.arrivals.append(record)  # connections that send nothing (port probes) are not kept
            record.times_ns.append(time.monotonic_ns())
            record.sizes.append(len(data))
        record.done.set()
        conn.sendall(b"ok")


class SourceServer(_ThreadedServer):
    """Reads an ASCII byte count and a newline, sends that many random bytes, closes."""

    def __init__(self, max_bytes: int = 4_000_000) -> None:
        self._payload = os.urandom(max_bytes)  # made up front: not inside a timed transfer
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        header = b""
        while not header.endswith(b"\n"):
            header += conn.recv(1)
        conn.sendall(memoryview(self._payload)[: int(header)])


@contextlib.contextmanager
def link_process(
    target: tuple[str, int], *args: str
) -> Iterator[tuple[subprocess.Popen[str], tuple[str, int]]]:
    """Run the real ``edgeinfer link`` process; yield it and its address once it accepts."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "edgeinfer.cli.main",
        "link",
        "--listen",
        f"127.0.0.1:{port}",
        "--target",
        f"{target[0]}:{target[1]}",
        *args,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(("127.0.0.1", port), proc)
        yield proc, ("127.0.0.1", port)
    finally:
        if proc.poll() is None:
            proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for_port(address: tuple[str, int], proc: subprocess.Popen[str], timeout_s: float = 20.0) -> None:
    """Poll until something accepts on ``address``; fail with the process's output if it died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise RuntimeError(f"process exited with {proc.returncode}: {err[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(address, timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing accepted on {address} within {timeout_s} s")


REPO_ROOT = Path(__file__).resolve().parents[2]


class ScriptedCloud(_ThreadedServer):
    """A broken "cloud": answers health checks, and inference requests the way ``behaviour`` says.

    ``garbage``: bytes that are not HTTP; ``bad-json``: 200 with a body that does not parse;
    ``silent``: never answers; ``close``: hangs up after reading the request; ``slow``: a
    well-formed answer after ``delay_s``; ``http10``: health checks answered as an HTTP/1.0
    server does (no ``Connection`` header, the connection closed after the answer).
    """

    def __init__(self, behaviour: str, delay_s: float = 2.0) -> None:
        self.behaviour = behaviour
        self.delay_s = delay_s
        self.requests = 0
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        while True:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = reader.readline()
                if not line:
                    return
                head += line
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)
            if head.startswith(b"GET") and self.behaviour == "http10":
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                return
            if head.startswith(b"GET"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                continue
            self.requests += 1
            if not self._answer(conn):
                return

    def _answer(self, conn: socket.socket) -> bool:
        if self.behaviour == "garbage":
            conn.sendall(b"SURPRISE, NOT HTTP\r\n\r\n")
            return False
        if self.behaviour == "bad-json":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{oops")
            return True
        if self.behaviour == "silent":
            time.sleep(30)
            return False
        if self.behaviour == "close":
            return False
        time.sleep(self.delay_s)
        output = b'{"name":"probabilities","datatype":"FP32","shape":[1,2],"data":[0.5,0.5]}'
        body = b'{"model_name":"m","outputs":[' + output + b"]}"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        return True
