"""The analytical edge-against-cloud model, and where offloading starts to win.

On the device an image costs ``edge_ms`` (decode + preprocess + infer, measured). Sent to the
cloud it costs one round trip, the upload and download of its bytes at the link's rates, the
remote work divided by the cloud's speed-up over this machine, and a fixed protocol overhead
(HTTP, serialisation; measured over loopback, where the link adds nothing)::

    cloud_ms = rtt_ms + overhead_ms + server_ms / speedup + 8 * up_bytes / up_bps + 8 * down_bytes / down_bps

Offloading wins where ``cloud_ms < edge_ms``. For a round trip and a speed-up, the uplink that
breaks even is ``8 * up_bytes / (edge_ms - rtt_ms - overhead_ms - server_ms / speedup - download)``;
no uplink is fast enough once the round trip alone eats the device's time.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeinfer.network.profiles import LinkProfile


@dataclass(frozen=True)
class CrossoverModel:
    """Measured inputs of the model (ms and bytes per inference)."""

    edge_ms: float
    server_ms: float
    overhead_ms: float
    up_bytes: float
    down_bytes: float

    def cloud_ms(
        self, rtt_ms: float, up_mbps: float | None, down_mbps: float | None = None, speedup: float = 1.0
    ) -> float:
        """Predicted cloud latency; ``None`` rates are unlimited."""
        up = 0.0 if up_mbps is None else self.up_bytes * 8 / (up_mbps * 1e3)
        down = 0.0 if down_mbps is None else self.down_bytes * 8 / (down_mbps * 1e3)
        return rtt_ms + self.overhead_ms + self.server_ms / speedup + up + down

    def for_profile(self, profile: LinkProfile, speedup: float = 1.0) -> float:
        return self.cloud_ms(profile.rtt_ms, profile.up_mbps, profile.down_mbps, speedup)

    def breakeven_up_mbps(
        self, rtt_ms: float, speedup: float = 1.0, down_mbps: float | None = None
    ) -> float | None:
        """The uplink above which offloading wins at this RTT (None: no uplink is enough)."""
        down = 0.0 if down_mbps is None else self.down_bytes * 8 / (down_mbps * 1e3)
        slack_ms = self.edge_ms - rtt_ms - self.overhead_ms - self.server_ms / speedup - down
        if slack_ms <= 0:
            return None
        return self.up_bytes * 8 / (slack_ms * 1e3)

    def max_rtt_ms(self, speedup: float = 1.0) -> float:
        """The round trip beyond which offloading cannot win even on an unlimited link."""
        return self.edge_ms - self.overhead_ms - self.server_ms / speedup

    def winner(self, profile: LinkProfile, speedup: float = 1.0) -> str:
        return "cloud" if self.for_profile(profile, speedup) < self.edge_ms else "edge"
