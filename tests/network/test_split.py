"""Cutting the real MobileNetV2: where it can be cut, and that head + tail equal the whole."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edgeinfer.engine.engine import Engine
from edgeinfer.network import split
from edgeinfer.network.profiles import LinkProfile


@pytest.fixture(scope="module")
def model(engine: Engine) -> split.onnx.ModelProto:
    return split.load(engine.stored.path)


def _run(proto: split.onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feed)[0])


def test_cuts_are_single_tensors_between_blocks(model: split.onnx.ModelProto) -> None:
    points = split.cut_points(model)
    by_node = {p.node: p for p in points}
    assert points[0].index == 0 and points[0].shape == (3, 224, 224)
    assert "features.3.add" in by_node and by_node["features.3.add"].shape == (24, 56, 56)
    assert by_node["pool.flatten"].bytes("int8") == 1280
    # inside an inverted residual block the skip connection is a second live tensor: no cut there
    assert not any(p.node.startswith("features.3.conv") for p in points)


@pytest.mark.parametrize(("transport", "tolerance"), [("fp32", 1e-6), ("fp16", 1e-3), ("int8", 5e-2)])
def test_head_plus_tail_equals_the_whole_model(
    model: split.onnx.ModelProto,
    engine: Engine,
    jpegs: list[bytes],
    transport: split.Transport,
    tolerance: float,
) -> None:
    cut = next(p for p in split.cut_points(model) if p.node == "features.6.add")
    batch = np.stack([engine.preprocess(engine.decode(j)) for j in jpegs])
    head, _ = split.partition(model, cut, "fp32")
    middle = _run(head, {"input": batch})
    quantizer = split.Quantizer.calibrate([middle]) if transport == "int8" else None
    _, tail = split.partition(model, cut, transport, quantizer)
    wire = split.encode(middle, transport, quantizer)
    assert wire.nbytes == len(jpegs) * cut.bytes(transport)
    out = _run(tail, {split.TAIL_INPUT: wire})
    full = engine.infer(batch)
    assert np.abs(out - full).max() < tolerance
    assert (out.argmax(axis=1) == full.argmax(axis=1)).all()


def test_the_choice_follows_the_link(
    model: split.onnx.ModelProto, engine: Engine, jpegs: list[bytes]
) -> None:
    layers = split.profile_layers(
        engine.stored.path, engine.preprocess(engine.decode(jpegs[0])), runs=3, threads=1
    )
    assert sum(layers.values()) > 0
    slow = LinkProfile("slow", rtt_ms=300, up_mbps=0.5, down_mbps=1)
    assert split.choose_cut(model, layers, slow)[0].cut.node == "(all on device)"
    # A cloud 1000x faster on a LAN: sending the input tensor early beats running the layers here.
    lan = LinkProfile("lan", rtt_ms=0.2, up_mbps=10_000, down_mbps=10_000)
    best = split.choose_cut(model, layers, lan, speedup=1000, scale=50.0)[0]
    assert best.cut.index < 20 and best.head_ms < best.total_ms
    with pytest.raises(split.InvalidInput):
        split.encode(np.zeros(3, np.float32), "int8")
