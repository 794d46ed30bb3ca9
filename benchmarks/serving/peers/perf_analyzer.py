"""edgeinfer serve and Triton (through PyTriton) measured by Triton's own benchmark tool, perf_analyzer.

The same workload as ``run.py`` (ANCHORS.md, "Serving stacks over HTTP"): one JPEG (chelsea,
337x224, quality 90) as a KServe v2 BYTES tensor [1, 1]; each server decodes, resizes, normalizes
and runs MobileNetV2 FP32 on ONNX Runtime (2 intra-op threads, spinning off) with its dynamic
batcher (max 8, 5 ms queue delay). edgeinfer answers the probabilities (FP32 [1, 1000]); the
PyTriton model answers its top-5 as a JSON string. perf_analyzer drives each server over HTTP and
over gRPC at each ``--concurrency`` (closed loop, synchronous requests), reads Triton's statistics
from the server to split the server's time into queue and compute stages, and writes a CSV; this
script collects them into ``perf_analyzer.json`` and prints a table. Stacks alternate over
``--rounds`` (odd rounds in the given order, even rounds reversed).

perf_analyzer is not on PyPI for Python 3.11 on glibc 2.36 (Debian 12): its wheel
(``perf-analyzer``) is tagged manylinux_2_38. ``perf_analyzer_debian12.sh`` fetches the wheel and
Debian 13's C and C++ runtime libraries into a folder and writes a wrapper that runs the binary
with them; pass the wrapper as ``--perf-analyzer``. Results: docs/BENCHMARKS.md, "Triton's
perf_analyzer against edgeinfer".

    benchmarks/serving/peers/perf_analyzer_debian12.sh /tmp/pa
    python benchmarks/serving/peers/perf_analyzer.py --perf-analyzer /tmp/pa/perf_analyzer \\
        --rounds 2 --out /tmp/pa-out
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from run import (
    BATCH,
    BATCH_WAIT_S,
    MODEL,
    STACKS,
    Server,
    Stack,
    free_port,
    machine,
    make_jpeg,
    model_dir,
    versions,
)

PROTOCOLS = ("http", "grpc")
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")
# perf_analyzer's CSV columns (microseconds) and the names used here
COLUMNS = {
    "Inferences/Second": "infer_per_s",
    "p50 latency": "p50_us",
    "p90 latency": "p90_us",
    "p99 latency": "p99_us",
    "Server Queue": "server_queue_us",
    "Server Compute Input": "server_compute_input_us",
    "Server Compute Infer": "server_compute_infer_us",
    "Server Compute Output": "server_compute_output_us",
}


def stacks() -> dict[str, tuple[Stack, int]]:
    """Each stack with the gRPC port it is told to use."""
    edge_grpc, triton_grpc = free_port(), free_port()
    edge = STACKS["edgeinfer"]

    def edge_command(port: int, python: Path) -> list[str]:
        argv = edge.command(port, python)
        return [a for a in argv if a != "--no-grpc"] + ["--grpc-port", str(edge_grpc)]

    triton = STACKS["pytriton"]
    return {
        "edgeinfer": (Stack("edgeinfer", edge_command, edge.ready_path, edge.request_path), edge_grpc),
        "pytriton": (
            Stack(
                "pytriton",
                lambda port, py: [str(py), "pytriton_app.py", str(port), str(triton_grpc)],
                triton.ready_path,
                triton.request_path,
                body=triton.body,
                venv=triton.venv,
                env=triton.env,
            ),
            triton_grpc,
        ),
    }


def input_data(jpeg: bytes, out: Path) -> Path:
    """perf_analyzer's input file: a BYTES tensor's raw bytes (4-byte length + JPEG) in base64."""
    raw = len(jpeg).to_bytes(4, "little") + jpeg
    path = out / "perf_analyzer_input.json"
    document = {"data": [{"image": {"content": {"b64": base64.b64encode(raw).decode()}, "shape": [1]}}]}
    path.write_text(json.dumps(document))
    return path


def check_answers(http_port: int, grpc_port: int, jpeg: bytes) -> str:
    """One request per transport with Triton's Python client: Egyptian cat on top, or no run."""
    import numpy as np
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp

    from edgeinfer.models.labels import load_labels
    from edgeinfer.models.repository import ModelRepository

    stored = ModelRepository().get(MODEL, "fp32")
    labels = load_labels(stored.config.labels, stored.directory)
    answers = []
    for module, url in ((thttp, f"127.0.0.1:{http_port}"), (tgrpc, f"127.0.0.1:{grpc_port}")):
        client = module.InferenceServerClient(url)
        tensor = module.InferInput("image", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[jpeg]], dtype=object))
        result = client.infer(MODEL, [tensor])
        names = [o["name"] for o in result.get_response()["outputs"]] if module is thttp else None
        if names is None:
            names = [o.name for o in result.get_response().outputs]
        output = result.as_numpy(names[0])
        text = labels[int(np.argmax(output[0]))] if output.dtype != object else output[0][0].decode()
        if "Egyptian cat" not in text:
            raise RuntimeError(f"{url} answered {text[:200]!r}")
        answers.append(text[:80])
    return " | ".join(answers)


