"""LitServe with its dynamic batching (max_batch_size=8, batch_timeout=0.005 s), one CPU worker.

The request body is the raw JPEG (``Content-Type: image/jpeg``): FastAPI's ``Body`` hands LitServe
the bytes, LitServe ships them to its inference worker process, where ``decode_request`` decodes and
preprocesses each one and ``predict`` runs the stacked batch. Start: ``python litserve_app.py PORT``.
"""

import sys
from typing import Annotated, Any

import litserve as ls
import numpy as np
from fastapi import Body
from workload import Workload


class MobileNetAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.workload = Workload()

    def decode_request(self, request: Annotated[bytes, Body(media_type="image/jpeg")]) -> np.ndarray:
        return self.workload.prepare(request)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.workload.infer(x)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, output: np.ndarray) -> dict[str, Any]:
        return {"predictions": self.workload.top5(output)}


if __name__ == "__main__":
    api = MobileNetAPI(max_batch_size=8, batch_timeout=0.005)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", generate_client_file=False)
