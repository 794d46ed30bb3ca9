"""JSON of Triton's HTTP extensions: configuration, statistics and the repository index request."""

from __future__ import annotations

import orjson
import pytest

from edgeinfer.errors import InvalidInput
from edgeinfer.serving.codecs.rest_extensions import (
    decode_repository_index_request,
    encode_model_config,
    encode_model_statistics,
    encode_repository_index,
)
from edgeinfer.serving.protocol import ConfigTensor, RepositoryModel, ServedModelConfig
from edgeinfer.serving.statistics import StatisticsRecorder


def test_config_names_types_as_triton_and_marks_optional_inputs() -> None:
    config = ServedModelConfig(
        name="m",
        platform="edgeinfer_onnxruntime",
        max_batch_size=8,
        inputs=(ConfigTensor("x", "FP32", (3, 2, 2), True), ConfigTensor("image", "BYTES", (1,), True)),
        outputs=(ConfigTensor("y", "FP32", (10,)),),
        max_queue_delay_us=2000,
    )
    document = orjson.loads(encode_model_config(config))
    assert document["input"][1] == {
        "name": "image",
        "data_type": "TYPE_STRING",
        "dims": [1],
        "optional": True,
    }
    assert document["output"] == [{"name": "y", "data_type": "TYPE_FP32", "dims": [10]}]
    assert document["dynamic_batching"] == {"max_queue_delay_microseconds": 2000}


def test_statistics_leave_what_is_not_measured_at_zero_counts() -> None:
    recorder = StatisticsRecorder()
    recorder.succeeded(10, 20, 30, 40)
    recorder.batch_ran(1, 30)
    (model,) = orjson.loads(encode_model_statistics([recorder.snapshot("m", "1")]))["model_stats"]
    assert model["inference_stats"]["compute_infer"] == {"count": 1, "ns": 30}
    assert model["inference_stats"]["cache_hit"] == {"count": 0, "ns": 0}
    assert model["batch_stats"] == [
        {
            "batch_size": 1,
            "compute_input": {"count": 0, "ns": 0},
            "compute_infer": {"count": 1, "ns": 30},
            "compute_output": {"count": 0, "ns": 0},
        }
    ]


@pytest.mark.parametrize(
    ("body", "ready"), [(b"", False), (b"  ", False), (b"{}", False), (b'{"ready": true}', True)]
)
def test_index_request_bodies(body: bytes, ready: bool) -> None:
    assert decode_repository_index_request(body) is ready


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"{", "not valid JSON"), (b"3", "must be a JSON object"), (b'{"ready": 1}', "must be true or false")],
)
def test_bad_index_requests_are_invalid_input(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_repository_index_request(body)


def test_index_gives_a_reason_only_when_there_is_one() -> None:
    models = [RepositoryModel("a", "1", "READY"), RepositoryModel("b", "", "UNAVAILABLE", "loading")]
    assert orjson.loads(encode_repository_index(models)) == [
        {"name": "a", "version": "1", "state": "READY"},
        {"name": "b", "version": "", "state": "UNAVAILABLE", "reason": "loading"},
    ]
