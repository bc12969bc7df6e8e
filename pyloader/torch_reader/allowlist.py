"""The allow-list: what a pickle's GLOBAL may name and the only functions REDUCE may call.

A reference to one of a few allow-listed functions (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`,
`collections.OrderedDict`, `set`, numpy's array reconstruction, ...) resolves to a pure function of this module
(tensors become numpy views of the checkpoint's bytes, zero-copy); a global of a module that exists to run code
(os, subprocess, builtins' eval/exec, ...) is an `UnsafePickleError` at the GLOBAL opcode, before anything could
have run; any other global is an inert `ClassRef` (nothing is imported). Each function checks its arguments and
charges what it copies against the pickle's budget (budget.py).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..boundary import short_repr
from ..errors import FormatError, UnsafePickleError
from .budget import charge, check_key, copied
from .records import ClassRef, MethodRef, Record, Storage, StorageType

__all__ = ["resolve_global", "describe", "rebuild_tensor", "NumpyDtype", "NumpyArray", "FUNCTIONS", "ALLOWED_CALLS",
           "ALLOWED_CALL_IDS", "NAMESPACE_CLASSES", "MAX_INT_BITS"]

MAX_INT_BITS = 63  # sizes, strides, offsets and shapes: int64, as torch stores them


def describe(x) -> str:
    """What a pickle value is, for refusals: a class, a function or a value of some type."""
    if isinstance(x, ClassRef):
        return f"class '{x.qualname}'"
    if callable(x):
        return f"function '{getattr(x, '__name__', x)}'"
    return f"a {type(x).__name__}"


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


class NumpyDtype:
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


class NumpyArray:
    """numpy.core.multiarray._reconstruct(ndarray, shape, typecode) then BUILD (version, shape, dtype, f, raw)."""

    def __init__(self, cls, shape, typecode):
        if not (isinstance(cls, ClassRef) and cls.module == "numpy" and cls.name == "ndarray"):
            raise UnsafePickleError(f"numpy _reconstruct of {short_repr(cls)}: only numpy.ndarray is read")
        self.array = None

    def build(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise FormatError("numpy array state: expected (version, shape, dtype, fortran, data)")
        _, shape, dt, fortran, raw = state
        if not isinstance(dt, NumpyDtype):
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
    if not isinstance(dt, NumpyDtype) or not isinstance(raw, (bytes, bytearray)):
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


def _getattr_inert(obj, name, *default):
    """getattr(record, name): a bound method (MethodRef); getattr(class, name): a function of a class as pickle
    protocols < 4 write `Class.function` (YOLOv5's and ultralytics < 8.4's Segment / Pose / OBB:
    `detect = Detect.forward`), an inert ClassRef of the dotted
    name. Nothing is looked up; calling either is refused as any other class or function."""
    if default or not isinstance(obj, (Record, ClassRef)) or not isinstance(name, str) or not name.isidentifier():
        raise UnsafePickleError(f"getattr on {describe(obj)}: only bound methods of model records and functions of "
                                "classes are read")
    return ClassRef(obj.module, f"{obj.name}.{name}") if isinstance(obj, ClassRef) else MethodRef(obj, name)


def _defaultdict(factory=None):
    """collections.defaultdict(factory) (OmegaConf's node metadata, ultralytics 8.0.0-8.0.6 arguments): a plain
    dict, its items set by the pickle; the factory, a class, is never called."""
    if factory is not None and not isinstance(factory, ClassRef):
        raise UnsafePickleError(f"defaultdict of {describe(factory)}: only a class or None is read as its factory")
    return {}


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


FUNCTIONS: dict[tuple[str, str], Callable] = {
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor_v1,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
    ("collections", "defaultdict"): _defaultdict,
    ("__builtin__", "set"): _set,
    ("builtins", "set"): _set,
    ("__builtin__", "frozenset"): _frozenset,
    ("builtins", "frozenset"): _frozenset,
    ("numpy", "dtype"): NumpyDtype,
    ("numpy.core.multiarray", "_reconstruct"): NumpyArray,
    ("numpy._core.multiarray", "_reconstruct"): NumpyArray,
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
NAMESPACE_CLASSES = frozenset({
    ("ultralytics.utils", "IterableSimpleNamespace"),
    ("ultralytics.yolo.utils", "IterableSimpleNamespace"),
})

ALLOWED_CALLS = tuple(FUNCTIONS.values())
ALLOWED_CALL_IDS = frozenset(id(f) for f in ALLOWED_CALLS)  # module-level objects: ids stay valid



def resolve_global(module: str, name: str):
    """What a GLOBAL names: an allowed function, a storage type, an inert class; else UnsafePickleError."""
    fn = FUNCTIONS.get((module, name))
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
