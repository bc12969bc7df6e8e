"""A .pt checkpoint is read in part: its zip directory and pickle, then only the storage records of the tensors in
use (the model), never a trainer's optimizer state. Checked by the kernel's count of the bytes the reading process
read (/proc/self/io rchar, no hook in pyloader), and against torch's own reading of the same file."""

import gc
import os
import subprocess
import sys

import numpy as np
import pytest

import pyloader
from pyloader import _core
from pyloader.torch_reader.checkpoint import load_torch_checkpoint

if os.environ.get("CI") != "true":  # under CI a missing reference is a failure, not a skip
    pytest.importorskip("torch")
import torch  # noqa: E402


@pytest.fixture(scope="module")
def last_pt(tmp_path_factory):
    """A YOLOv8n `last.pt` as Ultralytics' trainer writes it: fp16 `ema`, `model` None and the AdamW state of
    every parameter (about 4/5 of the file), with its stripped `best.pt` beside it."""
    if os.environ.get("CI") != "true":
        pytest.importorskip("ultralytics")
    from pyloader_bench.synthetic_pt import write_ultralytics_checkpoint

    d = tmp_path_factory.mktemp("last")
    write_ultralytics_checkpoint(d / "last.pt", "yolov8n.yaml", stripped=d / "best.pt")
    return d / "last.pt", d / "best.pt", torch.load(d / "last.pt", weights_only=False)


def _nbytes(tensors) -> int:
    return sum(t.untyped_storage().nbytes() for t in tensors if torch.is_tensor(t))


COUNT = """
import sys
import pyloader

def rchar():
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar"))

pyloader.read(sys.argv[2])  # the modules a read imports are imported (and their files read) before counting
before = rchar()
pyloader.read(sys.argv[1])
print(rchar() - before)
"""


def test_last_pt_read_without_its_optimizer_state(last_pt):
    last, best, ref = last_pt
    optimizer = _nbytes(t for s in ref["optimizer"]["state"].values() for t in s.values())
    model = _nbytes(ref["ema"].state_dict().values())
    size = last.stat().st_size
    assert optimizer > 3 * model and optimizer > size * 0.7  # the file is mostly optimizer state
    r = subprocess.run([sys.executable, "-c", COUNT, str(last), str(best)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    read = int(r.stdout.split()[-1])
    # the model's storages were read, the optimizer's not one byte of them (the rest: directory and pickle)
    assert model <= read < size - optimizer, (read, model, optimizer, size)

    # and what was read is the model's, as torch reads it: every kernel, every batch-norm vector
    arrays = pyloader.read(last, fold_bn=False)
    ref_values = {v.float().numpy().tobytes() for v in ref["ema"].state_dict().values() if v.dtype.is_floating_point}
    kernels = [a for k, a in arrays.items() if k.endswith("/kernel") and a.ndim == 4]
    assert len(kernels) > 50
    for k, a in arrays.items():
        if a.ndim == 4:
            a = a.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        assert np.ascontiguousarray(a, np.float32).tobytes() in ref_values, k


def test_tensors_outside_the_part_used_are_not_read(last_pt):
    """Without `used` every tensor is read; with used=..., the optimizer's tensors hold zeros and the model's torch's
    values. The partial read goes second, into the memory the first one left in the arena pool (its optimizer
    bytes read): every byte not read is cleared, not an earlier read's."""
    last, _, ref = last_pt
    opt_ref = ref["optimizer"]["state"]
    key = next(iter(opt_ref))
    names = [n for n, t in opt_ref[key].items() if torch.is_tensor(t) and t.numel() > 1]
    assert names and all(opt_ref[key][n].abs().sum() > 0 for n in names)
    want = ref["ema"].model[0].conv.weight.detach().numpy()

    def first_conv(c):
        return c["ema"].state["_modules"]["model"].state["_modules"]["0"].state["_modules"]["conv"]

    _core.arena_pool_clear()  # the pool keeps several freed arenas: only the eager read's, below
    eager = load_torch_checkpoint(last)
    for n in names:
        np.testing.assert_array_equal(eager["optimizer"]["state"][key][n], opt_ref[key][n].numpy())
    np.testing.assert_array_equal(first_conv(eager).state["_parameters"]["weight"], want)
    del eager
    gc.collect()
    assert _core.arena_pool_bytes() >= last.stat().st_size  # the eager read's memory, kept for the next read
    lazy = load_torch_checkpoint(last, used=lambda c: c["ema"])
    assert _core.arena_pool_bytes() == 0  # ... taken by this one
    for n in names:
        assert not lazy["optimizer"]["state"][key][n].any(), n
    np.testing.assert_array_equal(first_conv(lazy).state["_parameters"]["weight"], want)


def test_views_of_one_storage(tmp_path):
    """Tensors viewing parts of one storage: the bytes each used view reaches are read (overlapping views once),
    the views not used hold zeros."""
    base = torch.arange(1000, dtype=torch.float32) + 1
    other = torch.arange(50, dtype=torch.int64) + 1
    path = tmp_path / "views.pt"
    torch.save({"a": base[10:20], "b": base[15:30].view(3, 5), "c": base[500:], "d": other}, path)
    got = load_torch_checkpoint(path, used=lambda c: [c["a"], c["b"]])
    np.testing.assert_array_equal(got["a"], base[10:20].numpy())
    np.testing.assert_array_equal(got["b"], base[15:30].view(3, 5).numpy())
    assert not got["c"].any() and not got["d"].any()
    full = load_torch_checkpoint(path)
    for k in "abcd":
        assert full[k].base is full["a"].base  # views of one image of the file: memory of their own
    np.testing.assert_array_equal(full["c"], base[500:].numpy())
    np.testing.assert_array_equal(full["d"], other.numpy())
