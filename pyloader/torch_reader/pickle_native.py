"""`load_pickle` on the native opcode machine (csrc/pickle_vm.cpp), with the policy of pickle_reader.

The C++ core runs the pickle's stack, MARKs, memo, scalars, strings and containers and records the opcodes with
effects (GLOBAL, REDUCE, NEWOBJ, BUILD, PERSID, SETITEM(S), APPEND(S), ADDITEMS) as a program of events, each
with its opcode and byte position; it checks structure only (lengths, MARKs, memo keys, nesting depth). The
binding replays that program in order, building the Python values and calling back here at the effects: the
allow-list, the inert classes and the messages are pickle_reader's, so the result (or the first error, with its
position and opcode) is what `pickle_reader.load_pickle_reference`, the plain-Python interpreter, gives.
"""

from __future__ import annotations

import codecs
import struct
from typing import Callable

from .. import _core
from ..boundary import MAX_NESTING, error_text
from ..errors import FormatError, UnsafePickleError
from . import pickle_reader as _pr
from .checkpoint import ZipStorages as _ZipStorages

__all__ = ["load_pickle"]


def _reduce(fn, args):
    if isinstance(fn, _pr.ClassRef) and (fn.module, fn.name) in _pr._NAMESPACE_CLASSES and args == ():
        return _pr.Record(fn, ())  # SimpleNamespace subclasses: REDUCE(cls, ()) + BUILD(dict), nothing called
    if id(fn) not in _pr._ALLOWED_CALL_IDS:
        raise UnsafePickleError(f"REDUCE on {_pr._describe(fn)}: only allow-listed rebuild functions are called")
    if not isinstance(args, tuple):
        raise FormatError(f"REDUCE arguments must be a tuple, got {type(args).__name__}")
    for a in args:
        if type(a) is _pr._NumpyArray:
            return fn(*[_finish_value(a) for a in args])
    return fn(*args)


def _finish_value(v):
    if isinstance(v, _pr._NumpyArray):
        if v.array is None:
            raise FormatError("numpy array without state")
        return v.array
    return v


def _newobj_ex(cls, args, kwargs):
    if kwargs:
        raise UnsafePickleError("NEWOBJ_EX with keyword arguments")
    return _pr._record_new(cls, args, "NEWOBJ_EX")


def _build(obj, state):
    _pr._build(obj, _finish_value(state))


def _text_value(op: int, s: bytes):
    """The protocol 0 text opcodes, parsed exactly as the reference interpreter does."""
    if op == 0x49:  # I
        return True if s == b"01" else False if s == b"00" else int(s)
    if op == 0x4C:  # L
        return int(s.rstrip(b"L"))
    if op == 0x46:  # F
        return float(s)
    if op == 0x53:  # S
        if len(s) < 2 or s[0] != s[-1] or s[:1] not in (b"'", b'"'):
            raise FormatError("STRING: not a quoted string")
        return codecs.escape_decode(s[1:-1])[0].decode("latin-1")
    return codecs.decode(s, "raw-unicode-escape")  # V


# Policy functions the binding runs natively in the plain case every checkpoint takes (a tensor view of a
# storage, a parameter, an empty OrderedDict or set; a zip checkpoint's storage when persistent_load is a
# checkpoint.ZipStorages), falling back to these Python functions for anything else.
_FAST = (_pr.rebuild_tensor, _pr._rebuild_parameter, _pr._ordered_dict, _pr._set, _pr.Storage, _ZipStorages,
         _pr.StorageType)


def _no_storages(pid):
    raise FormatError("a persistent id, but this pickle has no storages")


def _located(e: BaseException, where: str, pos: int, op: bytes) -> BaseException:
    """As load_pickle_reference words an error raised at an opcode."""
    at = f"{where}, byte {pos} ({_pr._OPNAMES.get(op, repr(op))})"
    if isinstance(e, UnsafePickleError):
        return UnsafePickleError(f"{at}: {e}")
    if isinstance(e, FormatError):
        return FormatError(f"{at}: {e}")
    if isinstance(e, (MemoryError, RecursionError)):
        return FormatError(f"{at}: {type(e).__name__} (refused: the pickle needs more memory or nesting than a "
                           "checkpoint)")
    if isinstance(e, Exception):
        return FormatError(f"{at}: malformed pickle: {error_text(e)}")
    return e


def load_pickle(data, *, start: int = 0, end: int | None = None, persistent_load: Callable | None = None,
                where: str = "pickle"):
    """Interpret the pickle in data[start:end]; returns (object, position after STOP).

    `persistent_load(pid)` resolves BINPERSID/PERSID ids (torch storages). `where` names the file and entry
    in error messages, which also give the opcode and its byte position.
    """
    if end is None:
        end = len(data)
    buf = memoryview(data).cast("B")
    lo, hi, _ = slice(start, end).indices(len(buf))
    hooks = (_pr.resolve_global, _reduce, _pr._record_new, _newobj_ex, _build,
             persistent_load if persistent_load is not None else _no_storages, _text_value, _pr._NumpyArray,
             FormatError, tuple(_pr._ALLOWED_CALLS), _pr.check_key, _FAST)
    with _pr.pickle_budget(max(lo, hi) - lo):
        out = _core.run_pickle(buf, lo, max(lo, hi), hooks, MAX_NESTING)
    if out[0] == "ok":
        return out[1], start + out[2]
    pos, op = start + out[1], (bytes([out[2]]) if out[2] >= 0 else b"")
    if out[0] == "vm":
        _, _, _, unsafe, message = out
        raise (UnsafePickleError if unsafe else FormatError)(f"{where}, byte {pos} ({_pr._OPNAMES.get(op, repr(op))}): "
                                                             f"{message}")
    exc = out[3]
    located = _located(exc, where, pos, op)
    if located is exc:
        raise exc
    raise located from None
