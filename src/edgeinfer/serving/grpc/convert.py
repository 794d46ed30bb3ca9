"""Protocol buffers of the v2 gRPC API to and from the transport-neutral protocol types."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgeinfer.errors import InvalidInput
from edgeinfer.serving.codecs.tensors import checked_count, tensor_from_raw, tensor_to_raw
from edgeinfer.serving.deadlines import timeout_from_parameters
from edgeinfer.serving.grpc import grpc_predict_v2_pb2 as pb
from edgeinfer.serving.protocol import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    ParamValue,
    RequestedOutput,
    ServerMetadata,
    Tensor,
    numpy_dtype,
)

# Which InferTensorContents field carries each datatype when raw contents are not used.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameters_from_proto(params: Mapping[str, Any]) -> dict[str, ParamValue]:
    out: dict[str, ParamValue] = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(value, choice)
    return out


def request_from_proto(
    message: pb.ModelInferRequest, *, arrival_ns: int, extra_timeouts_ns: tuple[int | None, ...] = ()
) -> InferRequest:
    raw_contents = message.raw_input_contents
    if raw_contents and len(raw_contents) != len(message.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw_contents)} entries for {len(message.inputs)} inputs; "
            "send one per input, in input order"
        )
    if not message.inputs:
        raise InvalidInput("the request has no inputs")
    inputs = tuple(
        _input_from_proto(item, raw_contents[i] if raw_contents else None)
        for i, item in enumerate(message.inputs)
    )
    outputs = []
    for item in message.outputs:
        params = parameters_from_proto(item.parameters)
        count = params.get("classification", 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InvalidInput(f"output {item.name!r}: classification must be a non-negative integer")
        outputs.append(RequestedOutput(item.name, True, count))
    parameters = parameters_from_proto(message.parameters)
    timeouts = [t for t in (timeout_from_parameters(parameters), *extra_timeouts_ns) if t is not None]
    return InferRequest(
        model=message.model_name,
        version=message.model_version or None,
        inputs=inputs,
        outputs=tuple(outputs),
        id=message.id or None,
        parameters=parameters,
        binary_output=True,
        timeout_ns=min(timeouts) if timeouts else None,
        arrival_ns=arrival_ns,
    )


def _input_from_proto(item: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> Tensor:
    name = item.name
    if not name:
        raise InvalidInput("an input has no name")
    shape = tuple(int(d) for d in item.shape)
    parameters = parameters_from_proto(item.parameters)
    has_contents = item.HasField("contents") and any(
        len(getattr(item.contents, f)) for f in set(_CONTENTS_FIELD.values())
    )
    if raw is not None:
        if has_contents:
            raise InvalidInput(f"input {name!r} has both contents and raw_input_contents; send one")
        return tensor_from_raw(name, item.datatype, shape, raw, parameters)
    numpy_dtype(item.datatype)  # a clear error for an unknown datatype
    field_name = _CONTENTS_FIELD.get(item.datatype)
    if field_name is None:
        raise InvalidInput(f"input {name!r}: {item.datatype} data must travel in raw_input_contents")
    count = checked_count(name, shape)
    values = getattr(item.contents, field_name)
    if len(values) != count:
        raise InvalidInput(
            f"input {name!r} has shape {list(shape)} ({count} elements) but {field_name} holds {len(values)}"
        )
    if item.datatype == "BYTES":
        data = np.empty(len(values), dtype=object)
        data[:] = list(values)
    else:
        try:
            data = np.asarray(values, dtype=numpy_dtype(item.datatype))
        except OverflowError:  # int_contents carries int32: 1000 does not fit INT8
            low, high = _range(item.datatype)
            raise InvalidInput(
                f"input {name!r}: a value in {field_name} is outside {item.datatype}'s range {low}..{high}"
            ) from None
    return Tensor(name, item.datatype, shape, data.reshape(shape), parameters)


def _range(datatype: str) -> tuple[int, int]:
    info = np.iinfo(numpy_dtype(datatype))
    return int(info.min), int(info.max)


def response_to_proto(response: InferResponse) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(
        model_name=response.model, model_version=response.version, id=response.id or ""
    )
    for output in response.outputs:
        tensor = output.tensor
        entry = message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))
        del entry  # filled by name/datatype/shape; the data goes in raw_output_contents
        message.raw_output_contents.append(tensor_to_raw(tensor))
    for key, value in response.parameters.items():
        _set_parameter(message.parameters[key], value)
    return message


def _set_parameter(target: pb.InferParameter, value: ParamValue) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = str(value)


def server_metadata_to_proto(metadata: ServerMetadata) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(
        name=metadata.name, version=metadata.version, extensions=list(metadata.extensions)
    )


def model_metadata_to_proto(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=list(metadata.versions),
        platform=metadata.platform,
        inputs=[tensor(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in metadata.inputs],
        outputs=[tensor(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in metadata.outputs],
    )
