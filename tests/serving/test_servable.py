"""The servable's instance shapes: the adaptive default loads within the process thread budget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edgeinfer.engine.engine import Engine
from edgeinfer.serving.servable import ModelEngine, load_adaptive
from edgeinfer.system import threads
from edgeinfer.system.threads import ThreadBudget, process_budget


def _loader(runtime: str) -> tuple[list[Engine], Callable[[int], ModelEngine]]:
    opened: list[Engine] = []

    def load(threads: int) -> ModelEngine:
        engine = Engine.load("mobilenet_v2", runtime=runtime, threads=threads)
        opened.append(engine)
        return engine

    return opened, load


def test_adaptive_shape_is_a_wide_runtime_and_a_single_thread_twin_within_the_budget(
    edgeinfer_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threads, "_budget", ThreadBudget(total=2))  # a 2-core process, whatever else ran
    budget = process_budget()
    free = budget.free
    opened, load = _loader("onnxruntime")
    loaded = load_adaptive(load, 2)
    try:
        assert loaded.split is not None and loaded.split_lanes == 2
        assert loaded.instances[0].runtime.threads == 2
        assert loaded.split.runtime.threads == 1
        assert budget.free == free - 2  # the twin never runs beside the wide runtime: no threads of its own
    finally:
        for engine in opened:
            engine.close()
    assert budget.free == free


def test_adaptive_shape_falls_back_to_one_instance_where_the_runtime_cannot_be_shared(
    edgeinfer_home: Path,
) -> None:
    opened, load = _loader("null")
    loaded = load_adaptive(load, 2)
    try:
        assert loaded.split is None and loaded.split_lanes == 0
        assert len(loaded.instances) == 1
    finally:
        for engine in opened:
            engine.close()
