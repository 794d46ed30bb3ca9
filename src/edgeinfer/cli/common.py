"""Arguments several subcommands share, and helpers to turn them into objects."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeinfer.models.repository import HOME_ENV, ModelRepository


def add_repository_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help=f"model repository root (default: ${HOME_ENV} or ~/.cache/edgeinfer)",
    )


def add_engine_args(parser: argparse.ArgumentParser, *, model_default: str = "mobilenet_v2") -> None:
    add_repository_arg(parser)
    parser.add_argument("--model", "-m", default=model_default, help="model name (default: %(default)s)")
    parser.add_argument(
        "--runtime",
        "-r",
        default="auto",
        help="onnxruntime (ort), openvino, litert, keras, null, or auto: the fastest installed one "
        "measured on this device (default: %(default)s)",
    )
    parser.add_argument(
        "--precision", "-p", default=None, help="fp32 or int8 (default: fp32, or an imported model's own)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: the physical cores)"
    )


def repository(args: argparse.Namespace) -> ModelRepository:
    home: Path | None = getattr(args, "home", None)
    return ModelRepository(home)
