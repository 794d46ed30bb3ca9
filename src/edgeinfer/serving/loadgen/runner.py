"""Closed-loop (N clients back to back) and open-loop (Poisson arrivals) load against a server.

Every issued request completes (answer, error or client timeout) and is counted; failures stay in
the latency distribution and are also counted by kind. An open-loop arrival past the client's
outstanding limit is never sent: it counts as a ``client_overflow`` error, without a latency.
Open-loop latency runs from each request's scheduled arrival, not from when it was sent, so a slow
server cannot hide its queueing (no coordinated omission); the lag from the scheduled arrival to
the send (the client's own delay, for example on a busy machine) is kept apart as ``send_lag``.
Warm-up requests are sent first and excluded from every figure.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edgeinfer.bench.stats import LatencyRecorder
from edgeinfer.serving.loadgen.clients import Client, RequestFailed
from edgeinfer.serving.loadgen.scrape import ServerSampler, ServerUsage
from edgeinfer.serving.loadgen.workload import Sample

ClientFactory = Callable[[], Client]
_FATAL_KINDS = frozenset({"connection", "not_found", "unauthenticated", "invalid_input"})
#: An open loop still behind on its window's arrivals this long after the window closed stops issuing
#: them (a rate too high for the client's own machine); the lag it had shows in ``send_lag``.
_BEHIND_LIMIT_NS = 1_000_000_000


@dataclass
class RunResult:
    """One load level: every request's latency (all / answered / refused) and the errors by kind."""

    mode: str  # "closed" or "open"
    level: float  # concurrency, or offered requests per second
    duration_s: float = 0.0
    issued: int = 0
    all_latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    ok_latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    failed_latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    send_lag: LatencyRecorder = field(default_factory=LatencyRecorder)
    errors: Counter[str] = field(default_factory=Counter)
    messages: dict[str, str] = field(default_factory=dict)
    server: ServerUsage | None = None
    unsent: int = 0  # issued arrivals never sent (client_overflow): in ``errors``, not in latency

    @property
    def completed(self) -> int:
        return self.all_latency.count

    @property
    def ok(self) -> int:
        return self.ok_latency.count

    def not_sent(self, failure: RequestFailed) -> None:
        """An arrival the client could not send: counted by kind, kept out of every latency."""
        self.unsent += 1
        self.errors[failure.kind] += 1
        self.messages.setdefault(failure.kind, str(failure)[:300])

    def record(self, elapsed_ns: int, failure: RequestFailed | None) -> None:
        self.all_latency.record(elapsed_ns, error=failure is not None)
        if failure is None:
            self.ok_latency.record(elapsed_ns)
        else:
            self.failed_latency.record(elapsed_ns, error=True)
            self.errors[failure.kind] += 1
            self.messages.setdefault(failure.kind, str(failure)[:300])


async def _timed(client: Client, sample: Sample, timeout_s: float) -> RequestFailed | None:
    try:
        async with asyncio.timeout(timeout_s):  # no extra task per request, unlike wait_for
            await client.send(sample)
    except RequestFailed as exc:
        return exc
    except TimeoutError:
        await client.abandon()  # an HTTP connection is in an unknown state; a gRPC channel is shared
        return RequestFailed("client_timeout", f"no answer within {timeout_s:g} s")
    return None


