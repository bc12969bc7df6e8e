"""Malicious and broken PyTorch checkpoints: each must raise FormatError (UnsafePickleError for code) naming
the file and the entry, and nothing in the file may run (a sentinel file proves it)."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import zipfile

import numpy as np
import pytest

import pyloader
from pyloader.errors import FormatError, UnsafePickleError
from pyloader.torch_reader.checkpoint import load_torch_checkpoint

from test_pickle_asm import (BUILD, EMPTY_DICT, EMPTY_TUPLE, MARK, NEWOBJ, REDUCE, SETITEM, STOP, TUPLE, TUPLE1,
                             PROTO2, dict_of, glob, i, s, tensor, write_torch_zip)


@pytest.fixture
def sentinel(tmp_path):
    p = tmp_path / "PAYLOAD_RAN"
    yield p
    assert not p.exists(), "a payload in the pickle ran"


class _Reduce:
    """Pickles as `fn(*args)`: the classic pickle code-execution gadget."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _payload_file(tmp_path, obj, name="evil.pt"):
    path = tmp_path / name
    write_torch_zip(path, pickle.dumps({"model": obj, "epoch": 1}, protocol=2))
    return path


def _check(exc_info, path, entry):
    msg = str(exc_info.value)
    assert str(path) in msg, msg
    assert entry in msg, msg


def test_os_system_payload_would_run_under_pickle(tmp_path, sentinel):
    # Control: the same bytes do run under pickle.load, so the refusals below are meaningful.
    # (A second sentinel, so the fixture's check stays about pyloader.)
    other = tmp_path / "control"
    path = _payload_file(tmp_path, _Reduce(os.system, f"touch {other}"))
    with zipfile.ZipFile(path) as z:
        pickle.loads(z.read("archive/data.pkl"))
    assert other.exists()


def test_os_system(tmp_path, sentinel):
    # REDUCE of os.system (pickled as posix.system): code execution on load with pickle.
    path = _payload_file(tmp_path, _Reduce(os.system, f"touch {sentinel}"))
    with pytest.raises(UnsafePickleError) as e:
        pyloader.load(path)
    _check(e, path, "archive/data.pkl")
    assert "system" in str(e.value)


def test_os_system_by_hand(tmp_path, sentinel):
    # The same, spelt 'os system' as a hand-written GLOBAL.
    path = tmp_path / "evil.pt"
    write_torch_zip(path, dict_of(x=glob("os", "system") + s(f"touch {sentinel}") + TUPLE1 + REDUCE))
    with pytest.raises(UnsafePickleError) as e:
        pyloader.read(path)
    _check(e, path, "archive/data.pkl")


def test_builtins_exec(tmp_path, sentinel):
    # exec of Python source: arbitrary code.
    path = _payload_file(tmp_path, _Reduce(exec, f"open({str(sentinel)!r}, 'w').write('x')"))
    with pytest.raises(UnsafePickleError) as e:
        pyloader.read(path)
    _check(e, path, "archive/data.pkl")
    assert "__builtin__.exec" in str(e.value)  # protocol 2 spells builtins so


def test_builtins_eval(tmp_path, sentinel):
    # eval of an expression with side effects.
    path = _payload_file(tmp_path, _Reduce(eval, f"open({str(sentinel)!r}, 'w').write('x')"))
    with pytest.raises(UnsafePickleError) as e:
        pyloader.load(path)
    _check(e, path, "archive/data.pkl")
    assert "__builtin__.eval" in str(e.value)


def test_subprocess(tmp_path, sentinel):
    # subprocess.call of a command list.
    path = _payload_file(tmp_path, _Reduce(subprocess.call, ["touch", str(sentinel)]))
    with pytest.raises(UnsafePickleError) as e:
        pyloader.read(path)
    _check(e, path, "archive/data.pkl")


def test_global_hidden_in_module_record(tmp_path, sentinel):
    # A plausible models.common.Conv record whose state hides os.system inside its _modules.
    evil = glob("os", "system") + s(f"touch {sentinel}") + TUPLE1 + REDUCE
    record = (glob("models.common", "Conv") + EMPTY_TUPLE + NEWOBJ
              + EMPTY_DICT + s("_modules") + EMPTY_DICT + s("act") + evil + SETITEM + SETITEM + BUILD)
    path = tmp_path / "hidden.pt"
    write_torch_zip(path, dict_of(model=record))
    with pytest.raises(UnsafePickleError) as e:
        pyloader.read(path)
    _check(e, path, "archive/data.pkl")
    assert "os.system" in str(e.value) and "GLOBAL" in str(e.value)


