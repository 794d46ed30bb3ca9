"""Arguments several subcommands share, and helpers to turn them into objects."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console

from edgeinfer.engine import Engine
from edgeinfer.errors import InvalidInput
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
        "--precision",
        "-p",
        default=None,
        help="fp32, fp16, int8 or bf16 (default: fp32, or an imported model's own)",
    )
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="intra-op threads (default: the physical cores)"
    )
    parser.add_argument(
        "--runtime-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the named runtime, repeatable: an OpenVINO property such as "
        "INFERENCE_PRECISION_HINT=bf16, or an ONNX Runtime session option",
    )


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse words the error and exits 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1, got {value}")
    return value


def load_engine(args: argparse.Namespace) -> Engine:
    """The engine that :func:`add_engine_args`' arguments describe."""
    return Engine.load(
        args.model,
        runtime=args.runtime,
        precision=args.precision,
        threads=args.threads,
        repository=repository(args),
        runtime_options=runtime_options(args.runtime_option),
    )


def runtime_options(pairs: list[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` as a dict; :class:`InvalidInput` for a pair without ``=`` or key."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"--runtime-option takes KEY=VALUE, got {pair!r}")
        options[key.strip()] = value.strip()
    return options


def repository(args: argparse.Namespace) -> ModelRepository:
    home: Path | None = getattr(args, "home", None)
    return ModelRepository(home)


def check_report_dir(path: Path) -> None:
    """Create the report folder and check that a file can be written there; ValueError (with the
    fix) otherwise, before anything is measured."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"--report {path} is a file; name a folder for report.json and report.html")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ValueError(f"--report {path}: cannot write there ({exc.strerror or exc})") from exc


#: Columns of a console that is not a terminal (a pipe, a log file): rich's default of 80 would
#: truncate the widest tables' columns (``onnxrun…``).
PIPED_CONSOLE_WIDTH = 150


def table_console(*, stderr: bool = False, highlight: bool = True) -> Console:
    """A console for tables: a terminal's own width, or :data:`PIPED_CONSOLE_WIDTH` columns with no
    wrapping when the output goes to a pipe or a log file."""
    console = Console(stderr=stderr, highlight=highlight)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, highlight=highlight, width=PIPED_CONSOLE_WIDTH)
