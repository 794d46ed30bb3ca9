"""CPU and memory of this process, sampled at a fixed rate on a background thread.

The sampler keeps a timeline (for the plots) and summarizes any window of it (for the tables).
Process CPU is computed from the process's user+system CPU time, so 100 % is one full core and a
2-core machine tops out at 200 %. Per-core figures are the machine's (the kernel does not say which
core a process's time was spent on): they show whether other work competed for the cores.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import sys
import threading
import time
from dataclasses import dataclass

import psutil

DEFAULT_INTERVAL_MS = 100
MIN_INTERVAL_MS = 10  # sampling costs CPU too


@dataclass(frozen=True)
class ResourceSample:
    """One observation; ``t_s`` is seconds since the sampler started."""

    t_s: float
    process_cpu_percent: float
    rss_mb: float
    system_cpu_percent_per_core: tuple[float, ...]


@dataclass(frozen=True)
class PhaseMark:
    """A named moment on the timeline (``load``, ``warm-up``, ``SingleStream``...)."""

    t_s: float
    name: str


@dataclass(frozen=True)
class ResourceSummary:
    """Resource use over one window of a run.

    ``process_cpu_percent_mean``: 100 = one core busy. ``process_cpu_percent_of_machine``: the same
    divided by the logical cores. ``cpu_ms`` is the process's CPU time in the window, exactly (not
    sampled). ``rss_peak_mb`` is the highest sampled RSS in the window; ``rss_steady_mb`` the median
    over its second half. ``process_rss_peak_mb`` is the kernel's high-water mark for the process.
    """

    duration_s: float
    cpu_ms: float
    process_cpu_percent_mean: float
    process_cpu_percent_of_machine: float
    system_cpu_percent_per_core_mean: tuple[float, ...]
    rss_peak_mb: float
    rss_steady_mb: float
    process_rss_peak_mb: float
    samples: int


@dataclass(frozen=True)
class Window:
    """The start of a measured window: monotonic time and process CPU time at that moment."""

    start_ns: int
    cpu_s: float


class ResourceSampler:
    """Samples this process every ``interval_ms`` until :meth:`stop`; use as a context manager."""

    def __init__(self, interval_ms: int = DEFAULT_INTERVAL_MS) -> None:
        if interval_ms < MIN_INTERVAL_MS:
            raise ValueError(
                f"interval_ms must be >= {MIN_INTERVAL_MS} (sampling costs CPU too), got {interval_ms}"
            )
        self.interval_ms = interval_ms
        self._process = psutil.Process()
        self._samples: list[ResourceSample] = []
        self._marks: list[PhaseMark] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0_ns = time.monotonic_ns()
        self.cores = psutil.cpu_count(logical=True) or 1

    def __enter__(self) -> ResourceSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._t0_ns = time.monotonic_ns()
        self._thread = threading.Thread(target=self._run, name="edgeinfer-resource-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def mark(self, name: str) -> None:
        """Put a named marker on the timeline at the current moment."""
        with self._lock:
            self._marks.append(PhaseMark(self._elapsed_s(time.monotonic_ns()), name))

    def begin(self) -> Window:
        """Start a measured window; pass the result to :meth:`summarize`."""
        return Window(time.monotonic_ns(), self._cpu_s())

    def summarize(self, window: Window) -> ResourceSummary:
        """Resource use from ``window`` until now."""
        end_ns = time.monotonic_ns()
        cpu_s = self._cpu_s() - window.cpu_s
        duration_s = max((end_ns - window.start_ns) / 1e9, 1e-9)
        start_t, end_t = self._elapsed_s(window.start_ns), self._elapsed_s(end_ns)
        with self._lock:
            inside = [s for s in self._samples if start_t <= s.t_s <= end_t]
        rss_now = self._rss_mb()
        rss_values = [s.rss_mb for s in inside] or [rss_now]
        second_half = [s.rss_mb for s in inside if s.t_s >= (start_t + end_t) / 2] or [rss_now]
        per_core = _mean_per_core([s.system_cpu_percent_per_core for s in inside])
        cpu_percent = 100.0 * cpu_s / duration_s
        return ResourceSummary(
            duration_s=duration_s,
            cpu_ms=cpu_s * 1000.0,
            process_cpu_percent_mean=cpu_percent,
            process_cpu_percent_of_machine=cpu_percent / self.cores,
            system_cpu_percent_per_core_mean=per_core,
            rss_peak_mb=max([*rss_values, rss_now]),
            rss_steady_mb=statistics.median(second_half),
            process_rss_peak_mb=process_peak_rss_mb(),
            samples=len(inside),
        )

    def timeline(self) -> tuple[list[ResourceSample], list[PhaseMark]]:
        """Everything sampled so far and the markers, in time order."""
        with self._lock:
            return list(self._samples), list(self._marks)

    def _run(self) -> None:
        # primes the per-core counters, on this thread: psutil keeps them per thread, so priming
        # them elsewhere left the first sample at 0% on every core
        psutil.cpu_percent(percpu=True)
        last_ns = time.monotonic_ns()
        last_cpu = self._cpu_s()
        interval_s = self.interval_ms / 1000.0
        while not self._stop.wait(interval_s):
            now_ns = time.monotonic_ns()
            cpu = self._cpu_s()
            wall_s = max((now_ns - last_ns) / 1e9, 1e-9)
            try:
                per_core = tuple(float(v) for v in psutil.cpu_percent(percpu=True))
                rss = self._rss_mb()
            except psutil.Error:
                continue
            sample = ResourceSample(
                t_s=self._elapsed_s(now_ns),
                process_cpu_percent=100.0 * (cpu - last_cpu) / wall_s,
                rss_mb=rss,
                system_cpu_percent_per_core=per_core,
            )
            with self._lock:
                self._samples.append(sample)
            last_ns, last_cpu = now_ns, cpu

    def _elapsed_s(self, monotonic_ns: int) -> float:
        return (monotonic_ns - self._t0_ns) / 1e9

    def _cpu_s(self) -> float:
        times = self._process.cpu_times()
        return float(times.user + times.system)

    def _rss_mb(self) -> float:
        return float(self._process.memory_info().rss) / 2**20


def process_peak_rss_mb() -> float:
    """The kernel's RSS high-water mark for this process, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def current_rss_mb() -> float:
    with contextlib.suppress(psutil.Error):
        return float(psutil.Process().memory_info().rss) / 2**20
    return 0.0


def _mean_per_core(rows: list[tuple[float, ...]]) -> tuple[float, ...]:
    if not rows:
        return ()
    width = min(len(r) for r in rows)
    return tuple(statistics.fmean(r[i] for r in rows) for i in range(width))
