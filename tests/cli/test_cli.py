"""The ``edgeinfer`` command run as a user would: a real process, real photos, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgeinfer.models.repository import ModelRepository


def edgeinfer(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEINFER_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "edgeinfer.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def home(repo: ModelRepository) -> Path:
    repo.build("mobilenet_v2")
    return repo.root


def test_classify_table(home: Path, photos: dict[str, Path]) -> None:
    done = edgeinfer(
        "classify", "--runtime", "onnxruntime", str(photos["chelsea"]), str(photos["coffee"]), home=home
    )
    assert done.returncode == 0, done.stderr
    assert "Egyptian cat" in done.stdout
    assert "espresso" in done.stdout


def test_classify_shows_file_names_with_brackets_as_they_are(
    home: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    """Before, ``snap[bold]1.jpg`` showed as ``snap1.jpg`` and ``shots[/]1.jpg`` crashed (rich read
    the names as markup)."""
    names = [tmp_path / "snap[bold]1.jpg", tmp_path / "shots[/]1.jpg"]
    (tmp_path / "shots[").mkdir()
    for name in names:
        name.write_bytes(photos["chelsea"].read_bytes())
    done = edgeinfer(
        "classify", "-r", "onnxruntime", *map(str, names), str(tmp_path / "gone[/].jpg"), home=home
    )
    assert done.returncode == 3, done.stderr  # the missing one: not found
    assert "Traceback" not in done.stderr and "gone[/].jpg" in done.stderr
    shown = "".join(done.stdout.split())  # a long title wraps
    assert "snap[bold]1.jpg" in shown and "shots[/]1.jpg" in shown
    assert done.stdout.count("Egyptian cat") == 2


def test_classify_takes_a_folder_as_its_images_in_name_order(
    home: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    """Before, a folder was refused ("is a directory")."""
    folder, empty = tmp_path / "shots", tmp_path / "empty"
    (folder / "sub").mkdir(parents=True)
    empty.mkdir()
    (folder / "b-coffee.png").write_bytes(photos["coffee"].read_bytes())
    (folder / "a-cat.JPG").write_bytes(photos["chelsea"].read_bytes())  # any case of a suffix
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub" / "c-cat.jpg").write_bytes(photos["chelsea"].read_bytes())  # not taken
    done = edgeinfer("classify", "--json", "-r", "onnxruntime", str(folder), str(empty), home=home)
    assert done.returncode == 2, done.stderr  # the empty folder: invalid input
    results = json.loads(done.stdout)["results"]
    assert [Path(r["image"]).name for r in results] == ["a-cat.JPG", "b-coffee.png", "empty"]
    assert [r["predictions"][0]["label"] for r in results[:2]] == ["Egyptian cat", "espresso"]
    assert results[2]["error"]["kind"] == "invalid_input"
    assert "is a folder with no images (.bmp, .gif" in results[2]["error"]["message"]


def test_classify_json(home: Path, photos: dict[str, Path]) -> None:
    done = edgeinfer("classify", "--json", "-r", "onnxruntime", "-k", "3", str(photos["coffee"]), home=home)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["model"] == "mobilenet_v2"
    assert payload["runtime"] == "onnxruntime"
    result = payload["results"][0]
    assert result["predictions"][0]["label"] == "espresso"
    assert len(result["predictions"]) == 3
    assert result["timings"]["infer_ms"] > 0


def test_classify_missing_file_reports_and_continues(
    home: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    done = edgeinfer(
        "classify", "-r", "onnxruntime", str(tmp_path / "nope.jpg"), str(photos["coffee"]), home=home
    )
    assert done.returncode == 3  # NotFound's exit code
    assert "no such image file" in done.stderr
    assert "espresso" in done.stdout
    assert "Traceback" not in done.stderr


def test_classify_corrupt_image(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated nonsense")
    done = edgeinfer("classify", "-r", "onnxruntime", str(bad), home=home)
    assert done.returncode == 2  # InvalidInput's exit code
    assert "bad.jpg is corrupt or truncated" in done.stderr
    mixed = edgeinfer("classify", "-r", "onnxruntime", str(bad), str(tmp_path / "nope.jpg"), home=home)
    assert mixed.returncode == 1  # failures of different kinds
    assert "corrupt or truncated" in mixed.stderr and "no such image file" in mixed.stderr


def test_classify_passes_runtime_options(home: Path, photos: dict[str, Path]) -> None:
    pytest.importorskip("openvino")
    hint = "INFERENCE_PRECISION_HINT=bf16"
    coffee = str(photos["coffee"])
    done = edgeinfer("classify", "--json", "-r", "openvino", "--runtime-option", hint, coffee, home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"][0]["predictions"][0]["label"] == "espresso"
    # a pair without "=", or options without a named runtime: exit 2 with the reason, no traceback
    for args, reason in (
        (["-r", "openvino", "--runtime-option", "bf16"], "--runtime-option takes KEY=VALUE, got 'bf16'"),
        (["--runtime-option", hint], "name it (runtime=...) instead of auto"),
    ):
        done = edgeinfer("classify", *args, coffee, home=home)
        assert done.returncode == 2, done.stderr
        assert reason in done.stderr
        assert "Traceback" not in done.stderr


def test_threads_and_top_k_below_one_are_refused_by_the_parser(home: Path, photos: dict[str, Path]) -> None:
    for option in ("--threads", "--top-k"):
        for value, reason in (("0", "at least 1, got 0"), ("-3", "at least 1, got -3"), ("two", "got 'two'")):
            done = edgeinfer("classify", option, value, str(photos["coffee"]), home=home)
            assert done.returncode == 2 and reason in done.stderr and "Traceback" not in done.stderr


def test_unknown_model_exit_code(home: Path, photos: dict[str, Path]) -> None:
    done = edgeinfer("classify", "--model", "resnet9000", str(photos["coffee"]), home=home)
    assert done.returncode == 3
    assert "not in the zoo" in done.stderr
    assert "Traceback" not in done.stderr


def test_runtime_not_installed_exit_code(home: Path, photos: dict[str, Path]) -> None:
    done = edgeinfer("classify", "--runtime", "tensorrt", str(photos["coffee"]), home=home)
    assert done.returncode == 4
    assert "tensorrt" in done.stderr


def test_models_list_and_build(tmp_path: Path) -> None:
    done = edgeinfer("models", "build", "efficientnet_lite0", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("built efficientnet_lite0 fp32")
    again = edgeinfer("models", "build", "efficientnet_lite0", home=tmp_path)
    assert again.returncode == 0 and again.stdout.startswith("already built efficientnet_lite0 fp32")
    listing = edgeinfer("models", "list", "--json", home=tmp_path)
    rows = {row["name"]: row for row in json.loads(listing.stdout)["models"]}
    assert set(rows) >= {"mobilenet_v2", "efficientnet_lite0"}
    assert rows["mobilenet_v2"]["builds"] == []
    assert rows["efficientnet_lite0"]["builds"][0]["format"] == "onnx"
    assert rows["efficientnet_lite0"]["license"] == "Apache-2.0"
    verbose = edgeinfer("models", "list", "--verbose", home=tmp_path)
    assert "BSD-3-Clause" in verbose.stdout and "Apache-2.0" in verbose.stdout
    unwrapped = "".join(verbose.stdout.split())
    assert "fp32: " in verbose.stdout and "efficientnet_lite0/fp32/model.onnx" in unwrapped


def test_models_build_and_list_show_both_int8_agreements(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the gate's figure (decisive held-out images) and the one over every held-out image, side by side
    shown = re.compile(
        r"int8 \(fast\): top-1 (\d+\.\d\d)% of \d+ decisive, (\d+\.\d\d)% of all vs fp32 \(ok\)"
    )
    done = edgeinfer("models", "build", "mobilenet_v2", "-p", "int8", home=home)
    assert done.returncode == 0, done.stderr
    built = shown.search(" ".join(done.stdout.split()))
    assert built is not None, done.stdout
    assert float(built[2]) < float(built[1]) <= 100.0  # near-ties are what the gate leaves out
    listing = json.loads(edgeinfer("models", "list", "--json", home=home).stdout)
    mobilenet = next(row for row in listing["models"] if row["name"] == "mobilenet_v2")
    quality = next(b["quality"] for b in mobilenet["builds"] if b["precision"] == "int8")
    assert quality["all_images_top1_agreement"] == pytest.approx(float(built[2]) / 100, abs=1e-3)
    assert quality["passed"] and quality["images"] > 100
    assert quality["threshold"] == quality["threshold_at_build"] == 0.99
    # the list judges a build as loading it would now: by the threshold as configured now
    monkeypatch.setenv("EDGEINFER_MIN_TOP1_AGREEMENT", "0.95")
    listing = json.loads(edgeinfer("models", "list", "--json", home=home).stdout)
    mobilenet = next(row for row in listing["models"] if row["name"] == "mobilenet_v2")
    quality = next(b["quality"] for b in mobilenet["builds"] if b["precision"] == "int8")
    assert (quality["threshold"], quality["threshold_at_build"], quality["passed"]) == (0.95, 0.99, True)


def test_models_build_unknown(tmp_path: Path) -> None:
    done = edgeinfer("models", "build", "resnet9000", home=tmp_path)
    assert done.returncode != 0
    assert "invalid choice" in done.stderr or "not in the zoo" in done.stderr


def test_doctor(tmp_path: Path) -> None:
    done = edgeinfer("doctor", "--json", home=tmp_path)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["physical_cores"] >= 1
    assert info["ram_total_mb"] > 0
    names = {r["name"]: r for r in info["runtimes"]}
    assert names["onnxruntime"]["installed"] is True
    vnni = {"AVX512_VNNI", "AVX_VNNI", "AMX_INT8"} & set(info["isa_flags"])
    if info["architecture"] == "x86_64":  # 7-bit INT8 weights where int8 products saturate
        assert info["int8_weight_bits"] == (8 if vnni else 7)
    table = edgeinfer("doctor", home=tmp_path)
    assert "ISA" in table.stdout and "onnxruntime" in table.stdout
    assert f"{info['int8_weight_bits']}-bit weights" in table.stdout


def test_models_build_recipe_applies_to_int8_only(home: Path) -> None:
    done = edgeinfer("models", "build", "mobilenet_v2", "--recipe", "accurate", home=home)
    assert done.returncode == 2  # InvalidInput: nothing is built or changed
    assert "--recipe chooses how INT8 is built; it does not apply to fp32" in done.stderr
    unknown = edgeinfer("models", "build", "mobilenet_v2", "-p", "int8", "--recipe", "exact", home=home)
    assert unknown.returncode == 2 and "invalid choice: 'exact'" in unknown.stderr
