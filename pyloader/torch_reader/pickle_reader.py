"""A restricted pickle reader: it interprets the opcodes PyTorch checkpoints use and runs nothing.

Python's `pickle` module calls whatever a pickle names (`os.system`, `builtins.eval`, any class's
`__reduce__` target). This reader never imports a module and never calls an object named by the pickle:

* a class reference (GLOBAL / STACK_GLOBAL) becomes an inert `ClassRef` (nothing is imported); NEWOBJ on it
  makes an inert `Record` (class, args, state) that BUILD fills. Whether a family supports the class is the
  family's question (a FormatError naming the class), not a safety one;
* a reference to one of a few allow-listed functions (`torch._utils._rebuild_tensor_v2`,
  `_rebuild_parameter`, `collections.OrderedDict`, `set`, numpy's array reconstruction, ...) resolves to a
  pure function of this module (tensors become numpy arrays over the file's memory map, zero-copy);
* a global of a module that exists to run code (os, subprocess, builtins' eval/exec, ...) raises
  `UnsafePickleError` at the GLOBAL opcode, before anything could have run; so do REDUCE/INST/OBJ on anything
  but an allow-listed function (calling a class would run its constructor), the protocol-5 out-of-band buffer
  opcodes and the extension registry opcodes;
* BUILD fills records, numpy dtypes/arrays and (only with `{'_metadata': ...}`, what torch's state_dict()
  OrderedDict carries) a dict; any other BUILD on a plain container is an `UnsafePickleError`.

Module paths are matched by suffix, so `models.common.Conv` and `yolov5.models.common.Conv` read alike.
"""

from __future__ import annotations

import codecs
import contextlib
import contextvars
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..boundary import MAX_NESTING, error_text, short_repr
from ..errors import FormatError, UnsafePickleError

__all__ = ["ClassRef", "Record", "StorageType", "Storage", "load_pickle", "rebuild_tensor", "is_broadcast",
           "pickle_budget",
           "charge", "check_key", "MAX_NESTING"]


# ---------------------------------------------------------------------------------------------------------
# Inert values


@dataclass(frozen=True)
class ClassRef:
    """A class the pickle names; never imported."""

    module: str
    name: str

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def is_(self, module_suffix: str, name: str) -> bool:
        """True for `name` in a module whose dotted path ends with `module_suffix` (e.g. 'models.common')."""
        return self.name == name and (self.module == module_suffix or self.module.endswith("." + module_suffix))


@dataclass(eq=False)
class Record:
    """An object of an allowed class, as data: its class, constructor args and the state BUILD gave it."""

    cls: ClassRef
    args: tuple = ()
    state: Any = None

    @property
    def type_name(self) -> str:
        return self.cls.name

    def attr(self, name: str, default: Any = None) -> Any:
        return self.state.get(name, default) if isinstance(self.state, dict) else default

    def __repr__(self) -> str:  # short: records can be huge trees
        return f"<{self.cls.qualname} record>"


@dataclass(frozen=True)
class StorageType:
    name: str  # e.g. 'HalfStorage'
    dtype: np.dtype


@dataclass(eq=False)
class Storage:
    """A typed storage: `array` is a 1-d numpy view over the checkpoint's bytes (read-only, not copied)."""

    dtype: np.dtype
    key: str
    numel: int
    array: np.ndarray
    where: str = ""  # e.g. "zip entry 'archive/data/3'", for messages


# ---------------------------------------------------------------------------------------------------------
# Budgets (shared by every interpreter of the policy below)
#
# Work per pickle byte is bounded: the opcodes themselves do O(1) work per byte, and whatever an allow-listed
# function or BUILD copies (items of a dict or set, bytes of a string) is charged, in bytes of memory, against
# the pickle's budget: BUDGET_PER_BYTE per pickle byte plus BUDGET_BASE. The first copy of a value is free
# (its items were written out in the pickle, so it is as big as the pickle's own data); copying the same value
# again is charged. A checkpoint copies each value at most once (a YOLOv5 checkpoint is charged nothing); a
# pickle that calls OrderedDict or bytes a thousand times on one memo entry runs out of budget and is refused
# before the copies exist. The nesting-depth limit is MAX_NESTING (pyloader.boundary).

BUDGET_PER_BYTE = 2
BUDGET_BASE = 1 << 20
_ITEM_BYTES = {"dict": 64, "set": 32, "tuple": 8, "bytes": 1}  # what one copied item costs in memory
MAX_INT_BITS = 63  # sizes, strides, offsets and shapes: int64, as torch stores them
_MAX_KEY_COMPOSITES = 4096  # tuple/frozenset dict keys or set members per pickle (their hashes can be made to collide)


class _Budget:
    __slots__ = ("left", "total", "composite_keys", "copied")

    def __init__(self, nbytes: int):
        self.total = self.left = BUDGET_PER_BYTE * max(int(nbytes), 0) + BUDGET_BASE
        self.composite_keys = _MAX_KEY_COMPOSITES
        self.copied: dict = {}  # id -> value copied once already (kept alive, so ids stay unique)


