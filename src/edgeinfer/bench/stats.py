"""Latency statistics on HDR histograms.

A :class:`LatencyRecorder` takes durations in nanoseconds (from ``time.perf_counter_ns``) and keeps
them in an HDR histogram (3 significant figures, 1 us to 10 min), plus the exact minimum, maximum and
sum. Percentiles follow MLPerf LoadGen's rule (``sorted[floor(p * n)]``, 0-based; with 100 samples
p99 is the maximum), read at the histogram's resolution: a bucket's highest equivalent value, capped
at the exact maximum. :meth:`LatencyRecorder.summary` gives the figures every report shows
(p50/p90/p95/p99/p99.9/max, in milliseconds), the CDF and histogram points the HTML plots draw,
and the encoded histogram so another tool can merge or re-analyse it without the raw samples.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_NS = 1_000
HIGHEST_NS = 600_000_000_000
SIGNIFICANT_FIGURES = 3
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
CDF_POINTS = 200
HISTOGRAM_BINS = 60


@dataclass(frozen=True)
class LatencySummary:
    """What one latency distribution looks like; every time is in milliseconds.

    ``count`` is how many durations were recorded; ``errors`` how many of them came from requests that
    failed (they are in the distribution too: failures are never dropped from the statistics).
    ``cdf`` is ``(latency_ms, fraction <= it)`` pairs; ``histogram`` is ``(bin_start_ms, bin_end_ms,
    count)`` triples on a log scale. ``hdr`` is the base64 HDR histogram of nanosecond values.
    """

    count: int
    errors: int
    mean_ms: float
    stddev_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    cdf: tuple[tuple[float, float], ...] = ()
    histogram: tuple[tuple[float, float, int], ...] = ()
    hdr: str = ""

    def percentile_ms(self, percentile: float) -> float:
        """The summary's value for one of :data:`PERCENTILES` (or 100 for the maximum)."""
        table = {
            50.0: self.p50_ms,
            90.0: self.p90_ms,
            95.0: self.p95_ms,
            99.0: self.p99_ms,
            99.9: self.p999_ms,
            100.0: self.max_ms,
        }
        if percentile not in table:
            raise ValueError(f"percentile must be one of {sorted(table)}, got {percentile}")
        return table[percentile]


