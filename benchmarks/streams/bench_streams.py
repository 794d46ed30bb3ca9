"""Many 15-FPS video streams on one engine: capture-to-prediction latency, drops, capacity.

    python benchmarks/streams/bench_streams.py [--runtimes onnxruntime,openvino,litert]
        [--precisions fp32,int8] [--duration 20] [--search-duration 12] [--fps 15]

For each runtime and precision:
1. **Target**: 4 streams at 15 FPS for ``--duration`` s. Reports capture-to-prediction p50/p99
   (per stream and pooled over every frame), the frames over two frame intervals (133 ms), and
   checks that every captured frame is accounted for (processed + dropped + rejected + failed).
2. **Capacity**: 4, 5, 6... streams at 15 FPS for ``--search-duration`` s each until the pooled
   drop rate reaches 5 % (3, 2, 1 when 4 is already over); the most streams below 5 % is the
   capacity.

Sources are 640x480 H.264 clips at 15 FPS made from real photos (pans and zooms), looped, so
every stream decodes real video on its own thread as a camera stream would. Each run also records
the CPU time this process used per processed frame and how busy the whole machine was (other
people's work on shared machines shows there). Stream start times
are staggered evenly over one frame interval (independent cameras are not in phase);
``--in-phase`` starts them together. Writes a JSON report (machine, versions, settings, figures)
to ``--out`` and prints Markdown rows for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from edgeinfer.engine import Engine
from edgeinfer.errors import EdgeInferError
from edgeinfer.imaging.samples import available_photos
from edgeinfer.streams import (
    CaptureOptions,
    FrameResult,
    PipelineOptions,
    RawFrame,
    Source,
    StreamEvent,
    StreamPipeline,
    open_source,
)
from edgeinfer.streams.clips import Motion, make_clip
from edgeinfer.streams.sinks.base import SinkReport
from edgeinfer.system.machine import collect

PHOTOS: tuple[tuple[str, Motion], ...] = (
    ("coffee", "pan"),
    ("chelsea", "zoom"),
    ("grace_hopper", "pan"),
    ("china", "zoom"),
    ("rocket", "zoom"),
    ("motorcycle_left", "pan"),
    ("astronaut", "zoom"),
    ("camera", "pan"),
)
TARGET_STREAMS = 4
DROP_LIMIT = 0.05


class Latencies:
    """A sink keeping every frame's capture-to-prediction latency (ns) and the events."""

    name = "latencies"

    def __init__(self) -> None:
        self.values: list[int] = []
        self.events: list[StreamEvent] = []

    def handle(self, result: FrameResult) -> None:
        self.values.append(result.latency_ns)

    def handle_event(self, event: StreamEvent) -> None:
        self.events.append(event)

    def flush(self, timeout_s: float) -> SinkReport:
        return SinkReport(self.name, len(self.values), 0)

    def close(self, summary: dict[str, object] | None) -> None:
        """Nothing to release."""


class Staggered:
    """A source whose first frame comes ``delay_s`` late (so streams are out of phase)."""

    def __init__(self, inner: Source, delay_s: float) -> None:
        self._inner = inner
        self._delay_s = delay_s
        self.uri = inner.uri
        self.live = inner.live

    @property
    def native_fps(self) -> float | None:
        return self._inner.native_fps

    def open(self) -> None:
        time.sleep(self._delay_s)
        self._inner.open()

    def read(self) -> RawFrame | None:
        return self._inner.read()

    def rewind(self) -> None:
        self._inner.rewind()

    def close(self) -> None:
        self._inner.close()


@dataclass(frozen=True)
class Run:
    streams: int
    duration_s: float
    captured: int
    processed: int
    dropped: int
    rejected: int
    failed: int
    drop_rate: float
    worst_stream_drop_rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    over_two_intervals: int
    worst_stream_p99_ms: float
    mean_batch: float
    achieved_fps_per_stream: float
    all_counted: bool
    cpu_ms_per_frame: float
    process_cpu_cores: float
    machine_busy_cores: float
    problems: list[str]


