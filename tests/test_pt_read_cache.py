"""The per-process cache of a .pt's parsed structure (torch_reader.checkpoint.cached, used by pyloader.read and
load): a repeated read parses nothing again, hands out arrays of its own, and never serves a file that changed:
its identity (device, inode, size, modification and change times) and every byte the plan was made from (the
directory, the pickle, the tensors in use) are compared at each call."""

import os

import numpy as np
import pytest

import pyloader
from pyloader import _core
from pyloader.torch_reader import checkpoint
from pyloader.torch_reader.checkpoint import read_bytes


@pytest.fixture(scope="module")
def pt(tmp_path_factory):
    """A YOLOv8n checkpoint as Ultralytics saves one, random weights (pyloader_bench.synthetic_pt), fp16."""
    if os.environ.get("CI") != "true":
        pytest.importorskip("torch")
        pytest.importorskip("ultralytics")
    import torch
    from pyloader_bench.synthetic_pt import randomize_ultralytics
    from ultralytics.nn.tasks import DetectionModel

    model = randomize_ultralytics(DetectionModel("yolov8n.yaml", verbose=False), seed=3).eval().half()
    path = tmp_path_factory.mktemp("cache") / "best.pt"
    torch.save({"epoch": -1, "model": model, "ema": None, "optimizer": None}, path)
    return path


@pytest.fixture
def counted(monkeypatch):
    """How many times a checkpoint's pickle is interpreted."""
    calls = []
    real = checkpoint.load_pickle
    monkeypatch.setattr(checkpoint, "load_pickle", lambda *a, **k: calls.append(1) or real(*a, **k))
    checkpoint.clear_cache()
    yield calls
    checkpoint.clear_cache()


def _flip(path, offset, n=64):
    """Change n bytes of the file in place at `offset`; size and modification time as they were."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        block = f.read(n)
        f.seek(offset)
        f.write(bytes(b ^ 0x01 for b in block))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    return after


def _largest_record(path):
    return max(_core.torch_zip_index(read_bytes(path))["records"].values(), key=lambda r: r[1])[0]


def test_repeated_read_parses_once_and_returns_independent_arrays(pt, counted):
    first = pyloader.read(pt)
    second = pyloader.read(pt)
    assert len(counted) == 1  # the second read compared the file's bytes, parsed nothing
    assert list(first) == list(second)
    for k in first:
        np.testing.assert_array_equal(first[k], second[k])
        assert not np.shares_memory(first[k], second[k])
    key = next(k for k in first if k.endswith("/kernel"))
    first[key][...] = 0
    assert pyloader.read(pt)[key].any()
    unfolded = pyloader.read(pt, fold_bn=False)  # other options: a plan of their own from the same parse
    assert len(counted) == 1 and any(k.endswith("/moving_variance") for k in unfolded)


def test_rewrite_with_same_size_and_mtime_is_read_again(pt, counted, tmp_path):
    """os.utime puts the modification time back, not the change time: the identity differs, the file is parsed
    again and the new bytes are what is read."""
    path = tmp_path / "copy.pt"
    path.write_bytes(pt.read_bytes())
    before = pyloader.read(path)
    st = _flip(path, _largest_record(path))
    after = pyloader.read(path)
    assert len(counted) == 2
    assert checkpoint._CACHE[str(path)].ident[:5] == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    checkpoint.clear_cache()
    fresh = pyloader.read(path)
    assert all(np.array_equal(fresh[k], after[k]) for k in fresh)


@pytest.mark.parametrize("where", ["tensor", "pickle"])
def test_same_identity_different_bytes_is_read_again(pt, counted, tmp_path, where):
    """A rewrite the identity cannot see (a coarse clock: the same change time; simulated by giving the kept entry
    the new identity) is found by the comparison of the bytes: parsed again, never served stale."""
    path = tmp_path / "copy.pt"
    path.write_bytes(pt.read_bytes())
    before = pyloader.read(path)
    offset, size = _core.torch_zip_index(read_bytes(path))["pickle"]
    st = _flip(path, _largest_record(path) if where == "tensor" else offset + size // 2, 64 if where == "tensor" else 1)
    entry = checkpoint._CACHE[str(path)]
    entry.ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) + entry.ident[5:]
    try:
        after = pyloader.read(path)
    except pyloader.FormatError:  # a changed pickle may no longer be a model: what the file says now, either way
        assert where == "pickle"
    else:
        if where == "tensor":
            assert any(not np.array_equal(before[k], after[k]) for k in before)
    assert len(counted) == 2
