"""What each opcode with an effect may do: the one definition of the refusals both interpreters apply.

The C++ opcode machine and the reference interpreter (reference.py) run the stack; at GLOBAL, REDUCE, NEWOBJ,
BUILD and PERSID they apply the functions below, which build only inert values (records.py) and call only the
allow-list (allowlist.py):

* a class reference (GLOBAL / STACK_GLOBAL) is an inert `ClassRef`; NEWOBJ on it makes an inert `Record` (class,
  args, state) that BUILD fills. Whether a family supports the class is the family's question (a FormatError
  naming the class), not a safety one;
* REDUCE/INST/OBJ on anything but an allow-listed function is an `UnsafePickleError` (calling a class would run
  its constructor), as are NEWOBJ_EX with keyword arguments;
* BUILD fills records, numpy dtypes/arrays and (only with `{'_metadata': ...}`, what torch's state_dict()
  OrderedDict carries) a dict; any other BUILD on a plain container is an `UnsafePickleError`;
* a persistent id is a torch storage: ('storage', StorageType, key, location, numel) (`storage_pid`);
  `RecordStorages` resolves them to the records of one buffer (a zip checkpoint's).

`Hooks` is the policy as the native replay (csrc/bindings.cpp, `run_pickle`) sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..boundary import short_repr
from ..errors import FormatError, UnsafePickleError
from .allowlist import (ALLOWED_CALL_IDS, ALLOWED_CALLS, FUNCTIONS, NAMESPACE_CLASSES, NumpyArray, NumpyDtype,
                        describe, rebuild_tensor, resolve_global)
from .budget import charge, check_key, copied
from .opcodes import text_value
from .records import ClassRef, Record, Storage, StorageType

__all__ = ["reduce", "record_new", "newobj_ex", "build", "finish_value", "no_storages", "storage_pid",
           "RecordStorages", "Hooks", "hooks_for"]


def finish_value(v):
    """The value a container or STOP receives: a numpy array built by _reconstruct + BUILD is unwrapped."""
    if isinstance(v, NumpyArray):
        if v.array is None:
            raise FormatError("numpy array without state")
        return v.array
    return v


def reduce(fn, args):
    """REDUCE: an allow-listed function called on a tuple (SimpleNamespace subclasses: an inert record)."""
    if isinstance(fn, ClassRef) and (fn.module, fn.name) in NAMESPACE_CLASSES and args == ():
        return Record(fn, ())  # REDUCE(cls, ()) + BUILD(dict) sets a namespace's attributes: nothing is called
    if id(fn) not in ALLOWED_CALL_IDS:
        raise UnsafePickleError(f"REDUCE on {describe(fn)}: only allow-listed rebuild functions are called")
    if not isinstance(args, tuple):
        raise FormatError(f"REDUCE arguments must be a tuple, got {type(args).__name__}")
    for a in args:
        if type(a) is NumpyArray:
            return fn(*[finish_value(a) for a in args])
    return fn(*args)


def record_new(cls, args, op):
    """NEWOBJ (and INST, OBJ, refused) on a class: an inert Record."""
    if op in ("INST", "OBJ"):
        # Protocols 0/1 call the class itself (cls(*args) runs its constructor); checkpoints (protocol 2+) use
        # NEWOBJ, which only allocates.
        raise UnsafePickleError(f"{op} on {describe(cls)} would call the class (its constructor runs)")
    if not isinstance(cls, ClassRef):
        raise UnsafePickleError(f"{op} on {describe(cls)}: only allowed model classes can be instantiated")
    if not isinstance(args, tuple):
        raise FormatError(f"{op}: arguments must be a tuple, got {type(args).__name__}")
    return Record(cls, args)


def newobj_ex(cls, args, kwargs):
    if kwargs:
        raise UnsafePickleError("NEWOBJ_EX with keyword arguments")
    return record_new(cls, args, "NEWOBJ_EX")


def build(obj, state):
    """BUILD: `state` set on `obj` (the value under it on the stack)."""
    state = finish_value(state)
    if isinstance(obj, Record):
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            if state[0]:
                charge(state[0], len(state[0]), "dict", "BUILD")
            if isinstance(state[1], dict):
                charge(state[1], len(state[1]), "dict", "BUILD")
            merged = dict(state[0] or {})
            if isinstance(state[1], dict):
                merged.update(state[1])
            state = copied(merged)
        if obj.state is None:
            obj.state = state
        elif isinstance(obj.state, dict) and isinstance(state, dict):
            charge(state, len(state), "dict", "BUILD")
            obj.state.update(state)
        else:
            raise FormatError(f"BUILD on {short_repr(obj)}: incompatible state {type(state).__name__}")
        return
    if isinstance(obj, (NumpyDtype, NumpyArray)):
        obj.build(state)
        return
    if isinstance(obj, np.ndarray) and (state is None or state == {} or state == (None, {})):
        return  # a tensor with no Python attributes
    if isinstance(obj, dict) and not state:
        return
    if isinstance(obj, dict) and isinstance(state, dict) and set(state) == {"_metadata"} \
            and isinstance(state["_metadata"], dict):
        return  # torch's state_dict(): an OrderedDict carrying its modules' versions as `_metadata` (dropped)
    raise UnsafePickleError(f"BUILD on {describe(obj)} is not something a checkpoint does")


def no_storages(pid):
    """The persistent_load of a pickle that has no storages."""
    raise FormatError("a persistent id, but this pickle has no storages")


def storage_pid(pid, where):
    """A torch storage's persistent id: ('storage', StorageType, key, location, numel, ...) -> (type, key, numel)."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        raise FormatError(f"{where}: persistent id {short_repr(pid)}: expected ('storage', type, key, location, numel)")
    _, stype, key, _location, numel = pid[:5]
    if not isinstance(stype, StorageType):
        raise FormatError(f"{where}: persistent id names storage type {short_repr(stype)}, not a torch storage class")
    if not isinstance(key, str) or not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
        raise FormatError(f"{where}: persistent id with key {short_repr(key)} and numel {short_repr(numel)}")
    return stype, key, numel


