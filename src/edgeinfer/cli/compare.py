"""``edgeinfer compare``: edge in-process, edge via the local server, and cloud through emulated links."""

from __future__ import annotations

import argparse
import math
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgeinfer.cli.common import check_report_dir, positive_int
from edgeinfer.errors import InvalidInput, RuntimeUnavailable
from edgeinfer.network.drive import Load
from edgeinfer.network.profiles import PROFILES, parse_profiles
from edgeinfer.network.router import POLICIES

if TYPE_CHECKING:
    from edgeinfer.network.compare import CompareSettings, PathResult


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="measure edge against cloud over emulated networks (report JSON + HTML)",
        description=(
            "Run the same stream of real images on the device, through the local server, and through a "
            "KServe v2 server reached over emulated network paths; write report.json and report.html with "
            "latency distributions, stages, bytes per inference and the edge/cloud crossover."
        ),
    )
    parser.add_argument(
        "--profile", default="wifi,lte", help=f"comma-separated profiles from: {', '.join(PROFILES)}"
    )
    parser.add_argument("--model", default="mobilenet_v2", help="model to compare (default %(default)s)")
    parser.add_argument("--runtime", default="auto", help="device runtime (default %(default)s)")
    parser.add_argument("--precision", default=None, help="fp32 (default) or int8")
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="compute threads on the device and the server"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per path and profile")
    parser.add_argument("--min-requests", type=int, default=10, help="at least this many requests per path")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="Poisson arrivals per second (default: closed loop, one image at a time)",
    )
    parser.add_argument("--deadline-ms", type=float, default=None, help="per-request deadline for the router")
    parser.add_argument("--samples", type=int, default=10, help="distinct real images in the stream")
    parser.add_argument("--upload", default="jpeg,tensor", help="cloud uploads to measure: jpeg, tensor")
    parser.add_argument("--policy", default="edge,cloud", help=f"paths: any of {', '.join(POLICIES)}")
    parser.add_argument(
        "--cloud-url", default=None, help="a real remote KServe v2 server (default: start one here)"
    )
    parser.add_argument(
        "--cloud-speedup",
        type=float,
        default=1.0,
        help="model a cloud this many times faster than this machine (applied and labelled)",
    )
    parser.add_argument(
        "--bandwidth-cap-mbps", type=float, default=None, help="uplink cap for offloading (auto)"
    )
    parser.add_argument("--split", default=None, help="split computing: 'auto' or a cut index K")
    parser.add_argument("--seed", type=int, default=0, help="seed for samples, jitter and arrivals")
    parser.add_argument(
        "--no-isolate-cpus",
        dest="isolate_cpus",
        action="store_false",
        help="do not pin the device to half the CPUs and the stand-in cloud and links to the other half",
    )
    parser.add_argument("--report", type=Path, default=Path("out/compare"), help="output folder")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        import hdrh  # noqa: F401 - the report's statistics
        import uvicorn  # noqa: F401 - the stand-in cloud
    except ModuleNotFoundError as exc:
        raise RuntimeUnavailable(
            f"edgeinfer compare needs {exc.name}: pip install 'edgeinfer[network]'"
        ) from None
    from edgeinfer.network.compare import run_compare
    from edgeinfer.network.compare_report import build_report, write

    settings = build_settings(args)
    # SIGTERM unwinds like Ctrl-C, so the server and link processes this run started are stopped.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        result = run_compare(settings)
    finally:
        signal.signal(signal.SIGTERM, previous)
    report = build_report(result, tuple(sys.argv))
    paths = write(report, args.report)
    for config in report.configurations:  # the report's figures, as its page shows them
        scenario = config.scenarios[0]
        p50 = scenario.latency.p50_ms if scenario.samples else float("nan")
        print(f"{config.label:32s} n={scenario.samples:5d}  p50 {p50:8.1f} ms  errors {scenario.errors}")
    print(f"report: {paths[0]} and {paths[1]}")
    return _all_failed(result.results)


def build_settings(args: argparse.Namespace) -> CompareSettings:
    """The CompareSettings the arguments describe; a bad value raises InvalidInput with the fix,
    before anything is measured. A repeated profile, upload or policy (in any case) runs once."""
    from edgeinfer.network.compare import CompareSettings

    policies = _items(args.policy)
    bad = [p for p in policies if p not in POLICIES]
    if bad or not policies:
        raise InvalidInput(f"--policy takes a list of {', '.join(POLICIES)}, got {args.policy!r}")
    for option, value in (
        ("--duration", args.duration),
        ("--rate", args.rate),
        ("--deadline-ms", args.deadline_ms),
        ("--cloud-speedup", args.cloud_speedup),
        ("--bandwidth-cap-mbps", args.bandwidth_cap_mbps),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InvalidInput(f"{option} must be a finite number > 0, got {value}")
    if args.min_requests < 1:
        raise InvalidInput(f"--min-requests must be at least 1, got {args.min_requests}")
    try:
        check_report_dir(args.report)  # before the images are made and anything is measured
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return CompareSettings(
        profiles=tuple(parse_profiles(args.profile)),
        out_dir=args.report,
        model=args.model,
        runtime=args.runtime,
        precision=args.precision,
        threads=args.threads,
        load=Load(
            duration_s=args.duration,
            min_requests=args.min_requests,
            rate_per_s=args.rate,
            deadline_ms=args.deadline_ms,
            seed=args.seed,
        ),
        uploads=_items(args.upload),  # type: ignore[arg-type]
        policies=policies,  # type: ignore[arg-type]
        cloud_url=args.cloud_url,
        cloud_speedup=args.cloud_speedup,
        bandwidth_cap_mbps=args.bandwidth_cap_mbps,
        samples=args.samples,
        split=args.split,
        seed=args.seed,
        isolate_cpus=args.isolate_cpus,
    )


def _items(text: str) -> tuple[str, ...]:
    """A comma-separated list in lower case, each item once, in first-seen order: a repeat would
    measure the same path again under the same label and overwrite its logs."""
    return tuple(dict.fromkeys(item.strip().lower() for item in text.split(",") if item.strip()))


def _all_failed(results: Sequence[PathResult]) -> int:
    """1 (after saying which) when some path failed every request it sent, else 0: a run whose
    cloud path never answered must not read as a success to a script. Some failures are figures."""
    dead = [config for config in results if config.trace.failed and all(config.trace.failed)]
    for config in dead:
        first = config.trace.error_messages[0] if config.trace.error_messages else "no message"
        print(
            f"edgeinfer compare: every request on {config.label} failed ({first}); see the report",
            file=sys.stderr,
        )
    return 1 if dead else 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
