"""The native pickle path (csrc/pickle_vm.cpp + the binding's replay) against the Python reference interpreter
(unpickle.load_pickle_reference) and against pickle.loads: same value or same error class, effects in the
pickle's order."""

from __future__ import annotations

import collections
import os
import pickle
import random
import sys

import numpy as np
import pytest

from pyloader.errors import FormatError
from pyloader.torch_reader.records import Record
from pyloader.torch_reader.unpickle import load_pickle, load_pickle_reference

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fuzz"))
from differential import check  # noqa: E402

from test_pickle_asm import BUILD, EMPTY_DICT, MARK, NEWOBJ, PROTO2, STOP, glob, s  # noqa: E402
from test_pickle_reader import DATA  # noqa: E402

BINPUT0, BINGET0 = b"q\x00", b"h\x00"
SETITEMS, APPENDS, APPEND, EMPTY_LIST, REDUCE = b"u", b"e", b"a", b"]", b"R"


def _seeds():
    shared = [1, 2]
    out = [pickle.dumps(DATA, protocol=p) for p in range(6)]
    out += [pickle.dumps({"a": shared, "b": shared, "od": collections.OrderedDict(x=1)}, protocol=p) for p in (2, 4)]
    out += [pickle.dumps({"arr": np.arange(6.0).reshape(2, 3), "f": np.float32(1.5)}, protocol=p) for p in (2, 4)]
    return out


@pytest.mark.parametrize("k", range(len(_seeds())))
def test_same_as_reference_and_pickle(k):
    pkl = _seeds()[k]
    check(pkl)
    got, end = load_pickle(pkl)
    assert end == len(pkl)
    if b"numpy" not in pkl:
        assert got == pickle.loads(pkl)


def test_mutated_inputs_same_as_reference():
    """Deterministic byte mutations of the seeds (the fuzzer does this at scale: fuzz/atheris_pickle.py)."""
    rng = random.Random(0)
    seeds = _seeds()
    for _ in range(1500):
        b = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            i = rng.randrange(len(b))
            if op < 0.5:
                b[i] = rng.randrange(256)
            elif op < 0.75:
                del b[i : i + rng.randint(1, 8)]
            else:
                b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
            if not b:
                break
        check(bytes(b))


def test_setitems_on_memoized_dict_after_it_is_shared():
    # d = {}; memo[0] = d; t = (d,); d['a'] = 1 via BINGET -> t[0] sees the item (one shared object).
    # (the dict that SETITEMS filled is popped; the tuple holding the same dict is the result)
    pkl = PROTO2 + EMPTY_DICT + BINPUT0 + b"\x85" + BINGET0 + MARK + s("a") + b"K\x01" + SETITEMS + b"0" + STOP
    for fn in (load_pickle, load_pickle_reference):
        got, _ = fn(pkl)
        assert got == ({"a": 1},)
    assert pickle.loads(pkl) == ({"a": 1},)


def test_list_passed_to_ordered_dict_then_appended_keeps_the_copy():
    # OrderedDict(lst) copies lst at REDUCE time; a later APPEND to lst must not show in the dict.
    pkl = (PROTO2 + glob("collections", "OrderedDict") + EMPTY_LIST + BINPUT0 + s("x") + b"K\x01" + b"\x86"
           + APPEND + b"\x85" + REDUCE + BINGET0 + s("y") + b"K\x02" + b"\x86" + APPEND + b"\x86" + STOP)
    for fn in (load_pickle, load_pickle_reference):
        got, _ = fn(pkl)
        assert got[0] == {"x": 1} and got[1] == [("x", 1), ("y", 2)]


def test_build_on_a_memoized_record_is_seen_through_earlier_references():
    # r = Foo(); memo[0] = r; l = [r]; BUILD r {'a': 1} -> l[0].state == {'a': 1}
    pkl = (PROTO2 + glob("models.common", "Conv") + b")" + NEWOBJ + BINPUT0 + b"\x85" + BINGET0 + EMPTY_DICT
           + s("a") + b"K\x01s" + BUILD + b"0" + STOP)
    for fn in (load_pickle, load_pickle_reference):
        got, _ = fn(pkl)
        assert isinstance(got[0], Record) and got[0].state == {"a": 1}


def test_an_effect_before_a_malformed_byte_fails_first():
    # An unsafe GLOBAL, then garbage: the refusal at the GLOBAL is the error, as a sequential reader reports it.
    pkl = PROTO2 + glob("os", "system") + b"\xff"
    check(pkl)
    with pytest.raises(FormatError, match=r"byte 2 \(GLOBAL\)"):
        load_pickle(pkl)


def test_deep_nesting_refused_by_the_native_path():
    pkl = PROTO2 + b")" + b"\x85" * 5000 + STOP
    with pytest.raises(FormatError, match="nested more than"):
        load_pickle(pkl)


def test_legacy_reads_from_a_large_buffer_without_copying_it():
    blob = pickle.dumps([1, 2], protocol=2) + b"\0" * (1 << 20)
    got, end = load_pickle(np.frombuffer(blob, np.uint8))
    assert got == [1, 2] and end == len(pickle.dumps([1, 2], protocol=2))
