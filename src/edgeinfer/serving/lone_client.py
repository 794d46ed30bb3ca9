"""Whether the server has a lone client: one keep-alive HTTP connection and nobody else.

Such a client cannot have a second request waiting (HTTP/1.1 without pipelining sends the next
request only after reading the answer), so while the model is idle its request may run on the
event-loop thread itself (``Batcher.run_inline``) instead of hopping to a decode thread and an
inference thread and back. On a small VM each hop wakes an idle core, which costs 0.1-0.2 ms.

Any request from another connection, or over gRPC (HTTP/2 multiplexes), ends the lone spell for
``window_s``; the worst it costs a newcomer is waiting for the one inline request then running.
"""

from __future__ import annotations

import time

DEFAULT_WINDOW_S = 1.0


class LoneClient:
    """Tracks the peers of recent requests; call :meth:`seen` once per request, on the event loop."""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S) -> None:
        self._window_ns = int(window_s * 1e9)
        self._peer: object | None = None
        self._crowded_until_ns = 0

    def seen(self, peer: object | None, now_ns: int | None = None) -> bool:
        """Record a request from ``peer`` (None: unknown or multiplexed); True if it is alone."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        if peer is None or (self._peer is not None and peer != self._peer):
            self._crowded_until_ns = now + self._window_ns
        self._peer = peer
        return peer is not None and now >= self._crowded_until_ns
