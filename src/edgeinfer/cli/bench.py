"""``edgeinfer bench``: MLPerf scenarios through LoadGen, runtimes compared, report.json + report.html."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from edgeinfer.cli.common import add_repository_arg, check_report_dir, table_console
from edgeinfer.errors import InvalidInput, RuntimeUnavailable
from edgeinfer.tune.search import MAX_BATCH

DEFAULT_SCENARIOS = "single-stream,offline"
DEFAULT_REPORT_DIR = Path("bench-report")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="benchmark latency, throughput and resource use on MLPerf's scenarios",
        description="Benchmark end to end (encoded image -> labelled prediction) with MLPerf LoadGen, "
        "compare runtimes, precisions and threads in one run, and write report.json and report.html.",
    )
    add_repository_arg(parser)
    parser.add_argument("--model", "-m", default="mobilenet_v2", help="model name (default: %(default)s)")
    parser.add_argument(
        "--scenario",
        "-s",
        default=DEFAULT_SCENARIOS,
        help="comma list of single-stream, multi-stream, server, offline (default: %(default)s)",
    )
    parser.add_argument(
        "--runtime",
        "-r",
        default="auto",
        help="comma list: ort, openvino, litert, keras, null, auto (default: %(default)s)",
    )
    parser.add_argument(
        "--precision",
        "-p",
        default=None,
        help="comma list: fp32, fp16, int8, bf16 (default: fp32; an imported model's one build)",
    )
    parser.add_argument(
        "--threads", "-t", default="auto", help="comma list of intra-op threads or auto (default)"
    )
    parser.add_argument(
        "--batch-size", "-b", default="1", help="comma list of Offline batch sizes (default: 1)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="minimum seconds per scenario run (default: %(default)s; --mlperf: at least 600)",
    )
    parser.add_argument(
        "--min-queries",
        type=int,
        default=100,
        help="minimum queries per run, Offline: samples (default: %(default)s)",
    )
    parser.add_argument("--max-duration", type=float, default=0.0, help="cap per run in seconds (0: none)")
    parser.add_argument(
        "--mlperf",
        action="store_true",
        help="MLPerf's official settings from LoadGen's mlperf.conf: at least 600 s and its query "
        "count a run (a Server search is --search-steps runs, each Offline batch size one more), "
        "official seeds and 15 ms bound; --duration and --min-queries can only raise the minimums, "
        "--latency-bound-ms, --samples-per-query and --seed replace the official values",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed for sample order, arrivals and sample variants (default: 0; --mlperf: official)",
    )
    parser.add_argument(
        "--samples", type=int, default=None, help="distinct encoded images (default: 32; --mlperf: 1024)"
    )
    parser.add_argument(
        "--sample-format",
        choices=("jpeg", "original"),
        default="jpeg",
        help="jpeg: the photos as a camera sends them (quality 90); original: their shipped files, "
        "mostly lossless PNG (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="threads serving Server/Offline queries (default: 2 on 2+ cores, else 1)",
    )
    parser.add_argument(
        "--latency-bound-ms",
        type=float,
        default=None,
        help="Server p99 latency bound (default: 50; --mlperf: 15, as resnet50)",
    )
    parser.add_argument(
        "--target-qps", type=float, default=None, help="Server arrival rate (default: search)"
    )
    parser.add_argument(
        "--search-steps", type=int, default=5, help="Server search runs (default: %(default)s)"
    )
    parser.add_argument(
        "--samples-per-query", type=int, default=None, help="MultiStream (default: 8; --mlperf: 8)"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds (default: %(default)s)")
    parser.add_argument(
        "--model-only",
        type=float,
        default=3.0,
        help="seconds alternating the engine's whole path with the runtime call alone, sample by "
        "sample (model-only latency and engine overhead; default: %(default)s; 0: skip)",
    )
    parser.add_argument(
        "--top-k", "-k", type=int, default=5, help="labels per prediction (default: %(default)s)"
    )
    parser.add_argument(
        "--interval-ms", type=int, default=100, help="CPU/RSS sampling period (default: %(default)s)"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every configuration in this process (default: a fresh process each)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=DEFAULT_REPORT_DIR,
        help="directory for report.json, report.html and LoadGen logs (default: %(default)s)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        from rich.markup import escape

        from edgeinfer.bench.console import RichProgress, print_report
        from edgeinfer.bench.report import write_report
        from edgeinfer.bench.session import run_benchmark
    except ModuleNotFoundError as exc:
        raise RuntimeUnavailable(f"edgeinfer bench needs {exc.name}: pip install 'edgeinfer[bench]'") from exc
    request = build_request(args)
    for line in skipped_combinations(request):
        print(f"edgeinfer bench: {line}", file=sys.stderr)
    console = table_console()
    with RichProgress(console) as progress:
        report = run_benchmark(request, progress)
    paths = write_report(report, args.report)  # first: a closed terminal must not lose the report
    print_report(console, report)
    console.print(f"report: {escape(str(paths.json))}  {escape(str(paths.html))}")
    if not any(c.status == "ok" for c in report.configurations):
        reasons = dict.fromkeys(
            c.message.strip().splitlines()[-1] for c in report.configurations if c.message
        )
        print(
            f"edgeinfer bench: nothing was measured: {'; '.join(reasons) or 'no configuration ran'}",
            file=sys.stderr,
        )
        return 1
    return 1 if any(c.status == "failed" for c in report.configurations) else 0


def skipped_combinations(request: Any) -> list[str]:
    """The runtime x precision combinations the request names but that are not run, and why."""
    from edgeinfer.bench import compare

    return compare.skipped(request.runtimes, request.precisions)


WEEK_S = 7 * 24 * 3600.0
# (option, smallest value allowed, whether that value itself is allowed, largest value allowed);
# None means "not given". The largest keep every figure within LoadGen's 64-bit counters (times in
# ns) and this process's memory: far past any run that makes sense, short of an overflow.
_LIMITS: tuple[tuple[str, float, bool, float], ...] = (
    ("--duration", 0, False, WEEK_S),
    ("--min-queries", 1, True, 1e9),
    ("--max-duration", 0, True, WEEK_S),
    ("--samples", 1, True, 100_000),
    ("--workers", 1, True, 256),
    ("--latency-bound-ms", 0, False, 3_600_000),
    ("--target-qps", 0, False, 1e6),
    ("--search-steps", 1, True, 100),
    ("--samples-per-query", 1, True, 4096),
    ("--warmup", 0, True, 3600),
    ("--model-only", 0, True, 3600),
    ("--top-k", 1, True, 1000),
    ("--interval-ms", 10, True, 60_000),
    ("--seed", 0, True, 2**64 - 1),
)


def build_request(args: argparse.Namespace) -> Any:
    """The BenchRequest the arguments describe; a bad value raises InvalidInput with the fix.

    Everything is checked before anything runs, the report folder included (created if missing), so
    that a mistake costs no measurements.
    """
    from edgeinfer.bench import compare
    from edgeinfer.bench.runner import RunOptions
    from edgeinfer.bench.session import BenchRequest

    try:
        _check_numbers(args)
        seed = args.seed if args.seed is not None or args.mlperf else 0
        settings = _scenario_settings(args, seed)
        options = RunOptions(
            scenarios=settings,
            batch_sizes=_batch_sizes(args.batch_size),
            top_k=args.top_k,
            warmup_s=args.warmup,
            model_only_s=args.model_only,
            sample_interval_ms=args.interval_ms,
            log_root=Path(args.report) / "loadgen",
            repository=args.home,
        )
        threads = tuple(
            dict.fromkeys(
                None if t == "auto" else _int("--threads", t) for t in _items("--threads", args.threads)
            )
        )
        if any(t is not None and t < 1 for t in threads):
            raise ValueError("--threads must be >= 1 or auto")
        runtimes = tuple(compare.runtime_name(r) for r in _items("--runtime", args.runtime))
        _check_model(args.model, args.home)
        wanted = args.precision or _default_precision(args.model, args.home)
        precisions = tuple(dict.fromkeys(compare.precision_name(p) for p in _items("--precision", wanted)))
        if not compare.expand(args.model, runtimes, precisions, threads):
            reasons = "; ".join(compare.skipped(runtimes, precisions))
            raise ValueError(f"nothing to run: {reasons}; add fp32 to --precision or another --runtime")
        request = BenchRequest(
            options=options,
            model=args.model,
            runtimes=runtimes,
            precisions=precisions,
            threads=threads,
            sample_count=args.samples if args.samples is not None else (1024 if args.mlperf else 32),
            sample_encoding=args.sample_format,
            seed=seed if seed is not None else 0,
            isolate=not args.in_process,
            command=_command(),
        )
        check_report_dir(Path(args.report))
        return request
    except ValueError as exc:
        raise InvalidInput(f"edgeinfer bench: {exc}") from exc


def _default_precision(name: str, home: Path | None) -> str:
    from edgeinfer.models.repository import ModelRepository

    return ModelRepository(home).default_precision(name)


def _check_model(name: str, home: Path | None) -> None:
    """A model of the zoo or the repository, known before anything is measured."""
    from edgeinfer.models.repository import ModelRepository, check_model_name

    known = ModelRepository(home).names()
    if check_model_name(name) not in known:
        raise ValueError(f"unknown model {name!r}; known here: {', '.join(known)}")


def _check_numbers(args: argparse.Namespace) -> None:
    for option, lowest, inclusive, highest in _LIMITS:
        value = getattr(args, option[2:].replace("-", "_"))
        if value is None:
            continue
        if not math.isfinite(value):
            raise ValueError(f"{option} must be a finite number, got {value}")
        if value < lowest or (value == lowest and not inclusive):
            raise ValueError(f"{option} must be {'>=' if inclusive else '>'} {lowest:g}, got {value:g}")
        if value > highest:
            raise ValueError(f"{option} must be at most {highest:g}, got {value:g}")


def _scenario_settings(args: argparse.Namespace, seed: int | None) -> tuple[Any, ...]:
    """One ScenarioSettings per scenario named; with --mlperf, the official ones with the user's on top."""
    from edgeinfer.bench.scenarios import Scenario, ScenarioSettings

    scenarios = dict.fromkeys(Scenario.parse(s) for s in _items("--scenario", args.scenario))
    common: dict[str, Any] = {
        "workers": args.workers or 0,  # 0: each scenario's default
        "server_target_qps": args.target_qps,
        "server_search_steps": args.search_steps,
        "seed": seed,
    }
    chosen: dict[str, Any] = {
        "min_duration_s": args.duration,
        "min_query_count": args.min_queries,
        "multi_stream_samples_per_query": args.samples_per_query,
        "server_latency_bound_ms": args.latency_bound_ms,
    }
    if args.mlperf:
        # the official duration (600 s) and query counts are floors; the bound, samples per query
        # and seed given replace the official ones
        settings = tuple(ScenarioSettings.official(s, **chosen, **common) for s in scenarios)
    else:
        defaults: dict[str, Any] = {"multi_stream_samples_per_query": 8, "server_latency_bound_ms": 50.0}
        quick = {k: v if v is not None else defaults[k] for k, v in chosen.items()}
        settings = tuple(ScenarioSettings(scenario=s, **quick, **common) for s in scenarios)
    longest = max(s.min_duration_s for s in settings)
    if args.max_duration and args.max_duration < longest:
        raise ValueError(
            f"--max-duration ({args.max_duration:g}) must be 0 (no limit) or at least the minimum "
            f"duration, {longest:g} s" + (" (--mlperf's)" if args.mlperf else " (--duration)")
        )
    return tuple(s.with_(max_duration_s=args.max_duration) for s in settings)


def _command() -> tuple[str, ...]:
    launched_as = Path(sys.argv[0]).name if sys.argv else ""
    if launched_as in ("edgeinfer", "main.py", "__main__.py"):
        return ("edgeinfer", *sys.argv[1:])
    return ("edgeinfer", "bench")


def _batch_sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(dict.fromkeys(_ints("--batch-size", text)))  # a repeat would overwrite its logs
    if min(sizes) < 1 or max(sizes) > MAX_BATCH:  # as tune's: 0.6 MB of tensor an image
        raise ValueError(f"--batch-size values must be between 1 and {MAX_BATCH}, got {text!r}")
    return sizes


def _items(option: str, text: str) -> list[str]:
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise ValueError(f"{option} expects a comma-separated list, got {text!r}")
    return items


def _ints(option: str, text: str) -> list[int]:
    return [_int(option, item) for item in _items(option, text)]


def _int(option: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{option} expects whole numbers, got {text!r}") from None
