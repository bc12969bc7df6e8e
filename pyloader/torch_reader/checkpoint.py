"""Read a PyTorch checkpoint (.pt) without torch: the zip format (torch >= 1.6) and the legacy format.

The native core reads the whole file into memory of its own (`read_bytes`: pread, never a memory map, so a file
truncated or rewritten later cannot touch what was read, and a change while reading is a FormatError "changed
while reading"); the zip directory is read and validated in C++ (`_core.torch_zip_index`); the pickle is
interpreted by `unpickle.load_pickle` (runs nothing). Tensors are numpy arrays viewing those bytes (read-only,
zero-copy); they keep them alive.
"""

from __future__ import annotations

import os

import numpy as np

from .. import _core
from ..boundary import fs_bytes, short_repr, unchanged_file
from ..errors import FormatError
from .policy import RecordStorages, storage_pid
from .records import Storage, StorageType
from .unpickle import load_pickle

__all__ = ["load_torch_checkpoint", "read_bytes"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def load_torch_checkpoint(path) -> object:
    """The unpickled checkpoint: dicts, lists, numpy arrays (tensors) and inert `Record`s (modules)."""
    path = os.fspath(path)
    buf = read_bytes(path)
    if buf[:4].tobytes() == b"PK\x03\x04":
        return _load_zip(path, buf)
    if buf[:2].tobytes() == b"\x80\x02":
        return _load_legacy(path, buf)
    raise FormatError(f"{path}: neither a PyTorch zip archive nor a legacy torch file (first bytes {short_repr(buf[:8].tobytes())})")


def read_bytes(path) -> np.ndarray:
    """The whole file as a read-only uint8 array in memory of its own, checked unchanged while it was read."""
    with unchanged_file(path) as (fd, size):
        return _core.read_file(fd, size, fs_bytes(path))


def _load_zip(path: str, buf: np.ndarray):
    try:
        index = _core.torch_zip_index(buf)
    except FormatError as e:
        raise FormatError(f"{path}: {e}") from None
    prefix = index["prefix"]
    records = index["records"]
    for name, method, size, offset in index["entries"]:
        if name == f"{prefix}/byteorder" and method == 0:
            order = buf[offset : offset + size].tobytes()
            if order.strip() != b"little":
                raise FormatError(f"{path}: zip entry '{name}': byte order {short_repr(order[:16])}, expected b'little'")
    pkl_offset, pkl_size = index["pickle"]
    storages = ZipStorages(path, buf, prefix, records)
    obj, _ = load_pickle(buf, start=pkl_offset, end=pkl_offset + pkl_size, persistent_load=storages,
                         where=storages.where)
    return obj


class ZipStorages(RecordStorages):
    """The persistent_load of a zip checkpoint: storage `key` is the record `<prefix>/data/<key>` (see
    RecordStorages, whose plain case the native pickle replay makes itself)."""

    __slots__ = ()

    def __init__(self, path: str, buf: np.ndarray, prefix: str, records: dict):
        super().__init__(buf, records, f"{path}: zip entry '{prefix}/data.pkl'", f"{path}: zip entry '{prefix}/data/")


def _load_legacy(path: str, buf: np.ndarray):
    """Legacy (pre-1.6) format: magic, protocol, sys_info, main pickle, storage keys, raw storages."""
    pos = 0
    header = []
    for what in ("magic number", "protocol version", "sys_info"):
        value, pos = load_pickle(buf, start=pos, where=f"{path}: legacy {what} pickle")
        header.append(value)
    magic, protocol, sys_info = header
    if magic != _LEGACY_MAGIC:
        raise FormatError(f"{path}: legacy torch file: magic number {short_repr(magic)}, expected {_LEGACY_MAGIC:#x}")
    if protocol != _LEGACY_PROTOCOL:
        raise FormatError(f"{path}: legacy torch file: protocol version {short_repr(protocol)}, expected {_LEGACY_PROTOCOL}")
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        raise FormatError(f"{path}: legacy torch file written on a big-endian machine")
    main_start = pos
    where = f"{path}: legacy main pickle"

    # Pass 1: the pickle's storages (type, numel) and its end; tensors are not built yet. Nothing is allocated
    # for what the pickle claims: every storage must fit in the file (all of them together too), and the
    # placeholder each tensor views in this pass is the file's own bytes (pass 2 replaces them all).
    seen: dict[str, tuple[StorageType, int]] = {}
    claimed = [0]

    def scan_pid(pid):
        if isinstance(pid, tuple) and len(pid) >= 2 and pid[0] == "module":
            return pid[1]  # ('module', class, source file, source): the class (an inert ClassRef)
        stype, key, numel = storage_pid(pid, where)
        if key in seen and seen[key] != (stype, numel):
            raise FormatError(f"{where}: storage '{key}' declared twice differently")
        nbytes = numel * stype.dtype.itemsize
        if key not in seen:
            claimed[0] += nbytes
        if claimed[0] > len(buf):
            raise FormatError(f"{where}: storage '{key}' of {numel} elements: the pickle's storages need "
                              f"{claimed[0]} bytes, more than the file's {len(buf)}")
        seen[key] = (stype, numel)
        return Storage(stype.dtype, key, numel, buf[:nbytes].view(stype.dtype), f"{where}: storage '{key}'")

    _, pos = load_pickle(buf, start=main_start, persistent_load=scan_pid, where=where)
    keys, pos = load_pickle(buf, start=pos, where=f"{path}: legacy storage key list")
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)) or sorted(keys) != sorted(seen):
        raise FormatError(f"{where}: the storage key list does not match the storages the pickle uses")
    try:
        located = _core.legacy_storages(buf, pos, [seen[k][0].dtype.itemsize for k in keys])
    except FormatError as e:
        raise FormatError(f"{path}: {e}") from None
    storages = {}
    for k, (offset, numel) in zip(keys, located):
        stype, want = seen[k]
        if numel != want:
            raise FormatError(f"{path}: legacy storage '{k}': {numel} elements on disk, the pickle says {want}")
        arr = buf[offset : offset + numel * stype.dtype.itemsize].view(stype.dtype)
        storages[k] = Storage(stype.dtype, k, numel, arr, f"{path}: legacy storage '{k}'")

    # Pass 2: the same pickle with the real storages.
    def persistent_load(pid):
        if isinstance(pid, tuple) and len(pid) >= 2 and pid[0] == "module":
            return pid[1]
        stype, key, numel = storage_pid(pid, where)
        s = storages[key]
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            raise FormatError(f"{where}: storage '{key}': storage views (pre-0.4 files) are not supported")
        return s

    obj, _ = load_pickle(buf, start=main_start, persistent_load=persistent_load, where=where)
    return obj
