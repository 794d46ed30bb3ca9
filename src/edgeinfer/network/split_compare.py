"""Split computing measured: the device runs the head, the cloud tail answers through the emulated link.

For each profile, :func:`run_split_paths` profiles the model's layers on this machine, predicts the
cost of every cut and transport on that link (:func:`edgeinfer.network.split.choose_cut`), and
measures the cut asked for (``--split K``) or the best real split (``--split auto``) end to end,
with the tail served by the real server stack in its own process. It also checks that the split
model's outputs equal the unsplit model's on every sample image.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeinfer.errors import InvalidInput
from edgeinfer.network.backends import REQUEST_OVERHEAD_BYTES, Answer, Prepare
from edgeinfer.network.client import CloudError, KServeClient
from edgeinfer.network.compare import (
    CompareRun,
    CompareSettings,
    PathResult,
    device_prepare,
    drive_router,
    target_of,
)
from edgeinfer.network.compare_report import crossover_model
from edgeinfer.network.processes import ChildProcess, LinkProcess, ServerProcess, free_port
from edgeinfer.network.profiles import LinkProfile
from edgeinfer.network.router import HybridRouter, RouterSettings
from edgeinfer.network.split import (
    TAIL_INPUT,
    CutPoint,
    Quantizer,
    SplitArtifacts,
    SplitEstimate,
    choose_cut,
    cut_points,
    encode,
    load,
    partition,
    profile_layers,
)
from edgeinfer.runtimes.base import RuntimeOptions
from edgeinfer.runtimes.registry import open_runtime


class SplitBackend:
    """The device half: decode, preprocess, head, encode; then the tail on a KServe v2 server."""

    name = "split"

    def __init__(
        self, client: KServeClient, split: SplitArtifacts, prepare: Prepare, threads: int | None
    ) -> None:
        self.client = client
        self.split = split
        self._prepare = prepare
        self._head = open_runtime("onnxruntime", split.head, RuntimeOptions(threads=threads))

    def upload_bytes(self, image: bytes) -> int:
        return self.split.cut.bytes(self.split.transport) + REQUEST_OVERHEAD_BYTES

    def device_half(self, image: bytes) -> tuple[np.ndarray, dict[str, int]]:
        t0 = time.perf_counter_ns()
        x = self._prepare(image)[np.newaxis]
        t1 = time.perf_counter_ns()
        middle = next(iter(self._head.run({self._head.inputs[0].name: x}).values()))
        t2 = time.perf_counter_ns()
        wire = encode(middle, self.split.transport, self.split.quantizer)
        t3 = time.perf_counter_ns()
        return wire, {"prepare": t1 - t0, "head": t2 - t1, "encode": t3 - t2}

    async def run(self, image: bytes, timeout_s: float) -> Answer:
        start = time.perf_counter_ns()
        wire, stages = await asyncio.to_thread(self.device_half, image)
        left_s = max(1e-3, timeout_s - (time.perf_counter_ns() - start) / 1e9)
        result = await self.client.infer_tensor(
            self.split.name, TAIL_INPUT, wire, timeout_s=left_s, output="probabilities"
        )
        probabilities = result.outputs.get("probabilities")
        if probabilities is None or probabilities.shape[0] != 1:
            raise CloudError(
                "malformed", f"the tail answered {list(result.outputs)} instead of probabilities"
            )
        stages["remote"] = result.total_ns
        return Answer(
            np.asarray(probabilities[0], np.float32), stages, result.bytes_sent, result.bytes_received
        )

    async def probe(self, timeout_s: float) -> float:
        return await self.client.ready(timeout_s=timeout_s)

    async def close(self) -> None:
        await self.client.close()
        self._head.close()


class TailServerProcess(ServerProcess):
    """``python -m edgeinfer.network.split_serve`` for one split."""

    def __init__(
        self, split: SplitArtifacts, model: str, log_path: Path, threads: int | None, cpus: set[int] | None
    ) -> None:
        self.port = free_port()
        args = [
            sys.executable, "-m", "edgeinfer.network.split_serve", "--head", str(split.head),
            "--tail", str(split.tail), "--transport", split.transport, "--name", split.name,
            "--model", model, "--http-port", str(self.port),
        ]  # fmt: skip
        if split.quantizer is not None:
            args += ["--scale", repr(split.quantizer.scale), "--zero-point", str(split.quantizer.zero_point)]
        if threads:
            args += ["--threads", str(threads)]
        ChildProcess.__init__(self, args, log_path, cpus=cpus)


@dataclass(frozen=True)
class SplitInputs:
    """What the split measurement needs from the device's engine, taken while it is loaded: the
    model file, decode + preprocess, and the unsplit model's outputs for every sample image."""

    model_path: Path
    prepare: Prepare
    references: list[np.ndarray]

    @classmethod
    def from_engine(cls, run: CompareRun, engine: Any) -> SplitInputs:
        prepare, _ = device_prepare(run.settings)  # decode + preprocess, no runtime needed
        references = [engine.infer(prepare(image)[np.newaxis])[0] for image in run.images]
        return cls(engine.stored.path, prepare, references)


