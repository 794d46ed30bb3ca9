"""A lone keep-alive client runs inline on the real server; a second client or gRPC ends that.

Inline answers must equal the in-process engine's, and the switch back to the decode pool and the
batch queue must lose nothing. ``edgeinfer_inline_requests_total`` says which path each took.
"""

from __future__ import annotations

import http.client
import io
import json
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from PIL import Image

from edgeinfer.engine.engine import Engine
from edgeinfer.serving.lone_client import DEFAULT_WINDOW_S
from tests.serving.conftest import ServerProcess, b64

pytestmark = pytest.mark.e2e
MODEL = "mobilenet_v2"


def _inline_count(server: ServerProcess) -> float:
    _, _, raw = server.request("GET", "/metrics")  # metrics do not count as a client
    prefix = f'edgeinfer_inline_requests_total{{model="{MODEL}"}}'
    return sum(float(line.split()[-1]) for line in raw.decode().splitlines() if line.startswith(prefix))


def _classify(conn: http.client.HTTPConnection, image: bytes) -> list[int]:
    conn.request("POST", f"/v1/models/{MODEL}/classify?top_k=3", body=image,
                 headers={"Content-Type": "image/jpeg"})  # fmt: skip
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, body
    return [p["index"] for p in json.loads(body)["predictions"]]


def test_a_lone_client_runs_inline_until_someone_else_comes(
    server: ServerProcess, engine: Engine, images: dict[str, bytes]
) -> None:
    names = ["chelsea", "coffee", "grace_hopper"]
    expected = {n: [p.index for p in engine.classify(images[n], top_k=3).predictions] for n in names}
    lone = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        # A first request makes this connection the last peer seen (one from another test's
        # connection would crowd it for a window), then the window passes.
        assert _classify(lone, images["chelsea"]) == expected["chelsea"]
        time.sleep(DEFAULT_WINDOW_S + 0.1)
        before = _inline_count(server)
        for name in names * 2:
            assert _classify(lone, images[name]) == expected[name]
        assert _inline_count(server) - before == 6  # every one of them inline

        other = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        assert _classify(other, images["coffee"]) == expected["coffee"]
        other.close()
        before = _inline_count(server)
        for name in names:
            assert _classify(lone, images[name]) == expected[name]
        assert _inline_count(server) == before  # not alone any more: the queued path, same answers

        # Alone again once the window has passed. The inline path may still decline one request
        # whose estimated cost (from the queued requests just measured) is over its budget on a
        # slow moment of a shared host, so allow three windows; a server that never goes back to
        # inline fails all three.
        for _ in range(3):
            time.sleep(DEFAULT_WINDOW_S + 0.1)
            assert _classify(lone, images["chelsea"]) == expected["chelsea"]
            if _inline_count(server) == before + 1:
                break
        assert _inline_count(server) == before + 1, "the lone client never ran inline again"

        client = tgrpc.InferenceServerClient(server.grpc_url)
        tensor = tgrpc.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([images["chelsea"]], dtype=object))
        probabilities = client.infer(MODEL, [tensor]).as_numpy("probabilities")
        assert int(probabilities[0].argmax()) == expected["chelsea"][0]
        assert _classify(lone, images["coffee"]) == expected["coffee"]
        assert _inline_count(server) == before + 1  # gRPC multiplexes: never counted as alone
    finally:
        lone.close()


def _infer_json(conn: http.client.HTTPConnection, encoded: bytes) -> int:
    document = {"inputs": [{"name": "image", "shape": [1, 1], "datatype": "BYTES", "data": [b64(encoded)]}]}
    conn.request("POST", f"/v2/models/{MODEL}/infer", body=json.dumps(document),
                 headers={"Content-Type": "application/json"})  # fmt: skip
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, body
    return int(np.argmax(json.loads(body)["outputs"][0]["data"]))


def _encoded(size: tuple[int, int], image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 30)).save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.mark.parametrize("image_format", ["PNG", "GIF"])
def test_a_lone_clients_huge_image_is_not_decoded_on_the_event_loop(
    server: ServerProcess, engine: Engine, images: dict[str, bytes], image_format: str
) -> None:
    """A lone client's image whose size the server cannot price cheaply (base64 text of a 25
    megapixel PNG, whose header is read from its start; a GIF, whose size is not read at all) is
    decoded on the decode pool, not inline: the event loop, and so a liveness probe, is never
    blocked for the half second it takes. Before, both ran inline at the average size's price and
    the probe waited for the decoding."""
    huge = _encoded((5000, 5000), image_format)
    expected = int(engine.classify(huge, top_k=1).top.index)
    lone = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    finished: dict[str, float] = {}
    try:
        assert _infer_json(lone, images["coffee"]) == engine.classify(images["coffee"]).top.index
        time.sleep(DEFAULT_WINDOW_S + 0.1)
        before = _inline_count(server)
        assert _infer_json(lone, images["chelsea"]) == engine.classify(images["chelsea"]).top.index
        assert _inline_count(server) == before + 1  # a small base64 image, priced from its header

        def send_huge() -> None:
            if image_format == "PNG":
                assert _infer_json(lone, huge) == expected
            else:
                assert _classify(lone, huge)[0] == expected
            finished["huge"] = time.monotonic()

        sender = threading.Thread(target=send_huge)
        sender.start()
        time.sleep(0.05)  # the huge request is in the server, being decoded
        status, _, _ = server.request("GET", "/v2/health/live")
        finished["probe"] = time.monotonic()
        sender.join(60)
        assert status == 200 and "huge" in finished
        assert finished["probe"] < finished["huge"]  # answered while the huge image was decoded
        assert _inline_count(server) == before + 1
    finally:
        lone.close()
