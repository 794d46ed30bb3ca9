"""Serving with an offload policy: each image request runs on this server's own batcher or on a
KServe v2 server in the cloud, as the hybrid router (:mod:`edgeinfer.network.router`) decides.
``edgeinfer serve`` hands :class:`ServerOffload` to the server as its
:data:`~edgeinfer.serving.routing.OffloadFactory`; the serving layer itself knows only
:mod:`edgeinfer.serving.routing`.

Routed: the BYTES input ``image`` of a v2 request (HTTP or gRPC; each image of a request on its own)
and ``/v1/models/{m}/classify``. A preprocessed tensor request always runs here: the cloud would
only save its compute, and its upload is 25 times the JPEG's. Under ``edge`` (the default) none of
this is built and requests take the usual path.

The edge path is the model's own :class:`~edgeinfer.serving.servable.Servable`, so a routed image
is decoded, queued and batched with every other request, and the router's prediction for the
device comes from the batcher: the samples waiting ahead at its measured per-sample cost, plus the
rest of a request's time as measured here. The request's deadline goes to the router.

Every answer says which way it went and why (response parameters, HTTP headers) and is counted in
``/metrics``. Under ``auto`` a cloud that fails falls back to this server; under ``cloud`` the
client gets 502 (the cloud failed) or 504 (it did not answer in time).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from edgeinfer.errors import CloudTimedOut, EdgeInferError, InvalidInput, UpstreamError, in_batch
from edgeinfer.network.backends import Answer, CloudBackend
from edgeinfer.network.client import CloudError, KServeClient
from edgeinfer.network.estimates import Ewma
from edgeinfer.network.router import HybridRouter, Policy, Routed, RouterSettings
from edgeinfer.serving.protocol import (
    ClassifyResponse,
    InferRequest,
    InferResponse,
    Label,
    ParamValue,
    RequestedOutput,
    Tensor,
)
from edgeinfer.serving.routing import RoutedClassifyResponse
from edgeinfer.serving.servable import Servable, image_bytes
from edgeinfer.serving.settings import ServeSettings


class ServableEdge:
    """The router's edge path: the server's own servable, so routed images share its batches."""

    name = "edge"

    def __init__(self, servable: Servable, default_timeout_ms: float) -> None:
        self.servable = servable
        self.default_timeout_ms = default_timeout_ms
        self._own_ms = Ewma()  # a request's time beyond the backlog ahead of it: decode, compute...
        self._in_flight = 0

    async def run(self, image: bytes, timeout_ms: float | None = None) -> Answer:
        started = time.monotonic_ns()
        left_ms = self.default_timeout_ms if timeout_ms is None else max(0.0, timeout_ms)
        backlog_ms = self._backlog_ms()
        servable = self.servable
        data = np.empty(1, dtype=object)
        data[0] = image
        request = InferRequest(
            servable.name,
            None,
            (Tensor(servable.image_input.name, "BYTES", (1,), data),),
            (RequestedOutput(servable.output.name),),
        )
        self._in_flight += 1
        try:
            response = await servable.infer(request, started + int(left_ms * 1e6))
        finally:
            self._in_flight -= 1
        elapsed_ns = time.monotonic_ns() - started
        self._own_ms.update(max(0.0, elapsed_ns / 1e6 - backlog_ms))
        scores = np.asarray(response.outputs[0].tensor.data, dtype=np.float32)
        return Answer(scores[0], {"edge": elapsed_ns})

    def predict_ms(self) -> float | None:
        """The backlog the batcher holds now at its measured cost, plus a request's own time."""
        own = self._own_ms.mean
        return None if own is None else own + self._backlog_ms()

    def _backlog_ms(self) -> float:
        batcher = self.servable.batcher
        ahead = max(batcher.waiting_samples(), float(self._in_flight))  # waiting misses the running
        return ahead * batcher.per_sample_ns() / 1e6  # all lanes: the adaptive shape drains faster

    def close(self) -> None:
        """Nothing to close: the servable belongs to the data plane."""


