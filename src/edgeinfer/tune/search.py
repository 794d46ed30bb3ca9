"""``edgeinfer tune``: measure runtime x precision x threads x batch size on this device.

Every configuration runs the same real, preprocessed photos (seeded order) for a fixed time after
a warm-up that is not counted. Two winners are kept for each precision and overall:

- ``latency``: the lowest p90 single-stream latency (batch 1);
- ``throughput``: the most images per second among configurations whose p99 batch latency stays
  within ``p99_bound_ms``.

``null`` and ``keras`` are never winners, as ``auto`` never opens them: ``null`` (zeros, the
engine's own overhead) is timed where named, for comparison; ``keras`` runs the source checkpoint,
not a build, so it has nothing to time here (``edgeinfer bench`` times the baseline).

The result goes to ``<repository>/tuning/<model>.json`` under this machine's key
(:func:`edgeinfer.system.machine.machine_key`), merged per precision with the builds' sha256,
where ``runtime="auto"`` finds it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer.errors import EdgeInferError, InvalidInput
from edgeinfer.models.precision import COMPUTED, PRECISIONS, build_of
from edgeinfer.models.repository import ModelRepository, StoredModel
from edgeinfer.runtimes.base import RuntimeOptions
from edgeinfer.runtimes.registry import COMPILED_CACHE_DIR
from edgeinfer.system.threads import process_budget
from edgeinfer.tune.store import check_writable, write_entry

GOALS = ("latency", "throughput")
MAX_DURATION_S = 3600.0  # per configuration
MAX_BATCH = 1024  # a batch of preprocessed 224 px images is 0.6 MB each


@dataclass(frozen=True)
class TuneSpace:
    """What to search and how long to time each configuration."""

    runtimes: tuple[str, ...]
    precisions: tuple[str, ...] = ("fp32", "int8")
    threads: tuple[int, ...] = (1, 2)
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    duration_s: float = 1.0
    warmup_runs: int = 3
    min_runs: int = 5
    p99_bound_ms: float = 50.0
    seed: int = 0

    def __post_init__(self) -> None:
        for label, values in (
            ("runtimes", self.runtimes),
            ("precisions", self.precisions),
            ("threads", self.threads),
            ("batch_sizes", self.batch_sizes),
        ):
            if not values:
                raise InvalidInput(f"tune needs at least one value for {label}")
        for name in self.runtimes:
            runtime_name(name)
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown:  # refused before minutes of measuring, not stored as a failed precision
            raise InvalidInput(f"unknown precision {unknown[0]!r}; choose from {', '.join(PRECISIONS)}")
        if any(t < 1 for t in self.threads) or any(b < 1 for b in self.batch_sizes):
            raise InvalidInput("threads and batch sizes must be at least 1")
        for label, value in (("duration_s", self.duration_s), ("p99_bound_ms", self.p99_bound_ms)):
            if not math.isfinite(value):  # NaN passes the checks below, then never ends or bounds a run
                raise InvalidInput(f"{label} must be a finite positive number, got {value}")
        if self.duration_s <= 0 or self.p99_bound_ms <= 0 or self.min_runs < 1 or self.warmup_runs < 0:
            raise InvalidInput("duration_s and p99_bound_ms must be positive, min_runs at least 1")
        if self.duration_s > MAX_DURATION_S or max(self.batch_sizes) > MAX_BATCH:
            raise InvalidInput(
                f"duration_s and batch sizes must be at most {MAX_DURATION_S:g} s and {MAX_BATCH}, got "
                f"{self.duration_s:g} s and {max(self.batch_sizes)} (each configuration is timed that long, "
                "with that many preprocessed images in memory)"
            )


def runtime_name(name: str) -> str:
    """The registry name of a runtime tune can time (aliases allowed): not ``auto``, which is what
    tune measures for, nor an unknown name; :class:`InvalidInput` listing the choices otherwise."""
    from edgeinfer.runtimes.registry import ALIASES, FACTORIES

    key = name.strip().lower()
    key = ALIASES.get(key, key)
    choices = (
        f"choose from {', '.join(FACTORIES)} (aliases: {', '.join(ALIASES)}), or leave the runtimes "
        "out to time every one auto may pick"
    )
    if key == "auto":
        raise InvalidInput(f"tune times named runtimes, not auto (which opens their winner); {choices}")
    if key not in FACTORIES:
        raise InvalidInput(f"unknown runtime {name!r}; {choices}")
    return key


@dataclass(frozen=True)
class Trial:
    """One configuration's measurement (latencies are per batch, in milliseconds), or its error."""

    runtime: str
    precision: str
    threads: int
    batch_size: int
    runs: int = 0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    images_per_s: float | None = None
    error: str | None = None
    skipped: bool = False  # not run: the runtime cannot run this precision (``error`` says why)

    @property
    def ok(self) -> bool:
        return self.error is None and self.p90_ms is not None


