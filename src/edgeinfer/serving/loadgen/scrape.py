"""The server's own view of a load run, read from its ``/metrics``: CPU, RSS over time, batch sizes,
and its end-to-end time histogram (arrival in the server to answer), to set against the client's."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

_WATCHED = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "edgeinfer_batch_size_sum",
    "edgeinfer_batch_size_count",
    "edgeinfer_rejected_total",
    "edgeinfer_deadline_missed_total",
)
_E2E_BUCKET = "edgeinfer_request_seconds_bucket"
_E2E_COUNT = "edgeinfer_request_seconds_count"


def parse_metrics(text: str) -> dict[str, float]:
    """Sum every series of the watched families (all models) from Prometheus text format.

    The end-to-end histogram's cumulative buckets are kept per bound, as ``"<bucket name>|<le>"``.
    """
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name == _E2E_BUCKET and 'le="' in line:
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            name = f"{name}|{bound}"
        elif name not in _WATCHED and name != _E2E_COUNT:
            continue
        try:
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        except ValueError:
            continue
    return totals


@dataclass(frozen=True)
class ServerUsage:
    """Server process figures over a measured window (from its metrics endpoint)."""

    duration_s: float
    cpu_ms: float
    cpu_percent_mean: float
    rss_start_mb: float
    rss_end_mb: float
    rss_peak_mb: float
    mean_batch_size: float | None
    refused_at_admission: int = 0
    deadline_missed_after_admission: int = 0
    rss_timeline: tuple[tuple[float, float], ...] = field(default=())
    e2e_buckets: tuple[tuple[float, int], ...] = field(default=())  # (upper bound s, cumulative count)
    e2e_count: int = 0

    def slower_than(self, seconds: float) -> int | None:
        """Requests (answered or failed) that took longer than ``seconds`` in the server, by its own
        clock from arrival to answer; None where no bucket bound equals ``seconds``."""
        for bound, count in self.e2e_buckets:
            if abs(bound - seconds) < 1e-9:
                return self.e2e_count - count
        return None


class ServerSampler:
    """Polls ``/metrics`` every ``interval_s`` between :meth:`begin` and :meth:`end`."""

    def __init__(self, host: str, port: int, api_key: str | None = None, interval_s: float = 0.5) -> None:
        self.host, self.port, self.interval_s = host, port, interval_s
        auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        self._request = f"GET /metrics HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n".encode()
        self._task: asyncio.Task[None] | None = None
        self._first: dict[str, float] = {}
        self._start_ns = 0
        self._timeline: list[tuple[float, float]] = []

    async def fetch(self) -> dict[str, float]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(self._request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            body = await reader.readexactly(length)
        finally:
            writer.close()
        if not head.startswith(b"HTTP/1.1 200"):
            raise ConnectionError(f"/metrics answered {head.split(b' ')[1].decode()}")
        return parse_metrics(body.decode())

    async def begin(self) -> None:
        self._first = await self.fetch()
        self._start_ns = time.perf_counter_ns()
        self._timeline = [(0.0, self._first.get("process_resident_memory_bytes", 0.0) / 2**20)]
        self._task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            with contextlib.suppress(OSError, ConnectionError, StopIteration):
                values = await self.fetch()
                elapsed = (time.perf_counter_ns() - self._start_ns) / 1e9
                self._timeline.append((elapsed, values.get("process_resident_memory_bytes", 0.0) / 2**20))

    async def end(self) -> ServerUsage:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        last = await self.fetch()
        duration = (time.perf_counter_ns() - self._start_ns) / 1e9
        first = self._first
        cpu_s = last.get("process_cpu_seconds_total", 0.0) - first.get("process_cpu_seconds_total", 0.0)
        rss_end = last.get("process_resident_memory_bytes", 0.0) / 2**20
        self._timeline.append((duration, rss_end))
        batches = last.get("edgeinfer_batch_size_count", 0.0) - first.get("edgeinfer_batch_size_count", 0.0)
        samples = last.get("edgeinfer_batch_size_sum", 0.0) - first.get("edgeinfer_batch_size_sum", 0.0)
        return ServerUsage(
            duration_s=duration,
            cpu_ms=cpu_s * 1000,
            cpu_percent_mean=100 * cpu_s / duration if duration > 0 else 0.0,
            rss_start_mb=self._timeline[0][1],
            rss_end_mb=rss_end,
            rss_peak_mb=max(mb for _, mb in self._timeline),
            mean_batch_size=samples / batches if batches else None,
            refused_at_admission=int(_delta(first, last, "edgeinfer_rejected_total")),
            deadline_missed_after_admission=int(_delta(first, last, "edgeinfer_deadline_missed_total")),
            rss_timeline=tuple(self._timeline),
            e2e_buckets=_bucket_deltas(first, last),
            e2e_count=int(_delta(first, last, _E2E_COUNT)),
        )


def _delta(first: dict[str, float], last: dict[str, float], name: str) -> float:
    return last.get(name, 0.0) - first.get(name, 0.0)


def _bucket_deltas(first: dict[str, float], last: dict[str, float]) -> tuple[tuple[float, int], ...]:
    prefix = f"{_E2E_BUCKET}|"
    bounds = sorted(
        (float(key[len(prefix) :]), key) for key in last if key.startswith(prefix) and "Inf" not in key
    )
    return tuple((bound, int(_delta(first, last, key))) for bound, key in bounds)
