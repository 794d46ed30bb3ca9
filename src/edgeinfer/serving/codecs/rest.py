"""HTTP bodies of the v2 protocol: JSON, plus Triton's binary tensor data extension.

With the extension a body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by
the raw data of every input whose ``parameters.binary_data_size`` is set, in input order. Responses
use the same layout when an output is asked for with ``binary_data`` (or the request sets
``binary_data_output``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from edgeinfer.errors import InvalidInput
from edgeinfer.serving.codecs.tensors import tensor_from_json, tensor_from_raw, tensor_to_json, tensor_to_raw
from edgeinfer.serving.deadlines import timeout_from_parameters
from edgeinfer.serving.protocol import (
    ClassifyResponse,
    InferRequest,
    InferResponse,
    ModelMetadata,
    ParamValue,
    RequestedOutput,
    ServerMetadata,
    Tensor,
    TensorMetadata,
)

HEADER_LENGTH = "inference-header-content-length"
JSON_TYPE = b"application/json"
BINARY_TYPE = b"application/octet-stream"
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True)
class EncodedBody:
    """A response body; ``header_length`` is set when binary data follows the JSON."""

    body: bytes
    header_length: int | None = None

    @property
    def content_type(self) -> bytes:
        return JSON_TYPE if self.header_length is None else BINARY_TYPE


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_DUMPS_OPTIONS)


def error_body(message: str, **extra: Any) -> bytes:
    return dumps({"error": message, **extra})


# -- requests ---------------------------------------------------------------------------------------


def decode_infer_request(
    body: bytes,
    *,
    model: str,
    version: str | None,
    header_length: int | None,
    header_timeout_ns: int | None = None,
    arrival_ns: int = 0,
) -> InferRequest:
    """Parse an infer request body; every problem is an :class:`InvalidInput` that names it."""
    view = memoryview(body)
    if header_length is None:
        header, binary = view, view[len(view) :]
    else:
        if header_length < 0 or header_length > len(view):
            raise InvalidInput(
                f"Inference-Header-Content-Length is {header_length} but the body has {len(view)} bytes; "
                "the body is truncated or the header is wrong"
            )
        header, binary = view[:header_length], view[header_length:]
    document = _parse_json_object(header, binary_possible=header_length is None)
    inputs_raw = document.get("inputs")
    if not isinstance(inputs_raw, list) or not inputs_raw:
        raise InvalidInput('the request needs a non-empty "inputs" list')
    inputs: list[Tensor] = []
    offset = 0
    for index, raw in enumerate(inputs_raw):
        tensor, used = _decode_input(index, raw, binary[offset:])
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise InvalidInput(
            f"the body has {len(binary) - offset} bytes after the last input's binary data; "
            "the binary_data_size values and Inference-Header-Content-Length do not add up"
        )
    parameters = _parameters(document.get("parameters"), "request")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise InvalidInput('parameter "binary_data_output" must be true or false')
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput('"id" must be a string')
    timeouts = [t for t in (timeout_from_parameters(parameters), header_timeout_ns) if t is not None]
    return InferRequest(
        model=model,
        version=version,
        inputs=tuple(inputs),
        outputs=_decode_outputs(document.get("outputs")),
        id=request_id,
        parameters=parameters,
        binary_output=binary_output,
        timeout_ns=min(timeouts) if timeouts else None,
        arrival_ns=arrival_ns,
    )


def _parse_json_object(data: memoryview, *, binary_possible: bool) -> dict[str, Any]:
    """``binary_possible``: the body was read as all JSON (no Inference-Header-Content-Length), so
    bytes after the JSON, or bytes that are not UTF-8, are most likely binary tensor data."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        hint = ""
        if binary_possible and ("after document" in str(exc) or "UTF-8" in str(exc)):
            hint = (
                "; binary tensor data after the JSON needs the Inference-Header-Content-Length "
                "header (the length of the JSON part)"
            )
        raise InvalidInput(f"malformed JSON in the request: {exc}{hint}") from None
    if not isinstance(document, dict):
        raise InvalidInput(f"the request must be a JSON object, got {type(document).__name__}")
    return document