@dataclass(frozen=True)
class TuneResult:
    model: str
    machine: str
    measured_at: str
    space: TuneSpace
    trials: tuple[Trial, ...]
    best: dict[str, Trial | None] = field(default_factory=dict)
    best_by_precision: dict[str, dict[str, Trial | None]] = field(default_factory=dict)
    # the sha256 of each precision's build the trials ran on: a rebuilt model is not this tuning's
    file_sha256: dict[str, str] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        """Whether any precision has a winner (a result without one is not stored)."""
        return any(t is not None for goals in self.best_by_precision.values() for t in goals.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "machine": self.machine,
            "measured_at": self.measured_at,
            "space": asdict(self.space),
            "trials": [asdict(t) for t in self.trials],
            "best": {goal: _as_dict(t) for goal, t in self.best.items()},
            "best_by_precision": {
                precision: {goal: _as_dict(t) for goal, t in goals.items()}
                for precision, goals in self.best_by_precision.items()
            },
            "file_sha256": dict(self.file_sha256),
        }


Progress = Callable[[Trial], None]


def search(
    repo: ModelRepository,
    model: str,
    space: TuneSpace,
    progress: Progress | None = None,
    *,
    save: bool = True,
) -> tuple[TuneResult, Path | None]:
    """Measure every configuration in ``space``; store the winners unless ``save`` is false or
    there is none (the path is then None, and what was stored before stays)."""
    from edgeinfer.system.machine import machine_key, this_cpu_flags

    if save:
        check_writable(repo.root, model)  # before the measuring, not after it
    trials: list[Trial] = []
    shas: dict[str, str] = {}

    def note(trial: Trial) -> None:
        trials.append(trial)
        if progress:
            progress(trial)

    for precision in space.precisions:
        computed = COMPUTED.get(precision)
        try:
            stored = repo.get(model, build_of(precision))
            stored.verify()
            if computed is not None:  # e.g. bf16 on a CPU without bfloat16 arithmetic
                computed.check(computed.runtime, this_cpu_flags())
        except EdgeInferError as exc:  # e.g. an INT8 build refused by its accuracy gate
            first = computed.runtime if computed is not None else space.runtimes[0]
            note(Trial(first, precision, space.threads[0], 1, error=str(exc)))
            continue
        shas[precision] = stored.config.file_sha256
        _time_precision(stored, precision, space, note, compiled=repo.root / COMPILED_CACHE_DIR)
    result = _summarize(model, machine_key(), space, trials, shas)
    path = write_entry(repo.root, model, result.machine, result.to_dict()) if save and result.found else None
    return result, path


def _time_precision(
    stored: StoredModel,
    precision: str,
    space: TuneSpace,
    note: Callable[[Trial], None],
    *,
    compiled: Path | None = None,
) -> None:
    """Every runtime x threads x batch size of one precision's build; a runtime that cannot run it
    is noted as skipped, with the reason, rather than silently left out. A runtime that keeps what
    it compiles keeps it in ``compiled``, where the engine's later loads find it."""
    computed = COMPUTED.get(precision)
    samples = _samples(stored, max(space.batch_sizes), space.seed)
    files = _files(stored, space.runtimes)
    extra = dict(computed.runtime_options) if computed is not None else {}
    # a computed precision runs on the one runtime that computes it; the others are skipped
    able = [r for r in _able(space.runtimes, files) if computed is None or r == computed.runtime]
    for runtime in space.runtimes:
        if runtime not in able:
            note(_skipped(runtime, precision, space, stored, computed))
    for runtime in able:
        model_file = files[_format_for(runtime, files)]
        # a request past the cores runs on all of them: asked once (2,3 on 2 cores timed 2 twice)
        cores = process_budget().total
        for threads in dict.fromkeys(min(t, cores) for t in space.threads):
            options = RuntimeOptions(threads=threads, extra=extra, compiled_cache_dir=compiled)
            for trial in _measure(model_file, runtime, precision, options, samples=samples, space=space):
                note(trial)


def _skipped(runtime: str, precision: str, space: TuneSpace, stored: StoredModel, computed: Any) -> Trial:
    if computed is not None:
        why = f"{precision} is computed by {computed.runtime} only"
    else:
        why = f"{runtime} cannot run the {stored.config.precision} {stored.config.format} build"
        if runtime == "litert" and stored.config.format == "onnx":
            why += " (LiteRT runs a TFLite twin of FP32 ONNX builds only)"
    return Trial(runtime, precision, space.threads[0], 1, error=why, skipped=True)


def _files(stored: StoredModel, runtimes: Sequence[str]) -> dict[str, Path]:
    """The build's file by format: its own, and the TFLite twin of an FP32 ONNX build when LiteRT
    is among ``runtimes`` and can run it."""
    from edgeinfer.engine.alternates import litert_files
    from edgeinfer.runtimes.base import model_format

    files: dict[str, Path] = {stored.config.format: stored.path}
    if "litert" in runtimes:
        for make in litert_files(stored.config, stored.path, "auto").values():
            try:
                twin = make()
            except EdgeInferError:  # not a graph LiteRT can have: skipped, like other formats
                continue
            files[model_format(twin)] = twin
    return files


def _format_for(runtime: str, files: dict[str, Path]) -> str:
    from edgeinfer.runtimes.registry import factory

    return next(fmt for fmt in files if fmt in factory(runtime).formats)