_BUDGET: contextvars.ContextVar = contextvars.ContextVar("pyloader_pickle_budget", default=None)


@contextlib.contextmanager
def pickle_budget(nbytes: int):
    """The budget of one pickle of `nbytes` bytes; every interpreter runs the policy functions inside one."""
    token = _BUDGET.set(_Budget(nbytes))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def charge(source, items: int, kind: str, what: str) -> None:
    """About to copy `items` items of `source` (kind: 'dict', 'set', 'tuple' or 'bytes' items): free the first
    time `source` is copied, charged against the current pickle's budget after that."""
    b = _BUDGET.get()
    if b is None:
        raise RuntimeError("pickle policy used outside pickle_budget()")
    if id(source) not in b.copied:
        b.copied[id(source)] = source
        return
    b.left -= items * _ITEM_BYTES[kind]
    if b.left < 0:
        raise FormatError(f"{what}: copying the same value again and again, the pickle would allocate more than "
                          f"{b.total} bytes ({BUDGET_PER_BYTE} per pickle byte + {BUDGET_BASE}); a checkpoint "
                          "copies each value at most once (refused: memory amplification)")


def copied(value):
    """`value` is a copy made by a policy function: copying it again is charged (else a chain of copies of
    copies, each a few pickle bytes, would copy the same items over and over for free)."""
    b = _BUDGET.get()
    if b is not None:
        b.copied[id(value)] = value
    return value


_SIMPLE_KEYS = (str, bytes, bool, type(None), float, np.generic)


def check_key(k, what: str = "dict key") -> None:
    """A dict key or set member: hashing it must be cheap and not recursive. Scalars (ints within 2^61, whose
    hashes are distinct), model values hashed by identity, and small flat tuples/frozensets of those."""
    if isinstance(k, _SIMPLE_KEYS):
        return
    if isinstance(k, int):
        if -(1 << 61) < k < (1 << 61):
            return
        raise FormatError(f"{what}: integer of {k.bit_length()} bits (beyond 2^61 integer hashes collide)")
    if isinstance(k, (ClassRef, StorageType, Record, MethodRef)):
        return
    if isinstance(k, (tuple, frozenset)):
        b = _BUDGET.get()
        if b is not None:
            b.composite_keys -= 1
            if b.composite_keys < 0:
                raise FormatError(f"{what}: more than {_MAX_KEY_COMPOSITES} tuple/frozenset keys in one pickle")
        if len(k) > 16:
            raise FormatError(f"{what}: a {type(k).__name__} of {len(k)} items (at most 16 in a key)")
        for x in k:
            if not (isinstance(x, _SIMPLE_KEYS) or (isinstance(x, int) and -(1 << 61) < x < (1 << 61))
                    or isinstance(x, (ClassRef, StorageType))):
                raise FormatError(f"{what}: a {type(k).__name__} holding a {type(x).__name__} "
                                  "(keys nest at most one level)")
        return
    raise FormatError(f"{what}: a {type(k).__name__} cannot be a key or set member")


# ---------------------------------------------------------------------------------------------------------
# The allow-list


