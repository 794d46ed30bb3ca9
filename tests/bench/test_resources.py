"""The resource sampler: CPU time and RSS of this process, sampled and summarized per window."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgeinfer.bench.resources import ResourceSampler


def busy(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        sum(i * i for i in range(1000))


def test_sampler_sees_cpu_and_memory() -> None:
    with ResourceSampler(interval_ms=20) as sampler:
        sampler.mark("idle")
        time.sleep(0.15)
        sampler.mark("busy")
        window = sampler.begin()
        busy(0.3)
        block = np.ones(40 * 2**20 // 8)  # 40 MiB the sampler should see
        time.sleep(0.1)
        summary = sampler.summarize(window)
        del block
    samples, marks = sampler.timeline()
    assert [m.name for m in marks] == ["idle", "busy"]
    assert len(samples) >= 10
    assert [s.t_s for s in samples] == sorted(s.t_s for s in samples)
    assert summary.cpu_ms >= 100  # most of 0.3 s of busy Python, even on a shared machine
    assert 0 < summary.process_cpu_percent_mean <= 100 * sampler.cores + 5
    assert summary.rss_peak_mb >= summary.rss_steady_mb * 0.9
    assert summary.process_rss_peak_mb >= summary.rss_peak_mb * 0.99
    assert len(summary.system_cpu_percent_per_core_mean) == sampler.cores
    assert summary.samples >= 5


def test_the_first_sample_sees_the_machine_busy_too(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    # psutil keeps its per-core counters per thread id, and ids are reused: start as a fresh
    # process does, so that an earlier sampler thread's counters cannot stand in for priming
    monkeypatch.setattr(psutil, "_last_per_cpu_times", {})
    with ResourceSampler(interval_ms=100) as sampler:
        busy(0.25)  # this process keeps one core busy from the start
    samples, _ = sampler.timeline()
    assert samples[0].process_cpu_percent > 30
    assert sum(samples[0].system_cpu_percent_per_core) > 30  # was 0 on every core: primed on another thread


def test_interval_must_be_sane() -> None:
    with pytest.raises(ValueError, match="interval_ms must be >= 10"):
        ResourceSampler(interval_ms=1)
