"""A whole benchmark run: the same samples through every configuration, then one report.

By default each configuration runs in its own fresh process (see :mod:`edgeinfer.bench.worker`);
``isolate=False`` runs them in this process, one after another (quicker, but RSS and cold start then
describe the shared process).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgeinfer.bench import compare
from edgeinfer.bench.loading import ConfigurationSpec, ensure_built, settle
from edgeinfer.bench.report import BenchReport, ConfigurationResult, SampleSet, from_dict, utc_now
from edgeinfer.bench.runner import RunOptions, not_run, run_configuration
from edgeinfer.bench.samples import Sample, load_samples, samples_digest
from edgeinfer.bench.versions import package_versions
from edgeinfer.bench.worker import PROGRESS, options_to_dict, write_job
from edgeinfer.errors import EdgeInferError, ModelNotFound, RuntimeUnavailable
from edgeinfer.models.repository import ModelRepository

STDERR_TAIL_CHARS = 2000


class SessionProgress(Protocol):
    """What a front end (the CLI's rich display) hears while a run goes on."""

    def started(self, spec: ConfigurationSpec, index: int, total: int) -> None: ...

    def phase(self, spec: ConfigurationSpec, text: str) -> None: ...

    def finished(self, result: ConfigurationResult) -> None: ...


class _Quiet:
    def started(self, spec: ConfigurationSpec, index: int, total: int) -> None:
        pass

    def phase(self, spec: ConfigurationSpec, text: str) -> None:
        pass

    def finished(self, result: ConfigurationResult) -> None:
        pass


@dataclass(frozen=True)
class BenchRequest:
    """Everything ``edgeinfer bench`` was asked to do."""

    options: RunOptions
    model: str = "mobilenet_v2"
    runtimes: tuple[str, ...] = ("auto",)
    precisions: tuple[str, ...] = ("fp32",)
    threads: tuple[int | None, ...] = (None,)
    sample_count: int | None = None
    sample_encoding: str = "jpeg"
    seed: int = 0
    isolate: bool = True
    command: tuple[str, ...] = ()
    title: str = "edgeinfer bench"
    notes: tuple[str, ...] = field(default_factory=tuple)


def run_benchmark(request: BenchRequest, progress: SessionProgress | None = None) -> BenchReport:
    """Run every configuration of ``request`` and assemble the report (not yet written)."""
    listener = progress or _Quiet()
    samples = load_samples(request.sample_count, request.seed, request.sample_encoding)
    specs = compare.expand(request.model, request.runtimes, request.precisions, request.threads)
    unbuildable = _prebuild(request, specs)
    results: list[ConfigurationResult] = []
    for index, spec in enumerate(specs):
        listener.started(spec, index, len(specs))
        if spec.precision in unbuildable:
            status, message = unbuildable[spec.precision]
            result = not_run(spec, status, message)
        elif request.isolate:
            result = run_isolated(spec, samples, request.options, _phase_of(listener, spec))
        else:
            result = run_configuration(spec, samples, request.options, _phase_of(listener, spec))
        listener.finished(result)
        results.append(result)
    results = compare.with_agreement(results)
    return BenchReport(
        kind="bench",
        title=request.title,
        created_utc=utc_now(),
        edgeinfer_version=_edgeinfer_version(),
        command=request.command,
        machine=machine_facts(),
        versions=package_versions(),
        settings=_settings(request),
        configurations=tuple(results),
        samples=SampleSet(
            count=len(samples),
            seed=request.seed,
            digest=samples_digest(samples),
            total_bytes=sum(len(s.data) for s in samples),
            names=tuple(s.name for s in samples),
            encoding=request.sample_encoding,
        ),
        speedups=compare.speedups(results),
        notes=(*_standard_notes(request), *request.notes),
    )


def _phase_of(listener: SessionProgress, spec: ConfigurationSpec) -> Callable[[str], None]:
    def say(text: str) -> None:
        listener.phase(spec, text)

    return say


def run_isolated(
    spec: ConfigurationSpec,
    samples: Sequence[Sample],
    options: RunOptions,
    say: Callable[[str], None] | None = None,
) -> ConfigurationResult:
    """Run one configuration in a fresh Python process and read back its result."""
    with tempfile.TemporaryDirectory(prefix="edgeinfer-bench-") as tmp:
        job, result_file, stderr_file = (
            Path(tmp) / "job.json",
            Path(tmp) / "result.json",
            Path(tmp) / "stderr",
        )
        write_job(job, spec, options, list(samples))
        with stderr_file.open("w") as stderr:
            spawn_ns = time.monotonic_ns()
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgeinfer.bench.worker", str(job), str(result_file), str(spawn_ns)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=_child_env(),
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(PROGRESS) and say is not None:
                    say(json.loads(line[len(PROGRESS) :])["phase"])
            code = proc.wait()
        if code == 0 and result_file.exists():
            return from_dict(ConfigurationResult, json.loads(result_file.read_text()))
        tail = stderr_file.read_text(errors="replace")[-STDERR_TAIL_CHARS:].strip()
        return not_run(spec, "failed", f"worker process exited with {code}: {tail or 'no output'}")


def machine_facts() -> dict[str, Any]:
    """edgeinfer.system.machine's facts, or the few that psutil and platform give without it."""
    try:
        from edgeinfer.system import machine

        facts: dict[str, Any] = machine.collect().to_dict()
        return facts
    except (ImportError, AttributeError, OSError, EdgeInferError):
        import platform

        import psutil

        return {
            "cpu_model": platform.processor() or platform.machine(),
            "architecture": platform.machine(),
            "logical_cores": os.cpu_count() or 1,
            "ram_total_mb": psutil.virtual_memory().total // 2**20,
            "os": platform.platform(),
            "python_version": platform.python_version(),
        }


def _prebuild(request: BenchRequest, specs: Sequence[ConfigurationSpec]) -> dict[str, tuple[str, str]]:
    """Build each needed precision once, untimed; returns the ones that cannot be built and why."""
    failed: dict[str, tuple[str, str]] = {}
    for precision in dict.fromkeys(s.precision for s in specs):
        try:
            ensure_built(request.model, precision, request.options.repository)
        except (ModelNotFound, RuntimeUnavailable) as exc:
            failed[precision] = ("unavailable", str(exc))
        except EdgeInferError as exc:
            failed[precision] = ("failed", f"{type(exc).__name__}: {exc}")
    for spec in specs:
        if spec.precision not in failed:
            with contextlib.suppress(EdgeInferError):  # the configuration's own run reports it
                settle(spec, request.options.repository)
    return failed


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def _settings(request: BenchRequest) -> dict[str, Any]:
    return {
        "model": request.model,
        "runtimes": list(request.runtimes),
        "precisions": list(request.precisions),
        "threads": ["auto" if t is None else t for t in request.threads],
        "isolated_processes": request.isolate,
        **options_to_dict(request.options),
        # the folder used, also where it came from $EDGEINFER_HOME or the default
        "repository": str(ModelRepository(request.options.repository).root),
    }


def _standard_notes(request: BenchRequest) -> tuple[str, ...]:
    opts = request.options
    notes = [
        f"Warm-up excluded from every figure: each sample once, and at least {opts.warmup_s:g} s.",
        "Sample order and Server arrivals are seeded: "
        + ", ".join(
            sorted(
                {"MLPerf's official seeds" if s.seed is None else f"seed {s.seed}" for s in opts.scenarios}
            )
        )
        + f"; sample variants use seed {request.seed}.",
        "Every configuration sees the same samples (see the digest below).",
        "Models are built, and runtime=auto's device probe is run and cached, before any timed load.",
        "Failed requests are completed, counted and kept in the latency statistics.",
    ]
    if "keras" in request.runtimes and set(request.precisions) - {"fp32"}:
        notes.append("Keras, the blog's path, is measured at FP32 only (its weights are the FP32 ones).")
    if any(s.mlperf for s in opts.scenarios):
        notes.append("MLPerf minimums from LoadGen's built-in mlperf.conf (resnet50, the closest benchmark).")
    else:
        notes.append(
            "Short runs for a quick look: LoadGen may call them INVALID (too short for MLPerf rules)."
        )
    return tuple(notes)


def _edgeinfer_version() -> str:
    from edgeinfer import __version__

    return __version__
