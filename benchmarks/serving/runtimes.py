"""Which runtime serves best under load: ``edgeinfer serve`` on each runtime in turn, same load.

    python benchmarks/serving/runtimes.py --runtimes onnxruntime,litert --levels 1,2,4,16 \
        --duration 6 --rounds 2 [--precision int8] [--baseline-src DIR] [--out DIR] \
        [-- extra serve flags]

For each round, starts ``edgeinfer serve --runtime R`` (HTTP only, the default adaptive shape:
ONNX Runtime gets its split lanes, runtimes that cannot share one model between threads run one
instance) for every runtime, first in the given order and then reversed (A B B A), and loads it
with ``edgeinfer loadgen`` at each closed-loop concurrency level (JPEG samples decoded by the
server, 2 s warm-up per level). Prints every cell as it comes and, at the end, each runtime's
median answered/s and p50 / p99 per level over the rounds; writes ``runtimes.json`` and each
loadgen report under ``--out``. The client runs on the same cores as the server, as on a small box.

``--baseline-src DIR`` also serves each runtime from another checkout's code (``DIR/src``, e.g. a
``git worktree`` of an earlier commit), shown as ``RUNTIME@base``, in the same A B B A order.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from run_targets import free_port, wait_ready  # this folder's: the script's own directory is on sys.path


def serve_and_load(arm: str, args: argparse.Namespace, extra: list[str]) -> list[dict[str, Any]]:
    """One server on ``arm`` (``RUNTIME`` or ``RUNTIME@base``), loaded at every level: one row per level."""
    runtime, _, code = arm.partition("@")
    port = free_port()
    log = (args.out / f"serve-{arm}.log").open("ab")
    env = dict(os.environ)
    if code:
        env["PYTHONPATH"] = str(Path(args.baseline_src, "src").resolve())
    command = [sys.executable, "-m", "edgeinfer.cli.main", "serve", "--runtime", runtime]
    command += ["--http-port", str(port), "--no-grpc", "--precision", args.precision, *extra]
    server = subprocess.Popen(command, stdout=log, stderr=log, env=env)
    try:
        wait_ready(port, server)
        report = args.out / f"{arm}-{time.time_ns()}"
        subprocess.run(
            ["edgeinfer", "loadgen", f"http://127.0.0.1:{port}", "-c", args.levels,
             "--duration", str(args.duration), "--warmup", "2", "--report", str(report)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        data = json.loads((report / "report.json").read_text())
    finally:
        server.terminate()
        server.wait(10)
        log.close()
    rows = []
    for configuration in data["configurations"]:
        for scenario in configuration["scenarios"]:
            latency = scenario["latency"]
            rows.append(
                {
                    "runtime": arm,
                    "clients": scenario["workers"],
                    "answered_per_s": scenario["samples_per_s"],
                    "p50_ms": latency["p50_ms"],
                    "p99_ms": latency["p99_ms"],
                    "errors": scenario["errors"],
                }
            )
    return rows


def summarize(rows: list[dict[str, Any]], runtimes: list[str]) -> list[str]:
    lines = ["| runtime | clients | answered/s (median, each round) | p50 ms | p99 ms | errors |"]
    lines.append("|---|---|---|---|---|---|")
    for runtime in runtimes:
        mine = [r for r in rows if r["runtime"] == runtime]
        for clients in sorted({r["clients"] for r in mine}):
            cells = [r for r in mine if r["clients"] == clients]
            each = " / ".join(f"{r['answered_per_s']:.1f}" for r in cells)
            lines.append(
                f"| {runtime} | {clients} | {statistics.median(r['answered_per_s'] for r in cells):.1f} "
                f"({each}) | {statistics.median(r['p50_ms'] for r in cells):.1f} | "
                f"{statistics.median(r['p99_ms'] for r in cells):.1f} | {sum(r['errors'] for r in cells)} |"
            )
    return lines


def main(argv: list[str]) -> int:
    ours, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runtimes", default="onnxruntime,litert,openvino")
    parser.add_argument("--levels", default="1,2,4,16", help="closed-loop clients per level")
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per level")
    parser.add_argument("--rounds", type=int, default=2, help="A B B A rounds")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--baseline-src", help="also serve from this checkout's src/ (RUNTIME@base)")
    parser.add_argument("--out", type=Path, default=Path("serving-runtimes"))
    args = parser.parse_args(ours)
    args.out.mkdir(parents=True, exist_ok=True)
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    if args.baseline_src:
        runtimes = [arm for r in runtimes for arm in (r, f"{r}@base")]
    rows: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        for runtime in runtimes + runtimes[::-1]:
            for row in serve_and_load(runtime, args, extra):
                rows.append(row)
                print(json.dumps(row), flush=True)
            time.sleep(1.0)
    (args.out / "runtimes.json").write_text(json.dumps({"precision": args.precision, "rows": rows}, indent=2))
    print("\n".join(summarize(rows, runtimes)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
