"""Read a PyTorch checkpoint (.pt) without torch: the zip format (torch >= 1.6) and the legacy format.

The file is memory-mapped by the native core (`_core.map_file`); the zip directory is read and validated in
C++ (`_core.torch_zip_index`); the pickle is interpreted by `pickle_reader` (runs nothing). Tensors are
numpy arrays viewing the map (read-only, zero-copy); they keep the map alive.
"""

from __future__ import annotations

import os

import numpy as np

from .. import _core
from ..boundary import short_repr
from ..errors import FormatError
from .pickle_reader import StorageType, Storage, load_pickle

__all__ = ["load_torch_checkpoint"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def load_torch_checkpoint(path) -> object:
    """The unpickled checkpoint: dicts, lists, numpy arrays (tensors) and inert `Record`s (modules)."""
    path = os.fspath(path)
    try:
        buf = _core.map_file(os.fsencode(path))
    except FormatError:
        raise
    if buf[:4].tobytes() == b"PK\x03\x04":
        return _load_zip(path, buf)
    if buf[:2].tobytes() == b"\x80\x02":
        return _load_legacy(path, buf)
    raise FormatError(f"{path}: neither a PyTorch zip archive nor a legacy torch file (first bytes {short_repr(buf[:8].tobytes())})")


def _storage_pid(pid, where):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        raise FormatError(f"{where}: persistent id {short_repr(pid)}: expected ('storage', type, key, location, numel)")
    _, stype, key, _location, numel = pid[:5]
    if not isinstance(stype, StorageType):
        raise FormatError(f"{where}: persistent id names storage type {short_repr(stype)}, not a torch storage class")
    if not isinstance(key, str) or not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
        raise FormatError(f"{where}: persistent id with key {short_repr(key)} and numel {short_repr(numel)}")
    return stype, key, numel


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


class ZipStorages:
    """The persistent_load of a zip checkpoint: ('storage', type, key, location, numel) -> a `Storage` viewing the
    record `<prefix>/data/<key>` (zero-copy), one per key, checked against the record's size.

    The native pickle replay (pickle_native) does the plain case itself from these attributes (a 5-tuple id of a
    key not seen before whose record is big enough: the same Storage, `where` and view) and calls this object
    for anything else, so `__call__` is the definition and words every refusal.
    """

    __slots__ = ("buf", "records", "cache", "where", "entry_where")

    def __init__(self, path: str, buf: np.ndarray, prefix: str, records: dict):
        self.buf = buf
        self.records = records  # key -> (offset, size), validated by the zip index
        self.cache: dict[str, Storage] = {}
        self.where = f"{path}: zip entry '{prefix}/data.pkl'"
        self.entry_where = f"{path}: zip entry '{prefix}/data/"  # + key + "'"

    def __call__(self, pid):
        stype, key, numel = _storage_pid(pid, self.where)
        where = f"{self.entry_where}{key}'"
        if key in self.cache:
            s = self.cache[key]
            if s.dtype != stype.dtype:
                raise FormatError(f"{where}: viewed as {s.dtype} and as {stype.dtype}")
            return s
        if key not in self.records:
            raise FormatError(f"{where}: the pickle refers to storage '{key}', but the archive has no such record")
        offset, size = self.records[key]
        need = numel * stype.dtype.itemsize
        if size < need:
            raise FormatError(
                f"{where}: {stype.name} of {numel} elements needs {need} bytes, the record holds {size}"
            )
        arr = self.buf[offset : offset + need].view(stype.dtype)
        s = self.cache[key] = Storage(stype.dtype, key, numel, arr, where)
        return s


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
        stype, key, numel = _storage_pid(pid, where)
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
        stype, key, numel = _storage_pid(pid, where)
        s = storages[key]
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            raise FormatError(f"{where}: storage '{key}': storage views (pre-0.4 files) are not supported")
        return s

    obj, _ = load_pickle(buf, start=main_start, persistent_load=persistent_load, where=where)
    return obj
