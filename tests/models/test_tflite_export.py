"""The zoo's FP32 ONNX graphs written as TFLite (no TensorFlow), run by LiteRT as a drop-in twin."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgeinfer.errors import IntegrityError
from edgeinfer.models.calibration import held_out_set
from edgeinfer.models.quality import predict
from edgeinfer.models.repository import ModelRepository
from edgeinfer.models.tflite_export import onnx_to_tflite, tflite_twin
from edgeinfer.runtimes.base import RuntimeOptions
from edgeinfer.runtimes.registry import load

pytest.importorskip("ai_edge_litert")


def _op_names(data: bytes) -> list[str]:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(data, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [names[code.builtinCode] for code in model.operatorCodes]
    return [codes[op.opcodeIndex] for op in model.subgraphs[0].operators]


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_the_twin_computes_what_the_onnx_model_computes(
    repo: ModelRepository, tmp_path: Path, name: str
) -> None:
    stored = repo.get(name, "fp32")
    data = onnx_to_tflite(onnx.load(str(stored.path)))
    ops = _op_names(data)
    assert ops[0] == "TRANSPOSE" and ops[-1] == "SOFTMAX"
    assert set(ops) <= {"TRANSPOSE", "PAD", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED",
                        "SOFTMAX", "RELU6"}  # fmt: skip
    assert "RELU6" not in ops  # every ReLU6 follows a convolution and is fused into it
    path = tmp_path / "model.tflite"
    path.write_bytes(data)
    images = held_out_set(stored.config.preprocessing, 1, seed=1)  # the 10 held-out photos
    reference = predict(stored.path, images)
    runtime = load("litert", path, RuntimeOptions(threads=1))
    try:
        (spec,) = runtime.inputs
        assert (spec.name, spec.shape) == ("input", (None, 3, 224, 224))
        twin = runtime.run({"input": images.samples})[runtime.outputs[0].name]  # one batch of 10
    finally:
        runtime.close()
    assert twin.shape == reference.shape
    assert np.abs(twin - reference).max() < 1e-4
    assert (twin.argmax(axis=1) == reference.argmax(axis=1)).all()


def test_the_twin_is_written_once_and_again_when_damaged_or_stale(
    repo: ModelRepository, tmp_path: Path
) -> None:
    stored = repo.get("mobilenet_v2", "fp32")
    onnx_path = tmp_path / "model.onnx"
    shutil.copy(stored.path, onnx_path)
    twin = tflite_twin(onnx_path, stored.config.file_sha256)
    assert twin == tmp_path / "model.tflite" and (tmp_path / "model.tflite.json").is_file()
    written = twin.stat().st_mtime_ns
    assert tflite_twin(onnx_path, stored.config.file_sha256).stat().st_mtime_ns == written  # reused
    good = twin.read_bytes()
    twin.write_bytes(good[:1000])  # damaged: rewritten whole
    assert tflite_twin(onnx_path, stored.config.file_sha256).read_bytes() == good
    written = twin.stat().st_mtime_ns
    tflite_twin(onnx_path, "0" * 64)  # another ONNX file than the one the twin came from
    assert twin.stat().st_mtime_ns != written and twin.read_bytes() == good


def _tiny(node: onnx.NodeProto, initializers: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=initializers,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_ops_outside_the_zoo_subset_are_refused_by_name() -> None:
    sigmoid = _tiny(helper.make_node("Sigmoid", ["input"], ["y"], name="gate"), [])
    with pytest.raises(IntegrityError, match=r"cannot write ONNX op Sigmoid \(gate\) as TFLite"):
        onnx_to_tflite(sigmoid)
    weight = onnx.numpy_helper.from_array(np.zeros((4, 2, 3, 3), np.float32), "w")
    grouped = _tiny(
        helper.make_node("Conv", ["input", "w"], ["y"], name="g2", group=2, pads=[1, 1, 1, 1]), [weight]
    )
    with pytest.raises(IntegrityError, match=r"g2: grouped convolution \(group 2\) has no TFLite op"):
        onnx_to_tflite(grouped)
    square = onnx.numpy_helper.from_array(np.zeros((4, 4, 3, 3), np.float32), "w")
    dilated = _tiny(helper.make_node("Conv", ["input", "w"], ["y"], name="d2", dilations=[2, 2]), [square])
    with pytest.raises(IntegrityError, match="d2: only square 2-D convolutions without dilation are written"):
        onnx_to_tflite(dilated)
    offset = onnx.numpy_helper.from_array(np.ones((1, 4, 1, 1), np.float32), "offset")
    broadcast = _tiny(helper.make_node("Add", ["input", "offset"], ["y"], name="shift"), [offset])
    with pytest.raises(IntegrityError, match="shift: input 'offset' is not a tensor this writer can feed"):
        onnx_to_tflite(broadcast)
