"""Triton Inference Server through PyTriton, with Triton's dynamic batcher (max 8, 5 ms queue delay).

Triton speaks KServe v2, so a request is ``POST /v2/models/mobilenet_v2/infer`` with the JPEG as a
BYTES tensor [1, 1] in Triton's binary data extension; the answer is the top-5 as one JSON string
(BYTES [1, 1]). PyTriton 0.5.7 (what pip resolves here) needs NumPy < 2: under NumPy 2 its
shared-memory tensor transport delivered corrupted inputs. PyTriton's ``@batch`` hands the Python
callable the whole batch. The Triton server process and the Python model process talk over
PyTriton's shared-memory proxy.
Start: ``python pytriton_app.py HTTP_PORT [GRPC_PORT]`` (gRPC on a free port when not given).
"""

from __future__ import annotations

import json
import socket
import sys

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from workload import Workload

workload = Workload()


@batch
def infer(image: np.ndarray) -> dict[str, np.ndarray]:
    tensors = np.stack([workload.prepare(bytes(row[0])) for row in image])
    answers = [json.dumps({"predictions": workload.top5(row)}).encode() for row in workload.infer(tensors)]
    return {"top5": np.array(answers, dtype=object).reshape(-1, 1)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    config = TritonConfig(
        http_address="127.0.0.1", http_port=int(sys.argv[1]), grpc_address="127.0.0.1",
        grpc_port=int(sys.argv[2]) if len(sys.argv) > 2 else free_port(), metrics_port=free_port(),
        log_verbose=0,
    )  # fmt: skip
    with Triton(config=config) as triton:
        triton.bind(
            model_name="mobilenet_v2",
            infer_func=infer,
            inputs=[Tensor(name="image", dtype=np.bytes_, shape=(1,))],
            outputs=[Tensor(name="top5", dtype=np.bytes_, shape=(1,))],
            config=ModelConfig(max_batch_size=8, batcher=DynamicBatcher(max_queue_delay_microseconds=5000)),
        )
        triton.serve()


if __name__ == "__main__":
    main()