class RecordStorages:
    """A persistent_load whose storages are records of one buffer: ('storage', type, key, location, numel) -> a
    `Storage` viewing record `key` (zero-copy), one per key, checked against the record's size.

    `buf`: a 1-d uint8 array; `records`: {key: (offset, size)} inside it (validated by whoever made them);
    `cache`: {key: Storage} made so far; `where`: the pickle, for messages; `entry_where`: a storage's `where` is
    entry_where + key + "'". The native replay makes the plain case itself from these, handed over by `hooks_for`
    (a 5-tuple id of a key not seen before whose record holds the storage: the same Storage, `where` and view, put
    in `cache`), and calls this object for anything else, so `__call__` is the definition and words every refusal.
    """

    __slots__ = ("buf", "records", "cache", "where", "entry_where")

    def __init__(self, buf: np.ndarray, records: dict, where: str, entry_where: str):
        self.buf = buf
        self.records = records
        self.cache: dict[str, Storage] = {}
        self.where = where
        self.entry_where = entry_where

    def __call__(self, pid):
        stype, key, numel = storage_pid(pid, self.where)
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


@dataclass(frozen=True)
class Hooks:
    """The policy as the native replay (csrc/bindings.cpp, `run_pickle`) sees it: the only Python names the C++
    side knows are these attributes (read once per pickle) and the fields of the value types its fast paths
    make or check (Storage: dtype, key, numel, array, where; StorageType: dtype). Each function refuses by
    raising FormatError / UnsafePickleError.

    At the effects: resolve_global(module, name) for GLOBAL, STACK_GLOBAL and INST's class; reduce(fn, args)
    for a REDUCE not made directly (a plain tuple and a function of `allowed_calls` is called directly);
    record_new(cls, args, opname) for NEWOBJ, OBJ and INST; newobj_ex(cls, args, kwargs); build(obj, state);
    persistent_load(pid) for PERSID and BINPERSID; check_key(key, what) for a dict key or set member other than
    a str or an int within 2^61; text_value(op, line) for I, L, F, S, V; finish_value(v) for a value of type
    `numpy_array_type` put into a container or returned. `format_error`: the class of the structural errors the
    replay finds itself.

    Fast paths, done in C++ in their plain case only (anything else calls the Python function, which decides
    and words the refusal): `rebuild_tensor`, `rebuild_parameter`, `ordered_dict`, `make_set` (the allow-listed
    functions, recognised by identity), `storage_class` / `storage_type_class` (Storage and StorageType), and
    RecordStorages.__call__ when `storage_buf`, `storage_records`, `storage_cache` and `storage_entry_where` are
    set (see RecordStorages; all None otherwise).
    """

    persistent_load: Callable = no_storages
    storage_buf: np.ndarray | None = None
    storage_records: dict | None = None
    storage_cache: dict | None = None
    storage_entry_where: str | None = None
    resolve_global: Callable = resolve_global
    reduce: Callable = reduce
    record_new: Callable = record_new
    newobj_ex: Callable = newobj_ex
    build: Callable = build
    check_key: Callable = check_key
    text_value: Callable = text_value
    finish_value: Callable = finish_value
    numpy_array_type: type = NumpyArray
    format_error: type = FormatError
    allowed_calls: tuple = ALLOWED_CALLS
    rebuild_tensor: Callable = rebuild_tensor
    rebuild_parameter: Callable = FUNCTIONS["torch._utils", "_rebuild_parameter"]
    ordered_dict: Callable = FUNCTIONS["collections", "OrderedDict"]
    make_set: Callable = FUNCTIONS["builtins", "set"]
    storage_class: type = Storage
    storage_type_class: type = StorageType


_NO_STORAGES = Hooks()


def hooks_for(persistent_load: Callable | None) -> Hooks:
    """The hooks of a pickle whose persistent ids `persistent_load` resolves (None: it has no storages)."""
    if persistent_load is None:
        return _NO_STORAGES
    if isinstance(persistent_load, RecordStorages):
        s = persistent_load
        return Hooks(s, s.buf, s.records, s.cache, s.entry_where)
    return Hooks(persistent_load)