def clips(folder: Path, fps: int, seconds: float) -> list[Path]:
    photos = available_photos([name for name, _ in PHOTOS])
    out = []
    for name, motion in PHOTOS:
        if name in photos:
            path = folder / f"{name}-{motion}-640x480-{fps}fps.mp4"
            out.append(
                make_clip(
                    photos[name], path, frames=int(fps * seconds), fps=fps, size=(640, 480), motion=motion
                )
            )
    return out


def run_streams(
    engine: Engine, videos: list[Path], count: int, duration_s: float, args: argparse.Namespace
) -> Run:
    capture = CaptureOptions(fps=args.fps, loop=True)
    interval = 1.0 / args.fps
    sources: list[tuple[str, Source]] = []
    for i in range(count):
        source = open_source(str(videos[i % len(videos)]), capture)
        delay = 0.0 if args.in_phase else i * interval / count
        sources.append((f"cam{i + 1}", Staggered(source, delay)))
    latencies = Latencies()
    options = PipelineOptions(
        max_batch=args.max_batch or count,
        duration_s=duration_s,
        preprocess_on_capture=args.preprocess_on_capture,
    )
    process = psutil.Process()
    cpu_before = process.cpu_times()
    psutil.cpu_percent(percpu=True)  # starts the machine-wide interval
    summary = StreamPipeline(engine, sources, capture=capture, options=options, sinks=[latencies]).run()
    cpu_after = process.cpu_times()
    busy_cores = sum(psutil.cpu_percent(percpu=True)) / 100
    cpu_s = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    lat_ms = np.asarray(latencies.values, dtype=np.float64) / 1e6
    streams = summary.streams
    captured = sum(s.captured for s in streams)
    dropped = sum(s.dropped for s in streams)
    return Run(
        streams=count,
        duration_s=round(summary.duration_s, 2),
        captured=captured,
        processed=sum(s.processed for s in streams),
        dropped=dropped,
        rejected=sum(s.rejected for s in streams),
        failed=sum(s.failed for s in streams),
        drop_rate=round(dropped / captured, 4) if captured else 1.0,
        worst_stream_drop_rate=max(s.drop_rate for s in streams),
        p50_ms=round(float(np.percentile(lat_ms, 50)), 1) if lat_ms.size else float("nan"),
        p99_ms=round(float(np.percentile(lat_ms, 99)), 1) if lat_ms.size else float("nan"),
        max_ms=round(float(lat_ms.max()), 1) if lat_ms.size else float("nan"),
        over_two_intervals=int((lat_ms > 2000 / args.fps).sum()),
        worst_stream_p99_ms=max(s.latency_p99_ms or 0.0 for s in streams),
        mean_batch=round(summary.mean_batch_size, 2),
        achieved_fps_per_stream=round(float(np.mean([s.achieved_fps for s in streams])), 2),
        all_counted=all(s.captured == s.processed + s.dropped + s.rejected + s.failed for s in streams),
        cpu_ms_per_frame=round(cpu_s * 1000 / max(len(latencies.values), 1), 2),
        process_cpu_cores=round(cpu_s / summary.duration_s, 2),
        machine_busy_cores=round(busy_cores, 2),
        problems=[f"{e.stream}: {e.message}" for e in latencies.events if e.level != "info"],
    )


def capacity_search(engine: Engine, videos: list[Path], args: argparse.Namespace, label: str) -> list[Run]:
    """Up from 4 streams while drops stay under 5 %; down from 3 if 4 is already too many."""
    search: list[Run] = []
    count, step = TARGET_STREAMS, 1
    while 1 <= count <= args.max_streams:
        result = run_streams(engine, videos, count, args.search_duration, args)
        search.append(result)
        print(
            f"{label} {count} streams: drops {result.drop_rate:.1%}, p99 {result.p99_ms} ms, "
            f"{result.cpu_ms_per_frame} CPU ms/frame, machine busy {result.machine_busy_cores} cores"
        )
        passed = result.drop_rate < DROP_LIMIT
        if count == TARGET_STREAMS and not passed:
            step = -1
        elif passed != (step > 0):
            break
        count += step
    return search


