from __future__ import annotations

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
