"""The restricted pickle reader on plain data (against pickle.loads) and on what it must refuse."""

from __future__ import annotations

import collections
import pickle
import struct

import numpy as np
import pytest

from pyloader.errors import FormatError, UnsafePickleError
from pyloader.torch_reader.records import ClassRef, Record
from pyloader.torch_reader.unpickle import load_pickle

from test_pickle_asm import BUILD, EMPTY_DICT, EMPTY_TUPLE, MARK, NEWOBJ, PROTO2, REDUCE, STOP, TUPLE1, glob, s

DATA = {
    "int": [0, 1, -1, 255, 256, 65535, 65536, -(2**31), 2**31 - 1, 2**31, 2**64 + 3, -(2**100)],
    "float": [0.0, -1.5, 1e300, float("inf")],
    "str": ["", "abc", "ü€𝄞", "x" * 300],
    "bytes": [b"", b"\x00\xff" * 200],
    "tuple": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)],
    "set": {1, 2, 3},
    "frozenset": frozenset({"a"}),
    "none": None,
    "bool": [True, False],
    "nested": {"a": [{"b": ({"c": 1},)}]},
}


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_plain_data_like_pickle(protocol):
    pkl = pickle.dumps(DATA, protocol=protocol)
    got, end = load_pickle(pkl)
    assert got == pickle.loads(pkl)
    assert end == len(pkl)


@pytest.mark.parametrize("protocol", [2, 4])
def test_shared_references_and_ordered_dict(protocol):
    shared = [1, 2]
    obj = {"a": shared, "b": shared, "od": collections.OrderedDict([("x", 1), ("y", 2)])}
    got, _ = load_pickle(pickle.dumps(obj, protocol=protocol))
    assert got["a"] is got["b"]
    assert got["od"] == {"x": 1, "y": 2} and list(got["od"]) == ["x", "y"]


