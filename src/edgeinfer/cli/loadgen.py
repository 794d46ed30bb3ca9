"""``edgeinfer loadgen``: closed- or open-loop load against a running server, written as a bench report."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeinfer.cli.common import table_console
from edgeinfer.errors import InvalidInput, NotFound
from edgeinfer.serving.settings import API_KEY_ENV


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "loadgen",
        help="load a running server (closed loop at given concurrencies, or Poisson open loop)",
        description="Send real images (or preprocessed tensors) to an edgeinfer/KServe v2 server and "
        "report throughput, latency percentiles and errors by kind, as report.json + report.html.",
    )
    parser.add_argument("url", help="http://HOST:PORT or grpc://HOST:PORT")
    parser.add_argument("--model", "-m", default="mobilenet_v2", help="model name (default: %(default)s)")
    parser.add_argument(
        "--concurrency", "-c", default=None, help="closed loop: clients per level (default: 1,4,16)"
    )
    parser.add_argument("--rate", type=float, default=None, help="open loop instead: requests per second")
    parser.add_argument(
        "--poisson", action="store_true", help="open loop: Poisson arrivals (else evenly spaced)"
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds per level (default: 10)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (default: 2)")
    parser.add_argument(
        "--endpoint", choices=("infer", "classify"), default="infer",
        help="v2 infer (BYTES image, classification output) or /v1/.../classify (HTTP)",
    )  # fmt: skip
    parser.add_argument(
        "--input", choices=("image", "tensor"), default="image",
        help="send JPEG bytes (decoded by the server) or preprocessed FP32 tensors",
    )  # fmt: skip
    parser.add_argument(
        "--images", type=Path, nargs="*", default=None, help="image files (default: sample photos)"
    )
    parser.add_argument("--timeout-ms", type=float, default=None, help="deadline sent with every request")
    parser.add_argument("--seed", type=int, default=0, help="sample order and arrival times (default: 0)")
    parser.add_argument(
        "--metrics-url", default=None, help="server /metrics HOST:PORT, or none (default: the HTTP target)"
    )
    parser.add_argument("--api-key-file", type=Path, default=None, help=f"API key file (or ${API_KEY_ENV})")
    parser.add_argument("--report", type=Path, default=Path("loadgen-report"), help="output folder")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgeinfer.bench.report import write_report
    from edgeinfer.bench.session import machine_facts
    from edgeinfer.bench.versions import package_versions
    from edgeinfer.serving.loadgen import workload
    from edgeinfer.serving.loadgen.clients import Target, make_client
    from edgeinfer.serving.loadgen.report import build_report, scenario_name
    from edgeinfer.serving.loadgen.runner import RunResult, closed_loop, open_loop
    from edgeinfer.serving.loadgen.scrape import MetricsUnavailable, ServerSampler

    _check_numbers(args)
    if args.rate is not None and args.concurrency is not None:
        raise InvalidInput(
            "--concurrency sets a closed loop's clients and --rate an open loop's arrivals: give one"
        )
    if args.poisson and args.rate is None:
        raise InvalidInput("--poisson shapes an open loop's arrivals: give --rate too")
    api_key = _api_key(args.api_key_file)
    target = Target.parse(
        args.url, args.model, endpoint=args.endpoint, api_key=api_key, timeout_ms=args.timeout_ms
    )
    if target.endpoint == "classify" and (target.transport != "http" or args.input == "tensor"):
        raise InvalidInput("--endpoint classify sends raw images over HTTP only")
    samples = workload.file_samples(args.images) if args.images else workload.photo_samples()
    if args.input == "tensor":
        samples = workload.as_tensors(samples, args.model)
    order = workload.schedule(samples, args.seed)
    levels = _levels(args.concurrency or "1,4,16") if args.rate is None else [args.rate]
    # the client waits past the deadline it sends, so the server's answer to it is what is counted
    request_timeout_s = max(30.0, (args.timeout_ms or 0.0) / 1000 + 5.0)

    metrics_host, metrics_port = _metrics_address(args.metrics_url, target)
    console = table_console(stderr=True)
    results: list[RunResult] = []

    async def main() -> None:
        for level in levels:
            sampler = (
                ServerSampler(metrics_host, metrics_port, api_key, model=target.model)
                if metrics_port
                else None
            )
            shared = make_client(target) if target.transport == "grpc" else None
            factory = _factory(target, shared)
            what = f"{level:g} req/s" if args.rate is not None else f"concurrency {int(level)}"
            console.print(f"[bold]{what}[/]: {args.warmup:g} s warm-up, {args.duration:g} s measured")
            if args.rate is not None:
                result = await open_loop(
                    factory, order, level, duration_s=args.duration, warmup_s=args.warmup,
                    poisson=args.poisson, seed=args.seed, sampler=sampler,
                    request_timeout_s=request_timeout_s,
                )  # fmt: skip
            else:
                result = await closed_loop(
                    factory,
                    order,
                    int(level),
                    duration_s=args.duration,
                    warmup_s=args.warmup,
                    sampler=sampler,
                    request_timeout_s=request_timeout_s,
                )
            if shared is not None:
                await shared.close()
            results.append(result)

    try:
        _run_fast(main())
    except MetricsUnavailable as exc:
        raise NotFound(
            f"{exc}; give the server's HTTP address with --metrics-url HOST:PORT, or --metrics-url none "
            "to run without the server's figures"
        ) from None
    except ConnectionError as exc:
        raise NotFound(f"cannot load {args.url}: {exc}") from None
    settings = {
        "url": args.url, "model": args.model, "endpoint": args.endpoint, "input": args.input,
        "levels": levels, "open_loop": args.rate is not None, "poisson": args.poisson,
        "duration_s": args.duration, "warmup_s": args.warmup, "timeout_ms": args.timeout_ms,
    }  # fmt: skip
    report = build_report(
        target, results=results, samples=samples, settings=settings, seed=args.seed,
        machine=machine_facts(), versions=package_versions(),
    )  # fmt: skip
    paths = write_report(report, args.report)
    _print(console, results, scenario_name)
    console.print(escape(f"report: {paths.json} and {paths.html}"))
    return 0


def _factory(target: Any, shared: Any) -> Any:
    from edgeinfer.serving.loadgen.clients import make_client

    if shared is not None:
        return lambda: shared
    return lambda: make_client(target)


def _check_numbers(args: argparse.Namespace) -> None:
    """Refuse numbers a run cannot honour (NaN, infinity, a negative or empty window) up front."""
    checks = (
        ("--rate", args.rate, False),
        ("--duration", args.duration, False),
        ("--warmup", args.warmup, True),
        ("--timeout-ms", args.timeout_ms, False),
    )
    for flag, value, zero_ok in checks:
        if value is None or (math.isfinite(value) and (value > 0 or (zero_ok and value == 0))):
            continue
        wanted = "a finite number >= 0" if zero_ok else "a finite number > 0"
        raise InvalidInput(f"{flag} must be {wanted}, got {value:g}")


def _levels(text: str) -> list[float]:
    try:
        levels = [float(int(part)) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidInput(f"--concurrency takes whole numbers like 1,4,16, got {text!r}") from None
    if not levels or any(level < 1 for level in levels):
        raise InvalidInput("--concurrency levels must be >= 1")
    return levels


def _api_key(path: Path | None) -> str | None:
    if path is not None:
        try:
            return path.read_text().strip() or None
        except OSError as exc:
            raise NotFound(f"cannot read the API key file {path}: {exc.strerror}") from None
    return os.environ.get(API_KEY_ENV) or None


def _metrics_address(url: str | None, target: Any) -> tuple[str, int]:
    if url is None:
        return (target.host, target.port) if target.transport == "http" else ("", 0)
    if url == "none":
        return "", 0
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        host, number = parts.hostname, parts.port
    except ValueError:  # a port out of range or not a number, an IPv6 host without its bracket
        host, number = None, None
    if not host or not number:
        raise InvalidInput(f"--metrics-url must be HOST:PORT (port 1-65535), got {url!r}")
    return host, number


def _print(console: Console, results: list[Any], name_of: Any) -> None:
    table = Table(title="edgeinfer loadgen")
    columns = ("scenario", "level", "answered/s", "p50 ms", "p90 ms", "p99 ms", "answered p99 ms", "errors",
               "server CPU %", "server RSS MB")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for r in results:
        every, ok = r.all_latency.summary(), r.ok_latency.summary()
        errors = ", ".join(f"{k} {v}" for k, v in sorted(r.errors.items())) or "0"
        server = r.server
        table.add_row(
            name_of(r), f"{r.level:g}", f"{r.ok / max(r.duration_s, 1e-9):.1f}", f"{every.p50_ms:.2f}",
            f"{every.p90_ms:.2f}", f"{every.p99_ms:.2f}", f"{ok.p99_ms:.2f}", errors,
            f"{server.cpu_percent_mean:.0f}" if server else "-",
            f"{server.rss_start_mb:.0f}->{server.rss_end_mb:.0f}" if server else "-",
        )  # fmt: skip
    console.print(table)


def _run_fast(work: Any) -> None:
    """Run on uvloop where installed (the serve extra): the client's own time is in every latency."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(work)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(work)
