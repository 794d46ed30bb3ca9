"""Where the one-client overhead of ``edgeinfer serve`` goes, measured alternating with the engine.

    python benchmarks/serving/c1_overhead.py [--blocks N] [--calls N] [--closed-loop] [--raw-client]
        [--compare-fast-path] [--baseline-src DIR [--baseline-first]] [serve flags]

Starts ``edgeinfer serve`` (HTTP only), loads the same model in this process, and runs 8
(``--blocks``) blocks of 40 (``--calls``) sequential ``/v1/models/mobilenet_v2/classify`` calls
per side on the same 32 sample JPEGs, the sides in a fresh seeded order every block
(``--blocks 400 --calls 1`` alternates call by call: every call then follows ~10 ms of the other
sides' work). ``--closed-loop`` makes one unrecorded call before each block, so every recorded
call follows the same side's previous answer at once, as a concurrency-1 client's does.

Clients: a bare ``http.client`` keep-alive connection, or with ``--raw-client`` one ``sendall`` of
the request and a minimal read of the status, headers and body (as lean as a C client such as
Triton's perf_analyzer; ``http.client`` parses headers with the email package).

Prints the server's own stage means (from its ``/metrics`` histograms) beside the in-process stage
means, each side's CPU time per call, and the added p50, also as the median of the per-block
differences ("paired"). ``--compare-fast-path`` also starts a server with ``--no-idle-fast-path``;
``--baseline-src DIR`` one running the code of another checkout (``DIR/src``, e.g. a ``git
worktree`` of the previous commit) and prints the paired difference. On the development VM the
server started first measured ~0.2 ms slower than the one started second, whatever their code, so
an A/B needs both orders: ``--baseline-first`` starts the baseline first.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

PORT = 8766
MODEL = "mobilenet_v2"
STAGES = ("request", "prepare", "queue", "compute")
CALLS = 40


@dataclass
class Arm:
    """One way of classifying an image, timed block by block."""

    name: str
    call: Callable[[bytes], object]
    cpu_s: Callable[[], float]
    times_ms: list[float] = field(default_factory=list)
    block_ms: list[float] = field(default_factory=list)  # each block's median, for paired differences
    cpu_used_s: float = 0.0


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    conn: http.client.HTTPConnection

    raw: RawClient | None = None

    def arm(self) -> Arm:
        pid = self.process.pid
        if self.raw is not None:
            raw = self.raw
            return Arm(self.name, raw.classify, lambda: _process_cpu_s(pid))
        return Arm(self.name, lambda image: _classify(self.conn, image), lambda: _process_cpu_s(pid))


class RawClient:
    """The leanest HTTP/1.1 keep-alive client: one ``sendall``, then the status, headers and body."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = (f"POST /v1/models/{MODEL}/classify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Type: image/jpeg\r\nContent-Length: ").encode()  # fmt: skip

    def classify(self, image: bytes) -> bytes:
        self.sock.sendall(b"%s%d\r\n\r\n%s" % (self.head, len(image), image))
        data = b""
        while b"\r\n\r\n" not in data:
            data += self._recv()
        head, _, body = data.partition(b"\r\n\r\n")
        match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if not head.startswith(b"HTTP/1.1 200") or match is None:
            raise SystemExit(f"classify answered {head[:40]!r}")
        while len(body) < int(match.group(1)):
            body += self._recv()
        return body

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise SystemExit("the server closed the connection")
        return chunk


def main() -> None:
    args = sys.argv[1:]
    compare = "--compare-fast-path" in args
    raw = "--raw-client" in args
    closed_loop = "--closed-loop" in args
    baseline_first = "--baseline-first" in args
    switches = ("--compare-fast-path", "--raw-client", "--closed-loop", "--baseline-first")
    flags = [a for a in args if a not in switches]
    baseline = _take_text(flags, "--baseline-src")
    blocks, calls = _take(flags, "--blocks", 8), _take(flags, "--calls", CALLS)
    env = dict(os.environ)  # the servers see the real cores
    sides = 2 + compare + (baseline is not None)  # every side loaded at once, one runs at a time
    os.environ["EDGEINFER_CORES"] = str(sides * (os.cpu_count() or 1))
    from edgeinfer.bench.samples import load_samples
    from edgeinfer.engine import Engine

    images = [s.data for s in load_samples(32, seed=0, encoding="jpeg")]
    wanted = [("server", PORT, flags, env)]
    if compare:
        wanted.append(("server, no fast path", PORT + 1, [*flags, "--no-idle-fast-path"], env))
    if baseline is not None:
        wanted.append(("server, baseline", PORT + 2, flags, {**env, "PYTHONPATH": f"{baseline}/src"}))
    servers: list[Server] = []
    if baseline_first:  # the server started first measured ~0.2 ms slower here: swap to cancel it
        wanted.reverse()
    try:
        for name, port, extra, server_env in wanted:
            servers.append(_start_server(name, port, extra, server_env, raw))
        engine = Engine.load(MODEL, runtime="onnxruntime", threads=2)
        prepare: list[float] = []
        infer: list[float] = []

        def local(image: bytes) -> None:
            result = engine.classify(image)
            prepare.append((result.timings.decode_ns + result.timings.preprocess_ns) / 1e6)
            infer.append(result.timings.infer_ns / 1e6)

        if baseline_first:
            servers.reverse()
        arms = [Arm("in process", local, time.process_time), *(s.arm() for s in servers)]
        for arm in arms:  # warm every path on every image
            for image in images:
                arm.call(image)
        prepare.clear()
        infer.clear()
        before = [_metrics(s.conn) for s in servers]
        _run_blocks(arms, images, blocks, calls, closed_loop)
        after = [_metrics(s.conn) for s in servers]
        engine.close()
    finally:
        for server in servers:
            server.process.terminate()
            server.process.wait()
    _report(servers, before, after, arms, stages=(prepare, infer))


