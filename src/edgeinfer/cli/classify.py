"""``edgeinfer classify``: top-k labels for images."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeinfer.cli.common import add_engine_args, load_engine, positive_int
from edgeinfer.engine import Classification, Engine
from edgeinfer.errors import EdgeInferError, InvalidInput
from edgeinfer.imaging.decode import IMAGE_SUFFIXES, image_files


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "classify", help="classify images (top-k ImageNet labels with scores)"
    )
    parser.add_argument(
        "images",
        nargs="+",
        help="image files (JPEG, PNG, WebP, BMP, GIF, TIFF...) or folders of them (their images, by name)",
    )
    parser.add_argument(
        "--top-k", "-k", type=positive_int, default=5, help="labels per image (default: %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_engine_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    images = _expand_folders(args.images)
    engine = load_engine(args)
    results: list[dict[str, Any]] = []
    failures: list[EdgeInferError] = []
    with engine:
        # the next file is read and decoded while this one is inferred
        classified = engine.classify_each((i for i in images if isinstance(i, str)), args.top_k)
        for entry in images:
            image, result = (entry, next(classified)) if isinstance(entry, str) else (entry.path, entry.error)
            if isinstance(result, EdgeInferError):
                failures.append(result)
                results.append({"image": image, "error": {"kind": result.kind, "message": str(result)}})
                if not args.json:
                    print(f"edgeinfer: error: {result}", file=sys.stderr)
                continue
            results.append(_as_dict(image, result))
            if not args.json:
                _print_table(image, result, engine)
    if args.json:
        payload = {
            "model": engine.config.name,
            "precision": engine.precision,
            "runtime": engine.runtime.name,
            "results": results,
        }
        print(json.dumps(payload, indent=2))
    return _exit_code(failures)


@dataclass(frozen=True)
class _UnusableFolder:
    path: str
    error: InvalidInput


def _expand_folders(arguments: list[str]) -> list[str | _UnusableFolder]:
    """Each argument, a folder replaced by its image files in name order (not its subfolders')."""
    images: list[str | _UnusableFolder] = []
    for argument in arguments:
        folder = Path(argument)
        if not folder.is_dir():
            images.append(argument)
            continue
        try:
            files = [str(p) for p in image_files(folder)]
        except OSError as exc:
            images.append(
                _UnusableFolder(argument, InvalidInput(f"cannot read the folder {argument}: {exc.strerror}"))
            )
            continue
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        empty = _UnusableFolder(argument, InvalidInput(f"{argument} is a folder with no images ({suffixes})"))
        images.extend(files or [empty])
    return images


def _exit_code(failures: list[EdgeInferError]) -> int:
    """0 when every image was classified; the errors' exit code when they share one, else 1."""
    codes = {exc.exit_code for exc in failures}
    return 0 if not codes else codes.pop() if len(codes) == 1 else 1


def _as_dict(image: str, result: Classification) -> dict[str, Any]:
    return {
        "image": image,
        "predictions": [
            {"index": p.index, "label": p.label, "score": round(p.score, 6)} for p in result.predictions
        ],
        "timings": {k: round(v, 3) for k, v in result.timings.as_ms().items()},
    }


def _print_table(image: str, result: Classification, engine: Engine) -> None:
    timing = result.timings.as_ms()
    table = Table(
        title=escape(image),  # a file name, not markup
        caption=f"{engine.config.name} {engine.precision} on {engine.runtime.name}: "
        f"{timing['total_ms']:.1f} ms (decode {timing['decode_ms']:.1f}, preprocess "
        f"{timing['preprocess_ms']:.1f}, infer {timing['infer_ms']:.1f})",
        title_justify="left",
        caption_justify="left",
        min_width=72,
    )
    table.add_column("#", justify="right")
    table.add_column("label")
    table.add_column("score", justify="right")
    table.add_column("class", justify="right")
    for rank, prediction in enumerate(result.predictions, start=1):
        table.add_row(str(rank), escape(prediction.label), f"{prediction.score:.4f}", str(prediction.index))
    Console().print(table)
