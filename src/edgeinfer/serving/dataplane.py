"""The transport-agnostic heart of the server: health, metadata and inference over the served models.

The REST and gRPC adapters only translate their wire formats and call these methods; errors are
:class:`edgeinfer.errors.EdgeInferError` kinds, mapped to status codes by each adapter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from edgeinfer import __version__
from edgeinfer.errors import EdgeInferError, InvalidInput, ModelNotFound, NotFound, NotReady
from edgeinfer.serving.batching.settings import BatcherSettings
from edgeinfer.serving.lone_client import LoneClient
from edgeinfer.serving.metrics import ServerMetrics
from edgeinfer.serving.protocol import (
    ClassifyResponse,
    InferRequest,
    InferResponse,
    ModelMetadata,
    RepositoryModel,
    ServedModelConfig,
    ServerMetadata,
)
from edgeinfer.serving.servable import (
    CONCURRENT_RUNTIMES,
    LANES_WORTH_RATIO,
    DecodeBacklog,
    EngineSet,
    ModelEngine,
    Servable,
    load_adaptive,
)
from edgeinfer.serving.settings import ServeSettings
from edgeinfer.serving.statistics import ModelStatistics

if TYPE_CHECKING:
    from edgeinfer.serving.routing import Offload, OffloadFactory

log = logging.getLogger("edgeinfer.serving")
#: Set on an error the model's own metrics have counted, so the protocol edge does not again.
_COUNTED = "_edgeinfer_counted"

SERVER_NAME = "edgeinfer"
EXTENSIONS = (
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "statistics",
    "edgeinfer_classify",
    "edgeinfer_deadlines",
)

T = TypeVar("T")
EngineLoader = Callable[[str, ServeSettings], Sequence[ModelEngine] | EngineSet]


def load_engines(name: str, settings: ServeSettings) -> list[ModelEngine] | EngineSet:
    """One engine per instance, each with its share of the cores (blocking: run it off the loop).

    The default shape (one instance, threads not set) is adaptive: see :func:`load_adaptive`.
    """
    from edgeinfer.engine.engine import Engine, EngineOptions

    options = EngineOptions(
        max_image_pixels=settings.max_image_pixels, max_image_bytes=settings.max_image_bytes
    )
    if settings.instances == 1 and settings.threads is None and settings.threads_per_instance >= 2:
        # `auto` chosen once, for the wide instance: the twin must run on the same runtime (a
        # single-thread probe may prefer one that cannot be shared, which would cost the twin),
        # and a runtime with split lanes is worth a somewhat slower batch-1 call
        runtime = Engine.choose_runtime(
            name, runtime=settings.runtime, precision=settings.precision,
            threads=settings.threads_per_instance, repository=settings.repository,
            prefer=CONCURRENT_RUNTIMES, prefer_within=LANES_WORTH_RATIO,
        )  # fmt: skip

        def load(threads: int) -> ModelEngine:
            return Engine.load(
                name, runtime=runtime, precision=settings.precision, threads=threads,
                repository=settings.repository, options=options,
            )  # fmt: skip

        return load_adaptive(load, settings.threads_per_instance)
    engines: list[ModelEngine] = []
    try:
        for _ in range(settings.instances):
            engines.append(
                Engine.load(
                    name,
                    runtime=settings.runtime,
                    precision=settings.precision,
                    threads=settings.threads_per_instance,
                    repository=settings.repository,
                    options=options,
                )
            )
    except BaseException:
        for engine in engines:
            engine.close()
        raise
    return engines


class DataPlane:
    """Owns the served models from loading to shutdown."""

    def __init__(
        self,
        settings: ServeSettings,
        metrics: ServerMetrics | None = None,
        loader: EngineLoader = load_engines,
        offload_factory: OffloadFactory | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or ServerMetrics()
        self._loader = loader
        self._models: dict[str, Servable] = {}
        if settings.offload != "edge" and offload_factory is None:
            raise InvalidInput(
                f"offload policy {settings.offload!r} needs a router: run `edgeinfer serve`, which "
                "provides one (this server was built without)"
            )
        self._offload_factory = offload_factory if settings.offload != "edge" else None
        self._offload: Offload | None = None  # routes image requests unless offload = "edge"
        self._draining = False
        self._in_flight = 0  # requests admitted to a model and not yet answered (both protocols)
        self._lone = LoneClient()  # one keep-alive HTTP client and nobody else: run inline when idle
        self._decode_pool = ThreadPoolExecutor(
            max_workers=settings.decode_workers, thread_name_prefix="decode"
        )
        self._decode_backlog = DecodeBacklog()  # the pool's work ahead, every model's
        self._batching = BatcherSettings(
            max_batch_size=settings.max_batch_size,
            max_queue_delay_us=settings.max_queue_delay_us,
            max_queue_size=settings.max_queue_size,
            idle_fast_path=settings.idle_fast_path,
            prefetch=settings.prefetch_batches,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def load(self) -> None:
        """Load and warm every configured model; the server is ready when this returns."""
        for name in self.settings.models:
            started = time.monotonic_ns()
            engines = await asyncio.to_thread(self._loader, name, self.settings)
            servable = Servable(
                name, engines, self._batching, self.metrics.for_model(name),
                decode_pool=self._decode_pool, decode_workers=self.settings.decode_workers,
                decode_backlog=self._decode_backlog,
            )  # fmt: skip
            self._models[name] = servable
            await servable.start(self.settings.warmup_runs)
            servable.metrics.queue_depth.set_function(servable.batcher.waiting_samples)
            log.info(
                "model %s v%s ready on %s in %.2f s; batch compute ms %s",
                name, servable.version, servable.engine.runtime.name, (time.monotonic_ns() - started) / 1e9,
                {b: round(ns / 1e6, 2) for b, ns in servable.batcher.profile.snapshot().items()},
            )  # fmt: skip
        if self._offload_factory is not None:
            self._offload = self._offload_factory(self.settings, self.metrics.registry)
            await self._offload.start(self._models)

    def begin_shutdown(self) -> None:
        """Stop admitting new work (ready turns false); what was admitted still finishes."""
        self._draining = True

    @property
    def in_flight(self) -> int:
        """Requests a model has taken and not answered yet."""
        return self._in_flight

    async def close(self) -> None:
        self._draining = True
        timeout = self.settings.shutdown_timeout_s
        if self._offload is not None:
            await self._offload.close()
        await asyncio.gather(*(m.close(timeout) for m in self._models.values()))
        self._decode_pool.shutdown(wait=False, cancel_futures=True)

    # -- health and metadata --------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return (
            not self._draining
            and len(self._models) == len(self.settings.models)
            and all(m.ready for m in self._models.values())
            and (self.settings.offload == "edge" or self._offload is not None)
        )

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(SERVER_NAME, __version__, EXTENSIONS)

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self._check_known(name)
        servable = self._models.get(name)
        if servable is None:
            return False
        _check_version(servable, version)
        return servable.ready and not self._draining

    def check_model(self, name: str, version: str | None = None) -> None:
        """Raise :class:`NotFound` for a model or version not served here (checked before the body)."""
        self._check_known(name)
        servable = self._models.get(name)
        if servable is not None:
            _check_version(servable, version)

    def engine(self, name: str) -> ModelEngine:
        """The first engine instance of a loaded model (for in-server stream pipelines)."""
        return self._servable(name, None).engine

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        return self._servable(name, version).metadata()

    def model_config(self, name: str, version: str | None = None) -> ServedModelConfig:
        return self._servable(name, version).served_config()

    def model_statistics(self, name: str | None = None, version: str | None = None) -> list[ModelStatistics]:
        """Triton-style statistics of one model, or of every loaded model when ``name`` is None
        (still answered while the server drains: they are how a run's end is read)."""
        if not name:
            if version:
                raise InvalidInput("a model version was given without a model name")
            return [s.statistics() for s in self._models.values()]
        self._check_known(name)
        servable = self._models.get(name)
        if servable is None:
            raise NotReady(f"model {name!r} is still loading; wait for /v2/models/{name}/ready")
        _check_version(servable, version)
        return [servable.statistics()]

    def repository_index(self, ready_only: bool = False) -> list[RepositoryModel]:
        """The served models and their state (Triton's repository index; this server loads its
        models at start, so the index is the models it was started with)."""
        index = []
        for name in self.settings.models:
            servable = self._models.get(name)
            if servable is not None and servable.ready and not self._draining:
                index.append(RepositoryModel(name, servable.version, "READY"))
            elif not ready_only:
                reason = "shutting down" if self._draining else "loading"
                version = servable.version if servable is not None else ""
                index.append(RepositoryModel(name, version, "UNAVAILABLE", reason))
        return index

    # -- inference ------------------------------------------------------------------------------

    async def infer(self, request: InferRequest, protocol: str, peer: object | None = None) -> InferResponse:
        """``peer``: the client's connection (address), when it sends one request at a time."""
        servable = self._servable(request.model, request.version, protocol)
        deadline = self._deadline_ns(request.arrival_ns, request.timeout_ns)
        offload = self._offload
        alone = self._lone.seen(peer)
        work = (
            servable.infer(request, deadline, inline=alone)
            if offload is None
            else offload.infer(servable, request, deadline)
        )
        return await self._observed(servable, protocol, request.arrival_ns, work)

    async def classify(
        self,
        model: str,
        image: bytes,
        top_k: int,
        *,
        protocol: str,
        arrival_ns: int,
        timeout_ns: int | None,
        peer: object | None = None,
    ) -> ClassifyResponse:
        servable = self._servable(model, None, protocol)
        deadline = self._deadline_ns(arrival_ns, timeout_ns)
        offload = self._offload
        alone = self._lone.seen(peer)
        work = (
            servable.classify(image, top_k, deadline, inline=alone)
            if offload is None
            else offload.classify(servable, image, top_k, deadline)
        )
        return await self._observed(servable, protocol, arrival_ns, work)

    def count_failure(self, model: str, protocol: str, error: EdgeInferError, arrival_ns: int) -> None:
        """Count a request that failed before reaching a model (bad body, unknown version...), as
        taking from its arrival (``time.monotonic_ns``) to now; one the model already counted (it
        failed inside :meth:`_observed`) is not counted twice."""
        if getattr(error, _COUNTED, False):
            return
        if model in self._models:
            self._models[model].metrics.on_request(protocol)
            self._models[model].metrics.on_answer(protocol, time.monotonic_ns() - arrival_ns, error.kind)

    async def _observed(self, servable: Servable, protocol: str, arrival_ns: int, work: Awaitable[T]) -> T:
        metrics = servable.metrics
        metrics.on_request(protocol)
        kind: str | None = "cancelled"
        self._in_flight += 1
        try:
            result = await work
            kind = None
            return result
        except EdgeInferError as exc:
            kind = exc.kind
            setattr(exc, _COUNTED, True)
            raise
        except Exception as exc:
            kind = "internal"
            log.exception("internal error in model %s", servable.name)
            internal = EdgeInferError(f"internal error: {exc!r}")
            setattr(internal, _COUNTED, True)
            raise internal from exc
        finally:
            self._in_flight -= 1
            metrics.on_answer(protocol, time.monotonic_ns() - arrival_ns, kind)

    def _deadline_ns(self, arrival_ns: int, timeout_ns: int | None) -> int:
        start = arrival_ns or time.monotonic_ns()
        if timeout_ns is None:
            timeout_ns = int(self.settings.default_timeout_ms * 1e6)
        return start + timeout_ns

    def _servable(self, name: str, version: str | None, protocol: str | None = None) -> Servable:
        self._check_known(name)
        if self._draining:
            raise NotReady("the server is shutting down; send new requests elsewhere")
        servable = self._models.get(name)
        if servable is None or not servable.ready:
            raise NotReady(f"model {name!r} is still loading; wait for /v2/models/{name}/ready")
        _check_version(servable, version)
        return servable

    def _check_known(self, name: str) -> None:
        if name not in self.settings.models:
            raise ModelNotFound(f"unknown model {name!r}; this server serves {list(self.settings.models)}")


def _check_version(servable: Servable, version: str | None) -> None:
    if version and version != servable.version:
        raise NotFound(f"model {servable.name!r} has no version {version!r}; it has [{servable.version!r}]")