_STORAGE_DTYPES = {
    "HalfStorage": np.dtype("<f2"),
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

# Modules whose names a checkpoint never needs and that exist to run code, open files or processes, or reach
# into the interpreter: refused at GLOBAL already, so the message says what the pickle was after. Any other
# global becomes an inert ClassRef; calling one (REDUCE, INST, OBJ) is refused, so nothing named here could run.
_CODE_MODULES = frozenset({
    "os", "posix", "nt", "sys", "subprocess", "shutil", "importlib", "runpy", "code", "codeop", "pty", "socket",
    "pickle", "_pickle", "marshal", "types", "ctypes", "io", "_io", "webbrowser", "operator", "functools",
    "inspect", "pdb", "timeit", "multiprocessing", "threading", "signal", "tempfile", "glob", "pathlib_abc",
    "__main__", "site", "gc", "weakref", "asyncio", "commands", "popen2", "platform", "sysconfig", "urllib",
    "http", "ftplib", "smtplib", "telnetlib", "xmlrpc", "distutils", "setuptools", "pip", "cffi",
})
_INERT_BUILTINS = frozenset({"object", "int", "float", "complex", "str", "list", "dict", "tuple", "slice",
                             "range", "bool", "bytearray", "NoneType", "type"})


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2 as a numpy view: offset, size and stride honoured, bounds-checked.

    Every number is an int64 (as torch stores it) and the arithmetic is checked before numpy sees it. The
    elements a tensor can reach fit in its storage: overlapping strides that view more elements than the
    storage holds are refused (a transform or `inspect` would materialise memory from nothing). Zero strides
    (broadcast tensors, e.g. YOLOv5's Detect.anchor_grid after a validation run, made by `expand`) are kept as
    views, their non-broadcast dimensions held to the same rule; they are refused where a family uses a
    tensor as a parameter (`is_broadcast`).
    """
    if not isinstance(storage, Storage):
        raise FormatError(f"_rebuild_tensor_v2: expected a storage, got {type(storage).__name__}")
    where = storage.where or f"storage '{storage.key}'"
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and all(map(_is_int, size + stride))):
        raise FormatError(f"{where}: tensor size {short_repr(size)} / stride {short_repr(stride)} must be tuples "
                          "of ints")
    if len(size) != len(stride):
        raise FormatError(f"{where}: tensor size {short_repr(size)} and stride {short_repr(stride)} differ in length")
    if len(size) > 64:
        raise FormatError(f"{where}: a tensor of {len(size)} dimensions (numpy allows at most 64)")
    if not _is_int(storage_offset):
        raise FormatError(f"{where}: storage offset {short_repr(storage_offset)} is not an int")
    for v in (storage_offset, *size, *stride):
        if not 0 <= v < 1 << MAX_INT_BITS:
            raise FormatError(f"{where}: offset/size/stride {short_repr(v)} outside [0, 2^63) (offset "
                              f"{short_repr(storage_offset)}, size {short_repr(size)}, stride {short_repr(stride)})")
    n = storage.numel
    count = 1
    for s in size:
        count *= s  # exact (Python ints); each factor < 2^63, at most 64 of them
    distinct = 1
    for s, st in zip(size, stride):
        if st:
            distinct *= s  # elements the view can tell apart: the broadcast dimensions repeat them
    if count:
        last = storage_offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= n:
            raise FormatError(
                f"{where}: tensor of size {size}, stride {stride}, offset {storage_offset} reaches element {last}, "
                f"but the storage holds {n} elements"
            )
    elif storage_offset > n:
        raise FormatError(f"{where}: storage offset {storage_offset} past a storage of {n} elements")
    if count and distinct > n - storage_offset:  # overlapping strides: more elements than the storage holds
        raise FormatError(f"{where}: tensor of size {size} has {distinct} elements, the storage from offset "
                          f"{storage_offset} holds {n - storage_offset}")
    base = storage.array
    item = base.dtype.itemsize
    if not count:
        out = np.zeros(size, base.dtype)  # no elements: nothing allocated whatever the other dimensions say
        out.flags.writeable = False  # like every other tensor: read-only
    else:
        # ndarray over the storage's buffer (bounds checked above): as_strided does the same, ~10x slower
        out = np.ndarray(size, base.dtype, buffer=base, offset=storage_offset * item,
                         strides=tuple(st * item for st in stride))
        out.flags.writeable = False
    return out


def is_broadcast(a: np.ndarray) -> bool:
    """A view repeating elements (a zero stride on a dimension longer than 1): not a parameter's layout."""
    return any(st == 0 and s > 1 for s, st in zip(a.shape, a.strides))


def _rebuild_tensor_v1(storage, storage_offset, size, stride):
    return rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_state):
    if not isinstance(data, np.ndarray):
        raise FormatError(f"_rebuild_parameter: expected a tensor, got {type(data).__name__}")
    return data


def _ordered_dict(*args):
    if len(args) > 1:
        raise FormatError(f"OrderedDict: expected at most one argument, got {len(args)}")
    if not args:
        return {}
    items = args[0]
    if isinstance(items, dict):
        charge(items, len(items), "dict", "OrderedDict")
        return copied(dict(items))
    if not isinstance(items, (list, tuple)):
        raise FormatError(f"OrderedDict: expected a list of (key, value) pairs, got a {type(items).__name__}")
    charge(items, len(items), "dict", "OrderedDict")
    out = {}
    for pair in items:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise FormatError(f"OrderedDict: expected (key, value) pairs, got a {type(pair).__name__}")
        check_key(pair[0], "OrderedDict key")
        out[pair[0]] = pair[1]
    return copied(out)


def _set(*args):
    if len(args) > 1:
        raise FormatError(f"set: expected at most one argument, got {len(args)}")
    if not args:
        return set()
    items = args[0]
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise FormatError(f"set: expected a list of members, got a {type(items).__name__}")
    charge(items, len(items), "set", "set")
    for x in items:
        check_key(x, "set member")
    return copied(set(items))


def _frozenset(*args):
    return copied(frozenset(_set(*args)))


_SAFE_NUMPY_KINDS = "biufc?"


class _NumpyDtype:
    """numpy.dtype(name, align, copy) then BUILD (version, byteorder, ...): kept inert until used."""

    def __init__(self, name, align=False, copy=False):
        if not isinstance(name, str):
            raise FormatError(f"numpy.dtype: expected a type string, got {type(name).__name__}")
        try:
            dt = np.dtype(name)
        except TypeError as e:
            raise FormatError(f"numpy.dtype: unknown type {short_repr(name)}") from e
        if dt.kind not in _SAFE_NUMPY_KINDS or dt.fields is not None or dt.subdtype is not None:
            raise UnsafePickleError(f"numpy.dtype {short_repr(name)} (kind {short_repr(dt.kind)}): only plain numeric dtypes are read")
        self.dtype = dt

    def build(self, state):
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.dtype = self.dtype.newbyteorder(state[1]) if state[1] in "<>" else self.dtype


class _NumpyArray:
    """numpy.core.multiarray._reconstruct(ndarray, shape, typecode) then BUILD (version, shape, dtype, f, raw)."""

    def __init__(self, cls, shape, typecode):
        if not (isinstance(cls, ClassRef) and cls.module == "numpy" and cls.name == "ndarray"):
            raise UnsafePickleError(f"numpy _reconstruct of {short_repr(cls)}: only numpy.ndarray is read")
        self.array = None

    def build(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise FormatError("numpy array state: expected (version, shape, dtype, fortran, data)")
        _, shape, dt, fortran, raw = state
        if not isinstance(dt, _NumpyDtype):
            raise FormatError("numpy array state: expected a dtype")
        if not isinstance(raw, (bytes, bytearray)):
            raise UnsafePickleError("numpy array state: only raw numeric data is read (no object arrays)")
        if not (isinstance(shape, tuple) and all(_is_int(s) and s >= 0 for s in shape)):
            raise FormatError(f"numpy array state: bad shape {short_repr(shape)}")
        count = 1
        for s in shape:
            count *= s  # exact: no int64 wrap-around
        if count * dt.dtype.itemsize != len(raw):
            raise FormatError(f"numpy array of shape {shape} {dt.dtype}: expected {count * dt.dtype.itemsize} bytes, got {len(raw)}")
        if len(shape) > 64:
            raise FormatError(f"numpy array of {len(shape)} dimensions")
        charge(raw, len(raw), "bytes", "numpy array")
        self.array = np.frombuffer(bytes(raw), dt.dtype).reshape(shape, order="F" if fortran else "C")


def _numpy_scalar(dt, raw=None):
    if not isinstance(dt, _NumpyDtype) or not isinstance(raw, (bytes, bytearray)):
        raise UnsafePickleError("numpy scalar: only numeric scalars from raw bytes are read")
    if len(raw) != dt.dtype.itemsize:
        raise FormatError(f"numpy scalar {dt.dtype}: expected {dt.dtype.itemsize} bytes, got {len(raw)}")
    return np.frombuffer(bytes(raw), dt.dtype)[0]


def _codecs_encode(text, encoding="utf-8", *rest):
    """Protocol 2 pickles bytes as _codecs.encode(str, 'latin1'): only that, as pure data conversion."""
    if rest or not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode with encoding {short_repr(encoding)}: only latin1 byte strings are read")
    charge(text, len(text), "bytes", "_codecs.encode")
    return copied(text.encode("latin1"))


def _bytes(*args):
    """Protocols 0-2 pickle b'' as bytes() (and bytes by _codecs.encode): only those forms."""
    if not args:
        return b""
    return _codecs_encode(*args)


@dataclass(frozen=True)
class MethodRef:
    """getattr(record, name) as pickled for a bound method (YOLOv5's fuse() sets `m.forward = m.forward_fuse`).
    Inert: nothing is looked up or called."""

    record: Any
    name: str


def _getattr_inert(obj, name, *default):
    if default or not isinstance(obj, Record) or not isinstance(name, str):
        raise UnsafePickleError(f"getattr on {_describe(obj)}: only bound methods of model records are read")
    return MethodRef(obj, name)


def _device(*args):
    if len(args) > 2 or not all(isinstance(a, str) or (_is_int(a) and 0 <= a < 1 << 31) for a in args):
        raise FormatError(f"torch.device: expected (type, index), got {short_repr(args)}")
    return ":".join(str(a) for a in args)


def _path(*parts):
    if not all(isinstance(p, str) for p in parts):
        raise FormatError("pathlib path: expected string parts")
    return "/".join(parts)


def _torch_size(sizes=()):
    if not isinstance(sizes, (tuple, list)):
        raise FormatError(f"torch.Size: expected a tuple of ints, got a {type(sizes).__name__}")
    charge(sizes, len(sizes), "tuple", "torch.Size")
    return copied(tuple(sizes))


_FUNCTIONS: dict[tuple[str, str], Callable] = {
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor_v1,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
    ("__builtin__", "set"): _set,
    ("builtins", "set"): _set,
    ("__builtin__", "frozenset"): _frozenset,
    ("builtins", "frozenset"): _frozenset,
    ("numpy", "dtype"): _NumpyDtype,
    ("numpy.core.multiarray", "_reconstruct"): _NumpyArray,
    ("numpy._core.multiarray", "_reconstruct"): _NumpyArray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("_codecs", "encode"): _codecs_encode,
    ("__builtin__", "bytes"): _bytes,
    ("builtins", "bytes"): _bytes,
    ("__builtin__", "getattr"): _getattr_inert,
    ("builtins", "getattr"): _getattr_inert,
    ("torch", "device"): _device,
    ("torch", "Size"): _torch_size,
    ("pathlib", "PosixPath"): _path,
    ("pathlib", "WindowsPath"): _path,
    ("pathlib", "Path"): _path,
}


# Attribute bags that pickle by REDUCE on their class with no arguments (types.SimpleNamespace's __reduce__):
# Ultralytics' trainer stores its arguments as one. Read as an inert Record, never instantiated.
_NAMESPACE_CLASSES = frozenset({
    ("ultralytics.utils", "IterableSimpleNamespace"),
    ("ultralytics.yolo.utils", "IterableSimpleNamespace"),
})

_ALLOWED_CALLS = tuple(_FUNCTIONS.values())
_ALLOWED_CALL_IDS = frozenset(id(f) for f in _ALLOWED_CALLS)  # module-level objects: ids stay valid


def resolve_global(module: str, name: str):
    """What a GLOBAL names: an allowed function, a storage type, an inert class; else UnsafePickleError."""
    fn = _FUNCTIONS.get((module, name))
    if fn is not None:
        return fn
    if module == "torch" and name in _STORAGE_DTYPES:
        return StorageType(name, _STORAGE_DTYPES[name])
    top = module.partition(".")[0]
    if top in _CODE_MODULES or (top in ("builtins", "__builtin__") and name not in _INERT_BUILTINS):
        raise UnsafePickleError(f"global '{module}.{name}' is not something a checkpoint needs (refused, nothing ran)")
    # Any other name is data until something calls it (REDUCE, INST, OBJ refuse that): a model class that no
    # family supports is the families' FormatError, not an attack.
    return ClassRef(module, name)


# ---------------------------------------------------------------------------------------------------------
# The interpreter


class _Mark:
    pass


_MARK = _Mark()

_OPNAMES = {
    b"(": "MARK", b".": "STOP", b"0": "POP", b"1": "POP_MARK", b"2": "DUP", b"F": "FLOAT", b"I": "INT",
    b"J": "BININT", b"K": "BININT1", b"L": "LONG", b"M": "BININT2", b"N": "NONE", b"P": "PERSID",
    b"Q": "BINPERSID", b"R": "REDUCE", b"S": "STRING", b"T": "BINSTRING", b"U": "SHORT_BINSTRING",
    b"V": "UNICODE", b"X": "BINUNICODE", b"a": "APPEND", b"b": "BUILD", b"c": "GLOBAL", b"d": "DICT",
    b"}": "EMPTY_DICT", b"e": "APPENDS", b"g": "GET", b"h": "BINGET", b"i": "INST", b"j": "LONG_BINGET",
    b"l": "LIST", b"]": "EMPTY_LIST", b"o": "OBJ", b"p": "PUT", b"q": "BINPUT", b"r": "LONG_BINPUT",
    b"s": "SETITEM", b"t": "TUPLE", b")": "EMPTY_TUPLE", b"u": "SETITEMS", b"G": "BINFLOAT",
    b"\x80": "PROTO", b"\x81": "NEWOBJ", b"\x82": "EXT1", b"\x83": "EXT2", b"\x84": "EXT4", b"\x85": "TUPLE1",
    b"\x86": "TUPLE2", b"\x87": "TUPLE3", b"\x88": "NEWTRUE", b"\x89": "NEWFALSE", b"\x8a": "LONG1",
    b"\x8b": "LONG4", b"B": "BINBYTES", b"C": "SHORT_BINBYTES", b"\x8c": "SHORT_BINUNICODE",
    b"\x8d": "BINUNICODE8", b"\x8e": "BINBYTES8", b"\x8f": "EMPTY_SET", b"\x90": "ADDITEMS",
    b"\x91": "FROZENSET", b"\x92": "NEWOBJ_EX", b"\x93": "STACK_GLOBAL", b"\x94": "MEMOIZE", b"\x95": "FRAME",
    b"\x96": "BYTEARRAY8", b"\x97": "NEXT_BUFFER", b"\x98": "READONLY_BUFFER",
}

_MAX_CONTAINER_BYTES = 1 << 31  # a single string/bytes value larger than 2 GiB is not a checkpoint's


class _Reader:
    """The pickle's bytes (copied out of the map: pickles are small; tensors stay in the map)."""

    def __init__(self, data, start, end):
        self.data = bytes(memoryview(data).cast("B")[start:end])
        self.base = start
        self.pos = 0
        self.end = len(self.data)

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.end - self.pos:
            raise FormatError(f"truncated: needs {n} bytes, {self.end - self.pos} left before the end of the pickle")
        p = self.pos
        self.pos = p + n
        return self.data[p : p + n]

    def line(self) -> bytes:
        i = self.data.find(b"\n", self.pos, self.end)
        if i < 0:
            raise FormatError("truncated: a text opcode's line has no end")
        out = self.data[self.pos : i]
        self.pos = i + 1
        return out


def _record_new(cls, args, op):
    if op in ("INST", "OBJ"):
        # Protocols 0/1 call the class itself (cls(*args) runs its constructor); checkpoints (protocol 2+) use
        # NEWOBJ, which only allocates.
        raise UnsafePickleError(f"{op} on {_describe(cls)} would call the class (its constructor runs)")
    if not isinstance(cls, ClassRef):
        raise UnsafePickleError(f"{op} on {_describe(cls)}: only allowed model classes can be instantiated")
    if not isinstance(args, tuple):
        raise FormatError(f"{op}: arguments must be a tuple, got {type(args).__name__}")
    return Record(cls, args)


def _describe(x) -> str:
    if isinstance(x, ClassRef):
        return f"class '{x.qualname}'"
    if callable(x):
        return f"function '{getattr(x, '__name__', x)}'"
    return f"a {type(x).__name__}"


def _build(obj, state):
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
    if isinstance(obj, (_NumpyDtype, _NumpyArray)):
        obj.build(state)
        return
    if isinstance(obj, np.ndarray) and (state is None or state == {} or state == (None, {})):
        return  # a tensor with no Python attributes
    if isinstance(obj, dict) and not state:
        return
    if isinstance(obj, dict) and isinstance(state, dict) and set(state) == {"_metadata"} \
            and isinstance(state["_metadata"], dict):
        return  # torch's state_dict(): an OrderedDict carrying its modules' versions as `_metadata` (dropped)
    raise UnsafePickleError(f"BUILD on {_describe(obj)} is not something a checkpoint does")


def load_pickle_reference(data, *, start: int = 0, end: int | None = None,
                          persistent_load: Callable | None = None, where: str = "pickle"):
    """The plain-Python interpreter: the reference that the native `load_pickle` (pickle_native.py) is tested
    against. Interprets the pickle in data[start:end]; returns (object, position after STOP).

    `persistent_load(pid)` resolves BINPERSID/PERSID ids (torch storages). `where` names the file and entry
    in error messages, which also give the opcode and its byte position.
    """
    if end is None:
        end = len(data)
    with pickle_budget(end - start):
        return _interpret(data, start, end, persistent_load, where)


def _interpret(data, start, end, persistent_load, where):
    r = _Reader(data, start, end)
    stack: list = []
    marks: list[int] = []
    memo: dict = {}
    op_pos = start
    op = b""

    def pop_mark():
        if not marks:
            raise FormatError("pops a MARK, but none is set")
        k = marks.pop()
        items = stack[k:]
        del stack[k:]
        return items

    def pop():
        if len(stack) <= (marks[-1] if marks else 0):
            raise FormatError("stack underflow")
        return stack.pop()

    def top():
        if len(stack) <= (marks[-1] if marks else 0):
            raise FormatError("stack underflow")
        return stack[-1]

    # Nesting depth of the containers built (tuples, lists, dicts, sets, records), at most MAX_NESTING. The
    # containers are kept alive here so that their ids stay unique. Depths are computed when a container is
    # made or filled (a container filled after it was put into another one does not raise its parents' depth:
    # only immutable tuples/frozensets are hashed, and check_key keeps those flat).
    depth: dict = {}

    def nest(c, children):
        d = 0
        for x in children:
            if x is c:  # an allow-listed function that returns its argument (_rebuild_parameter)
                continue
            e = depth.get(id(x))
            if e is not None and e[0] > d:
                d = e[0]
        d += 1
        if d > MAX_NESTING:
            raise FormatError(f"values nested more than {MAX_NESTING} deep")
        e = depth.get(id(c))
        if e is None or e[0] < d:
            depth[id(c)] = (d, c)
        return c

    def finish_value(v):
        if isinstance(v, _NumpyArray):
            if v.array is None:
                raise FormatError("numpy array without state")
            return v.array
        return v

    try:
        while True:
            op_pos = r.base + r.pos
            op = r.take(1)
            # The most frequent opcodes of a torch checkpoint first (BINGET, LONG_BINPUT, REDUCE, EMPTY_TUPLE,
            # BININT1 are ~75% of them); the full list follows.
            if op == b"h":
                idx = r.take(1)[0]
                if idx not in memo:
                    raise FormatError(f"memo key {idx} was never stored")
                stack.append(memo[idx])
                continue
            if op == b"r":
                memo[struct.unpack("<I", r.take(4))[0]] = top()
                continue
            if op == b"R":
                args = pop()
                fn = pop()
                if isinstance(fn, ClassRef) and (fn.module, fn.name) in _NAMESPACE_CLASSES and args == ():
                    # SimpleNamespace subclasses pickle as REDUCE(cls, ()) + BUILD(dict): an empty namespace
                    # whose attributes BUILD sets. Nothing is called; it stays an inert record.
                    stack.append(Record(fn, ()))
                    continue
                if id(fn) not in _ALLOWED_CALL_IDS:
                    raise UnsafePickleError(f"REDUCE on {_describe(fn)}: only allow-listed rebuild functions are called")
                if not isinstance(args, tuple):
                    raise FormatError(f"REDUCE arguments must be a tuple, got {type(args).__name__}")
                stack.append(nest(fn(*[finish_value(a) for a in args]), args))
                continue
            if op == b")":
                stack.append(())
                continue
            if op == b"K":
                stack.append(r.take(1)[0])
                continue
            if op == b"\x80":  # PROTO
                proto = r.take(1)[0]
                if proto > 5:
                    raise FormatError(f"unsupported pickle protocol {proto}")
            elif op == b"\x95":  # FRAME
                r.take(8)
            elif op == b".":  # STOP
                if len(stack) != 1 or marks:
                    raise FormatError(f"STOP with {len(stack)} values on the stack")
                return finish_value(stack[0]), r.base + r.pos
            elif op == b"(":
                marks.append(len(stack))
            elif op == b"0":
                pop()
            elif op == b"1":
                pop_mark()
            elif op == b"2":
                stack.append(top())
            elif op == b"N":
                stack.append(None)
            elif op == b"\x88":
                stack.append(True)
            elif op == b"\x89":
                stack.append(False)
            elif op == b"J":
                stack.append(struct.unpack("<i", r.take(4))[0])
            elif op == b"K":
                stack.append(r.take(1)[0])
            elif op == b"M":
                stack.append(struct.unpack("<H", r.take(2))[0])
            elif op == b"\x8a":
                n = r.take(1)[0]
                stack.append(int.from_bytes(r.take(n), "little", signed=True))
            elif op == b"\x8b":
                n = struct.unpack("<i", r.take(4))[0]
                if n < 0 or n > 1 << 16:
                    raise FormatError(f"LONG4 of {n} bytes")
                stack.append(int.from_bytes(r.take(n), "little", signed=True))
            elif op == b"G":
                stack.append(struct.unpack(">d", r.take(8))[0])
            elif op == b"I":
                s = r.line()
                stack.append(True if s == b"01" else False if s == b"00" else int(s))
            elif op == b"L":
                stack.append(int(r.line().rstrip(b"L")))
            elif op == b"F":
                stack.append(float(r.line()))
            elif op in (b"X", b"\x8c", b"\x8d"):
                n = {b"X": lambda: struct.unpack("<I", r.take(4))[0], b"\x8c": lambda: r.take(1)[0],
                     b"\x8d": lambda: struct.unpack("<Q", r.take(8))[0]}[op]()
                if n > _MAX_CONTAINER_BYTES:
                    raise FormatError(f"string of {n} bytes")
                stack.append(r.take(n).decode("utf-8", "surrogatepass"))
            elif op in (b"B", b"C", b"\x8e", b"\x96"):
                n = {b"B": lambda: struct.unpack("<I", r.take(4))[0], b"C": lambda: r.take(1)[0],
                     b"\x8e": lambda: struct.unpack("<Q", r.take(8))[0],
                     b"\x96": lambda: struct.unpack("<Q", r.take(8))[0]}[op]()
                if n > _MAX_CONTAINER_BYTES:
                    raise FormatError(f"bytes of {n} bytes")
                b = bytes(r.take(n))
                stack.append(bytearray(b) if op == b"\x96" else b)
            elif op in (b"T", b"U"):
                n = struct.unpack("<i", r.take(4))[0] if op == b"T" else r.take(1)[0]
                if n < 0:
                    raise FormatError(f"BINSTRING of negative length {n}")
                stack.append(bytes(r.take(n)).decode("latin-1"))
            elif op == b"S":
                s = r.line()
                if len(s) < 2 or s[0] != s[-1] or s[:1] not in (b"'", b'"'):
                    raise FormatError("STRING: not a quoted string")
                stack.append(codecs.escape_decode(s[1:-1])[0].decode("latin-1"))
            elif op == b"V":
                stack.append(codecs.decode(r.line(), "raw-unicode-escape"))
            elif op == b"}":
                stack.append({})
            elif op == b"]":
                stack.append([])
            elif op == b")":
                stack.append(())
            elif op == b"\x8f":
                stack.append(set())
            elif op == b"t":
                t = tuple(pop_mark())
                stack.append(nest(t, t))
            elif op == b"\x85":
                t = (pop(),)
                stack.append(nest(t, t))
            elif op == b"\x86":
                b = pop()
                t = (pop(), b)
                stack.append(nest(t, t))
            elif op == b"\x87":
                c = pop()
                b = pop()
                t = (pop(), b, c)
                stack.append(nest(t, t))
            elif op == b"l":
                lst = pop_mark()
                stack.append(nest(lst, lst))
            elif op == b"d":
                items = pop_mark()
                if len(items) % 2:
                    raise FormatError("DICT with an odd number of items")
                for k in items[::2]:
                    check_key(k)
                stack.append(nest(dict(zip(items[::2], items[1::2])), items))
            elif op == b"a":
                v = pop()
                lst = top()
                if not isinstance(lst, list):
                    raise FormatError(f"APPEND to a {type(lst).__name__}")
                lst.append(finish_value(v))
                nest(lst, (v,))
            elif op == b"e":
                items = pop_mark()
                lst = top()
                if not isinstance(lst, list):
                    raise FormatError(f"APPENDS to a {type(lst).__name__}")
                lst.extend(finish_value(v) for v in items)
                nest(lst, items)
            elif op == b"s":
                v = pop()
                k = pop()
                d = top()
                if not isinstance(d, dict):
                    raise FormatError(f"SETITEM on a {type(d).__name__}")
                check_key(k)
                d[k] = finish_value(v)
                nest(d, (k, v))
            elif op == b"u":
                items = pop_mark()
                d = top()
                if not isinstance(d, dict) or len(items) % 2:
                    raise FormatError(f"SETITEMS on a {type(d).__name__} with {len(items)} items")
                for i in range(0, len(items), 2):
                    check_key(items[i])
                    d[items[i]] = finish_value(items[i + 1])
                nest(d, items)
            elif op == b"\x90":
                items = pop_mark()
                s = top()
                if not isinstance(s, set):
                    raise FormatError(f"ADDITEMS on a {type(s).__name__}")
                for x in items:
                    check_key(x, "set member")
                s.update(items)
                nest(s, items)
            elif op == b"\x91":
                items = pop_mark()
                for x in items:
                    check_key(x, "frozenset member")
                stack.append(nest(frozenset(items), items))
            elif op in (b"q", b"r", b"p"):
                if op == b"q":
                    idx = r.take(1)[0]
                elif op == b"r":
                    idx = struct.unpack("<I", r.take(4))[0]
                else:
                    idx = int(r.line())
                memo[idx] = top()
            elif op == b"\x94":
                memo[len(memo)] = top()
            elif op in (b"h", b"j", b"g"):
                if op == b"h":
                    idx = r.take(1)[0]
                elif op == b"j":
                    idx = struct.unpack("<I", r.take(4))[0]
                else:
                    idx = int(r.line())
                if idx not in memo:
                    raise FormatError(f"memo key {idx} was never stored")
                stack.append(memo[idx])
            elif op == b"c":
                module = r.line().decode("utf-8", "replace")
                name = r.line().decode("utf-8", "replace")
                stack.append(resolve_global(module, name))
            elif op == b"\x93":
                name = pop()
                module = pop()
                if not (isinstance(module, str) and isinstance(name, str)):
                    raise FormatError("STACK_GLOBAL needs two strings")
                stack.append(resolve_global(module, name))
            elif op == b"\x81":
                args = pop()
                cls = pop()
                stack.append(nest(_record_new(cls, args, "NEWOBJ"), (args,)))
            elif op == b"\x92":
                kwargs = pop()
                args = pop()
                cls = pop()
                if kwargs:
                    raise UnsafePickleError("NEWOBJ_EX with keyword arguments")
                stack.append(nest(_record_new(cls, args, "NEWOBJ_EX"), (args,)))
            elif op == b"o":
                items = pop_mark()
                if not items:
                    raise FormatError("OBJ without a class")
                stack.append(_record_new(items[0], tuple(items[1:]), "OBJ"))
            elif op == b"i":
                module = r.line().decode("utf-8", "replace")
                name = r.line().decode("utf-8", "replace")
                cls = resolve_global(module, name)
                stack.append(_record_new(cls, tuple(pop_mark()), "INST"))
            elif op == b"b":
                state = pop()
                _build(top(), finish_value(state))
                nest(top(), (state,))
            elif op in (b"Q", b"P"):
                pid = pop() if op == b"Q" else r.line().decode("ascii", "replace")
                if persistent_load is None:
                    raise FormatError("a persistent id, but this pickle has no storages")
                stack.append(persistent_load(pid))
            elif op in (b"\x82", b"\x83", b"\x84"):
                raise UnsafePickleError(f"{_OPNAMES[op]}: the extension registry is not used by checkpoints")
            elif op in (b"\x97", b"\x98"):
                raise UnsafePickleError(f"{_OPNAMES[op]}: out-of-band buffers are not used by checkpoints")
            else:
                raise FormatError(f"unknown opcode {short_repr(op)}")
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{where}, byte {op_pos} ({_OPNAMES.get(op, repr(op))}): {e}") from None
    except FormatError as e:
        raise FormatError(f"{where}, byte {op_pos} ({_OPNAMES.get(op, repr(op))}): {e}") from None
    except (MemoryError, RecursionError) as e:
        raise FormatError(f"{where}, byte {op_pos} ({_OPNAMES.get(op, repr(op))}): {type(e).__name__} "
                          "(refused: the pickle needs more memory or nesting than a checkpoint)") from None
    except Exception as e:  # noqa: BLE001 - whatever a malformed pickle causes is a FormatError
        raise FormatError(f"{where}, byte {op_pos} ({_OPNAMES.get(op, repr(op))}): malformed pickle: "
                          f"{error_text(e)}") from None


def load_pickle(data, *, start: int = 0, end: int | None = None, persistent_load: Callable | None = None,
                where: str = "pickle"):
    """Interpret the pickle in data[start:end]; returns (object, position after STOP).

    Runs on the native opcode machine with the policy above (pickle_native.py). `persistent_load(pid)` resolves
    BINPERSID/PERSID ids (torch storages). `where` names the file and entry in error messages, which also give
    the opcode and its byte position.
    """
    from .pickle_native import load_pickle as native

    return native(data, start=start, end=end, persistent_load=persistent_load, where=where)
