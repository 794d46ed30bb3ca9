"""Measure the server against its targets, all in one run on this machine (ratios, not absolutes).

1. In process (no server running): the engine's end-to-end latency on the JPEG samples one at a time
   (decode, preprocess, infer, postprocess) and its offline throughput (classify_batch of 8).
2. ``edgeinfer serve`` + ``edgeinfer loadgen`` over HTTP (v2 infer, JPEG decoded server-side):
   concurrency 1 and 16; gRPC at 16; then Poisson arrivals at 3x the measured capacity with a
   deadline, to see admitted p99, how fast the excess is refused and whether RSS stays flat.
3. Optionally (``--wrk``) the /v1 classify route under wrk at 1 and 16 connections.
4. Optionally (``--fastapi``) a plain FastAPI endpoint on the same engine (``def`` route: FastAPI's
   thread pool), the common way to serve this, measured with the same load generator.

    python benchmarks/serving/run_targets.py --duration 10 --wrk --fastapi --out /tmp/serving-bench

Prints a markdown summary and writes summary.json plus each loadgen report under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "mobilenet_v2"
RUNTIME = "onnxruntime"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def in_process(duration_s: float) -> dict[str, float]:
    from edgeinfer.engine.engine import Engine
    from edgeinfer.serving.loadgen.workload import photo_samples

    samples = [s.data for s in photo_samples()]
    with Engine.load(MODEL, runtime=RUNTIME) as engine:
        for data in samples * 3:
            engine.classify(data)
        latencies = []
        end = time.perf_counter_ns() + int(duration_s * 1e9)
        i = 0
        while time.perf_counter_ns() < end:
            t0 = time.perf_counter_ns()
            engine.classify(samples[i % len(samples)], top_k=5)
            latencies.append(time.perf_counter_ns() - t0)
            i += 1
        offline = {}
        for size in (1, 2, 8):
            batch = (samples * 8)[:size]
            engine.classify_batch(batch)
            images = 0
            t0 = time.perf_counter_ns()
            end = t0 + int(duration_s / 3 * 1e9)
            while time.perf_counter_ns() < end:
                engine.classify_batch(batch, top_k=5)
                images += len(batch)
            offline[size] = images / ((time.perf_counter_ns() - t0) / 1e9)
    ms = np.array(latencies) / 1e6
    return {
        "single_p50_ms": round(float(np.percentile(ms, 50)), 2),
        "single_p90_ms": round(float(np.percentile(ms, 90)), 2),
        "single_p99_ms": round(float(np.percentile(ms, 99)), 2),
        **{f"offline_b{size}_per_s": round(value, 1) for size, value in offline.items()},
        "offline_best_per_s": round(max(offline.values()), 1),
    }


def overhead_abab(port: int, rounds: int, slice_s: float) -> dict[str, Any]:
    """Server (v2 infer, one client) against in-process classify, in alternating slices.

    The machine is shared, so each round measures both within a few seconds and the added latency
    is the median of the per-round differences of medians.
    """
    import asyncio

    from edgeinfer.engine.engine import Engine
    from edgeinfer.serving.loadgen.clients import HttpClient, Target
    from edgeinfer.serving.loadgen.workload import photo_samples

    samples = photo_samples()
    target = Target("http", "127.0.0.1", port, MODEL)
    rows = []
    with Engine.load(MODEL, runtime=RUNTIME) as engine:

        async def server_slice(client: HttpClient) -> list[int]:
            out, i = [], 0
            end = time.perf_counter_ns() + int(slice_s * 1e9)
            while time.perf_counter_ns() < end:
                t0 = time.perf_counter_ns()
                await client.send(samples[i % len(samples)])
                out.append(time.perf_counter_ns() - t0)
                i += 1
            return out

        def local_slice() -> list[int]:
            out, i = [], 0
            end = time.perf_counter_ns() + int(slice_s * 1e9)
            while time.perf_counter_ns() < end:
                t0 = time.perf_counter_ns()
                engine.classify(samples[i % len(samples)].data, top_k=5)
                out.append(time.perf_counter_ns() - t0)
                i += 1
            return out

        async def main() -> None:
            client = HttpClient(target)
            await server_slice(client)  # warm both paths
            local_slice()
            for _ in range(rounds):
                local = float(np.median(local_slice())) / 1e6
                remote = float(np.median(await server_slice(client))) / 1e6
                rows.append((local, remote))
            await client.close()

        asyncio.run(main())
    diffs = [remote - local for local, remote in rows]
    return {
        "rounds": [[round(a, 2), round(b, 2)] for a, b in rows],
        "in_process_p50_ms": round(float(np.median([a for a, _ in rows])), 2),
        "server_p50_ms": round(float(np.median([b for _, b in rows])), 2),
        "added_p50_ms": round(float(np.median(diffs)), 2),
    }


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    import http.client

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("server not ready")


def loadgen(url: str, out: Path, *args: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "edgeinfer.cli.main", "loadgen", url, "--report", str(out), *args]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    report = json.loads((out / "report.json").read_text())
    return report["configurations"][0]["scenarios"]  # type: ignore[no-any-return]


def brief(scenario: dict[str, Any], deadline_ms: float | None = None) -> dict[str, Any]:
    lat, ok, failed = (
        scenario["latency"],
        scenario["settings"]["latency_answered"],
        scenario["settings"]["latency_failed"],
    )
    server = scenario["settings"].get("server") or {}
    return {
        "answered_per_s": round(scenario["samples_per_s"], 1),
        "p50_ms": round(lat["p50_ms"], 2),
        "p99_ms": round(lat["p99_ms"], 2),
        "answered_p99_ms": round(ok["p99_ms"], 2),
        "refused_p50_ms": round(failed["p50_ms"], 2),
        "refused_p99_ms": round(failed["p99_ms"], 2),
        "errors": scenario["settings"]["errors_by_kind"],
        "requests": scenario["samples"],
        "server_cpu_percent": round(server.get("cpu_percent_mean", 0.0)),
        "server_rss_mb": [
            round(server.get(k, 0.0), 1) for k in ("rss_start_mb", "rss_peak_mb", "rss_end_mb")
        ],
        "mean_batch": round(server["mean_batch_size"], 2) if server.get("mean_batch_size") else None,
        "server_refused_at_admission": server.get("refused_at_admission"),
        "server_deadline_missed_after_admission": server.get("deadline_missed_after_admission"),
        "client_send_lag_p99_ms": _p99(scenario["settings"].get("send_lag")),
        "server_e2e_over_deadline": _over(server, deadline_ms),
    }


def _p99(summary: dict[str, Any] | None) -> float | None:
    return round(summary["p99_ms"], 2) if summary else None


def _over(server: dict[str, Any], deadline_ms: float | None) -> int | None:
    """Requests the server itself saw take longer than the deadline (its e2e histogram)."""
    if deadline_ms is None or not server.get("e2e_buckets"):
        return None
    for bound, count in server["e2e_buckets"]:
        if abs(bound * 1000 - deadline_ms) < 1e-6:
            return int(server["e2e_count"] - count)
    return None


def serve(port: int, grpc_port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "edgeinfer.cli.main", "serve", "--runtime", RUNTIME,
        "--http-port", str(port), "--grpc-port", str(grpc_port), *extra,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, process)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(30)


def run_wrk(port: int, jpeg: Path, duration_s: float) -> dict[str, Any]:
    script = jpeg.with_suffix(".lua")
    script.write_text(
        f'wrk.method = "POST"\nlocal f = io.open("{jpeg}", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
        'wrk.headers["Content-Type"] = "image/jpeg"\n'
    )
    results = {}
    for connections in (1, 16):
        out = subprocess.run(
            ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration_s:g}s", "--latency",
             "-s", str(script),
             f"http://127.0.0.1:{port}/v1/models/{MODEL}/classify"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        results[f"c{connections}"] = _parse_wrk(out)
    return results


def _parse_wrk(text: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for line in text.splitlines():
        parts = line.split()
        if line.strip().startswith(("50%", "90%", "99%")):
            found[f"p{parts[0].rstrip('%')}"] = parts[1]
        elif line.startswith("Requests/sec:"):
            found["req_per_s"] = float(parts[1])
        elif "Non-2xx" in line:
            found["non_2xx"] = int(parts[-1])
    return found


FASTAPI_APP = """
import asyncio
from fastapi import FastAPI, Request
from edgeinfer.engine.engine import Engine