def run_split_paths(run: CompareRun, inputs: SplitInputs, logs: Path) -> None:
    """Run after the engine is closed: the head sessions need the device's thread budget."""
    settings = run.settings
    model = load(inputs.model_path)
    layers = profile_layers(inputs.model_path, inputs.prepare(run.images[0]), threads=settings.threads)
    edge = next((r for r in run.results if r.path == "edge"), None)
    stages = edge.trace.stages_ns if edge else {}
    infer_ms = _mean_ms(stages.get("infer", []))
    scale = infer_ms / sum(layers.values()) if infer_ms else 1.0
    prepare_ms = _mean_ms(stages.get("decode", [])) + _mean_ms(stages.get("preprocess", []))
    crossover = crossover_model(run)
    overhead_ms = crossover.overhead_ms if crossover is not None else 0.0
    points = {p.index: p for p in cut_points(model)}
    rows: list[dict[str, Any]] = []
    for profile in settings.profiles:
        ranked = choose_cut(
            model,
            layers,
            profile,
            speedup=settings.cloud_speedup,
            scale=scale,
            prepare_ms=prepare_ms,
            overhead_ms=overhead_ms,
        )
        chosen = _pick(ranked, settings.split, points, len(model.graph.node))
        rows += [_row(e, profile, chosen=e is chosen) for e in ranked]
        split = build_split(run, inputs, model, chosen)
        result, check = _measure_split(run, inputs, split, chosen, profile=profile, logs=logs)
        rows.append({**_row(chosen, profile, chosen=True), "measured_p50_ms": _p50(result), **check})
    run.notes.append(
        f"Split computing: per-layer times from ONNX Runtime's profiler scaled by {scale:.3f} to the "
        "measured device inference time; predictions for every cut are in settings.split_points."
    )
    run.split_points = rows


def check_split_arg(settings: CompareSettings) -> None:
    """``--split`` is ``auto`` or the index of a cut point of the model."""
    from edgeinfer.models.repository import ModelRepository

    if settings.split != "auto":
        model = load(ModelRepository().get(settings.model, settings.precision).path)
        _cut_index(settings.split, {p.index for p in cut_points(model)})


def _cut_index(wanted: str | None, valid: set[int]) -> int | None:
    """The cut index ``--split`` asks for; None for ``auto``."""
    if wanted is None or wanted == "auto":
        return None
    try:
        index = int(wanted)
    except ValueError:
        raise InvalidInput(f"--split takes 'auto' or a cut index, got {wanted!r}") from None
    if index not in valid or index == 0:
        shown = ", ".join(str(i) for i in sorted(valid) if i)
        raise InvalidInput(f"{index} is not a cut point of this model; valid cuts: {shown}")
    return index


def _pick(
    ranked: list[SplitEstimate], wanted: str | None, points: dict[int, CutPoint], nodes: int
) -> SplitEstimate:
    """The asked cut (with its cheapest transport), or for ``auto`` the cheapest real split."""
    index = _cut_index(wanted, set(points))
    if index is None:
        return next(e for e in ranked if 0 < e.cut.index < nodes)
    return min((e for e in ranked if e.cut.index == index), key=lambda e: e.total_ms)


