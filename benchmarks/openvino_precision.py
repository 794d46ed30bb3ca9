"""OpenVINO's inference precisions (f32, bf16, f16) on the FP32 and INT8 builds: speed and agreement.

    python benchmarks/openvino_precision.py --hints f32,bf16,f16 --threads 1,2 --rounds 12 \\
        --held-out-seeds 1,2 --out DIR

edgeinfer pins OpenVINO to f32 (``runtimes/openvino.py``); on CPUs with AMX or AVX512_BF16
OpenVINO would otherwise compute FP32 models in bfloat16. This measures what that choice costs
and buys. Both builds come from a fresh, temporary model repository. Speed: raw OpenVINO calls,
latency hint, batch 1 on held-out inputs, every (build, hint) compiled side by side and timed in
alternating rounds of ``--runs`` calls; p50/p90 and the speed-up over the FP32 build at f32.
Agreement: top-1 against FP32 in ONNX Runtime on 640 held-out inputs per seed, over all of them
and over those the accuracy gate counts. Writes ``openvino_precision.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from alternating import p50_p90, time_alternating

from edgeinfer.models.calibration import held_out_set
from edgeinfer.models.quality import GateSettings, compare, predict
from edgeinfer.models.repository import ModelRepository

BUILDS = ("fp32", "int8")


def _compile(core: ov.Core, path: Path, hint: str, threads: int) -> ov.CompiledModel:
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
    config["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(core.read_model(str(path)), "CPU", config)


def _outputs(compiled: ov.CompiledModel, samples: np.ndarray) -> np.ndarray:
    request = compiled.create_infer_request()
    rows = [np.asarray(request.infer({0: samples[i : i + 1]})[0]) for i in range(len(samples))]
    return np.concatenate(rows)


def _speed(
    core: ov.Core, paths: dict[str, Path], samples: np.ndarray, *, hints: list[str], threads: int, args: Any
) -> dict[str, Any]:
    requests = {
        f"{build}/{hint}": _compile(core, paths[build], hint, threads).create_infer_request()
        for build in BUILDS
        for hint in hints
    }

    def call(request: ov.InferRequest) -> Callable[[int], object]:
        return lambda i: request.infer({0: samples[i % len(samples) : i % len(samples) + 1]})

    calls = {key: call(request) for key, request in requests.items()}
    times = time_alternating(calls, rounds=args.rounds, runs=args.runs)
    base = p50_p90(times[f"fp32/{hints[0]}"])
    rows = {}
    for key, values in times.items():
        p50, p90 = p50_p90(values)
        rows[key] = {"p50_ms": p50, "p90_ms": p90, "speedup_p50": base[0] / p50, "speedup_p90": base[1] / p90}
        print(
            f"{threads} thr {key:10s} p50 {p50:6.2f} p90 {p90:6.2f} ms"
            f"  over fp32/{hints[0]} {base[0] / p50:.2f}x / {base[1] / p90:.2f}x",
            flush=True,
        )
    return {"threads": threads, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hints", default="f32,bf16,f16", help="the first is the baseline")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--runs", type=int, default=40, help="calls per configuration per round")
    parser.add_argument("--held-out-seeds", default="1", help="seeds for the agreement; empty: none")
    parser.add_argument("--out", type=Path, default=Path("openvino-precision"))
    args = parser.parse_args()
    hints = args.hints.split(",")
    core = ov.Core()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report: dict[str, Any] = {"started_utc": started, "hints": hints}
    with tempfile.TemporaryDirectory() as tmp:
        repo = ModelRepository(Path(tmp))
        stored = {build: repo.get("mobilenet_v2", build) for build in BUILDS}
        paths = {build: s.path for build, s in stored.items()}
        spec = stored["fp32"].config.preprocessing
        report["agreement"] = []
        for seed in (int(s) for s in args.held_out_seeds.split(",") if s):
            held_out = held_out_set(spec, seed=seed)  # the gate's own 640 inputs
            reference = predict(paths["fp32"], held_out)
            for build in BUILDS:
                for hint in hints:
                    candidate = _outputs(_compile(core, paths[build], hint, 2), held_out.samples)
                    comparison = compare(reference, candidate, GateSettings())
                    gate, every = comparison.report, comparison.details["all_images_top1_agreement"]
                    report["agreement"].append(
                        {"seed": seed, "build": build, "hint": hint, "gate_top1": gate.top1_agreement,
                         "gate_images": gate.images, "all_top1": every}
                    )  # fmt: skip
                    print(
                        f"seed {seed} {build}/{hint:5s} top-1 agreement with FP32 (ONNX Runtime): "
                        f"{gate.top1_agreement:.1%} of the {gate.images} the gate counts, {every:.1%} of all",
                        flush=True,
                    )
        samples = held_out_set(spec, 4).samples
        thread_counts = [int(t) for t in args.threads.split(",")]
        report["speed"] = [
            _speed(core, paths, samples, hints=hints, threads=t, args=args) for t in thread_counts
        ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "openvino_precision.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
