"""``edgeinfer compare``: the same stream of real images on the device, via a local server, and in the cloud.

Paths, each measured end to end from the encoded image in hand to the prediction:

1. ``edge``: the engine in this process (the device);
2. ``edge-server``: ``edgeinfer serve`` on this machine over loopback (no emulated link);
3. ``cloud``: a KServe v2 server through ``edgeinfer link`` with each network profile, uploading
   the JPEG (``jpeg``) or the preprocessed FP32 tensor (``tensor``);
4. ``auto`` (with ``--policy auto``): the hybrid router choosing per request;
5. ``split`` (with ``--split``): head on the device, tail in the cloud (see :mod:`.split`).

Unless ``--cloud-url`` names a real remote, the stand-in cloud is ``edgeinfer serve`` started on
this same machine; the report says so, and a compute speed-up factor (``--cloud-speedup``) models
a faster cloud by scaling the server's measured work, in columns labelled as adjusted. Cloud
paths run before the engine is loaded here, so the device memory they report has no model in it.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer.errors import InvalidInput, UpstreamError
from edgeinfer.network.backends import UPLOADS, CloudBackend, EdgeBackend, Engineish, Prepare, Upload
from edgeinfer.network.client import CloudError, KServeClient, cloud_address
from edgeinfer.network.drive import Load, Trace, drive
from edgeinfer.network.processes import LinkProcess, ServerProcess, ServerWork
from edgeinfer.network.profiles import LinkProfile
from edgeinfer.network.router import HybridRouter, Policy, RouterSettings

#: A measurement waits for every answer: the slowest profile moves a 602 kB tensor in 6.3 s.
MEASURE_TIMEOUT_MS = 120_000.0


MAX_SAMPLES = 2000  # distinct images, about 45 KB each, made (~13 ms each) before anything runs


@dataclass(frozen=True)
class CompareSettings:
    """What to compare and how hard. Every figure has its unit in its name."""

    profiles: tuple[LinkProfile, ...]
    out_dir: Path
    model: str = "mobilenet_v2"
    runtime: str = "auto"
    precision: str | None = None
    threads: int | None = None
    load: Load = field(default_factory=Load)
    uploads: tuple[Upload, ...] = ("jpeg", "tensor")
    policies: tuple[Policy, ...] = ("edge", "cloud")
    cloud_url: str | None = None
    cloud_speedup: float = 1.0
    bandwidth_cap_mbps: float | None = None
    samples: int = 10
    split: str | None = None
    seed: int = 0
    isolate_cpus: bool = True

    def __post_init__(self) -> None:
        if not self.profiles:
            raise InvalidInput("give at least one network profile (--profile lte)")
        if not (math.isfinite(self.cloud_speedup) and self.cloud_speedup > 0):
            raise InvalidInput(f"--cloud-speedup must be a finite number > 0, got {self.cloud_speedup}")
        unknown = [u for u in self.uploads if u not in UPLOADS]
        if unknown or not self.uploads:  # none: a cloud path would silently not be measured
            raise InvalidInput(f"unknown upload {unknown or '(none)'}; choose from {', '.join(UPLOADS)}")
        if not 1 <= self.samples <= MAX_SAMPLES:
            raise InvalidInput(
                f"--samples must be 1..{MAX_SAMPLES} (each is made and held in memory before the run), "
                f"got {self.samples}"
            )


@dataclass
class PathResult:
    """One measured path (on one profile for the networked ones)."""

    path: str
    trace: Trace
    profile: LinkProfile | None = None
    upload: str | None = None
    server: ServerWork | None = None
    router_stats: dict[str, object] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def label(self) -> str:
        parts = [self.path]
        if self.upload and self.path != "edge":
            parts.append(self.upload)
        if self.profile is not None:
            parts.append(self.profile.name)
        return " · ".join(parts)


@dataclass
class CompareRun:
    settings: CompareSettings
    images: list[bytes]
    image_names: list[str]
    results: list[PathResult] = field(default_factory=list)
    cloud_url: str = ""
    same_machine: bool = True
    edge_runtime: str = ""
    notes: list[str] = field(default_factory=list)
    split_points: list[dict[str, Any]] = field(default_factory=list)
    device_cpus: set[int] | None = None
    cloud_cpus: set[int] | None = None


def load_images(count: int, seed: int) -> tuple[list[bytes], list[str]]:
    """Real photos as a camera hands them over: the bench's samples as JPEG (PNG sources
    re-encoded at quality 90, named ``chelsea.png.jpg``)."""
    from edgeinfer.bench.samples import load_samples

    samples = load_samples(count, seed, encoding="jpeg")
    return [s.data for s in samples], [s.name for s in samples]


def run_compare(settings: CompareSettings) -> CompareRun:
    """Measure every path; blocking. Starts (and stops) its own server and link processes."""
    if settings.split is not None:
        from edgeinfer.network.split_compare import check_split_arg

        check_split_arg(settings)  # before minutes of measuring, not after
    if settings.cloud_url is not None and ({"cloud", "auto"} & set(settings.policies) or settings.split):
        check_cloud(settings.cloud_url)  # auto and split measure the cloud too
    images, names = load_images(settings.samples, settings.seed)
    run = CompareRun(settings, images, names)
    before = os.sched_getaffinity(0)
    if settings.isolate_cpus and len(before) >= 2:
        ordered = sorted(before)
        run.device_cpus, run.cloud_cpus = set(ordered[: len(ordered) // 2]), set(ordered[len(ordered) // 2 :])
        os.sched_setaffinity(0, run.device_cpus)
        run.notes.append(
            f"The device (this process: engine, client) ran on CPU {sorted(run.device_cpus)}; the stand-in "
            f"cloud and the emulated links on CPU {sorted(run.cloud_cpus)}, as two machines would. Other "
            "people's processes on this shared machine were not pinned."
        )
    try:
        _run_all(run)
    finally:
        os.sched_setaffinity(0, before)
    return run


def _run_all(run: CompareRun) -> None:
    settings = run.settings
    logs = settings.out_dir / "logs"
    with ServerProcess(
        settings.model,
        logs / "server.log",
        runtime=settings.runtime,
        precision=settings.precision,
        threads=settings.threads,
        cpus=run.cloud_cpus,
    ) as local:
        local.wait_ready()
        run.cloud_url = settings.cloud_url or local.url
        run.same_machine = settings.cloud_url is None
        _run_cloud_paths(run, local, logs)
        if run.device_cpus:  # the local server is the device's own: measured on the device's CPU
            local.pin(run.device_cpus)
        _measure(run, "edge-server", local, profile=None, upload="jpeg", url=local.url)
        if run.cloud_cpus:
            local.pin(run.cloud_cpus)
        from edgeinfer.engine.engine import Engine

        engine = Engine.load(
            settings.model, runtime=settings.runtime, precision=settings.precision, threads=settings.threads
        )
        try:
            run.edge_runtime = engine.runtime.name
            _measure_edge(run, engine)
            if "auto" in settings.policies:
                from edgeinfer.network.compare_policies import run_policy_paths

                run_policy_paths(run, engine, local, logs)
            split_inputs = None
            if settings.split is not None:
                from edgeinfer.network.split_compare import SplitInputs

                split_inputs = SplitInputs.from_engine(run, engine)
        finally:
            engine.close()
        if split_inputs is not None:
            from edgeinfer.network.split_compare import run_split_paths

            run_split_paths(run, split_inputs, logs)


def check_cloud(url: str, timeout_s: float = 10.0) -> None:
    """Refuse a cloud URL that does not answer ``GET /v2/health/ready`` with 200, before anything
    is measured (every request of the run would fail otherwise, against the link's address)."""

    async def probe() -> None:
        client = KServeClient(url if "://" in url else f"http://{url}")
        try:
            await client.ready(timeout_s=timeout_s)
        finally:
            await client.close()

    try:
        asyncio.run(probe())
    except CloudError as exc:
        raise UpstreamError(f"--cloud-url {url}: {exc}") from None
    except OSError as exc:
        raise UpstreamError(f"--cloud-url {url} is unreachable: {exc.strerror or exc}") from None


def target_of(url: str) -> tuple[str, int]:
    return cloud_address(url)


def _run_cloud_paths(run: CompareRun, local: ServerProcess, logs: Path) -> None:
    if "cloud" not in run.settings.policies:
        return
    for profile in run.settings.profiles:
        with LinkProcess(
            profile,
            target_of(run.cloud_url),
            logs / f"link-{profile.name}.log",
            seed=run.settings.seed,
            cpus=run.cloud_cpus,
        ) as link:
            link.wait_ready()
            for upload in run.settings.uploads:
                _measure(run, "cloud", local, profile=profile, upload=upload, url=link.url)


def _measure(
    run: CompareRun,
    path: str,
    local: ServerProcess,
    *,
    profile: LinkProfile | None,
    upload: Upload,
    url: str,
) -> None:
    settings = run.settings
    prepare, shape = (None, None) if upload == "jpeg" else device_prepare(settings)
    backend = CloudBackend(
        KServeClient(url), settings.model, upload=upload, prepare=prepare, sample_shape=shape
    )
    router = HybridRouter(RouterSettings(policy="cloud", cloud_timeout_ms=MEASURE_TIMEOUT_MS), None, backend)
    observe_server = run.same_machine or path == "edge-server"
    before: list[dict[str, float]] = []  # the server's counters once the warm-up is over

    def snapshot() -> None:
        if observe_server:
            before.append(local.metrics())

    trace = drive_router(router, run.images, settings.load, on_measuring=snapshot)
    server = ServerWork.between(before[0], local.metrics()) if before else None
    result = PathResult(path, trace, profile, upload, server, router.stats.as_dict())
    if path == "edge-server":
        result.extra["server_cpu_ms"] = server.cpu_ms if server else None
    run.results.append(result)


def _measure_edge(run: CompareRun, engine: Engineish) -> None:
    router = HybridRouter(RouterSettings(policy="edge"), EdgeBackend(engine), None)
    trace = drive_router(router, run.images, run.settings.load)
    run.results.append(PathResult("edge", trace, upload=None, router_stats=router.stats.as_dict()))


def drive_router(
    router: HybridRouter,
    images: Sequence[bytes],
    load: Load,
    on_measuring: Callable[[], None] | None = None,
) -> Trace:
    async def go() -> Trace:
        await router.start()
        try:
            return await drive(router, images, load, on_measuring)
        finally:
            await router.close()  # closes the backends' pools and connections, not the engine

    return asyncio.run(go())


def device_prepare(settings: CompareSettings) -> tuple[Prepare, tuple[int, ...]]:
    """Decode + preprocess on the device without loading the runtime (for tensor uploads)."""
    from edgeinfer.imaging.decode import decode_image
    from edgeinfer.imaging.preprocess import Preprocessor
    from edgeinfer.models.repository import ModelRepository

    config = ModelRepository().get(settings.model, settings.precision).config
    preprocessor = Preprocessor(config.preprocessing)

    def prepare(image: bytes) -> np.ndarray:
        return preprocessor(decode_image(image))

    return prepare, tuple(preprocessor.sample_shape)
