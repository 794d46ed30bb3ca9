"""Live estimates the hybrid router decides on: moving averages updated by every response and probe.

- :class:`Ewma`: an exponentially weighted mean and deviation of one quantity.
- :class:`CloudEstimate`: what a cloud request will cost. The link's round trip comes from light
  probes (``GET /v2/health/ready``); every cloud response adds a point ``(bytes, time - RTT)`` to a
  line fitted with exponential forgetting (the router passes the request's own bytes plus those
  in flight ahead of it on the uplink), whose slope is the uplink's time per byte (its
  inverse, the bandwidth) and whose intercept is the fixed cost of a request: remote queue and
  compute, the response's transfer, HTTP. When the sizes seen do not vary enough to tell slope from
  intercept (every request the same size) the slope stays at its last good value or the prior.
- :class:`EdgeEstimate`: the device's service time per image and its queue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Weight of the newest observation in every moving average (about the last 10 count).
DEFAULT_ALPHA = 0.1
#: Sizes must vary by this coefficient of variation before the fit trusts its own slope.
MIN_SIZE_SPREAD = 0.08


class Ewma:
    """Exponentially weighted moving mean and standard deviation."""

    def __init__(self, alpha: float = DEFAULT_ALPHA, initial: float | None = None) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.mean: float | None = initial
        self._var = 0.0
        self.count = 0

    def update(self, value: float) -> float:
        if self.mean is None or self.count == 0:
            self.mean = value
        else:
            diff = value - self.mean
            self.mean += self.alpha * diff
            self._var = (1 - self.alpha) * (self._var + self.alpha * diff * diff)
        self.count += 1
        return self.mean

    @property
    def stddev(self) -> float:
        return math.sqrt(self._var)


class DecayingLineFit:
    """Weighted least squares of ``y = a + b x`` where each new point discounts the old ones."""

    def __init__(self, alpha: float = DEFAULT_ALPHA) -> None:
        self._keep = 1 - alpha
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        self.count = 0

    def add(self, x: float, y: float) -> None:
        k = self._keep
        self._w = k * self._w + 1
        self._x = k * self._x + x
        self._y = k * self._y + y
        self._xx = k * self._xx + x * x
        self._xy = k * self._xy + x * y
        self.count += 1

    @property
    def mean_x(self) -> float:
        return self._x / self._w if self._w else 0.0

    @property
    def mean_y(self) -> float:
        return self._y / self._w if self._w else 0.0

    def slope(self) -> float | None:
        """The fitted slope, or ``None`` while the x values are too alike to tell."""
        if self.count < 3 or self._w == 0:
            return None
        mean_x = self.mean_x
        var_x = self._xx / self._w - mean_x * mean_x
        if mean_x <= 0 or var_x <= (MIN_SIZE_SPREAD * mean_x) ** 2:
            return None
        return (self._xy / self._w - mean_x * self.mean_y) / var_x


@dataclass(frozen=True)
class CloudSnapshot:
    """The cloud estimate at one moment (for decision logs and reports)."""

    rtt_ms: float | None
    up_mbps: float | None
    fixed_ms: float | None
    responses: int
    probes: int


class CloudEstimate:
    """Round trip, uplink bandwidth and fixed cost of one cloud path, learnt as it is used."""

    def __init__(
        self,
        alpha: float = DEFAULT_ALPHA,
        prior_rtt_ms: float | None = None,
        prior_up_mbps: float | None = None,
    ) -> None:
        self.rtt = Ewma(alpha, prior_rtt_ms)
        self._fit = DecayingLineFit(alpha)
        self._ms_per_byte: float | None = None if prior_up_mbps is None else 8e-3 / prior_up_mbps
        self._fitted = prior_up_mbps is not None  # a prior is kept until a line is fitted
        self.probes = 0

    def on_probe(self, rtt_ms: float) -> None:
        self.rtt.update(rtt_ms)
        self.probes += 1

    def on_response(self, bytes_sent: int, total_ms: float) -> None:
        rtt = self.rtt.mean or 0.0
        beyond_rtt = max(0.0, total_ms - rtt)
        self._fit.add(float(bytes_sent), beyond_rtt)
        slope = self._fit.slope()
        if slope is not None and slope > 0:
            self._fitted = True
            self._ms_per_byte = slope
        elif not self._fitted and bytes_sent > 0:
            # Until sizes vary enough to fit a line, charge everything beyond the RTT to the upload:
            # an upper bound on the cost per byte, so a link that is slower than hoped (and the queue
            # of bytes already in flight on it) is seen at once rather than after a line is fitted.
            self._ms_per_byte = max(self._ms_per_byte or 0.0, beyond_rtt / bytes_sent)

    @property
    def responses(self) -> int:
        return self._fit.count

    @property
    def ms_per_byte(self) -> float | None:
        """Upload time per byte (the inverse of the uplink bandwidth), once known."""
        return self._ms_per_byte

    @property
    def up_mbps(self) -> float | None:
        return None if not self._ms_per_byte else 8e-3 / self._ms_per_byte

    @property
    def fixed_ms(self) -> float | None:
        """Cost of a request beyond the RTT and the upload of its bytes (for reports; >= 0)."""
        if self._fit.count == 0:
            return None
        per_byte = self._ms_per_byte or 0.0
        return max(0.0, self._fit.mean_y - per_byte * self._fit.mean_x)

    def predict_ms(self, bytes_sent: int) -> float | None:
        """Expected time of a request of ``bytes_sent`` (None until a response has been seen).

        The line goes through the mean of what was seen, so a request of the usual size is
        predicted as it has been measured even when the slope is only a prior.
        """
        if self._fit.count == 0:
            return None
        per_byte = self._ms_per_byte or 0.0
        beyond_rtt = self._fit.mean_y + per_byte * (bytes_sent - self._fit.mean_x)
        return (self.rtt.mean or 0.0) + max(0.0, beyond_rtt)

    def snapshot(self) -> CloudSnapshot:
        return CloudSnapshot(self.rtt.mean, self.up_mbps, self.fixed_ms, self.responses, self.probes)


class EdgeEstimate:
    """The device's service time per image (decode + preprocess + infer), and its backlog."""

    def __init__(self, alpha: float = DEFAULT_ALPHA, prior_service_ms: float | None = None) -> None:
        self.service = Ewma(alpha, prior_service_ms)
        self.outstanding = 0  # admitted to the device and not finished (queued + running)

    def on_done(self, service_ms: float) -> None:
        self.service.update(service_ms)

    def predict_ms(self) -> float | None:
        """Expected latency of a request admitted now: the backlog ahead of it, then its own work."""
        if self.service.mean is None:
            return None
        return (self.outstanding + 1) * self.service.mean
