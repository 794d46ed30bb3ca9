"""The server's own view of a load run, read from its ``/metrics``: CPU, RSS over time, batch sizes,
and its end-to-end time histogram (arrival in the server to answer), to set against the client's."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from edgeinfer.serving.settings import host_port

_WATCHED = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "edgeinfer_batch_size_sum",
    "edgeinfer_batch_size_count",
    "edgeinfer_rejected_total",
    "edgeinfer_deadline_missed_total",
    "edgeinfer_cpu_cores",
)
_E2E_BUCKET = "edgeinfer_request_seconds_bucket"
_E2E_COUNT = "edgeinfer_request_seconds_count"


def parse_metrics(text: str, model: str | None = None) -> dict[str, float]:
    """Sum every series of the watched families from Prometheus text format: every model's, or
    ``model``'s only (the process's own series, which name no model, either way).

    The end-to-end histogram's cumulative buckets are kept per bound, as ``"<bucket name>|<le>"``.
    """
    totals: dict[str, float] = {}
    mine = f'model="{model}"'
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        labels = line.split("}", 1)[0] if "{" in line else ""
        if model is not None and 'model="' in labels and mine not in labels:
            continue  # another model's: a run loading one model must not count another's
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
    cpu_cores: int | None = None  # the server's (None: its metrics do not say)
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


class MetricsUnavailable(ConnectionError):
    """The metrics endpoint could not be read (refused, closed, not HTTP, not 200, too slow)."""


class ServerSampler:
    """Polls ``/metrics`` every ``interval_s`` between :meth:`begin` and :meth:`end`.

    :meth:`begin` raises :class:`MetricsUnavailable` when the endpoint cannot be read; after that a
    failed poll is skipped, and :meth:`end` falls back on the last good reading (None: there was
    none since :meth:`begin`), so a run's own figures are never lost to its metrics.
    """

    def __init__(
        self,
        host: str,
        port: int,
        api_key: str | None = None,
        *,
        interval_s: float = 0.5,
        timeout_s: float = 5.0,
        model: str | None = None,
    ) -> None:
        self.host, self.port, self.interval_s, self.timeout_s = host, port, interval_s, timeout_s
        self.model = model  # the model loaded: other models' series are left out
        auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        self._request = f"GET /metrics HTTP/1.1\r\nHost: {host_port(host, port)}\r\n{auth}\r\n".encode()
        self._task: asyncio.Task[None] | None = None
        self._first: dict[str, float] = {}
        self._last: tuple[dict[str, float], int] = ({}, 0)  # the last good reading, and when
        self._start_ns = 0
        self._timeline: list[tuple[float, float]] = []

    async def fetch(self) -> dict[str, float]:
        """One reading of ``/metrics``; :class:`MetricsUnavailable` says why there is none."""
        try:
            return await asyncio.wait_for(self._fetch(), self.timeout_s)
        except MetricsUnavailable:
            raise
        except TimeoutError as exc:  # before OSError: it is one
            raise self._unavailable(f"no answer within {self.timeout_s:g} s") from exc
        except EOFError as exc:  # asyncio.IncompleteReadError
            raise self._unavailable("the connection closed before an HTTP answer (a gRPC port?)") from exc
        except (OSError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
            raise self._unavailable(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__) from exc

    async def _fetch(self) -> dict[str, float]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(self._request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
                raise self._unavailable(f"it answered {status_line!r}")
            lengths = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
            if not lengths:
                raise ValueError("the answer has no Content-Length")
            body = await reader.readexactly(int(lengths[0].split(b":")[1]))
        finally:
            writer.close()
        return parse_metrics(body.decode(errors="replace"), self.model)

    def _unavailable(self, why: str) -> MetricsUnavailable:
        return MetricsUnavailable(
            f"cannot read the server's figures from http://{host_port(self.host, self.port)}/metrics: {why}"
        )

    async def begin(self) -> None:
        self._first = await self.fetch()
        self._start_ns = time.perf_counter_ns()
        self._last = (self._first, self._start_ns)
        self._timeline = [(0.0, self._first.get("process_resident_memory_bytes", 0.0) / 2**20)]
        self._task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            with contextlib.suppress(MetricsUnavailable):
                values = await self.fetch()
                self._last = (values, time.perf_counter_ns())
                elapsed = (time.perf_counter_ns() - self._start_ns) / 1e9
                self._timeline.append((elapsed, values.get("process_resident_memory_bytes", 0.0) / 2**20))

    async def end(self) -> ServerUsage | None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            last, last_ns = await self.fetch(), time.perf_counter_ns()
        except MetricsUnavailable:  # the server went away at the end: its figures up to then
            last, last_ns = self._last
            if last_ns == self._start_ns:
                return None
        duration = (last_ns - self._start_ns) / 1e9
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
            cpu_cores=int(last["edgeinfer_cpu_cores"]) if last.get("edgeinfer_cpu_cores") else None,
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
