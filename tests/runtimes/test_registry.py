"""The registry: names and aliases, missing runtimes, and ``auto`` chosen by a cached measurement."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeinfer.errors import InvalidInput, RuntimeUnavailable
from edgeinfer.models.repository import StoredModel
from edgeinfer.runtimes import registry
from edgeinfer.runtimes.base import RuntimeOptions, TensorSpec
from edgeinfer.runtimes.null import NullRuntime
from edgeinfer.system.threads import process_budget
from tests.runtimes.conftest import TinyModel


def test_names_and_aliases() -> None:
    assert set(registry.names()) == {"onnxruntime", "openvino", "litert", "keras", "null"}
    assert registry.canonical("ort") == "onnxruntime"
    assert registry.canonical(" OV ") == "openvino"
    assert registry.canonical("tflite") == "litert"
    with pytest.raises(RuntimeUnavailable, match=r"unknown runtime 'tensorrt'; choose one of onnxruntime"):
        registry.canonical("tensorrt")


def test_versions_come_from_package_metadata() -> None:
    assert "onnxruntime" in registry.available() and "null" in registry.available()
    assert registry.version("ort") == importlib.metadata.version("onnxruntime")
    infos = registry.runtime_infos()
    assert infos["onnxruntime"].installed and infos["onnxruntime"].formats == ("onnx",)
    assert infos["litert"].formats == ("tflite",)
    assert set(registry.versions()) == set(registry.names())


def test_a_missing_runtime_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tiny_onnx: TinyModel
) -> None:
    # sys.modules[name] = None is how Python marks a module as not importable
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert "openvino" not in registry.available()
    assert registry.version("openvino") is None
    assert not registry.runtime_infos()["openvino"].installed
    assert "openvino" not in registry.auto_candidates("onnx")
    message = r"runtime 'openvino' is not installed; pip install 'edgeinfer\[openvino\]'"
    with pytest.raises(RuntimeUnavailable, match=message):
        registry.require("openvino")
    with pytest.raises(RuntimeUnavailable, match=message):
        registry.open_runtime("ov", tiny_onnx.path)


def test_a_runtime_that_cannot_run_the_format(tiny_onnx: TinyModel, tmp_path: Path) -> None:
    with pytest.raises(RuntimeUnavailable, match="runtime 'litert' cannot run onnx models"):
        registry.load("litert", tiny_onnx.path)
    with pytest.raises(InvalidInput, match="unknown model format"):
        registry.load("onnxruntime", tmp_path / "model.pt")


def test_keras_and_null_never_take_part_in_auto() -> None:
    for fmt in ("onnx", "tflite"):
        assert not {"keras", "null"} & set(registry.auto_candidates(fmt))
    assert registry.auto_candidates("tflite") in ([], ["litert"])


def test_load_respects_threads(tiny_onnx: TinyModel) -> None:
    with registry.load("ort", tiny_onnx.path, RuntimeOptions(threads=1)) as runtime:
        assert runtime.threads == 1
        assert runtime.run({"x": np.zeros((1, 3, 8, 8), np.float32)})["y"].shape == (1, 4)


def test_auto_measures_writes_its_cache_and_reuses_it(tiny_onnx: TinyModel, tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    shutil.copy(tiny_onnx.path, model)
    cache = tmp_path / "cache"
    first = registry.choose_auto(model, options=RuntimeOptions(threads=1), cache_dir=cache, runs=5)
    assert not first.cached
    assert {r.runtime for r in first.results} == set(registry.auto_candidates("onnx"))
    timed = [r for r in first.results if r.median_ms is not None]
    assert first.runtime == min(timed, key=lambda r: r.median_ms or 0.0).runtime
    assert all(r.runs == 5 and r.p90_ms is not None and r.median_ms is not None for r in timed)
    assert all(r.p90_ms >= r.median_ms for r in timed if r.p90_ms and r.median_ms)

    stored = json.loads((cache / registry.AUTO_CACHE_FILE).read_text())
    assert stored["entries"][first.key]["runtime"] == first.runtime
    assert first.key.startswith(registry._sha256(model))

    second = registry.choose_auto(model, options=RuntimeOptions(threads=1), cache_dir=cache)
    assert second.cached and second.runtime == first.runtime and second.results == first.results

    # the cache really decides: point the entry at another installed candidate and it is followed
    others = [name for name in registry.auto_candidates("onnx") if name != first.runtime]
    if others:
        stored["entries"][first.key]["runtime"] = others[0]
        (cache / registry.AUTO_CACHE_FILE).write_text(json.dumps(stored))
        followed = registry.choose_auto(model, options=RuntimeOptions(threads=1), cache_dir=cache)
        assert followed.cached and followed.runtime == others[0]
    remeasured = registry.choose_auto(
        model, options=RuntimeOptions(threads=1), cache_dir=cache, runs=5, refresh=True
    )
    assert not remeasured.cached
    stored = json.loads((cache / registry.AUTO_CACHE_FILE).read_text())
    assert stored["entries"][first.key]["runtime"] == remeasured.runtime


def test_auto_cache_is_per_model_file_and_thread_request(tiny_onnx: TinyModel, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    model = tmp_path / "model.onnx"
    shutil.copy(tiny_onnx.path, model)
    one = registry.choose_auto(model, options=RuntimeOptions(threads=1), cache_dir=cache, runs=5)
    all_threads = registry.choose_auto(model, options=RuntimeOptions(), cache_dir=cache, runs=5)
    assert not all_threads.cached and all_threads.key != one.key
    proto = onnx.load(str(model))
    proto.doc_string = "same graph, different file"
    onnx.save(proto, str(model))
    changed = registry.choose_auto(model, options=RuntimeOptions(threads=1), cache_dir=cache, runs=5)
    assert changed.key != one.key
    entries = json.loads((cache / registry.AUTO_CACHE_FILE).read_text())["entries"]
    assert len(entries) == 3


def test_a_corrupt_auto_cache_is_measured_again_and_rewritten(tiny_onnx: TinyModel, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / registry.AUTO_CACHE_FILE).write_text("{not json")
    choice = registry.choose_auto(tiny_onnx.path, options=RuntimeOptions(threads=1), cache_dir=cache, runs=5)
    assert not choice.cached
    assert json.loads((cache / registry.AUTO_CACHE_FILE).read_text())["entries"][choice.key]


@pytest.mark.parametrize(
    "entry",
    [
        {"runtime": "onnxruntime", "results": [{"runtime": "onnxruntime", "median": 1}]},  # unknown field
        {"runtime": "onnxruntime", "results": "fast"},
        "onnxruntime",
    ],
)
def test_a_malformed_auto_cache_entry_is_measured_again(
    tiny_onnx: TinyModel, tmp_path: Path, entry: object
) -> None:
    first = registry.choose_auto(
        tiny_onnx.path, options=RuntimeOptions(threads=1), cache_dir=tmp_path, runs=5
    )
    cache = tmp_path / registry.AUTO_CACHE_FILE
    stored = json.loads(cache.read_text())
    stored["entries"][first.key] = entry
    cache.write_text(json.dumps(stored))
    again = registry.choose_auto(
        tiny_onnx.path, options=RuntimeOptions(threads=1), cache_dir=tmp_path, runs=5
    )
    assert not again.cached and again.key == first.key


def test_a_cache_that_cannot_be_written_keeps_the_choice_for_the_process(
    tiny_onnx: TinyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import errno

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(registry, "write_atomically", read_only)
    choice = registry.choose_auto(
        tiny_onnx.path, options=RuntimeOptions(threads=1), cache_dir=tmp_path, runs=5
    )
    assert choice.runtime in registry.auto_candidates("onnx")
    assert any("cannot store the probe's choice" in r.getMessage() for r in caplog.records)


def test_auto_without_a_cache_dir_still_chooses(tiny_onnx: TinyModel) -> None:
    free = process_budget().free
    choice = registry.choose_auto(tiny_onnx.path, options=RuntimeOptions(threads=1), runs=5)
    assert choice.runtime in registry.auto_candidates("onnx") and not choice.cached
    assert process_budget().free == free  # every probed runtime was closed


def test_open_runtime_on_a_built_model(mobilenet: StoredModel, tmp_path: Path) -> None:
    null = registry.open_runtime("null", mobilenet)
    assert isinstance(null, NullRuntime)
    assert tuple(null.inputs) == mobilenet.config.inputs and tuple(null.outputs) == mobilenet.config.outputs
    with registry.open_runtime("auto", mobilenet, RuntimeOptions(threads=1), cache_dir=tmp_path) as runtime:
        assert runtime.name in registry.auto_candidates("onnx")
        x = np.zeros((1, 3, 224, 224), np.float32)
        probabilities = runtime.run({runtime.inputs[0].name: x})[runtime.outputs[0].name]
        assert probabilities.shape == (1, 1000)
    cached = json.loads((tmp_path / registry.AUTO_CACHE_FILE).read_text())["entries"]
    (entry,) = cached.values()
    assert entry["runtime"] == runtime.name and entry["model"] == mobilenet.path.name


def test_what_a_runtime_compiles_is_kept_beside_the_auto_cache(tiny_onnx: TinyModel, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    with registry.open_runtime("openvino", tiny_onnx.path, RuntimeOptions(threads=1), cache_dir=tmp_path):
        pass
    assert list((tmp_path / registry.COMPILED_CACHE_DIR / "openvino").glob("*.blob"))
    with registry.open_runtime("openvino", tiny_onnx.path, RuntimeOptions(threads=1)) as runtime:
        assert runtime.properties["LOADED_FROM_CACHE"] == "False"  # no cache_dir: nothing kept or read


def test_open_runtime_on_a_tflite_file(efficientnet_tflite: Path, tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    with registry.open_runtime("auto", efficientnet_tflite, RuntimeOptions(threads=1), tmp_path) as runtime:
        assert runtime.name == "litert"
    with pytest.raises(RuntimeUnavailable, match="cannot run tflite"):
        registry.open_runtime("onnxruntime", efficientnet_tflite)


def test_a_candidate_that_fails_is_reported_not_raised(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07not a graph" * 8)
    result = registry.probe("onnxruntime", corrupt, RuntimeOptions(threads=1))
    assert result.median_ms is None and result.error and "onnxruntime cannot load" in result.error
    with pytest.raises(
        RuntimeUnavailable, match=r"no installed runtime could run corrupt.onnx: onnxruntime: "
    ):
        registry.choose_auto(corrupt, options=RuntimeOptions(threads=1), runs=5)


def test_the_probe_feeds_each_runtime_what_it_takes(efficientnet_tflite: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    # a model config may record the file's own uint8 input; LiteRT takes float and quantizes it
    hints = [TensorSpec("images", "uint8", (None, 224, 224, 3))]
    choice = registry.choose_auto(efficientnet_tflite, "tflite", hints, RuntimeOptions(threads=1), runs=5)
    (result,) = choice.results
    assert result.runtime == "litert" and result.error is None and result.runs == 5


def test_auto_breaks_near_ties_by_load_time() -> None:
    from edgeinfer.runtimes.registry import ProbeResult, pick_fastest

    ort = ProbeResult("onnxruntime", "1", 20, median_ms=4.0, p90_ms=4.5, load_ms=120.0)
    ov = ProbeResult("openvino", "1", 20, median_ms=3.8, p90_ms=4.0, load_ms=650.0)
    assert pick_fastest([ort, ov]).runtime == "onnxruntime"  # 5% slower but loads 5x faster
    much_faster = ProbeResult("openvino", "1", 20, median_ms=3.0, p90_ms=3.2, load_ms=650.0)
    assert pick_fastest([ort, much_faster]).runtime == "openvino"  # 25% faster wins outright


def test_a_preferred_runtime_is_taken_when_its_probe_is_close_enough(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from edgeinfer.runtimes.registry import AutoChoice, ProbeResult, prefer_within

    def choice(chosen: str, **medians: float | None) -> AutoChoice:
        results = tuple(ProbeResult(name, "1", 20, ms, ms, 10.0) for name, ms in medians.items())
        return AutoChoice(runtime=chosen, results=results, cached=True, key="k")

    near = choice("litert", litert=4.0, onnxruntime=5.2, openvino=4.6)  # 1.3x slower at batch 1
    with caplog.at_level("INFO", logger="edgeinfer.runtimes"):
        assert prefer_within(near, {"onnxruntime"}, 1.35) == "onnxruntime"
    assert "onnxruntime (5.20 ms at batch 1) taken over the probe's pick, litert (4.00 ms)" in caplog.text
    assert prefer_within(near, {"onnxruntime"}, 1.2) == "litert"
    assert prefer_within(near, (), 1.35) == "litert"
    assert prefer_within(near, {"onnxruntime", "openvino"}, 1.35) == "openvino"  # the fastest of them
    assert prefer_within(choice("onnxruntime", onnxruntime=5.0, litert=3.0), {"onnxruntime"}, 1.0) == (
        "onnxruntime"
    )
    failed = choice("litert", litert=4.0, onnxruntime=None)  # a preferred runtime that could not run
    assert prefer_within(failed, {"onnxruntime"}, 1.35) == "litert"


def test_an_alternate_file_is_made_only_when_its_runtime_is_probed_or_opened(
    tiny_onnx: TinyModel, tmp_path: Path
) -> None:
    made: list[str] = []

    def make() -> Path:
        made.append("twin")
        raise RuntimeUnavailable("LiteRT cannot run tiny: no twin for this graph")

    cache = tmp_path / "cache"
    options = RuntimeOptions(threads=1)
    first = registry.choose_auto(
        tiny_onnx.path, options=options, cache_dir=cache, runs=5, alternates={"litert": make}
    )
    by_name = {r.runtime: r for r in first.results}
    assert made == ["twin"] and by_name["litert"].error == "LiteRT cannot run tiny: no twin for this graph"
    assert first.runtime != "litert" and by_name[first.runtime].median_ms is not None
    again = registry.choose_auto(
        tiny_onnx.path, options=options, cache_dir=cache, alternates={"litert": make}
    )
    assert again.cached and made == ["twin"]  # a cached choice needs no file
    registry.open_runtime(first.runtime, tiny_onnx.path, options, alternates={"litert": make}).close()
    assert made == ["twin"]
    with pytest.raises(RuntimeUnavailable, match="no twin for this graph"):
        registry.open_runtime("litert", tiny_onnx.path, options, alternates={"litert": make})
