"""`load_pickle` on the native opcode machine (csrc/pickle_vm.cpp), with the policy of policy.py.

The C++ core runs the pickle's stack, MARKs, memo, scalars, strings and containers and records the opcodes with
effects (GLOBAL, REDUCE, NEWOBJ, BUILD, PERSID, SETITEM(S), APPEND(S), ADDITEMS) as a program of events, each
with its opcode and byte position; it checks structure only (lengths, MARKs, memo keys, nesting depth). The
binding replays that program in order, building the Python values and calling the policy at the effects through
one `policy.Hooks` object, so the result (or the first error, with its position and opcode) is what
`reference.load_pickle_reference`, the plain-Python interpreter, gives.
"""

from __future__ import annotations

from typing import Callable

from .. import _core
from ..boundary import MAX_NESTING
from ..errors import FormatError, UnsafePickleError
from .budget import pickle_budget
from .opcodes import located
from .policy import hooks_for

__all__ = ["load_pickle"]


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
    with pickle_budget(max(lo, hi) - lo):
        out = _core.run_pickle(buf, lo, max(lo, hi), hooks_for(persistent_load), MAX_NESTING)
    if out[0] == "ok":
        return out[1], start + out[2]
    pos, op = start + out[1], (bytes([out[2]]) if out[2] >= 0 else b"")
    if out[0] == "vm":
        _, _, _, unsafe, message = out
        raise located((UnsafePickleError if unsafe else FormatError)(message), where, pos, op)
    exc = out[3]
    error = located(exc, where, pos, op)
    if error is exc:
        raise exc
    raise error from None
