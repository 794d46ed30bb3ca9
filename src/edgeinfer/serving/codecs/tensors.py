"""Tensor data on the wire: raw little-endian bytes (binary extension, gRPC raw contents) and JSON lists.

BYTES tensors travel raw as each element's length (4 bytes, little-endian) followed by its bytes.
In JSON they are strings; this codec keeps such elements as ``str`` so a model can tell text that
came over JSON (for images: base64) from raw bytes.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from edgeinfer.errors import InvalidInput
from edgeinfer.serving.protocol import (
    EMPTY_PARAMETERS,
    Parameters,
    Tensor,
    check_shape,
    element_count,
    numpy_dtype,
)

_LENGTH = struct.Struct("<I")
#: The most elements a shape may span, its zero dimensions left out: far above any request a server
#: accepts, far below what numpy refuses ("array is too big", "maximum allowed dimension exceeded").
MAX_SPAN = 1 << 40


def serialize_bytes(data: np.ndarray) -> bytes:
    """A BYTES tensor's elements, each as a 4-byte little-endian length and the bytes."""
    parts: list[bytes] = []
    for item in data.ravel():
        raw = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def deserialize_bytes(name: str, raw: bytes | memoryview, count: int) -> np.ndarray:
    """Parse ``count`` length-prefixed elements that must fill ``raw`` exactly.

    The count is checked against the data before anything is allocated: each element takes at least
    its 4-byte length prefix, so a shape that claims more elements than that is refused at once.
    """
    view = memoryview(raw)
    if count > len(view) // _LENGTH.size:
        raise InvalidInput(
            f"BYTES input {name!r} claims {count} elements but its {len(view)} bytes of data hold at "
            f"most {len(view) // _LENGTH.size} (each element starts with a 4-byte length); "
            "the shape and the data do not agree"
        )
    items = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        if offset + 4 > len(view):
            raise InvalidInput(
                f"BYTES input {name!r} is truncated: element {index} of {count} has no length prefix "
                f"(the data ends at byte {len(view)})"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInput(
                f"BYTES input {name!r} is truncated: element {index} says {length} bytes but only "
                f"{len(view) - offset} remain"
            )
        items[index] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise InvalidInput(
            f"BYTES input {name!r} has {len(view) - offset} bytes after its {count} elements; "
            "the shape and the data do not agree"
        )
    return items


def checked_count(name: str, shape: tuple[int, ...]) -> int:
    """The number of elements of a shape from the wire, refusing negative or absurdly large ones."""
    check_shape(name, shape)
    span = element_count(tuple(dim for dim in shape if dim))
    if span > MAX_SPAN:
        raise InvalidInput(f"tensor {name!r} has shape {list(shape)}: too large to be a real tensor")
    return span if all(shape) else 0


def tensor_from_raw(
    name: str,
    datatype: str,
    shape: tuple[int, ...],
    raw: bytes | memoryview,
    parameters: Parameters = EMPTY_PARAMETERS,
) -> Tensor:
    """A tensor from its raw row-major bytes, checked against the shape."""
    count = checked_count(name, shape)
    dtype = numpy_dtype(datatype)
    if datatype == "BYTES":
        data = deserialize_bytes(name, raw, count).reshape(shape)
        return Tensor(name, datatype, shape, data, parameters)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"input {name!r} ({datatype} {list(shape)}) needs {expected} bytes of data, got {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)
    return Tensor(name, datatype, shape, array, parameters)


def tensor_from_json(
    name: str,
    datatype: str,
    shape: tuple[int, ...],
    data: Any,
    parameters: Parameters = EMPTY_PARAMETERS,
) -> Tensor:
    """A tensor from a JSON ``data`` value: flat or nested lists in row-major order."""
    count = checked_count(name, shape)
    dtype = numpy_dtype(datatype)
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        flat = _flatten(name, data)
        if any(not isinstance(item, str) for item in flat):
            raise InvalidInput(f"BYTES input {name!r} must hold JSON strings")
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        array = _numeric_array(name, datatype, dtype, data)
    if array.size != count:
        raise InvalidInput(
            f"input {name!r} has shape {list(shape)} ({count} elements) but its data holds {array.size}"
        )
    return Tensor(name, datatype, shape, array.reshape(shape), parameters)


def tensor_to_raw(tensor: Tensor) -> bytes:
    """A tensor's data as raw little-endian row-major bytes."""
    if tensor.datatype == "BYTES":
        return serialize_bytes(tensor.data)
    dtype = numpy_dtype(tensor.datatype).newbyteorder("<")
    return np.ascontiguousarray(tensor.data, dtype=dtype).tobytes()


def tensor_to_json(tensor: Tensor) -> np.ndarray | list[str]:
    """A tensor's data as a flat row-major list (a flat ndarray; the JSON encoder writes numpy)."""
    if tensor.datatype == "BYTES":
        return [
            item if isinstance(item, str) else bytes(item).decode("utf-8", "backslashreplace")
            for item in tensor.data.ravel()
        ]
    return np.ascontiguousarray(tensor.data).ravel()


def _numeric_array(name: str, datatype: str, dtype: np.dtype, data: list[Any]) -> np.ndarray:
    """Parse JSON numbers (booleans for BOOL); refuse strings, fractions for integer types, overflow."""
    try:
        parsed = np.asarray(data)
    except ValueError:
        raise InvalidInput(f"input {name!r}: data is ragged; every row must have the same length") from None
    if parsed.size == 0:
        return parsed.astype(dtype)
    if dtype.kind in "iu" and parsed.dtype.kind in "fO":
        # integers past int64 (numpy reads them as uint64, float64 or objects): checked exactly
        parsed = _whole_numbers(name, datatype, data)
    allowed = {"b": "b", "i": "biu", "u": "biu", "f": "bifu"}[dtype.kind]
    if parsed.dtype.kind not in allowed:
        wanted = {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers"}[dtype.kind]
        raise InvalidInput(f"input {name!r} is {datatype}: its data must be JSON {wanted}")
    if dtype.kind in "iu" and parsed.dtype.kind in "iu":
        info = np.iinfo(dtype)
        if parsed.min() < info.min or parsed.max() > info.max:
            raise InvalidInput(f"input {name!r}: a value is outside the range of {datatype}")
    return parsed.astype(dtype, copy=False)


def _whole_numbers(name: str, datatype: str, data: list[Any]) -> np.ndarray:
    """``data`` as an object array of Python ints, refused unless every element is one."""
    objects = np.array(data, dtype=object)
    if not all(isinstance(item, int) for item in objects.ravel()):
        raise InvalidInput(f"input {name!r} is {datatype}: its data must be JSON integers")
    low, high = (objects.min(), objects.max()) if objects.size else (0, 0)
    if low < -(2**63) or high >= 2**64 or (low < 0 and high >= 2**63):  # no 64-bit type holds them
        raise InvalidInput(f"input {name!r}: a value is outside the range of {datatype}")
    return objects.astype(np.uint64 if low >= 0 else np.int64)


def _flatten(name: str, data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        try:
            item = next(stack[-1])
        except StopIteration:
            stack.pop()
            continue
        if isinstance(item, list):
            if len(stack) > 32:
                raise InvalidInput(f"input {name!r}: data is nested deeper than 32 levels")
            stack.append(iter(item))
        else:
            flat.append(item)
    return flat