async def closed_loop(
    factory: ClientFactory,
    samples: Sequence[Sample],
    concurrency: int,
    *,
    duration_s: float,
    warmup_s: float,
    sampler: ServerSampler | None = None,
    request_timeout_s: float = 30.0,
) -> RunResult:
    """``concurrency`` clients, each sending its next request as soon as the last one is answered."""
    result = RunResult("closed", concurrency)
    clients = [factory() for _ in range(concurrency)]
    measuring = False
    stop_at = 0

    async def stream(index: int, client: Client) -> None:
        position = index * max(1, len(samples) // max(1, concurrency))
        while True:
            now = time.perf_counter_ns()
            if measuring and now >= stop_at:
                return
            sample = samples[position % len(samples)]
            position += 1
            started = time.perf_counter_ns()
            failure = await _timed(client, sample, request_timeout_s)
            if measuring and started < stop_at:
                result.issued += 1
                result.record(time.perf_counter_ns() - started, failure)
            elif not measuring and failure is not None and failure.kind == "connection":
                raise ConnectionError(str(failure))

    try:
        warm = [
            asyncio.create_task(_warm(client, samples, warmup_s, request_timeout_s)) for client in clients
        ]
        await asyncio.gather(*warm)
        if sampler is not None:
            await sampler.begin()
        measuring = True
        begin = time.perf_counter_ns()
        stop_at = begin + int(duration_s * 1e9)
        await asyncio.gather(*(stream(i, c) for i, c in enumerate(clients)))
        result.duration_s = (time.perf_counter_ns() - begin) / 1e9
        if sampler is not None:
            result.server = await sampler.end()
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return result


async def _warm(client: Client, samples: Sequence[Sample], warmup_s: float, timeout_s: float) -> None:
    """Send requests for ``warmup_s`` (at least one); a failure that every request would meet (no
    server there, wrong model, refused key, a request the server cannot take) ends the run."""
    end = time.perf_counter_ns() + int(warmup_s * 1e9)
    index = 0
    while True:
        failure = await _timed(client, samples[index % len(samples)], timeout_s)
        if failure is not None and failure.kind in _FATAL_KINDS:
            raise ConnectionError(f"warm-up request failed ({failure.kind}): {failure}")
        index += 1
        if time.perf_counter_ns() >= end:
            return


async def open_loop(
    factory: ClientFactory,
    samples: Sequence[Sample],
    rate_per_s: float,
    *,
    duration_s: float,
    warmup_s: float,
    poisson: bool = True,
    seed: int = 0,
    max_outstanding: int = 1024,
    sampler: ServerSampler | None = None,
    request_timeout_s: float = 30.0,
) -> RunResult:
    """Requests arrive at ``rate_per_s`` (Poisson or evenly spaced) whatever the server does.

    One request is sent and answered first, so a target that cannot serve at all (see :func:`_warm`)
    ends the run before any arrival.
    """
    result = RunResult("open", _checked_rate(rate_per_s))
    idle: list[Client] = []
    outstanding: set[asyncio.Task[None]] = set()
    rng = random.Random(seed)

    async def one(sample: Sample, scheduled_ns: int, counted: bool) -> None:
        client = idle.pop() if idle else factory()
        if counted:
            result.send_lag.record(time.perf_counter_ns() - scheduled_ns)
        failure = await _timed(client, sample, request_timeout_s)
        if counted:
            result.record(time.perf_counter_ns() - scheduled_ns, failure)
        idle.append(client)

    async def arrivals(length_s: float, counted: bool) -> None:
        start = time.perf_counter_ns()
        end = start + int(length_s * 1e9)
        next_ns = start
        index = 0
        while next_ns < end:
            now = time.perf_counter_ns()
            if now - end > _BEHIND_LIMIT_NS:
                return
            await asyncio.sleep(max(0.0, (next_ns - now) / 1e9))  # yields even when behind
            sample = samples[index % len(samples)]
            index += 1
            if counted:
                result.issued += 1
            if len(outstanding) >= max_outstanding:
                if counted:  # never sent: an error, but no latency (it has none)
                    result.not_sent(RequestFailed("client_overflow", f"over {max_outstanding} outstanding"))
            else:
                task = asyncio.create_task(one(sample, next_ns, counted))
                outstanding.add(task)
                task.add_done_callback(outstanding.discard)
            gap = rng.expovariate(rate_per_s) if poisson else 1.0 / rate_per_s
            next_ns += int(gap * 1e9)

    try:
        probe = factory()
        idle.append(probe)
        await _warm(probe, samples, 0.0, request_timeout_s)
        await arrivals(warmup_s, counted=False)
        await asyncio.gather(*outstanding)
        if sampler is not None:
            await sampler.begin()
        begin = time.perf_counter_ns()
        await arrivals(duration_s, counted=True)
        await asyncio.gather(*outstanding)
        result.duration_s = (time.perf_counter_ns() - begin) / 1e9
        if sampler is not None:
            result.server = await sampler.end()
    finally:
        await asyncio.gather(*(c.close() for c in idle), return_exceptions=True)
    return result


def _checked_rate(rate_per_s: float) -> float:
    if not (math.isfinite(rate_per_s) and rate_per_s > 0):
        raise ValueError(f"rate_per_s must be a finite number > 0, got {rate_per_s}")
    return rate_per_s
