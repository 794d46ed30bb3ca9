"""The server sampler against a real (tiny) HTTP endpoint: readings, refusals, a server that goes."""

from __future__ import annotations

import asyncio
import re

import pytest

from edgeinfer.serving.loadgen.scrape import MetricsUnavailable, ServerSampler

METRICS = "process_cpu_seconds_total {cpu}\nprocess_resident_memory_bytes {rss}\n"


class Endpoint:
    """Answers ``GET /metrics`` with growing CPU seconds, or with ``status`` when it is not 200."""

    def __init__(self) -> None:
        self.cpu_s = 1.0
        self.status = "200 OK"
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.cpu_s += 0.5
        body = METRICS.format(cpu=self.cpu_s, rss=100 * 2**20).encode()
        writer.write(f"HTTP/1.1 {self.status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def test_a_server_that_goes_away_keeps_the_figures_read_until_then() -> None:
    async def run() -> None:
        endpoint = Endpoint()
        sampler = ServerSampler("127.0.0.1", await endpoint.start(), interval_s=0.05, timeout_s=1)
        await sampler.begin()
        await asyncio.sleep(0.3)  # a few polls
        await endpoint.stop()
        usage = await sampler.end()
        assert usage is not None and usage.cpu_ms >= 500  # at least one poll after begin counted
        assert usage.rss_end_mb == pytest.approx(100)

    asyncio.run(run())


def test_a_server_gone_before_any_poll_gives_no_figures_and_no_error() -> None:
    async def run() -> None:
        endpoint = Endpoint()
        sampler = ServerSampler("127.0.0.1", await endpoint.start(), interval_s=10, timeout_s=1)
        await sampler.begin()
        await endpoint.stop()
        assert await sampler.end() is None

    asyncio.run(run())


def test_an_answer_other_than_200_names_the_status() -> None:
    async def run() -> None:
        endpoint = Endpoint()
        endpoint.status = "401 Unauthorized"
        sampler = ServerSampler("127.0.0.1", await endpoint.start(), timeout_s=1)
        with pytest.raises(MetricsUnavailable, match=re.escape("it answered 'HTTP/1.1 401 Unauthorized'")):
            await sampler.begin()
        await endpoint.stop()

    asyncio.run(run())
