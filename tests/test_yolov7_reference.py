"""pyloader's YOLOv7 Keras models against WongKinYiu's YOLOv7 PyTorch models (PyPI `yolov7detect`, the reference).

Each architecture (tests/yolov7_archs.py: the official yamls' rows written as Python data) is built by
yolov7detect's own `Model`, given random well-scaled weights (conv kernels ~ N(0, 1/fan_in), batch-norm
statistics, ImplicitA/M around their means) and saved as YOLOv7's train.py saves (fp16 `model` and `ema`,
optimizer state, ...), pickled under YOLOv7's own module names (models.yolo.Model, models.common.Conv ...).
The reference is the checkpoint's `ema` after `.float()`, in eval mode: `(decoded, raw heads)`.

Tolerance: max |keras - torch| <= 1e-4 * max |torch| (see tests/test_yolov5_reference.py for why).
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pyloader
from pyloader.errors import FormatError

try:
    import torch
    import yolov7  # noqa: F401
    import yolov7.models.common as Y7C
    import yolov7.models.experimental as Y7E
    import yolov7.models.yolo as Y7Y
except ImportError as e:  # pragma: no cover - depends on the install
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(f"CI needs torch and yolov7detect for the YOLOv7 reference tests: {e}") from e
    pytest.skip(f"torch/yolov7detect not installed: {e}", allow_module_level=True)

sys.path.insert(0, os.path.dirname(__file__))
import yolov7_archs as ARCH  # noqa: E402
from module_aliases import pickled_as  # noqa: E402
from pyloader_bench.synthetic_pt import randomize_yolov5  # noqa: E402

FULL = os.environ.get("PYLOADER_FULL") == "1"
RTOL = 1e-4
P5_SIZE = (96, 128)
P6_SIZE = (128, 192)


def _implicit(m, g):
    if isinstance(m, Y7C.ImplicitA):
        m.implicit.copy_(torch.randn(m.implicit.shape, generator=g) * 0.3)
    elif isinstance(m, Y7C.ImplicitM):
        m.implicit.copy_(1 + torch.randn(m.implicit.shape, generator=g) * 0.3)


def randomize(model, seed: int):
    """The benchmark's well-scaled random weights, and YOLOv7's implicit layers drawn in module order."""
    return randomize_yolov5(model, seed, other=_implicit)


def official_module_names():
    """Pickle yolov7detect's classes under YOLOv7's own module names (models.yolo, models.common, ...)."""
    import yolov7.models as pkg

    return pickled_as(pkg, ((Y7Y, "models.yolo"), (Y7C, "models.common"), (Y7E, "models.experimental")))


def build_torch_model(cfg: dict, seed: int):
    model = Y7Y.Model(copy.deepcopy(cfg))
    randomize(model, seed)
    model.names = [f"class_{k}" for k in range(cfg["nc"])]
    return model.eval()


def save_checkpoint(model, path, how="train"):
    """As YOLOv7's train.py: fp16 deep copies of the model and its EMA, and training metadata.
    how='deploy': the model after YOLOv7's own fuse() (RepConv reparameterised, batch norm and ImplicitA/M
    folded), saved as strip_optimizer leaves it (`ema` None)."""
    model = copy.deepcopy(model)
    opt = torch.optim.SGD([p for p in model.parameters()], lr=0.01, momentum=0.9)
    ckpt = {"epoch": 3, "best_fitness": np.array([0.25]), "training_results": "results\n",
            "model": copy.deepcopy(model).half(), "ema": copy.deepcopy(model).half(), "updates": 42,
            "optimizer": opt.state_dict(), "wandb_id": None}
    if how == "deploy":
        with contextlib.redirect_stdout(None), torch.no_grad():
            fused = copy.deepcopy(model).fuse().eval()
        ckpt.update(model=fused.half(), ema=None, optimizer=None, epoch=-1)
    with official_module_names():
        torch.save(ckpt, path)
    return ckpt["ema"] if ckpt["ema"] is not None else ckpt["model"]


class _Checkpoints:
    def __init__(self, tmpdir):
        self.tmpdir = tmpdir
        self.cache = {}

    def get(self, key, arch, how="train"):
        if key not in self.cache:
            model = build_torch_model(arch(), seed=len(self.cache) + 1)
            path = str(self.tmpdir / f"{key}.pt")
            saved = save_checkpoint(model, path, how)
            ref = copy.deepcopy(saved).float().eval()
            self.cache[key] = (path, ref)
        return self.cache[key]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    return _Checkpoints(tmp_path_factory.mktemp("yolov7_ckpt"))


def torch_outputs(ref, x_nhwc):
    with torch.no_grad():
        decoded, raw = ref(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))))
    return decoded.numpy(), [r.numpy() for r in raw]


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def compare(path, ref, size, cfg=None, folds=(True, False)):
    x = np.random.default_rng(42).random((2, *size, 3), dtype=np.float32)
    want_decoded, want_raw = torch_outputs(ref, x)
    # After YOLOv7's fuse(), IAuxDetect's eval output also passes the auxiliary inputs through, unprocessed.
    want_raw = want_raw[: ref.model[-1].nl]
    na = want_raw[0].shape[1]
    report = []
    for fold in folds:
        got = pyloader.load(path, cfg, fold_bn=fold, input_size=size)(x)
        got = [np.asarray(g) for g in (got if isinstance(got, (list, tuple)) else [got])]
        assert len(got) == len(want_raw)
        for level, (g, w) in enumerate(zip(got, want_raw)):
            b, h, wd, c = g.shape
            g = g.reshape(b, h, wd, na, -1).transpose(0, 3, 1, 2, 4)  # NHWC -> YOLOv7's (B, na, H, W, 5+nc)
            assert g.shape == w.shape
            err = rel(g, w)
            report.append(f"raw[{level}] fold={fold}: {err:.1e}")
            assert err <= RTOL, report
        dec = np.asarray(pyloader.load(path, cfg, fold_bn=fold, decode=True, input_size=size)(x))
        assert dec.shape == want_decoded.shape
        err = rel(dec, want_decoded)
        report.append(f"decoded fold={fold}: {err:.1e}")
        assert err <= RTOL, report
    return report


CASES = [
    pytest.param("tiny", ARCH.yolov7_tiny, P5_SIZE, "train", id="yolov7-tiny"),
    pytest.param("v7", ARCH.yolov7, P5_SIZE, "train", id="yolov7-RepConv-training-form"),
    pytest.param("v7-deploy", ARCH.yolov7, P5_SIZE, "deploy", id="yolov7-fused-deploy-form", marks=pytest.mark.full),
    pytest.param("mini-p6", ARCH.mini_p6, P6_SIZE, "train", id="p6-ReOrg-DownC-Shortcut-IAuxDetect"),
    pytest.param("mini-p6-deploy", ARCH.mini_p6, P6_SIZE, "deploy", id="p6-fused"),
    pytest.param("x", ARCH.yolov7x, P5_SIZE, "train", id="yolov7x", marks=pytest.mark.full),
    pytest.param("w6", ARCH.yolov7_w6, P6_SIZE, "train", id="yolov7-w6", marks=pytest.mark.full),
]
_FULL_MARKED = {"x", "w6", "v7-deploy"}


@pytest.mark.parametrize("key, arch, size, how", CASES)
def test_matches_pytorch(checkpoints, key, arch, size, how):
    if key in _FULL_MARKED and not FULL:
        pytest.skip("big model: set PYLOADER_FULL=1")
    path, ref = checkpoints.get(key, arch, how)
    report = compare(path, ref, size, folds=(True,) if how == "deploy" else (True, False))
    assert pyloader.load(path, input_size=size).class_names == list(ref.names)
    print(f"{key}: " + "; ".join(report))


def _tampered(tmp_path, name, edit):
    """The yolov7-tiny checkpoint with its pickled yaml edited (the tensors stay as they are)."""
    model = build_torch_model(ARCH.yolov7_tiny(), seed=11)
    edit(model.yaml)
    path = str(tmp_path / name)
    save_checkpoint(model, path)
    return path


@pytest.mark.parametrize("edit, match", [
    (lambda y: y["backbone"][2][3].__setitem__(0, 48),
     r"module 'model\.2': convolution weight \(32, 64, 1, 1\).*the yaml row gives weight \(48, 64, 1, 1\)"),
    (lambda y: y["backbone"][1][3].__setitem__(2, 1),
     r"module 'model\.1': .*stride \(2, 2\).*stride \(1, 1\)"),
    (lambda y: y["backbone"][4][3].__setitem__(4, 2),
     r"module 'model\.4': convolution weight \(32, 32, 3, 3\), stride \(1, 1\), groups 1; .*groups 2"),
    (lambda y: y["head"][8].__setitem__(2, "SP"),
     r"module 'model\.37': expected a SP module, found <models\.common\.Conv record>"),
    (lambda y: y.__setitem__("nc", 3),
     r"module 'model\.77': IDetect has nl=3 na=3 nc=80; the yaml gives nl=3 na=3 nc=3"),
], ids=["channels", "stride", "groups", "module", "nc"])
def test_tensors_checked_against_yaml(tmp_path, edit, match):
    path = _tampered(tmp_path, "bad.pt", edit)
    with pytest.raises(FormatError, match=match) as e:
        pyloader.read(path)
    assert "bad.pt" in str(e.value)


def test_load_imports_neither_torch_nor_yolov7(checkpoints):
    """A user's process: loading and running a YOLOv7 checkpoint imports no torch and no yolov7 code."""
    path, _ = checkpoints.get("tiny", ARCH.yolov7_tiny)
    code = textwrap.dedent(f"""
        import sys, numpy as np, pyloader
        m = pyloader.load({path!r}, decode=True, input_size=(96, 128))
        y = np.asarray(m(np.zeros((1, 96, 128, 3), np.float32)))
        assert y.shape == (1, 756, 85), y.shape
        bad = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'yolov7', 'models', 'utils'))
        print('IMPORTED', bad)
        sys.exit(1 if bad else 0)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


def test_cli_convert_and_inspect(checkpoints, tmp_path):
    """`pyloader convert` and `pyloader inspect` on a YOLOv7 checkpoint, run as commands; the .keras file
    reloads in a fresh process and matches the reference."""
    path, ref = checkpoints.get("tiny", ARCH.yolov7_tiny)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "pyloader", "convert", path, "-o", str(out), "--decode",
                        "--input-size", "96x128"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-m", "pyloader", "inspect", path], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "YOLOv7 PyTorch checkpoint" in r.stdout and "IDetect" in r.stdout and "model_77_m_2" in r.stdout
    x = np.random.default_rng(5).random((1, *P5_SIZE, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(f"""
        import numpy as np, keras
        import pyloader  # what a user imports: registers pyloader's Keras classes for load_model
        m = keras.saving.load_model({str(out / 'tiny.keras')!r})
        np.save({str(tmp_path / 'y.npy')!r}, keras.ops.convert_to_numpy(m(np.load({str(tmp_path / 'x.npy')!r}))))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    want, _ = torch_outputs(ref, x)
    assert rel(np.load(tmp_path / "y.npy"), want) <= RTOL
