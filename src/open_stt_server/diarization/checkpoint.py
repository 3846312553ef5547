"""Read tensors from a PyTorch checkpoint in the legacy (pre-1.6, non-zip) format without importing torch.

The GE2E voice encoder's weights ship as such a file. The format is a run of pickles: a magic number, the
protocol version, system info, the object itself (tensors refer to storages by persistent id), the list of
storage keys, then each storage's raw bytes preceded by its element count. Only the classes a state dict needs
are let through the unpickler, so a file cannot run code while it is read.
"""

from __future__ import annotations

import collections
import pickle
import struct
from pathlib import Path
from typing import IO, Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    pass


class _Storage:
    def __init__(self, dtype: type, numel: int) -> None:
        self.dtype = np.dtype(dtype)
        self.numel = numel
        self.array: np.ndarray | None = None


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = STORAGE_DTYPES[name]


class _TensorRef:
    """A tensor whose storage bytes come later in the file."""

    def __init__(
        self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialize(self) -> np.ndarray:
        assert self.storage.array is not None
        item = self.storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            self.storage.array[self.offset :],
            shape=self.size,
            strides=tuple(s * item for s in self.stride),
            writeable=False,
        )
        return np.array(view)  # a compact copy


def _rebuild_tensor(storage, offset, size, stride, *_ignored) -> _TensorRef:
    return _TensorRef(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(f"the checkpoint holds a {module}.{name}, which a plain state dict does not")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {pid!r}")
        storage_type, key, _location, numel, view = pid[1:6]
        if view is not None:
            raise CheckpointError("storage views are not supported")
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, numel)
        return self.storages[key]


def load_legacy_checkpoint(path: Path) -> Any:
    """The checkpoint's object, with every tensor as a numpy array."""
    with open(path, "rb") as f:
        try:
            if pickle.load(f) != LEGACY_MAGIC:
                raise CheckpointError("not a legacy PyTorch checkpoint (wrong magic number)")
            if pickle.load(f) != LEGACY_PROTOCOL:
                raise CheckpointError("unsupported checkpoint protocol version")
            pickle.load(f)  # system info: endianness and type sizes of the machine that saved it
            storages: dict[str, _Storage] = {}
            obj = _Unpickler(f, storages).load()
            keys = pickle.load(f)
            for key in keys:
                storage = storages[key]
                (numel,) = struct.unpack("<q", f.read(8))
                raw = f.read(numel * storage.dtype.itemsize)
                if numel != storage.numel or len(raw) != numel * storage.dtype.itemsize:
                    raise CheckpointError("the checkpoint is truncated")
                storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
        except (pickle.UnpicklingError, EOFError, struct.error, KeyError) as exc:
            raise CheckpointError(f"the checkpoint could not be read: {exc}") from None
    return _materialize(obj)


def _materialize(obj: Any) -> Any:
    if isinstance(obj, _TensorRef):
        return obj.materialize()
    if isinstance(obj, dict):
        return type(obj)((k, _materialize(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj
