"""Where the one-client overhead of ``edgeinfer serve`` goes, measured alternating with the engine.

    python benchmarks/serving/c1_overhead.py [--compare-fast-path] [--blocks N] [--calls N] [serve flags]

Starts ``edgeinfer serve`` (HTTP only), loads the same model in this process, and alternates 8
(``--blocks``) blocks of 40 (``--calls``) sequential ``/v1/models/mobilenet_v2/classify`` calls
(a bare ``http.client`` keep-alive client, so the client's own cost is small) with as many
in-process ``Engine.classify`` calls on the same 32 sample JPEGs (``--blocks 400 --calls 1``
alternates call by call). Prints the server's own stage means (from its ``/metrics`` histograms)
beside the in-process stage means, the server's CPU time per request beside the engine's, and the
added p50. ``--compare-fast-path`` also starts a second server with ``--no-idle-fast-path`` and
alternates it in the same blocks (an A/B of the idle fast path).
"""

from __future__ import annotations

import http.client
import os
import re
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
    call: Callable[[bytes], None]
    cpu_s: Callable[[], float]
    times_ms: list[float] = field(default_factory=list)
    cpu_used_s: float = 0.0


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    conn: http.client.HTTPConnection

    def arm(self) -> Arm:
        pid = self.process.pid
        return Arm(self.name, lambda image: _classify(self.conn, image), lambda: _process_cpu_s(pid))


def main() -> None:
    args = sys.argv[1:]
    compare = "--compare-fast-path" in args
    flags = [a for a in args if a != "--compare-fast-path"]
    blocks, calls = _take(flags, "--blocks", 8), _take(flags, "--calls", CALLS)
    env = dict(os.environ)  # the servers see the real cores
    sides = 3 if compare else 2  # every side loaded at once, only one runs at a time
    os.environ["EDGEINFER_CORES"] = str(sides * (os.cpu_count() or 1))
    from edgeinfer.bench.samples import load_samples
    from edgeinfer.engine import Engine

    images = [s.data for s in load_samples(32, seed=0, encoding="jpeg")]
    wanted = [("server", PORT, flags)]
    if compare:
        wanted.append(("server, no fast path", PORT + 1, [*flags, "--no-idle-fast-path"]))
    servers: list[Server] = []
    try:
        for name, port, extra in wanted:
            command = [sys.executable, "-m", "edgeinfer.cli.main", "serve", "--http-port", str(port),
                       "--no-grpc", "--runtime", "onnxruntime", *extra]  # fmt: skip
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            servers.append(Server(name, process, _wait_ready(port)))
        engine = Engine.load(MODEL, runtime="onnxruntime", threads=2)
        prepare: list[float] = []
        infer: list[float] = []

        def local(image: bytes) -> None:
            result = engine.classify(image)
            prepare.append((result.timings.decode_ns + result.timings.preprocess_ns) / 1e6)
            infer.append(result.timings.infer_ns / 1e6)

        arms = [Arm("in process", local, time.process_time), *(s.arm() for s in servers)]
        for arm in arms:  # warm every path on every image
            for image in images:
                arm.call(image)
        prepare.clear()
        infer.clear()
        before = [_metrics(s.conn) for s in servers]
        for block in range(blocks):
            for arm in arms if block % 2 == 0 else arms[::-1]:
                cpu0 = arm.cpu_s()
                for i in range(calls):
                    t0 = time.perf_counter_ns()
                    arm.call(images[(block * calls + i) % len(images)])
                    arm.times_ms.append((time.perf_counter_ns() - t0) / 1e6)
                arm.cpu_used_s += arm.cpu_s() - cpu0
        after = [_metrics(s.conn) for s in servers]
        engine.close()
    finally:
        for server in servers:
            server.process.terminate()
            server.process.wait()
    _report(servers, before, after, arms, stages=(prepare, infer))


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
        added = "" if arm is arms[0] else f", added p50 {p50 - local_p50:+.2f} ms"
        print(f"{arm.name:22s} p50 {p50:.3f} ms, mean {np.mean(arm.times_ms):.3f} ms, "
              f"CPU {arm.cpu_used_s / calls * 1e3:.2f} ms per call{added}")  # fmt: skip


def _take(flags: list[str], name: str, default: int) -> int:
    """Remove ``name N`` from ``flags`` (the rest go to the server) and return N."""
    if name not in flags:
        return default
    at = flags.index(name)
    value = int(flags[at + 1])
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
