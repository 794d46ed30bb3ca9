"""The load generator's HTTP client against tiny real servers that close connections on it."""

from __future__ import annotations

import asyncio

import pytest

from edgeinfer.serving.loadgen.clients import HttpClient, RequestFailed, Target
from edgeinfer.serving.loadgen.workload import Sample

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def _serve(answers_per_connection: int) -> tuple[asyncio.Server, list[int]]:
    """Answer ``answers_per_connection`` requests on each connection, then close it (as a server
    does with an idle keep-alive connection); 0 closes at once. Returns the requests seen per
    connection."""
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(0)
        for _ in range(answers_per_connection):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))  # fmt: skip
            await reader.readexactly(length)
            seen[-1] += 1
            writer.write(ANSWER)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, seen


def _client(server: asyncio.Server) -> HttpClient:
    port = server.sockets[0].getsockname()[1]
    return HttpClient(Target("http", "127.0.0.1", port, "m", endpoint="classify"))


def test_a_keep_alive_connection_the_server_closed_is_replaced_and_the_request_sent_again() -> None:
    async def main() -> list[int]:
        server, seen = await _serve(answers_per_connection=1)
        client = _client(server)
        for _ in range(3):  # each request after the first finds its connection closed
            await client.send(Sample("a.jpg", b"\xff\xd8jpeg"))
        await client.close()
        server.close()
        return seen

    assert asyncio.run(main()) == [1, 1, 1]


def test_a_fresh_connection_that_closes_without_answering_is_an_error_not_retried() -> None:
    async def main() -> list[int]:
        server, seen = await _serve(answers_per_connection=0)
        client = _client(server)
        with pytest.raises(RequestFailed) as failed:
            await client.send(Sample("a.jpg", b"\xff\xd8jpeg"))
        assert failed.value.kind == "connection"
        await client.close()
        server.close()
        return seen

    assert asyncio.run(main()) == [0]  # one connection, one try
