"""``edgeinfer link --check``: measure what the emulated link really does on this machine.

For each profile a fresh ``edgeinfer link`` process is started in front of small local servers
(an echo, a sink and a source on threads of this process), and the round-trip time of small
messages and the upload and download rates of bulk transfers are measured from outside, with the
profile's jitter switched off so that each figure has one right answer. Rates are read from the
time of the last byte: a transfer of ``n`` bytes up ends 1.5 RTT + n / rate after the client
starts (the emulated handshake, the bytes, the last one-way trip); down, 2 RTT + n / rate after
the request. A busy machine only makes things late, so the best of the repeats is kept, and the
RTT is read at its lower quartile minus the loopback round trip measured without the link.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edgeinfer.network.processes import LinkProcess
from edgeinfer.network.profiles import LinkProfile

TRANSFER_S = 0.6  # each bulk transfer lasts about this long at the profile's rate
# a transfer no bigger than this whatever the rate: past loopback's and the proxy's own speed the
# figure measures them, not the profile, and a 10 Gb/s profile would otherwise allocate 750 MB
MAX_TRANSFER_BYTES = 64 << 20
REPEATS = 2


@dataclass(frozen=True)
class LinkCheck:
    """Target and measured figures of one profile; errors are relative (0.02 = 2 % off)."""

    profile: str
    rtt_ms: float
    measured_rtt_ms: float
    up_mbps: float | None
    measured_up_mbps: float | None
    down_mbps: float | None
    measured_down_mbps: float | None

    def errors(self) -> dict[str, float]:
        pairs = {"rtt": (self.rtt_ms, self.measured_rtt_ms), "up": (self.up_mbps, self.measured_up_mbps),
                 "down": (self.down_mbps, self.measured_down_mbps)}  # fmt: skip
        return {k: m / t - 1 for k, (t, m) in pairs.items() if t and m is not None}


class _Servers:
    """Echo, sink (answers ``ok`` at EOF, noting when the last byte came) and source on threads."""

    def __init__(self) -> None:
        self.last_byte_ns = 0
        self._payload = b""
        self.echo = self._serve(self._echo)
        self.sink = self._serve(self._sink)
        self.source = self._serve(self._source)

    def _serve(self, handler: Callable[[socket.socket], None]) -> socket.socket:
        listener = socket.create_server(("127.0.0.1", 0))

        def accept() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                threading.Thread(target=self._quietly, args=(handler, conn), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        return listener

    @staticmethod
    def _quietly(handler: Callable[[socket.socket], None], conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            handler(conn)

    def _echo(self, conn: socket.socket) -> None:
        while data := conn.recv(65536):
            conn.sendall(data)

    def _sink(self, conn: socket.socket) -> None:
        while conn.recv(65536):
            self.last_byte_ns = time.monotonic_ns()
        conn.sendall(b"ok")

    def _source(self, conn: socket.socket) -> None:
        header = b""
        while not header.endswith(b"\n"):
            header += conn.recv(1)
        size = int(header)
        if len(self._payload) < size:  # made before the clock matters: the next repeat reuses it
            self._payload = os.urandom(size)
        conn.sendall(memoryview(self._payload)[:size])

    @staticmethod
    def address(listener: socket.socket) -> tuple[str, int]:
        host, port = listener.getsockname()[:2]
        return str(host), int(port)

    def close(self) -> None:
        for listener in (self.echo, self.sink, self.source):
            listener.close()


def check_profiles(profiles: list[LinkProfile], pings: int = 20) -> list[LinkCheck]:
    servers = _Servers()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return [
                _check(replace(p, jitter_ms=0.0, loss_pct=0.0), servers, Path(tmp), pings) for p in profiles
            ]
    finally:
        servers.close()


def _check(profile: LinkProfile, servers: _Servers, tmp: Path, pings: int) -> LinkCheck:
    baseline = statistics.median(_pings(servers.address(servers.echo), 10))
    with LinkProcess(profile, servers.address(servers.echo), tmp / "echo.log") as link:
        link.wait_ready()
        rtts = _pings(("127.0.0.1", link.port), pings)
    rtt = statistics.quantiles(rtts, n=4, method="inclusive")[0] - baseline
    up = down = None
    rtt_s = profile.rtt_ms / 1e3
    if profile.up_bytes_per_s is not None:
        size = min(int(profile.up_bytes_per_s * TRANSFER_S), MAX_TRANSFER_BYTES)
        with LinkProcess(profile, servers.address(servers.sink), tmp / "sink.log") as link:
            link.wait_ready()
            up = max(_upload(("127.0.0.1", link.port), size, servers, rtt_s) for _ in range(REPEATS))
    if profile.down_bytes_per_s is not None:
        size = min(int(profile.down_bytes_per_s * TRANSFER_S), MAX_TRANSFER_BYTES)
        with LinkProcess(profile, servers.address(servers.source), tmp / "source.log") as link:
            link.wait_ready()
            down = max(_download(("127.0.0.1", link.port), size, rtt_s) for _ in range(REPEATS))
    return LinkCheck(profile.name, profile.rtt_ms, rtt, profile.up_mbps, up, profile.down_mbps, down)


def _connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exactly(sock: socket.socket, nbytes: int) -> None:
    got = 0
    while got < nbytes:
        chunk = sock.recv(min(1 << 20, nbytes - got))
        if not chunk:
            raise ConnectionError(f"closed after {got} of {nbytes} bytes")
        got += len(chunk)


_random: bytes = b""


def _random_bytes(size: int) -> memoryview:
    global _random
    if len(_random) < size:
        _random = os.urandom(size)
    return memoryview(_random)[:size]


def _pings(address: tuple[str, int], count: int) -> list[float]:
    with _connect(address) as sock:
        sock.sendall(b"w" * 32)
        _recv_exactly(sock, 32)
        rtts = []
        for _ in range(count):
            time.sleep(0.005)
            start = time.perf_counter_ns()
            sock.sendall(b"p" * 32)
            _recv_exactly(sock, 32)
            rtts.append((time.perf_counter_ns() - start) / 1e6)
    return rtts


def _upload(address: tuple[str, int], size: int, servers: _Servers, rtt_s: float) -> float:
    payload = _random_bytes(size)  # made before the clock starts, once for every repeat
    start = time.monotonic_ns()
    with _connect(address) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        _recv_exactly(sock, 2)
    return size * 8 / ((servers.last_byte_ns - start) / 1e9 - 1.5 * rtt_s) / 1e6


def _download(address: tuple[str, int], size: int, rtt_s: float) -> float:
    with _connect(address) as sock:
        start = time.monotonic_ns()
        sock.sendall(f"{size}\n".encode())
        _recv_exactly(sock, size)
        elapsed_s = (time.monotonic_ns() - start) / 1e9
    return size * 8 / (elapsed_s - 2 * rtt_s) / 1e6
