"""Files that change underneath a read (issue 19 item 1): a checkpoint truncated, rewritten or deleted after it was
read leaves the arrays handed out intact (they are memory of their own, not views of a memory map: a map would
raise SIGBUS); one changed while it is read is a FormatError "changed while reading" naming the file, never a crash
and never a mixture of two versions. The faults: the file truncated or deleted after a read, changed between its
opening and its reading (FaultyCore, for read, load and `pyloader convert`), and rewritten in place over and over
by another thread while it is read. Whatever could crash runs in a subprocess, so a SIGBUS fails the test."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyloader
import pyloader._core as native
from pyloader.bulk import TMP_PREFIX
from pyloader.darknet import weights as darknet_weights
from pyloader.darknet.synthetic import write_weights
from pyloader.torch_reader import checkpoint

HERE = Path(__file__).resolve().parent

# Five convolutions, 3.9 MB of weights: a read takes long enough for a writer thread to meet it.
CFG = "[net]\nwidth=64\nheight=64\nchannels=3\n" + "".join(
    f"\n[convolutional]\nbatch_normalize=1\nfilters={n}\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
    for n in (32, 64, 128, 256, 256)) + "\n[convolutional]\nfilters=18\nsize=1\nstride=1\npad=1\nactivation=linear\n"


class FaultyCore:
    """pyloader's native core, except that the file is changed after pyloader opened it and took its size and
    times, just before the core reads it: `truncate` halves it, `rewrite` changes bytes in its middle in place
    (same size; the modification time is set apart explicitly, so that a coarse clock cannot hide the write)."""

    def __init__(self, how: str):
        self.how = how

    def __getattr__(self, name):
        return getattr(native, name)

    def change(self, path) -> None:
        path = os.fsdecode(path)
        st = os.stat(path)
        if self.how == "truncate":
            os.truncate(path, st.st_size // 2)
            return
        with open(path, "r+b") as f:
            f.seek(st.st_size // 2)
            block = f.read(4096)
            f.seek(st.st_size // 2)
            f.write(bytes(b ^ 0x5A for b in block))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))

    def read_darknet(self, fd, size, path, *args):
        self.change(path)
        return native.read_darknet(fd, size, path, *args)

    def read_file(self, fd, size, path, *args):
        self.change(path)
        return native.read_file(fd, size, path, *args)

    def read_into_image(self, fd, size, path, *args):  # a zip .pt's storages: its last read, after the pickle
        self.change(path)
        return native.read_into_image(fd, size, path, *args)


def inject(how: str) -> None:
    """Put FaultyCore(how) in place of the native core for the Darknet and the .pt readers (a subprocess's)."""
    darknet_weights._core = checkpoint._core = FaultyCore(how)


def run_python(code: str, *args, timeout=300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
               TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def darknet(tmp_path_factory):
    d = tmp_path_factory.mktemp("darknet")
    (d / "net.cfg").write_text(CFG)
    tensors = write_weights(d / "net.weights", d / "net.cfg", seed=1)
    return d / "net.weights", d / "net.cfg", tensors


@pytest.fixture(scope="module")
def pt(tmp_path_factory):
    """A YOLOv8n checkpoint as Ultralytics saves one ({'model': DetectionModel, ...}), built by the ultralytics
    package with pyloader_bench.synthetic_pt's random weights, in float32: the unfolded arrays read from it are
    then views of the file's bytes (float16 ones would be converted copies)."""
    if os.environ.get("CI") != "true":
        pytest.importorskip("torch")
        pytest.importorskip("ultralytics")
    import torch
    from pyloader_bench.synthetic_pt import randomize_ultralytics
    from ultralytics.nn.tasks import DetectionModel

    model = randomize_ultralytics(DetectionModel("yolov8n.yaml", verbose=False), seed=2).eval()
    model.names = {k: f"class_{k}" for k in range(model.yaml["nc"])}
    path = tmp_path_factory.mktemp("pt") / "best.pt"
    torch.save({"epoch": -1, "model": model, "ema": None, "optimizer": None}, path)
    return path


SURVIVE = """
import os, shutil, sys
import numpy as np
import pyloader

src, cfg = sys.argv[1], (sys.argv[2] or None)
for fold_bn in (True, False):
    for fault in ("truncate", "delete"):
        stem, ext = os.path.splitext(src)
        path = stem + "-copy" + ext
        shutil.copy(src, path)
        arrays = pyloader.read(path, cfg, fold_bn=fold_bn)
        before = {k: v.copy() for k, v in arrays.items()}
        if fault == "truncate":
            os.truncate(path, 0)
        else:
            os.unlink(path)
        total = sum(float(np.asarray(v, np.float64).sum()) for v in arrays.values())  # SIGBUS here on a map
        assert all(np.array_equal(arrays[k], before[k]) for k in before), (fold_bn, fault)
        assert total == sum(float(np.asarray(v, np.float64).sum()) for v in before.values())
        np.save(f"{src}.{int(fold_bn)}.npy", {k: v.copy() for k, v in arrays.items()}, allow_pickle=True)
        os.path.exists(path) and os.unlink(path)
print("ok")
"""


def test_darknet_arrays_survive_truncate_and_delete(darknet):
    weights, cfg, tensors = darknet
    r = run_python(SURVIVE, weights, cfg)
    assert r.returncode == 0 and r.stdout.strip() == "ok", f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    # and the values are the file's (the writer's tensors, not pyloader's own earlier read)
    unfolded = np.load(f"{weights}.0.npy", allow_pickle=True).item()
    for index, t in tensors.items():
        np.testing.assert_array_equal(unfolded[f"conv_{index}/kernel"], t["weights"].transpose(2, 3, 1, 0))
        if "scales" in t:
            for role, key in (("gamma", "scales"), ("beta", "biases"), ("moving_mean", "mean"),
                              ("moving_variance", "variance")):
                np.testing.assert_array_equal(unfolded[f"bn_{index}/{role}"], t[key])
        else:
            np.testing.assert_array_equal(unfolded[f"conv_{index}/bias"], t["biases"])


def test_pt_arrays_survive_truncate_and_delete(pt):
    r = run_python(SURVIVE, pt, "")
    assert r.returncode == 0 and r.stdout.strip() == "ok", f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    # the unfolded arrays include views of the file's bytes (the case a memory map made fatal)
    arrays = pyloader.read(pt, fold_bn=False)
    assert any(not a.flags.writeable and not a.flags.owndata for a in arrays.values())
    import torch

    sd = torch.load(pt, weights_only=False)["model"].state_dict()
    kept = np.load(f"{pt}.0.npy", allow_pickle=True).item()
    conv = next(k for k in kept if k.endswith("/kernel"))
    assert any(np.array_equal(kept[conv], v.numpy().transpose(2, 3, 1, 0)) for v in sd.values() if v.ndim == 4)


@pytest.mark.parametrize("how", ["truncate", "rewrite"])
def test_darknet_changed_while_reading(darknet, tmp_path, monkeypatch, how):
    weights, cfg, _ = darknet
    path = tmp_path / "changing.weights"
    path.write_bytes(weights.read_bytes())
    monkeypatch.setattr(darknet_weights, "_core", FaultyCore(how))
    with pytest.raises(pyloader.FormatError, match=rf"changing\.weights: changed while reading \("):
        pyloader.read(path, cfg)


@pytest.mark.parametrize("how", ["truncate", "rewrite"])
def test_pt_changed_while_reading(pt, tmp_path, monkeypatch, how):
    path = tmp_path / "changing.pt"
    path.write_bytes(pt.read_bytes())
    monkeypatch.setattr(checkpoint, "_core", FaultyCore(how))
    with pytest.raises(pyloader.FormatError, match=rf"changing\.pt: changed while reading \("):
        pyloader.read(path)


def test_load_of_a_file_that_changes(darknet, tmp_path, monkeypatch):
    weights, cfg, _ = darknet
    path = tmp_path / "changing.weights"
    path.write_bytes(weights.read_bytes())
    monkeypatch.setattr(darknet_weights, "_core", FaultyCore("rewrite"))
    with pytest.raises(pyloader.FormatError, match=r"changing\.weights: changed while reading"):
        pyloader.load(path, cfg)


CONVERT = """
import runpy, sys
from test_file_changes import inject
inject(sys.argv[1])
sys.argv = ["pyloader", "convert", *sys.argv[2:]]
runpy.run_module("pyloader.cli", run_name="__main__")
"""


def test_convert_of_files_that_change(darknet, pt, tmp_path):
    """`pyloader convert` (the CLI, run as a command with FaultyCore injected): each source changed while it is read
    is reported failed with the reason, the exit status is 1, and nothing is left in the output folder."""
    weights, cfg, _ = darknet
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "net.weights").write_bytes(weights.read_bytes())
    (src / "net.cfg").write_text(cfg.read_text())
    (src / "best.pt").write_bytes(pt.read_bytes())
    r = run_python(CONVERT, "truncate", src / "net.weights", src / "best.pt", "-o", out)
    text = r.stdout + r.stderr
    assert r.returncode == 1, text[-3000:]
    assert "net.weights: changed while reading" in text and "best.pt: changed while reading" in text, text[-3000:]
    assert sorted(os.listdir(out)) == [], os.listdir(out)


RACE = """
import sys, threading, time
import numpy as np
import pyloader

path, cfg, a, b = sys.argv[1:5]
versions = [open(a, "rb").read(), open(b, "rb").read()]
want = [pyloader.read(a, cfg), pyloader.read(b, cfg)]
stop = time.monotonic() + float(sys.argv[5])

def writer():  # rewrites the file in place, as torch.save or a trainer rewriting last.pt does
    k = 0
    while time.monotonic() < stop:
        k ^= 1
        with open(path, "wb") as f:
            f.write(versions[k])
        time.sleep(0.02)

t = threading.Thread(target=writer)
t.start()
seen = {"first": 0, "second": 0, "changed": 0, "incomplete": 0}
while time.monotonic() < stop:
    try:
        got = pyloader.read(path, cfg)
    except pyloader.FormatError as e:
        msg = str(e)
        assert msg.startswith(path + ": "), msg
        if "changed while reading" in msg:
            seen["changed"] += 1
        else:  # opened between the truncation and the end of the write: refused by its size, as any short file
            assert "bytes but the cfg" in msg or "too short for a darknet header" in msg, msg
            seen["incomplete"] += 1
        continue
    same = [all(np.array_equal(got[k], w[k]) for k in w) for w in want]
    assert any(same), "a mixture of two versions"
    seen["first" if same[0] else "second"] += 1
t.join()
print(seen)
"""


def test_darknet_rewritten_while_read_by_another_thread(darknet, tmp_path):
    weights, cfg, _ = darknet
    a, b = tmp_path / "a.weights", tmp_path / "b.weights"
    a.write_bytes(weights.read_bytes())
    write_weights(b, cfg, seed=7)
    path = tmp_path / "changing.weights"
    path.write_bytes(a.read_bytes())
    r = run_python(RACE, path, cfg, a, b, 1.5)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    seen = ast.literal_eval(r.stdout.strip().splitlines()[-1])
    assert sum(seen.values()) > 0, seen
