from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time

import pytest

from edgeinfer.network.shaping import NS_PER_MS, NS_PER_S, DelayLine, PathDelay, Timer, TokenBucket


def test_bucket_serialises_bytes_at_its_rate() -> None:
    bucket = TokenBucket(1_000_000)  # 1 MB/s: 1 byte per µs
    assert bucket.reserve(1000, now_ns=0) == 1_000_000  # a segment leaves when its last byte is out
    assert bucket.reserve(1000, now_ns=0) == 2_000_000  # queued behind the first
    # 10 ms later the link has been idle for 8 ms: no credit is kept beyond the catch-up window.
    assert bucket.reserve(500, now_ns=10_000_000) == 10_500_000


def test_bucket_catches_up_a_slightly_late_producer_but_not_a_long_pause() -> None:
    bucket = TokenBucket(1_000_000, catch_up_ns=NS_PER_MS)
    first = bucket.reserve(1000, now_ns=0)
    # Back 0.3 ms late (a late timer): the train continues as if it never stopped.
    assert bucket.reserve(1000, now_ns=first + 300_000) == first + 1_000_000
    # Back 5 ms late: a genuine pause, serialisation starts now.
    later = first + 1_000_000 + 5 * NS_PER_MS
    assert bucket.reserve(1000, now_ns=later) == later + 1_000_000


def test_bucket_burst_and_unlimited_and_rate_change() -> None:
    assert TokenBucket(None).reserve(10**9, now_ns=42) == 42
    bursty = TokenBucket(1_000_000, burst_bytes=2000)
    assert bursty.reserve(1000, now_ns=0) == 0 and bursty.reserve(1000, now_ns=0) == 0
    assert bursty.reserve(1000, now_ns=0) == 1_000_000
    bucket = TokenBucket(1_000_000)
    bucket.set_rate(2_000_000)
    assert bucket.reserve(1000, now_ns=0) == 500_000
    with pytest.raises(ValueError):
        bucket.set_rate(0)


def test_bucket_long_run_rate_is_exact() -> None:
    rate = 787_500.0  # 6.3 Mb/s
    bucket = TokenBucket(rate)
    now = 0
    for _ in range(1000):
        now = bucket.reserve(1448, now)
    assert 1000 * 1448 / (now / NS_PER_S) == pytest.approx(rate, rel=1e-6)


def test_delay_jitter_has_the_asked_spread_and_is_correlated_in_time() -> None:
    delay = PathDelay(base_ns=20 * NS_PER_MS, jitter_sd_ns=3 * NS_PER_MS, rng=random.Random(7))
    apart = [delay.sample(100, now_ns=i * 200 * NS_PER_MS) for i in range(4000)]  # 200 ms apart
    assert statistics.mean(apart) == pytest.approx(20 * NS_PER_MS, rel=0.02)
    assert statistics.stdev(apart) == pytest.approx(3 * NS_PER_MS, rel=0.06)
    close = [delay.sample(100, now_ns=10**12 + i * 100_000) for i in range(200)]  # 0.1 ms apart
    steps = [abs(b - a) for a, b in itertools.pairwise(close)]
    assert statistics.mean(steps) < 0.5 * NS_PER_MS  # neighbours stay close: little reordering


def test_loss_costs_the_retransmission_timeout_at_the_asked_rate() -> None:
    delay = PathDelay(base_ns=0, loss_prob=0.02, rto_ns=200 * NS_PER_MS, rng=random.Random(3))
    penalties = [delay.sample(1000, now_ns=0) for _ in range(20_000)]  # one packet each
    lost = [p for p in penalties if p > 0]
    assert len(lost) / len(penalties) == pytest.approx(0.02, rel=0.15)
    assert min(lost) == 200 * NS_PER_MS
    assert 600 * NS_PER_MS in lost  # a lost retransmission: 200 ms, then 400 ms (backoff)
    assert delay.losses >= len(lost)
    big = PathDelay(base_ns=0, loss_prob=0.02, rng=random.Random(3))
    ten_packets = [big.sample(14_480, now_ns=0) for _ in range(5000)]
    share = sum(p > 0 for p in ten_packets) / len(ten_packets)
    assert share == pytest.approx(1 - 0.98**10, rel=0.15)


def test_delay_line_keeps_order_and_times() -> None:
    async def scenario() -> tuple[list[bytes], list[int], int]:
        line = DelayLine(max_bytes=1 << 20)
        t0 = time.monotonic_ns()
        line.put(t0 + 30 * NS_PER_MS, b"a")
        placed = line.put(t0 + 10 * NS_PER_MS, b"b")  # earlier than "a": must wait behind it
        line.close()
        got, at = [], []
        while (data := await line.get(Timer())) is not None:
            got.append(data)
            at.append(time.monotonic_ns() - t0)
        return got, at, placed - t0

    got, at, placed = asyncio.run(scenario())
    assert b"".join(got) == b"ab"
    assert placed == 30 * NS_PER_MS
    assert 29 * NS_PER_MS <= at[0] <= 45 * NS_PER_MS


def test_delay_line_pushes_back_when_full() -> None:
    async def scenario() -> bool:
        line = DelayLine(max_bytes=10)
        line.put(0, b"x" * 10)
        waiter = asyncio.create_task(line.wait_for_room())
        await asyncio.sleep(0.01)
        blocked = not waiter.done()
        assert await line.get() == b"x" * 10
        await asyncio.wait_for(waiter, timeout=1)
        return blocked

    assert asyncio.run(scenario())


def test_bucket_with_a_backlog_catches_up_a_long_stall() -> None:
    bucket = TokenBucket(1_000_000)
    first = bucket.reserve(1000, now_ns=0)
    stalled = first + 50 * NS_PER_MS  # the emulator was off the CPU for 50 ms with bytes waiting
    assert bucket.reserve(1000, now_ns=stalled, backlog=True) == stalled  # due long ago: leaves at once
    assert bucket.reserve(1000, now_ns=stalled, backlog=True) == stalled  # the train catches up...
    # ... until it is back on schedule: 52 ms of link time booked in total, never more than the rate
    for _ in range(60):
        last = bucket.reserve(1000, now_ns=stalled, backlog=True)
    assert last == first + 62 * NS_PER_MS
