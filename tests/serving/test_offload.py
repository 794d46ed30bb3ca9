"""``edgeinfer serve --offload``: real edge and cloud server processes, the real link, the real clients.

The cloud is a second ``edgeinfer serve`` (HTTP only) on a port of its own, so it can be killed
mid-run and a new one started on the same port.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from edgeinfer.engine.engine import Engine
from edgeinfer.errors import InvalidInput
from edgeinfer.network.processes import LinkProcess
from edgeinfer.network.processes import ServerProcess as CloudProcess
from edgeinfer.network.profiles import LinkProfile
from edgeinfer.serving.loadgen.clients import GrpcClient, HttpClient, RequestFailed, Target, Transport
from edgeinfer.serving.loadgen.workload import Sample
from edgeinfer.serving.settings import ServeSettings
from tests.serving.conftest import RUNTIME, ServerProcess, start_server

MODEL = "mobilenet_v2"
CLASSIFY = f"/v1/models/{MODEL}/classify"
SMALL = ("--max-batch-size", "2", "--threads", "1")  # quick to warm up; one core each


class Cloud:
    """The stand-in cloud: a real server on a fixed port, which a test may kill and bring back."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.process = self._start(None)
        self.port = self.process.port

    def _start(self, port: int | None) -> CloudProcess:
        log = self.tmp / f"cloud-{time.monotonic_ns()}.log"
        return CloudProcess(MODEL, log, runtime=RUNTIME, threads=1, port=port, extra=SMALL[:2])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> float:
        return self.process.metrics().get("edgeinfer_requests_total", 0.0)

    def restart(self) -> None:
        self.process.kill()
        self.process.stop()
        self.process = self._start(self.port)


@pytest.fixture(scope="module")
def cloud(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    running = Cloud(tmp_path_factory.mktemp("cloud"))
    try:
        running.process.wait_ready()
        yield running
    finally:
        running.process.stop()


def infer_image(client: thttp.InferenceServerClient, image: bytes) -> tuple[np.ndarray, dict[str, str]]:
    tensor = thttp.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image], dtype=object), binary_data=True)
    result = client.infer(MODEL, [tensor], outputs=[thttp.InferRequestedOutput("probabilities")])
    return result.as_numpy("probabilities"), result.get_response().get("parameters", {})


def offload_counts(server: ServerProcess) -> Counter[tuple[str, str]]:
    """``edgeinfer_offload_requests_total`` by (path, reason), from the edge server's /metrics."""
    _, _, body = server.request("GET", "/metrics")
    counts: Counter[tuple[str, str]] = Counter()
    for line in body.decode().splitlines():
        if line.startswith("edgeinfer_offload_requests_total{"):
            labels = dict(part.split("=") for part in line[line.index("{") + 1 : line.index("}")].split(","))
            counts[labels["path"].strip('"'), labels["reason"].strip('"')] += int(
                float(line.rsplit(" ", 1)[1])
            )
    return counts


def cloud_up(server: ServerProcess) -> bool:
    _, _, body = server.request("GET", "/metrics")
    return any(
        line.startswith("edgeinfer_offload_cloud_up{") and line.endswith(" 1.0")
        for line in body.decode().splitlines()
    )