def bench_config(
    runtime: str, precision: str, videos: list[Path], args: argparse.Namespace
) -> dict[str, Any]:
    try:
        engine = Engine.load("mobilenet_v2", runtime=runtime, precision=precision, threads=args.threads)
    except (EdgeInferError, ImportError) as exc:  # not installed, or not built for this precision yet
        print(f"skip {runtime} {precision}: {exc}")
        return {"runtime": runtime, "precision": precision, "skipped": str(exc)}
    with engine:
        engine.warmup(tuple(range(1, 9)))
        runtime_name = engine.runtime.name
        target = run_streams(engine, videos, TARGET_STREAMS, args.duration, args)
        print(f"{runtime_name} {precision} target: {target}")
        search = capacity_search(engine, videos, args, f"{runtime_name} {precision}")
        passing = [r.streams for r in search if r.drop_rate < DROP_LIMIT]
        return {
            "runtime": runtime_name,
            "precision": precision,
            "threads": args.threads,
            "target": target.__dict__,
            "capacity_streams": max(passing) if passing else 0,
            "capacity_limited_by_search": bool(passing) and max(passing) == args.max_streams,
            "search": [r.__dict__ for r in search],
        }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in ("edgeinfer", "onnxruntime", "openvino", "ai-edge-litert", "av", "numpy", "pillow"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return found


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| runtime | precision | 4 streams: p50 / p99 ms (pooled) | worst stream p99 | frames > 133 ms | "
        "dropped (all counted) | mean batch | CPU ms/frame | machine busy (cores) | "
        "streams at 15 FPS with < 5 % drops |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        if "skipped" in row:
            lines.append(f"| {row['runtime']} | {row['precision']} | skipped: {row['skipped']} |" + " |" * 7)
            continue
        t = row["target"]
        cap = f"{row['capacity_streams']}" + ("+" if row["capacity_limited_by_search"] else "")
        counted = "yes" if t["all_counted"] else "NO"
        cells = [
            row["runtime"],
            row["precision"],
            f"{t['p50_ms']} / {t['p99_ms']}",
            f"{t['worst_stream_p99_ms']:.1f}",
            f"{t['over_two_intervals']} of {t['processed']}",
            f"{t['dropped']} of {t['captured']} ({t['drop_rate']:.1%}, {counted})",
            f"{t['mean_batch']}",
            f"{t['cpu_ms_per_frame']}",
            f"{t['machine_busy_cores']}",
            cap,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runtimes", default="onnxruntime,openvino,litert")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of the 4-stream target run")
    parser.add_argument("--search-duration", type=float, default=12.0, help="seconds per capacity step")
    parser.add_argument("--max-streams", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=0, help="0: as many as streams")
    parser.add_argument("--threads", type=int, default=None, help="runtime threads (default: physical cores)")
    parser.add_argument(
        "--preprocess-on-capture", action="store_true", help="preprocess on the capture threads"
    )
    parser.add_argument("--in-phase", action="store_true", help="start every stream at the same instant")
    parser.add_argument("--out", type=Path, default=Path("out/bench-streams"))
    args = parser.parse_args()
    videos = clips(args.out / "clips", int(args.fps), seconds=8.0)
    load_before = os.getloadavg()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    results = [
        bench_config(runtime, precision, videos, args)
        for runtime in args.runtimes.split(",")
        for precision in args.precisions.split(",")
    ]
    report = {
        "benchmark": "streams",
        "started": started,
        "machine": collect().to_dict(),
        "versions": versions(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "threads_alive_after": threading.active_count(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "videos": [str(v) for v in videos],
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"streams-{started.replace(':', '')}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(markdown(report))
    print(f"report: {path}")


if __name__ == "__main__":
    main()
