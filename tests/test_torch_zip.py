"""The native zip reader (pyloader._core) and the torch checkpoint reader against torch and Python's zipfile."""

from __future__ import annotations

import io
import os
import struct
import zipfile

import numpy as np
import pytest

from pyloader import _core
from pyloader.errors import FormatError
from pyloader.torch_reader.checkpoint import load_torch_checkpoint, read_bytes

try:
    import torch
except ImportError as e:  # pragma: no cover
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(f"CI needs torch for the torch zip tests: {e}") from e
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")


def _same_as_zipfile(path):
    """Our directory == zipfile's (names, sizes), and the bytes at our data offsets == zipfile.read."""
    buf = read_bytes(path)
    ours = _core.zip_directory(buf)
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        assert [e[0] for e in ours] == [i.filename for i in infos]
        for (name, method, size, offset), info in zip(ours, infos):
            assert method == info.compress_type == 0
            assert size == info.file_size
            assert buf[offset : offset + size].tobytes() == z.read(name)
    return ours, infos


@needs_torch
def test_torch_save_archive(tmp_path):
    """torch.save writes ZIP64 end records and data descriptors (local headers say size 0)."""
    path = tmp_path / "t.pt"
    torch.save({"a": torch.arange(1000, dtype=torch.float16), "b": torch.randn(7, 5)}, path)
    data = path.read_bytes()
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data  # ZIP64 end record and locator
    ours, infos = _same_as_zipfile(path)
    assert all(i.flag_bits & 0x08 for i in infos)  # data descriptors
    first = infos[0]
    assert struct.unpack_from("<II", data, 18) == (0, 0)  # the local header of the first entry: sizes 0
    assert first.file_size > 0
    # Records are 64-byte aligned by torch's writer (the local extra field pads them).
    assert all(off % 64 == 0 for name, _, _, off in ours if "/data/" in name)


def test_zip64_central_directory(tmp_path):
    """More than 65535 entries: zipfile writes a ZIP64 end record (the 16-bit counts say 0xFFFF)."""
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as z:
        for k in range(65540):
            z.writestr(f"d/{k}", b"")
        z.writestr("d/last", b"the end", compress_type=zipfile.ZIP_STORED)
    data = path.read_bytes()
    eocd = data.rfind(b"PK\x05\x06")
    assert struct.unpack_from("<H", data, eocd + 10)[0] == 0xFFFF
    ours = _core.zip_directory(read_bytes(path))
    assert len(ours) == 65541
    name, method, size, offset = ours[-1]
    assert name == "d/last" and data[offset : offset + size] == b"the end"