def build_split(
    run: CompareRun, inputs: SplitInputs, model: onnx.ModelProto, chosen: SplitEstimate
) -> SplitArtifacts:
    """Write the head and tail of ``chosen`` (calibrating INT8 on the run's images) under the report."""
    cut, transport = chosen.cut, chosen.transport
    folder = run.settings.out_dir / "split" / f"cut{cut.index}-{transport}"
    folder.mkdir(parents=True, exist_ok=True)
    head, _ = partition(model, cut, "fp32")
    head_path = folder / "head.onnx"
    onnx.save(head, str(head_path))
    quantizer = (
        _calibrate(run, inputs.prepare, head_path, run.settings.threads) if transport == "int8" else None
    )
    _, tail = partition(model, cut, transport, quantizer)
    tail_path = folder / "tail.onnx"
    onnx.save(tail, str(tail_path))
    name = f"{run.settings.model}_tail{cut.index}_{transport}"
    return SplitArtifacts(name, cut, transport, quantizer, head_path, tail_path)


def _measure_split(
    run: CompareRun,
    inputs: SplitInputs,
    split: SplitArtifacts,
    chosen: SplitEstimate,
    *,
    profile: LinkProfile,
    logs: Path,
) -> tuple[PathResult, dict[str, Any]]:
    settings = run.settings
    log = logs / f"tail-{split.cut.index}-{split.transport}-{profile.name}.log"
    with TailServerProcess(split, settings.model, log, settings.threads, run.cloud_cpus) as server:
        server.wait_ready()
        link_log = logs / f"link-split-{profile.name}.log"
        with LinkProcess(
            profile, target_of(server.url), link_log, seed=settings.seed, cpus=run.cloud_cpus
        ) as link:
            link.wait_ready()
            backend = SplitBackend(KServeClient(link.url), split, inputs.prepare, settings.threads)
            router = HybridRouter(RouterSettings(policy="cloud"), None, backend)
            trace = drive_router(router, run.images, settings.load)
        direct = SplitBackend(KServeClient(server.url), split, inputs.prepare, settings.threads)
        check = _equality(run, inputs.references, direct)
    upload = f"cut {split.cut.index} {split.transport}"
    result = PathResult("split", trace, profile, upload, None, router.stats.as_dict())
    result.extra["split"] = {
        **asdict(split.cut),
        "transport": split.transport,
        "predicted_ms": chosen.total_ms,
    }
    run.results.append(result)
    return result, check


def _calibrate(run: CompareRun, prepare: Prepare, head_path: Path, threads: int | None) -> Quantizer:
    head = open_runtime("onnxruntime", head_path, RuntimeOptions(threads=threads))
    try:
        outputs = []
        for image in run.images:
            x = prepare(image)[np.newaxis]
            outputs.append(next(iter(head.run({head.inputs[0].name: x}).values())))
        return Quantizer.calibrate(outputs)
    finally:
        head.close()


def _equality(run: CompareRun, references: list[np.ndarray], backend: SplitBackend) -> dict[str, Any]:
    """The split model's outputs through the real tail server against the unsplit model's."""

    async def go() -> list[np.ndarray]:
        try:
            return [(await backend.run(image, 30.0)).probabilities for image in run.images]
        finally:
            await backend.close()

    split = asyncio.run(go())
    diffs = [float(np.abs(a - b).max()) for a, b in zip(split, references, strict=True)]
    agree = sum(int(a.argmax() == b.argmax()) for a, b in zip(split, references, strict=True))
    return {"max_abs_diff": max(diffs), "top1_agreement": f"{agree}/{len(references)}"}


def _row(estimate: SplitEstimate, profile: LinkProfile, *, chosen: bool) -> dict[str, Any]:
    return {
        "cut": estimate.cut.index,
        "node": estimate.cut.node,
        "shape": "x".join(map(str, estimate.cut.shape)),
        "transport": estimate.transport,
        "bytes": estimate.upload_bytes,
        "head_ms": estimate.head_ms,
        "tail_ms": estimate.tail_ms,
        "profile": profile.name,
        "predicted_ms": estimate.total_ms,
        "chosen": chosen,
    }


def _p50(result: PathResult) -> float | None:
    values = sorted(result.trace.latencies_ns)
    return values[len(values) // 2] / 1e6 if values else None


def _mean_ms(values_ns: list[int]) -> float:
    return float(np.mean(values_ns)) / 1e6 if values_ns else 0.0