def _decode_input(index: int, raw: Any, binary: memoryview) -> tuple[Tensor, int]:
    """One input; returns the tensor and how many bytes of binary data it took."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"inputs[{index}] must be an object with name, datatype, shape and data")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f'inputs[{index}] needs a "name"')
    datatype = raw.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidInput(f'input {name!r} needs a "datatype" (for example FP32 or BYTES)')
    shape = _shape(name, raw.get("shape"))
    parameters = _parameters(raw.get("parameters"), f"input {name!r}")
    size = parameters.get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(f"input {name!r}: binary_data_size must be a non-negative integer")
        if "data" in raw:
            raise InvalidInput(f'input {name!r} has both "data" and binary_data_size; send one')
        if size > len(binary):
            raise InvalidInput(
                f"input {name!r}: binary_data_size is {size} but only {len(binary)} bytes of binary "
                "data remain in the body (truncated body or wrong size)"
            )
        return tensor_from_raw(name, datatype, shape, binary[:size], parameters), size
    if "data" not in raw:
        raise InvalidInput(f'input {name!r} has neither "data" nor parameters.binary_data_size')
    return tensor_from_json(name, datatype, shape, raw["data"], parameters), 0


def _shape(name: str, raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list) or any(isinstance(d, bool) or not isinstance(d, int) for d in raw):
        raise InvalidInput(f'input {name!r} needs a "shape": a list of integers')
    return tuple(raw)


def _parameters(raw: Any, where: str) -> dict[str, ParamValue]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInput(f'{where}: "parameters" must be a JSON object')
    for key, value in raw.items():
        if not isinstance(value, (bool, int, float, str)):
            raise InvalidInput(f"{where}: parameter {key!r} must be a boolean, number or string")
    return raw


def _decode_outputs(raw: Any) -> tuple[RequestedOutput, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidInput('"outputs" must be a list')
    outputs = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f'outputs[{index}] must be an object with a "name"')
        name = item["name"]
        parameters = _parameters(item.get("parameters"), f"output {name!r}")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidInput(f"output {name!r}: binary_data must be true or false")
        count = parameters.get("classification", 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InvalidInput(f"output {name!r}: classification must be a non-negative integer")
        outputs.append(RequestedOutput(name, binary, count))
    return tuple(outputs)


# -- responses --------------------------------------------------------------------------------------


def encode_infer_response(response: InferResponse) -> EncodedBody:
    """JSON, or JSON followed by binary data when any output is binary."""
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output in response.outputs:
        tensor = output.tensor
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        parameters: dict[str, Any] = dict(tensor.parameters)
        if output.binary:
            raw = tensor_to_raw(tensor)
            parameters["binary_data_size"] = len(raw)
            chunks.append(raw)
        else:
            entry["data"] = tensor_to_json(tensor)
        if parameters:
            entry["parameters"] = parameters
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": response.model, "model_version": response.version}
    if response.id is not None:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = dict(response.parameters)
    document["outputs"] = outputs
    header = dumps(document)
    if not chunks:
        return EncodedBody(header)
    return EncodedBody(header + b"".join(chunks), len(header))


def encode_server_metadata(metadata: ServerMetadata) -> bytes:
    return dumps(
        {"name": metadata.name, "version": metadata.version, "extensions": list(metadata.extensions)}
    )


def encode_model_metadata(metadata: ModelMetadata) -> bytes:
    document: dict[str, Any] = {
        "name": metadata.name,
        "versions": list(metadata.versions),
        "platform": metadata.platform,
        "inputs": [_tensor_metadata(t) for t in metadata.inputs],
        "outputs": [_tensor_metadata(t) for t in metadata.outputs],
    }
    if metadata.parameters:
        document["parameters"] = dict(metadata.parameters)
    return dumps(document)


def encode_classify_response(response: ClassifyResponse) -> bytes:
    return dumps(
        {
            "model_name": response.model,
            "model_version": response.version,
            "predictions": [
                {"index": p.index, "label": p.label, "score": p.score} for p in response.predictions
            ],
        }
    )


def _tensor_metadata(tensor: TensorMetadata) -> Mapping[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