def test_reduce_on_allowed_class(tmp_path, sentinel):
    # Classes are inert records; calling one (REDUCE) would run its constructor: refused.
    path = tmp_path / "reduce_class.pt"
    write_torch_zip(path, dict_of(model=glob("models.yolo", "DetectionModel") + s("evil.yaml") + TUPLE1 + REDUCE))
    with pytest.raises(UnsafePickleError, match="REDUCE on class 'models.yolo.DetectionModel'") as e:
        pyloader.read(path)
    _check(e, path, "archive/data.pkl")


def test_inst_unknown_class(tmp_path, sentinel):
    # Protocol-0 INST builds an instance of a named class with arguments: refused for unknown classes.
    pkl = PROTO2 + MARK + s("touch") + s(str(sentinel)) + b"isubprocess\nPopen\n" + STOP
    path = tmp_path / "inst.pt"
    write_torch_zip(path, pkl)
    with pytest.raises(UnsafePickleError, match="subprocess.Popen") as e:
        pyloader.read(path)
    _check(e, path, "archive/data.pkl")


def test_obj_unknown_class(tmp_path, sentinel):
    # OBJ on a function (os.system) is a call in disguise.
    pkl = PROTO2 + MARK + glob("os", "system") + s(f"touch {sentinel}") + b"o" + STOP
    path = tmp_path / "obj.pt"
    write_torch_zip(path, pkl)
    with pytest.raises(UnsafePickleError) as e:
        pyloader.read(path)
    _check(e, path, "archive/data.pkl")


def test_persistent_id_to_missing_record(tmp_path):
    # The pickle names storage '7'; the archive has only '0'.
    path = tmp_path / "missing.pt"
    write_torch_zip(path, dict_of(t=tensor("7", 6, 0, (6,), (1,))), {"0": bytes(24)})
    with pytest.raises(FormatError, match="no such record") as e:
        load_torch_checkpoint(path)
    _check(e, path, "archive/data/7")


def test_persistent_id_past_the_record(tmp_path):
    # The storage claims 1000 floats but its record (the end of the file) holds 6.
    path = tmp_path / "past.pt"
    write_torch_zip(path, dict_of(t=tensor("0", 1000, 0, (1000,), (1,))), {"0": bytes(24)})
    with pytest.raises(FormatError, match="needs 4000 bytes, the record holds 24") as e:
        load_torch_checkpoint(path)
    _check(e, path, "archive/data/0")


def test_tensor_overruns_storage(tmp_path):
    # size (3, 3) with stride (3, 1) reaches element 8 of a 6-element storage.
    path = tmp_path / "overrun.pt"
    write_torch_zip(path, dict_of(t=tensor("0", 6, 0, (3, 3), (3, 1))), {"0": bytes(24)})
    with pytest.raises(FormatError, match="reaches element 8, but the storage holds 6") as e:
        load_torch_checkpoint(path)
    _check(e, path, "archive/data/0")


def test_tensor_offset_overruns_storage(tmp_path):
    # A valid shape at a storage offset that pushes it past the end.
    path = tmp_path / "offset.pt"
    write_torch_zip(path, dict_of(t=tensor("0", 6, 4, (2, 2), (2, 1))), {"0": bytes(24)})
    with pytest.raises(FormatError, match="storage holds 6") as e:
        load_torch_checkpoint(path)
    _check(e, path, "archive/data/0")


def _small_torch_file(tmp_path, name="real.pt"):
    torch = pytest.importorskip("torch") if os.environ.get("CI", "").lower() != "true" else __import__("torch")
    path = tmp_path / name
    torch.save({"w": torch.arange(100, dtype=torch.float16), "b": torch.ones(3)}, path)
    return path


def test_truncated_zip(tmp_path):
    # A download cut short: no end-of-central-directory record.
    path = _small_torch_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="end-of-central-directory") as e:
        pyloader.read(path)
    assert str(path) in str(e.value)


def test_truncated_zip_tail(tmp_path):
    # Only the last bytes missing: the ZIP64 end record points past the file.
    path = _small_torch_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-30])
    with pytest.raises(FormatError) as e:
        pyloader.read(path)
    assert str(path) in str(e.value)


def _central_records(data: bytes):
    """(offset, name) of each central directory record."""
    out = []
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        n = struct.unpack_from("<H", data, pos + 28)[0]
        out.append((pos, data[pos + 46 : pos + 46 + n].decode()))
        pos = data.find(b"PK\x01\x02", pos + 46 + n)
    return out


