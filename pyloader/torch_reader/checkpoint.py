"""Read a PyTorch checkpoint (.pt) without torch: the zip format (torch >= 1.6) and the legacy format.

Everything is read with pread into memory of its own, never memory-mapped (a file truncated or rewritten later
cannot touch what was read), and the file must be unchanged from its opening until its last byte is read
(boundary.unchanged_file: FormatError "changed while reading" otherwise).

A zip checkpoint is read in two steps (`_core.torch_zip_open`, `_core.read_into_image`): first its directory,
validated in C++, and its pickle, which `unpickle.load_pickle` interprets (it runs nothing) into tensors that are
read-only numpy views of an image of the file (memory of its own); then only the bytes of the storage records
that the tensors in use view (`used`: the model, not a trainer's optimizer state or second model copy), in
parallel, sorted by offset, with the archive's other bytes that are no storage (directory, headers, pickle);
the bytes of the storages not used are then zero. The legacy (pre-1.6) format is read whole (`read_bytes`).

`cached(path, used, key, make)`: what a caller makes of a zip checkpoint's content (a family's plan), kept per
process and handed out again while the file is unchanged: the same identity (device, inode, size, modification
and change times; a write or os.utime sets the change time) AND, read again and compared each time, the same
bytes wherever the content came from (every byte of the file but those of the storages not used). The tensors'
arrays view the kept image, which is never written again: a value handed out twice is the parse of the file as it
is now. PYLOADER_READ_CACHE=0 turns it off; `clear_cache()` empties it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .. import _core
from ..boundary import fs_bytes, short_repr, unchanged_file
from ..errors import FormatError
from .policy import RecordStorages, storage_pid
from .records import MethodRef, Record, Storage, StorageType
from .unpickle import load_pickle

__all__ = ["load_torch_checkpoint", "read_bytes", "cached", "clear_cache"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def load_torch_checkpoint(path, used=None) -> object:
    """The unpickled checkpoint: dicts, lists, numpy arrays (tensors) and inert `Record`s (modules).

    `used(checkpoint)`: the part of it whose tensors the caller reads (the model record); of a zip checkpoint only
    the storages those tensors view are read, and every other tensor holds zeros. None: all of them are read.
    """
    path = os.fspath(path)
    with unchanged_file(path) as (fd, size):
        head = os.pread(fd, 8, 0)
        if head[:4] == b"PK\x03\x04":
            return _load_zip(path, fd, size, used).content
        if head[:2] == b"\x80\x02":
            return _load_legacy(path, _read_whole(path, fd, size))
    raise FormatError(f"{path}: neither a PyTorch zip archive nor a legacy torch file (first bytes {short_repr(head)})")


def read_bytes(path) -> np.ndarray:
    """The whole file as a read-only uint8 array in memory of its own, checked unchanged while it was read (what
    the legacy container reads; the benchmark's pickle stage and the zip tests read files so too)."""
    with unchanged_file(path) as (fd, size):
        return _read_whole(path, fd, size)


def _read_whole(path: str, fd: int, size: int) -> np.ndarray:
    return _core.read_file(fd, size, fs_bytes(path))


@dataclass
class _Zip:
    """A zip checkpoint as read: its content, the image its tensors view, and the (offset, length) ranges of the
    file the content was made from (all but the storages not used), as read into the image."""

    content: object
    image: np.ndarray
    compared: list
    ident: tuple = ()
    made: dict = field(default_factory=dict)  # cached(): key -> value made of the content


def _load_zip(path: str, fd: int, size: int, used) -> _Zip:
    image, index = _core.torch_zip_open(fd, size, fs_bytes(path))
    prefix = index["prefix"]
    records = index["records"]
    order = []  # the byte order entry's range: compared by cached() too
    for name, method, n, offset in index["entries"]:
        if name == f"{prefix}/byteorder" and method == 0:
            value = os.pread(fd, min(n, 64), offset)
            if n > 64 or value.strip() != b"little":
                raise FormatError(f"{path}: zip entry '{name}': byte order {short_repr(value[:16])}, "
                                  "expected b'little'")
            order.append((offset, n))
    pkl_offset, pkl_size = index["pickle"]
    storages = ZipStorages(path, image, prefix, records)
    obj, _ = load_pickle(image, start=pkl_offset, end=pkl_offset + pkl_size, persistent_load=storages,
                         where=storages.where)
    ranges = _core.viewed_ranges(obj if used is None else used(obj), image, _FOLLOW)
    # the last read (unchanged_file checks after it); what the image then holds is what the content was made of
    compared = _core.read_into_image(fd, size, fs_bytes(path), image, sorted(ranges + order))
    return _Zip(obj, image, compared)


_CACHE: OrderedDict = OrderedDict()  # path -> _Zip, the most recently used last
_CACHE_LOCK = threading.Lock()
_CACHE_ENTRIES = 4


def cached(path, used, key, make):
    """make(content), content as load_torch_checkpoint(path, used) gives it, kept for the next call with the same
    path, `used` and `key` while the file is unchanged (see the module's docstring). The value is shared by the
    calls that get it: its users must not change it. A legacy checkpoint's is made each time."""
    path = os.fspath(path)
    with unchanged_file(path) as (fd, size):
        st = os.fstat(fd)
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, used)
        with _CACHE_LOCK:
            entry = _CACHE.get(path)
        if not (entry is not None and entry.ident == ident and
                _core.image_matches(fd, size, fs_bytes(path), entry.image, entry.compared)):
            entry = None
            if os.pread(fd, 4, 0) == b"PK\x03\x04" and os.environ.get("PYLOADER_READ_CACHE") != "0":
                entry = _load_zip(path, fd, size, used)
                entry.ident = ident
    if entry is None:
        return make(load_torch_checkpoint(path, used))
    value = entry.made.get(key, _CACHE)
    if value is _CACHE:
        value = entry.made[key] = make(entry.content)
    with _CACHE_LOCK:
        _CACHE[path] = entry
        _CACHE.move_to_end(path)
        while len(_CACHE) > _CACHE_ENTRIES:
            _CACHE.popitem(last=False)
    return value


def clear_cache() -> None:
    """Forget every checkpoint `cached` keeps."""
    with _CACHE_LOCK:
        _CACHE.clear()


# What holds tensors besides dicts, lists, tuples and sets in what a checkpoint's pickle makes (_core.viewed_ranges).
_FOLLOW = {Record: ("args", "state"), MethodRef: ("record",), Storage: ("array",)}


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
