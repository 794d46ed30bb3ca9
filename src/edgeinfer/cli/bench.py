"""``edgeinfer bench``: MLPerf scenarios through LoadGen, runtimes compared, report.json + report.html."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeinfer.cli.common import add_repository_arg
from edgeinfer.errors import InvalidInput, RuntimeUnavailable

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
        "--precision", "-p", default="fp32", help="comma list: fp32, int8 (default: %(default)s)"
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
        help="minimum seconds per scenario run (default: %(default)s; --mlperf: 600)",
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
        help="official MLPerf minimums and seeds from LoadGen's mlperf.conf (10 min a run)",
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
    parser.add_argument("--workers", type=int, default=1, help="threads serving Server/Offline (default: 1)")
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
    parser.add_argument("--samples-per-query", type=int, default=8, help="MultiStream (default: %(default)s)")
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
        from rich.console import Console

        from edgeinfer.bench.console import RichProgress, print_report
        from edgeinfer.bench.report import write_report
        from edgeinfer.bench.session import run_benchmark
    except ModuleNotFoundError as exc:
        raise RuntimeUnavailable(f"edgeinfer bench needs {exc.name}: pip install 'edgeinfer[bench]'") from exc
    request = build_request(args)
    console = Console()
    if not console.is_terminal:  # a log file or pipe: wide enough for the tables, no wrapping
        console = Console(width=150)
    with RichProgress(console) as progress:
        report = run_benchmark(request, progress)
    paths = write_report(report, args.report)  # first: a closed terminal must not lose the report
    print_report(console, report)
    console.print(f"report: {paths.json}  {paths.html}")
    return 1 if any(c.status == "failed" for c in report.configurations) else 0


def build_request(args: argparse.Namespace) -> Any:
    """The BenchRequest the arguments describe; a bad value raises InvalidInput with the fix."""
    from edgeinfer.bench.compare import runtime_name
    from edgeinfer.bench.runner import RunOptions
    from edgeinfer.bench.scenarios import Scenario, ScenarioSettings
    from edgeinfer.bench.session import BenchRequest

    try:
        scenarios = [Scenario.parse(s) for s in _items(args.scenario)]
        seed = args.seed if args.seed is not None or args.mlperf else 0
        bound = (
            args.latency_bound_ms if args.latency_bound_ms is not None else (15.0 if args.mlperf else 50.0)
        )
        settings = tuple(
            ScenarioSettings(
                scenario=scenario,
                min_duration_s=600.0 if args.mlperf else args.duration,
                min_query_count=args.min_queries,
                max_duration_s=args.max_duration,
                seed=seed,
                workers=args.workers,
                multi_stream_samples_per_query=args.samples_per_query,
                server_latency_bound_ms=bound,
                server_target_qps=args.target_qps,
                server_search_steps=args.search_steps,
                mlperf=args.mlperf,
            )
            for scenario in dict.fromkeys(scenarios)
        )
        options = RunOptions(
            scenarios=settings,
            batch_sizes=tuple(int(b) for b in _items(args.batch_size)),
            top_k=args.top_k,
            warmup_s=args.warmup,
            model_only_s=args.model_only,
            sample_interval_ms=args.interval_ms,
            log_root=Path(args.report) / "loadgen",
            repository=args.home,
        )
        threads = tuple(None if t == "auto" else int(t) for t in _items(args.threads))
        if any(t is not None and t < 1 for t in threads):
            raise ValueError("threads must be >= 1 or auto")
        return BenchRequest(
            options=options,
            model=args.model,
            runtimes=tuple(runtime_name(r) for r in _items(args.runtime)),
            precisions=tuple(p.lower() for p in _items(args.precision)),
            threads=threads,
            sample_count=args.samples if args.samples is not None else (1024 if args.mlperf else 32),
            sample_encoding=args.sample_format,
            seed=seed if seed is not None else 0,
            isolate=not args.in_process,
            command=_command(),
        )
    except ValueError as exc:
        raise InvalidInput(f"edgeinfer bench: {exc}") from exc


def _command() -> tuple[str, ...]:
    launched_as = Path(sys.argv[0]).name if sys.argv else ""
    if launched_as in ("edgeinfer", "main.py", "__main__.py"):
        return ("edgeinfer", *sys.argv[1:])
    return ("edgeinfer", "bench")


def _items(text: str) -> list[str]:
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise ValueError(f"expected a comma-separated list, got {text!r}")
    return items