@pytest.mark.parametrize("field, offset", [("compressed size", 20), ("size", 24), ("local header offset", 42)])
def test_central_directory_lies(tmp_path, field, offset):
    # The central directory gives data/0 a size or offset past the end of the file.
    path = tmp_path / "lying.pt"
    write_torch_zip(path, dict_of(t=tensor("0", 6, 0, (6,), (1,))), {"0": bytes(24)})
    data = bytearray(path.read_bytes())
    pos = dict((n, p) for p, n in _central_records(bytes(data)))["archive/data/0"]
    struct.pack_into("<I", data, pos + offset, 0x7FFFFFF0)
    if field == "size":  # keep compressed size == size so only the range check can catch it
        struct.pack_into("<I", data, pos + 20, 0x7FFFFFF0)
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError) as e:
        pyloader.read(path)
    _check(e, path, "archive/data/0")


def test_central_directory_offset_past_end(tmp_path):
    # The end record places the central directory past the end of the file.
    path = tmp_path / "cd.pt"
    write_torch_zip(path, dict_of(t=tensor("0", 6, 0, (6,), (1,))), {"0": bytes(24)})
    data = bytearray(path.read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    struct.pack_into("<I", data, eocd + 16, len(data) + 100)
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="central directory") as e:
        pyloader.read(path)
    assert str(path) in str(e.value)


def test_central_directory_entry_count_lies(tmp_path):
    # 60000 entries claimed in a directory of a few hundred bytes.
    path = tmp_path / "count.pt"
    write_torch_zip(path, dict_of(t=tensor("0", 6, 0, (6,), (1,))), {"0": bytes(24)})
    data = bytearray(path.read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, eocd + 8, 60000, 60000)
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="60000 entries") as e:
        pyloader.read(path)
    assert str(path) in str(e.value)


def test_compressed_pickle(tmp_path):
    # torch never compresses; a deflated data.pkl is refused (no decompressor, no zip bombs).
    path = tmp_path / "deflate.pt"
    write_torch_zip(path, dict_of(t=tensor("0", 6, 0, (6,), (1,))), {"0": bytes(24)}, compress_pickle=True)
    with pytest.raises(FormatError, match="compression method 8") as e:
        pyloader.read(path)
    _check(e, path, "archive/data.pkl")


def test_compressed_record(tmp_path):
    # A deflated tensor record: its bytes are not the tensor's.
    path = tmp_path / "deflate_rec.pt"
    write_torch_zip(path, dict_of(t=tensor("0", 6, 0, (6,), (1,))), {"0": bytes(24)}, compress_records=True)
    with pytest.raises(FormatError, match="compression method 8") as e:
        pyloader.read(path)
    _check(e, path, "archive/data/0")


def test_no_pickle_in_archive(tmp_path):
    # A zip without <prefix>/data.pkl is not a torch checkpoint.
    path = tmp_path / "plain.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.txt", "hello")
    with pytest.raises(FormatError, match="data.pkl") as e:
        pyloader.read(path)
    assert str(path) in str(e.value)


def test_truncated_pickle(tmp_path):
    # A pickle cut before STOP.
    path = tmp_path / "cut.pt"
    pkl = dict_of(t=tensor("0", 6, 0, (6,), (1,)))
    write_torch_zip(path, pkl[: len(pkl) // 2], {"0": bytes(24)})
    with pytest.raises(FormatError, match="truncated|underflow|MARK") as e:
        pyloader.read(path)
    _check(e, path, "archive/data.pkl")


def test_read_is_zero_copy_and_read_only(tmp_path):
    # Positive control for the layout helpers: a well-formed file loads, as a read-only view of the map.
    path = tmp_path / "good.pt"
    write_torch_zip(path, dict_of(t=tensor("0", 6, 0, (3, 2), (1, 3))), {"0": np.arange(6, dtype="<f4").tobytes()})
    t = load_torch_checkpoint(path)["t"]
    np.testing.assert_array_equal(t, np.arange(6, dtype=np.float32).reshape(2, 3).T)
    assert not t.flags.writeable and not t.flags.owndata


def test_big_endian_archive(tmp_path):
    # Tensors written by a big-endian machine would be read as garbage: refused, naming the entry.
    path = tmp_path / "big.pt"
    write_torch_zip(path, dict_of(t=tensor("0", 6, 0, (6,), (1,))), {"0": bytes(24)})
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("archive/byteorder", b"big")
    with pytest.raises(FormatError, match="byte order") as e:
        pyloader.read(path)
    _check(e, path, "archive/byteorder")
