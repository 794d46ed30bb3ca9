"""Small float models quantized by ONNX Runtime's own tooling, for the INT8 correction tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx


def run(model: onnx.ModelProto, inputs: np.ndarray) -> np.ndarray:
    """The model's first output on ``inputs`` (fed to the input named ``x``)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": inputs})[0])


def quantize_qdq(model: onnx.ModelProto, inputs: np.ndarray, folder: Path, **options: Any) -> onnx.ModelProto:
    """``model`` in QDQ format, calibrated on ``inputs`` 8 at a time; ``options`` go to quantize_static."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    onnx.save_model(model, str(folder / "float.onnx"))

    class Reader:
        def __init__(self) -> None:
            self.items = iter([{"x": inputs[i : i + 8]} for i in range(0, len(inputs), 8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(
        str(folder / "float.onnx"),
        str(folder / "int8.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        **options,
    )
    return onnx.load(str(folder / "int8.onnx"))