class OffloadMetrics:
    """``edgeinfer_offload_*`` on the server's registry: requests by path and reason, cloud health."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "edgeinfer_offload_requests", "Routed images by the path that served them and why",
            ["model", "path", "reason"], registry=registry,
        )  # fmt: skip
        self.cloud_failures = Counter(
            "edgeinfer_offload_cloud_failures", "Images the cloud failed (refused, timeout, reset...)",
            ["model", "reason"], registry=registry,
        )  # fmt: skip
        self.cloud_up = Gauge(
            "edgeinfer_offload_cloud_up", "1 while the router counts the cloud as up", ["model"],
            registry=registry,
        )  # fmt: skip


class ServerOffload:
    """One hybrid router per served model, between its servable and the cloud server."""

    def __init__(self, settings: ServeSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.metrics = OffloadMetrics(registry)
        self.routers: dict[str, HybridRouter] = {}

    async def start(self, servables: Mapping[str, Servable]) -> None:
        """Build the routers and take a first probe of the cloud (a cloud that is down is not fatal)."""
        s = self.settings
        policy: Policy = "cloud" if s.offload == "cloud" else "auto"
        assert s.cloud_url is not None  # checked by ServeSettings
        for name, servable in servables.items():
            router_settings = RouterSettings(
                policy=policy,
                bandwidth_cap_mbps=s.bandwidth_cap_mbps,
                cloud_timeout_ms=s.cloud_timeout_ms,
                cloud_within_deadline=True,
            )
            edge = ServableEdge(servable, s.default_timeout_ms) if policy != "cloud" else None
            cloud = CloudBackend(
                KServeClient(s.cloud_url), s.cloud_model or name, output_name=servable.output.name
            )
            router = HybridRouter(router_settings, edge, cloud, keep_decisions=1000)
            self.routers[name] = router
            await router.start()
            self.metrics.cloud_up.labels(name).set_function(functools.partial(_cloud_up, router))

    async def close(self) -> None:
        routers, self.routers = list(self.routers.values()), {}
        for router in routers:
            await router.close()

    async def infer(self, servable: Servable, request: InferRequest, deadline_ns: int) -> InferResponse:
        router = self.routers.get(servable.name)
        images = _routable_images(servable, request)
        if router is None or images is None:
            return await servable.infer(request, deadline_ns)
        # The servable's own output handling, so a routed answer reads exactly like an edge one.
        wanted = servable.wanted_outputs(request)
        raw = [image_bytes(item) for item in images]
        routed = await asyncio.gather(
            *(
                self._route_nth(router, servable.name, r, deadline_ns, index=i, count=len(raw))
                for i, r in enumerate(raw)
            )
        )
        scores = np.stack([r.probabilities for r in routed])
        outputs = tuple(servable.output_tensor(scores, want) for want in wanted)
        return InferResponse(
            servable.name, servable.version, outputs, request.id, request_parameters(list(routed))
        )

    async def classify(
        self, servable: Servable, image: bytes, top_k: int, deadline_ns: int
    ) -> ClassifyResponse:
        router = self.routers.get(servable.name)
        if router is None:
            return await servable.classify(image, top_k, deadline_ns)
        if not 1 <= top_k <= servable.classes:
            raise InvalidInput(f"top_k must be between 1 and {servable.classes}, got {top_k}")
        routed = await self._route(router, servable.name, image, deadline_ns)
        top = servable.engine.postprocess(routed.probabilities, top_k)
        labels = tuple(Label(p.index, p.label, p.score) for p in top)
        return RoutedClassifyResponse(servable.name, servable.version, labels, request_parameters([routed]))

    async def _route_nth(
        self, router: HybridRouter, model: str, image: bytes, deadline_ns: int, *, index: int, count: int
    ) -> Routed:
        """:meth:`_route` for image ``index`` of a request's ``count``: an image the device or the
        cloud cannot use is named by its place, as without offloading."""
        try:
            return await self._route(router, model, image, deadline_ns)
        except InvalidInput as exc:
            in_batch(exc, index, count)
            raise

    async def _route(self, router: HybridRouter, model: str, image: bytes, deadline_ns: int) -> Routed:
        try:
            routed = await router.classify(image, deadline_ms=(deadline_ns - time.monotonic_ns()) / 1e6)
        except CloudError as exc:  # policy cloud: the client hears of it
            self.metrics.cloud_failures.labels(model, exc.reason).inc()
            self.metrics.requests.labels(model, "cloud", "failed").inc()
            raise _client_error(exc, router) from exc
        decision = routed.decision
        if decision.fallback is not None:
            self.metrics.cloud_failures.labels(model, decision.fallback).inc()
        reason = "fallback" if decision.fallback is not None else decision.reason_code
        self.metrics.requests.labels(model, decision.served_by, reason).inc()
        return routed


def _cloud_up(router: HybridRouter) -> float:
    return float(router.cloud_up)


def request_parameters(routed: list[Routed]) -> dict[str, ParamValue]:
    """Where the images of one request went: one comma-separated entry per image."""
    decisions = [r.decision for r in routed]
    parameters: dict[str, ParamValue] = {
        "served_by": ",".join(d.served_by for d in decisions),
        "offload_reason": ",".join("fallback" if d.fallback else d.reason_code for d in decisions),
        "offload_detail": "; ".join(d.reason for d in decisions),
    }
    fallbacks = [d.fallback for d in decisions if d.fallback]
    if fallbacks:
        parameters["offload_fallback"] = ",".join(fallbacks)
    return parameters


def _routable_images(servable: Servable, request: InferRequest) -> np.ndarray | None:
    """The encoded images of a well-formed image request, or None: the servable handles (or refuses) it."""
    if len(request.inputs) != 1:
        return None
    tensor = request.inputs[0]
    shape = tensor.shape
    if tensor.name != servable.image_input.name or tensor.datatype != "BYTES" or not shape:
        return None
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        return None
    if not 1 <= shape[0] <= servable.batcher.settings.max_batch_size:
        return None
    return tensor.data.reshape(shape[0])


def _client_error(exc: CloudError, router: HybridRouter) -> EdgeInferError:
    cloud = router.cloud
    where = getattr(getattr(cloud, "client", None), "url", "the cloud server")
    if exc.reason in ("timeout", "http_504"):
        return CloudTimedOut(f"the cloud server {where} did not answer in time: {exc}")
    if exc.reason == "http_400":
        return InvalidInput(f"the cloud server {where} refused the request: {exc}")
    return UpstreamError(
        f"the cloud server {where} failed ({exc.reason}): {exc}; "
        "serve with --offload auto to fall back to this device"
    )
