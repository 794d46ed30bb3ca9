"""The real server process, the real model, the unmodified official Triton client over HTTP and gRPC.

Every answer is checked against the same engine run in this process on the same input.
"""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from edgeinfer.engine.engine import Engine
from tests.serving.conftest import ServerProcess

pytestmark = pytest.mark.e2e
MODEL = "mobilenet_v2"
TESTDATA = Path(__file__).parents[1] / "testdata"


def _in_process(engine: Engine, image: bytes) -> np.ndarray:
    return engine.infer(engine.preprocess(engine.decode(image))[np.newaxis])[0]


def test_health_and_metadata_over_both_transports(server: ServerProcess) -> None:
    expected = json.loads((TESTDATA / "v2_model_metadata_mobilenet_v2.json").read_text())
    web = thttp.InferenceServerClient(server.http_url)
    rpc = tgrpc.InferenceServerClient(server.grpc_url)
    for client in (web, rpc):
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL)
        assert client.is_model_ready(MODEL, "1")
    assert web.get_model_metadata(MODEL) == expected
    assert rpc.get_model_metadata(MODEL, as_json=True) == {
        **expected,
        "inputs": [
            {**t, "shape": [str(d) for d in t["shape"]]} for t in expected["inputs"]
        ],  # int64 as JSON strings
        "outputs": [{**t, "shape": [str(d) for d in t["shape"]]} for t in expected["outputs"]],
    }
    server_meta = web.get_server_metadata()
    assert server_meta["name"] == "edgeinfer"
    assert "binary_tensor_data" in server_meta["extensions"]
    assert "binary_tensor_data" in rpc.get_server_metadata(as_json=True)["extensions"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_http_preprocessed_tensor_matches_in_process(
    server: ServerProcess, engine: Engine, images: dict[str, bytes], binary: bool
) -> None:
    batch = np.stack([engine.preprocess(engine.decode(images[n])) for n in ("chelsea", "coffee")])
    client = thttp.InferenceServerClient(server.http_url)
    tensor = thttp.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    result = client.infer(
        MODEL, [tensor], outputs=[thttp.InferRequestedOutput("probabilities", binary_data=binary)]
    )
    np.testing.assert_allclose(result.as_numpy("probabilities"), engine.infer(batch), atol=1e-5)


def test_grpc_preprocessed_tensor_matches_in_process(
    server: ServerProcess, engine: Engine, images: dict[str, bytes]
) -> None:
    batch = engine.preprocess(engine.decode(images["grace_hopper"]))[np.newaxis]
    client = tgrpc.InferenceServerClient(server.grpc_url)
    tensor = tgrpc.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    result = client.infer(MODEL, [tensor])
    np.testing.assert_allclose(result.as_numpy("probabilities"), engine.infer(batch), atol=1e-5)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_encoded_images_are_decoded_server_side(
    server: ServerProcess, engine: Engine, images: dict[str, bytes], transport: str
) -> None:
    names = ("chelsea", "coffee", "grace_hopper")
    module = thttp if transport == "http" else tgrpc
    client = module.InferenceServerClient(server.http_url if transport == "http" else server.grpc_url)
    tensor = module.InferInput("image", [len(names)], "BYTES")
    tensor.set_data_from_numpy(np.array([images[n] for n in names], dtype=object))
    result = client.infer(MODEL, [tensor])
    expected = np.stack([_in_process(engine, images[n]) for n in names])
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_classification_extension_gives_labels(
    server: ServerProcess, images: dict[str, bytes], transport: str
) -> None:
    module = thttp if transport == "http" else tgrpc
    client = module.InferenceServerClient(server.http_url if transport == "http" else server.grpc_url)
    tensor = module.InferInput("image", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([images["chelsea"], images["coffee"]], dtype=object))
    result = client.infer(
        MODEL, [tensor], outputs=[module.InferRequestedOutput("probabilities", class_count=3)]
    )
    rows = result.as_numpy("probabilities")
    assert rows.shape == (2, 3)
    top = [row[0].decode().split(":") for row in rows]
    assert [t[2] for t in top] == ["Egyptian cat", "espresso"]
    assert [t[1] for t in top] == ["285", "967"]
    assert 0.6 < float(top[0][0]) < 0.8 and float(top[1][0]) > 0.9


def test_json_payload_with_base64_image(server: ServerProcess) -> None:
    body = (TESTDATA / "v2_infer_request_image_base64.json").read_bytes()
    status, headers, data = server.request(
        "POST", f"/v2/models/{MODEL}/infer", body, {"Content-Type": "application/json"}
    )
    assert status == 200, data
    answer = json.loads(data)
    assert headers["content-type"] == "application/json"
    (output,) = answer["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [1, 3]
    assert all(item.count(":") >= 2 for item in output["data"])


def test_nested_json_tensor_equals_flat(
    server: ServerProcess, engine: Engine, images: dict[str, bytes]
) -> None:
    sample = engine.preprocess(engine.decode(images["coffee"]))[np.newaxis]
    answers = []
    for data in (sample.tolist(), sample.ravel().tolist()):
        body = json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(sample.shape), "data": data}]}
        ).encode()
        status, _, raw = server.request("POST", f"/v2/models/{MODEL}/versions/1/infer", body)
        assert status == 200, raw
        answers.append(np.array(json.loads(raw)["outputs"][0]["data"], dtype=np.float32))
    np.testing.assert_array_equal(answers[0], answers[1])
    np.testing.assert_allclose(answers[0], engine.infer(sample)[0], atol=1e-5)