def _opened(path):
    """torch_zip_open of the file (directory and pickle read with pread) -> (image, index), then read_into_image
    of no range (the image's bytes not read are undefined until then: a pooled arena's earlier contents)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        image, index = _core.torch_zip_open(fd, os.fstat(fd).st_size, os.fsencode(path))
        _core.read_into_image(fd, os.fstat(fd).st_size, os.fsencode(path), image, [])
        return image, index
    finally:
        os.close(fd)


@pytest.mark.parametrize("comment", [0, 100, 0xFFFF])
@pytest.mark.parametrize("writer", ["zipfile", pytest.param("torch", marks=needs_torch)])
def test_directory_read_with_pread_is_the_in_memory_one(tmp_path, comment, writer):
    """torch_zip_open reads only the end of the archive (end record, ZIP64 locator and record as torch.save
    writes them, a comment up to 64 KiB), the central directory and the local headers: the same index as the
    reader of the whole file, and an image holding the pickle's bytes at their offsets and zeros in place of the
    records, until the tensors are read."""
    path = tmp_path / "c.pt"
    if writer == "torch":
        torch.save({"t": torch.full((4096,), 7, dtype=torch.uint8)}, path)
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
            z.writestr("archive/data/0", b"\x07" * 4096)
    data = bytearray(path.read_bytes())
    assert data[-22:-18] == b"PK\x05\x06" and (data[-42:-38] == b"PK\x06\x07") == (writer == "torch")
    data[-2:] = struct.pack("<H", comment)
    path.write_bytes(bytes(data) + b"c" * comment)
    image, index = _opened(path)
    assert index == _core.torch_zip_index(read_bytes(path))
    offset, size = index["pickle"]
    assert image[offset : offset + size].tobytes() == data[offset : offset + size] and not image.flags.writeable
    record, length = index["records"]["0"]
    assert length == 4096 and not image[record : record + length].any()
    got = load_torch_checkpoint(path)
    assert got == {} if writer == "zipfile" else np.array_equal(got["t"], np.full(4096, 7, np.uint8))


def test_force_zip64_local_headers(tmp_path):
    """force_zip64: local headers carry ZIP64 extras (sizes 0xFFFFFFFF); data start from the local header."""
    path = tmp_path / "z64.zip"
    with zipfile.ZipFile(path, "w") as z:
        for k in range(3):
            with z.open(f"archive/data/{k}", "w", force_zip64=True) as f:
                f.write(bytes([k]) * (100 + k))
    data = path.read_bytes()
    assert struct.unpack_from("<II", data, 18) == (0xFFFFFFFF, 0xFFFFFFFF)
    _same_as_zipfile(path)


class _Unseekable(io.RawIOBase):
    def __init__(self):
        self.chunks = []

    def writable(self):
        return True

    def write(self, b):
        self.chunks.append(bytes(b))
        return len(b)


def test_data_descriptor_archive(tmp_path):
    """Written to an unseekable stream, zipfile uses data descriptors: local sizes 0, flag bit 3."""
    out = _Unseekable()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("archive/data/0", np.arange(4, dtype="<f4").tobytes())
    data = b"".join(out.chunks)
    assert struct.unpack_from("<H", data, 6)[0] & 0x08 and struct.unpack_from("<II", data, 18) == (0, 0)
    path = tmp_path / "dd.pt"
    path.write_bytes(data)
    _same_as_zipfile(path)
    idx = _core.torch_zip_index(read_bytes(path))
    assert idx["prefix"] == "archive" and set(idx["records"]) == {"0"}
    off, size = idx["records"]["0"]
    assert data[off : off + size] == np.arange(4, dtype="<f4").tobytes()
    assert load_torch_checkpoint(path) == {}


def test_not_a_zip(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(FormatError, match="end-of-central-directory"):
        _core.zip_directory(read_bytes(path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    assert len(read_bytes(path)) == 0
    with pytest.raises(FormatError, match="too short"):
        _core.zip_directory(read_bytes(path))


def test_file_bytes_are_read_only(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    m = read_bytes(path)
    assert m.tobytes() == b"abc" and not m.flags.writeable
    with pytest.raises(ValueError):
        m[0] = 1


@needs_torch
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_tensors_match_torch(tmp_path, legacy):
    """fp16/fp32/int64 tensors, views with offsets and strides, shared storages, parameters: same as torch."""
    base = torch.randn(6, 10)
    obj = {
        "half": torch.randn(3, 4, 5).half(),
        "float": base,
        "view": base[1:5, 2:9:3],  # storage offset and strides
        "transposed": base.t(),  # shares base's storage
        "long": torch.arange(-5, 5),
        "int": torch.arange(7, dtype=torch.int32),
        "bool": torch.tensor([True, False]),
        "param": torch.nn.Parameter(torch.randn(2, 3)),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(3.5),
        "nested": [{"x": (torch.ones(2),)}],
        "meta": {"epoch": 3, "lr": 0.01, "name": "ü", "none": None, "flag": True, "big": 2**70},
    }
    path = tmp_path / "t.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    got = load_torch_checkpoint(path)
    for k in ("half", "float", "view", "transposed", "long", "int", "bool", "param", "empty", "scalar"):
        want = obj[k].detach().numpy()
        assert got[k].dtype == want.dtype, k
        assert got[k].shape == want.shape, k
        np.testing.assert_array_equal(got[k], want, err_msg=k)
        assert not got[k].flags.writeable, k
    np.testing.assert_array_equal(got["nested"][0]["x"][0], np.ones(2, np.float32))
    assert got["meta"] == obj["meta"]
    # Zero copy: views of one storage share memory (with each other and with the map).
    assert np.shares_memory(got["float"], got["transposed"])
    assert np.shares_memory(got["float"], got["view"])


def _same_array(a, b, what):
    assert (a.dtype, a.shape, a.strides) == (b.dtype, b.shape, b.strides), what
    for f in ("C_CONTIGUOUS", "F_CONTIGUOUS", "WRITEABLE", "ALIGNED", "OWNDATA"):
        assert a.flags[f] == b.flags[f], (what, f)
    if a.size:  # the same bytes of the map (an empty tensor is a new empty array on both paths)
        assert a.__array_interface__["data"][0] == b.__array_interface__["data"][0], what
    np.testing.assert_array_equal(a, b, err_msg=what)


@needs_torch
def test_native_fast_paths_give_what_the_python_policy_gives(tmp_path, monkeypatch):
    """The binding makes storages (ZipStorages' plain case) and tensor views (rebuild_tensor's plain case) itself:
    the same storages and arrays (dtype, shape, strides, flags, the same bytes of the map) as the Python policy run
    by the reference interpreter; ZipStorages.__call__ is reached only for what the fast path leaves (a storage
    seen before)."""
    from pyloader.torch_reader import checkpoint
    from pyloader.torch_reader.unpickle import load_pickle, load_pickle_reference

    base = torch.randn(6, 10)
    obj = {"half": torch.randn(3, 4, 5).half(), "float": base, "view": base[1:5, 2:9:3], "t": base.t(),
           "bcast": torch.randn(3, 1).expand(3, 4), "param": torch.nn.Parameter(torch.randn(2, 3)),
           "long": torch.arange(-5, 5), "bool": torch.tensor([True, False]), "empty": torch.zeros(0, 3),
           "scalar": torch.tensor(3.5), "odd": torch.randn(7).half()[1:], "byte": torch.arange(5, dtype=torch.uint8)}
    path = tmp_path / "t.pt"
    torch.save(obj, path)
    buf = read_bytes(path)
    index = _core.torch_zip_index(buf)
    off, size = index["pickle"]

    def read(interpreter):
        storages = checkpoint.ZipStorages(str(path), buf, index["prefix"], index["records"])
        value, _ = interpreter(buf, start=off, end=off + size, persistent_load=storages, where=storages.where)
        return value, storages.cache

    calls = []
    plain_call = checkpoint.ZipStorages.__call__
    monkeypatch.setattr(checkpoint.ZipStorages, "__call__",
                        lambda self, pid: calls.append(pid[2]) or plain_call(self, pid))
    got, got_storages = read(load_pickle)
    # base's storage again for "view" and "t", and the empty one: every other first use was native
    empty = [k for k, st in got_storages.items() if st.numel == 0]
    again = [c for c in calls if c not in empty]
    assert calls.count(empty[0]) == 1 and len(again) == 2 and len(set(again)) == 1, calls
    calls.clear()
    ref, ref_storages = read(load_pickle_reference)
    assert len(calls) == len(obj)  # the reference calls the Python policy for each
    assert list(got_storages) == list(ref_storages)
    for key, s in got_storages.items():
        r = ref_storages[key]
        assert (type(s), s.dtype, s.key, s.numel, s.where) == (type(r), r.dtype, r.key, r.numel, r.where), key
        assert s.where.endswith(f"t.pt: zip entry '{index['prefix']}/data/{key}'")
        _same_array(s.array, r.array, f"storage {key}")
    assert list(got) == list(ref)
    for k in obj:
        assert type(got[k]) is type(ref[k]) is np.ndarray, k
        _same_array(got[k], ref[k], k)
        np.testing.assert_array_equal(got[k], obj[k].detach().numpy(), err_msg=k)  # and what torch holds


@needs_torch
def test_legacy_storage_table_validated(tmp_path):
    """Legacy format: a storage's element count that runs past the file is a FormatError naming it."""
    path = tmp_path / "old.pt"
    torch.save({"a": torch.arange(10.0)}, path, _use_new_zipfile_serialization=False)
    data = bytearray(path.read_bytes())
    # The last storage: int64 numel (10) then 40 bytes, at the very end of the file.
    pos = len(data) - 40 - 8
    assert struct.unpack_from("<q", data, pos)[0] == 10
    struct.pack_into("<q", data, pos, 10**6)
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="legacy storage 0") as e:
        load_torch_checkpoint(path)
    assert str(path) in str(e.value)
