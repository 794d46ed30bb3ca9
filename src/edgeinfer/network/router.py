"""The hybrid router: classify each image on the device or in the cloud, whichever pays.

Policies: ``edge`` (always the device), ``cloud`` (always the remote; its failures reach the caller
as :class:`~edgeinfer.network.client.CloudError`), ``auto`` (per request, from live estimates: the
device's backlog and service time, the link's RTT and bandwidth, the remote's fixed cost, and the
request's deadline), with an optional cap on the uplink bandwidth offloading may use.

Under ``auto`` no request is lost: when the cloud refuses, stalls (the attempt's timeout is sized
from the prediction and the deadline), resets or answers nonsense, the request is run on the device,
the cloud is marked down with exponential backoff, and light probes bring it back when it answers
again. A request the device refuses (its queue is full) goes to the cloud instead when the cloud can
still answer within its deadline; with no device left to take over, that spill waits for the cloud
until the deadline (or ``cloud_timeout_ms``) rather than the shorter stall time-out. Every request
leaves a :class:`Decision` saying where it went and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from edgeinfer.errors import InvalidInput, Overloaded
from edgeinfer.network.backends import Answer, EdgePath, Remote
from edgeinfer.network.client import CloudError
from edgeinfer.network.estimates import CloudEstimate, EdgeEstimate

Policy = Literal["edge", "cloud", "auto"]
POLICIES: tuple[Policy, ...] = ("edge", "cloud", "auto")
#: Why a request went where it did: the policy forced it, the cloud was down, the bandwidth cap,
#: a side with no estimate yet was tried, only one side meets the deadline, a stale cloud estimate
#: was refreshed, or one side was predicted faster.
#: ``edge_full``: under ``auto`` the device refused the request (its queue was full) and the cloud,
#: up and predicted to meet the deadline, took it instead of the client getting a refusal.
REASON_CODES = ("policy", "cloud_down", "bandwidth_cap", "exploring", "estimating", "deadline", "refresh",
                "faster", "edge_full")  # fmt: skip
MAX_BACKOFF_S = 30.0
log = logging.getLogger("edgeinfer.network")


@dataclass(frozen=True)
class RouterSettings:
    """How the router decides. Times in ms unless named otherwise."""

    policy: Policy = "auto"
    bandwidth_cap_mbps: float | None = None
    cloud_timeout_ms: float = 5000.0
    probe_interval_s: float = 1.0
    probe_timeout_ms: float = 1000.0
    first_backoff_s: float = 0.5
    refresh_after_s: float = 5.0
    #: Under ``cloud``, give up on the remote at the request's deadline (a server does: its client
    #: has stopped waiting); off, a late answer still counts (a comparison measures how late).
    cloud_within_deadline: bool = False

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise InvalidInput(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.bandwidth_cap_mbps is not None and self.bandwidth_cap_mbps <= 0:
            raise InvalidInput(f"bandwidth_cap_mbps must be > 0 (or unset), got {self.bandwidth_cap_mbps}")
        for name in ("cloud_timeout_ms", "probe_interval_s", "probe_timeout_ms", "first_backoff_s"):
            if not getattr(self, name) > 0:
                raise InvalidInput(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class Decision:
    """Where one request went and why; ``served_by`` differs from ``route`` after a fallback.

    ``reason`` is the sentence with the figures; ``reason_code`` its short, fixed name (one of
    :data:`REASON_CODES`, for metrics and response headers).
    """

    id: int
    t_ms: float
    policy: str
    route: str
    served_by: str
    reason: str
    predicted_edge_ms: float | None
    predicted_cloud_ms: float | None
    deadline_ms: float | None
    latency_ms: float
    met_deadline: bool | None
    fallback: str | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    reason_code: str = ""


@dataclass(frozen=True)
class Routed:
    """A classified image: probabilities, the decision, and the stages of the path that served it."""

    probabilities: np.ndarray
    decision: Decision
    stages_ns: dict[str, int]


@dataclass(frozen=True)
class _Plan:
    start_ns: int
    route: str
    code: str
    reason: str
    edge_ms: float | None
    cloud_ms: float | None
    deadline_ms: float | None


@dataclass
class RouterStats:
    requests: int = 0
    served: Counter[str] = field(default_factory=Counter)
    fallbacks: int = 0
    spills: int = 0
    cloud_failures: Counter[str] = field(default_factory=Counter)
    probe_failures: int = 0
    recoveries: int = 0
    deadline_misses: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "served": dict(self.served),
            "fallbacks": self.fallbacks,
            "spills": self.spills,
            "cloud_failures": dict(self.cloud_failures),
            "probe_failures": self.probe_failures,
            "recoveries": self.recoveries,
            "deadline_misses": self.deadline_misses,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
        }


class HybridRouter:
    """Routes requests between an :class:`EdgeBackend` and a :class:`Remote`; use inside one loop."""

    def __init__(
        self,
        settings: RouterSettings,
        edge: EdgePath | None,
        cloud: Remote | None,
        *,
        cloud_estimate: CloudEstimate | None = None,
        log_path: Path | None = None,
        keep_decisions: int = 100_000,
    ) -> None:
        if settings.policy != "cloud" and edge is None:
            raise InvalidInput(f"policy {settings.policy!r} needs the device's engine")
        if settings.policy != "edge" and cloud is None:
            raise InvalidInput(f"policy {settings.policy!r} needs a cloud URL")
        self.settings = settings
        self.edge = edge
        self.cloud = cloud
        self.edge_estimate = EdgeEstimate()
        self.cloud_estimate = cloud_estimate or CloudEstimate()
        self.stats = RouterStats()
        self.decisions: deque[Decision] = deque(maxlen=keep_decisions)
        self._ids = itertools.count(1)
        self._t0_ns = time.perf_counter_ns()
        self._down_until_ns: int | None = None
        self._down_reason = ""
        self._backoff_s = settings.first_backoff_s
        self._last_cloud_ns = 0
        self._cloud_in_flight = 0
        self._last_success_ns = 0
        self._cloud_bytes_in_flight = 0
        self._sent_window: deque[tuple[int, int]] = deque()
        self._probe_task: asyncio.Task[None] | None = None
        self._log = log_path.open("a", encoding="utf-8") if log_path is not None else None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the light probes (RTT, and recovery when the cloud is down)."""
        if self.cloud is not None and self._probe_task is None:
            await self._probe_once()
            self._probe_task = asyncio.create_task(self._probe_loop(), name="cloud-probes")

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        if self.cloud is not None:
            await self.cloud.close()
        if self.edge is not None:
            self.edge.close()
        if self._log is not None:
            self._log.close()

    @property
    def cloud_up(self) -> bool:
        return self._down_until_ns is None

    # -- requests -------------------------------------------------------------------------------

    async def classify(self, image: bytes, *, deadline_ms: float | None = None) -> Routed:
        """Classify one encoded image; the latency counts from this call (the image in hand)."""
        start_ns = time.perf_counter_ns()
        self.stats.requests += 1
        upload = self.cloud.upload_bytes(image) if self.cloud is not None else 0
        plan = self._plan(upload, deadline_ms, start_ns)
        if plan.route == "edge":
            try:
                answer = await self._run_edge(image, plan)
            except Overloaded:
                spill = self._spill_plan(plan, upload)
                if spill is None:
                    raise
                return await self._spill(image, upload, spill)
            return self._finish(plan, "edge", answer)
        try:
            return self._finish(plan, "cloud", await self._run_cloud(image, upload, plan))
        except CloudError as exc:
            if self.settings.policy == "cloud":
                self._finish(plan, "cloud-failed", None, exc.reason)
                raise
            self.stats.fallbacks += 1
            return self._finish(plan, "edge", await self._run_edge(image, plan), exc.reason)

    def _spill_plan(self, plan: _Plan, upload: int) -> _Plan | None:
        """Under ``auto``, a request the device refused goes to a cloud that can still answer in time."""
        if self.settings.policy != "auto" or self.cloud is None or not self.cloud_up:
            return None
        now_ns = time.perf_counter_ns()
        if self._over_cap(upload, now_ns):
            return None
        cloud_ms = self.cloud_estimate.predict_ms(upload + self._cloud_bytes_in_flight)
        left_ms = None if plan.deadline_ms is None else plan.deadline_ms - (now_ns - plan.start_ns) / 1e6
        if left_ms is not None and cloud_ms is not None and cloud_ms > left_ms:
            return None  # with no estimate yet it is tried: the deadline bounds the wait
        shown = "unknown" if cloud_ms is None else f"{cloud_ms:.1f} ms"
        reason = f"the device refused it (queue full); the cloud ({shown}) took it"
        return replace(plan, route="cloud", code="edge_full", reason=reason, edge_ms=None, cloud_ms=cloud_ms)

    async def _spill(self, image: bytes, upload: int, plan: _Plan) -> Routed:
        self.stats.spills += 1
        try:
            return self._finish(plan, "cloud", await self._run_cloud(image, upload, plan))
        except CloudError as exc:
            raise Overloaded(
                f"the device's queue is full and the cloud failed too ({exc.reason}); retry later",
                retry_after_s=1.0,
            ) from exc

    def _plan(self, upload: int, deadline_ms: float | None, now_ns: int) -> _Plan:
        edge_ms = self._predict_edge_ms()
        cloud_ms = None
        if self.cloud is not None:  # the uplink is one queue: what is in flight goes first
            cloud_ms = self.cloud_estimate.predict_ms(upload + self._cloud_bytes_in_flight)
        policy = self.settings.policy
        if policy == "auto":
            route, code, reason = self._auto_route(upload, deadline_ms, now_ns, edge_ms, cloud_ms)
        else:
            route, code, reason = policy, "policy", f"policy {policy}"
        return _Plan(now_ns, route, code, reason, edge_ms, cloud_ms, deadline_ms)

    def _predict_edge_ms(self) -> float | None:
        if self.edge is None:
            return None
        own = self.edge.predict_ms()
        return own if own is not None else self.edge_estimate.predict_ms()

    def _auto_route(
        self,
        upload: int,
        deadline_ms: float | None,
        now_ns: int,
        edge_ms: float | None,
        cloud_ms: float | None,
    ) -> tuple[str, str, str]:
        """The first rule that applies, in order: health, bandwidth cap, exploration, deadline, speed."""
        gated = self._gate(upload, now_ns, edge_ms, cloud_ms)
        if gated is not None:
            return gated
        assert edge_ms is not None and cloud_ms is not None
        figures = (
            f"edge {edge_ms:.1f} ms (backlog {self.edge_estimate.outstanding}) vs cloud {cloud_ms:.1f} ms "
            f"({self._cloud_in_flight} in flight)"
        )
        if deadline_ms is not None and (edge_ms <= deadline_ms) != (cloud_ms <= deadline_ms):
            winner = "edge" if edge_ms <= deadline_ms else "cloud"
            return winner, "deadline", f"only {winner} meets the {deadline_ms:g} ms deadline: {figures}"
        stale = (now_ns - self._last_cloud_ns) / 1e9 > self.settings.refresh_after_s
        idle = self.edge_estimate.outstanding == 0
        if edge_ms <= cloud_ms < 1.5 * edge_ms and stale and idle:
            return "cloud", "refresh", f"refreshing a stale cloud estimate: {figures}"
        winner = "cloud" if cloud_ms < edge_ms else "edge"
        return winner, "faster", f"{winner} predicted faster: {figures}"

    def _gate(
        self, upload: int, now_ns: int, edge_ms: float | None, cloud_ms: float | None
    ) -> tuple[str, str, str] | None:
        """A route forced by health, the bandwidth cap or a missing estimate; None when both compete."""
        if self._down_until_ns is not None:
            return "edge", "cloud_down", f"cloud down ({self._down_reason}); probing for recovery"
        cap = self._over_cap(upload, now_ns)
        if cap:
            return "edge", "bandwidth_cap", cap
        if cloud_ms is None and self._cloud_in_flight == 0:
            return "cloud", "exploring", "exploring: no cloud estimate yet"
        if edge_ms is None and self.edge_estimate.outstanding == 0:
            return "edge", "exploring", "exploring: no edge estimate yet"
        if cloud_ms is None or edge_ms is None:  # the first answer from one side is on its way
            known = "edge" if cloud_ms is None else "cloud"
            return known, "estimating", f"only the {known} has an estimate yet"
        return None

    def _over_cap(self, upload: int, now_ns: int) -> str:
        cap = self.settings.bandwidth_cap_mbps
        if cap is None:
            return ""
        window = self._sent_window
        while window and now_ns - window[0][0] > 1_000_000_000:
            window.popleft()
        used_mbps = (sum(b for _, b in window) + upload) * 8 / 1e6
        return (
            f"bandwidth cap {cap:g} Mb/s: offloading would use {used_mbps:.2f} Mb/s"
            if used_mbps > cap
            else ""
        )

    async def _run_edge(self, image: bytes, plan: _Plan) -> Answer:
        edge = self.edge
        if edge is None:
            raise InvalidInput("no device engine to run on")
        left_ms = None
        if plan.deadline_ms is not None:  # after a fallback, only what the cloud attempt left
            left_ms = plan.deadline_ms - (time.perf_counter_ns() - plan.start_ns) / 1e6
        self.edge_estimate.outstanding += 1
        try:
            answer = await edge.run(image, left_ms)
        finally:
            self.edge_estimate.outstanding -= 1
        self.edge_estimate.on_done(sum(answer.stages_ns.values()) / 1e6)
        return answer

    async def _run_cloud(self, image: bytes, upload: int, plan: _Plan) -> Answer:
        cloud = self.cloud
        assert cloud is not None
        timeout_ms = self.settings.cloud_timeout_ms
        if self.settings.policy == "auto" and plan.code == "edge_full":
            # A spill has no device to take over: cutting a slow answer short would only turn it
            # into the refusal it was spilled to avoid, so only the deadline ends the wait.
            if plan.deadline_ms is not None:
                left_ms = plan.deadline_ms - (time.perf_counter_ns() - plan.start_ns) / 1e6
                timeout_ms = min(timeout_ms, max(left_ms, 1.0))
        elif self.settings.policy == "auto":
            if plan.cloud_ms is not None:  # a stall shows as a wait well past what this should take
                timeout_ms = min(timeout_ms, max(3 * plan.cloud_ms + 100, 250))
            if plan.deadline_ms is not None and plan.edge_ms is not None:  # time for the device to take over
                timeout_ms = min(timeout_ms, max(plan.deadline_ms - plan.edge_ms, 50))
        elif plan.deadline_ms is not None and self.settings.cloud_within_deadline:
            timeout_ms = min(timeout_ms, max(plan.deadline_ms, 1.0))  # a server's answer is void after it
        now = time.perf_counter_ns()
        self._last_cloud_ns = now
        self._sent_window.append((now, upload))
        # The estimate learns each request's time against the bytes it waited behind plus its own:
        # against its own size alone, a small image sent into a busy uplink would look like a fast link.
        ahead = self._cloud_bytes_in_flight
        self._cloud_in_flight += 1
        self._cloud_bytes_in_flight += upload
        try:
            answer = await cloud.run(image, timeout_ms / 1e3)
        except CloudError as exc:
            self.stats.cloud_failures[exc.reason] += 1
            self._on_cloud_failure(exc, upload + ahead, now, timeout_ms)
            raise
        finally:
            self._cloud_in_flight -= 1
            self._cloud_bytes_in_flight -= upload
        self._last_success_ns = time.perf_counter_ns()
        remote_ms = answer.stages_ns.get("remote", 0) / 1e6
        self.cloud_estimate.on_response(answer.bytes_sent + ahead, remote_ms)
        return answer

    def _on_cloud_failure(self, exc: CloudError, queued: int, sent_ns: int, timeout_ms: float) -> None:
        """A late answer while others still come back is congestion: it teaches the estimate (the
        wait is a lower bound of the cost) instead of closing the cloud. A 400 is the request's own
        fault. Anything else, or a time-out with no answer for as long, is a failure: the cloud is
        marked down."""
        if exc.reason == "http_400":  # an image the remote cannot decode: the request's fault
            return
        waited_ms = (time.perf_counter_ns() - sent_ns) / 1e6
        late = exc.reason in ("timeout", "http_504")
        answering = (time.perf_counter_ns() - self._last_success_ns) / 1e6 < max(timeout_ms, waited_ms)
        if late:
            self.cloud_estimate.on_response(queued, waited_ms)
        if not (late and answering):
            self._mark_down(exc.reason, str(exc))

    def _finish(self, plan: _Plan, served: str, answer: Answer | None, fallback: str | None = None) -> Routed:
        latency_ms = (time.perf_counter_ns() - plan.start_ns) / 1e6
        met = None if plan.deadline_ms is None else latency_ms <= plan.deadline_ms
        sent = answer.bytes_sent if answer is not None else 0
        received = answer.bytes_received if answer is not None else 0
        decision = Decision(
            id=next(self._ids),
            t_ms=round((plan.start_ns - self._t0_ns) / 1e6, 3),
            policy=self.settings.policy,
            route=plan.route,
            served_by=served,
            reason=plan.reason,
            reason_code=plan.code,
            predicted_edge_ms=_round(plan.edge_ms),
            predicted_cloud_ms=_round(plan.cloud_ms),
            deadline_ms=plan.deadline_ms,
            latency_ms=round(latency_ms, 3),
            met_deadline=met,
            fallback=fallback,
            bytes_sent=sent,
            bytes_received=received,
        )
        self.stats.served[served] += 1
        self.stats.deadline_misses += int(met is False)
        self.stats.bytes_sent += sent
        self.stats.bytes_received += received
        self.decisions.append(decision)
        if self._log is not None:
            self._log.write(json.dumps(asdict(decision)) + "\n")
        empty = np.zeros(0, dtype=np.float32)
        return Routed(answer.probabilities if answer else empty, decision, answer.stages_ns if answer else {})

    # -- health ---------------------------------------------------------------------------------

    def _mark_down(self, reason: str, detail: str = "") -> None:
        if self._down_until_ns is None:
            self._backoff_s = self.settings.first_backoff_s
            said = f"{reason}: {detail}" if detail else reason
            log.warning("cloud down (%s): requests stay on this device", said)
        self._down_reason = reason
        self._down_until_ns = time.perf_counter_ns() + int(self._backoff_s * 1e9)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.probe_interval_s)
            down_until = self._down_until_ns
            if down_until is not None and time.perf_counter_ns() < down_until:
                continue
            await self._probe_once()

    async def _probe_once(self) -> None:
        assert self.cloud is not None
        try:
            rtt_ms = await self.cloud.probe(self.settings.probe_timeout_ms / 1e3)
        except CloudError as exc:
            self.stats.probe_failures += 1
            if self._down_until_ns is not None:
                self._backoff_s = min(2 * self._backoff_s, MAX_BACKOFF_S)
            self._mark_down(f"probe: {exc.reason}", str(exc))
            return
        self.cloud_estimate.on_probe(rtt_ms)
        if self._down_until_ns is not None:
            self._down_until_ns = None
            self.stats.recoveries += 1
            log.warning("cloud up again (round trip %.1f ms)", rtt_ms)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