@pytest.mark.e2e
def test_cloud_policy_is_served_by_the_cloud_and_reports_its_failures(
    cloud: Cloud, engine: Engine, images: dict[str, bytes], tmp_path: Path
) -> None:
    link = LinkProcess(LinkProfile("fast", rtt_ms=4.0), ("127.0.0.1", cloud.port), tmp_path / "link.log")
    link.wait_ready()
    edge = start_server(tmp_path, *SMALL, "--offload", "cloud", "--cloud-url", link.url)
    try:
        before = cloud.requests()
        image = images["chelsea"]
        expected = engine.infer(engine.preprocess(engine.decode(image))[np.newaxis])
        scores, parameters = infer_image(thttp.InferenceServerClient(edge.http_url), image)
        np.testing.assert_allclose(scores, expected, atol=1e-5)
        assert parameters["served_by"] == "cloud" and parameters["offload_reason"] == "policy"

        status, headers, body = edge.request("POST", CLASSIFY + "?top_k=3", image)
        assert status == 200 and headers["edgeinfer-served-by"] == "cloud"
        assert json.loads(body)["predictions"][0]["index"] == int(np.argmax(expected))

        rpc = tgrpc.InferenceServerClient(edge.grpc_url)
        tensor = tgrpc.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([image], dtype=object))
        answer = rpc.infer(MODEL, [tensor])
        assert answer.get_response().parameters["served_by"].string_param == "cloud"
        np.testing.assert_allclose(answer.as_numpy("probabilities"), expected, atol=1e-5)

        pair = thttp.InferInput("image", [2], "BYTES")
        pair.set_data_from_numpy(np.array([image, images["coffee"]], dtype=object), binary_data=True)
        both = thttp.InferenceServerClient(edge.http_url).infer(MODEL, [pair])
        assert both.get_response()["parameters"]["served_by"] == "cloud,cloud"
        np.testing.assert_allclose(both.as_numpy("probabilities")[0], expected[0], atol=1e-5)

        # A preprocessed tensor stays on the device, even under the cloud policy.
        tensor_in = thttp.InferInput("input", [1, 3, 224, 224], "FP32")
        tensor_in.set_data_from_numpy(engine.preprocess(engine.decode(image))[np.newaxis])
        plain = thttp.InferenceServerClient(edge.http_url).infer(MODEL, [tensor_in])
        assert "parameters" not in plain.get_response()
        assert cloud.requests() - before == 5  # the cloud's own count: one request per image
        assert offload_counts(edge)[("cloud", "policy")] == 5

        # an image the cloud cannot use is named by its place in the batch, as without offloading
        broken = thttp.InferInput("image", [2], "BYTES")
        broken.set_data_from_numpy(np.array([image, b"junk"], dtype=object), binary_data=True)
        with pytest.raises(InferenceServerException, match=r"image 1: the cloud server .* refused"):
            thttp.InferenceServerClient(edge.http_url).infer(MODEL, [broken])

        link.kill()  # the path to the cloud is cut: the client hears 502 (HTTP) / UNAVAILABLE (gRPC)
        status, _, body = edge.request("POST", CLASSIFY, image)
        assert status == 502, body
        error = json.loads(body)
        assert (
            error["kind"] == "upstream" and "refused" in error["error"] and "--offload auto" in error["error"]
        )
        with pytest.raises(InferenceServerException) as caught:
            rpc.infer(MODEL, [tensor])
        assert caught.value.status() == "StatusCode.UNAVAILABLE"
        # loadgen names it alike over both transports (gRPC's UNAVAILABLE also means not ready)
        assert _loadgen_kinds(edge, image) == {"http": "upstream", "grpc": "upstream"}
        assert edge.process.poll() is None
    finally:
        edge.stop()
        link.stop()


def _loadgen_kinds(edge: ServerProcess, image: bytes) -> dict[str, str]:
    """The error kind loadgen's HTTP and gRPC clients record for one image sent to ``edge``."""

    async def kind(transport: Transport, port: int) -> str:
        target = Target(transport, "127.0.0.1", port, MODEL, endpoint="infer")
        client = HttpClient(target) if transport == "http" else GrpcClient(target)
        try:
            await client.send(Sample("chelsea.jpg", image))
        except RequestFailed as failed:
            return failed.kind
        finally:
            await client.close()
        return "answered"

    return {
        "http": asyncio.run(kind("http", edge.http_port)),
        "grpc": asyncio.run(kind("grpc", edge.grpc_port)),
    }