def _able(runtimes: Sequence[str], files: dict[str, Path]) -> list[str]:
    """The runtimes that can run one of ``files`` (the others are skipped, not failed)."""
    from edgeinfer.runtimes.registry import factory

    return [name for name in runtimes if any(fmt in factory(name).formats for fmt in files)]


def _measure(
    path: Path,
    runtime: str,
    precision: str,
    options: RuntimeOptions,
    *,
    samples: np.ndarray,
    space: TuneSpace,
) -> list[Trial]:
    from edgeinfer.runtimes.registry import load

    threads = options.threads or 0
    try:
        opened = load(runtime, path, options)
    except EdgeInferError as exc:
        return [Trial(runtime, precision, threads, b, error=str(exc)) for b in space.batch_sizes]
    try:
        name = opened.inputs[0].name
        trials = []
        for batch_size in space.batch_sizes:
            try:
                times_ns = _time_runs(opened.run, name, samples, batch_size, space)
            except EdgeInferError as exc:  # e.g. a model with a fixed batch of 1
                trials.append(Trial(opened.name, precision, threads, batch_size, error=str(exc)))
                continue
            # the threads the runtime was granted, not asked for (99 on 2 cores ran with 2)
            trials.append(_trial(opened.name, precision, opened.threads or threads, batch_size, times_ns))
        return trials
    finally:
        opened.close()


def _time_runs(
    run: Callable[[dict[str, np.ndarray]], object],
    input_name: str,
    samples: np.ndarray,
    batch_size: int,
    space: TuneSpace,
) -> list[int]:
    batches = [
        np.ascontiguousarray(np.take(samples, range(i, i + batch_size), axis=0, mode="wrap"))
        for i in range(0, len(samples), batch_size)
    ]
    for i in range(space.warmup_runs):
        run({input_name: batches[i % len(batches)]})
    times_ns: list[int] = []
    deadline = time.perf_counter_ns() + int(space.duration_s * 1e9)
    while len(times_ns) < space.min_runs or time.perf_counter_ns() < deadline:
        feed = {input_name: batches[len(times_ns) % len(batches)]}
        started = time.perf_counter_ns()
        run(feed)
        times_ns.append(time.perf_counter_ns() - started)
    return times_ns


def _trial(runtime: str, precision: str, threads: int, batch_size: int, times_ns: Sequence[int]) -> Trial:
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    return Trial(
        runtime=runtime,
        precision=precision,
        threads=threads,
        batch_size=batch_size,
        runs=len(ms),
        p50_ms=round(float(np.percentile(ms, 50)), 3),
        p90_ms=round(float(np.percentile(ms, 90)), 3),
        p99_ms=round(float(np.percentile(ms, 99)), 3),
        images_per_s=round(batch_size * len(ms) / (float(ms.sum()) / 1e3), 1),
    )


def _summarize(
    model: str, machine: str, space: TuneSpace, trials: list[Trial], shas: dict[str, str]
) -> TuneResult:
    by_precision = {
        precision: _winners([t for t in trials if t.precision == precision], space)
        for precision in space.precisions
    }
    return TuneResult(
        model=model,
        machine=machine,
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        space=space,
        trials=tuple(trials),
        best=_winners(trials, space),
        best_by_precision=by_precision,
        file_sha256=shas,
    )


def _winners(trials: Sequence[Trial], space: TuneSpace) -> dict[str, Trial | None]:
    """The two goals' winners, never a runtime ``auto`` would not open (``null``'s zeros win every
    race, ``keras`` is the baseline)."""
    from edgeinfer.runtimes.registry import NOT_AUTO

    candidates = [t for t in trials if t.ok and t.runtime not in NOT_AUTO]
    single = [t for t in candidates if t.batch_size == 1]
    bounded = [t for t in candidates if t.p99_ms is not None and t.p99_ms <= space.p99_bound_ms]
    return {
        "latency": min(single, key=lambda t: t.p90_ms or float("inf"), default=None),
        "throughput": max(bounded, key=lambda t: t.images_per_s or 0.0, default=None),
    }


def _samples(stored: StoredModel, count: int, seed: int) -> np.ndarray:
    """Real photos preprocessed for the model, in a seeded order; seeded noise without the photos."""
    from edgeinfer.imaging.decode import decode_image
    from edgeinfer.imaging.preprocess import Preprocessor
    from edgeinfer.imaging.samples import DEMO_PHOTOS, available_photos

    preprocessor = Preprocessor(stored.config.preprocessing)
    dtype = np.dtype(stored.config.inputs[0].dtype)
    paths = list(available_photos(DEMO_PHOTOS).values())
    rng = np.random.default_rng(seed)
    if not paths:
        shape = (max(count, 8), *preprocessor.sample_shape)
        return rng.standard_normal(shape).astype(dtype)
    images = np.stack([preprocessor(decode_image(p)) for p in paths]).astype(dtype)
    order = rng.permutation(np.resize(np.arange(len(images)), max(count, len(images))))
    chosen: np.ndarray = images[order]
    return chosen


def _as_dict(trial: Trial | None) -> dict[str, Any] | None:
    return None if trial is None else asdict(trial)
