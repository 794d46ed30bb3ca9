"""INT8 against FP32, alternated in one process so both see the same machine.

    python benchmarks/precision.py --runtime onnxruntime,openvino --threads 1,2 --rounds 8 --out DIR

For each runtime and thread count, the FP32 and INT8 engines are loaded side by side and run in
rounds: each round times ``--runs`` batch-1 calls of one precision on the bench's 32 sample JPEGs
(the same inputs ``edgeinfer bench`` uses), then the other (the order alternates round by
round). Two figures per call: the raw ``runtime.run`` on the preprocessed tensor (model only,
what the issue's raw-runtime anchors measure) and ``Engine.classify`` on the encoded JPEG (end
to end). Prints p50/p90 and the speed-up, writes ``precision.json``. Ratios compare within one
run only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer.bench.samples import load_samples
from edgeinfer.bench.stats import LatencyRecorder
from edgeinfer.engine import Engine

PRECISIONS = ("fp32", "int8")

# Both engines are loaded at once but never run at the same time: let the process-wide thread
# budget (which counts loaded runtimes' threads against the cores) hold two of them.
os.environ.setdefault("EDGEINFER_CORES", str(2 * (os.cpu_count() or 1)))


def _load(runtime: str, precision: str, threads: int) -> Engine:
    return Engine.load("mobilenet_v2", runtime=runtime, precision=precision, threads=threads)


def _measure(runtime: str, threads: int, images: list[bytes], rounds: int, runs: int) -> dict[str, Any]:
    engines = {p: _load(runtime, p, threads) for p in PRECISIONS}
    try:
        tensors = {p: [np.stack([e.preprocess(e.decode(b))]) for b in images] for p, e in engines.items()}
        raw = {p: LatencyRecorder() for p in PRECISIONS}
        e2e = {p: LatencyRecorder() for p in PRECISIONS}
        for e in engines.values():  # warm-up, not recorded
            for b in images[:5]:
                e.classify(b)
        for r in range(rounds):
            order = PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]
            for p in order:
                engine, rt = engines[p], engines[p].runtime
                name = rt.inputs[0].name
                for i in range(runs):
                    k = (r * runs + i) % len(images)
                    t0 = time.perf_counter_ns()
                    rt.run({name: tensors[p][k]})
                    t1 = time.perf_counter_ns()
                    engine.classify(images[k])
                    t2 = time.perf_counter_ns()
                    raw[p].record(t1 - t0)
                    e2e[p].record(t2 - t1)
        result: dict[str, Any] = {"runtime": runtime, "threads": threads}
        for kind, recs in (("model_only", raw), ("end_to_end", e2e)):
            fp32, int8 = recs["fp32"].summary(), recs["int8"].summary()
            result[kind] = {
                "fp32_p50_ms": fp32.p50_ms,
                "fp32_p90_ms": fp32.p90_ms,
                "int8_p50_ms": int8.p50_ms,
                "int8_p90_ms": int8.p90_ms,
                "speedup_p50": fp32.p50_ms / int8.p50_ms,
                "speedup_p90": fp32.p90_ms / int8.p90_ms,
                "count": fp32.count,
            }
        return result
    finally:
        for e in engines.values():
            e.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", default="onnxruntime,openvino")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--runs", type=int, default=40, help="calls per precision per round")
    parser.add_argument("--out", type=Path, default=Path("precision-report"))
    args = parser.parse_args()
    images = [s.data for s in load_samples(32, seed=0, encoding="jpeg")]
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = os.getloadavg()[0]
    results = []
    for runtime in args.runtime.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            res = _measure(runtime, threads, images, args.rounds, args.runs)
            results.append(res)
            for kind in ("model_only", "end_to_end"):
                m = res[kind]
                print(
                    f"{runtime:12s} {threads} thr {kind:10s}"
                    f" FP32 {m['fp32_p50_ms']:6.2f}/{m['fp32_p90_ms']:6.2f}"
                    f"  INT8 {m['int8_p50_ms']:6.2f}/{m['int8_p90_ms']:6.2f} ms p50/p90"
                    f"  speed-up {m['speedup_p50']:.2f}x / {m['speedup_p90']:.2f}x  (n={m['count']})",
                    flush=True,
                )
    report = {
        "started_utc": started,
        "load_average_1m_before": load_before,
        "load_average_1m_after": os.getloadavg()[0],
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "samples": len(images),
        "rounds": args.rounds,
        "runs_per_round": args.runs,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "precision.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'precision.json'}")


if __name__ == "__main__":
    main()
