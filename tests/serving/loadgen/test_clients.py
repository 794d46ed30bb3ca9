"""The load generator's clients against tiny real servers that close connections on it, or none,
and against a real edgeinfer server."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from edgeinfer.errors import InvalidInput
from edgeinfer.models.repository import ModelRepository
from edgeinfer.serving.loadgen.clients import (
    GrpcClient,
    HttpClient,
    RequestFailed,
    Target,
    Transport,
    make_client,
)
from edgeinfer.serving.loadgen.runner import open_loop
from edgeinfer.serving.loadgen.workload import Sample
from tests.serving.conftest import start_server

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


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:99999", "grpc://127.0.0.1:0", "http://127.0.0.1:port", "http://[::1", "grpc://[::1"],
)
def test_a_target_port_out_of_range_is_refused_with_a_clear_error(url: str) -> None:
    with pytest.raises(InvalidInput, match=r"port 1-65535"):
        Target.parse(url, "m")


def test_grpc_with_no_server_there_is_a_connection_failure_as_over_http() -> None:
    async def main() -> str:
        client = GrpcClient(Target("grpc", "127.0.0.1", _closed_port(), "m"))
        try:
            with pytest.raises(RequestFailed) as failed:
                await client.send(Sample("a.jpg", b"\xff\xd8jpeg"))
        finally:
            await client.close()
        return failed.value.kind

    assert asyncio.run(main()) == "connection"


def test_an_open_loop_to_grpc_with_no_server_there_stops_before_any_arrival() -> None:
    target = Target("grpc", "127.0.0.1", _closed_port(), "m")

    async def main() -> None:
        shared = GrpcClient(target)
        try:
            await open_loop(lambda: shared, [Sample("a.jpg", b"\xff\xd8jpeg")], 50, duration_s=5, warmup_s=0)
        finally:
            await shared.close()

    with pytest.raises(ConnectionError, match=r"warm-up request failed \(connection\)"):
        asyncio.run(main())


class InstantClient:
    """A client answered at once: only the load generator's own loop is measured."""

    async def send(self, sample: Sample) -> None:
        return None

    async def abandon(self) -> None:
        return None

    async def close(self) -> None:
        return None


def test_an_open_loop_at_a_rate_its_machine_cannot_issue_still_ends() -> None:
    samples = [Sample("a.jpg", b"x")]
    started = time.monotonic()
    result = asyncio.run(open_loop(InstantClient, samples, 1e12, duration_s=0.05, warmup_s=0))
    assert time.monotonic() - started < 10
    assert result.issued > 0 and result.completed == result.issued


def test_two_files_with_one_name_are_two_requests() -> None:
    client = HttpClient(Target("http", "127.0.0.1", 9, "m", endpoint="classify"))
    first, second = Sample("x.jpg", b"\xff\xd8first"), Sample("x.jpg", b"\xff\xd8second")
    assert client._request(first).endswith(b"first") and client._request(second).endswith(b"second")


class SlowClient(InstantClient):
    async def send(self, sample: Sample) -> None:
        await asyncio.sleep(0.2)


def test_arrivals_the_client_could_not_send_are_errors_without_a_latency() -> None:
    samples = [Sample("a.jpg", b"x")]
    result = asyncio.run(
        open_loop(SlowClient, samples, 200, duration_s=0.3, warmup_s=0, poisson=False, max_outstanding=5)
    )
    assert result.unsent > 0 and result.errors["client_overflow"] == result.unsent
    assert result.issued == result.completed + result.unsent
    assert result.completed > 0 and result.all_latency.summary().min_ms >= 150  # no made-up zeros


def test_a_grpc_request_that_times_out_leaves_the_shared_channel_open() -> None:
    import grpc

    from edgeinfer.serving.grpc import grpc_predict_v2_pb2 as pb
    from edgeinfer.serving.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
    from edgeinfer.serving.loadgen.runner import closed_loop

    class FirstCallHangs(pb_grpc.GRPCInferenceServiceServicer):
        calls = 0

        async def ModelInfer(self, request: object, context: object) -> pb.ModelInferResponse:
            FirstCallHangs.calls += 1
            if FirstCallHangs.calls == 3:  # the first measured request (one warm-up call per client)
                await asyncio.sleep(3)
            return pb.ModelInferResponse(model_name="m")

    async def main() -> object:
        server = grpc.aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(FirstCallHangs(), server)  # type: ignore[no-untyped-call]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        shared = GrpcClient(Target("grpc", "127.0.0.1", port, "m"))
        try:
            return await closed_loop(
                lambda: shared, [Sample("a.jpg", b"\xff\xd8jpeg")], 2, duration_s=1.0, warmup_s=0,
                request_timeout_s=0.3,
            )  # fmt: skip
        finally:
            await shared.close()
            await server.stop(0)

    result = asyncio.run(main())
    assert result.errors["client_timeout"] == 1  # type: ignore[attr-defined]
    assert result.ok > 2  # type: ignore[attr-defined]  # the other requests went on over the same channel


def _closed_port() -> int:
    """A local port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_tensors_are_preprocessed_as_the_model_wants() -> None:
    """EfficientNet-Lite0 takes (x - 127) / 128, not ImageNet's mean and std."""
    from edgeinfer.models.zoo import ZOO
    from edgeinfer.serving.loadgen.workload import as_tensors, photo_samples, preprocessing_for

    assert preprocessing_for("efficientnet_lite0") == ZOO["efficientnet_lite0"].preprocessing
    assert preprocessing_for("mobilenet_v2") == ZOO["mobilenet_v2"].preprocessing
    photo = photo_samples(1)
    lite, mobile = (
        as_tensors(photo, "efficientnet_lite0")[0].tensor,
        as_tensors(photo, "mobilenet_v2")[0].tensor,
    )
    assert lite is not None and mobile is not None and lite.shape == mobile.shape == (3, 224, 224)
    assert float(lite.min()) >= -1.0 and float(lite.max()) <= 1.0 < float(mobile.max())


def test_a_message_over_the_servers_size_limit_is_too_large_over_both_transports(
    repo: ModelRepository, tmp_path: Path
) -> None:
    repo.get("mobilenet_v2", "fp32")  # the server's own process loads it (no engine held here)
    server = start_server(tmp_path, "--max-request-bytes", str(1 << 20), "--threads", "1")
    big = Sample("big.jpg", b"\xff\xd8\xff" + bytes(2 << 20))  # over the 1 MiB limit

    async def kind(transport: Transport, port: int) -> str:
        client = make_client(Target(transport, "127.0.0.1", port, "mobilenet_v2"))
        try:
            await client.send(big)
        except RequestFailed as failed:
            return failed.kind
        finally:
            await client.close()
        return "answered"

    try:
        assert asyncio.run(kind("http", server.http_port)) == "too_large"
        assert asyncio.run(kind("grpc", server.grpc_port)) == "too_large"  # gRPC's own RESOURCE_EXHAUSTED
    finally:
        server.stop()
