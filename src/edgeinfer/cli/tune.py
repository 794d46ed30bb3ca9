"""``edgeinfer tune``: find the best runtime, precision, threads and batch size on this device."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeinfer.cli.common import add_repository_arg, repository, table_console
from edgeinfer.errors import InvalidInput
from edgeinfer.tune.search import Trial, TuneResult, TuneSpace, runtime_name, search


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "tune",
        help="search runtime x precision x threads x batch size; runtime=auto then uses the winner",
    )
    parser.add_argument("model", nargs="?", default="mobilenet_v2", help="model name (default: %(default)s)")
    parser.add_argument(
        "--runtime",
        "-r",
        default=None,
        help="comma-separated runtimes (default: every installed one auto may pick); null is timed "
        "but never a winner, keras (the baseline: edgeinfer bench times it) is skipped with a note",
    )
    parser.add_argument(
        "--precision",
        "-p",
        default="fp32,int8",
        help="comma-separated fp32, fp16, int8, bf16 (default: %(default)s)",
    )
    parser.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1..cores)")
    parser.add_argument(
        "--batch", default="1,2,4,8", help="comma-separated batch sizes (default: %(default)s)"
    )
    parser.add_argument(
        "--duration", type=float, default=1.0, help="timed seconds per configuration (default: %(default)s)"
    )
    parser.add_argument(
        "--p99-bound-ms",
        type=float,
        default=50.0,
        help="p99 batch latency the throughput goal must stay within (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_repository_arg(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    repo = repository(args)
    batch_sizes = _ints(args.batch, "--batch")
    if 1 not in batch_sizes:
        raise InvalidInput(
            f"--batch {args.batch}: include 1, at which the latency goal (what runtime=auto opens) is timed"
        )
    space = TuneSpace(
        runtimes=_runtimes(args.runtime, args.model, repo.get(args.model, None).config.format),
        precisions=tuple(dict.fromkeys(word.lower() for word in _words(args.precision))),
        threads=_ints(args.threads, "--threads") if args.threads else _default_threads(),
        batch_sizes=batch_sizes,
        duration_s=args.duration,
        p99_bound_ms=args.p99_bound_ms,
    )
    console = Console(stderr=True)
    progress = None if args.json else lambda trial: console.print(f"  {_describe(trial)}", highlight=False)
    result, path = search(repo, args.model, space, progress)
    if args.json:
        print(json.dumps({**result.to_dict(), "path": str(path) if path else None}, indent=2))
    else:
        _print_winners(result)
    if path is None:
        print(
            f"edgeinfer: error: no configuration of {args.model} gave a winner (null and keras never do); "
            "nothing stored (an earlier tuning is kept)",
            file=sys.stderr,
        )
        return 1
    if not args.json:
        print(f"wrote {path}")
    return 0 if result.best.get("latency") is not None else 1


def _print_winners(result: TuneResult) -> None:
    title = escape(f"best configurations for {result.model} on {result.machine}")
    table = Table(title=title, title_justify="left")
    for column in ("precision", "goal", "runtime", "threads", "batch", "p90 ms", "p99 ms", "images/s"):
        table.add_column(column)
    for precision, goals in [("any", result.best), *result.best_by_precision.items()]:
        for goal, trial in goals.items():
            if trial is None:
                table.add_row(precision, goal, "-", "", "", "", "", "")
                continue
            table.add_row(
                precision if precision == "any" else trial.precision,
                goal,
                trial.runtime,
                str(trial.threads),
                str(trial.batch_size),
                f"{trial.p90_ms:.2f}",
                f"{trial.p99_ms:.2f}",
                f"{trial.images_per_s:.0f}",
            )
    table_console().print(table)


def _describe(trial: Trial) -> str:
    where = f"{trial.runtime} {trial.precision} threads={trial.threads} batch={trial.batch_size}"
    if not trial.ok:
        return f"{where}: {'skipped' if trial.skipped else 'failed'}: {trial.error}"
    return f"{where}: p90 {trial.p90_ms:.2f} ms, p99 {trial.p99_ms:.2f} ms, {trial.images_per_s:.0f} images/s"


def _runtimes(raw: str | None, model: str, fmt: str) -> tuple[str, ...]:
    """The runtimes to time; a named one that cannot run ``model``'s builds is left out with a line
    on stderr saying why, rather than silently (``keras`` runs the source checkpoint)."""
    from edgeinfer.engine.alternates import alternate_runtimes
    from edgeinfer.runtimes.registry import auto_candidates, factory

    if raw is None:  # what auto measures: LiteRT too, through an FP32 ONNX build's TFLite twin
        return tuple(dict.fromkeys([*auto_candidates(fmt), *alternate_runtimes(fmt)]))
    named = tuple(dict.fromkeys(runtime_name(name) for name in _words(raw)))
    able = tuple(n for n in named if fmt in factory(n).formats or n in alternate_runtimes(fmt))
    for name in named:
        if name not in able:
            hint = " (the Keras baseline: time it with edgeinfer bench -r keras)" if name == "keras" else ""
            formats = ", ".join(factory(name).formats)
            print(
                f"edgeinfer: skipping {name}: it runs {formats} models, not {model}'s {fmt} build{hint}",
                file=sys.stderr,
            )
    if not able:
        raise InvalidInput(f"none of {', '.join(named)} can run {model}'s {fmt} build")
    return able


def _default_threads() -> tuple[int, ...]:
    from edgeinfer.system.threads import usable_cores

    return tuple(range(1, usable_cores() + 1))


def _words(raw: str) -> list[str]:
    return [word.strip() for word in raw.split(",") if word.strip()]


def _ints(raw: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(dict.fromkeys(int(word) for word in _words(raw)))  # a repeat is timed once
    except ValueError:
        raise InvalidInput(f"{flag} takes comma-separated whole numbers, got {raw!r}") from None
