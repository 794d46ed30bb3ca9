"""BentoML 1.4 with its adaptive batching: ``@bentoml.api(batchable=True, max_batch_size=8)``.

BentoML takes files as multipart/form-data fields (its documented way: a ``Path`` field, which it
writes to a per-request temporary file); each request sends one image in the ``images`` list and
the batcher concatenates the lists. BentoML has no fixed batch wait to set: its dispatcher picks the
wait from measured latencies, bounded by ``max_latency_ms``. One worker process.
Start: ``bentoml serve bentoml_service:MobileNet``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml
import numpy as np
from workload import Workload


@bentoml.service(workers=1, traffic={"timeout": 60})
class MobileNet:
    def __init__(self) -> None:
        self.workload = Workload()

    @bentoml.api(batchable=True, max_batch_size=8, max_latency_ms=60_000)
    def classify(self, images: list[Path]) -> list[dict[str, Any]]:
        batch = np.stack([self.workload.prepare(path.read_bytes()) for path in images])
        return [{"predictions": self.workload.top5(row)} for row in self.workload.infer(batch)]
