"""Ray Serve with ``@serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)``, one replica.

``GET /predict`` answers once the replica is up (the readiness probe); ``POST /predict`` with the raw
JPEG body classifies it. ``max_ongoing_requests`` is raised to 32 so that 16 clients can fill a
batch of 8 (Ray's default of 5 would cap the batch). Start: ``python ray_app.py PORT``.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import numpy as np
import ray
from ray import serve
from starlette.requests import Request
from workload import Workload


@serve.deployment(num_replicas=1, max_ongoing_requests=32)
class MobileNet:
    def __init__(self) -> None:
        self.workload = Workload()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def classify(self, jpegs: list[bytes]) -> list[dict[str, Any]]:
        batch = np.stack([self.workload.prepare(data) for data in jpegs])
        return [{"predictions": self.workload.top5(row)} for row in self.workload.infer(batch)]

    async def __call__(self, request: Request) -> dict[str, Any]:
        if request.method == "GET":
            return {"ready": True}
        return await self.classify(await request.body())


def main() -> None:
    port = int(sys.argv[1])
    ray.init(include_dashboard=False, logging_level="warning")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(MobileNet.bind(), route_prefix="/predict")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
