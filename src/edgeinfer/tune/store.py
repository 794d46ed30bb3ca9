"""Tuned configurations on disk: ``<repository root>/tuning/<model>.json``, one entry per machine.

Each entry holds, per precision, the winners, the trials and the sha256 of the build they were
measured on (``file_sha256``); the readers below take the current build's sha256 and ignore a
precision measured on another build (rebuilt, or removed and built again) or stored without one
(files from before it was recorded), so ``runtime="auto"`` probes again rather than follow a
measurement of a file that is no longer there.

Kept free of heavy imports so ``Engine.load(runtime="auto")`` can read it on every load.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from edgeinfer.errors import StorageError
from edgeinfer.system.files import updating, write_atomically

log = logging.getLogger(__name__)

TUNING_DIR = "tuning"
TUNING_SCHEMA_VERSION = 1


def tuning_path(repo_root: Path, model: str) -> Path:
    return Path(repo_root) / TUNING_DIR / f"{model}.json"


def read_entries(repo_root: Path, model: str) -> dict[str, Any]:
    """Every machine's tuning result for ``model`` (machine key -> result); empty if never tuned.

    A file that cannot be read as a tuning file is ignored, as if it were absent: tuning is a hint.
    """
    path = tuning_path(repo_root, model)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the tuning file %s: it cannot be read (%s)", path, exc)
        return {}
    if not isinstance(raw, dict) or raw.get("schema_version") != TUNING_SCHEMA_VERSION:
        log.warning("ignoring the tuning file %s: not a tuning file of this edgeinfer", path)
        return {}
    machines = raw.get("machines", {})
    return machines if isinstance(machines, dict) else {}


def check_writable(repo_root: Path, model: str) -> None:
    """Raise :class:`StorageError` unless the tuning file's folder can be written (made if missing):
    asked before a search, which takes minutes, rather than after it."""
    folder = tuning_path(repo_root, model).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise _unwritable(folder, exc) from exc


def write_entry(repo_root: Path, model: str, machine: str, result: dict[str, Any]) -> Path:
    """Store ``result`` for ``machine``, keeping other machines' entries; replaced atomically.

    Merged precision by precision: the precisions ``result`` found a winner for replace this
    machine's (winners, trials, ``file_sha256``), the others keep what was stored, so tuning FP32
    and then INT8 keeps both, and a precision whose every trial failed does not wipe a good result.
    ``space``, ``measured_at`` and the overall ``best`` are the latest run's.
    """
    path = tuning_path(repo_root, model)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with updating(path):  # a tune writing at the same time keeps its entries too
            machines = read_entries(repo_root, model)
            machines[machine] = _merged(machines.get(machine), result)
            document = {"schema_version": TUNING_SCHEMA_VERSION, "model": model, "machines": machines}
            write_atomically(path, json.dumps(document, indent=2, sort_keys=True))
    except OSError as exc:
        raise _unwritable(path.parent, exc) from exc
    return path


def _merged(old: object, new: dict[str, Any]) -> dict[str, Any]:
    before = old if isinstance(old, dict) else {}
    winners = _mapping(new, "best_by_precision")
    replaced = {p for p, goals in winners.items() if isinstance(goals, dict) and any(goals.values())}
    merged = {**before, **new}
    for key in ("best_by_precision", "file_sha256"):
        kept = {p: v for p, v in _mapping(before, key).items() if p not in replaced}
        merged[key] = {**kept, **{p: v for p, v in _mapping(new, key).items() if p in replaced}}
    merged["trials"] = [
        *(t for t in _trials(before) if t.get("precision") not in replaced),
        *(t for t in _trials(new) if t.get("precision") in replaced),
    ]
    return merged


def _mapping(entry: dict[str, Any], key: str) -> dict[str, Any]:
    value = entry.get(key)
    return value if isinstance(value, dict) else {}


def _trials(entry: dict[str, Any]) -> list[dict[str, Any]]:
    trials = entry.get("trials")
    return [t for t in trials if isinstance(t, dict)] if isinstance(trials, list) else []


def _unwritable(folder: Path, exc: OSError) -> StorageError:
    return StorageError(
        f"cannot write tuning results to {folder}: {exc.strerror or exc}; tune a repository you can "
        "write to (--home)"
    )


def tuned_entry(repo_root: Path, model: str, machine: str | None = None) -> dict[str, Any] | None:
    """This machine's tuning result for ``model``, or None."""
    from edgeinfer.system.machine import machine_key

    return read_entries(repo_root, model).get(machine or machine_key())


