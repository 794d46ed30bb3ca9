"""``edgeinfer stream``: classify many live sources at once on one engine.

    edgeinfer stream cam1.mp4 cam2.mp4 rtsp://... /dev/video0 images/ --fps 15 \\
        --mqtt mqtt://127.0.0.1:1883/edgeinfer --jsonl out.jsonl --duration 60
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.markup import escape

from edgeinfer.cli.common import add_engine_args, load_engine, table_console
from edgeinfer.engine import Engine
from edgeinfer.errors import EdgeInferError, InvalidInput
from edgeinfer.streams.config import CaptureOptions, PipelineOptions
from edgeinfer.streams.events import EventQueue
from edgeinfer.streams.pipeline import RunSummary, StreamPipeline
from edgeinfer.streams.sinks.base import Sink
from edgeinfer.streams.sources import RefusedSource, Source, file_url_path, open_source, stream_names


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "stream",
        help="classify video files, network streams, cameras and image folders in real time",
        description="Each source is captured on its own thread; only the newest frame of each stream "
        "waits for the engine (older ones are dropped and counted); frames from all streams are "
        "batched fairly on one engine.",
    )
    parser.add_argument(
        "sources",
        nargs="+",
        help="video files, URLs (rtsp://, http://, tcp://, udp://...), camera devices (/dev/video0 or 0), "
        "image folders",
    )
    parser.add_argument("--fps", type=float, default=None, help="capture rate (default: each video's own)")
    parser.add_argument(
        "--folder-fps", type=float, default=15.0, help="rate for image folders without --fps (default: 15)"
    )
    parser.add_argument("--loop", action="store_true", help="restart files and folders at their end")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--mqtt", metavar="URL", help="publish to mqtt://HOST[:PORT][/TOPIC_PREFIX]")
    parser.add_argument("--mqtt-qos", type=int, choices=(0, 1), default=1, help="MQTT QoS (default: 1)")
    parser.add_argument("--jsonl", type=Path, metavar="PATH", help="write results, events and summary here")
    parser.add_argument("--annotate", type=Path, metavar="OUT.mp4", help="write annotated video")
    parser.add_argument("--max-batch", type=int, default=8, help="frames per inference, at most (default: 8)")
    parser.add_argument(
        "--batch-delay-us",
        type=int,
        default=0,
        help="wait this long for other streams' frames, not for stalled ones (default: 0)",
    )
    parser.add_argument(
        "--preprocess-on-capture",
        action="store_true",
        help="preprocess on each source's thread, overlapping it with inference",
    )
    parser.add_argument("--top-k", type=int, default=5, help="labels per frame (default: 5)")
    parser.add_argument(
        "--stall-timeout", type=float, default=5.0, help="seconds without a frame before a stream is stalled"
    )
    parser.add_argument(
        "--reconnect-max-s",
        type=float,
        default=30.0,
        help="a live source that was working and dropped is opened again after 1, 2, 4... s, at most "
        "this long apart (0: never; default: %(default)s)",
    )
    parser.add_argument("--no-display", action="store_true", help="no live table, only messages")
    add_engine_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        capture = CaptureOptions(
            fps=args.fps,
            folder_fps=args.folder_fps,
            loop=args.loop,
            stall_timeout_s=args.stall_timeout,
            reconnect_max_s=args.reconnect_max_s,
        )
        options = PipelineOptions(
            max_batch=args.max_batch,
            max_batch_delay_us=args.batch_delay_us,
            top_k=args.top_k,
            duration_s=args.duration,
            preprocess_on_capture=args.preprocess_on_capture,
        )
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    console = Console(stderr=True, highlight=False)
    sources = _open_sources(args.sources, capture, console)
    outputs = [args.jsonl] if args.jsonl else []
    if args.annotate:  # refuse a bad output name now, not after the engine loaded
        from edgeinfer.streams.annotate import annotated_paths

        outputs += annotated_paths(args.annotate, [name for name, _ in sources]).values()
    _refuse_overwriting_sources(outputs, args.sources)
    usable = sum(not isinstance(source, RefusedSource) for _, source in sources)
    engine = load_engine(args)
    with engine:
        engine.warmup(sorted({1, min(usable, options.max_batch)}))
        events = EventQueue()
        sinks = _open_sinks(args, [name for name, _ in sources], events)
        return _run_pipeline(
            engine,
            sources,
            capture=capture,
            options=options,
            sinks=sinks,
            events=events,
            args=args,
            console=console,
        )


def _open_sources(uris: list[str], capture: CaptureOptions, console: Console) -> list[tuple[str, Source]]:
    """Every argument as a stream. One that cannot be a source (``ftp://...``) fails as the run
    starts, so it is in the summary, the JSON lines and the exit code; none usable is an error now."""
    sources: list[tuple[str, Source]] = []
    for name, uri in zip(stream_names(uris), uris, strict=True):
        try:
            sources.append((name, open_source(uri, capture)))
        except EdgeInferError as exc:
            sources.append((name, RefusedSource(uri, exc)))
    refused = [(name, source) for name, source in sources if isinstance(source, RefusedSource)]
    if len(refused) == len(sources):
        for name, source in refused:
            console.print(f"[bold red]error[/]: {escape(name)}: {escape(str(source.error))}", soft_wrap=True)
        raise InvalidInput("no usable source among the arguments")
    return sources


def _refuse_overwriting_sources(outputs: list[Path], uris: list[str]) -> None:
    """An output file that is one of the sources would destroy it (the JSON lines file truncates a
    video before it is read; an annotated video overwrites it while it is read): refused."""
    local = []
    for uri in uris:
        if uri.lower().startswith("file://"):
            try:
                local.append(Path(file_url_path(uri)))
            except InvalidInput:
                continue  # refused as a source already
        elif "://" not in uri:
            local.append(Path(uri))
    if len({out.resolve() for out in outputs}) < len(outputs):
        raise InvalidInput(
            f"two outputs are the same file ({', '.join(map(str, outputs))}): name each its own"
        )
    for out in outputs:
        for source in local:
            if _same_file(out, source):
                raise InvalidInput(
                    f"the output {out} is the source {source}: writing it would destroy the source; "
                    "give the output another name"
                )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return (a.exists() and b.exists() and os.path.samefile(a, b)) or a.resolve() == b.resolve()
    except OSError:
        return False


def _open_sinks(args: argparse.Namespace, streams: list[str], events: EventQueue) -> list[Sink]:
    sinks: list[Sink] = []
    if args.jsonl:
        from edgeinfer.streams.sinks.jsonl import JsonlSink

        sinks.append(JsonlSink(args.jsonl, events))
    if args.mqtt:
        from edgeinfer.streams.sinks.mqtt import MqttOptions, MqttSink

        mqtt = MqttSink(MqttOptions.from_url(args.mqtt, qos=args.mqtt_qos), events)
        mqtt.wait_connected(
            2.0
        )  # a normal start publishes from the first frame; a down broker waits no longer
        sinks.append(mqtt)
    if args.annotate:
        from edgeinfer.streams.annotate import AnnotateSink

        sinks.append(AnnotateSink(args.annotate, streams, events))
    return sinks


def _run_pipeline(
    engine: Engine,
    sources: list[tuple[str, Source]],
    *,
    capture: CaptureOptions,
    options: PipelineOptions,
    sinks: list[Sink],
    events: EventQueue,
    args: argparse.Namespace,
    console: Console,
) -> int:
    from edgeinfer.streams.display import ConsoleReporter, print_summary

    pipeline = StreamPipeline(engine, sources, capture=capture, options=options, sinks=sinks, events=events)
    live = not args.no_display and console.is_terminal
    reporter = ConsoleReporter(pipeline.snapshots, console, live=live)
    pipeline.on_event = reporter.event

    def stop(signum: int, frame: FrameType | None) -> None:
        pipeline.stop()

    # Ctrl-C and SIGTERM (docker stop, systemd) both end the run normally: sinks flushed, files
    # finished, summary printed, and exit code 0 unless something failed.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with reporter:
            summary = pipeline.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print_summary(summary, table_console(highlight=False))
    if not any(s.processed for s in summary.streams):
        console.print(
            f"[bold red]error[/]: no frame was processed: {escape(_why_nothing(summary))}", soft_wrap=True
        )
        return 1
    return 1 if summary.errors else 0


def _why_nothing(summary: RunSummary) -> str:
    if all(s.status == "failed" for s in summary.streams):
        return "every source failed (see the messages above)"
    if not any(s.captured for s in summary.streams):
        limit = summary.settings.get("duration_s")
        within = f" within --duration {limit:g} s" if isinstance(limit, float) else ""
        return f"no source delivered a frame{within}"
    return "every captured frame was rejected, dropped or failed (see the messages above)"
