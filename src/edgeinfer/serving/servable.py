"""One model as the server serves it: protocol inputs in, batched inference, protocol outputs out.

An image model takes either encoded images (JPEG/PNG/... bytes) as the BYTES input ``image``,
decoded and preprocessed here on a thread pool while other batches infer, or an already
preprocessed tensor on the runtime's own input (for example ``input``, FP32 [-1, 3, 224, 224]).
A request sends exactly one of the two. Its output is the probability tensor, or with Triton's
classification extension the top classes as ``"score:index:label"`` strings.

The default instance shape (:func:`load_adaptive`) is one runtime holding every core plus one
single-thread runtime of the same model that the batcher runs on several threads side by side
while requests queue up (see :class:`edgeinfer.serving.batching.settings.SplitLanes`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from edgeinfer.engine.prepare import prepare_images
from edgeinfer.engine.results import Prediction
from edgeinfer.errors import InvalidInput
from edgeinfer.imaging.decode import header_pixels
from edgeinfer.models.config import ModelConfig
from edgeinfer.runtimes.base import Runtime
from edgeinfer.serving.batching.batcher import Batcher
from edgeinfer.serving.batching.settings import BatcherSettings, SplitLanes, Ticket
from edgeinfer.serving.metrics import ModelMetrics
from edgeinfer.serving.protocol import (
    ClassifyResponse,
    ConfigTensor,
    InferRequest,
    InferResponse,
    Label,
    ModelMetadata,
    OutputTensor,
    RequestedOutput,
    ServedModelConfig,
    Tensor,
    TensorMetadata,
    datatype_of,
)
from edgeinfer.serving.statistics import ModelStatistics
from edgeinfer.system.threads import ThreadLease, process_budget

log = logging.getLogger(__name__)

IMAGE_INPUT = "image"
# Runtimes whose one loaded model may run from several threads at once, each call computing on its
# caller's thread when loaded with one thread (ONNX Runtime sessions are documented thread-safe).
CONCURRENT_RUNTIMES = frozenset({"onnxruntime"})
# Under `auto`, a runtime with split lanes is served when its batch-1 probe is within this factor of
# the fastest runtime's: on the 2-core development machine ONNX Runtime with split lanes served as
# much or more under load than LiteRT (FP32) and OpenVINO (INT8, FP32) on one instance, which were
# 1.3x faster at batch 1 (docs/BENCHMARKS.md, "Which runtime to serve on").
LANES_WORTH_RATIO = 1.35


class ModelEngine(Protocol):
    """The part of :class:`edgeinfer.engine.engine.Engine` the server uses."""

    config: ModelConfig
    runtime: Runtime

    @property
    def sample_shape(self) -> tuple[int, ...]: ...

    def decode(self, source: bytes) -> np.ndarray: ...

    def preprocess(self, rgb: np.ndarray) -> np.ndarray: ...

    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def postprocess(self, scores: np.ndarray, top_k: int = 5) -> list[Prediction]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class EngineSet:
    """A model's loaded runtimes: ``instances`` run side by side; ``split``, when set, is a
    single-thread runtime run on ``split_lanes`` threads at once in place of the one instance."""

    instances: Sequence[ModelEngine]
    split: ModelEngine | None = None
    split_lanes: int = 0


def load_adaptive(load: Callable[[int], ModelEngine], threads: int) -> EngineSet:
    """One instance with ``threads`` threads plus its single-thread twin for ``threads`` split lanes.

    ``load(n)`` opens the model with ``n`` compute threads from the process thread budget. The twin
    is loaded first and hands its lease back: the batcher never runs it while the wide instance
    runs, and runs it on at most ``threads`` threads, so the wide instance's lease covers both.
    Falls back to the wide instance alone where the runtime cannot run one model from several
    threads or the budget did not grant ``threads`` threads.
    """
    split = load(1)
    if split.runtime.name not in CONCURRENT_RUNTIMES or threads < 2:
        split.close()
        return EngineSet([load(threads)])
    try:
        lease = getattr(split.runtime, "lease", None)
        if isinstance(lease, ThreadLease):
            process_budget().release(lease)
        wide = load(threads)
    except BaseException:
        split.close()
        raise
    if wide.runtime.threads < 2:
        split.close()
        return EngineSet([wide])
    return EngineSet([wide], split, wide.runtime.threads)


def _within_fixed_batch(name: str, engine: ModelEngine, batching: BatcherSettings) -> BatcherSettings:
    """A model whose input fixes its batch size (an exported ``[1, 3, 224, 224]``) runs batches
    of at most that size: warming it up with larger ones stopped the server from starting."""
    fixed = engine.runtime.inputs[0].shape[0]
    if not isinstance(fixed, int) or fixed < 1 or fixed >= batching.max_batch_size:
        return batching
    log.info(
        "model %s takes batches of %d at most (its input fixes it): max_batch_size %d", name, fixed, fixed
    )
    return replace(batching, max_batch_size=fixed, max_queue_size=max(batching.max_queue_size, fixed))


class DecodeBacklog:
    """The decoding admitted and not yet done on a decode pool, in estimated nanoseconds: shared by
    every model on that pool, so that one model's flood of large images counts in another's
    admission estimate (it counted only its own, and its requests missed their deadlines by seconds
    behind the other's images). Touched on the event loop only."""

    def __init__(self) -> None:
        self.pending_ns = 0

    def add(self, ns: int) -> None:
        self.pending_ns += ns

    def done(self, ns: int) -> None:
        self.pending_ns = max(0, self.pending_ns - ns)


class Servable:
    """A loaded model with its batcher; every method raises only :class:`EdgeInferError` kinds."""

    def __init__(
        self,
        name: str,
        engines: Sequence[ModelEngine] | EngineSet,
        batching: BatcherSettings,
        metrics: ModelMetrics,
        *,
        decode_pool: Executor,
        decode_workers: int = 1,
        decode_backlog: DecodeBacklog | None = None,
    ) -> None:
        loaded = engines if isinstance(engines, EngineSet) else EngineSet(engines)
        if not loaded.instances:
            raise ValueError("a servable needs at least one engine instance")
        self.name = name
        self.engines = list(loaded.instances)
        self.split_engine = loaded.split
        self.engine = self.engines[0]
        self.version = self.engine.config.version
        self.metrics = metrics
        split = None
        if loaded.split is not None:
            split = SplitLanes(loaded.split.infer, loaded.split_lanes)
        batching = _within_fixed_batch(name, self.engine, batching)
        self.batcher = Batcher(
            [e.infer for e in self.engines], batching, name=name, observer=metrics, split=split
        )
        self._decode_pool = decode_pool
        self._decode_workers = max(1, decode_workers)
        self._backlog = decode_backlog or DecodeBacklog()  # the pool's, when others share it
        # decode + preprocess service time on a decode thread (queueing excluded), modelled as a
        # fixed cost per image plus a cost per pixel of the encoded image, both learned
        self._decode = DecodeCost()
        spec = self.engine.runtime.inputs[0]
        self._tensor_dtype = np.dtype(spec.dtype)
        self.tensor_input = TensorMetadata(
            spec.name, datatype_of(spec.dtype), (-1, *self.engine.sample_shape)
        )
        # one encoded image per row, as Triton shapes a batched BYTES input of dims [1] (perf_analyzer
        # and Triton's clients build requests from it); requests may also send [N]
        self.image_input = TensorMetadata(
            IMAGE_INPUT if spec.name != IMAGE_INPUT else "image_bytes", "BYTES", (-1, 1)
        )
        out = self.engine.config.outputs[0]
        self.classes = int(out.shape[-1] or 0)
        self.output = TensorMetadata(out.name, "FP32", (-1, self.classes))
        self.ready = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, warmup_runs: int = 2) -> None:
        """Warm every batch size on every instance (measuring them), then accept requests."""
        await self.batcher.warm_up(self.engine.sample_shape, self._tensor_dtype, runs=warmup_runs)
        await self._warm_decode()
        self.batcher.start()
        self.ready = True

    async def close(self, timeout_s: float) -> None:
        self.ready = False
        await self.batcher.close(timeout_s)
        for engine in self.engines:
            engine.close()
        if self.split_engine is not None:
            self.split_engine.close()

    def metadata(self) -> ModelMetadata:
        return ModelMetadata(
            name=self.name,
            versions=(self.version,),
            platform=f"edgeinfer_{self.engine.runtime.name}",
            inputs=(self.tensor_input, self.image_input),
            outputs=(self.output,),
        )

    def served_config(self) -> ServedModelConfig:
        """Triton's view of this model: batch limit, tensors (each input an alternative to the
        other, so both optional) and the batcher's longest wait."""
        settings = self.batcher.settings

        def tensor(t: TensorMetadata, optional: bool) -> ConfigTensor:
            return ConfigTensor(t.name, t.datatype, t.shape[1:], optional)

        return ServedModelConfig(
            name=self.name,
            platform=self.metadata().platform,
            max_batch_size=settings.max_batch_size,
            inputs=(tensor(self.tensor_input, True), tensor(self.image_input, True)),
            outputs=(tensor(self.output, False),),
            max_queue_delay_us=settings.max_queue_delay_us,
        )

    def statistics(self) -> ModelStatistics:
        return self.metrics.statistics(self.version)

    # -- requests -------------------------------------------------------------------------------

    async def infer(self, request: InferRequest, deadline_ns: int, *, inline: bool = False) -> InferResponse:
        """Run a v2 request; ``inline``: the caller is a lone client (see ``_run``)."""
        tensor = self._one_input(request.inputs)
        wanted = self.wanted_outputs(request)
        is_image = tensor.name == self.image_input.name
        count = tensor.shape[0]
        data = tensor.data.reshape(count) if is_image else tensor.data
        sizes = [_pixels(item) for item in data] if is_image else []
        own_ns, ahead_ns = self._decode_estimate_ns(sizes) if is_image else (0, 0)
        ticket = self.batcher.admit(count, deadline_ns, own_ns + ahead_ns)
        scores, input_ns = await self._run(ticket, data, is_image, inline, decode_ns=own_ns, sizes=sizes)
        started = time.monotonic_ns()
        outputs = tuple(self.output_tensor(scores, want) for want in wanted)
        self._succeeded(ticket, input_ns, started)
        return InferResponse(self.name, self.version, outputs, request.id)

    async def classify(
        self, image: bytes, top_k: int, deadline_ns: int, *, inline: bool = False
    ) -> ClassifyResponse:
        """One encoded image to its top-k labels (the ``/v1/.../classify`` route)."""
        if not 1 <= top_k <= self.classes:
            raise InvalidInput(f"top_k must be between 1 and {self.classes}, got {top_k}")
        images = np.array([image], dtype=object)
        sizes = [_pixels(image)]
        own_ns, ahead_ns = self._decode_estimate_ns(sizes)
        ticket = self.batcher.admit(1, deadline_ns, own_ns + ahead_ns)
        scores, input_ns = await self._run(ticket, images, True, inline, decode_ns=own_ns, sizes=sizes)
        started = time.monotonic_ns()
        top = self.engine.postprocess(scores[0], top_k)
        labels = tuple(Label(p.index, p.label, p.score) for p in top)
        self._succeeded(ticket, input_ns, started)
        return ClassifyResponse(self.name, self.version, labels)

    def _succeeded(self, ticket: Ticket, input_ns: int, outputs_started_ns: int) -> None:
        output_ns = time.monotonic_ns() - outputs_started_ns
        self.metrics.on_succeeded(input_ns, ticket.queue_ns, ticket.compute_ns, output_ns)

    async def _run(
        self,
        ticket: Ticket,
        data: np.ndarray,
        is_image: bool,
        inline: bool,
        *,
        decode_ns: int = 0,
        sizes: Sequence[int | None] = (),
    ) -> tuple[np.ndarray, int]:
        """Prepare (images) and compute an admitted request: on this thread when ``inline`` (a lone
        client, so nothing else can be waiting), the model is idle and every image's size is known
        (``sizes``, pixels from the headers: an image of unknown size might take seconds to decode,
        and the event loop answers nobody meanwhile), else decoded on the decode pool and queued
        for a batch. Returns the output rows and the time preparing took."""
        input_ns = 0
        try:
            if inline and not (is_image and None in sizes):
                prepare = (lambda: self._decode_batch(data)[0]) if is_image else (lambda: data)
                done = self.batcher.run_inline(ticket, prepare)
                if done is not None:
                    scores, prepare_ns = done
                    self.metrics.on_inline()
                    if is_image:
                        self.metrics.on_prepared(prepare_ns)
                        self._decode.learn(sizes, prepare_ns)
                    return scores, prepare_ns if is_image else 0
            samples = data
            if is_image:
                samples, input_ns = await self._prepare(
                    data, estimate_ns=decode_ns, ticket=ticket, sizes=sizes
                )
        except BaseException:
            self.batcher.cancel(ticket)
            raise
        return await self.batcher.run(ticket, samples), input_ns

    # -- inputs ---------------------------------------------------------------------------------

    def _one_input(self, inputs: Sequence[Tensor]) -> Tensor:
        tensor_in, image_in = self.tensor_input, self.image_input
        options = (
            f"{tensor_in.name!r} ({tensor_in.datatype} {list(tensor_in.shape)}) or "
            f"{image_in.name!r} (BYTES [-1, 1] or [-1], encoded JPEG/PNG images)"
        )
        known = {self.tensor_input.name, self.image_input.name}
        unknown = [t.name for t in inputs if t.name not in known]
        if unknown:
            raise InvalidInput(f"unknown input(s) {unknown} for model {self.name!r}; send {options}")
        if len(inputs) != 1:
            names = [t.name for t in inputs]
            raise InvalidInput(
                f"extra input: got {names}; model {self.name!r} takes exactly one of {options}"
            )
        tensor = inputs[0]
        if tensor.name == self.image_input.name:
            self._check_image_input(tensor)
        else:
            self._check_tensor_input(tensor)
        return tensor

    def _check_image_input(self, tensor: Tensor) -> None:
        if tensor.datatype != "BYTES":
            raise InvalidInput(
                f"input {tensor.name!r} holds encoded images and must be BYTES, got {tensor.datatype}"
            )
        shape = tensor.shape
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
            raise InvalidInput(
                f"input {tensor.name!r} must have shape [N] or [N, 1] with N >= 1, got {list(shape)}"
            )

    def _check_tensor_input(self, tensor: Tensor) -> None:
        want = self.tensor_input
        if tensor.datatype != want.datatype:
            raise InvalidInput(
                f"input {want.name!r} must be {want.datatype}, got {tensor.datatype} "
                f"(send encoded images as BYTES input {self.image_input.name!r} instead)"
            )
        shape = tensor.shape
        if len(shape) != len(want.shape) or shape[1:] != want.shape[1:] or shape[0] < 1:
            raise InvalidInput(
                f"input {want.name!r} must have shape {list(want.shape)} (-1: any >= 1), got {list(shape)}"
            )
        data = tensor.data
        if isinstance(data, np.ndarray) and data.dtype.kind == "f" and not np.isfinite(data).all():
            bad = int(np.count_nonzero(~np.isfinite(data)))
            raise InvalidInput(
                f"input {want.name!r} holds {bad} NaN or infinite value(s): every value must be a "
                "finite number (a preprocessed image)"
            )

    def wanted_outputs(self, request: InferRequest) -> list[RequestedOutput]:
        """The outputs a request asked for (all, when it names none), checked against the model's."""
        if not request.outputs:
            return [RequestedOutput(self.output.name, request.binary_output)]
        names = [o.name for o in request.outputs]
        if len(set(names)) != len(names):
            raise InvalidInput(f"an output is requested twice in {names}")
        for want in request.outputs:
            if want.name != self.output.name:
                raise InvalidInput(
                    f"unknown output {want.name!r}; model {self.name!r} has {self.output.name!r}"
                )
            if want.class_count > self.classes:
                raise InvalidInput(
                    f"classification asks for {want.class_count} classes; the model has {self.classes}"
                )
        return [o if o.binary is not None else RequestedOutput(o.name, request.binary_output, o.class_count)
                for o in request.outputs]  # fmt: skip

    def _decode_estimate_ns(self, sizes: Sequence[int | None]) -> tuple[int, int]:
        """Decoding this request's images (by their sizes in pixels, None: unknown), and the wait
        for the decoding admitted ahead of it on the pool (every model's, by their sizes), shared
        out over the decode threads."""
        # an image over the engine's pixel limit is refused from its header (test doubles have none):
        # it counts as no pixels
        limit = getattr(getattr(self.engine, "options", None), "max_image_pixels", None)
        own = sum(
            self._decode.estimate_ns(0 if size is not None and limit is not None and size > limit else size)
            for size in sizes
        )
        return int(own), int(self._backlog.pending_ns / self._decode_workers)

    async def _prepare(
        self,
        images: np.ndarray,
        *,
        observed: bool = True,
        estimate_ns: int = 0,
        ticket: Ticket | None = None,
        sizes: Sequence[int | None] | None = None,
    ) -> tuple[np.ndarray, int]:
        """The preprocessed batch and the time it took, waiting for a decode thread included
        (``observed``: in the server's metrics; the warm-up's are not requests); ``estimate_ns``
        of decoding stands in the pool's backlog meanwhile. An admitted ``ticket`` whose inputs
        are not ready in time to finish is answered 504 then, not when they are (its decoding, if
        it has not started, is dropped): decoding can take longer than admission estimated."""
        loop = asyncio.get_running_loop()
        started = time.monotonic_ns()
        self._backlog.add(estimate_ns)
        try:
            decoding = loop.run_in_executor(self._decode_pool, self._decode_batch, images)
            if ticket is None:
                batch, service_ns = await decoding
            else:
                left_s = (self.batcher.latest_prepared_ns(ticket) - started) / 1e9
                try:
                    batch, service_ns = await asyncio.wait_for(decoding, max(0.0, left_s))
                except TimeoutError:
                    raise self.batcher.late_while_preparing(ticket) from None
        finally:
            self._backlog.done(estimate_ns)
        elapsed_ns = time.monotonic_ns() - started
        if observed:
            self.metrics.on_prepared(elapsed_ns)
        self._decode.learn([_pixels(item) for item in images] if sizes is None else sizes, service_ns)
        return batch, elapsed_ns

    def _decode_batch(self, images: np.ndarray) -> tuple[np.ndarray, int]:
        """Runs on the decode pool: encoded images to one batch of preprocessed samples, and the
        time the images took one by one (what admission prices; several images are shared with
        the process's helper thread, which only makes them quicker when it is free)."""
        engine = self.engine
        prepared = prepare_images(images, lambda item: engine.decode(image_bytes(item)), engine.preprocess)
        return prepared.batch, prepared.decode_ns + prepared.preprocess_ns

    async def _warm_decode(self) -> None:
        """Decode and preprocess a small and a camera-sized image: the first request does not pay
        for imports, and the decode cost starts from both its fixed and its per-pixel part."""
        from PIL import Image  # Pillow is a core dependency of the engine

        for size in ((64, 48), (64, 48), (640, 480)):
            buffer = io.BytesIO()
            Image.new("RGB", size, (120, 60, 30)).save(buffer, format="JPEG")
            await self._prepare(np.array([buffer.getvalue()], dtype=object), observed=False)

    # -- outputs --------------------------------------------------------------------------------

    def output_tensor(self, scores: np.ndarray, want: RequestedOutput) -> OutputTensor:
        """Probabilities as the requested output: the tensor, or the top classes as strings."""
        binary = bool(want.binary)
        if want.class_count == 0:
            tensor = Tensor(self.output.name, "FP32", tuple(scores.shape), scores)
            return OutputTensor(tensor, binary)
        rows = [
            [f"{p.score:f}:{p.index}:{p.label}" for p in self.engine.postprocess(row, want.class_count)]
            for row in scores
        ]
        data = np.empty((len(rows), want.class_count), dtype=object)
        data[:] = rows
        return OutputTensor(Tensor(self.output.name, "BYTES", tuple(data.shape), data), binary)


