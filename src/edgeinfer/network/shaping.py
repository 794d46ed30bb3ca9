"""The pieces of an emulated path: a bandwidth pacer, a delay model and an ordered delay line.

Everything here works on integer nanoseconds of ``time.monotonic_ns()``. The pacer and the delay
model are pure (the caller passes the time in), so they are tested without sleeping.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from dataclasses import dataclass

from edgeinfer.network.profiles import MSS_BYTES

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
#: Correlation time of the jitter process: delays of packets closer than this are similar,
#: so a bulk transfer is not reordered (and then head-of-line blocked) on every segment.
JITTER_CORRELATION_NS = 10 * NS_PER_MS
#: How late a producer may come back and still continue a back-to-back train of segments.
CATCH_UP_NS = 4 * NS_PER_MS
#: The same when the producer had bytes waiting all along (the link was never idle), so a busy
#: machine that stalls the emulator for a while does not take capacity away from the link.
BACKLOG_CATCH_UP_NS = 100 * NS_PER_MS


class TokenBucket:
    """Paces bytes at ``rate_bytes_per_s``, letting at most ``burst_bytes`` through back to back.

    With ``burst_bytes=0`` this is a plain bottleneck link: every byte waits for the bytes queued
    before it, and a segment is released when its last byte has been serialised. Several
    connections may share one bucket (one direction of one link); they are served first come,
    first served. The bucket is the generic cell rate algorithm (GCRA) in virtual time.

    A producer that comes back for more within ``catch_up_ns`` of the link going idle is treated
    as if it had never left: timers fire a little late, and without this every late wake-up
    would be lost link time and the emulated rate would fall short of the profile's. A producer
    that says it had a backlog all along (``backlog=True``) catches up from much later still.
    """

    def __init__(
        self, rate_bytes_per_s: float | None, burst_bytes: int = 0, catch_up_ns: int = CATCH_UP_NS
    ) -> None:
        self._catch_up_ns = catch_up_ns
        self._rate: float | None = None
        self._burst_ns = 0
        self._burst_bytes = burst_bytes
        self._free_at_ns = 0
        self.set_rate(rate_bytes_per_s)

    @property
    def rate_bytes_per_s(self) -> float | None:
        return self._rate

    def set_rate(self, rate_bytes_per_s: float | None) -> None:
        """Change the rate; bytes already reserved keep their release times."""
        if rate_bytes_per_s is not None and rate_bytes_per_s <= 0:
            raise ValueError(f"rate must be > 0 bytes/s or None (unlimited), got {rate_bytes_per_s}")
        if self._burst_bytes < 0:
            raise ValueError(f"burst_bytes must be >= 0, got {self._burst_bytes}")
        self._rate = rate_bytes_per_s
        self._burst_ns = (
            0 if rate_bytes_per_s is None else round(self._burst_bytes * NS_PER_S / rate_bytes_per_s)
        )

    def reserve(self, nbytes: int, now_ns: int, *, backlog: bool = False) -> int:
        """Book ``nbytes`` on the link; return the time at which they may leave (>= ``now_ns``)."""
        if self._rate is None:
            return now_ns
        window_ns = BACKLOG_CATCH_UP_NS if backlog else self._catch_up_ns
        start_ns = self._free_at_ns if now_ns - self._free_at_ns <= window_ns else now_ns
        finish_ns = start_ns + round(nbytes * NS_PER_S / self._rate)
        self._free_at_ns = finish_ns
        return max(now_ns, finish_ns - self._burst_ns)


@dataclass
class PathDelay:
    """One-way delay of one direction: base delay, correlated Gaussian jitter and TCP loss recovery.

    ``jitter_sd_ns`` is the standard deviation of this direction's delay. Jitter follows an
    AR(1) process in time with correlation time :data:`JITTER_CORRELATION_NS`; samples far apart
    are independent. A segment of ``n`` bytes holds ``ceil(n / MSS)`` packets; each is lost with
    probability ``loss_prob``, and a loss delays the segment (and, since TCP delivers in order,
    everything behind it) by ``rto_ns``, doubling for every further loss of the retransmission.
    """

    base_ns: int
    jitter_sd_ns: float = 0.0
    loss_prob: float = 0.0
    rto_ns: int = 200 * NS_PER_MS
    rng: random.Random | None = None

    def __post_init__(self) -> None:
        self._rng = self.rng or random.Random()
        self._jitter_ns = 0.0
        self._last_ns: int | None = None
        self.losses = 0

    def sample(self, nbytes: int, now_ns: int) -> int:
        """Delay in ns for a segment of ``nbytes`` leaving at ``now_ns``."""
        delay = float(self.base_ns)
        if self.jitter_sd_ns > 0:
            delay += self._next_jitter(now_ns)
        if self.loss_prob > 0:
            delay += self._loss_penalty_ns(nbytes)
        return max(0, round(delay))

    def _next_jitter(self, now_ns: int) -> float:
        if self._last_ns is None:
            rho = 0.0
        else:
            rho = math.exp(-max(0, now_ns - self._last_ns) / JITTER_CORRELATION_NS)
        self._last_ns = now_ns
        innovation = self._rng.gauss(0.0, self.jitter_sd_ns)
        self._jitter_ns = rho * self._jitter_ns + math.sqrt(1.0 - rho * rho) * innovation
        return self._jitter_ns

    def _loss_penalty_ns(self, nbytes: int) -> int:
        packets = max(1, math.ceil(nbytes / MSS_BYTES))
        segment_lost = 1.0 - (1.0 - self.loss_prob) ** packets
        if self._rng.random() >= segment_lost:
            return 0
        penalty, timeout = 0, self.rto_ns
        while True:  # the first loss, then each lost retransmission doubles the timer (RFC 6298 5.5)
            self.losses += 1
            penalty += timeout
            timeout *= 2
            if self._rng.random() >= self.loss_prob:
                return penalty


class DelayLine:
    """An ordered queue of byte chunks, each released at its arrival time.

    Arrival times are made non-decreasing (TCP hands bytes to the application in order, so a
    late segment holds back the ones behind it). ``max_bytes`` bounds what is in flight; the
    producer awaits :meth:`wait_for_room` so a slow receiver pushes back on the sender.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self._max_bytes = max_bytes
        self._chunks: deque[tuple[int, bytes]] = deque()
        self._bytes = 0
        self._last_arrival_ns = 0
        self._closed = False
        self._changed = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def put(self, arrival_ns: int, data: bytes) -> int:
        """Queue ``data`` to arrive at ``arrival_ns`` (or after the previous chunk); return its arrival."""
        if self._closed:
            return arrival_ns  # the receiver is gone; the producer notices and stops
        arrival_ns = max(arrival_ns, self._last_arrival_ns)
        self._last_arrival_ns = arrival_ns
        self._chunks.append((arrival_ns, data))
        self._bytes += len(data)
        if self._bytes >= self._max_bytes:
            self._room.clear()
        self._changed.set()
        return arrival_ns

    def close(self) -> None:
        """No more data: :meth:`get` returns ``None`` once the queued chunks are out."""
        self._closed = True
        self._changed.set()

    def discard(self) -> None:
        """Drop whatever is queued and stop accepting (the receiver went away)."""
        self._chunks.clear()
        self._bytes = 0
        self._closed = True
        self._room.set()
        self._changed.set()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    async def get(self, timer: Timer | None = None) -> bytes | None:
        """Wait for the head chunk's arrival; return it joined with every chunk due by then."""
        while not self._chunks:
            if self._closed:
                return None
            self._changed.clear()
            await self._changed.wait()
        if timer is None:
            await sleep_until_ns(self._chunks[0][0])
        else:
            await timer.sleep_until(self._chunks[0][0])
        now_ns = max(time.monotonic_ns(), self._chunks[0][0])
        parts: list[bytes] = []
        while self._chunks and self._chunks[0][0] <= now_ns:
            parts.append(self._chunks.popleft()[1])
        data = b"".join(parts)
        self._bytes -= len(data)
        if self._bytes < self._max_bytes:
            self._room.set()
        return data


