from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest

from edgeinfer.errors import InvalidInput
from edgeinfer.serving.codecs.rest import decode_infer_request, encode_infer_response
from edgeinfer.serving.protocol import InferResponse, OutputTensor, RequestedOutput, Tensor

TESTDATA = Path(__file__).parents[2] / "testdata"


def _decode(body: bytes, header_length: int | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
    return decode_infer_request(body, model="m", version=None, header_length=header_length, **kwargs)  # type: ignore[arg-type]


def test_known_good_flat_payload() -> None:
    request = _decode((TESTDATA / "v2_infer_request_flat.json").read_bytes())
    assert request.id == "req-1"
    assert request.timeout_ns == 250_000_000
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", "FP32", (2, 3))
    np.testing.assert_array_equal(tensor.data, [[1, 2, 3], [4.5, 5, 6]])
    assert request.outputs == (RequestedOutput("y", False, 0),)


def test_known_good_nested_payload_asks_for_classification() -> None:
    request = _decode((TESTDATA / "v2_infer_request_nested.json").read_bytes())
    np.testing.assert_array_equal(request.inputs[0].data, [[1, 2, 3], [4.5, 5, 6]])
    assert request.outputs == (RequestedOutput("y", None, 2),)


def _binary_request(arrays: dict[str, np.ndarray], extra: bytes = b"") -> tuple[bytes, int]:
    inputs = []
    chunks = []
    for name, array in arrays.items():
        raw = array.astype("<f4").tobytes()
        inputs.append(
            {
                "name": name,
                "datatype": "FP32",
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        chunks.append(raw)
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    return header + b"".join(chunks) + extra, len(header)


def test_binary_extension_splits_the_body_by_sizes() -> None:
    a = np.arange(4, dtype=np.float32)
    b = np.arange(6, dtype=np.float32).reshape(2, 3) * 2
    body, length = _binary_request({"a": a, "b": b})
    request = _decode(body, length)
    np.testing.assert_array_equal(request.inputs[0].data, a)
    np.testing.assert_array_equal(request.inputs[1].data, b)
    assert request.binary_output is True


def test_binary_data_size_past_the_end_is_a_truncated_body() -> None:
    body, length = _binary_request({"a": np.zeros(4, dtype=np.float32)})
    with pytest.raises(InvalidInput, match=r"binary_data_size is 16 but only 10 bytes.*truncated"):
        _decode(body[:-6], length)


def test_bytes_left_after_the_last_input_are_refused() -> None:
    body, length = _binary_request({"a": np.zeros(4, dtype=np.float32)}, extra=b"junk")
    with pytest.raises(InvalidInput, match="4 bytes after the last input"):
        _decode(body, length)


def test_header_length_beyond_the_body_is_refused() -> None:
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length is 500 but the body has 2 bytes"):
        _decode(b"{}", 500)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{}", 'non-empty "inputs"'),
        (b'{"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}', 'needs a "name"'),
        (b'{"inputs": [{"name": "x", "shape": [1], "data": [1]}]}', 'needs a "datatype"'),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": "1", "data": [1]}]}', "list of integers"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}', 'neither "data" nor'),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], '
            b'"parameters": {"timeout": -5}}',
            "microseconds",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], '
            b'"outputs": [{"name": "y", "parameters": {"classification": "3"}}]}',
            "classification must be a non-negative integer",
        ),
    ],
)
def test_malformed_requests_name_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        _decode(body)


def test_tightest_timeout_wins() -> None:
    body = (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], '
        b'"parameters": {"timeout": 90000}}'
    )
    assert _decode(body).timeout_ns == 90_000_000
    assert _decode(body, header_timeout_ns=5_000_000).timeout_ns == 5_000_000


def test_response_with_binary_and_json_outputs() -> None:
    scores = np.array([[0.25, 0.75]], dtype=np.float32)
    labels = np.array([["0.750000:1:cat"]], dtype=object)
    response = InferResponse(
        "m",
        "1",
        (
            OutputTensor(Tensor("probabilities", "FP32", (1, 2), scores), binary=True),
            OutputTensor(Tensor("labels", "BYTES", (1, 1), labels), binary=False),
        ),
        id="7",
    )
    encoded = encode_infer_response(response)
    assert encoded.header_length is not None
    header = orjson.loads(encoded.body[: encoded.header_length])
    assert header["id"] == "7"
    first, second = header["outputs"]
    assert first["parameters"]["binary_data_size"] == 8
    assert "data" not in first
    assert second["data"] == ["0.750000:1:cat"]
    np.testing.assert_array_equal(np.frombuffer(encoded.body[encoded.header_length :], "<f4"), [0.25, 0.75])


def test_all_json_response_has_no_header_length() -> None:
    scores = np.array([[0.5, 0.5]], dtype=np.float32)
    encoded = encode_infer_response(
        InferResponse("m", "1", (OutputTensor(Tensor("p", "FP32", (1, 2), scores)),))
    )
    assert encoded.header_length is None
    assert orjson.loads(encoded.body)["outputs"][0]["data"] == [0.5, 0.5]