@pytest.mark.parametrize("content_type", ["image/jpeg", "application/x-www-form-urlencoded"])
def test_classify_route_with_a_raw_jpeg(
    server: ServerProcess, engine: Engine, images: dict[str, bytes], content_type: str
) -> None:
    # curl --data-binary sends application/x-www-form-urlencoded unless told otherwise: accept it.
    status, _, raw = server.request(
        "POST", f"/v1/models/{MODEL}/classify?top_k=2", images["grace_hopper"], {"Content-Type": content_type}
    )
    assert status == 200, raw
    answer = json.loads(raw)
    expected = engine.classify(images["grace_hopper"], top_k=2).predictions
    assert [p["index"] for p in answer["predictions"]] == [p.index for p in expected]
    assert [p["label"] for p in answer["predictions"]] == [p.label for p in expected]
    assert answer["predictions"][0]["score"] == pytest.approx(expected[0].score, abs=1e-5)


def test_timeouts_in_header_and_parameter_are_accepted(
    server: ServerProcess, images: dict[str, bytes]
) -> None:
    client = thttp.InferenceServerClient(server.http_url)
    tensor = thttp.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([images["chelsea"]], dtype=object))
    result = client.infer(MODEL, [tensor], timeout=5_000_000, headers={"Edgeinfer-Timeout-Ms": "5000"})
    assert result.as_numpy("probabilities").argmax() == 285


def test_concurrent_clients_all_get_their_own_answer(
    server: ServerProcess, engine: Engine, images: dict[str, bytes]
) -> None:
    names = ["chelsea", "coffee", "grace_hopper"] * 4
    expected = {n: _in_process(engine, images[n]) for n in set(names)}

    def one(name: str) -> tuple[str, np.ndarray]:
        client = thttp.InferenceServerClient(server.http_url)
        tensor = thttp.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([images[name]], dtype=object))
        return name, client.infer(MODEL, [tensor]).as_numpy("probabilities")[0]

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        for name, row in pool.map(one, names):
            np.testing.assert_allclose(row, expected[name], atol=1e-5)


def test_metrics_count_requests_and_describe_the_process(
    server: ServerProcess, images: dict[str, bytes]
) -> None:
    server.request("POST", f"/v1/models/{MODEL}/classify", images["coffee"])
    status, headers, raw = server.request("GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    text = raw.decode()
    for family in (
        "edgeinfer_requests_total", "edgeinfer_request_seconds_bucket", "edgeinfer_queue_seconds_bucket",
        "edgeinfer_compute_seconds_bucket", "edgeinfer_batch_size_bucket", "edgeinfer_prepare_seconds_bucket",
        "process_cpu_seconds_total", "process_resident_memory_bytes",
    ):  # fmt: skip
        assert family in text, family
    line = next(
        x
        for x in text.splitlines()
        if x.startswith(f'edgeinfer_requests_total{{model="{MODEL}",protocol="http"}}')
    )
    assert float(line.split()[-1]) >= 1


def test_a_failed_request_is_counted_once(server: ServerProcess) -> None:
    """A corrupt image fails inside the model (counted there); the protocol edge must not add it again."""

    def figures() -> tuple[float, float]:
        _, _, raw = server.request("GET", "/metrics")
        failures = histogram = 0.0
        for line in raw.decode().splitlines():
            if "{" not in line or line.startswith("#"):
                continue
            name, rest = line.split("{", 1)
            labels = dict(item.split("=", 1) for item in rest[: rest.index("}")].split(","))
            if labels.get("model") != f'"{MODEL}"' or labels.get("protocol") != '"http"':
                continue
            if name == "edgeinfer_request_failures_total":
                failures += float(line.split()[-1])
            elif name == "edgeinfer_request_seconds_count":
                histogram += float(line.split()[-1])
        return failures, histogram

    before = figures()
    status, _, _ = server.request("POST", f"/v1/models/{MODEL}/classify", b"\xff\xd8 not a jpeg")
    assert status == 400
    after = figures()
    assert (after[0] - before[0], after[1] - before[1]) == (1.0, 1.0)


def test_the_real_server_answers_head_and_keeps_the_connection(server: ServerProcess) -> None:
    """The HTTP transport joins a response head with its body (``rest/one_write.py``). For HEAD
    uvicorn writes a head and no body, so the held head must go out on its own; the keep-alive
    connection then serves the next request."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(b"HEAD /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        head = _read_until(sock, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head  # a GET route answers HEAD, without the body
        assert b"content-length: 14" in head.lower()  # the GET body's length: {"ready":true}
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_until(sock, b'{"live":true}')
        assert answer.startswith(b"HTTP/1.1 200 ")  # nothing of a body came between the two
    status, _, body = server.request("HEAD", "/v2/models/mobilenet_v2/infer")
    assert status == 405 and body == b""


def test_an_empty_path_segment_is_no_route(server: ServerProcess) -> None:
    status, _, body = server.request("POST", "/v2/models/mobilenet_v2/versions//infer", b"{}")
    assert status == 404
    assert "empty path segment" in json.loads(body)["error"]


def _read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data
