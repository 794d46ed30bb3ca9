"""Read inner tensors of an ONNX model on calibration images (for equalization, rounding, biases)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx


def probe_batches(
    model: onnx.ModelProto, names: list[str], samples: np.ndarray, batch: int = 16
) -> Iterator[dict[str, np.ndarray]]:
    """Batch by batch over ``samples``, the value of each tensor in ``names`` (the graph input too).

    The model is run by ONNX Runtime (CPU) with those tensors as its only outputs; ``model`` itself
    is not changed.
    """
    import onnxruntime as ort

    graph_input = model.graph.input[0].name
    probed = sorted({name for name in names if name != graph_input})
    session = None
    if probed:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        del probe.graph.output[:]
        for name in probed:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        found = session.run(probed, {graph_input: chunk}) if session is not None else []
        values = dict(zip(probed, (np.asarray(v) for v in found), strict=True))
        values[graph_input] = chunk
        yield values
