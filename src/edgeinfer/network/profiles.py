"""Network path profiles: round-trip time, jitter, up/down bandwidth and loss, with their sources.

The built-in figures come from public measurement reports; docs/NETWORK.md cites each one and says
plainly which figures (the jitter values, zero loss) are our own assumptions. Bandwidths are in
decimal megabits per second (1 Mb/s = 1,000,000 bit/s), as speed tests report them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from edgeinfer.errors import InvalidInput

#: Linux's minimum retransmission timeout (TCP_RTO_MIN, 200 ms).
MIN_RTO_MS = 200.0
#: Bytes of payload in one TCP segment on a 1500-byte Ethernet MTU with timestamps.
MSS_BYTES = 1448


MAX_DELAY_MS = 3_600_000.0  # an hour: beyond any network, short of overflowing a timer
MAX_RATE_MBPS = 1_000_000.0  # 1 Tb/s: beyond any link; leave the rate out for unlimited


@dataclass(frozen=True)
class LinkProfile:
    """One emulated network path between the device and the cloud.

    ``rtt_ms`` is the mean round-trip time of a small packet, split equally between the two
    directions. ``jitter_ms`` is the standard deviation of that round-trip time. ``up_mbps`` and
    ``down_mbps`` are the bottleneck rates (``None``: unlimited). ``loss_pct`` is the chance, in
    per cent, that one TCP segment is lost; each loss costs the retransmission timeout.
    """

    name: str
    rtt_ms: float
    jitter_ms: float = 0.0
    up_mbps: float | None = None
    down_mbps: float | None = None
    loss_pct: float = 0.0
    source: str = "custom figures"

    def __post_init__(self) -> None:
        for label, value in (("rtt_ms", self.rtt_ms), ("jitter_ms", self.jitter_ms)):
            if not math.isfinite(value) or not 0 <= value <= MAX_DELAY_MS:
                raise InvalidInput(f"{label} must be a number in 0..{MAX_DELAY_MS:g} ms, got {value}")
        for label, rate in (("up_mbps", self.up_mbps), ("down_mbps", self.down_mbps)):
            if rate is not None and (not math.isfinite(rate) or not 0 < rate <= MAX_RATE_MBPS):
                raise InvalidInput(
                    f"{label} must be > 0 and at most {MAX_RATE_MBPS:g} Mb/s (leave it out for unlimited), "
                    f"got {rate}"
                )
        if not 0 <= self.loss_pct < 100:
            raise InvalidInput(f"loss_pct must be in [0, 100) per cent, got {self.loss_pct}")

    @property
    def one_way_delay_ms(self) -> float:
        """Mean delay of one direction."""
        return self.rtt_ms / 2

    @property
    def rto_ms(self) -> float:
        """Retransmission timeout as RFC 6298 computes it, floored at Linux's 200 ms."""
        return max(MIN_RTO_MS, self.rtt_ms + 4 * self.jitter_ms)

    @property
    def up_bytes_per_s(self) -> float | None:
        return None if self.up_mbps is None else self.up_mbps * 1e6 / 8

    @property
    def down_bytes_per_s(self) -> float | None:
        return None if self.down_mbps is None else self.down_mbps * 1e6 / 8

    def transfer_ms(self, up_bytes: int, down_bytes: int) -> float:
        """Analytical time of one request/response exchange on an open connection (no loss)."""
        up_s = 0.0 if self.up_bytes_per_s is None else up_bytes / self.up_bytes_per_s
        down_s = 0.0 if self.down_bytes_per_s is None else down_bytes / self.down_bytes_per_s
        return self.rtt_ms + 1e3 * (up_s + down_s)

    def with_overrides(
        self,
        *,
        rtt_ms: float | None = None,
        jitter_ms: float | None = None,
        up_mbps: float | None = None,
        down_mbps: float | None = None,
        loss_pct: float | None = None,
    ) -> LinkProfile:
        """This profile with some figures replaced; the name and source say so."""
        changes = {
            key: value
            for key, value in (
                ("rtt_ms", rtt_ms),
                ("jitter_ms", jitter_ms),
                ("up_mbps", up_mbps),
                ("down_mbps", down_mbps),
                ("loss_pct", loss_pct),
            )
            if value is not None
        }
        if not changes:
            return self
        shown = ", ".join(f"{key}={value:g}" for key, value in changes.items())
        return replace(
            self, name=f"{self.name}+custom", source=f"{self.source}; overridden: {shown}", **changes
        )

    def describe(self) -> str:
        up = "unlimited" if self.up_mbps is None else f"{self.up_mbps:g} Mb/s"
        down = "unlimited" if self.down_mbps is None else f"{self.down_mbps:g} Mb/s"
        return (
            f"{self.name}: rtt {self.rtt_ms:g} ms ± {self.jitter_ms:g} ms, up {up}, down {down}, "
            f"loss {self.loss_pct:g} %"
        )


