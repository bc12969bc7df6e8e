"""What both pickle interpreters (reference.py, native.py) share about the opcodes themselves: their names, the
parsing of the protocol 0 text opcodes, and how an error raised at an opcode is located (file and entry, byte
position, opcode name) and worded.
"""

from __future__ import annotations

import codecs

from ..boundary import error_text
from ..errors import FormatError, UnsafePickleError

__all__ = ["OPNAMES", "text_value", "located"]

OPNAMES = {
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


def text_value(op: int, s: bytes):
    """The value of the protocol 0 text opcode `op` (I, L, F, S or V) whose line is `s`, as Python parses it."""
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


def located(e: BaseException, where: str, pos: int, op: bytes) -> BaseException:
    """The error `e`, raised at opcode `op` at byte `pos` of the pickle named `where`, as the reader raises it: a
    FormatError (or UnsafePickleError) naming the place; whatever else a malformed pickle causes becomes a
    FormatError; `e` itself when it is no Exception (KeyboardInterrupt, SystemExit)."""
    at = f"{where}, byte {pos} ({OPNAMES.get(op, repr(op))})"
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
