"""An engine with an offload policy, for synchronous code.

    from edgeinfer import Engine
    from edgeinfer.network.offload import OffloadingEngine

    engine = Engine.load("mobilenet_v2")
    with OffloadingEngine(engine, policy="auto", cloud_url="http://gpu-box:8000") as classifier:
        result = classifier.classify(jpeg_bytes, deadline_ms=100)
        result.predictions, result.decision.served_by, result.decision.reason

The hybrid router runs on its own event loop thread; ``classify`` may be called from several
threads at once (the device still runs one image at a time, as :class:`EdgeBackend` does).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from edgeinfer.engine.results import Prediction
from edgeinfer.network.backends import CloudBackend, EdgeBackend
from edgeinfer.network.client import KServeClient
from edgeinfer.network.router import Decision, HybridRouter, Policy, RouterSettings, RouterStats


@dataclass(frozen=True)
class OffloadResult:
    """The top-k labels, the decision that produced them, and the stages of the path taken (ns)."""

    predictions: list[Prediction]
    decision: Decision
    stages_ns: dict[str, int]


class OffloadingEngine:
    """``classify`` on the device, in the cloud, or whichever pays (``auto``)."""

    def __init__(
        self,
        engine: Any,
        *,
        policy: Policy = "auto",
        cloud_url: str | None = None,
        cloud_model: str | None = None,
        bandwidth_cap_mbps: float | None = None,
        cloud_timeout_ms: float = RouterSettings().cloud_timeout_ms,
        decision_log: Path | None = None,
    ) -> None:
        settings = RouterSettings(
            policy=policy, bandwidth_cap_mbps=bandwidth_cap_mbps, cloud_timeout_ms=cloud_timeout_ms
        )
        cloud = None
        if cloud_url is not None:
            cloud = CloudBackend(KServeClient(cloud_url), cloud_model or engine.config.name)
        edge = EdgeBackend(engine) if policy != "cloud" else None
        self.engine = engine
        self.router = HybridRouter(settings, edge, cloud, log_path=decision_log)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="edgeinfer-offload", daemon=True)
        self._thread.start()
        self._call(self.router.start())

    def classify(self, image: bytes, *, top_k: int = 5, deadline_ms: float | None = None) -> OffloadResult:
        """Classify one encoded image; raises ``CloudError`` only under policy ``cloud``."""
        routed = self._call(self.router.classify(image, deadline_ms=deadline_ms))
        predictions = self.engine.postprocess(routed.probabilities, top_k)
        return OffloadResult(predictions, routed.decision, routed.stages_ns)

    @property
    def stats(self) -> RouterStats:
        return self.router.stats

    @property
    def decisions(self) -> list[Decision]:
        return list(self.router.decisions)

    def close(self) -> None:
        """Stop the probes and close the connections; the engine stays open (it is the caller's)."""
        if self._loop.is_running():
            self._call(self.router.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> OffloadingEngine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()