def _start_server(name: str, port: int, flags: list[str], env: dict[str, str], raw: bool) -> Server:
    command = [sys.executable, "-m", "edgeinfer.cli.main", "serve", "--http-port", str(port),
               "--no-grpc", "--runtime", "onnxruntime", *flags]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return Server(name, process, _wait_ready(port), RawClient(port) if raw else None)


def _run_blocks(arms: list[Arm], images: list[bytes], blocks: int, calls: int, closed_loop: bool) -> None:
    rng = np.random.default_rng(0)
    for block in range(blocks):  # a fresh seeded order each block: no arm always follows another
        for arm in [arms[i] for i in rng.permutation(len(arms))]:
            if closed_loop:  # the first call follows another arm's: not a closed-loop call
                arm.call(images[(block * calls - 1) % len(images)])
            cpu0 = arm.cpu_s()
            for i in range(calls):
                t0 = time.perf_counter_ns()
                arm.call(images[(block * calls + i) % len(images)])
                arm.times_ms.append((time.perf_counter_ns() - t0) / 1e6)
            arm.cpu_used_s += arm.cpu_s() - cpu0
            arm.block_ms.append(float(np.median(arm.times_ms[-calls:])))


def _report(servers: list[Server], before: list[dict[tuple[str, str], float]],
            after: list[dict[tuple[str, str], float]], arms: list[Arm], *,
            stages: tuple[list[float], list[float]]) -> None:  # fmt: skip
    prepare, infer = stages
    for server, b, a in zip(servers, before, after, strict=True):
        means = []
        for stage in STAGES:
            name = f"edgeinfer_{stage}_seconds"
            count = a[(name, "count")] - b[(name, "count")]
            means.append(f"{stage} {(a[(name, 'sum')] - b[(name, 'sum')]) / max(1, count) * 1e3:.3f}")
        print(f"{server.name}: stage means ms: {', '.join(means)}")
    print(f"in process: decode+preprocess mean {np.mean(prepare):.3f} ms, infer mean {np.mean(infer):.3f} ms")
    local_p50 = float(np.median(arms[0].times_ms))
    for arm in arms:
        p50 = float(np.median(arm.times_ms))
        calls = len(arm.times_ms)
        paired = np.median(np.subtract(arm.block_ms, arms[0].block_ms))
        added = "" if arm is arms[0] else f", added p50 {p50 - local_p50:+.2f} ms (paired {paired:+.2f})"
        print(f"{arm.name:22s} p50 {p50:.3f} ms, mean {np.mean(arm.times_ms):.3f} ms, "
              f"CPU {arm.cpu_used_s / calls * 1e3:.2f} ms per call{added}")  # fmt: skip
    baseline = [arm for arm in arms if arm.name == "server, baseline"]
    if baseline:
        diff = np.subtract(arms[1].block_ms, baseline[0].block_ms)
        print(
            f"server - baseline, paired by block: median {np.median(diff):+.3f} ms, "
            f"mean {np.mean(diff):+.3f} ms, faster in {np.mean(diff < 0):.0%} of {len(diff)} blocks"
        )


def _take(flags: list[str], name: str, default: int) -> int:
    """Remove ``name N`` from ``flags`` (the rest go to the server) and return N."""
    if name not in flags:
        return default
    at = flags.index(name)
    value = int(flags[at + 1])
    del flags[at : at + 2]
    return value


def _take_text(flags: list[str], name: str) -> str | None:
    """Remove ``name VALUE`` from ``flags`` and return VALUE (None when absent)."""
    if name not in flags:
        return None
    at = flags.index(name)
    value = flags[at + 1]
    del flags[at : at + 2]
    return value


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_ready(port: int) -> http.client.HTTPConnection:
    for _ in range(300):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.request("GET", "/v2/health/ready")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return conn
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def _classify(conn: http.client.HTTPConnection, image: bytes) -> None:
    conn.request("POST", f"/v1/models/{MODEL}/classify", body=image, headers={"Content-Type": "image/jpeg"})
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise SystemExit(f"classify answered {response.status}")


def _metrics(conn: http.client.HTTPConnection) -> dict[tuple[str, str], float]:
    conn.close()  # a fresh connection: the raw client's runs leave this one idle past keep-alive
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    found: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        match = re.match(r"(edgeinfer_\w+_seconds)_(sum|count)\{.*\} (\S+)", line)
        if match:
            key = (match.group(1), match.group(2))
            found[key] = found.get(key, 0.0) + float(match.group(3))
    return found


if __name__ == "__main__":
    main()
