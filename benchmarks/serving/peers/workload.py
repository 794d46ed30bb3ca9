"""The work every peer stack does per request, identical across stacks.

JPEG bytes -> edgeinfer's decoder (simplejpeg / libjpeg-turbo) -> edgeinfer's Preprocessor (resize
shorter side to 256, centre-crop 224, normalize, NCHW) -> the built MobileNetV2 FP32 ONNX file on a
plain ``onnxruntime.InferenceSession`` (2 intra-op threads, 1 inter-op thread, sequential, graph
optimization ALL, thread spinning off: the settings edgeinfer's own runtime uses) -> top-5 labels.

Only the model file, the decoder and the preprocessing come from edgeinfer; the session is created
here, so a peer runs no edgeinfer engine, batcher or server code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgeinfer.imaging.decode import DecodeOptions, decode_bytes
from edgeinfer.imaging.preprocess import Preprocessor
from edgeinfer.models.config import Preprocessing
from edgeinfer.models.labels import imagenet_labels

TOP_K = 5
MODEL_DIR_ENV = "PEER_MODEL_DIR"
THREADS_ENV = "PEER_THREADS"


class Workload:
    """Decode + preprocess one image; run a batch; top-5 of each row."""

    def __init__(self, model_dir: Path | None = None, threads: int | None = None) -> None:
        model_dir = model_dir or Path(os.environ[MODEL_DIR_ENV])
        threads = threads or int(os.environ.get(THREADS_ENV, "2"))
        config = json.loads((model_dir / "config.json").read_text())
        spec = config["preprocessing"]
        self.preprocessor = Preprocessor(
            Preprocessing(
                resize_shorter_px=spec["resize_shorter_px"],
                crop_px=spec["crop_px"],
                scale=spec["scale"],
                mean=tuple(spec["mean"]),
                std=tuple(spec["std"]),
                layout=spec["layout"],
            )
        )
        # edgeinfer's engine decodes JPEGs at a reduced DCT scale down to the resize target
        self.decode_options = DecodeOptions(min_shorter_px=spec["resize_shorter_px"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(model_dir / config["file"]), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.labels = imagenet_labels()
        # warm up every batch size a stack may form, so no request pays the first-run cost
        for size in (1, 2, 4, 8):
            self.infer(np.zeros((size, *self.preprocessor.sample_shape), dtype=np.float32))

    def prepare(self, jpeg: bytes) -> np.ndarray:
        sample: np.ndarray = self.preprocessor(decode_bytes(jpeg, self.decode_options))
        return sample

    def infer(self, batch: np.ndarray) -> np.ndarray:
        scores: np.ndarray = self.session.run(None, {self.input_name: batch})[0]
        return scores

    def top5(self, scores: np.ndarray) -> list[dict[str, Any]]:
        top = np.argpartition(scores, -TOP_K)[-TOP_K:]
        top = top[np.argsort(scores[top])[::-1]]
        return [{"index": int(i), "label": self.labels[i], "score": float(scores[i])} for i in top]

    def classify_batch(self, jpegs: Sequence[bytes]) -> list[list[dict[str, Any]]]:
        batch = np.stack([self.prepare(data) for data in jpegs])
        return [self.top5(row) for row in self.infer(batch)]

    def classify(self, jpeg: bytes) -> list[dict[str, Any]]:
        return self.classify_batch([jpeg])[0]