def perf_analyzer(
    command: list[str],
    protocol: str,
    port: int,
    *,
    concurrency: int,
    data: Path,
    args: argparse.Namespace,
    csv_path: Path,
) -> dict[str, Any]:
    argv = [
        *command, "-m", MODEL, "-u", f"127.0.0.1:{port}", "-i", protocol, "--input-data", str(data),
        "--concurrency-range", str(concurrency), "--measurement-interval", str(args.window_ms),
        "--stability-percentage", str(args.stability_pct), "--max-trials", str(args.max_trials),
        "-f", str(csv_path),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    cell: dict[str, Any] = {"protocol": protocol, "concurrency": concurrency}
    if done.returncode != 0 or not csv_path.exists():
        cell["error"] = (done.stdout + done.stderr).strip()[-600:]
        return cell
    with csv_path.open() as handle:
        row = next(csv.DictReader(handle))
    for column, name in COLUMNS.items():
        cell[name] = float(row[column]) if row.get(column) not in (None, "") else None
    cell["stable"] = "Failed to obtain stable measurement" not in done.stdout + done.stderr
    return cell


def table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| stack | protocol | concurrency | infer/s | p50 ms | p90 ms | p99 ms "
        "| server queue / input / infer / output ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for cell in run.get("cells", []):
            head = f"| {run['stack']} r{run['round']} | {cell['protocol']} | {cell['concurrency']} |"
            if "error" in cell:
                lines.append(f"{head} error: {cell['error'][:80]} | | | | |")
                continue
            stages = " / ".join(f"{(cell[f'server_{k}_us'] or 0) / 1000:.2f}" for k in STAGES)
            ms = [f"{cell[k] / 1000:.2f}" for k in ("p50_us", "p90_us", "p99_us")]
            lines.append(f"{head} {cell['infer_per_s']:.1f} | {' | '.join(ms)} | {stages} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--perf-analyzer", default="perf_analyzer", help="the command (a wrapper is fine)")
    parser.add_argument("--stacks", default="edgeinfer,pytriton")
    parser.add_argument("--protocols", default="http,grpc")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--window-ms", type=int, default=4000, help="perf_analyzer's measurement window")
    parser.add_argument("--stability-pct", type=int, default=25)
    parser.add_argument("--max-trials", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--venvs", type=Path, default=Path("/tmp/peers"), help="folder of venv-<stack>")
    parser.add_argument("--out", type=Path, default=Path("/tmp/pa-out"))
    args = parser.parse_args()
    command = shlex.split(args.perf_analyzer)
    known = stacks()
    names = [n.strip() for n in args.stacks.split(",") if n.strip()]
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if unknown := [n for n in names if n not in known]:
        parser.error(f"unknown stack(s) {unknown}; choose from {', '.join(known)}")
    if bad := [p for p in protocols if p not in PROTOCOLS]:
        parser.error(f"unknown protocol(s) {bad}; choose from {', '.join(PROTOCOLS)}")
    levels = [int(c) for c in args.concurrency.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    jpeg = make_jpeg(args.out)
    data = input_data(jpeg.read_bytes(), args.out)
    shown = subprocess.run([*command, "--version"], capture_output=True, text=True, check=False)
    version = (shown.stdout + shown.stderr).strip()
    summary: dict[str, Any] = {
        "machine": machine(),
        "versions": {**versions(args.venvs), "perf_analyzer": version},
        "settings": {
            "image": f"{jpeg.name}, {jpeg.stat().st_size} bytes",
            "concurrency": levels,
            "protocols": protocols,
            "window_ms": args.window_ms,
            "stability_pct": args.stability_pct,
            "max_trials": args.max_trials,
            "max_batch": BATCH,
            "batch_wait_s": BATCH_WAIT_S,
            "rounds": args.rounds,
            "model_dir": str(model_dir()),
        },
        "runs": [],
    }
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            stack, grpc_port = known[name]
            run: dict[str, Any] = {"stack": name, "round": round_index + 1, "cells": []}
            server = None
            try:
                server = Server(stack, args.venvs, args.out / f"{name}-r{round_index + 1}.log")
                run["answer"] = check_answers(server.port, grpc_port, jpeg.read_bytes())
                for protocol in protocols:
                    port = server.port if protocol == "http" else grpc_port
                    for level in levels:
                        csv_path = args.out / f"{name}-r{round_index + 1}-{protocol}-c{level}.csv"
                        cell = perf_analyzer(
                            command,
                            protocol,
                            port,
                            concurrency=level,
                            data=data,
                            args=args,
                            csv_path=csv_path,
                        )
                        run["cells"].append(cell)
                        print(json.dumps({"stack": name, **cell}), flush=True)
            except (OSError, RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
                run["error"] = f"{type(exc).__name__}: {exc}"
                print(run["error"], file=sys.stderr, flush=True)
            finally:
                if server is not None:
                    server.stop()
            summary["runs"].append(run)
            (args.out / "perf_analyzer.json").write_text(json.dumps(summary, indent=2))
    summary["table"] = table(summary["runs"])
    (args.out / "perf_analyzer.json").write_text(json.dumps(summary, indent=2))
    print(summary["table"])


if __name__ == "__main__":
    main()
