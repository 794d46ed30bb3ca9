from __future__ import annotations

import pytest

from edgeinfer.network.crossover import CrossoverModel
from edgeinfer.network.profiles import get_profile

MODEL = CrossoverModel(edge_ms=60.0, server_ms=20.0, overhead_ms=3.0, up_bytes=50_000, down_bytes=4_000)


def test_cloud_latency_adds_rtt_transfers_and_scaled_server_work() -> None:
    # 50 kB at 10 Mb/s = 40 ms, 4 kB at 40 Mb/s = 0.8 ms
    assert MODEL.cloud_ms(30.0, 10.0, 40.0) == pytest.approx(30 + 3 + 20 + 40 + 0.8)
    assert MODEL.cloud_ms(30.0, 10.0, 40.0, speedup=4) == pytest.approx(30 + 3 + 5 + 40 + 0.8)
    assert MODEL.cloud_ms(30.0, None, None) == pytest.approx(53.0)


def test_break_even_uplink_is_where_both_sides_are_equal() -> None:
    for rtt in (5.0, 20.0, 30.0):
        for speedup in (1.0, 4.0):
            up = MODEL.breakeven_up_mbps(rtt, speedup)
            assert up is not None
            assert MODEL.cloud_ms(rtt, up, None, speedup) == pytest.approx(MODEL.edge_ms)
    assert MODEL.breakeven_up_mbps(40.0) is None  # 40 + 3 + 20 > 60: no uplink is fast enough
    assert MODEL.max_rtt_ms(1.0) == pytest.approx(37.0)


def test_winner_per_profile() -> None:
    assert MODEL.winner(get_profile("3g")) == "edge"
    fast = CrossoverModel(edge_ms=400.0, server_ms=10.0, overhead_ms=2.0, up_bytes=30_000, down_bytes=4_000)
    assert fast.winner(get_profile("wifi")) == "cloud"
