"""A few pickle opcodes, written by hand, for tests that need pickles no well-behaved pickler would write.

Used by tests/test_torch_*.py and tests/test_pickle_*.py. No torch needed.
"""

from __future__ import annotations

import struct
import zipfile

PROTO2 = b"\x80\x02"
STOP = b"."
MARK = b"("
TUPLE = b"t"
EMPTY_TUPLE = b")"
EMPTY_DICT = b"}"
SETITEM = b"s"
REDUCE = b"R"
NEWOBJ = b"\x81"
BUILD = b"b"
BINPERSID = b"Q"
NEWFALSE = b"\x89"
TUPLE1 = b"\x85"


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def s(text: str) -> bytes:
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def i(v: int) -> bytes:
    return b"J" + struct.pack("<i", v)


def ints(vs) -> bytes:
    return MARK + b"".join(i(v) for v in vs) + TUPLE


def tensor(key: str, numel: int, offset: int, size, stride, storage: str = "FloatStorage") -> bytes:
    """torch._utils._rebuild_tensor_v2(<storage pid>, offset, size, stride, False, OrderedDict())."""
    pid = MARK + s("storage") + glob("torch", storage) + s(key) + s("cpu") + i(numel) + TUPLE + BINPERSID
    hooks = glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE
    return (glob("torch._utils", "_rebuild_tensor_v2") + MARK + pid + i(offset) + ints(size) + ints(stride)
            + NEWFALSE + hooks + TUPLE + REDUCE)


def dict_of(**items: bytes) -> bytes:
    """A pickle of {name: <value opcodes>} (values are opcode fragments)."""
    out = PROTO2 + EMPTY_DICT
    for k, v in items.items():
        out += s(k) + v + SETITEM
    return out + STOP


def write_torch_zip(path, pkl: bytes, records: dict | None = None, prefix: str = "archive",
                    compress_pickle: bool = False, compress_records: bool = False) -> None:
    """The layout torch.save writes: <prefix>/data.pkl, <prefix>/data/<key>, <prefix>/version."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", pkl,
                   compress_type=zipfile.ZIP_DEFLATED if compress_pickle else zipfile.ZIP_STORED)
        for key, data in (records or {}).items():
            z.writestr(f"{prefix}/data/{key}", data,
                       compress_type=zipfile.ZIP_DEFLATED if compress_records else zipfile.ZIP_STORED)
        z.writestr(f"{prefix}/version", b"3\n")


# ---- self-tests: the hand-written opcodes are well-formed pickles (so the tests using them fail for the
# reason they claim, not because of a malformed fragment).


def test_fragments_are_well_formed_pickles():
    import io
    import pickletools

    for pkl in (
        dict_of(t=tensor("0", 6, 0, (2, 3), (3, 1))),
        dict_of(x=glob("os", "system") + s("true") + TUPLE1 + REDUCE),
        dict_of(m=glob("models.common", "Conv") + EMPTY_TUPLE + NEWOBJ + EMPTY_DICT + BUILD),
    ):
        pickletools.dis(pkl, out=io.StringIO())  # raises on a malformed pickle


def test_tensor_fragment_reads_back(tmp_path):
    import numpy as np

    from pyloader.torch_reader.checkpoint import load_torch_checkpoint

    data = np.arange(6, dtype="<f4")
    path = tmp_path / "ok.pt"
    write_torch_zip(path, dict_of(t=tensor("0", 6, 1, (2, 2), (3, 1))), {"0": data.tobytes()})
    got = load_torch_checkpoint(path)["t"]
    np.testing.assert_array_equal(got, [[1, 2], [4, 5]])
