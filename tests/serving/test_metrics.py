"""The server's metrics: updates made on the event loop wait for the end of the loop's step."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, NoReturn

import grpc
import pytest

from edgeinfer.serving.codecs import rest as codec
from edgeinfer.serving.dataplane import DataPlane
from edgeinfer.serving.grpc import convert
from edgeinfer.serving.grpc import grpc_predict_v2_pb2 as pb
from edgeinfer.serving.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from edgeinfer.serving.grpc.servicer import GrpcServer
from edgeinfer.serving.metrics import AfterThisStep, ServerMetrics
from edgeinfer.serving.rest.app import RestApp
from edgeinfer.serving.settings import ServeSettings

MODEL = "mobilenet_v2"


def _requests(metrics: ServerMetrics, model: str = "m", protocol: str = "http") -> float:
    value = metrics.registry.get_sample_value(
        "edgeinfer_requests_total", {"model": model, "protocol": protocol}
    )
    return 0.0 if value is None else value


def test_updates_off_the_loop_apply_at_once() -> None:
    done: list[int] = []
    AfterThisStep()(done.append, 1)
    assert done == [1]
    metrics = ServerMetrics()
    metrics.for_model("m").on_request("http")
    assert _requests(metrics) == 1


def test_updates_on_the_loop_apply_after_the_step_in_order() -> None:
    async def main() -> tuple[list[int], list[int]]:
        later = AfterThisStep()
        done: list[int] = []
        for i in range(3):
            later(done.append, i)
        during = list(done)
        await asyncio.sleep(0)
        return during, done

    during, after = asyncio.run(main())
    assert during == [] and after == [0, 1, 2]


def test_the_exposition_includes_updates_still_waiting() -> None:
    async def main() -> tuple[float, bytes]:
        metrics = ServerMetrics()
        model = metrics.for_model("m")
        model.on_request("http")
        model.on_answer("http", 2_000_000, "deadline")
        waiting = _requests(metrics)
        return waiting, metrics.exposition()  # same step: nothing has flushed yet

    waiting, text = asyncio.run(main())
    assert waiting == 0
    assert b'edgeinfer_requests_total{model="m",protocol="http"} 1.0' in text
    assert b'edgeinfer_request_failures_total{kind="deadline",model="m",protocol="http"} 1.0' in text
    assert b'edgeinfer_request_seconds_bucket{le="0.002",model="m",protocol="http"} 1.0' in text


def _failures(metrics: ServerMetrics, protocol: str, kind: str) -> float:
    value = metrics.registry.get_sample_value(
        "edgeinfer_request_failures_total", {"model": MODEL, "protocol": protocol, "kind": kind}
    )
    return 0.0 if value is None else value


async def _post(app: RestApp, path: str, body: bytes) -> int:
    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "http_version": "1.1"}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


def test_an_internal_error_is_counted_once_as_internal_over_http_and_grpc(
    edgeinfer_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(*args: object, **kwargs: object) -> NoReturn:
        raise RuntimeError("a bug")

    # a bug in request decoding: no real request reaches one any more
    monkeypatch.setattr(codec, "decode_infer_request", bug)
    monkeypatch.setattr(convert, "request_from_proto", bug)
    # the Null runtime: the server's own code, no compute
    plane = DataPlane(ServeSettings(runtime="null", threads=1, warmup_runs=1, grpc_port=0))

    async def main() -> tuple[int, grpc.StatusCode]:
        await plane.load()
        server = GrpcServer(plane, plane.settings)
        await server.start()
        try:
            status = await _post(RestApp(plane, plane.settings), f"/v2/models/{MODEL}/infer", b"{}")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.ModelInfer(pb.ModelInferRequest(model_name=MODEL), timeout=10)
        finally:
            await server.stop(0)
            await plane.close()
        return status, caught.value.code()

    assert asyncio.run(main()) == (500, grpc.StatusCode.INTERNAL)
    plane.metrics.later.flush()
    for protocol in ("http", "grpc"):
        assert _requests(plane.metrics, MODEL, protocol) == 1
        assert _failures(plane.metrics, protocol, "internal") == 1


def test_the_warm_up_is_not_counted_as_requests_or_prepared_images() -> None:
    plane = DataPlane(ServeSettings(runtime="null", threads=1, warmup_runs=1, grpc_port=0))

    async def main() -> None:
        await plane.load()  # the warm-up decodes three images and runs the model
        await plane.close()

    asyncio.run(main())
    plane.metrics.later.flush()
    assert plane.metrics.registry.get_sample_value("edgeinfer_prepare_seconds_count", {"model": MODEL}) in (
        None,
        0.0,
    )
    assert _requests(plane.metrics, MODEL, "http") == 0
