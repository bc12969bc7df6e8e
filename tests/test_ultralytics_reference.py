"""pyloader's Ultralytics Keras models against the PyPI `ultralytics` package's PyTorch models (the reference).

Each yaml (a name shipped inside the package: 'yolov8n.yaml', 'yolo11n.yaml', 'yolov5nu.yaml', 'yolov8n-p6.yaml'
...) is built by ultralytics itself (`DetectionModel`), given random but well-scaled weights and batch-norm
statistics (`pyloader_bench.synthetic_pt.write_ultralytics_checkpoint`) and saved as its trainer saves `last.pt`
(fp16 `ema`, `model` None, AdamW optimizer state, scaler, train_args, the IterableSimpleNamespace args); then
ultralytics' own `strip_optimizer` writes `best.pt` (fp16 `model`, dict args, dates and versions). Nothing is
downloaded. The reference is the checkpoint's model as `attempt_load_one_weight` takes it (`ema` or `model`,
`.float()`), in eval mode: it returns (y, preds) with y = [B, 4 + nc, anchors] (xywh pixels, class sigmoid)
and preds' raw 'boxes' [B, 4 * reg_max, anchors] and 'scores' [B, nc, anchors].

Tolerance: max |keras - torch| <= 1e-4 * max |torch| (see test_yolov5_reference.py for why; measured about
1e-6 raw and 1e-7 decoded). Small non-square sizes keep CI fast: 96x128 for P5 models, 128x192 for P6. Every
scale (s, m, l, x) with PYLOADER_FULL=1.
"""

from __future__ import annotations

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
    import torch.nn as nn
    import ultralytics  # noqa: F401
    from ultralytics.nn.tasks import DetectionModel
except ImportError as e:  # pragma: no cover - depends on the install
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(f"CI needs torch and ultralytics for the Ultralytics reference tests: {e}") from e
    pytest.skip(f"torch/ultralytics not installed: {e}", allow_module_level=True)

from pyloader_bench.synthetic_pt import randomize_ultralytics, write_ultralytics_checkpoint

FULL = os.environ.get("PYLOADER_FULL") == "1"
RTOL = 1e-4
P5_SIZE = (96, 128)
P6_SIZE = (128, 192)