_OPENSIGNAL_US_2019 = "Opensignal, State of Mobile: USA, May 2019 (Q1 2019 data)"
_OOKLA_5G_2021 = "Ookla, Growing and Slowing: The State of 5G Worldwide in 2021 (Q3 2021 medians)"

PROFILES: dict[str, LinkProfile] = {
    "wifi": LinkProfile(
        name="wifi",
        rtt_ms=21.0,
        jitter_ms=3.0,
        up_mbps=38.32,
        down_mbps=83.95,
        source=(
            "Ookla, The State of Worldwide Connectivity in 2023 (global fixed-broadband medians, Q3 2023: "
            "83.95 Mb/s down, 38.32 Mb/s up); Speedtest Global Index, Sept 2020 (fixed latency 21 ms); "
            "jitter assumed"
        ),
    ),
    "5g": LinkProfile(
        name="5g",
        rtt_ms=32.0,
        jitter_ms=5.0,
        up_mbps=21.08,
        down_mbps=166.13,
        source=(
            f"{_OOKLA_5G_2021}: 166.13 Mb/s down, 21.08 Mb/s up; Ookla Q1 2021 US 5G median latency "
            "32-33 ms (RCR Wireless, 16 Apr 2021); jitter assumed"
        ),
    ),
    "lte": LinkProfile(
        name="lte",
        rtt_ms=55.0,
        jitter_ms=8.0,
        up_mbps=6.3,
        down_mbps=21.3,
        source=(
            f"{_OPENSIGNAL_US_2019}: latency 44.1-66.4 ms across states (midpoint used), 6.3 Mb/s "
            "upload on 4G, 21.3 Mb/s average download; jitter assumed"
        ),
    ),
    "3g": LinkProfile(
        name="3g",
        rtt_ms=300.0,
        jitter_ms=20.0,
        up_mbps=0.768,
        down_mbps=1.6,
        source=(
            "WebPageTest 'Mobile 3G' connectivity preset (1.6 Mb/s down, 768 kb/s up, 300 ms RTT), as "
            "cited by Lighthouse docs/throttling.md and sitespeed.io; jitter assumed"
        ),
    ),
    "loopback": LinkProfile(
        name="loopback",
        rtt_ms=0.0,
        source="no emulated delay or rate limit (the proxy's own overhead only)",
    ),
}


def get_profile(name: str) -> LinkProfile:
    """A built-in profile by name (case-insensitive)."""
    try:
        return PROFILES[name.strip().lower()]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise InvalidInput(f"unknown network profile {name!r}; choose one of: {known}") from None


def parse_profiles(spec: str) -> list[LinkProfile]:
    """A comma-separated list of profile names, e.g. ``"wifi,lte,5g"`` (case-insensitive); a name
    given twice is listed once, where it first appears."""
    names = [part for part in (p.strip() for p in spec.split(",")) if part]
    if not names:
        raise InvalidInput("give at least one network profile, e.g. --profile lte")
    return list(dict.fromkeys(get_profile(name) for name in names))