@pytest.mark.e2e
@pytest.mark.slow
def test_auto_loses_nothing_when_the_cloud_dies_and_recovers_when_it_returns(
    cloud: Cloud, engine: Engine, images: dict[str, bytes], tmp_path: Path
) -> None:
    edge = start_server(tmp_path, *SMALL, "--offload", "auto", "--cloud-url", cloud.url)
    names = sorted(images)
    expected = {
        n: int(np.argmax(engine.infer(engine.preprocess(engine.decode(images[n]))[np.newaxis])))
        for n in names
    }
    results: list[tuple[float, int, str, str]] = []  # (sent at, top-1 == expected, served_by, reason)
    stop = threading.Event()

    def client(worker: int) -> None:
        http = thttp.InferenceServerClient(edge.http_url)
        count = 0
        while not stop.is_set():
            name = names[(worker + count) % len(names)]
            sent = time.monotonic()
            scores, parameters = infer_image(http, images[name])
            ok = int(np.argmax(scores)) == expected[name]
            results.append((sent, int(ok), parameters["served_by"], parameters["offload_reason"]))
            count += 1

    try:
        with ThreadPoolExecutor(3) as pool:
            workers = [pool.submit(client, w) for w in range(3)]
            time.sleep(3.0)  # requests flow both ways before the cut
            killed_at = time.monotonic()
            cloud.process.kill()
            time.sleep(3.0)  # and go on flowing while the cloud is gone
            stop.set()
            for worker in workers:
                worker.result()  # any request that failed raised in its worker
        before = [r for r in results if r[0] < killed_at]
        after = [r for r in results if r[0] > killed_at + 1.5]  # the probes have seen it by now
        assert all(ok for _, ok, _, _ in results), "a request got a wrong answer"
        assert any(by == "cloud" for _, _, by, _ in before), Counter(by for _, _, by, _ in before)
        assert after and {by for _, _, by, _ in after} == {"edge"}
        assert {reason for _, _, _, reason in after} <= {"cloud_down", "fallback"}
        counts = offload_counts(edge)
        assert sum(counts.values()) == len(results)  # every request counted, none lost

        cloud.restart()  # a new cloud on the same port
        cloud.process.wait_ready()
        deadline = time.monotonic() + 45  # the probes back off up to a few seconds between tries
        while not cloud_up(edge) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert cloud_up(edge), "the router did not see the cloud come back"
        served: Counter[str] = Counter()

        def one(index: int) -> tuple[np.ndarray, dict[str, str]]:
            return infer_image(thttp.InferenceServerClient(edge.http_url), images[names[index % len(names)]])

        with ThreadPoolExecutor(4) as pool:  # a burst: the device's backlog makes the cloud pay
            for _ in range(4):
                answers = list(pool.map(one, range(8)))
                served.update(p["served_by"] for _, p in answers)
                if served["cloud"]:
                    break
        assert served["cloud"] >= 1, served
        assert edge.process.poll() is None
    finally:
        stop.set()
        edge.stop()


