"""The engine: one model on one runtime, from encoded image to labelled prediction.

Each stage is a public method so servers, benchmarks and stream pipelines can run the stages on
different threads (decode while the previous batch infers) and time them separately.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from edgeinfer.engine.prepare import prepare_images
from edgeinfer.engine.results import Classification, Prediction, StageTimings
from edgeinfer.errors import EdgeInferError, IntegrityError, InvalidInput, RuntimeUnavailable
from edgeinfer.imaging.decode import DecodeOptions, ImageSource, decode_image
from edgeinfer.imaging.preprocess import Preprocessor
from edgeinfer.models.config import ModelConfig
from edgeinfer.models.labels import load_labels
from edgeinfer.models.precision import COMPUTED, PRECISIONS, build_of
from edgeinfer.models.repository import ModelRepository, StoredModel, rebuild_hint
from edgeinfer.models.zoo import ZOO
from edgeinfer.runtimes.base import Runtime, RuntimeOptions, TensorSpec
from edgeinfer.system.helper import attempt, offer

__all__ = ["Classification", "Engine", "EngineOptions", "Prediction", "StageTimings"]


class _End:
    """No more images."""


_END = _End()


@dataclass(frozen=True)
class EngineOptions:
    """How the engine decodes.

    ``fast_decode`` lets a JPEG decode at a reduced scale (libjpeg-turbo's DCT scaling by n/8, 1/8
    to 7/8: the smallest that keeps the shorter side at least the resize target) when the
    preprocessing resizes below that anyway: about 3x cheaper decode + preprocess for 1080p frames, but a
    different downscaling filter than the reference pipeline, so top-1 can change on ambiguous
    images (74/78 agreed in benchmarks/decode.py). Off by default: results match torchvision's.
    """

    fast_decode: bool = False
    max_image_pixels: int = 40_000_000
    max_image_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if not isinstance(self.fast_decode, bool):
            raise InvalidInput(f"EngineOptions.fast_decode must be True or False, got {self.fast_decode!r}")
        for name in ("max_image_pixels", "max_image_bytes"):
            value = getattr(self, name)
            if not _is_count(value) or value < 1:
                raise InvalidInput(f"EngineOptions.{name} must be a whole number >= 1, got {value!r}")


class Engine:
    """A loaded model: ``classify`` for the simple path, the stage methods for pipelines."""

    def __init__(
        self,
        stored: StoredModel,
        runtime: Runtime,
        options: EngineOptions | None = None,
        load_ns: int = 0,
        precision: str | None = None,
    ) -> None:
        try:  # the runtime is open (and holds its threads): whatever fails here closes it
            _check_crop(stored, runtime.inputs[0])
            self.stored = stored
            self.config: ModelConfig = stored.config
            # what it computes in: the build's precision, or one computed from it (``bf16``)
            self.precision = precision or stored.config.precision
            self.runtime = runtime
            self.options = _check_options(options)
            self.load_ns = load_ns
            self.labels = load_labels(self.config.labels, stored.directory)
            self._preprocessor = Preprocessor(self.config.preprocessing)
            fast = self.options.fast_decode
            self._decode_options = DecodeOptions(
                max_pixels=self.options.max_image_pixels,
                max_bytes=self.options.max_image_bytes,
                min_shorter_px=self.config.preprocessing.resize_shorter_px if fast else None,
            )
            self._input = runtime.inputs[0]
            self._output_name = runtime.outputs[0].name
        except BaseException:
            runtime.close()
            raise

    @classmethod
    def load(
        cls,
        model: str = "mobilenet_v2",
        *,
        runtime: str = "auto",
        precision: str | None = None,
        threads: int | None = None,
        repository: ModelRepository | Path | None = None,
        options: EngineOptions | None = None,
        runtime_options: Mapping[str, str] | None = None,
    ) -> Engine:
        """Load (building on first use) ``model`` and open it on ``runtime``.

        ``precision=None`` is FP32 for zoo models and the one build of an imported model. Under
        ``runtime="auto"``, where ``edgeinfer tune`` measured this machine, the tuned runtime is
        opened, with the tuned thread count unless ``threads`` is given.
        ``runtime_options`` are the named runtime's own switches (``RuntimeOptions.extra``), for
        example ``{"INFERENCE_PRECISION_HINT": "bf16"}`` on ``openvino``; they need a named runtime.
        ``precision="bf16"`` runs the FP32 build in bfloat16 on OpenVINO (``auto`` picks it) where the
        CPU has bfloat16 arithmetic, and raises :class:`RuntimeUnavailable` elsewhere.
        """
        from edgeinfer.runtimes.registry import open_runtime

        _check_options(options)  # before anything opens
        if threads is not None and (not _is_count(threads) or threads < 1):
            raise InvalidInput(
                f"threads must be a whole number >= 1 (or None for the physical cores), got {threads!r}"
            )
        if not isinstance(runtime, str):
            raise InvalidInput(f"runtime must be a runtime's name or 'auto', got {runtime!r}")
        if runtime_options and runtime.strip().lower() == "auto":
            raise InvalidInput("runtime options belong to one runtime: name it (runtime=...) instead of auto")
        from edgeinfer.tune.store import trial_threads

        started = time.perf_counter_ns()
        repo, stored, runtime, alternates, tuned = _resolve(model, runtime, precision, repository)
        if threads is None and tuned is not None:
            threads = trial_threads(tuned)  # tuned: the winning configuration's thread count too
        extra = dict(runtime_options or {})
        computed = COMPUTED.get(precision or "")
        for key, value in (computed.runtime_options if computed is not None else {}).items():
            if extra.setdefault(key, value) != value:
                raise InvalidInput(
                    f"precision {precision} sets {key}={value}; a runtime option cannot change it"
                )
        opened = open_runtime(
            runtime, stored, RuntimeOptions(threads, extra), cache_dir=repo.root, alternates=alternates
        )
        return cls(stored, opened, options, load_ns=time.perf_counter_ns() - started, precision=precision)

    @staticmethod
    def choose_runtime(
        model: str = "mobilenet_v2",
        *,
        runtime: str = "auto",
        precision: str | None = None,
        threads: int | None = None,
        repository: ModelRepository | Path | None = None,
        prefer: Collection[str] = (),
        prefer_within: float = 1.0,
    ) -> str:
        """The runtime :meth:`load` with these arguments opens (``auto``: tuned, or probed and cached).

        For callers that load one model several times with different thread counts (the server's
        wide instance and its single-thread twin), so that every load runs on the same runtime.
        Under ``auto``, a runtime in ``prefer`` whose batch-1 median is within ``prefer_within``
        times that of the pick (the probe's, or ``edgeinfer tune``'s from its batch-1 trials) is
        taken instead (the server's split lanes).
        """
        from edgeinfer.runtimes.registry import canonical, choose_auto, prefer_close
        from edgeinfer.runtimes.registry import prefer_within as preferring
        from edgeinfer.tune.store import tuned_batch1_ms

        repo, stored, runtime, alternates, tuned = _resolve(model, runtime, precision, repository)
        if runtime != "auto":
            # a computed precision (bf16) has one runtime: no other is preferred to it
            if tuned is None or not prefer or precision in COMPUTED:
                return canonical(runtime)
            # tuned: the same preference, over tune's batch-1 figures
            tuned_ms = tuned_batch1_ms(
                repo.root,
                stored.config.name,
                stored.config.precision,
                threads,
                file_sha256=stored.config.file_sha256,
            )
            return prefer_close(canonical(runtime), tuned_ms, prefer, prefer_within, source="tune's")
        config = stored.config
        choice = choose_auto(
            stored.path,
            config.format,
            config.inputs,
            RuntimeOptions(threads),
            repo.root,
            model_sha256=config.file_sha256,
            alternates=alternates,
        )
        return preferring(choice, prefer, prefer_within)

    # -- stages ---------------------------------------------------------------------------------

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self._preprocessor.sample_shape

    def decode(self, source: ImageSource) -> np.ndarray:
        """Encoded image (or path, PIL image, array) to an HWC uint8 RGB array."""
        return decode_image(source, self._decode_options)

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """HWC uint8 RGB to one model input sample (no batch axis)."""
        return self._preprocessor(rgb)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """A batch of samples to (N, classes) float32 probabilities."""
        if batch.ndim == len(self.sample_shape):
            raise InvalidInput(
                f"infer takes a batch; got one sample of shape {batch.shape}: add a batch axis"
            )
        fixed = self._input.shape[0]
        if isinstance(fixed, int) and len(batch) != fixed and len(batch) % fixed == 0:
            # a model exported with a fixed batch (often 1) runs a larger one in pieces of that size
            return np.concatenate([self.infer(batch[i : i + fixed]) for i in range(0, len(batch), fixed)])
        self._input.check(batch)
        outputs = self.runtime.run({self._input.name: batch})
        scores = np.asarray(outputs[self._output_name], dtype=np.float32)
        if scores.shape[0] != batch.shape[0]:
            raise RuntimeError(f"runtime returned {scores.shape[0]} rows for a batch of {batch.shape[0]}")
        if not self.config.output_is_probability:
            scores = _softmax(scores)
        return scores

    def postprocess(self, scores: np.ndarray, top_k: int = 5) -> list[Prediction]:
        """One row of probabilities to the ``top_k`` labelled predictions, best first."""
        _check_top_k(top_k)
        scores = np.asarray(scores)
        if scores.ndim != 1 or scores.size == 0:
            raise InvalidInput(
                f"postprocess takes one row of scores; got shape {scores.shape} "
                "(for infer's (N, classes) output, pass each row: scores[i])"
            )
        k = min(top_k, scores.shape[-1])
        top = np.argpartition(scores, -k)[-k:]
        top = top[np.argsort(scores[top])[::-1]]
        return [Prediction(int(i), self._label(int(i)), float(scores[i])) for i in top]

    # -- whole path -----------------------------------------------------------------------------

    def classify(self, source: ImageSource, top_k: int = 5) -> Classification:
        """Decode, preprocess, infer and label one image, timing every stage."""
        return self.classify_batch([source], top_k)[0]

    def classify_batch(self, sources: Sequence[ImageSource], top_k: int = 5) -> list[Classification]:
        """The same for several images run as one batch (stage times are per batch, shared).

        ``sources``: a sequence of images (each as :meth:`classify` takes them), or an NxHxWxC uint8
        array of N pictures. An image that cannot be used is named by its position in the error.
        """
        _check_many(sources, top_k, "classify_batch", "a sequence of images")
        if len(sources) == 0:
            return []
        t0 = time.perf_counter_ns()
        prepared = prepare_images(sources, self.decode, self.preprocess)
        t2 = time.perf_counter_ns()
        scores = self.infer(prepared.batch)
        t3 = time.perf_counter_ns()
        predictions = [self.postprocess(row, top_k) for row in scores]
        t4 = time.perf_counter_ns()
        # several images are prepared on two threads at once: the time they took together is
        # split between decode and preprocess in proportion to each stage's own summed time
        work_ns = max(1, prepared.decode_ns + prepared.preprocess_ns)
        decode_part = round((t2 - t0) * prepared.decode_ns / work_ns)
        timings = StageTimings(decode_part, t2 - t0 - decode_part, t3 - t2, t4 - t3)
        return [Classification(tuple(p), timings) for p in predictions]

    def classify_each(
        self, sources: Iterable[ImageSource], top_k: int = 5
    ) -> Iterator[Classification | EdgeInferError]:
        """:meth:`classify` for each image in turn: yields, in order, its :class:`Classification`
        or the :class:`~edgeinfer.errors.EdgeInferError` that image raised (the ones after it go on).

        While one image is inferred, the next is read, decoded and preprocessed on the process's
        helper thread (where the process has two cores or more), so a folder of photos or a run of
        frames goes through faster than ``classify`` in a loop; each result is the same, and its
        stage times are its own. ``sources`` is taken lazily (an iterator of frames is fine) or is
        an NxHxWxC uint8 array of N pictures.
        """
        _check_many(sources, top_k, "classify_each", "an iterable of images")
        return self._each(iter(sources), top_k)  # checked now, not at the first result

    def _each(self, pending: Iterator[ImageSource], top_k: int) -> Iterator[Classification | EdgeInferError]:
        def prepare(source: ImageSource) -> tuple[np.ndarray, int, int]:
            t0 = time.perf_counter_ns()
            rgb = self.decode(source)
            t1 = time.perf_counter_ns()
            sample = self.preprocess(rgb)
            return sample, t1 - t0, time.perf_counter_ns() - t1

        def prepared(source: ImageSource) -> tuple[np.ndarray, int, int] | Exception:
            return attempt(lambda _: prepare(source), 0)

        upcoming = next(pending, _END)
        early: Future[tuple[np.ndarray, int, int] | Exception] | None = None
        try:
            while not isinstance(upcoming, _End):
                # prepared ahead on the helper, or here where the helper had not started it
                outcome = prepared(upcoming) if early is None or early.cancel() else early.result()
                upcoming = next(pending, _END)
                early = None if isinstance(upcoming, _End) else offer(prepared, upcoming)
                if isinstance(outcome, EdgeInferError):
                    yield outcome
                    continue
                if isinstance(outcome, Exception):
                    raise outcome
                sample, decode_ns, preprocess_ns = outcome
                t0 = time.perf_counter_ns()
                scores = self.infer(sample[np.newaxis])
                t1 = time.perf_counter_ns()
                predictions = self.postprocess(scores[0], top_k)
                timings = StageTimings(decode_ns, preprocess_ns, t1 - t0, time.perf_counter_ns() - t1)
                yield Classification(tuple(predictions), timings)
        finally:  # stopped early: the image being prepared ahead is not left running
            if early is not None and not early.cancel():
                early.result()

    def warmup(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Run each batch size once so the first real request does not pay for allocation."""
        for size in batch_sizes:
            self.infer(np.zeros((size, *self.sample_shape), dtype=np.dtype(self._input.dtype)))

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _label(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else f"class {index}"


def _is_count(value: object) -> bool:
    """A whole number given as one (an int or numpy integer, not a bool, float or string)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_top_k(top_k: object) -> None:
    if not _is_count(top_k) or top_k < 1:  # type: ignore[operator]
        raise InvalidInput(f"top_k must be a whole number >= 1, got {top_k!r}")


def _check_many(sources: object, top_k: object, method: str, takes: str) -> None:
    """Several images, not one (a path, bytes, a picture or one HxWxC array), and a good top_k."""
    _check_top_k(top_k)
    if isinstance(sources, (str, Path, bytes, bytearray, memoryview, Image.Image)):
        raise InvalidInput(f"{method} takes {takes}; use classify for one")
    if isinstance(sources, np.ndarray) and sources.ndim != 4:
        raise InvalidInput(
            f"{method} takes an array of N pictures (NxHxWxC); got shape {sources.shape}: "
            "use classify for one"
        )


def _check_options(options: object) -> EngineOptions:
    if options is None:
        return EngineOptions()
    if not isinstance(options, EngineOptions):
        raise InvalidInput(f"options must be an EngineOptions, got {type(options).__name__}")
    return options


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return result


def _check_crop(stored: StoredModel, spec: TensorSpec) -> None:
    """A config whose crop the model cannot take (edited by hand, or a wrong import) is the model's
    fault, said at load; otherwise every image would be refused as if it were the image's."""
    preprocessing = stored.config.preprocessing
    spatial = spec.shape[2:4] if preprocessing.layout == "NCHW" else spec.shape[1:3]
    crop = preprocessing.crop_px
    if len(spec.shape) == 4 and any(size is not None and size != crop for size in spatial):
        raise IntegrityError(
            f"{stored.directory / 'config.json'} crops images to {crop}x{crop} ({preprocessing.layout}), "
            f"but the model's input {spec.name!r} has shape {spec.shape}; {rebuild_hint(stored.config)}"
        )


def _resolve(
    model: str, runtime: str, precision: str | None, repository: ModelRepository | Path | None
) -> tuple[ModelRepository, StoredModel, str, dict[str, Callable[[], Path]], dict[str, Any] | None]:
    """The repository, the verified build, the runtime to open (the tuned choice for ``auto`` where
    ``edgeinfer tune`` measured this machine), the other files runtimes may run instead, and the
    tuned winning trial behind that choice (None when ``auto`` was not asked or not tuned here)."""
    from edgeinfer.engine.alternates import litert_files, litert_fp32_only
    from edgeinfer.runtimes.registry import canonical
    from edgeinfer.system.machine import this_cpu_flags
    from edgeinfer.tune.store import tuned_best

    if precision is not None and precision not in PRECISIONS:
        raise InvalidInput(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    repo = repository if isinstance(repository, ModelRepository) else ModelRepository(repository)
    name = runtime.strip().lower()
    build = build_of(precision)
    if model in ZOO and build not in (None, "fp32") and name != "auto" and canonical(name) == "litert":
        # zoo builds are ONNX: refused before a build LiteRT could not run is made
        raise RuntimeUnavailable(litert_fp32_only(model, build))
    stored = repo.get(model, build)
    stored.verify()
    computed = COMPUTED.get(precision or "")
    if computed is not None:  # one runtime computes it: no probe
        runtime = computed.check(name if name == "auto" else canonical(name), this_cpu_flags())
    tuned = None
    if name == "auto":
        # `edgeinfer tune` measured this machine more thoroughly than auto's quick probe (for a
        # computed precision, only the thread count: its runtime is fixed)
        measured = computed.name if computed is not None else stored.config.precision
        tuned = tuned_best(repo.root, stored.config.name, measured, file_sha256=stored.config.file_sha256)
        if computed is None:
            runtime = str(tuned["runtime"]) if tuned is not None else "auto"
    return repo, stored, runtime, litert_files(stored.config, stored.path, runtime), tuned
