"""edgeinfer's measurements beside the runtimes' own benchmark tools, on the same model files.

The tools the project measures itself against: OpenVINO's ``benchmark_app`` (in the ``openvino``
wheel) and LiteRT's ``benchmark_litert_model`` (``litert-benchmark``, in the ``ai-edge-litert``
wheel). Each runs in its own process, as its vendor documents it, on the very files edgeinfer's
runtimes load: the FP32 and INT8 ONNX builds of the model (OpenVINO reads ONNX) and the FP32 build's
TFLite twin (LiteRT). Beside them, ``edgeinfer bench`` measures the same runtimes, precisions and
thread count (bf16 too: the FP32 build computed in bfloat16, benchmark_app's default on such CPUs),
each configuration in its own process, on real camera JPEGs.

Two questions: do edgeinfer's model-only figures agree with the vendor tool's for the same file,
runtime and threads (so its numbers can be trusted), and how does edgeinfer's best configuration
on this device compare with the vendor tool's figure on the vendor's own metric: ``benchmark_app
-hint latency`` median latency (one synchronous request), ``benchmark_app -hint throughput`` FPS
(several streams), LiteRT's median latency. The vendor tools time the model call on synthetic
input; edgeinfer's end-to-end figures also decode and preprocess a JPEG, which the tools do not.
Rounds alternate the order (vendor tools first, then edgeinfer; reversed in even rounds).

    python benchmarks/vendor_tools.py --threads 2 --duration 10 --rounds 2 --out docs/reports/vendor-tools
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgeinfer.bench.report import read_report
from edgeinfer.engine.engine import Engine
from edgeinfer.models.repository import ModelRepository
from edgeinfer.models.tflite_export import tflite_twin

BIN = Path(sys.executable).parent
_BENCHMARK_APP = {
    "median_ms": re.compile(r"Median:\s+([\d.]+) ms"),
    "mean_ms": re.compile(r"Average:\s+([\d.]+) ms"),
    "min_ms": re.compile(r"Min:\s+([\d.]+) ms"),
    "max_ms": re.compile(r"Max:\s+([\d.]+) ms"),
    "fps": re.compile(r"Throughput:\s+([\d.]+) FPS"),
}
_PRECISION = re.compile(r"INFERENCE_PRECISION_HINT: <Type: '(\w+)'>")


def model_files(model: str) -> dict[str, Path]:
    """The FP32 and INT8 ONNX builds (built if missing) and the FP32 build's TFLite twin."""
    for precision in ("fp32", "int8"):
        Engine.load(model, runtime="onnxruntime", precision=precision, threads=1).close()
    repository = ModelRepository()
    fp32 = repository.get(model, "fp32")
    int8 = repository.get(model, "int8")
    return {"fp32": fp32.path, "int8": int8.path, "tflite": tflite_twin(fp32.path, fp32.config.file_sha256)}


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install edgeinfer[openvino,litert] into this environment")
    return found


def benchmark_app(path: Path, hint: str, duration_s: float, precision: str | None = None) -> dict[str, Any]:
    """benchmark_app as documented: a performance hint and its own choice of threads and streams
    (it refuses ``-nthreads`` beside a hint; with the hint it uses every core)."""
    argv = [
        tool("benchmark_app"), "-m", str(path), "-d", "CPU", "-hint", hint,
        "-t", str(int(duration_s)), "-shape", "[1,3,224,224]",
    ]  # fmt: skip
    if precision is not None:
        argv += ["-infer_precision", precision]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=duration_s * 10 + 120)
    result: dict[str, Any] = {
        "tool": "benchmark_app", "hint": hint, "infer_precision": precision or "default", "argv": argv[1:]
    }  # fmt: skip
    if done.returncode != 0:
        result["error"] = (done.stdout + done.stderr)[-800:]
        return result
    shown = _PRECISION.search(done.stdout)
    result["inference_precision"] = shown.group(1) if shown else None
    for key, pattern in _BENCHMARK_APP.items():
        match = pattern.search(done.stdout)
        result[key] = float(match.group(1)) if match else None
    return result


