"""INT8 recipes side by side: how close each build stays to FP32, on held-out and calibration images.

    python benchmarks/int8_recipes.py --recipe default --recipe weight_rounding=gptq \\
        --recipe weight_rounding=gptq,bias_correction=false --out DIR

Each ``--recipe`` is ``default`` or comma-separated ``Int8Recipe`` fields (``name=value``) changed
from the default (the "fast" recipe as this CPU builds it: with 7-bit weights on x86 without
VNNI). Every recipe is built from the same FP32 model of a fresh, temporary model repository,
through the same builder ``edgeinfer models build --precision int8`` runs (the gate is reported,
not enforced). Prints, per recipe: top-1 agreement on the decisive held-out inputs (the
gate's figure) and on all of them, top-5 overlap, the median KL divergence from FP32 on the
held-out and on the calibration inputs (the calibration KL is the figure a build-time choice may
look at; held-out figures are for reading afterwards), and the build time. Also top-1 agreement
under two other choices of which held-out inputs count (``CRITERIA``: FP32 confidence alone, the
gate's criterion before the fourth round, and a lead of 2 over the runner-up), the comparison
that chose the gate's own lead of 1.5. With ``--threads 1,2`` it then times FP32 and every
build on edgeinfer's ONNX Runtime runtime (its session options), batch 1 on held-out inputs, in
alternating rounds (``benchmarks/alternating.py``), and prints p50/p90 and the speed-up over FP32.
Writes ``int8_recipes.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from alternating import p50_p90, time_alternating

from edgeinfer.models.calibration import calibration_set, held_out_set
from edgeinfer.models.quality import GateSettings, _kl_divergence, compare, predict
from edgeinfer.models.quantize import BuildSettings, builder
from edgeinfer.models.recipes import DEFAULT_RECIPE, Int8Recipe, named_recipe
from edgeinfer.models.repository import ModelRepository
from edgeinfer.models.zoo import zoo_entry
from edgeinfer.runtimes.base import Runtime, RuntimeOptions
from edgeinfer.runtimes.registry import open_runtime

# The timings hold FP32 and every build open at once, taking turns: let the process-wide thread
# budget (which counts loaded runtimes' threads against the cores) hold all of them.
os.environ.setdefault("EDGEINFER_CORES", str(16 * (os.cpu_count() or 1)))

# Other choices of the held-out inputs that count: FP32 top-1 at least 0.5 and leading its
# runner-up by at least this factor (the gate's own is 1.5).
CRITERIA = {"confidence_only": 1.0, "lead_2": 2.0}


def parse_recipe(text: str) -> Int8Recipe:
    """``default`` or ``field=value,field=value`` over :class:`Int8Recipe`'s defaults."""
    if text == "default":
        return named_recipe(DEFAULT_RECIPE)
    types = {f.name: f.type for f in dataclasses.fields(Int8Recipe)}
    changes: dict[str, Any] = {}
    for part in text.split(","):
        name, _, raw = part.partition("=")
        if name not in types:
            raise SystemExit(f"unknown Int8Recipe field {name!r}; fields: {', '.join(types)}")
        kind = str(types[name])
        if kind == "bool":
            changes[name] = raw.lower() in ("1", "true", "yes")
        elif kind == "int":
            changes[name] = int(raw)
        elif kind == "float":
            changes[name] = float(raw)
        elif kind.startswith("tuple"):
            changes[name] = tuple(x for x in raw.split("+") if x)
        else:
            changes[name] = raw
    return dataclasses.replace(named_recipe(DEFAULT_RECIPE), **changes)


