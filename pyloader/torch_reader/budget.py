"""The budget of one pickle: bounded work and memory per pickle byte, and keys that are cheap to hash.

Work per pickle byte is bounded: the opcodes themselves do O(1) work per byte, and whatever an allow-listed
function or BUILD copies (items of a dict or set, bytes of a string) is charged, in bytes of memory, against
the pickle's budget: BUDGET_PER_BYTE per pickle byte plus BUDGET_BASE. The first copy of a value is free
(its items were written out in the pickle, so it is as big as the pickle's own data); copying the same value
again is charged. A checkpoint copies each value at most once (a YOLOv5 checkpoint is charged nothing); a
pickle that calls OrderedDict or bytes a thousand times on one memo entry runs out of budget and is refused
before the copies exist. The nesting-depth limit is MAX_NESTING (pyloader.boundary).

Every interpreter (reference.py, native.py) runs the policy inside `pickle_budget(nbytes)`.
"""

from __future__ import annotations

import contextlib
import contextvars

import numpy as np

from ..errors import FormatError
from .records import ClassRef, MethodRef, Record, StorageType

__all__ = ["BUDGET_PER_BYTE", "BUDGET_BASE", "MAX_KEY_COMPOSITES", "pickle_budget", "charge", "copied",
           "check_key"]

BUDGET_PER_BYTE = 2
BUDGET_BASE = 1 << 20
_ITEM_BYTES = {"dict": 64, "set": 32, "tuple": 8, "bytes": 1}  # what one copied item costs in memory
MAX_KEY_COMPOSITES = 4096  # tuple/frozenset dict keys or set members per pickle (their hashes can be made to collide)


class _Budget:
    __slots__ = ("left", "total", "composite_keys", "copied")

    def __init__(self, nbytes: int):
        self.total = self.left = BUDGET_PER_BYTE * max(int(nbytes), 0) + BUDGET_BASE
        self.composite_keys = MAX_KEY_COMPOSITES
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
                raise FormatError(f"{what}: more than {MAX_KEY_COMPOSITES} tuple/frozenset keys in one pickle")
        if len(k) > 16:
            raise FormatError(f"{what}: a {type(k).__name__} of {len(k)} items (at most 16 in a key)")
        for x in k:
            if not (isinstance(x, _SIMPLE_KEYS) or (isinstance(x, int) and -(1 << 61) < x < (1 << 61))
                    or isinstance(x, (ClassRef, StorageType))):
                raise FormatError(f"{what}: a {type(k).__name__} holding a {type(x).__name__} "
                                  "(keys nest at most one level)")
        return
    raise FormatError(f"{what}: a {type(k).__name__} cannot be a key or set member")