def _current_entry(repo_root: Path, model: str, precision: str, file_sha256: str) -> dict[str, Any] | None:
    """This machine's entry where its ``precision`` was measured on the build ``file_sha256``; None
    for another build or none recorded (tuned before the sha256 was stored: probed again)."""
    entry = tuned_entry(repo_root, model)
    if not isinstance(entry, dict):
        return None
    shas = entry.get("file_sha256")
    return entry if isinstance(shas, dict) and shas.get(precision) == file_sha256 else None


def tuned_choice(
    repo_root: Path, model: str, precision: str, goal: str = "latency", *, file_sha256: str
) -> str | None:
    """The runtime ``edgeinfer tune`` found best on this machine for ``model`` at ``precision``.

    ``goal`` is ``latency`` (lowest p90 at batch 1) or ``throughput`` (most images/s within the
    p99 bound). None when the model was not tuned here, the precision was not part of the search,
    the tuning was measured on another build than the one whose sha256 is ``file_sha256`` (or on
    an unrecorded one), or the tuned runtime is no longer installed.
    """
    best = tuned_best(repo_root, model, precision, goal, file_sha256=file_sha256)
    return None if best is None else str(best["runtime"])


def tuned_threads(
    repo_root: Path, model: str, precision: str, goal: str = "latency", *, file_sha256: str
) -> int | None:
    """The thread count of :func:`tuned_choice`'s configuration, or None."""
    return trial_threads(tuned_best(repo_root, model, precision, goal, file_sha256=file_sha256))


def trial_threads(best: dict[str, Any] | None) -> int | None:
    """A stored winning trial's thread count, or None (no trial, or a malformed count)."""
    threads = None if best is None else best.get("threads")
    return threads if isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1 else None


def tuned_best(
    repo_root: Path, model: str, precision: str, goal: str = "latency", *, file_sha256: str
) -> dict[str, Any] | None:
    """The winning trial (runtime, threads, batch size and figures) for ``goal``, as stored; None
    where :func:`tuned_choice` is, and for ``null`` and ``keras``, which ``auto`` never opens
    (files written before the search left them out may name them)."""
    if goal not in ("latency", "throughput"):
        raise ValueError(f"goal must be 'latency' or 'throughput', got {goal!r}")
    entry = _current_entry(repo_root, model, precision, file_sha256)
    if entry is None:
        return None
    try:
        best = entry["best_by_precision"][precision][goal]
    except (KeyError, TypeError):
        return None
    if not isinstance(best, dict) or not isinstance(best.get("runtime"), str):
        return None  # malformed: treated like a missing file (tuning is a hint)
    from edgeinfer.errors import RuntimeUnavailable
    from edgeinfer.runtimes.registry import FACTORIES, NOT_AUTO, canonical

    try:
        name = canonical(best["runtime"])  # an alias (ort) written by hand names its runtime
    except RuntimeUnavailable:
        log.warning(
            "ignoring %s in the tuning file %s: no such runtime",
            best["runtime"],
            tuning_path(repo_root, model),
        )
        return None
    found = FACTORIES[name]
    if found.name in NOT_AUTO or not found.available():
        return None
    return {**best, "runtime": name}


def tuned_batch1_ms(
    repo_root: Path, model: str, precision: str, threads: int | None = None, *, file_sha256: str
) -> dict[str, float]:
    """Each installed runtime's best batch-1 median (ms) in this machine's tuning of ``model`` at
    ``precision``: at ``threads`` where the search timed that count, over every count otherwise.
    Empty when not tuned here, or on another build than ``file_sha256``'s. (The figures ``auto``'s
    preferences compare, like the probe's.)"""
    entry = _current_entry(repo_root, model, precision, file_sha256)
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