@pytest.mark.parametrize("protocol", [2, 4])
def test_numpy_values(protocol):
    obj = {"arr": np.arange(6, dtype=np.float64).reshape(2, 3), "f": np.float32(1.5), "i": np.int64(-3),
           "fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))}
    got, _ = load_pickle(pickle.dumps(obj, protocol=protocol))
    for k, v in obj.items():
        np.testing.assert_array_equal(got[k], v)
        assert np.asarray(got[k]).dtype == np.asarray(v).dtype


def test_numpy_object_array_refused():
    pkl = pickle.dumps(np.array([{"a": 1}], dtype=object), protocol=2)
    with pytest.raises(UnsafePickleError, match="numpy.dtype"):
        load_pickle(pkl)


def test_sequential_pickles():
    """Legacy torch files hold several pickles back to back: the end position chains them."""
    blob = pickle.dumps(1, protocol=2) + pickle.dumps("two", protocol=2) + pickle.dumps([3], protocol=2)
    a, p = load_pickle(blob)
    b, p = load_pickle(blob, start=p)
    c, p = load_pickle(blob, start=p)
    assert (a, b, c, p) == (1, "two", [3], len(blob))


def test_module_record():
    pkl = (PROTO2 + glob("yolov5.models.common", "Conv") + EMPTY_TUPLE + NEWOBJ + EMPTY_DICT
           + s("eps") + b"G" + struct.pack(">d", 1e-3) + b"s" + BUILD + STOP)
    got, _ = load_pickle(pkl)
    assert isinstance(got, Record) and got.cls == ClassRef("yolov5.models.common", "Conv")
    assert got.cls.is_("models.common", "Conv") and not got.cls.is_("common.other", "Conv")
    assert got.attr("eps") == 1e-3


@pytest.mark.parametrize(
    "pkl, why",
    [
        (PROTO2 + b"\x82\x01" + STOP, "EXT1"),  # the copyreg extension registry
        (b"\x80\x05" + b"\x97" + STOP, "NEXT_BUFFER"),  # out-of-band buffers
        (PROTO2 + glob("builtins", "setattr") + STOP, "builtins.setattr"),
        (PROTO2 + glob("builtins", "getattr") + glob("os", "path") + s("x") + b"\x86" + REDUCE + STOP, "os.path"),
        (PROTO2 + glob("builtins", "getattr") + b"]" + s("append") + b"\x86" + REDUCE + STOP, "getattr on a list"),
        # Calling a function that is not allow-listed (a bare reference to one is inert data; see below).
        (PROTO2 + glob("torch", "load") + s("x.pt") + TUPLE1 + REDUCE + STOP, "torch.load"),
        (PROTO2 + glob("numpy", "load") + s("x.npy") + TUPLE1 + REDUCE + STOP, "numpy.load"),
        (PROTO2 + glob("ultralytics.nn.tasks", "DetectionModel") + EMPTY_TUPLE + REDUCE + STOP, "REDUCE on class"),
        (PROTO2 + MARK + glob("ultralytics.nn.tasks", "DetectionModel") + b"o" + STOP, "OBJ"),
        (PROTO2 + glob("torch.nn.modules.conv", "Conv2d") + s("x") + TUPLE1 + REDUCE + STOP, "REDUCE on class"),
        (PROTO2 + MARK + b"(" + b"]" + STOP, "MARK"),  # not refused for safety: malformed (see below)
    ],
)
def test_refused(pkl, why):
    err = FormatError if why == "MARK" else UnsafePickleError
    with pytest.raises(err) as e:
        load_pickle(pkl, where="f.pt: zip entry 'archive/data.pkl'")
    assert "f.pt: zip entry 'archive/data.pkl', byte" in str(e.value)
    if why != "MARK":
        assert why in str(e.value)


def test_getattr_on_a_class_is_an_inert_reference():
    """Protocol 2 pickles a class's function (YOLOv5's Segment.detect = Detect.forward) as getattr(class, name): an
    inert ClassRef of the dotted name, nothing looked up; calling it is refused as any other."""
    ref = PROTO2 + glob("builtins", "getattr") + glob("yolov5.models.yolo", "Detect") + s("forward") + b"\x86" + REDUCE
    got, _ = load_pickle(ref + STOP)
    assert got == ClassRef("yolov5.models.yolo", "Detect.forward")
    with pytest.raises(UnsafePickleError, match="Detect.forward"):
        load_pickle(ref + EMPTY_TUPLE + REDUCE + STOP)
    with pytest.raises(UnsafePickleError, match="getattr on class"):  # not an identifier
        load_pickle(PROTO2 + glob("builtins", "getattr") + glob("a.b", "C") + s("x.y") + b"\x86" + REDUCE + STOP)


def test_unknown_class_is_inert_data():
    # Safe is not the same as supported: a class no family knows is an inert record (its family's loader says
    # it is unsupported), not an attack.
    pkl = PROTO2 + glob("ultralytics.nn.tasks", "DetectionModel") + EMPTY_TUPLE + NEWOBJ + EMPTY_DICT + s("yaml") \
        + s("y") + b"s" + BUILD + STOP
    got, _ = load_pickle(pkl)
    assert isinstance(got, Record) and got.cls.qualname == "ultralytics.nn.tasks.DetectionModel"
    assert got.attr("yaml") == "y"


def test_build_on_non_record_refused():
    # BUILD on a list would call its __setstate__/__dict__ update in pickle: refused here.
    with pytest.raises(UnsafePickleError, match="BUILD"):
        load_pickle(PROTO2 + b"]" + EMPTY_DICT + s("a") + b"K\x01s" + BUILD + STOP)


def test_malformed():
    for pkl in (b"", PROTO2, PROTO2 + b"X\xff\xff\xff\x7f", PROTO2 + b"h\x05" + STOP, PROTO2 + b"\xfe" + STOP):
        with pytest.raises(FormatError):
            load_pickle(pkl)


def test_ultralytics_namespace_is_inert_data():
    """Ultralytics' IterableSimpleNamespace pickles as REDUCE(cls, ()) + BUILD(dict): read as a record, nothing
    called. With arguments it would be a constructor call: refused. Another class REDUCEd is refused too."""
    ns = glob("ultralytics.utils", "IterableSimpleNamespace")
    got, _ = load_pickle(PROTO2 + ns + EMPTY_TUPLE + REDUCE + EMPTY_DICT + s("imgsz") + b"K\x40" + b"s" + BUILD + STOP)
    assert isinstance(got, Record) and got.cls == ClassRef("ultralytics.utils", "IterableSimpleNamespace")
    assert got.attr("imgsz") == 64
    with pytest.raises(UnsafePickleError, match="REDUCE on class 'ultralytics.utils.IterableSimpleNamespace'"):
        load_pickle(PROTO2 + ns + s("x") + TUPLE1 + REDUCE + STOP)
    with pytest.raises(UnsafePickleError, match="REDUCE on class 'ultralytics.utils.Other'"):
        load_pickle(PROTO2 + glob("ultralytics.utils", "Other") + EMPTY_TUPLE + REDUCE + STOP)
