"""``edgeinfer serve``: the KServe v2 inference server over HTTP and gRPC."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from edgeinfer.serving.settings import API_KEY_ENV, OFFLOAD_POLICIES, ServeSettings


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve models over HTTP and gRPC (KServe v2 / Open Inference Protocol)",
        description="Serve models over HTTP and gRPC (KServe v2, Triton-compatible). Settings come from "
        "--config (TOML), overridden by flags. The API key, if any, comes from --api-key-file or "
        f"${API_KEY_ENV}.",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="TOML file of settings (see docs/SERVING.md)"
    )
    parser.add_argument(
        "--model", "-m", dest="models", action="append", default=None,
        help="model to serve; repeat for several (default: mobilenet_v2)",
    )  # fmt: skip
    parser.add_argument("--host", default=None, help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--http-port", type=int, default=None, help="HTTP port (default: 8000; 0: any free)")
    parser.add_argument("--grpc-port", type=int, default=None, help="gRPC port (default: 8001; 0: any free)")
    parser.add_argument(
        "--no-grpc", dest="grpc_enabled", action="store_false", default=None, help="HTTP only"
    )
    parser.add_argument(
        "--no-idle-fast-path", dest="idle_fast_path", action="store_false", default=None,
        help="always go through the decode pool and the batch queue, even for an idle model's lone request",
    )  # fmt: skip
    parser.add_argument(
        "--no-prefetch-batches", dest="prefetch_batches", action="store_false", default=None,
        help="under load, let each compute thread wait for the event loop to pick its next batch",
    )  # fmt: skip
    parser.add_argument("--runtime", "-r", default=None, help="runtime (default: auto)")
    parser.add_argument(
        "--precision",
        "-p",
        default=None,
        help="fp32, fp16, int8 or bf16 (default: fp32; an imported model's one build)",
    )
    parser.add_argument("--max-batch-size", type=int, default=None, help="largest batch formed (default: 8)")
    parser.add_argument(
        "--max-queue-delay-us", type=int, default=None,
        help="longest a partial batch waits for requests already on their way (default: 2000)",
    )  # fmt: skip
    parser.add_argument(
        "--max-queue-size", type=int, default=None, help="samples admitted per model before 429 (default: 64)"
    )
    parser.add_argument(
        "--instances", type=int, default=None, help="runtime instances per model (default: 1)"
    )
    parser.add_argument(
        "--threads", type=int, default=None,
        help="compute threads per instance; models x instances x threads <= cores "
        "(default: cores / (models x instances))",
    )  # fmt: skip
    parser.add_argument(
        "--decode-threads", type=int, default=None, help="image decode threads (default: the cores)"
    )
    parser.add_argument(
        "--default-timeout-ms", type=float, default=None,
        help="deadline of requests that carry none (default: 2000)",
    )  # fmt: skip
    parser.add_argument("--max-request-bytes", type=int, default=None, help="largest request body accepted")
    parser.add_argument("--api-key-file", type=Path, default=None, help="file holding the API key")
    parser.add_argument("--home", dest="repository", type=Path, default=None, help="model repository root")
    parser.add_argument(
        "--stream", dest="streams", action="append", default=None, metavar="URI",
        help="also classify this video source (file, rtsp://..., /dev/video0, image folder) on the first "
        "model, looping files; per-stream figures appear in /metrics; repeat for several",
    )  # fmt: skip
    parser.add_argument("--stream-fps", type=float, default=None, help="frame rate for --stream sources")
    _offload_arguments(parser)
    parser.add_argument("--log-level", default=None, choices=("debug", "info", "warning", "error"))
    parser.set_defaults(handler=run)


_OVERRIDES = (
    "models", "host", "http_port", "grpc_port", "grpc_enabled", "runtime", "precision", "max_batch_size",
    "max_queue_delay_us", "max_queue_size", "idle_fast_path", "prefetch_batches", "instances", "threads",
    "decode_threads", "default_timeout_ms", "max_request_bytes", "api_key_file", "repository", "log_level",
    "streams", "stream_fps", "offload", "cloud_url", "cloud_model", "bandwidth_cap_mbps", "cloud_timeout_ms",
)  # fmt: skip


def _offload_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "offload", "route image requests between this server and a KServe v2 server in the cloud"
    )
    group.add_argument(
        "--offload", default=None, choices=OFFLOAD_POLICIES,
        help="edge: always here (default); cloud: always the cloud server; auto: per request, "
        "whichever is predicted faster (falls back here when the cloud fails)",
    )  # fmt: skip
    group.add_argument("--cloud-url", default=None, help="the cloud server, http://HOST:PORT")
    group.add_argument(
        "--cloud-model", default=None, help="the model's name on the cloud server (default: the same)"
    )
    group.add_argument(
        "--bandwidth-cap-mbps", type=float, default=None, help="most uplink bandwidth offloading may use"
    )
    group.add_argument(
        "--cloud-timeout-ms", type=float, default=None,
        help="longest wait for the cloud on one request (default: 5000; auto waits less when the "
        "device can still answer in time)",
    )  # fmt: skip


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings.load(args.config, {name: getattr(args, name) for name in _OVERRIDES})


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    level = logging.getLevelName(settings.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("edgeinfer").setLevel(min(logging.INFO, level))  # start-up and ready lines
    from edgeinfer.serving.server import InferenceServer

    offload_factory = None
    if settings.offload != "edge":  # the network layer's router, only when asked for
        from edgeinfer.network.serve_offload import ServerOffload

        offload_factory = ServerOffload
    return InferenceServer(settings, offload_factory=offload_factory).run()
