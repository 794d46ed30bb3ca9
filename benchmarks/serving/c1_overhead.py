"""Where the one-client overhead of ``edgeinfer serve`` goes, measured alternating with the engine.

    python benchmarks/serving/c1_overhead.py [serve flags, e.g. --instances 1 --threads 2]

Starts ``edgeinfer serve`` (HTTP only), loads the same model in this process, and alternates 8
blocks of 40 sequential ``/v1/models/mobilenet_v2/classify`` calls (a bare ``http.client``
keep-alive client, so the client's own cost is small) with 40 in-process ``Engine.classify``
calls on the same 32 sample JPEGs. Prints the server's own stage means (from its ``/metrics``
histograms) beside the in-process stage means, and the added p50.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import time

import numpy as np

PORT = 8766
MODEL = "mobilenet_v2"
STAGES = ("request", "prepare", "queue", "compute")


def main() -> None:
    env = dict(os.environ)
    os.environ["EDGEINFER_CORES"] = str(2 * (os.cpu_count() or 1))  # both sides loaded, one runs at a time
    from edgeinfer.bench.samples import load_samples
    from edgeinfer.engine import Engine

    images = [s.data for s in load_samples(32, seed=0, encoding="jpeg")]
    command = [sys.executable, "-m", "edgeinfer.cli.main", "serve", "--http-port", str(PORT), "--no-grpc",
               "--runtime", "onnxruntime", *sys.argv[1:]]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        conn = _wait_ready()
        engine = Engine.load(MODEL, runtime="onnxruntime", threads=2)
        for image in images:
            _classify(conn, image)
            engine.classify(image)
        served: list[float] = []
        local: list[float] = []
        prepare: list[float] = []
        infer: list[float] = []
        before = _metrics(conn)
        for block in range(8):
            for i in range(40):
                t0 = time.perf_counter_ns()
                _classify(conn, images[(block * 40 + i) % len(images)])
                served.append((time.perf_counter_ns() - t0) / 1e6)
            for i in range(40):
                t0 = time.perf_counter_ns()
                result = engine.classify(images[(block * 40 + i) % len(images)])
                local.append((time.perf_counter_ns() - t0) / 1e6)
                prepare.append((result.timings.decode_ns + result.timings.preprocess_ns) / 1e6)
                infer.append(result.timings.infer_ns / 1e6)
        after = _metrics(conn)
        engine.close()
    finally:
        server.terminate()
        server.wait()
    for stage in STAGES:
        name = f"edgeinfer_{stage}_seconds"
        count = after[(name, "count")] - before[(name, "count")]
        total = after[(name, "sum")] - before[(name, "sum")]
        print(f"server {stage:8s} mean {total / count * 1e3:.3f} ms")
    print(f"in process: decode+preprocess mean {np.mean(prepare):.3f} ms, infer mean {np.mean(infer):.3f} ms")
    print(
        f"client via HTTP p50 {np.median(served):.3f} ms (mean {np.mean(served):.3f}); in process p50 "
        f"{np.median(local):.3f} ms (mean {np.mean(local):.3f}); added p50 "
        f"{np.median(served) - np.median(local):.2f} ms"
    )


def _wait_ready() -> http.client.HTTPConnection:
    for _ in range(300):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", PORT)
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
