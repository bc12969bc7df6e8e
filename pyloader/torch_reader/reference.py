"""The reference pickle interpreter, in plain Python: what the native `load_pickle` (native.py) is tested and
fuzzed against (tests/test_pickle_native.py, fuzz/differential.py). It runs the opcodes itself and applies the
same policy (policy.py) at the same effects, so both give the same value or the same first error.
"""

from __future__ import annotations

import struct
from typing import Callable

from ..boundary import MAX_NESTING, short_repr
from ..errors import FormatError, UnsafePickleError
from .allowlist import resolve_global
from .budget import check_key, pickle_budget
from .opcodes import OPNAMES, located, text_value
from .policy import build, finish_value, newobj_ex, no_storages, record_new, reduce
from .records import ClassRef

__all__ = ["load_pickle_reference"]

MAX_STRING_BYTES = 1 << 31  # a single string/bytes value larger than 2 GiB is not a checkpoint's


class _Reader:
    """The pickle's bytes (copied out of the buffer: pickles are small; tensors stay views of it)."""

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


def load_pickle_reference(data, *, start: int = 0, end: int | None = None,
                          persistent_load: Callable | None = None, where: str = "pickle"):
    """The plain-Python interpreter: the reference that the native `load_pickle` (native.py) is tested
    against. Interprets the pickle in data[start:end]; returns (object, position after STOP).

    `persistent_load(pid)` resolves BINPERSID/PERSID ids (torch storages). `where` names the file and entry
    in error messages, which also give the opcode and its byte position.
    """
    if end is None:
        end = len(data)
    with pickle_budget(end - start):
        return _interpret(data, start, end, no_storages if persistent_load is None else persistent_load, where)


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
                value = reduce(fn, args)
                # a ClassRef reduced is a SimpleNamespace's empty record: its depth is set by BUILD
                stack.append(value if isinstance(fn, ClassRef) else nest(value, args))
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
            elif op in (b"I", b"L", b"F", b"S", b"V"):
                stack.append(text_value(op[0], r.line()))
            elif op in (b"X", b"\x8c", b"\x8d"):
                n = {b"X": lambda: struct.unpack("<I", r.take(4))[0], b"\x8c": lambda: r.take(1)[0],
                     b"\x8d": lambda: struct.unpack("<Q", r.take(8))[0]}[op]()
                if n > MAX_STRING_BYTES:
                    raise FormatError(f"string of {n} bytes")
                stack.append(r.take(n).decode("utf-8", "surrogatepass"))
            elif op in (b"B", b"C", b"\x8e", b"\x96"):
                n = {b"B": lambda: struct.unpack("<I", r.take(4))[0], b"C": lambda: r.take(1)[0],
                     b"\x8e": lambda: struct.unpack("<Q", r.take(8))[0],
                     b"\x96": lambda: struct.unpack("<Q", r.take(8))[0]}[op]()
                if n > MAX_STRING_BYTES:
                    raise FormatError(f"bytes of {n} bytes")
                b = bytes(r.take(n))
                stack.append(bytearray(b) if op == b"\x96" else b)
            elif op in (b"T", b"U"):
                n = struct.unpack("<i", r.take(4))[0] if op == b"T" else r.take(1)[0]
                if n < 0:
                    raise FormatError(f"BINSTRING of negative length {n}")
                stack.append(bytes(r.take(n)).decode("latin-1"))
            elif op == b"}":
                stack.append({})
            elif op == b"]":
                stack.append([])
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
            elif op in (b"q", b"p"):  # (LONG_BINPUT is above)
                idx = r.take(1)[0] if op == b"q" else int(r.line())
                memo[idx] = top()
            elif op == b"\x94":
                memo[len(memo)] = top()
            elif op in (b"j", b"g"):  # (BINGET is above)
                idx = struct.unpack("<I", r.take(4))[0] if op == b"j" else int(r.line())
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
                stack.append(nest(record_new(cls, args, "NEWOBJ"), (args,)))
            elif op == b"\x92":
                kwargs = pop()
                args = pop()
                cls = pop()
                stack.append(nest(newobj_ex(cls, args, kwargs), (args,)))
            elif op == b"o":
                items = pop_mark()
                if not items:
                    raise FormatError("OBJ without a class")
                stack.append(record_new(items[0], tuple(items[1:]), "OBJ"))
            elif op == b"i":
                module = r.line().decode("utf-8", "replace")
                name = r.line().decode("utf-8", "replace")
                cls = resolve_global(module, name)
                stack.append(record_new(cls, tuple(pop_mark()), "INST"))
            elif op == b"b":
                state = pop()
                build(top(), state)
                nest(top(), (state,))
            elif op in (b"Q", b"P"):
                pid = pop() if op == b"Q" else r.line().decode("ascii", "replace")
                stack.append(persistent_load(pid))
            elif op in (b"\x82", b"\x83", b"\x84"):
                raise UnsafePickleError(f"{OPNAMES[op]}: the extension registry is not used by checkpoints")
            elif op in (b"\x97", b"\x98"):
                raise UnsafePickleError(f"{OPNAMES[op]}: out-of-band buffers are not used by checkpoints")
            else:
                raise FormatError(f"unknown opcode {short_repr(op)}")
    except Exception as e:  # noqa: BLE001 - whatever a malformed pickle causes is a FormatError
        raise located(e, where, op_pos, op) from None
