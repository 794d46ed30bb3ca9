"""Triton's own calls that its clients and perf_analyzer make, on the real server with the real model
and the unmodified official client: model configuration, inference statistics, repository index.

perf_analyzer (Triton's benchmark tool) reads the configuration to shape its requests (each
tensor's full shape is ``[-1] + dims`` when ``max_batch_size`` > 0, and an ``optional`` input may be
left out) and the statistics to report the server's side of each request; it refuses statistics
whose stage counts differ. docs/BENCHMARKS.md has it running against this server.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from tests.serving.conftest import ServerProcess

pytestmark = pytest.mark.e2e
MODEL = "mobilenet_v2"
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")


def _grpc_json_ints(document: Any) -> Any:
    """tritonclient's gRPC ``as_json`` writes 64-bit integers as strings; back to numbers."""
    if isinstance(document, dict):
        return {key: _grpc_json_ints(value) for key, value in document.items()}
    if isinstance(document, list):
        return [_grpc_json_ints(value) for value in document]
    if isinstance(document, str) and document.isdigit():
        return int(document)
    return document


def test_model_config_is_the_same_over_both_transports_and_matches_the_metadata(
    server: ServerProcess,
) -> None:
    web = thttp.InferenceServerClient(server.http_url)
    rpc = tgrpc.InferenceServerClient(server.grpc_url)
    config = web.get_model_config(MODEL)
    assert config == web.get_model_config(MODEL, "1")
    assert config == {
        "name": MODEL,
        "platform": "edgeinfer_onnxruntime",
        "backend": "edgeinfer_onnxruntime",
        "max_batch_size": 4,
        "input": [
            {"name": "input", "data_type": "TYPE_FP32", "dims": [3, 224, 224], "optional": True},
            {"name": "image", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
        ],
        "output": [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": [1000]}],
        "dynamic_batching": {"max_queue_delay_microseconds": 1000},
    }
    assert _grpc_json_ints(rpc.get_model_config(MODEL, as_json=True)["config"]) == config
    # what perf_analyzer relies on: a batched tensor's metadata shape is [-1] + its config dims
    metadata = web.get_model_metadata(MODEL)
    shapes = {t["name"]: t["shape"] for t in metadata["inputs"] + metadata["outputs"]}
    for tensor in config["input"] + config["output"]:
        assert shapes[tensor["name"]] == [-1, *tensor["dims"]]


def test_an_image_shaped_as_the_config_says_is_classified(
    server: ServerProcess, images: dict[str, bytes]
) -> None:
    """BYTES [1, 1], the shape perf_analyzer and Triton's examples send for dims [1]."""
    client = tgrpc.InferenceServerClient(server.grpc_url)
    tensor = tgrpc.InferInput("image", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[images["chelsea"]]], dtype=object))
    result = client.infer(
        MODEL, [tensor], outputs=[tgrpc.InferRequestedOutput("probabilities", class_count=1)]
    )
    assert "Egyptian cat" in result.as_numpy("probabilities")[0][0].decode()


def _http_stats(client: thttp.InferenceServerClient) -> dict[str, Any]:
    stats = client.get_inference_statistics(MODEL)["model_stats"]
    assert len(stats) == 1 and stats[0]["name"] == MODEL and stats[0]["version"] == "1"
    return dict(stats[0])


def test_statistics_count_each_request_and_its_stages(
    server: ServerProcess, images: dict[str, bytes]
) -> None:
    web = thttp.InferenceServerClient(server.http_url)
    rpc = tgrpc.InferenceServerClient(server.grpc_url)
    before = _http_stats(web)
    for client, module in ((web, thttp), (rpc, tgrpc)):
        for name in ("chelsea", "coffee"):
            tensor = module.InferInput("image", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([images[name]], dtype=object))
            client.infer(MODEL, [tensor])
    status, _, _ = server.request("POST", f"/v1/models/{MODEL}/classify", b"\xff\xd8 not a jpeg")
    assert status == 400
    # failed calls that are not inferences (metadata, readiness, a wrong method) are not counted
    for method, path, refused in (
        ("GET", f"/v2/models/{MODEL}/versions/7", 404),
        ("GET", f"/v2/models/{MODEL}/versions/7/ready", 404),
        ("GET", f"/v2/models/{MODEL}/infer", 405),
        ("GET", f"/v2/models/{MODEL}/nothing", 404),
    ):
        assert server.request(method, path)[0] == refused, path
    after = _http_stats(web)

    def delta(stage: str, field: str = "count") -> int:
        return int(after["inference_stats"][stage][field] - before["inference_stats"][stage][field])

    assert delta("success") == 4 and delta("fail") == 1
    assert after["inference_count"] - before["inference_count"] == 4
    assert 1 <= after["execution_count"] - before["execution_count"] <= 4
    for stage in STAGES:  # one of each per successful request, as perf_analyzer requires
        assert delta(stage) == 4, stage
    for stage in ("compute_input", "compute_infer"):  # decoding and MobileNetV2 take measurable time
        assert delta(stage, "ns") > 4 * 100_000, stage
    # a request's stages happen inside it
    assert sum(delta(stage, "ns") for stage in STAGES) <= delta("success", "ns")
    assert after["last_inference"] >= before["last_inference"] > 0
    batched = sum(b["compute_infer"]["count"] for b in after["batch_stats"])
    assert batched == after["execution_count"]
    # the same figures over gRPC and for all models at once
    rpc_stats = _grpc_json_ints(rpc.get_inference_statistics(MODEL, as_json=True))["model_stats"][0]
    assert rpc_stats["inference_stats"]["success"]["count"] == after["inference_stats"]["success"]["count"]
    everything = web.get_inference_statistics()["model_stats"]
    assert [s["name"] for s in everything] == [MODEL]


def test_statistics_of_an_unknown_model_are_not_found(server: ServerProcess) -> None:
    status, _, body = server.request("GET", "/v2/models/nope/stats")
    assert status == 404 and "unknown model 'nope'" in json.loads(body)["error"]
    status, _, body = server.request("GET", f"/v2/models/{MODEL}/versions/7/stats")
    assert status == 404 and "no version '7'" in json.loads(body)["error"]
    with pytest.raises(InferenceServerException) as raised:
        tgrpc.InferenceServerClient(server.grpc_url).get_inference_statistics("nope")
    assert raised.value.status() == str(grpc.StatusCode.NOT_FOUND)


def test_repository_index_lists_the_served_model(server: ServerProcess) -> None:
    web = thttp.InferenceServerClient(server.http_url)
    rpc = tgrpc.InferenceServerClient(server.grpc_url)
    entry = {"name": MODEL, "version": "1", "state": "READY"}
    assert web.get_model_repository_index() == [entry]
    assert rpc.get_model_repository_index(as_json=True) == {"models": [entry]}
    status, _, body = server.request("POST", "/v2/repository/index", b'{"ready": true}')
    assert (status, json.loads(body)) == (200, [entry])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[true]", "must be a JSON object"),
        (b'{"ready": "yes"}', "'ready' must be true or false"),
    ],
)
def test_a_bad_repository_index_request_gets_400_and_the_server_keeps_serving(
    server: ServerProcess, body: bytes, message: str
) -> None:
    status, _, answer = server.request("POST", "/v2/repository/index", body)
    assert status == 400 and message in json.loads(answer)["error"]
    status, _, _ = server.request("GET", "/v2/repository/index")
    assert status == 405
    assert server.request("GET", "/v2/health/ready")[0] == 200