@pytest.mark.e2e
def test_auto_sends_what_a_full_queue_refuses_to_the_cloud_instead_of_429(
    cloud: Cloud, images: dict[str, bytes], tmp_path: Path
) -> None:
    """A queue of 2 under a burst of 16: the device refuses most, the cloud (40 ms away, so never
    the router's first choice) takes them, and (almost) no client sees a 429."""
    link = LinkProcess(LinkProfile("far", rtt_ms=40.0), ("127.0.0.1", cloud.port), tmp_path / "link.log")
    link.wait_ready()
    edge = start_server(
        tmp_path, *SMALL, "--max-queue-size", "2", "--offload", "auto", "--cloud-url", link.url
    )
    try:
        names = sorted(images)

        refusals: Counter[str] = Counter()

        def one(index: int) -> tuple[int, dict[str, str]]:
            status, headers, body = edge.request("POST", CLASSIFY, images[names[index % len(names)]])
            if status != 200:
                refusals[body.decode(errors="replace")[:300]] += 1
            return status, headers

        with ThreadPoolExecutor(16) as pool:
            answers = [a for _ in range(3) for a in pool.map(one, range(16))]
        statuses = Counter(status for status, _ in answers)
        reasons = Counter(h.get("edgeinfer-offload-reason") for _, h in answers)
        # The router still answers 429 when the cloud cannot take a request either (its estimate
        # is over the deadline, it is marked down, or the one-thread stand-in cloud is full
        # itself). Before spills stopped being cut short at the stall time-out, a slow moment of a
        # shared host refused 1 of 48 here, and once in CI 5 of 48. Nearly all must be answered;
        # the refusals' messages say why any was not.
        assert set(statuses) <= {200, 429} and statuses[200] >= 0.9 * len(answers), (statuses, refusals)
        assert reasons["edge_full"] >= 1, reasons
        assert all(
            h["edgeinfer-served-by"] == "cloud"
            for _, h in answers
            if h.get("edgeinfer-offload-reason") == "edge_full"
        )
        assert offload_counts(edge)[("cloud", "edge_full")] == reasons["edge_full"]
    finally:
        edge.stop()
        link.stop()


@pytest.mark.e2e
def test_edge_default_is_unchanged(server: ServerProcess, images: dict[str, bytes]) -> None:
    scores, parameters = infer_image(thttp.InferenceServerClient(server.http_url), images["coffee"])
    assert scores.shape == (1, 1000) and parameters == {}
    status, headers, _ = server.request("POST", CLASSIFY, images["coffee"])
    assert status == 200 and not any(h.startswith("edgeinfer-") for h in headers)
    _, _, metrics = server.request("GET", "/metrics")
    assert b"edgeinfer_offload" not in metrics


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--offload", "sideways"), "invalid choice: 'sideways'"),
        (("--offload", "cloud"), "needs the cloud server: give --cloud-url"),
        (("--offload", "auto", "--cloud-url", "gpu-box:8000"), "cloud_url must be http://HOST:PORT"),
        (
            ("--offload", "auto", "--cloud-url", "http://h:1", "--bandwidth-cap-mbps", "0"),
            "bandwidth_cap_mbps",
        ),
        (
            ("--offload", "auto", "--http-port", "8123", "--cloud-url", "http://localhost:8123"),
            "is this server itself",
        ),
    ],
    ids=["bad-policy", "no-url", "bad-url", "bad-cap", "itself"],
)
def test_bad_offload_settings_are_clear_cli_errors(args: tuple[str, ...], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edgeinfer.cli.main", "serve", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_offload_settings_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text(
        '[serve]\noffload = "auto"\ncloud_url = "http://gpu-box:8000"\nbandwidth_cap_mbps = 5\n'
        "cloud_timeout_ms = 800\n"
    )
    settings = ServeSettings.load(config, {"cloud_model": "mnv2"})
    assert (settings.offload, settings.cloud_url, settings.cloud_model) == (
        "auto",
        "http://gpu-box:8000",
        "mnv2",
    )
    assert settings.bandwidth_cap_mbps == 5.0 and settings.cloud_timeout_ms == 800.0
    assert ServeSettings().offload == "edge" and ServeSettings().cloud_url is None
    with pytest.raises(InvalidInput, match="several models"):
        ServeSettings(models=("a", "b"), offload="auto", cloud_url="http://h:1", cloud_model="c")


def test_a_server_built_without_a_router_refuses_an_offload_policy() -> None:
    """The serving layer knows no router of its own: ``edgeinfer serve`` passes the network layer's."""
    from edgeinfer.serving.dataplane import DataPlane

    with pytest.raises(InvalidInput, match="needs a router: run `edgeinfer serve`"):
        DataPlane(ServeSettings(offload="auto", cloud_url="http://127.0.0.1:9"))
    DataPlane(ServeSettings())  # the edge default needs none
