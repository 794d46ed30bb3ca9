"""The ``edgeinfer`` command: one module per subcommand, each exposing ``register(subparsers)``.

A subcommand's handler returns an exit code. Every :class:`EdgeInferError` becomes a one-line
message on stderr and its kind's exit code; nothing prints a traceback for a user mistake.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from edgeinfer.errors import EdgeInferError

# Subcommand modules, in the order `edgeinfer --help` lists them. A module that fails to import
# (an optional extra missing) is skipped so the rest of the CLI still works.
SUBCOMMANDS = (
    "edgeinfer.cli.classify",
    "edgeinfer.cli.models",
    "edgeinfer.cli.doctor",
    "edgeinfer.cli.bench",
    "edgeinfer.cli.tune",
    "edgeinfer.cli.serve",
    "edgeinfer.cli.loadgen",
    "edgeinfer.cli.link",
    "edgeinfer.cli.compare",
    "edgeinfer.cli.stream",
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeinfer", description="Real-time AI inference at the edge.")
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("edgeinfer.cli."):
                continue  # subcommand not written yet
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except EdgeInferError as exc:
        print(f"edgeinfer: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _version() -> str:
    from edgeinfer import __version__

    return f"edgeinfer {__version__}"


if __name__ == "__main__":
    sys.exit(main())