def time_builds(
    paths: dict[str, Path], samples: np.ndarray, threads: int, rounds: int, runs: int
) -> dict[str, Any]:
    """p50/p90 ms of each model at batch 1, alternating; speed-ups over the first (FP32)."""
    opened = {key: open_runtime("onnxruntime", path, RuntimeOptions(threads)) for key, path in paths.items()}

    def call(runtime: Runtime) -> Any:
        name = runtime.inputs[0].name
        return lambda i: runtime.run({name: samples[i % len(samples)][np.newaxis]})

    try:
        times = time_alternating({key: call(rt) for key, rt in opened.items()}, rounds=rounds, runs=runs)
    finally:
        for runtime in opened.values():
            runtime.close()
    base = p50_p90(times[next(iter(paths))])
    rows: dict[str, Any] = {}
    for key, values in times.items():
        p50, p90 = p50_p90(values)
        rows[key] = {
            "p50_ms": round(p50, 3),
            "p90_ms": round(p90, 3),
            "speedup": [base[0] / p50, base[1] / p90],
        }
        print(
            f"{threads} thr {key:<48} p50 {p50:6.2f} p90 {p90:6.2f} ms  over fp32 "
            f"{base[0] / p50:.2f}x / {base[1] / p90:.2f}x",
            flush=True,
        )
    return {"threads": threads, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--recipe", action="append", default=[], help="repeatable; see above")
    parser.add_argument("--out", type=Path, default=Path("int8-recipes"))
    parser.add_argument("--threads", default="", help="e.g. 1,2: also time the builds at these thread counts")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--runs", type=int, default=32, help="calls per model per round")
    args = parser.parse_args()
    recipes = args.recipe or ["default"]
    gate = GateSettings(allow_failed=True)
    rows: list[dict[str, Any]] = []
    timings: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = ModelRepository(Path(tmp) / "repo")
        fp32 = repo.get(args.model, "fp32")
        entry = zoo_entry(args.model)
        calibration = calibration_set(fp32.config.preprocessing)
        reference_calibration = predict(fp32.path, calibration)
        paths = {"fp32": fp32.path}
        for index, text in enumerate(recipes):
            recipe = parse_recipe(text)
            staging = Path(tmp) / f"build-{index}"
            staging.mkdir()
            started = time.perf_counter()
            config = builder(repo, entry, "int8", BuildSettings(recipe=recipe, gate=gate))(staging)
            build_s = time.perf_counter() - started
            details = config.extra["quality"]
            candidate = predict(staging / config.file, calibration)
            held_out = held_out_set(fp32.config.preprocessing, recipe.held_out_variants, seed=recipe.seed + 1)
            held_reference = predict(fp32.path, held_out)
            held_candidate = predict(staging / config.file, held_out)
            criteria = {
                name: compare(held_reference, held_candidate, GateSettings(min_reference_lead=lead)).report
                for name, lead in CRITERIA.items()
            }
            row = {
                "recipe": text,
                "decisive_top1": config.quality.top1_agreement if config.quality else None,
                "decisive_images": config.quality.images if config.quality else None,
                "all_top1": details["all_images_top1_agreement"],
                "all_top5": details["all_images_top5_overlap"],
                "originals": details["original_photos_top1_agreement"],
                "kl_held_out": details["kl_divergence_median"],
                "kl_calibration": round(
                    float(np.median(_kl_divergence(reference_calibration, candidate))), 4
                ),
                "build_s": round(build_s, 1),
                **{f"{name}_top1": r.top1_agreement for name, r in criteria.items()},
                **{f"{name}_images": r.images for name, r in criteria.items()},
            }
            rows.append(row)
            paths[f"{index}: {text}"] = staging / config.file
            print(
                f"{text:<48} decisive {row['decisive_top1']:.1%} of {row['decisive_images']}  "
                f"(confidence only {row['confidence_only_top1']:.1%}, lead 2 {row['lead_2_top1']:.1%})  "
                f"all {row['all_top1']:.1%}  "
                f"top5 {row['all_top5']:.2f}  orig {row['originals']}  KL held-out "
                f"{row['kl_held_out']:.3f}  calibration {row['kl_calibration']:.3f}  {build_s:.0f} s",
                flush=True,
            )
        samples = held_out_set(fp32.config.preprocessing, 2, seed=1).samples[:32]
        for threads in (int(t) for t in args.threads.split(",") if t):
            timings.append(time_builds(paths, samples, threads, args.rounds, args.runs))
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"model": args.model, "rows": rows, "timings": timings}
    (args.out / "int8_recipes.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
