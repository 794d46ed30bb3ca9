"""Load a configuration's engine and time its cold start.

Kept apart from the harness so a fresh worker process can load the model and make its first
prediction before it imports anything only the benchmark needs (LoadGen, HDR histograms):
what it measures is the cold start an application would see.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ConfigurationSpec:
    """What to load: model, runtime (registry name or ``auto``), precision and intra-op threads."""

    model: str
    runtime: str
    precision: str
    threads: int | None

    @property
    def label(self) -> str:
        threads = "auto" if self.threads is None else str(self.threads)
        return f"{self.runtime}/{self.precision}/t{threads}"


@dataclass
class LoadedEngine:
    """A loaded engine and the cold-start times measured while loading it (nanoseconds)."""

    engine: Any
    load_ns: int
    first_inference_ns: int
    process_start_to_first_prediction_ns: int | None = None

    @property
    def compiled_cache(self) -> str | None:
        """``"loaded"`` where the runtime imported a model it compiled on an earlier load,
        ``"compiled"`` where it compiled it now, None for runtimes that keep nothing."""
        properties = getattr(self.engine.runtime, "properties", None)
        if not isinstance(properties, dict) or "LOADED_FROM_CACHE" not in properties:
            return None
        return "loaded" if properties["LOADED_FROM_CACHE"] == "True" else "compiled"


def ensure_built(model: str, precision: str, repository: Path | None) -> None:
    """Build the model if it is missing, so that building never counts as loading."""
    from edgeinfer.errors import RuntimeUnavailable
    from edgeinfer.models.precision import build_of
    from edgeinfer.models.repository import ModelRepository

    try:
        ModelRepository(repository).get(model, build_of(precision))
    except ImportError as exc:  # a builder whose optional dependency is not installed
        raise RuntimeUnavailable(f"cannot build {model} ({precision}) here: {exc}") from exc


def settle(spec: ConfigurationSpec, repository: Path | None) -> None:
    """Do now what a configuration's first load on a device does once and keeps, so that no timed
    load includes it: ``runtime="auto"``'s device probe, and the compiling of a runtime that keeps
    what it compiled (OpenVINO)."""
    from edgeinfer.runtimes.registry import factory

    if spec.runtime != "auto" and not factory(spec.runtime).keeps_compiled:
        return
    from edgeinfer.engine.engine import Engine

    Engine.load(
        spec.model,
        runtime=spec.runtime,
        precision=spec.precision,
        threads=spec.threads,
        repository=repository,
    ).close()


def load_engine(spec: ConfigurationSpec, repository: Path | None, first_sample: bytes) -> LoadedEngine:
    """Time ``Engine.load`` (imports of the runtime included) and the first ``classify`` after it."""
    t0 = time.perf_counter_ns()
    from edgeinfer.engine.engine import Engine

    engine = Engine.load(
        spec.model,
        runtime=spec.runtime,
        precision=spec.precision,
        threads=spec.threads,
        repository=repository,
    )
    t1 = time.perf_counter_ns()
    try:
        engine.classify(first_sample)
    except BaseException:
        engine.close()
        raise
    return LoadedEngine(engine, t1 - t0, time.perf_counter_ns() - t1)
