"""Where an image can be classified: on the device (:class:`EdgeBackend`) or remotely (:class:`Remote`).

The edge backend runs the engine on one worker thread, so requests queue in arrival order as
they would on a small device, and it reports each stage. A remote backend sends the image to a
KServe v2 server: as the encoded image (``jpeg``: the server decodes) or as the preprocessed
tensor (``tensor``: the device decodes and preprocesses, then uploads the FP32 tensor).
:mod:`edgeinfer.network.split` adds a third remote, the split model.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from edgeinfer.errors import InvalidInput
from edgeinfer.network.client import KServeClient

Upload = Literal["jpeg", "tensor"]
UPLOADS: tuple[Upload, ...] = ("jpeg", "tensor")
#: Bytes of HTTP head and v2 JSON header around the payload of one request (measured: ~310).
REQUEST_OVERHEAD_BYTES = 320


@dataclass(frozen=True)
class Answer:
    """One classification: the probability row and what it cost, stage by stage (ns)."""

    probabilities: np.ndarray
    stages_ns: dict[str, int]
    bytes_sent: int = 0
    bytes_received: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class Prepare(Protocol):
    """Decode and preprocess on the device: encoded image to one sample tensor (no batch axis)."""

    def __call__(self, image: bytes) -> np.ndarray: ...


class Engineish(Protocol):
    """The part of :class:`edgeinfer.engine.engine.Engine` the edge backend calls."""

    def decode(self, source: bytes) -> np.ndarray: ...

    def preprocess(self, rgb: np.ndarray) -> np.ndarray: ...

    def infer(self, batch: np.ndarray) -> np.ndarray: ...


class EdgePath(Protocol):
    """Where the router runs an image on the device: :class:`EdgeBackend`, or the server's batcher
    (:class:`edgeinfer.network.serve_offload.ServableEdge`)."""

    name: str

    async def run(self, image: bytes, timeout_ms: float | None = None) -> Answer:
        """Classify on the device; ``timeout_ms`` is what is left of the request's deadline."""
        ...

    def predict_ms(self) -> float | None:
        """Expected latency of an image admitted now, from the path's own figures (its queue and
        measured compute); None: the router's own estimate (backlog x service time) applies."""
        ...

    def close(self) -> None: ...


class EdgeBackend:
    """The engine on the device, one request at a time on a dedicated worker thread."""

    name = "edge"

    def __init__(self, engine: Engineish) -> None:
        self.engine = engine
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge")

    async def run(self, image: bytes, timeout_ms: float | None = None) -> Answer:
        """One image in arrival order; the engine has no deadline to honour, so ``timeout_ms`` is unused."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._classify, image)

    def predict_ms(self) -> float | None:
        return None  # the router's backlog x service-time estimate fits a one-at-a-time engine

    def _classify(self, image: bytes) -> Answer:
        t0 = time.perf_counter_ns()
        rgb = self.engine.decode(image)
        t1 = time.perf_counter_ns()
        sample = self.engine.preprocess(rgb)
        t2 = time.perf_counter_ns()
        probabilities = self.engine.infer(sample[np.newaxis])[0]
        t3 = time.perf_counter_ns()
        return Answer(probabilities, {"decode": t1 - t0, "preprocess": t2 - t1, "infer": t3 - t2})

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class Remote(Protocol):
    """A server that classifies for the device, reached over the network."""

    name: str

    def upload_bytes(self, image: bytes) -> int:
        """How many bytes a request for ``image`` will send (for decisions made before sending)."""
        ...

    async def run(self, image: bytes, timeout_s: float) -> Answer: ...

    async def probe(self, timeout_s: float) -> float:
        """One light round trip to the server, in ms; raises CloudError when it is unreachable."""
        ...

    async def close(self) -> None: ...


class CloudBackend:
    """A KServe v2 server classifying the device's images (``edgeinfer serve`` or Triton)."""

    def __init__(
        self,
        client: KServeClient,
        model: str,
        *,
        upload: Upload = "jpeg",
        prepare: Prepare | None = None,
        sample_shape: tuple[int, ...] | None = None,
        input_name: str = "input",
        output_name: str = "probabilities",
        name: str = "cloud",
    ) -> None:
        if upload not in UPLOADS:
            raise InvalidInput(f"upload must be one of {', '.join(UPLOADS)}, got {upload!r}")
        if upload != "jpeg" and (prepare is None or sample_shape is None):
            raise InvalidInput("a tensor upload needs the device's prepare function and sample shape")
        self.client = client
        self.model = model
        self.upload = upload
        self.name = name
        self._prepare: Prepare | None = prepare
        self._input = input_name
        self._output = output_name
        self._tensor_bytes = int(np.prod(sample_shape or (0,))) * 4

    def upload_bytes(self, image: bytes) -> int:
        payload = len(image) + 4 if self.upload == "jpeg" else self._tensor_bytes
        return payload + REQUEST_OVERHEAD_BYTES

    async def run(self, image: bytes, timeout_s: float) -> Answer:
        if self.upload == "jpeg":
            result = await self.client.infer_image(
                self.model, image, timeout_s=timeout_s, output=self._output
            )
            stages = {"encode": result.encode_ns}
        else:
            prepare = self._prepare
            assert prepare is not None
            t0 = time.perf_counter_ns()
            sample = await asyncio.to_thread(prepare, image)
            prepare_ns = time.perf_counter_ns() - t0
            batch = sample[np.newaxis].astype(np.float32)
            result = await self.client.infer_tensor(
                self.model,
                self._input,
                batch,
                timeout_s=max(1e-3, timeout_s - prepare_ns / 1e9),
                output=self._output,
            )
            stages = {"prepare": prepare_ns, "encode": result.encode_ns}
        stages["remote"] = result.total_ns
        probabilities = _probabilities(result.outputs, self._output)
        return Answer(
            probabilities,
            stages,
            result.bytes_sent,
            result.bytes_received,
            {"first_byte_ms": result.first_byte_ns / 1e6, "new_connection": float(result.new_connection)},
        )

    async def probe(self, timeout_s: float) -> float:
        return await self.client.ready(timeout_s=timeout_s)

    async def close(self) -> None:
        await self.client.close()


def _probabilities(outputs: dict[str, np.ndarray], name: str) -> np.ndarray:
    from edgeinfer.network.client import CloudError

    array = outputs.get(name)
    if array is None or array.ndim != 2 or array.shape[0] != 1:
        got = {k: v.shape for k, v in outputs.items()}
        raise CloudError("malformed", f"expected output {name!r} of shape [1, classes], got {got}")
    return np.asarray(array[0], dtype=np.float32)