engine = Engine.load("mobilenet_v2", runtime="onnxruntime")
app = FastAPI()

@app.post("/v1/models/mobilenet_v2/classify")
async def classify(request: Request):
    data = await request.body()
    result = await asyncio.to_thread(engine.classify, data, 5)
    top = result.predictions
    return {"predictions": [{"index": p.index, "label": p.label, "score": p.score} for p in top]}

@app.get("/v2/health/ready")
def ready():
    return {"ready": True}

@app.get("/metrics")
def metrics():
    return {}
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--deadline-ms", type=float, default=250.0)
    parser.add_argument("--wrk", action="store_true")
    parser.add_argument("--fastapi", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("serving-bench"))
    parser.add_argument(
        "--overload-only", action="store_true", help="only the 16-client and 3x Poisson cells"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    d, w = f"{args.duration:g}", "2"
    summary: dict[str, Any] = {
        "machine": {
            "cpu": _cpu_model(),
            "logical_cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "settings": vars(args) | {"out": str(args.out)},
    }
    if not args.overload_only:
        summary["in_process_before"] = in_process(args.duration)
        print("in process:", summary["in_process_before"], flush=True)

    port, grpc_port = free_port(), free_port()
    server = serve(port, grpc_port, [])
    try:
        url = f"http://127.0.0.1:{port}"
        cells = (
            ("http_c1", ["--concurrency", "1"]),
            ("http_classify_c1", ["--concurrency", "1", "--endpoint", "classify"]),
            ("http_c16", ["--concurrency", "16"]),
        )
        for name, extra in cells[2:] if args.overload_only else cells:
            (scenario,) = loadgen(url, args.out / name, "--duration", d, "--warmup", w, *extra)
            summary[name] = brief(scenario)
            print(name, summary[name], flush=True)
        if not args.overload_only:
            summary["c1_overhead_abab"] = overhead_abab(port, rounds=8, slice_s=1.5)
            print("c1 overhead (ABAB)", summary["c1_overhead_abab"], flush=True)
            (scenario,) = loadgen(
                f"grpc://127.0.0.1:{grpc_port}", args.out / "grpc_c16", "--metrics-url", f"127.0.0.1:{port}",
                "--concurrency", "16", "--duration", d, "--warmup", w,
            )  # fmt: skip
            summary["grpc_c16"] = brief(scenario)
            print("grpc_c16", summary["grpc_c16"], flush=True)
        capacity = summary["http_c16"]["answered_per_s"]
        rate = round(3 * capacity)
        (scenario,) = loadgen(
            url, args.out / "poisson_3x", "--rate", str(rate), "--poisson",
            "--timeout-ms", f"{args.deadline_ms:g}",
            "--duration", d, "--warmup", w,
        )  # fmt: skip
        summary["poisson_3x"] = brief(scenario, args.deadline_ms) | {
            "offered_per_s": rate,
            "deadline_ms": args.deadline_ms,
        }
        print("poisson_3x", summary["poisson_3x"], flush=True)
        if args.wrk and shutil.which("wrk") and not args.overload_only:
            from edgeinfer.serving.loadgen.workload import photo_samples

            jpeg = args.out / "sample.jpg"
            jpeg.write_bytes(next(s.data for s in photo_samples() if s.name == "chelsea.png.jpg"))
            summary["wrk_classify"] = run_wrk(port, jpeg, args.duration)
            print("wrk", summary["wrk_classify"], flush=True)
    finally:
        stop(server)
    if args.overload_only:
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
        return

    if args.fastapi:
        summary["fastapi"] = fastapi_baseline(args.out, d, w)
    summary["in_process_after"] = after = in_process(args.duration)
    print("in process again:", after, flush=True)

    before = summary["in_process_before"]
    offline = (before["offline_best_per_s"] + after["offline_best_per_s"]) / 2
    single_p50 = (before["single_p50_ms"] + after["single_p50_ms"]) / 2
    summary["ratios"] = {
        "http_c16_over_offline": round(summary["http_c16"]["answered_per_s"] / offline, 3),
        "grpc_c16_over_offline": round(summary["grpc_c16"]["answered_per_s"] / offline, 3),
        "http_c1_added_p50_ms": round(summary["http_c1"]["p50_ms"] - single_p50, 2),
        "http_classify_c1_added_p50_ms": round(summary["http_classify_c1"]["p50_ms"] - single_p50, 2),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["ratios"]))


def fastapi_baseline(out: Path, d: str, w: str) -> dict[str, Any]:
    app_dir = out / "fastapi_app"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "plain_fastapi.py").write_text(FASTAPI_APP)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "plain_fastapi:app", "--port", str(port), "--log-level", "warning"],
        cwd=app_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    results = {}
    try:
        wait_ready(port, process)
        for level in ("1", "16"):
            (scenario,) = loadgen(
                f"http://127.0.0.1:{port}", out / f"fastapi_c{level}", "--endpoint", "classify",
                "--concurrency", level, "--duration", d, "--warmup", w, "--metrics-url", "none",
            )  # fmt: skip
            results[f"c{level}"] = {
                "answered_per_s": round(scenario["samples_per_s"], 1),
                "p50_ms": round(scenario["latency"]["p50_ms"], 2),
                "p99_ms": round(scenario["latency"]["p99_ms"], 2),
                "errors": scenario["settings"]["errors_by_kind"],
            }
            print("fastapi", level, results[f"c{level}"], flush=True)
    finally:
        stop(process)
    return results


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