CASES = [
    pytest.param("yolov8n.yaml", P5_SIZE, False, id="yolov8n"),
    pytest.param("yolo11n.yaml", P5_SIZE, False, id="yolo11n"),
    pytest.param("yolov5nu.yaml", P5_SIZE, False, id="yolov5nu"),
    pytest.param("yolov8n-p6.yaml", P6_SIZE, False, id="yolov8n-p6"),
] + [
    pytest.param(f"{fam}{s}{suffix}.yaml", size, True, id=f"{fam}{s}{suffix}", marks=pytest.mark.full)
    for fam, suffix, size in (("yolov8", "", P5_SIZE), ("yolo11", "", P5_SIZE), ("yolov5", "u", P5_SIZE),
                              ("yolov5", "-p6u", P6_SIZE))
    for s in ("s", "m", "l", "x") + (("n",) if suffix == "-p6u" else ())
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(last.pt, best.pt) per yaml, written once per module."""
    d = tmp_path_factory.mktemp("ultralytics")
    made = {}

    def get(yaml_name):
        if yaml_name not in made:
            stem = yaml_name[:-5]
            last, best = str(d / f"{stem}-last.pt"), str(d / f"{stem}-best.pt")
            write_ultralytics_checkpoint(last, yaml_name, seed=len(made), stripped=best)
            made[yaml_name] = (last, best)
        return made[yaml_name]

    yield get
    for last, best in made.values():
        for p in (last, best):
            if os.path.exists(p):
                os.remove(p)


def _reference(path, x):
    """The ultralytics model of the checkpoint (as attempt_load_one_weight takes it), eval, on NHWC x."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = (ckpt.get("ema") or ckpt["model"]).float().eval()
    with torch.no_grad():
        y, preds = model(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
    raw = torch.cat([preds["boxes"], preds["scores"]], 1).permute(0, 2, 1).numpy()  # [B, anchors, 4*16+nc]
    return y.numpy(), raw


def _rel(got, want):
    got = np.asarray(got)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / np.abs(want).max())


def _flat(raw_heads):
    return np.concatenate([np.asarray(t).reshape(t.shape[0], -1, t.shape[-1]) for t in raw_heads], axis=1)


@pytest.mark.parametrize("yaml_name,size,big", CASES)
def test_matches_ultralytics(checkpoints, yaml_name, size, big):
    if big and not FULL:
        pytest.skip("every scale: set PYLOADER_FULL=1")
    last, best = checkpoints(yaml_name)
    x = np.random.default_rng(1).random((1, *size, 3), dtype=np.float32)
    want_y, want_raw = _reference(best, x)
    errors = {}
    for fold in (True, False):
        m = pyloader.load(best, fold_bn=fold, input_size=size)
        errors[f"raw fold={fold}"] = _rel(_flat(m(x)), want_raw)
        m = pyloader.load(best, fold_bn=fold, decode=True, input_size=size)
        errors[f"decoded fold={fold}"] = _rel(m(x), want_y)
    # The trainer's last.pt (ema, optimizer state) holds the same fp16 weights as the stripped best.pt.
    m = pyloader.load(last, decode=True, input_size=size)
    errors["decoded last.pt"] = _rel(m(x), _reference(last, x)[0])
    print(yaml_name, {k: f"{v:.1e}" for k, v in errors.items()})
    assert all(v <= RTOL for v in errors.values()), errors
    assert m.class_names[:2] == ["class_0", "class_1"]


def test_read_layout(checkpoints):
    """`read` keys are the module paths; fold_bn=False keeps each norm; last.pt and best.pt give the same arrays."""
    last, best = checkpoints("yolo11n.yaml")
    folded, plain, from_last = pyloader.read(best), pyloader.read(best, fold_bn=False), pyloader.read(last)
    assert folded.keys() == from_last.keys()
    assert all(np.array_equal(folded[k], from_last[k]) for k in folded)
    assert folded["model_0_conv/kernel"].shape == (3, 3, 3, 16)
    assert "model_0_bn/moving_variance" in plain and "model_0_bn/moving_variance" not in folded
    assert folded["model_10_m_0_attn_pe_conv/kernel"].shape == (3, 3, 1, 128)  # depthwise positional conv
    assert folded["model_23_cv2_0_2/bias"].shape == (64,)  # 4 * reg_max box distribution
    assert folded["model_23_cv3_0_0_0_conv/kernel"].shape == (3, 3, 1, 64)  # YOLO11's DWConv class branch


def test_default_input_size(checkpoints):
    """The default input is the checkpoint's training size (imgsz 640); others must be multiples of the max stride."""
    _, best = checkpoints("yolov8n-p6.yaml")
    assert pyloader.load(best).input_shape == (None, 640, 640, 3)
    with pytest.raises(ValueError, match="multiples of the model's max stride 64"):
        pyloader.load(best, input_size=P5_SIZE)


def test_read_imports_no_framework(checkpoints):
    """`read` of an Ultralytics checkpoint is numpy only: neither torch/ultralytics nor TensorFlow/Keras."""
    _, best = checkpoints("yolov8n.yaml")
    code = textwrap.dedent(f"""
        import sys, pyloader
        arrays = pyloader.read({best!r})
        assert arrays["model_22_cv3_0_2/kernel"].shape == (1, 1, 80, 80), arrays["model_22_cv3_0_2/kernel"].shape
        bad = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'ultralytics', 'tensorflow', 'keras', 'jax'))
        print('IMPORTED', bad)
        sys.exit(1 if bad else 0)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


def test_cli_convert_and_inspect(checkpoints, tmp_path):
    """`pyloader convert` and `inspect` as commands; the .keras file reloads in a fresh process (custom layers
    registered) and matches the reference."""
    last, _ = checkpoints("yolo11n.yaml")
    r = subprocess.run([sys.executable, "-m", "pyloader", "inspect", last], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Ultralytics PyTorch checkpoint" in r.stdout and "C2PSA 1" in r.stdout and "reg_max 16" in r.stdout
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "pyloader", "convert", last, "-o", str(out), "--decode",
                        "--input-size", "96x128"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    keras_file = out / (os.path.basename(last)[:-3] + ".keras")
    x = np.random.default_rng(2).random((1, *P5_SIZE, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(f"""
        import numpy as np, keras
        import pyloader  # registers pyloader's Keras layers (as a user does)
        m = keras.models.load_model({str(keras_file)!r})
        np.save({str(tmp_path / 'y.npy')!r}, keras.ops.convert_to_numpy(m(np.load({str(tmp_path / 'x.npy')!r}))))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _rel(np.load(tmp_path / "y.npy"), _reference(last, x)[0]) <= RTOL


BACKEND_SCRIPT = """
import sys, numpy as np, keras, pyloader
path, image, out = sys.argv[1:4]
x = np.load(image)
res = {"decoded": keras.ops.convert_to_numpy(pyloader.load(path, fold_bn=False, decode=True, input_size=x.shape[1:3])(x))}
np.savez(out, **res)
print(keras.backend.backend())
"""


def test_keras_torch_backend(checkpoints, tmp_path):
    """Keras layers and keras.ops only: YOLO11 (C3k2, C2PSA attention, DWConv head) on Keras' PyTorch backend."""
    _, best = checkpoints("yolo11n.yaml")
    x = np.random.default_rng(3).random((1, *P5_SIZE, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    r = subprocess.run([sys.executable, "-c", BACKEND_SCRIPT, best, str(tmp_path / "x.npy"), str(tmp_path / "o.npz")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "torch"
    assert _rel(np.load(tmp_path / "o.npz")["decoded"], _reference(best, x)[0]) <= RTOL


def _save_model(model, path):
    model.names = {k: f"c{k}" for k in range(model.yaml["nc"])}
    torch.save({"epoch": -1, "model": model.half(), "ema": None, "train_args": {}}, path)


@pytest.mark.parametrize("change,message", [
    ("channels", r"module 'model\.1': output channels: the yaml row gives 32, the checkpoint has 24"),
    ("kernel", r"module 'model\.1': kernel: the yaml row gives \(3, 3\), the checkpoint has \(1, 1\)"),
    ("groups", r"module 'model\.1': groups: the yaml row gives 1, the checkpoint has 2"),
])
def test_tensor_mismatch_names_module(tmp_path, change, message):
    """A module whose tensors disagree with its yaml row is a FormatError naming it, expected vs actual."""
    from ultralytics.nn.modules.conv import Conv

    model = randomize_ultralytics(DetectionModel("yolov8n.yaml", verbose=False))
    c2, k, g = {"channels": (24, 3, 1), "kernel": (32, 1, 1), "groups": (32, 3, 2)}[change]
    model.model[1] = Conv(16, c2, k, 2, g=g)  # yaml row 1 is Conv [128, 3, 2] -> 32 channels at width 0.25
    model.model[1].f, model.model[1].i = -1, 1
    path = str(tmp_path / f"bad-{change}.pt")
    _save_model(model, path)
    with pytest.raises(FormatError, match=message):
        pyloader.read(path)


class _NotAYolo(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)


def test_unknown_model_class_lists_families(tmp_path):
    """A model class no family reads: a FormatError naming the class and listing the supported families."""
    path = str(tmp_path / "other.pt")
    torch.save({"model": _NotAYolo()}, path)
    for fn in (pyloader.read, pyloader.load):
        with pytest.raises(FormatError, match=r"other\.pt: model class '.*_NotAYolo' is not supported; supported "
                                              r"families: ultralytics: .*; yolov5: "):
            fn(path)