@dataclass
class LatencyRecorder:
    """Thread-safe collector of durations; call :meth:`record` from any thread."""

    _hist: HdrHistogram = field(
        default_factory=lambda: HdrHistogram(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_FIGURES)
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _count: int = 0
    _errors: int = 0
    _min_ns: int = 0
    _max_ns: int = 0
    _sum_ns: int = 0

    def record(self, duration_ns: int, *, error: bool = False) -> None:
        """Add one duration; ``error`` marks it as a failed request (still counted in the figures)."""
        value = min(max(int(duration_ns), LOWEST_NS), HIGHEST_NS)
        with self._lock:
            self._hist.record_value(value)
            exact = max(int(duration_ns), 0)
            self._min_ns = exact if self._count == 0 else min(self._min_ns, exact)
            self._max_ns = max(self._max_ns, exact)
            self._sum_ns += exact
            self._count += 1
            self._errors += int(error)

    @property
    def count(self) -> int:
        return self._count

    def merge(self, other: LatencyRecorder) -> None:
        """Add every duration ``other`` recorded."""
        with self._lock, other._lock:
            if other._count == 0:
                return
            self._hist.add(other._hist)
            self._min_ns = other._min_ns if self._count == 0 else min(self._min_ns, other._min_ns)
            self._max_ns = max(self._max_ns, other._max_ns)
            self._sum_ns += other._sum_ns
            self._count += other._count
            self._errors += other._errors

    def summary(self) -> LatencySummary:
        """The figures so far; an empty recorder gives zeros (``count == 0`` says so)."""
        with self._lock:
            if self._count == 0:
                return empty_summary()
            values, counts = _recorded(self._hist)
            encoded = self._hist.encode().decode("ascii")
            count, errors, min_ns, max_ns, sum_ns = (
                self._count,
                self._errors,
                self._min_ns,
                self._max_ns,
                self._sum_ns,
            )
        cumulative = np.cumsum(counts)
        total = int(cumulative[-1])

        def at(percentile: float) -> float:
            """LoadGen's rank rule (sorted[floor(p * n)], 0-based) at HDR resolution, capped at the max."""
            wanted = min(math.floor(percentile / 100.0 * total) + 1, total)
            index = min(int(np.searchsorted(cumulative, wanted)), len(values) - 1)
            return min(float(values[index]), float(max_ns)) / 1e6

        mean_ns = float(np.average(values, weights=counts))
        stddev_ns = math.sqrt(float(np.average((values - mean_ns) ** 2, weights=counts)))
        return LatencySummary(
            count=count,
            errors=errors,
            mean_ms=sum_ns / count / 1e6,
            stddev_ms=stddev_ns / 1e6,
            min_ms=min_ns / 1e6,
            p50_ms=at(50.0),
            p90_ms=at(90.0),
            p95_ms=at(95.0),
            p99_ms=at(99.0),
            p999_ms=at(99.9),
            max_ms=max_ns / 1e6,
            cdf=_cdf(at, max_ns),
            histogram=_log_histogram(values, counts, min_ns, max_ns),
            hdr=encoded,
        )


def empty_summary() -> LatencySummary:
    return LatencySummary(0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def summarize_ns(durations_ns: list[int]) -> LatencySummary:
    """Summary of a plain list of durations in nanoseconds."""
    recorder = LatencyRecorder()
    for value in durations_ns:
        recorder.record(value)
    return recorder.summary()


def decode_hdr(encoded: str) -> HdrHistogram:
    """The histogram a summary's ``hdr`` field holds (nanosecond values)."""
    return HdrHistogram.decode(encoded.encode("ascii"))


def _recorded(hist: HdrHistogram) -> tuple[np.ndarray, np.ndarray]:
    """The non-empty buckets: each one's highest equivalent value (ns) and its count."""
    counts = np.ctypeslib.as_array(hist.counts)[: hist.counts_len]
    indices = np.nonzero(counts)[0]
    values = np.array(
        [hist.get_highest_equivalent_value(hist.get_value_from_index(int(i))) for i in indices],
        dtype=np.float64,
    )
    return values, counts[indices].astype(np.float64)


def _cdf(at: Callable[[float], float], max_ns: int) -> tuple[tuple[float, float], ...]:
    """CDF points at percentiles spaced evenly in log(1 - p), so the tail gets as many as the body."""
    points: list[tuple[float, float]] = []
    tail_decades = 4.0  # down to p99.99
    for i in range(CDF_POINTS):
        fraction = 1.0 - 10.0 ** (-tail_decades * i / (CDF_POINTS - 1))
        points.append((round(at(fraction * 100.0), 6), round(fraction, 6)))
    points.append((round(max_ns / 1e6, 6), 1.0))
    deduped: list[tuple[float, float]] = []
    for point in points:
        if not deduped or deduped[-1] != point:
            deduped.append(point)
    return tuple(deduped)


def _log_histogram(
    values: np.ndarray, counts: np.ndarray, min_ns: int, max_ns: int
) -> tuple[tuple[float, float, int], ...]:
    """Counts in :data:`HISTOGRAM_BINS` log-spaced bins between the minimum and the maximum."""
    low = float(max(min_ns, LOWEST_NS))
    high = float(max(max_ns, low + 1))
    if high <= low * 1.001:
        return ((low / 1e6, high / 1e6, int(counts.sum())),)
    edges = np.geomspace(low, high, HISTOGRAM_BINS + 1)
    binned, _ = np.histogram(np.clip(values, low, high), bins=edges, weights=counts)
    return tuple(
        (round(float(edges[i]) / 1e6, 6), round(float(edges[i + 1]) / 1e6, 6), int(binned[i]))
        for i in range(HISTOGRAM_BINS)
    )
