"""Prometheus metrics of one server (PyPI ``prometheus-client``), on their own registry.

Per model: requests and failures (by protocol and error kind), end-to-end, preparation (decode +
preprocess), queue and compute time, batch sizes, admissions refused (queue full / deadline) and
admitted requests that missed their deadline, requests run inline for a lone client. The process
collector adds CPU seconds and RSS. The same events feed each model's Triton-style statistics
(:mod:`edgeinfer.serving.statistics`).

Updates made on the event loop are applied at the end of the loop's current step
(:class:`AfterThisStep`): a request's answer is written in the same step as its last updates, so
the bookkeeping (microseconds each, tens with the caches cold after an inference) never delays an
answer. Values are measured before they are deferred, and the exposition applies pending updates
first, so nothing is lost or skewed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from edgeinfer.serving.batching.observer import RejectReason
from edgeinfer.serving.statistics import ModelStatistics, StatisticsRecorder
from edgeinfer.system.threads import usable_cores

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class AfterThisStep:
    """Runs updates made on an event loop after the loop's current step; elsewhere at once.

    One server has one loop: updates are queued and flushed on that loop's thread only (worker
    threads apply theirs directly, Prometheus' own locks making that safe).
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def __call__(self, update: Callable[..., Any], *args: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a worker thread or plain code: no step to wait for
            update(*args)
            return
        if not self._pending:
            loop.call_soon(self.flush)
        self._pending.append((update, args))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for update, args in pending:
            update(*args)


class ServerMetrics:
    """All metric families of one server process."""

    def __init__(self) -> None:
        self.later = AfterThisStep()
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter(
            "edgeinfer_requests", "Inference requests received", ["model", "protocol"], registry=r
        )
        self.failures = Counter(
            "edgeinfer_request_failures", "Inference requests answered with an error",
            ["model", "protocol", "kind"], registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "edgeinfer_request_seconds", "End-to-end time in the server, arrival to answer",
            ["model", "protocol"], buckets=_LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.prepare_seconds = Histogram(
            "edgeinfer_prepare_seconds", "Decode + preprocess time of a request's inputs",
            ["model"], buckets=_LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.queue_seconds = Histogram(
            "edgeinfer_queue_seconds", "Time a request waited in the batcher's queue",
            ["model"], buckets=_LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.compute_seconds = Histogram(
            "edgeinfer_compute_seconds", "Time to run one batch on the runtime",
            ["model"], buckets=_LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "edgeinfer_batch_size", "Samples per batch run", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.rejected = Counter(
            "edgeinfer_rejected", "Requests refused at admission", ["model", "reason"], registry=r
        )
        self.deadline_missed = Counter(
            "edgeinfer_deadline_missed", "Admitted requests failed because they could not finish in time",
            ["model"], registry=r,
        )  # fmt: skip
        self.inline = Counter(
            "edgeinfer_inline_requests", "Requests of a lone client run on the event-loop thread (no hops)",
            ["model"], registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "edgeinfer_queue_samples", "Samples admitted and not yet running", ["model"], registry=r
        )
        # what "percent of the machine" divides by, for a load generator reading these remotely
        self.cpu_cores = Gauge("edgeinfer_cpu_cores", "CPU cores this server may run on", registry=r)
        self.cpu_cores.set(usable_cores())

    def for_model(self, model: str) -> ModelMetrics:
        return ModelMetrics(self, model)

    def exposition(self) -> bytes:
        self.later.flush()
        return generate_latest(self.registry)


class ModelMetrics:
    """One model's children of the metric families; also the batcher's observer."""

    def __init__(self, metrics: ServerMetrics, model: str) -> None:
        self._metrics = metrics
        self._later = metrics.later
        self.model = model
        self._prepare = metrics.prepare_seconds.labels(model)
        self._queue = metrics.queue_seconds.labels(model)
        self._compute = metrics.compute_seconds.labels(model)
        self._batch = metrics.batch_size.labels(model)
        self._missed = metrics.deadline_missed.labels(model)
        self._inline = metrics.inline.labels(model)
        self.queue_depth = metrics.queue_depth.labels(model)
        self._statistics = StatisticsRecorder()

    def statistics(self, version: str) -> ModelStatistics:
        """Triton-style statistics of this model, with every update made so far applied."""
        self._later.flush()
        return self._statistics.snapshot(self.model, version)

    def on_request(self, protocol: str) -> None:
        self._later(self._count_request, protocol)

    def on_answer(self, protocol: str, elapsed_ns: int, error_kind: str | None) -> None:
        self._later(self._count_answer, protocol, elapsed_ns, error_kind)

    def on_inline(self) -> None:
        self._later(self._inline.inc)

    def on_prepared(self, elapsed_ns: int) -> None:
        self._later(self._prepare.observe, elapsed_ns / 1e9)

    def on_succeeded(self, input_ns: int, queue_ns: int, infer_ns: int, output_ns: int) -> None:
        """A request's stages, once its outputs are made (Triton's statistics count them then)."""
        self._later(self._statistics.succeeded, input_ns, queue_ns, infer_ns, output_ns)

    # BatchObserver
    def on_batch(self, size: int, compute_ns: int) -> None:
        self._later(self._count_batch, size, compute_ns)

    def on_queued(self, queue_ns: int) -> None:
        self._later(self._queue.observe, queue_ns / 1e9)

    def on_rejected(self, reason: RejectReason) -> None:
        self._later(self._count_rejected, reason)

    def on_deadline_missed(self) -> None:
        self._later(self._missed.inc)

    # -- applied after the step -----------------------------------------------------------------

    def _count_request(self, protocol: str) -> None:
        self._metrics.requests.labels(self.model, protocol).inc()

    def _count_answer(self, protocol: str, elapsed_ns: int, error_kind: str | None) -> None:
        self._metrics.request_seconds.labels(self.model, protocol).observe(elapsed_ns / 1e9)
        if error_kind is not None:
            self._metrics.failures.labels(self.model, protocol, error_kind).inc()
        self._statistics.answered(elapsed_ns, ok=error_kind is None)

    def _count_batch(self, size: int, compute_ns: int) -> None:
        self._batch.observe(size)
        self._compute.observe(compute_ns / 1e9)
        self._statistics.batch_ran(size, compute_ns)

    def _count_rejected(self, reason: RejectReason) -> None:
        self._metrics.rejected.labels(self.model, reason).inc()
