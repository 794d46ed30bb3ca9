from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from edgeinfer.errors import InvalidInput
from edgeinfer.serving.codecs.tensors import (
    deserialize_bytes,
    serialize_bytes,
    tensor_from_json,
    tensor_from_raw,
    tensor_to_json,
    tensor_to_raw,
)
from edgeinfer.serving.protocol import Tensor


def test_bytes_round_trip_with_length_prefixes() -> None:
    items = np.array([b"\xff\xd8jpeg", b"", "text"], dtype=object)
    raw = serialize_bytes(items)
    assert raw[:4] == (6).to_bytes(4, "little")
    back = deserialize_bytes("image", raw, 3)
    assert list(back) == [b"\xff\xd8jpeg", b"", b"text"]


@pytest.mark.parametrize(
    ("raw", "count", "message"),
    [
        (b"\x05\x00\x00\x00abc", 1, "truncated: element 0 says 5 bytes but only 3 remain"),
        (b"\x01\x00\x00\x00a\x00\x00\x00", 2, "element 1 of 2 has no length prefix"),
        (b"\x01\x00", 1, "claims 1 elements but its 2 bytes of data hold at most 0"),
        (b"\x01\x00\x00\x00a\x00", 1, "1 bytes after its 1 elements"),
    ],
)
def test_bytes_that_do_not_add_up_are_refused(raw: bytes, count: int, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        deserialize_bytes("image", raw, count)


@pytest.mark.parametrize("shape", [(2**25,), (2**40,), (2**62,), (2**31, 2**31)])
def test_a_bytes_shape_larger_than_its_data_is_refused_before_allocating(shape: tuple[int, ...]) -> None:
    raw = b"\x03\x00\x00\x00abc" * 4  # 4 elements; the shape claims far more
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput, match=r"bytes of data hold at most 7|too large to be a real"):
            tensor_from_raw("image", "BYTES", shape, raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("shape", [(0, 2**62), (0, 2**64), (2**40, 2**40, 0)])
def test_an_empty_tensor_with_absurd_dimensions_is_refused(shape: tuple[int, ...]) -> None:
    for datatype in ("FP32", "BYTES"):
        with pytest.raises(InvalidInput, match="too large to be a real tensor"):
            tensor_from_raw("x", datatype, shape, b"")
        with pytest.raises(InvalidInput, match="too large to be a real tensor"):
            tensor_from_json("x", datatype, shape, [])


def test_an_empty_tensor_keeps_its_shape() -> None:
    assert tensor_from_raw("x", "FP32", (0, 3), b"").data.shape == (0, 3)
    assert tensor_from_raw("x", "BYTES", (2, 0), b"").data.shape == (2, 0)


def test_raw_fp32_round_trip_is_little_endian() -> None:
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    raw = tensor_to_raw(Tensor("x", "FP32", (2, 3), data))
    assert raw == data.astype("<f4").tobytes()
    back = tensor_from_raw("x", "FP32", (2, 3), raw)
    np.testing.assert_array_equal(back.data, data)


def test_raw_size_must_match_the_shape() -> None:
    with pytest.raises(InvalidInput, match=r"needs 24 bytes of data, got 20"):
        tensor_from_raw("x", "FP32", (2, 3), b"\x00" * 20)


def test_unknown_datatype_names_the_choices() -> None:
    with pytest.raises(InvalidInput, match=r"unknown datatype 'FLOAT'.*FP32"):
        tensor_from_raw("x", "FLOAT", (1,), b"\x00" * 4)


def test_negative_dimension_is_refused() -> None:
    with pytest.raises(InvalidInput, match="negative dimension"):
        tensor_from_json("x", "FP32", (-1, 3), [1, 2, 3])


def test_json_flat_and_nested_give_the_same_tensor() -> None:
    flat = tensor_from_json("x", "FP32", (2, 2), [1, 2, 3, 4])
    nested = tensor_from_json("x", "FP32", (2, 2), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(flat.data, nested.data)
    assert flat.data.dtype == np.float32


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "message"),
    [
        ("FP32", (2, 2), [1, 2, 3], r"shape \[2, 2\] \(4 elements\) but its data holds 3"),
        ("FP32", (2, 2), [[1, 2], [3]], "ragged"),
        ("FP32", (2,), ["1.5", "2"], "must be JSON numbers"),
        ("INT32", (2,), [1.5, 2], "must be JSON integers"),
        ("UINT8", (1,), [300], "outside the range of UINT8"),
        ("UINT64", (1,), [2**64], "outside the range of UINT64"),
        ("UINT64", (1,), [-1], "outside the range of UINT64"),
        ("INT64", (2,), [-1, 2**63], "outside the range of INT64"),
        ("UINT64", (2,), [1.5, 2**64 - 1], "must be JSON integers"),
        ("BOOL", (1,), [1], "must be JSON booleans"),
        ("BYTES", (1,), [5], "must hold JSON strings"),
    ],
)
def test_bad_json_data_is_refused_with_the_reason(
    datatype: str, shape: tuple[int, ...], data: object, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        tensor_from_json("x", datatype, shape, data)


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        ("UINT64", [2**64 - 1]),
        ("UINT64", [1, 2**64 - 1]),
        ("UINT64", [[2**63], [0]]),
        ("INT64", [-(2**63), 2**63 - 1]),
    ],
)
def test_64_bit_integers_past_int64_keep_every_bit(datatype: str, data: list[object]) -> None:
    # numpy reads them as uint64, float64 (rounded) or objects; each was refused as "not integers"
    tensor = tensor_from_json("x", datatype, (2, 1) if isinstance(data[0], list) else (len(data),), data)
    flat = [v[0] if isinstance(v, list) else v for v in data]
    assert tensor.data.dtype == np.dtype(datatype.lower()) and tensor.data.ravel().tolist() == flat


def test_json_bytes_stay_strings_so_a_model_can_tell_base64() -> None:
    tensor = tensor_from_json("image", "BYTES", (2,), ["aGVsbG8=", "d29ybGQ="])
    assert list(tensor.data) == ["aGVsbG8=", "d29ybGQ="]


def test_to_json_is_flat_row_major() -> None:
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = tensor_to_json(Tensor("y", "FP32", (2, 3), data))
    assert list(np.asarray(out)) == [0, 1, 2, 3, 4, 5]
    strings = tensor_to_json(Tensor("y", "BYTES", (1, 2), np.array([[b"0.5:1:cat", "x"]], dtype=object)))
    assert strings == ["0.5:1:cat", "x"]