def _pixels(item: object) -> int | None:
    """An image input element's size in pixels from its header; None where it is not JPEG or PNG
    or not readable. Of base64 text (JSON) only the start is decoded here, on the event loop: the
    header, up to ``_BASE64_HEAD_CHARS``; the whole is decoded on the decode pool."""
    if isinstance(item, str):
        try:
            item = base64.b64decode(item[:_BASE64_HEAD_CHARS], validate=True)
        except (binascii.Error, ValueError):
            return None  # the decode pool says what is wrong with it
    return header_pixels(item) if isinstance(item, bytes) else None


# base64 characters decoded for an image's header: 48 KiB, past the EXIF and ICC blocks that come
# before a JPEG's frame header in camera files (a multiple of 4: whole base64 groups)
_BASE64_HEAD_CHARS = 4 * 16 * 1024


class DecodeCost:
    """Decode + preprocess time of one image: ``fixed_ns + ns_per_pixel * pixels``.

    A per-image average would make one huge image (tens of megapixels) look like the norm and
    refuse small images with tight deadlines; each part is learned where it shows: ``fixed_ns``
    from images of at most ``SMALL_PX`` pixels, the per-pixel rate from the others (their time
    beyond the fixed part). Images of unknown size count as the recent average size.
    """

    SMALL_PX = 20_000
    TYPICAL_PX = 640 * 480  # until an image of known size has been seen

    def __init__(self) -> None:
        self.fixed_ns = 0.0
        self.ns_per_pixel = 0.0
        self.mean_pixels = 0.0

    def estimate_ns(self, pixels: int | None) -> float:
        size = (self.mean_pixels or self.TYPICAL_PX) if pixels is None else pixels
        return self.fixed_ns + self.ns_per_pixel * size

    def learn(self, pixels: Sequence[int | None], service_ns: float) -> None:
        """One decoded batch: each image's size (None: unknown) and their total service time."""
        known = [p for p in pixels if p is not None]
        if known:
            self.mean_pixels = _ema(self.mean_pixels, sum(known) / len(known))
        if len(known) != len(pixels):
            return  # sizes unknown: nothing to learn the two parts from
        total = float(sum(known))
        if max(known) <= self.SMALL_PX:
            self.fixed_ns = _ema(self.fixed_ns, service_ns / len(known))
        else:
            beyond = max(0.0, service_ns - self.fixed_ns * len(known))
            self.ns_per_pixel = _ema(self.ns_per_pixel, beyond / total)


def _ema(old: float, new: float, rate: float = 0.2) -> float:
    return new if old == 0 else old + rate * (new - old)


def image_bytes(item: object) -> bytes:
    """An element of the image input: raw bytes (binary / gRPC) or a base64 string (JSON)."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        try:
            return base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(
                "an image sent as a JSON string must be base64; send raw bytes with the binary extension"
            ) from None
    raise InvalidInput(f"an image must be bytes, got {type(item).__name__}")