class Timer:
    """Sleeps until a ``time.monotonic_ns()`` deadline, learning how late the event loop wakes.

    A wake-up is late by the loop's own latency (tenths of a millisecond, more on a busy
    machine). The timer keeps a moving average of that lateness and aims that much early, so
    delays are right on average instead of always a little long.
    """

    def __init__(self, max_lead_ns: int = 500_000, weight: float = 0.05) -> None:
        self.lead_ns = 0.0
        self._max_lead_ns = max_lead_ns
        self._weight = weight

    async def sleep_until(self, deadline_ns: int) -> None:
        target_ns = deadline_ns - round(self.lead_ns)
        remaining_ns = target_ns - time.monotonic_ns()
        if remaining_ns <= 0:
            return
        await asyncio.sleep(remaining_ns / NS_PER_S)
        while (now_ns := time.monotonic_ns()) < target_ns:  # asyncio may wake a few µs early
            await asyncio.sleep((target_ns - now_ns) / NS_PER_S)
        late_ns = min(now_ns - target_ns, 4 * self._max_lead_ns)  # one stall must not swing it
        self.lead_ns += self._weight * (late_ns - self.lead_ns)
        self.lead_ns = min(self.lead_ns, self._max_lead_ns)


async def sleep_until_ns(deadline_ns: int) -> None:
    """Sleep until ``time.monotonic_ns()`` reaches ``deadline_ns`` (at once if it has)."""
    while (remaining_ns := deadline_ns - time.monotonic_ns()) > 0:
        await asyncio.sleep(remaining_ns / NS_PER_S)
