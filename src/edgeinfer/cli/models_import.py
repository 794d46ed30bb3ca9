"""``edgeinfer models import``: bring your own ``.tflite`` or ``.onnx`` model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgeinfer.cli.common import add_repository_arg, repository
from edgeinfer.models.importer import ImportOptions, import_model


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "import", help="copy a .tflite or .onnx model you bring into the repository"
    )
    parser.add_argument("file", type=Path)
    parser.add_argument("--name", required=True, help="the model's name in the repository")
    parser.add_argument("--labels", type=Path, default=None, help="a text file, one label a line")
    parser.add_argument("--mean", type=float, nargs=3, default=None, help="per-channel mean after scaling")
    parser.add_argument("--std", type=float, nargs=3, default=None, help="per-channel std after scaling")
    parser.add_argument(
        "--scale", type=float, default=None, help="pixel scale before mean/std (e.g. 0.00392)"
    )
    parser.add_argument("--logits", action="store_true", help="the output is logits, not probabilities")
    parser.add_argument("--license", default="unknown (brought by the user)")
    add_repository_arg(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    options = ImportOptions(
        name=args.name,
        labels_file=args.labels,
        scale=args.scale,
        mean=None if args.mean is None else tuple(args.mean),
        std=None if args.std is None else tuple(args.std),
        output_is_probability=not args.logits,
        license=args.license,
    )
    stored = import_model(repository(args), args.file, options)
    print(f"imported {stored.config.name} ({stored.config.format}, {stored.config.precision}): {stored.path}")
    return 0
