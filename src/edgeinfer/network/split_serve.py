"""The cloud side of split computing: the tail model behind the real ``edgeinfer`` server stack.

:class:`TailEngine` gives the server (its KServe v2 REST adapter, batcher and metrics, unchanged)
a model whose input is the transported intermediate tensor, named ``intermediate``. An encoded
image sent to it is decoded, preprocessed and run through the head here, so the model also
answers whole images (the server warms its decoder with one). Run as a process::

    python -m edgeinfer.network.split_serve --head head.onnx --tail tail.onnx --transport int8 \\
        --scale 0.05 --zero-point 0 --name mobilenet_v2_tail --model mobilenet_v2 --http-port 8100
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer.engine.results import Prediction
from edgeinfer.errors import EdgeInferError, InvalidInput
from edgeinfer.imaging.decode import decode_image
from edgeinfer.imaging.preprocess import Preprocessor
from edgeinfer.models.labels import load_labels
from edgeinfer.models.repository import ModelRepository
from edgeinfer.network.split import TRANSPORTS, Quantizer, Transport, encode
from edgeinfer.runtimes.base import RuntimeOptions
from edgeinfer.runtimes.registry import open_runtime


class TailEngine:
    """The tail of a split model, shaped as the server's ``ModelEngine``."""

    def __init__(
        self,
        name: str,
        *,
        model: str,
        precision: str | None,
        head: Path,
        tail: Path,
        transport: Transport,
        quantizer: Quantizer | None,
        threads: int | None,
    ) -> None:
        stored = ModelRepository().get(model, precision)
        options = RuntimeOptions(threads=threads)
        self.runtime = open_runtime("onnxruntime", tail, options)
        self._head_path = head
        self._head: Any = None  # opened on the first whole image: tensors are what this model is for
        spec = self.runtime.inputs[0]
        self.config = replace(stored.config, name=name, inputs=(spec,))
        self._labels = load_labels(stored.config.labels, stored.directory)
        self._preprocessor = Preprocessor(stored.config.preprocessing)
        self._transport = transport
        self._quantizer = quantizer
        self._sample_shape = tuple(int(d) for d in spec.shape[1:] if d is not None)
        self._output = self.runtime.outputs[0].name

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self._sample_shape

    def decode(self, source: bytes) -> np.ndarray:
        return decode_image(source)

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """A whole image to this model's input: preprocess, run the head, encode for transport.

        The head gets its own one-thread session outside the thread budget, which the tail holds:
        it only runs for the odd whole image (the server warms its decoder with one)."""
        if self._head is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._head = ort.InferenceSession(
                str(self._head_path), options, providers=["CPUExecutionProvider"]
            )
        x = self._preprocessor(rgb)[np.newaxis]
        middle = self._head.run(None, {self._head.get_inputs()[0].name: x})[0]
        sample: np.ndarray = encode(middle, self._transport, self._quantizer)[0]
        return sample

    def infer(self, batch: np.ndarray) -> np.ndarray:
        outputs = self.runtime.run({self.runtime.inputs[0].name: batch})
        scores: np.ndarray = np.asarray(outputs[self._output], dtype=np.float32)
        return scores

    def postprocess(self, scores: np.ndarray, top_k: int = 5) -> list[Prediction]:
        if top_k < 1:
            raise InvalidInput(f"top_k must be at least 1, got {top_k}")
        top = np.argsort(scores)[::-1][:top_k]
        return [Prediction(int(i), self._labels[int(i)], float(scores[i])) for i in top]

    def close(self) -> None:
        self.runtime.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeinfer.network.split_serve")
    parser.add_argument("--head", type=Path, required=True)
    parser.add_argument("--tail", type=Path, required=True)
    parser.add_argument("--transport", choices=TRANSPORTS, default="fp32")
    parser.add_argument("--scale", type=float, default=None, help="int8 transport: quantization scale")
    parser.add_argument("--zero-point", type=int, default=None, help="int8 transport: zero point")
    parser.add_argument("--name", required=True, help="the name the tail is served under")
    parser.add_argument("--model", default="mobilenet_v2", help="the split model (labels, preprocessing)")
    parser.add_argument("--precision", default=None)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    from edgeinfer.serving.server import InferenceServer
    from edgeinfer.serving.settings import ServeSettings

    quantizer = None
    if args.transport == "int8":
        if args.scale is None or args.zero_point is None:
            parser.error("--transport int8 needs --scale and --zero-point")
        quantizer = Quantizer(args.scale, args.zero_point)

    def loader(name: str, settings: ServeSettings) -> list[TailEngine]:
        return [
            TailEngine(
                name,
                model=args.model,
                precision=args.precision,
                head=args.head,
                tail=args.tail,
                transport=args.transport,
                quantizer=quantizer,
                threads=settings.threads_per_instance,
            )
        ]

    try:
        settings = ServeSettings(
            models=(args.name,),
            http_port=args.http_port,
            grpc_enabled=False,
            threads=args.threads,
            runtime="onnxruntime",
            warmup_runs=1,
        )
        return InferenceServer(settings, loader=loader).run()
    except EdgeInferError as exc:
        print(f"split_serve: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
