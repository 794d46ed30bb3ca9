"""The KServe v2 client against the real server, and against every way a remote can fail."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from edgeinfer.engine.engine import Engine
from edgeinfer.network.client import CloudError, KServeClient
from edgeinfer.network.processes import LinkProcess, ServerProcess, free_port
from edgeinfer.network.profiles import LinkProfile
from tests.network.servers import ScriptedCloud

pytestmark = pytest.mark.e2e


def test_image_and_tensor_answers_equal_the_engines(
    cloud: ServerProcess, engine: Engine, jpegs: list[bytes]
) -> None:
    async def go() -> tuple[list[np.ndarray], np.ndarray, int, int, float]:
        client = KServeClient(cloud.url)
        try:
            images = [await client.infer_image("mobilenet_v2", j, timeout_s=10) for j in jpegs]
            sample = engine.preprocess(engine.decode(jpegs[0]))[np.newaxis]
            tensor = await client.infer_tensor("mobilenet_v2", "input", sample, timeout_s=10)
            rtt = await client.ready()
            return (
                [r.outputs["probabilities"][0] for r in images],
                tensor.outputs["probabilities"][0],
                images[0].bytes_sent,
                tensor.bytes_sent,
                rtt,
            )
        finally:
            await client.close()

    from_images, from_tensor, jpeg_bytes, tensor_bytes, rtt_ms = asyncio.run(go())
    for jpeg, probabilities in zip(jpegs, from_images, strict=True):
        local = engine.infer(engine.preprocess(engine.decode(jpeg))[np.newaxis])[0]
        np.testing.assert_allclose(probabilities, local, atol=1e-5)
    np.testing.assert_allclose(from_tensor, from_images[0], atol=1e-5)
    assert len(jpegs[0]) < jpeg_bytes < len(jpegs[0]) + 1000  # the JPEG plus a few hundred bytes of protocol
    assert tensor_bytes > 3 * 224 * 224 * 4  # the FP32 tensor
    assert 0 < rtt_ms < 1000


def _fail(url: str, timeout_s: float = 2.0, model: str = "mobilenet_v2") -> tuple[CloudError, float]:
    async def go() -> None:
        client = KServeClient(url)
        try:
            await client.infer_image(model, b"\xff\xd8 not really a jpeg", timeout_s=timeout_s)
        finally:
            await client.close()

    start = time.perf_counter()
    with pytest.raises(CloudError) as caught:
        asyncio.run(go())
    return caught.value, time.perf_counter() - start


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [("garbage", "malformed"), ("bad-json", "malformed"), ("close", "reset"), ("silent", "timeout")],
)
def test_each_failure_is_named(behaviour: str, reason: str) -> None:
    server = ScriptedCloud(behaviour)
    try:
        error, elapsed_s = _fail(f"http://{server.address[0]}:{server.address[1]}", timeout_s=0.5)
    finally:
        server.close()
    assert error.reason == reason, error
    assert elapsed_s < 2.0  # a stall is cut at the timeout, not waited out


def test_refused_and_error_statuses(cloud: ServerProcess) -> None:
    refused, _ = _fail(f"http://127.0.0.1:{free_port()}")
    assert refused.reason == "refused" and "cannot connect" in str(refused)
    unknown, _ = _fail(cloud.url, model="no_such_model")
    assert unknown.reason == "http_404" and "no_such_model" in str(unknown)
    bad_image, _ = _fail(cloud.url)
    assert bad_image.reason == "http_400"


def test_an_http_1_0_server_is_not_kept_alive() -> None:
    """HTTP/1.0 closes after each answer unless it says keep-alive: the client must not send the
    next request down the closed connection (the health check failed every time before)."""
    server = ScriptedCloud("http10")

    async def go() -> list[float]:
        client = KServeClient(f"http://{server.address[0]}:{server.address[1]}")
        try:
            return [await client.ready(timeout_s=2.0) for _ in range(3)]
        finally:
            await client.close()

    try:
        assert len(asyncio.run(go())) == 3
    finally:
        server.close()


def test_bad_urls_are_rejected() -> None:
    from edgeinfer.errors import InvalidInput

    for url in ("ftp://host:1", "http://host", "nonsense", "http://127.0.0.1:99999", "http://[::1"):
        with pytest.raises(InvalidInput, match="must look like http://HOST:PORT"):
            KServeClient(url)
    assert KServeClient("http://[::1]:8000").url == "http://[::1]:8000"


def test_the_probe_measures_the_path_not_the_connection_set_up(cloud: ServerProcess, tmp_path: Path) -> None:
    """Through a 40 ms link a new connection's first exchange takes two round trips (the emulated
    handshake, then the request); the probe reports the path's one."""
    with LinkProcess(
        LinkProfile("probe", rtt_ms=40.0), ("127.0.0.1", cloud.port), tmp_path / "l.log"
    ) as link:
        link.wait_ready()

        async def go() -> float:
            client = KServeClient(link.url)
            try:
                return await client.ready()
            finally:
                await client.close()

        rtt_ms = asyncio.run(go())
    assert 40 <= rtt_ms < 65
