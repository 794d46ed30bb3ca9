"""Bias correction measured on the quantized network itself, one layer after another.

The analytic correction (:func:`edgeinfer.models.quantize.correct_biases`) removes the mean
output shift that a layer's own weight rounding causes on float inputs. A layer of the INT8
network also reads inputs that every earlier layer's rounding (weights and activations, clipping
included) has already moved. :func:`correct_biases_empirically` measures what is left: for each
Conv and Gemm in graph order it runs the quantized network, as corrected so far, on the
calibration images, takes the mean of the layer's output per channel, and subtracts its
difference from the float network's mean from the layer's int32 bias (Nagel et al. 2019,
"empirical bias correction"). Going in order matters: correcting every layer from one
measurement over-corrects the later ones for shifts the earlier corrections already remove,
and the errors grow from layer to layer.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgeinfer.models.probe import probe_batches


def correct_biases_empirically(
    quantized: onnx.ModelProto, source: onnx.ModelProto, samples: np.ndarray
) -> int:
    """Shift each quantized layer's bias by its measured mean output error; the number of layers.

    ``quantized`` is the QDQ model ONNX Runtime made from the float ``source`` (the same node
    names); it is changed in place. Layers whose bias is not an int32 initializer are skipped.
    """
    floats = {node.name: node for node in source.graph.node if node.op_type in ("Conv", "Gemm")}
    stored = {init.name: init for init in quantized.graph.initializer}
    layers = [
        node
        for node in quantized.graph.node
        if node.op_type in ("Conv", "Gemm")
        and node.name in floats
        and len(node.input) > 2
        and f"{node.input[2]}_quantized" in stored
        and f"{node.input[2]}_quantized_scale" in stored
    ]
    targets = channel_means(source, [floats[node.name].output[0] for node in layers], samples)
    for node in layers:
        measured = channel_means(quantized, [node.output[0]], samples)[node.output[0]]
        shift = measured - targets[floats[node.name].output[0]]
        name = f"{node.input[2]}_quantized"
        scale = np.asarray(numpy_helper.to_array(stored[f"{name}_scale"]), dtype=np.float64)
        bias = np.asarray(numpy_helper.to_array(stored[name]), dtype=np.float64) * scale - shift
        stored[name].CopyFrom(numpy_helper.from_array(np.round(bias / scale).astype(np.int32), name))
    return len(layers)


def channel_means(model: onnx.ModelProto, names: list[str], samples: np.ndarray) -> dict[str, np.ndarray]:
    """Per channel (axis 1), the mean each tensor in ``names`` takes on ``samples``."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for values in probe_batches(model, names, samples):
        for name in names:
            value = values[name]
            axes = (0, *range(2, value.ndim))
            sums[name] = sums.get(name, 0.0) + value.astype(np.float64).sum(axis=axes)
            counts[name] = counts.get(name, 0) + value.size // value.shape[1]
    return {name: sums[name] / counts[name] for name in sums}
