"""The differential check of the pickle readers, shared by fuzz/atheris_pickle.py and tests/test_pickle_native.py.

`check(data)`: load_pickle (the native opcode machine) and load_pickle_reference (the Python interpreter) must
give the same value and end position, or fail with the same error class (FormatError / UnsafePickleError); the
native path may also refuse values nested deeper than its limit. Nothing but FormatError may escape the native
path unless the reference raises the same. Raises AssertionError on a difference.
"""

import math

import numpy as np

from pyloader.errors import FormatError
from pyloader.torch_reader.allowlist import NumpyDtype
from pyloader.torch_reader.records import ClassRef, MethodRef, Record, Storage, StorageType
from pyloader.torch_reader.unpickle import load_pickle, load_pickle_reference


def _storage_loader():
    def persistent_load(pid):
        if isinstance(pid, tuple) and len(pid) == 5 and isinstance(pid[1], StorageType) and \
                isinstance(pid[4], int) and 0 <= pid[4] < 1 << 12:
            return Storage(pid[1].dtype, str(pid[2]), pid[4], np.zeros(pid[4], pid[1].dtype))
        raise FormatError("bad persistent id")
    return persistent_load


def same(a, b, seen=None, depth=0) -> bool:
    if depth > 200:
        return True
    seen = {} if seen is None else seen
    key = (id(a), id(b))
    if key in seen:
        return True
    seen[key] = True
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return (a.shape == b.shape and a.dtype == b.dtype and a.strides == b.strides and
                all(a.flags[f] == b.flags[f] for f in ("C_CONTIGUOUS", "F_CONTIGUOUS", "WRITEABLE", "ALIGNED")) and
                np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y, seen, depth + 1) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(same(x, y, seen, depth + 1) for x, y in zip(a.items(), b.items()))
    if isinstance(a, Record):
        return a.cls == b.cls and same(a.args, b.args, seen, depth + 1) and same(a.state, b.state, seen, depth + 1)
    if isinstance(a, Storage):
        return a.key == b.key and a.numel == b.numel and a.dtype == b.dtype
    if isinstance(a, (set, frozenset)):
        return len(a) == len(b)
    if isinstance(a, (NumpyDtype,)):
        return a.dtype == b.dtype
    if isinstance(a, MethodRef):
        return a.name == b.name and same(a.record, b.record, seen, depth + 1)
    if callable(a) and not isinstance(a, ClassRef):
        return a is b
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return True


def check(data: bytes, start: int = 0):
    def call(fn):
        try:
            return "ok", fn(data, start=start, persistent_load=_storage_loader())
        except Exception as e:  # noqa: BLE001
            return "err", e
    got = call(load_pickle)
    ref = call(load_pickle_reference)
    if got[0] == "err" and not isinstance(got[1], FormatError):
        if not (ref[0] == "err" and type(ref[1]) is type(got[1])):
            raise AssertionError(f"native path let {type(got[1]).__name__} escape: {got[1]!s:.300}")
        return
    if got[0] == "err" and ("nested deeper than" in str(got[1]) or "nested more than" in str(got[1])):
        return
    if got[0] != ref[0]:
        raise AssertionError(f"native {got[0]}: {str(got[1])[:300]} / reference {ref[0]}: {str(ref[1])[:300]}")
    if got[0] == "err":
        if type(got[1]) is not type(ref[1]) and isinstance(ref[1], FormatError):
            raise AssertionError(f"error classes differ: {got[1]!s:.300} / {ref[1]!s:.300}")
        return
    if got[1][1] != ref[1][1] or not same(got[1][0], ref[1][0]):
        raise AssertionError(f"values differ: {got[1][0]!r:.300} / {ref[1][0]!r:.300}")
