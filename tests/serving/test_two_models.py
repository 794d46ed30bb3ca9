"""Two models in one real server process: each answers, describes itself, and preprocesses its own way.

MobileNetV2 and EfficientNet-Lite0 share a tensor contract (FP32 [-1, 3, 224, 224] in, 1000
probabilities out) but not their preprocessing (ImageNet mean/std on [0, 1] versus (x - 127) / 128),
so the image path is where serving the wrong preprocessing for a model would show.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as thttp

from edgeinfer.engine.engine import Engine
from edgeinfer.models.repository import ModelRepository
from tests.serving.conftest import RUNTIME, ServerProcess, b64, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MODELS = ("mobilenet_v2", "efficientnet_lite0")


@pytest.fixture(scope="module")
def engines(engine: Engine, repo: ModelRepository) -> Iterator[dict[str, Engine]]:
    """In-process engines of both models (building EfficientNet-Lite0 once, before the server starts)."""
    with Engine.load("efficientnet_lite0", runtime=RUNTIME, threads=1, repository=repo) as lite:
        yield {"mobilenet_v2": engine, "efficientnet_lite0": lite}


@pytest.fixture(scope="module")
def two_models(
    engines: dict[str, Engine], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """``edgeinfer serve`` with both models and the default shape: the cores are shared out (one
    model took them all and the second failed to start)."""
    args = ["--max-batch-size", "4", "--no-grpc"]
    for model in MODELS:
        args += ["--model", model]
    server = start_server(tmp_path_factory.mktemp("two-models"), *args)
    yield server
    assert server.stop() == 0, server.log()


def _probabilities(server: ServerProcess, model: str, image: bytes) -> np.ndarray:
    client = thttp.InferenceServerClient(server.http_url)
    tensor = thttp.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image], dtype=object))
    result: np.ndarray | None = client.infer(model, [tensor]).as_numpy("probabilities")
    assert result is not None
    row: np.ndarray = result[0]
    return row


@pytest.mark.parametrize("model", MODELS)
def test_each_model_classifies_coffee_as_espresso(
    two_models: ServerProcess, images: dict[str, bytes], model: str
) -> None:
    assert two_models.request("GET", f"/v2/models/{model}/ready")[0] == 200
    status, _, body = two_models.request(
        "POST", f"/v1/models/{model}/classify?top_k=3", images["coffee"], {"Content-Type": "image/jpeg"}
    )
    assert status == 200, body
    answer = json.loads(body)
    assert answer["model_name"] == model
    predictions = answer["predictions"]
    assert len(predictions) == 3
    assert predictions[0]["label"] == "espresso"
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True)


def test_metadata_describes_each_model(two_models: ServerProcess, engines: dict[str, Engine]) -> None:
    """Each model's v2 metadata comes from its own built config.

    The two models happen to share input and output names and shapes, and v2 metadata has no
    preprocessing fields, so here the documents differ by name only; the preprocessing difference
    is checked by behaviour in the next test.
    """
    metadata = {}
    for model in MODELS:
        status, _, body = two_models.request("GET", f"/v2/models/{model}")
        assert status == 200, body
        metadata[model] = json.loads(body)
        engine = engines[model]
        spec = engine.runtime.inputs[0]
        assert metadata[model]["name"] == model
        assert metadata[model]["versions"] == [engine.config.version]
        tensor_in = next(t for t in metadata[model]["inputs"] if t["datatype"] != "BYTES")
        assert tensor_in == {"name": spec.name, "datatype": "FP32", "shape": [-1, *engine.sample_shape]}
        assert {"name": "image", "datatype": "BYTES", "shape": [-1, 1]} in metadata[model]["inputs"]
        out = engine.config.outputs[0]
        assert metadata[model]["outputs"] == [{"name": out.name, "datatype": "FP32", "shape": [-1, 1000]}]
    assert metadata["mobilenet_v2"] != metadata["efficientnet_lite0"]
    unknown = two_models.request("GET", "/v2/models/resnet50")
    assert unknown[0] == 404 and "resnet50" in json.loads(unknown[2])["error"]


def test_each_model_decodes_with_its_own_preprocessing(
    two_models: ServerProcess, engines: dict[str, Engine], images: dict[str, bytes]
) -> None:
    image = images["coffee"]
    own = {m: e.preprocess(e.decode(image))[np.newaxis] for m, e in engines.items()}
    assert not np.allclose(own["mobilenet_v2"], own["efficientnet_lite0"], atol=1e-2)
    for model, engine in engines.items():
        served = _probabilities(two_models, model, image)
        np.testing.assert_allclose(served, engine.infer(own[model])[0], atol=1e-5)
        other = "efficientnet_lite0" if model == "mobilenet_v2" else "mobilenet_v2"
        wrong = engine.infer(own[other])[0]  # this model fed the other model's preprocessing
        assert np.abs(served - wrong).max() > 1e-3


def test_requests_to_both_models_interleave(two_models: ServerProcess, images: dict[str, bytes]) -> None:
    def top(model: str, name: str) -> str:
        status, _, body = two_models.request(
            "POST", f"/v1/models/{model}/classify?top_k=1", images[name], {"Content-Type": "image/jpeg"}
        )
        assert status == 200, body
        return str(json.loads(body)["predictions"][0]["label"])

    jobs = [(m, n) for _ in range(3) for m in MODELS for n in ("coffee", "chelsea")]
    with ThreadPoolExecutor(8) as pool:
        labels = list(pool.map(lambda job: (job, top(*job)), jobs))
    for (model, name), label in labels:
        if name == "coffee":
            assert label == "espresso", model
        else:
            assert label in {"Egyptian cat", "tabby", "tiger cat"}, (model, label)


def test_one_models_flood_of_large_images_does_not_make_the_other_answer_late(
    two_models: ServerProcess, images: dict[str, bytes]
) -> None:
    """The decode pool is shared: a request to one model waits behind the other's images, so its
    admission counts them (it counted its own model's only, and answered 504 seconds late)."""
    import io
    import time

    from PIL import Image

    with Image.open(io.BytesIO(images["chelsea"])) as opened:
        big = opened.convert("RGB").resize((3000, 2000))
    buffer = io.BytesIO()
    big.save(buffer, format="JPEG", quality=90)
    four = [b64(buffer.getvalue())] * 4
    flood_body = json.dumps(
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [4], "data": four}],
         "parameters": {"timeout_ms": 20000}}
    ).encode()  # fmt: skip

    def flood() -> int:
        return two_models.request("POST", "/v2/models/efficientnet_lite0/infer", flood_body)[0]

    def tight() -> tuple[int, float]:
        started = time.monotonic()
        status, _, _ = two_models.request(
            "POST", "/v1/models/mobilenet_v2/classify", images["coffee"], {"Edgeinfer-Timeout-Ms": "100"}
        )
        return status, (time.monotonic() - started) * 1000

    with ThreadPoolExecutor(max_workers=12) as pool:
        floods = [pool.submit(flood) for _ in range(8)]
        time.sleep(0.3)  # the flood admitted and decoding
        answers = [pool.submit(tight).result() for _ in range(5)]
        assert all(f.result() in (200, 429, 504) for f in floods)
    for status, elapsed_ms in answers:
        assert status in (200, 504)
        assert elapsed_ms < 400, answers  # answered in time, or refused at once: never seconds late
