"""Read a PyTorch state dict without torch and without trusting its pickles.

A torch checkpoint is one or more pickles plus raw tensor bytes, in one of two layouts:

* legacy (``torch.save(..., _use_new_zipfile_serialization=False)``, torch < 1.6): a run of pickles
  (magic number, protocol version, sys_info, the state dict, the list of storage keys) followed, for
  each key, by an int64 little-endian element count and the storage's raw bytes;
* zip (torch >= 1.6): ``<archive>/data.pkl`` plus one ``<archive>/data/<key>`` entry per storage.

Every pickle is scanned with :mod:`pickletools` first: an opcode or a global outside the allow-list
raises :class:`UnsafeCheckpoint` before anything is unpickled. The unpickler then maps the few allowed
globals to stand-ins of our own, so even a pickle that slipped past the scan cannot reach real code.
"""

from __future__ import annotations

import hashlib
import io
import math
import pickle
import pickletools
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer.errors import EdgeInferError, IntegrityError, NotFound, UnsafeCheckpoint

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# Binary opcodes (protocols 2-4) a state dict needs: constants, containers, the memo, globals,
# REDUCE (calling an allowed global), BUILD (OrderedDict's _metadata) and BINPERSID (storages).
ALLOWED_OPCODES = frozenset(
    {
        "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
        "NONE", "NEWTRUE", "NEWFALSE", "BININT", "BININT1", "BININT2", "LONG1", "LONG4", "BINFLOAT",
        "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
        "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
        "EMPTY_LIST", "APPEND", "APPENDS", "EMPTY_DICT", "SETITEM", "SETITEMS",
        "BINPUT", "LONG_BINPUT", "MEMOIZE", "BINGET", "LONG_BINGET",
        "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "BINPERSID",
    }
)  # fmt: skip

_STRING_OPCODES = frozenset({"BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"})
_MEMO_PUT_OPCODES = frozenset({"BINPUT", "LONG_BINPUT", "MEMOIZE"})

# torch.<Name>Storage -> numpy dtype. bfloat16 has no numpy dtype: it is widened to float32.
STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    "UntypedStorage": np.dtype("u1"),
}
_REBUILD_FUNCTIONS = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter")
ALLOWED_GLOBALS = frozenset(
    {("collections", "OrderedDict")}
    | {("torch._utils", name) for name in _REBUILD_FUNCTIONS}
    | {("torch", name) for name in STORAGE_DTYPES}
    | {("torch.storage", "UntypedStorage")}
)


class _NoState:
    """Base of every stand-in: a pickle may not BUILD (set attributes on) one of our objects."""

    def __setstate__(self, state: object) -> None:
        raise UnsafeCheckpoint(f"pickle tried to set state on {type(self).__name__}")


@dataclass(frozen=True)
class _StorageType(_NoState):
    """Stand-in for ``torch.FloatStorage`` and friends: only carries the element type."""

    name: str
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class _Storage(_NoState):
    """A storage named by a persistent id; its bytes are found later by ``key``."""

    key: str
    dtype: np.dtype[Any]
    bfloat16: bool


