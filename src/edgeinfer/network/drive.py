"""Feed a stream of images through a router and record what each request cost.

Closed loop (SingleStream: the next image as soon as the last answer arrives) or open loop
(Poisson arrivals at a rate, MLPerf's Server scenario), for at least a duration and a number of
requests. Every issued request completes (on error too) and is counted; an open-loop request's
latency runs from its scheduled arrival, so queueing on the device counts.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psutil

from edgeinfer.errors import EdgeInferError
from edgeinfer.network.client import CloudError
from edgeinfer.network.router import Decision, HybridRouter, RouterStats


@dataclass(frozen=True)
class Load:
    """How requests arrive. ``rate_per_s=None``: closed loop, one request at a time."""

    duration_s: float = 30.0
    min_requests: int = 10
    rate_per_s: float | None = None
    deadline_ms: float | None = None
    warmup_requests: int = 3
    seed: int = 0


@dataclass
class Trace:
    """Everything one run recorded, request by request."""

    latencies_ns: list[int] = field(default_factory=list)
    failed: list[bool] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_messages: list[str] = field(default_factory=list)
    stages_ns: dict[str, list[int]] = field(default_factory=dict)
    bytes_sent: list[int] = field(default_factory=list)
    bytes_received: list[int] = field(default_factory=list)
    top1: list[tuple[int, int]] = field(default_factory=list)  # (image index, predicted class)
    decisions: list[Decision] = field(default_factory=list)
    duration_s: float = 0.0
    cpu_ms: float = 0.0
    rss_mb: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies_ns)


async def drive(
    router: HybridRouter,
    images: Sequence[bytes],
    load: Load,
    on_measuring: Callable[[], None] | None = None,
) -> Trace:
    """Run the stream; the router must be started. Warm-up requests are not recorded: the router's
    counters start again after them, and ``on_measuring`` (a caller's snapshot of a server's own
    counters, say) is called between the warm-up and the measured requests."""
    for i in range(load.warmup_requests):
        await _one(
            router, images, i, deadline_ms=load.deadline_ms, arrival_ns=time.perf_counter_ns(), trace=None
        )
    router.stats = RouterStats()
    if on_measuring is not None:
        on_measuring()
    trace = Trace()
    process = psutil.Process()
    cpu_before = sum(process.cpu_times()[:2])
    start_ns = time.perf_counter_ns()
    end_ns = start_ns + int(load.duration_s * 1e9)
    if load.rate_per_s is None:
        issued = 0
        while time.perf_counter_ns() < end_ns or issued < load.min_requests:
            await _one(
                router,
                images,
                issued,
                deadline_ms=load.deadline_ms,
                arrival_ns=time.perf_counter_ns(),
                trace=trace,
            )
            issued += 1
    else:
        await _open_loop(router, images, load, trace, start_ns=start_ns, end_ns=end_ns)
    trace.duration_s = (time.perf_counter_ns() - start_ns) / 1e9
    trace.cpu_ms = 1e3 * (sum(process.cpu_times()[:2]) - cpu_before)
    trace.rss_mb = process.memory_info().rss / 2**20
    return trace


async def _open_loop(
    router: HybridRouter, images: Sequence[bytes], load: Load, trace: Trace, *, start_ns: int, end_ns: int
) -> None:
    assert load.rate_per_s is not None
    rng = random.Random(load.seed)
    tasks: list[asyncio.Task[None]] = []
    arrival_ns = start_ns
    issued = 0
    while arrival_ns < end_ns or issued < load.min_requests:
        arrival_ns += int(rng.expovariate(load.rate_per_s) * 1e9)
        delay_s = (arrival_ns - time.perf_counter_ns()) / 1e9
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        request = _one(
            router, images, issued, deadline_ms=load.deadline_ms, arrival_ns=arrival_ns, trace=trace
        )
        tasks.append(asyncio.create_task(request))
        issued += 1
    await asyncio.gather(*tasks)


async def _one(
    router: HybridRouter,
    images: Sequence[bytes],
    index: int,
    *,
    deadline_ms: float | None,
    arrival_ns: int,
    trace: Trace | None,
) -> None:
    image = images[index % len(images)]
    left_ms = None
    if deadline_ms is not None:
        left_ms = deadline_ms - (time.perf_counter_ns() - arrival_ns) / 1e6
    try:
        routed = await router.classify(image, deadline_ms=left_ms)
    except EdgeInferError as exc:
        if trace is not None:
            trace.latencies_ns.append(time.perf_counter_ns() - arrival_ns)
            trace.failed.append(True)
            trace.errors[exc.reason if isinstance(exc, CloudError) else exc.kind] += 1
            if len(trace.error_messages) < 20:
                trace.error_messages.append(str(exc))
        return
    if trace is None:
        return
    trace.latencies_ns.append(time.perf_counter_ns() - arrival_ns)
    trace.failed.append(False)
    for stage, value in routed.stages_ns.items():
        trace.stages_ns.setdefault(stage, []).append(value)
    trace.bytes_sent.append(routed.decision.bytes_sent)
    trace.bytes_received.append(routed.decision.bytes_received)
    trace.top1.append((index % len(images), int(routed.probabilities.argmax())))
    trace.decisions.append(routed.decision)


async def drive_paired(routers: Sequence[HybridRouter], images: Sequence[bytes], load: Load) -> list[Trace]:
    """Closed loop, taking turns: request k goes to ``routers[k % n]``, every router sees the same
    images in the same order, and all of them the same moments of a shared, noisy machine.

    Each router gets ``load.duration_s`` of the run's time (the run lasts ``n`` times as long) and
    at least ``load.min_requests``. CPU time is the process's, counted around each request.
    """
    count = len(routers)
    for router in routers:
        for i in range(load.warmup_requests):
            await _one(
                router, images, i, deadline_ms=load.deadline_ms, arrival_ns=time.perf_counter_ns(), trace=None
            )
    traces = [Trace() for _ in routers]
    process = psutil.Process()
    start_ns = time.perf_counter_ns()
    end_ns = start_ns + int(load.duration_s * count * 1e9)
    k = 0
    while time.perf_counter_ns() < end_ns or k < load.min_requests * count:
        cpu_before = sum(process.cpu_times()[:2])
        turn = (k + k // count) % count  # the order rotates each round: nobody always goes after the same
        trace = traces[turn]
        await _one(
            routers[turn],
            images,
            k // count,
            deadline_ms=load.deadline_ms,
            arrival_ns=time.perf_counter_ns(),
            trace=trace,
        )
        trace.cpu_ms += 1e3 * (sum(process.cpu_times()[:2]) - cpu_before)
        k += 1
    duration_s = (time.perf_counter_ns() - start_ns) / 1e9
    rss_mb = process.memory_info().rss / 2**20
    for trace in traces:
        trace.duration_s = duration_s / count  # each router's share of the wall time
        trace.rss_mb = rss_mb
    return traces
