"""Which builds LiteRT runs through a TFLite twin, and the engine (and auto) running one."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeinfer.engine import Engine
from edgeinfer.engine.alternates import alternate_runtimes, litert_files
from edgeinfer.errors import RuntimeUnavailable
from edgeinfer.models.repository import ModelRepository
from edgeinfer.runtimes.registry import AUTO_CACHE_FILE

pytest.importorskip("ai_edge_litert")


def test_which_builds_litert_runs(repo: ModelRepository) -> None:
    fp32 = repo.get("mobilenet_v2", "fp32")
    int8 = repo.get("mobilenet_v2", "int8")
    assert litert_files(fp32.config, fp32.path, "openvino") == {}  # another runtime needs no twin
    (make,) = litert_files(fp32.config, fp32.path, "tflite").values()
    assert make() == fp32.path.with_name("model.tflite")
    assert litert_files(int8.config, int8.path, "auto") == {}  # auto simply leaves LiteRT out
    with pytest.raises(RuntimeUnavailable, match="LiteRT runs mobilenet_v2 in FP32 only"):
        litert_files(int8.config, int8.path, "litert")
    # what `edgeinfer tune` adds to the runtimes it searches by default
    assert alternate_runtimes("onnx") == ("litert",)
    assert alternate_runtimes("tflite") == ()  # LiteRT runs those itself


def test_litert_for_a_zoo_build_it_cannot_run_is_refused_before_building_it(tmp_path: Path) -> None:
    empty = ModelRepository(tmp_path)
    with pytest.raises(RuntimeUnavailable, match=r"LiteRT runs mobilenet_v2 in FP32 only .* not fp16"):
        Engine.load("mobilenet_v2", runtime="tflite", precision="fp16", repository=empty)
    assert empty.find("mobilenet_v2", "fp16") is None  # nothing was built for it


def test_the_engine_runs_a_zoo_model_on_litert_and_auto_measures_it(
    repo: ModelRepository, photos: dict[str, Path]
) -> None:
    on_litert = Engine.load("mobilenet_v2", runtime="litert", threads=1, repository=repo)
    on_ort = Engine.load("mobilenet_v2", runtime="onnxruntime", threads=1, repository=repo)
    try:
        assert on_litert.runtime.name == "litert"
        for photo in ("chelsea", "coffee", "grace_hopper"):
            a, b = on_litert.classify(photos[photo]), on_ort.classify(photos[photo])
            assert a.top.index == b.top.index and a.top.score == pytest.approx(b.top.score, abs=1e-4)
    finally:
        on_litert.close()
        on_ort.close()
    auto = Engine.load("mobilenet_v2", threads=1, repository=repo)
    auto.close()
    measured = (repo.root / AUTO_CACHE_FILE).read_text()
    assert '"runtime": "litert"' in measured
