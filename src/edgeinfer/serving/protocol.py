"""The KServe v2 / Open Inference Protocol as plain, transport-neutral types.

The REST and gRPC adapters turn their wire formats into these and back; the data plane and the
models only ever see these. Tensors hold numpy arrays: BYTES tensors are object arrays of ``bytes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from edgeinfer.errors import InvalidInput

ParamValue = bool | int | float | str
Parameters = Mapping[str, ParamValue]

EMPTY_PARAMETERS: Parameters = MappingProxyType({})

# KServe v2 datatype -> numpy dtype. BYTES is variable-length: an object array of bytes.
DATATYPES: Mapping[str, np.dtype] = MappingProxyType(
    {
        "BOOL": np.dtype(np.bool_),
        "UINT8": np.dtype(np.uint8),
        "UINT16": np.dtype(np.uint16),
        "UINT32": np.dtype(np.uint32),
        "UINT64": np.dtype(np.uint64),
        "INT8": np.dtype(np.int8),
        "INT16": np.dtype(np.int16),
        "INT32": np.dtype(np.int32),
        "INT64": np.dtype(np.int64),
        "FP16": np.dtype(np.float16),
        "FP32": np.dtype(np.float32),
        "FP64": np.dtype(np.float64),
        "BYTES": np.dtype(object),
    }
)

_NUMPY_TO_DATATYPE = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of a protocol datatype; :class:`InvalidInput` for one we do not know."""
    try:
        return DATATYPES[datatype]
    except KeyError:
        known = ", ".join(DATATYPES)
        raise InvalidInput(f"unknown datatype {datatype!r}; use one of {known}") from None


def datatype_of(dtype: np.dtype | str) -> str:
    """The protocol datatype of a numpy dtype (``float32`` -> ``FP32``)."""
    resolved = np.dtype(dtype)
    if resolved.kind in ("O", "S"):
        return "BYTES"
    try:
        return _NUMPY_TO_DATATYPE[resolved]
    except KeyError:
        raise InvalidInput(f"numpy dtype {resolved} has no protocol datatype") from None


def element_count(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def check_shape(name: str, shape: tuple[int, ...]) -> None:
    """Shapes on the wire must be non-negative integers."""
    if any(dim < 0 for dim in shape):
        raise InvalidInput(f"tensor {name!r} has a negative dimension in shape {list(shape)}")


@dataclass(frozen=True)
class Tensor:
    """A named tensor with its protocol datatype; ``data.shape`` equals ``shape``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: Parameters = field(default_factory=dict)


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for.

    ``binary``: None means "as the request says" (``binary_data_output``); ``class_count`` > 0 asks
    for Triton's classification extension (the top classes as ``"score:index:label"`` strings).
    """

    name: str
    binary: bool | None = None
    class_count: int = 0


@dataclass(frozen=True)
class InferRequest:
    """One inference request, whatever transport it came on.

    ``timeout_ns`` is what the client allowed (None: the server's default applies);
    ``arrival_ns`` is ``time.monotonic_ns()`` when the transport received it.
    """

    model: str
    version: str | None
    inputs: tuple[Tensor, ...]
    outputs: tuple[RequestedOutput, ...] = ()
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    binary_output: bool = False
    timeout_ns: int | None = None
    arrival_ns: int = 0


@dataclass(frozen=True)
class OutputTensor:
    """A result tensor; ``binary`` says how the HTTP codec should carry it."""

    tensor: Tensor
    binary: bool = False


@dataclass(frozen=True)
class InferResponse:
    model: str
    version: str
    outputs: tuple[OutputTensor, ...]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)


@dataclass(frozen=True)
class TensorMetadata:
    """Name, datatype and shape of a model input or output; -1 is a dimension of any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]
    parameters: Parameters = field(default_factory=dict)


@dataclass(frozen=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True)
class Label:
    """One top-k prediction as the ``/v1/.../classify`` route returns it."""

    index: int
    label: str
    score: float


@dataclass(frozen=True)
class ClassifyResponse:
    model: str
    version: str
    predictions: tuple[Label, ...]


# -- Triton's extensions: model configuration and repository index ---------------------------------


@dataclass(frozen=True)
class ConfigTensor:
    """A tensor of Triton's model configuration: ``dims`` leave out the batch dimension;
    ``optional``: a request may leave it out (here: each input is an alternative to the other)."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True)
class ServedModelConfig:
    """What Triton's clients and perf_analyzer read of a model's configuration (its batch limit,
    tensors and dynamic batcher), from Triton's ``model_config.proto``."""

    name: str
    platform: str
    max_batch_size: int
    inputs: tuple[ConfigTensor, ...]
    outputs: tuple[ConfigTensor, ...]
    max_queue_delay_us: int


@dataclass(frozen=True)
class RepositoryModel:
    """One entry of Triton's repository index: a served model and its state."""

    name: str
    version: str
    state: str  # READY or UNAVAILABLE, as Triton says it
    reason: str = ""
