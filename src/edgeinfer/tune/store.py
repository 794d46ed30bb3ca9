"""Tuned configurations on disk: ``<repository root>/tuning/<model>.json``, one entry per machine.

Kept free of heavy imports so ``Engine.load(runtime="auto")`` can read it on every load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeinfer.system.files import write_atomically

TUNING_DIR = "tuning"
TUNING_SCHEMA_VERSION = 1


def tuning_path(repo_root: Path, model: str) -> Path:
    return Path(repo_root) / TUNING_DIR / f"{model}.json"


def read_entries(repo_root: Path, model: str) -> dict[str, Any]:
    """Every machine's tuning result for ``model`` (machine key -> result); empty if never tuned.

    A file that cannot be read as a tuning file is ignored, as if it were absent: tuning is a hint.
    """
    try:
        raw = json.loads(tuning_path(repo_root, model).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict) or raw.get("schema_version") != TUNING_SCHEMA_VERSION:
        return {}
    machines = raw.get("machines", {})
    return machines if isinstance(machines, dict) else {}


def write_entry(repo_root: Path, model: str, machine: str, result: dict[str, Any]) -> Path:
    """Store ``result`` for ``machine``, keeping other machines' entries; replaced atomically."""
    path = tuning_path(repo_root, model)
    machines = read_entries(repo_root, model)
    machines[machine] = result
    document = {"schema_version": TUNING_SCHEMA_VERSION, "model": model, "machines": machines}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(document, indent=2, sort_keys=True))
    return path


def tuned_entry(repo_root: Path, model: str, machine: str | None = None) -> dict[str, Any] | None:
    """This machine's tuning result for ``model``, or None."""
    from edgeinfer.system.machine import machine_key

    return read_entries(repo_root, model).get(machine or machine_key())


def tuned_choice(repo_root: Path, model: str, precision: str, goal: str = "latency") -> str | None:
    """The runtime ``edgeinfer tune`` found best on this machine for ``model`` at ``precision``.

    ``goal`` is ``latency`` (lowest p90 at batch 1) or ``throughput`` (most images/s within the
    p99 bound). None when the model was not tuned here, the precision was not part of the search,
    or the tuned runtime is no longer installed.
    """
    best = tuned_best(repo_root, model, precision, goal)
    return None if best is None else str(best["runtime"])


def tuned_threads(repo_root: Path, model: str, precision: str, goal: str = "latency") -> int | None:
    """The thread count of :func:`tuned_choice`'s configuration, or None."""
    best = tuned_best(repo_root, model, precision, goal)
    threads = None if best is None else best.get("threads")
    return threads if isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1 else None


def tuned_best(repo_root: Path, model: str, precision: str, goal: str = "latency") -> dict[str, Any] | None:
    """The winning trial (runtime, threads, batch size and figures) for ``goal``, as stored; None
    where :func:`tuned_choice` is."""
    if goal not in ("latency", "throughput"):
        raise ValueError(f"goal must be 'latency' or 'throughput', got {goal!r}")
    entry = tuned_entry(repo_root, model)
    if entry is None:
        return None
    try:
        best = entry["best_by_precision"][precision][goal]
    except (KeyError, TypeError):
        return None
    if not isinstance(best, dict) or not isinstance(best.get("runtime"), str):
        return None  # malformed: treated like a missing file (tuning is a hint)
    from edgeinfer.runtimes.registry import FACTORIES

    found = FACTORIES.get(best["runtime"])
    return best if found is not None and found.available() else None


def tuned_batch1_ms(
    repo_root: Path, model: str, precision: str, threads: int | None = None
) -> dict[str, float]:
    """Each installed runtime's best batch-1 median (ms) in this machine's tuning of ``model`` at
    ``precision``: at ``threads`` where the search timed that count, over every count otherwise.
    Empty when not tuned here. (The figures ``auto``'s preferences compare, like the probe's.)"""
    entry = tuned_entry(repo_root, model)
    trials = entry.get("trials") if isinstance(entry, dict) else None
    if not isinstance(trials, list):
        return {}
    single = [
        t for t in trials
        if isinstance(t, dict) and t.get("precision") == precision and t.get("batch_size") == 1
        and t.get("error") is None and isinstance(t.get("p50_ms"), int | float)
        and isinstance(t.get("runtime"), str)
    ]  # fmt: skip
    if threads is not None and any(t.get("threads") == threads for t in single):
        single = [t for t in single if t.get("threads") == threads]
    from edgeinfer.runtimes.registry import FACTORIES

    best: dict[str, float] = {}
    for trial in single:
        runtime, ms = trial["runtime"], float(trial["p50_ms"])
        found = FACTORIES.get(runtime)
        if found is not None and found.available() and ms < best.get(runtime, float("inf")):
            best[runtime] = ms
    return best