@dataclass(frozen=True)
class _Tensor(_NoState):
    """A view (offset, shape, strides in elements) into a storage, materialised once bytes are read."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _StateDict(OrderedDict[Any, Any]):
    """Stand-in for ``collections.OrderedDict``; drops the ``_metadata`` torch attaches with BUILD."""

    def __setstate__(self, state: object) -> None:
        return None


def _rebuild_tensor(storage: object, offset: object, shape: object, stride: object, *_: object) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise IntegrityError(f"tensor rebuilt from {type(storage).__name__}, expected a storage")
    if not isinstance(offset, int) or not isinstance(shape, tuple) or not isinstance(stride, tuple):
        raise IntegrityError("tensor offset, shape or stride has the wrong type")
    if len(shape) != len(stride) or not all(isinstance(d, int) and d >= 0 for d in (*shape, *stride)):
        raise IntegrityError(f"bad tensor geometry: shape {shape}, stride {stride}")
    return _Tensor(storage, offset, shape, stride)


def _rebuild_parameter(data: object, *_: object) -> object:
    return data


class _Callable(_NoState):
    """Wraps one allowed function so the pickle sees an object it cannot modify."""

    def __init__(self, function: Callable[..., object]) -> None:
        self._function = function

    def __call__(self, *args: object) -> object:
        return self._function(*args)


_STAND_INS: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): _StateDict,
    ("torch._utils", "_rebuild_tensor"): _Callable(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _Callable(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _Callable(_rebuild_parameter),
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", STORAGE_DTYPES["UntypedStorage"]),
    **{("torch", name): _StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
}


def scan_pickle(data: bytes, start: int = 0) -> int:
    """Check one pickle starting at ``start`` against the allow-lists; return the offset after STOP."""
    strings: list[str] = []  # the last strings pushed, to name a STACK_GLOBAL's target
    try:
        for opcode, arg, maybe_pos in pickletools.genops(io.BytesIO(data[start:])):
            name, pos = opcode.name, maybe_pos or 0
            if name not in ALLOWED_OPCODES:
                raise UnsafeCheckpoint(f"pickle opcode {name} at byte {start + pos} is not allowed")
            if name == "GLOBAL":
                _check_global(*str(arg).split(" ", 1))
            elif name == "STACK_GLOBAL":
                if len(strings) < 2:
                    raise UnsafeCheckpoint(f"STACK_GLOBAL at byte {start + pos} with a computed name")
                _check_global(strings[-2], strings[-1])
            if name in _STRING_OPCODES:
                strings = [*strings[-1:], str(arg)]
            elif name not in _MEMO_PUT_OPCODES:
                strings = []
            if name == "STOP":
                return start + pos + 1
    except ValueError as exc:  # genops: unknown opcode or data ending before STOP
        raise IntegrityError(f"corrupt or truncated pickle at byte {start}: {exc}") from exc
    raise IntegrityError(f"pickle at byte {start} ends before its STOP opcode")


def _check_global(module: str, name: str) -> None:
    if (module, name) not in ALLOWED_GLOBALS:
        raise UnsafeCheckpoint(f"pickle global {module}.{name} is not allowed in a state dict")


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, stream: io.BytesIO, persistent_load: Callable[[Any], object] | None) -> None:
        super().__init__(stream)
        self._persistent_load = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        stand_in = _STAND_INS.get((module, name))
        if stand_in is None:
            raise UnsafeCheckpoint(f"pickle global {module}.{name} is not allowed in a state dict")
        return stand_in

    def persistent_load(self, pid: Any) -> object:
        if self._persistent_load is None:
            raise UnsafeCheckpoint(f"unexpected persistent id {pid!r}")
        return self._persistent_load(pid)


def _load_pickle(
    data: bytes, start: int, persistent_load: Callable[[Any], object] | None = None
) -> tuple[object, int]:
    """Scan, then unpickle, the pickle at ``start``; return the object and the offset after it."""
    end = scan_pickle(data, start)
    try:
        obj = _SafeUnpickler(io.BytesIO(data[start:end]), persistent_load).load()
    except EdgeInferError:
        raise
    except Exception as exc:  # a malformed pickle can fail in many ways; none of them is ours to leak
        raise IntegrityError(f"cannot unpickle the checkpoint at byte {start}: {exc}") from exc
    return obj, end


class _Storages:
    """Collects the storages a state-dict pickle refers to, by key."""

    def __init__(self) -> None:
        self.by_key: dict[str, _Storage] = {}

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise UnsafeCheckpoint(f"unexpected persistent id {pid!r}")
        storage_type, key = pid[1], pid[2]
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise IntegrityError(f"bad storage reference {pid!r}")
        if len(pid) == 6 and pid[5] is not None:
            raise IntegrityError("storage views (torch < 0.4 checkpoints) are not supported")
        bf16 = storage_type.name == "BFloat16Storage"
        return self.by_key.setdefault(key, _Storage(key, storage_type.dtype, bf16))


def _read_legacy(data: bytes) -> tuple[object, dict[str, np.ndarray]]:
    magic, pos = _load_pickle(data, 0)
    if magic != LEGACY_MAGIC:
        raise IntegrityError("not a torch checkpoint: the legacy magic number is missing")
    version, pos = _load_pickle(data, pos)
    if version != LEGACY_PROTOCOL_VERSION:
        raise IntegrityError(f"unsupported legacy torch protocol version {version!r}")
    sys_info, pos = _load_pickle(data, pos)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise IntegrityError("only little-endian torch checkpoints are supported")
    storages = _Storages()
    root, pos = _load_pickle(data, pos, storages.persistent_load)
    keys, pos = _load_pickle(data, pos)
    if (
        not isinstance(keys, list)
        or not all(isinstance(k, str) for k in keys)
        or set(keys) != set(storages.by_key)
    ):
        raise IntegrityError("the checkpoint's storage key list does not match its tensors")
    buffers: dict[str, np.ndarray] = {}
    for key in keys:
        storage = storages.by_key[key]
        if pos + 8 > len(data):
            raise IntegrityError(f"checkpoint truncated before storage {key}")
        (count,) = struct.unpack_from("<q", data, pos)
        nbytes = count * storage.dtype.itemsize
        if count < 0 or pos + 8 + nbytes > len(data):
            raise IntegrityError(f"checkpoint truncated in storage {key} ({count} elements)")
        buffers[key] = np.frombuffer(data, storage.dtype, count, pos + 8)
        pos += 8 + nbytes
    if pos != len(data):
        raise IntegrityError(f"{len(data) - pos} unexpected bytes after the last storage")
    return root, buffers


def _read_zip(data: bytes) -> tuple[object, dict[str, np.ndarray]]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise IntegrityError("not a torch zip checkpoint: expected exactly one <archive>/data.pkl")
            prefix = pickles[0][: -len("data.pkl")]
            names = set(archive.namelist())
            if any(info.compress_type != zipfile.ZIP_STORED for info in archive.infolist()):
                raise IntegrityError(
                    "torch writes uncompressed zip entries; this archive has compressed ones"
                )
            if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder") != b"little":
                raise IntegrityError("only little-endian torch checkpoints are supported")
            storages = _Storages()
            root, _ = _load_pickle(archive.read(pickles[0]), 0, storages.persistent_load)
            buffers: dict[str, np.ndarray] = {}
            for key, storage in storages.by_key.items():
                entry = f"{prefix}data/{key}"
                if entry not in names:
                    raise IntegrityError(f"checkpoint has no data for storage {key}")
                raw = archive.read(entry)
                count = len(raw) // storage.dtype.itemsize
                buffers[key] = np.frombuffer(raw, storage.dtype, count)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:  # CRC errors, truncated members
        raise IntegrityError(f"corrupt torch zip checkpoint: {exc}") from exc
    return root, buffers


def _materialise(name: str, tensor: _Tensor, buffers: dict[str, np.ndarray]) -> np.ndarray:
    buffer = buffers[tensor.storage.key]
    if math.prod(tensor.shape) > max(buffer.size, 1):  # broadcast (stride-0) tensors, or a memory bomb
        raise IntegrityError(f"tensor {name} has more elements than its storage")
    if any(d == 0 for d in tensor.shape):
        array = np.zeros(tensor.shape, buffer.dtype)
    else:
        last = tensor.offset + sum((d - 1) * s for d, s in zip(tensor.shape, tensor.stride, strict=True))
        if tensor.offset < 0 or last >= buffer.size:
            raise IntegrityError(f"tensor {name} reaches past the end of its storage")
        itemsize = buffer.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            buffer[tensor.offset :],
            shape=tensor.shape,
            strides=tuple(s * itemsize for s in tensor.stride),
            writeable=False,
        )
        array = np.array(view, order="C", copy=True)
    if tensor.storage.bfloat16:
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_state_dict(path: Path, expected_sha256: str | None = None) -> dict[str, np.ndarray]:
    """Read a torch state dict (legacy or zip format) as ordered ``name -> contiguous numpy array``.

    Raises :class:`IntegrityError` for a checksum mismatch or a corrupt file and
    :class:`UnsafeCheckpoint` for a pickle that asks for anything a state dict does not need.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFound(f"checkpoint {path} does not exist") from exc
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()  # hash the very bytes we parse
        if actual != expected_sha256.lower():
            raise IntegrityError(f"{path}: sha256 mismatch: expected {expected_sha256}, got {actual}")
    if data[:2] == b"PK" and zipfile.is_zipfile(io.BytesIO(data)):
        root, buffers = _read_zip(data)
    elif data[:1] == b"\x80":
        root, buffers = _read_legacy(data)
    else:
        raise IntegrityError(f"{path} is not a torch checkpoint (neither a zip nor a pickle)")
    if not isinstance(root, dict):
        raise IntegrityError(f"{path} holds a {type(root).__name__}, not a state dict")
    state: dict[str, np.ndarray] = {}
    for name, value in root.items():
        if not isinstance(name, str) or not isinstance(value, _Tensor):
            raise IntegrityError(f"{path}: state dict entry {name!r} is not a named tensor")
        state[name] = _materialise(name, value, buffers)
    return state
