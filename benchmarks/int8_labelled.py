"""INT8 against FP32 on the held-out photos that show an ImageNet subject: accuracy kept, not agreement.

    python benchmarks/int8_labelled.py --recipe default --recipe accurate --held-out-seeds 1,2,3 --out DIR

Most held-out photos are not ImageNet content (a horse silhouette, brick, text, the Hubble deep
field): FP32's top-1 on them is a guess, and agreement with it measures the guess. Four show a
subject ImageNet has classes for; ``LABELS`` lists the classes we count as right for each (our
reading of the photos, written down so that it can be argued with). On their held-out variants
(64 per photo and seed) this prints the top-1 accuracy of FP32, FP16 and each INT8 build, the
share of FP32's accuracy each keeps (the measure the ONNX model zoo quotes for its INT8
MobileNetV2: 98.3%) and each build's top-1 agreement with FP32 on the same inputs. Every build is
made from one fresh, temporary model repository by the builder ``edgeinfer models build`` runs
(calibration seed 0, gate reported, not enforced). ``--recipe`` takes the names of
``INT8_RECIPES`` or ``benchmarks/int8_recipes.py``'s field lists. Writes ``int8_labelled.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from int8_recipes import parse_recipe

from edgeinfer.models.calibration import held_out_set
from edgeinfer.models.labels import imagenet_labels
from edgeinfer.models.quality import GateSettings, predict
from edgeinfer.models.quantize import BuildSettings, builder
from edgeinfer.models.recipes import INT8_RECIPES, named_recipe
from edgeinfer.models.repository import ModelRepository
from edgeinfer.models.zoo import zoo_entry

# Held-out photo -> the ImageNet classes that describe it (any of them counts as right).
LABELS: dict[str, tuple[str, ...]] = {
    "coffee": ("espresso", "cup", "coffee mug"),
    "camera": ("tripod", "reflex camera", "Polaroid camera"),  # a cameraman at his tripod
    "motorcycle_right": ("moped", "motor scooter"),  # ImageNet has no plain motorcycle
    "rocket": ("missile", "projectile", "space shuttle"),  # a launcher on its pad
}


def labelled_rows(names: list[str]) -> tuple[list[int], list[set[int]]]:
    """Which rows of a held-out set show a labelled photo, and the class indices right for each."""
    index = {label: i for i, label in enumerate(imagenet_labels())}
    rows = [i for i, name in enumerate(names) if name.split("#")[0] in LABELS]
    return rows, [{index[label] for label in LABELS[names[i].split("#")[0]]} for i in rows]


def score(top1: np.ndarray, right: list[set[int]], reference: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(np.mean([int(t) in ok for t, ok in zip(top1, right, strict=True)])),
        "agreement": float(np.mean(top1 == reference)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--recipe", action="append", default=[], help="repeatable; see above")
    parser.add_argument("--held-out-seeds", default="1,2,3")
    parser.add_argument("--variants", type=int, default=64, help="held-out variants per photo and seed")
    parser.add_argument("--out", type=Path, default=Path("int8-labelled"))
    args = parser.parse_args()
    gate = GateSettings(allow_failed=True)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = ModelRepository(Path(tmp) / "repo")
        fp32 = repo.get(args.model, "fp32")
        paths = {"fp32": fp32.path, "fp16": repo.get(args.model, "fp16").path}
        for index, text in enumerate(args.recipe or ["default"]):
            recipe = named_recipe(text) if text in INT8_RECIPES else parse_recipe(text)
            staging = Path(tmp) / f"build-{index}"
            staging.mkdir()
            config = builder(repo, zoo_entry(args.model), "int8", BuildSettings(recipe=recipe, gate=gate))(
                staging
            )
            paths[f"int8 {text}"] = staging / config.file
        for seed in (int(s) for s in args.held_out_seeds.split(",") if s):
            images = held_out_set(fp32.config.preprocessing, args.variants, seed=seed)
            rows, right = labelled_rows(list(images.names))
            top1 = {key: predict(path, images).argmax(axis=1)[rows] for key, path in paths.items()}
            scores = {key: score(values, right, top1["fp32"]) for key, values in top1.items()}
            base = scores["fp32"]["accuracy"]
            for key, figures in scores.items():
                kept = figures["accuracy"] / base if base else float("nan")
                results.append(
                    {"held_out_seed": seed, "build": key, "inputs": len(rows), "kept": kept, **figures}
                )
                print(
                    f"seed {seed} {key:<28} top-1 accuracy {figures['accuracy']:.1%} of {len(rows)}  "
                    f"kept {kept:.1%} of FP32's  agreement with FP32 {figures['agreement']:.1%}",
                    flush=True,
                )
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"model": args.model, "labels": LABELS, "results": results}
    (args.out / "int8_labelled.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
