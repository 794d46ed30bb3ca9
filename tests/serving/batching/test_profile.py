from __future__ import annotations

import time

import pytest

from edgeinfer.serving.batching.profile import ComputeProfile


def test_nothing_measured_is_zero() -> None:
    assert ComputeProfile(4).compute_ns(3) == 0


def test_unmeasured_sizes_scale_from_the_nearest_measured() -> None:
    profile = ComputeProfile(8)
    profile.observe(1, 1_000)
    profile.observe(4, 3_000)
    assert profile.compute_ns(1) == 1_000
    assert profile.compute_ns(5) == 3_750  # from size 4, linearly
    assert profile.compute_ns(2) == 2_000  # from size 1 (nearer than 4)
    assert profile.compute_ns(100) == profile.compute_ns(8)


def test_observations_move_the_estimate_smoothly() -> None:
    profile = ComputeProfile(2, smoothing=0.5)
    profile.observe(1, 1_000)
    profile.observe(1, 3_000)
    assert profile.compute_ns(1) == 2_000
    profile.observe(1, -5)  # ignored
    profile.observe(9, 10)  # out of range: ignored
    assert profile.snapshot() == {1: 2_000}


def test_per_sample_cost_is_the_best_batch() -> None:
    profile = ComputeProfile(4)
    for size, ns in ((1, 1_000), (2, 1_800), (3, 2_700), (4, 3_800)):
        profile.observe(size, ns)
    assert profile.per_sample_ns() == 900


def test_bad_construction_says_why() -> None:
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        ComputeProfile(0)


def test_batch_size_follows_the_measured_cost() -> None:
    profile = ComputeProfile(8)
    for size, ms in ((1, 8.0), (2, 15.0), (4, 45.0), (8, 100.0)):  # this CPU: batching stops paying at 2
        profile.observe(size, int(ms * 1e6))
    assert profile.best_batch_size(8) == 2
    assert profile.best_batch_size(1) == 1
    for size in range(1, 9):  # the machine changes: now the bigger the better
        for _ in range(30):
            profile.observe(size, int((20 + size) * 1e6))
    assert profile.best_batch_size(8) == 8
    assert profile.best_batch_size(5) == 5


def test_best_time_is_the_fastest_ever_seen() -> None:
    profile = ComputeProfile(2)
    profile.observe(1, 5_000)
    profile.observe(1, 50_000)
    assert profile.best_ns(1) == 5_000
    assert profile.compute_ns(1) > 5_000
    assert profile.best_ns(2) == 10_000  # never run: scaled from size 1's best


def test_a_stale_estimate_falls_back_to_the_best_time() -> None:
    profile = ComputeProfile(1, fresh_s=1.0)
    profile.observe(1, 5_000_000)
    past = time.monotonic_ns() - 5_000_000_000
    for _ in range(10):
        profile.observe(1, 90_000_000, at_ns=past)
    assert profile.compute_ns(1) == 5_000_000
    profile.observe(1, 90_000_000)  # fresh again: the slow figure counts
    assert profile.compute_ns(1) > 50_000_000