def litert_benchmark(path: Path, threads: int, runs: int, out: Path) -> dict[str, Any]:
    report = out / "litert-benchmark.json"
    argv = [
        tool("litert-benchmark"), "--model", str(path), "--num_threads", str(threads),
        "--num_runs", str(runs), "--warmup_runs", "20", "--result_json", str(report),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    result: dict[str, Any] = {"tool": "litert-benchmark", "argv": argv[1:]}
    if done.returncode != 0 or not report.exists():
        result["error"] = (done.stdout + done.stderr)[-800:]
        return result
    latency = json.loads(report.read_text())["latency"]
    result.update(
        {"median_ms": latency["median_ms"], "mean_ms": latency["avg_ms"], "p95_ms": latency["p95_ms"]}
    )
    return result


def edgeinfer_bench(model: str, threads: int, duration_s: float, out: Path) -> list[dict[str, Any]]:
    argv = [
        str(BIN / "edgeinfer"), "bench", "--model", model, "--runtime", "openvino,litert,onnxruntime",
        "--precision", "fp32,int8,bf16", "--threads", str(threads), "--scenario", "single-stream,offline",
        "--duration", str(duration_s), "--report", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(
            f"edgeinfer bench failed ({done.returncode}): {(done.stdout + done.stderr)[-800:]}"
        )
    report = read_report(out / "report.json")
    rows = []
    for config in report.configurations:
        if config.status != "ok":
            continue
        row: dict[str, Any] = {
            "label": config.label,
            "runtime": config.runtime_resolved or config.runtime,
            "precision": config.precision,
            "model_file": config.model_file,
        }
        if config.model_only is not None:
            row["model_only_p50_ms"] = config.model_only.latency.p50_ms
            row["model_only_p90_ms"] = config.model_only.latency.p90_ms
        for scenario in config.scenarios:
            if scenario.scenario == "SingleStream":
                row["e2e_p50_ms"], row["e2e_p90_ms"] = scenario.latency.p50_ms, scenario.latency.p90_ms
            elif scenario.scenario == "Offline":
                row["offline_img_s"] = max(row.get("offline_img_s", 0.0), scenario.samples_per_s)
        rows.append(row)
    return rows


def vendor_round(files: dict[str, Path], args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    results = []
    # the tool's defaults (on CPUs with AMX or AVX512_BF16 it computes FP32 models in bfloat16), and
    # for the FP32 build also in f32, edgeinfer's setting
    for precision, infer_precision in (("fp32", None), ("fp32", "f32"), ("int8", None)):
        for hint in ("latency", "throughput"):
            result = benchmark_app(files[precision], hint, args.duration, infer_precision)
            results.append({"runtime": "openvino", "precision": precision, **result})
    result = litert_benchmark(files["tflite"], args.threads, args.litert_runs, out)
    results.append({"runtime": "litert", "precision": "fp32", **result})
    return results


def table(summary: dict[str, Any]) -> str:
    """Each vendor figure beside edgeinfer's for the same runtime, build and round."""
    lines = [
        "| round | runtime, build | vendor tool, setting | its median ms | its FPS "
        "| edgeinfer model-only p50 ms | edgeinfer end to end p50 / p90 ms | edgeinfer Offline img/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for number, found in enumerate(summary["rounds"], start=1):
        ours = {(row["runtime"], row["precision"]): row for row in found["edgeinfer"]}
        for result in found["vendor"]:
            # benchmark_app's default on a CPU with bfloat16 computes the FP32 build as edgeinfer's bf16
            bf16 = result["precision"] == "fp32" and result.get("inference_precision") == "bfloat16"
            row = ours.get((result["runtime"], "bf16" if bf16 else result["precision"]), {})
            setting = result.get("hint", f"{summary['threads']} threads")
            if result.get("inference_precision"):
                setting += f", {result['inference_precision']}"
            fps = f"{result['fps']:.0f}" if result.get("fps") else "-"
            median = (
                f"{result['median_ms']:.2f}" if result.get("median_ms") else result.get("error", "?")[:40]
            )
            e2e = f"{row.get('e2e_p50_ms', 0):.2f} / {row.get('e2e_p90_ms', 0):.2f}" if row else "-"
            model_only = f"{row['model_only_p50_ms']:.2f}" if "model_only_p50_ms" in row else "-"
            offline = f"{row['offline_img_s']:.0f}" if "offline_img_s" in row else "-"
            lines.append(
                f"| {number} | {result['runtime']}, {result['precision']} | {result['tool']}, {setting} "
                f"| {median} | {fps} | {model_only} | {e2e} | {offline} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument(
        "--threads", type=int, default=2, help="edgeinfer's and LiteRT's (benchmark_app uses every core)"
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per benchmark_app run and scenario"
    )
    parser.add_argument("--litert-runs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("vendor-tools"))
    parser.add_argument("--table", type=Path, help="only print the table of a saved vendor_tools.json")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    files = model_files(args.model)
    summary: dict[str, Any] = {
        "model": args.model,
        "threads": args.threads,
        "duration_s": args.duration,
        "files": {k: str(v) for k, v in files.items()},
        "rounds": [],
    }
    for index in range(args.rounds):
        started = time.strftime("%H:%M:%S", time.gmtime())
        folder = args.out / f"edgeinfer-r{index + 1}"
        if index % 2 == 0:
            vendor = vendor_round(files, args, args.out)
            ours = edgeinfer_bench(args.model, args.threads, args.duration, folder)
        else:
            ours = edgeinfer_bench(args.model, args.threads, args.duration, folder)
            vendor = vendor_round(files, args, args.out)
        summary["rounds"].append({"started_utc": started, "vendor": vendor, "edgeinfer": ours})
        (args.out / "vendor_tools.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary["rounds"][-1], indent=1), flush=True)
    print(table(summary))


if __name__ == "__main__":
    main()
