"""pyloader's YOLOv5 Keras models against the PyPI `yolov5` package's PyTorch models (the reference).

Each yaml is built by yolov5 itself, given random but well-scaled weights and batch-norm statistics, and saved
the way YOLOv5's train.py saves (a dict with fp16 `model` and `ema`, epoch, best_fitness, ...). The reference
output is the PyTorch model of the checkpoint's `ema` after `.float()`, in eval mode, so both sides compute
with the same fp16-rounded weights in fp32.

Tolerance: max |keras - torch| <= 1e-4 * max |torch| (raw heads and decoded boxes, fold_bn on and off). Both
sides compute in fp32 but in different orders (im2col/GEMM vs. direct convolution, folded vs. separate batch
norm, exp/sigmoid implementations): relative errors per op are ~1e-7, and through ~100 layers of a random
network they grow to ~1e-6 of the output's scale (measured: 4e-7 .. 3e-6). 1e-4 leaves margin for the
deeper x/x6 models and other BLAS builds, while a single wrong weight, padding, activation or anchor order
gives errors of order 1e-1 or more.

The small sizes keep CI fast (the models are fully convolutional): 96x128 for P5 models, 128x192 for P6
(multiples of their max stride, both non-square). The big models (l, x, l6, x6) run with PYLOADER_FULL=1.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import os
import subprocess
import shutil
import sys
import textwrap

import numpy as np
import pytest

import pyloader
from pyloader.errors import FormatError

# (triton is hidden in conftest.py: importing it after TensorFlow crashes the process.)

try:
    import torch
    import torch.nn as nn
    import yolov5  # noqa: F401
    import yolov5.models.common as Y5C
    import yolov5.models.yolo as Y5Y
except ImportError as e:  # pragma: no cover - depends on the install
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(f"CI needs torch and yolov5 for the YOLOv5 reference tests: {e}") from e
    pytest.skip(f"torch/yolov5 not installed: {e}", allow_module_level=True)

FULL = os.environ.get("PYLOADER_FULL") == "1"
RTOL = 1e-4
P5_SIZE = (96, 128)
P6_SIZE = (128, 192)
Y5_DIR = os.path.join(os.path.dirname(Y5Y.__file__))

# An older-style (YOLOv5 v1-v3) model from yolov5's own modules: Focus, SPP and BottleneckCSP, Hardswish in
# the Convs (as v3.x) and LeakyReLU(0.1) in BottleneckCSP's own activation (set after building, as v3 had).
OLD_STYLE_YAML = {
    "nc": 7,
    "depth_multiple": 0.33,
    "width_multiple": 0.25,
    "activation": "nn.Hardswish()",
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]],
    "backbone": [
        [-1, 1, "Focus", [64, 3]],
        [-1, 1, "Conv", [128, 3, 2]],
        [-1, 3, "BottleneckCSP", [128]],
        [-1, 1, "Conv", [256, 3, 2]],
        [-1, 9, "BottleneckCSP", [256]],
        [-1, 1, "Conv", [512, 3, 2]],
        [-1, 9, "BottleneckCSP", [512]],
        [-1, 1, "Conv", [1024, 3, 2]],
        [-1, 1, "SPP", [1024, [5, 9, 13]]],
        [-1, 3, "BottleneckCSP", [1024, False]],
    ],
    "head": [
        [-1, 1, "Conv", [512, 1, 1]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 6], 1, "Concat", [1]],
        [-1, 3, "BottleneckCSP", [512, False]],
        [-1, 1, "Conv", [256, 1, 1]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 4], 1, "Concat", [1]],
        [-1, 3, "BottleneckCSP", [256, False]],
        [-1, 1, "Conv", [256, 3, 2]],
        [[-1, 14], 1, "Concat", [1]],
        [-1, 3, "BottleneckCSP", [512, False]],
        [-1, 1, "Conv", [512, 3, 2]],
        [[-1, 10], 1, "Concat", [1]],
        [-1, 3, "BottleneckCSP", [1024, False]],
        [[17, 20, 23], 1, "Detect", ["nc", "anchors"]],
    ],
}

def small(hub_yaml: str) -> dict:
    """A hub yaml at a small scale (depth 0.33, width 0.125): the architecture, cheaply."""
    import yaml

    with open(os.path.join(Y5_DIR, hub_yaml), encoding="ascii", errors="ignore") as f:
        cfg = yaml.safe_load(f)
    cfg.update(depth_multiple=0.33, width_multiple=0.125)
    return cfg


# (id, yaml, input size, how it is saved)
CASES = [
    pytest.param("n", "yolov5n.yaml", P5_SIZE, "package", id="yolov5n"),
    pytest.param("s", "yolov5s.yaml", P5_SIZE, "package", id="yolov5s"),
    pytest.param("m", "yolov5m.yaml", P5_SIZE, "package", id="yolov5m"),
    pytest.param("n6", "hub/yolov5n6.yaml", P6_SIZE, "package", id="yolov5n6"),
    pytest.param("s6", "hub/yolov5s6.yaml", P6_SIZE, "package", id="yolov5s6"),
    pytest.param("m6", "hub/yolov5m6.yaml", P6_SIZE, "package", id="yolov5m6", marks=pytest.mark.full),
    pytest.param("l", "yolov5l.yaml", P5_SIZE, "package", id="yolov5l", marks=pytest.mark.full),
    pytest.param("x", "yolov5x.yaml", P5_SIZE, "package", id="yolov5x", marks=pytest.mark.full),
    pytest.param("l6", "hub/yolov5l6.yaml", P6_SIZE, "package", id="yolov5l6", marks=pytest.mark.full),
    pytest.param("x6", "hub/yolov5x6.yaml", P6_SIZE, "package", id="yolov5x6", marks=pytest.mark.full),
    # Saved with the official module names: the pickle says models.yolo.DetectionModel, models.common.C3 ...
    pytest.param("s-official", "yolov5s.yaml", P5_SIZE, "official", id="yolov5s-models.yolo.DetectionModel"),
    # A v6.x-style checkpoint: models.yolo.Model.
    pytest.param("n-v6", "yolov5n.yaml", P5_SIZE, "v6", id="yolov5n-models.yolo.Model"),
    # The hub LeakyReLU variant (yaml 'activation: nn.LeakyReLU(0.1)').
    pytest.param("s-leaky", "hub/yolov5s-LeakyReLU.yaml", P5_SIZE, "package", id="yolov5s-LeakyReLU"),
    # Focus + SPP + BottleneckCSP, Hardswish and LeakyReLU, older style; saved with official names.
    pytest.param("old", OLD_STYLE_YAML, P5_SIZE, "official", id="old-style-Focus-SPP-BottleneckCSP-Hardswish"),
    # Saved after fuse() (batch norm already folded, `ema` None): plain convs with bias.
    pytest.param("n-fused", "yolov5n.yaml", P5_SIZE, "fused", id="yolov5n-fused-ema-None"),
    # Hub architectures at a small scale: 4 levels from stride 4 (P2), 5 levels to stride 128 (P7), PANet and
    # BiFPN heads with BottleneckCSP / 3-way Concat, YOLOv3-SPP (repeated Bottleneck rows: a Sequential; SPP),
    # YOLOv3-tiny (nn.ZeroPad2d, nn.MaxPool2d rows, 2 levels).
    pytest.param("p2", small("hub/yolov5-p2.yaml"), P5_SIZE, "package", id="hub-yolov5-p2"),
    pytest.param("p7", small("hub/yolov5-p7.yaml"), (128, 256), "package", id="hub-yolov5-p7"),
    pytest.param("panet", small("hub/yolov5-panet.yaml"), P5_SIZE, "package", id="hub-yolov5-panet"),
    pytest.param("bifpn", small("hub/yolov5-bifpn.yaml"), P5_SIZE, "package", id="hub-yolov5-bifpn"),
    pytest.param("v3spp", small("hub/yolov3-spp.yaml"), P5_SIZE, "package", id="hub-yolov3-spp"),
    pytest.param("v3tiny", small("hub/yolov3-tiny.yaml"), P5_SIZE, "package", id="hub-yolov3-tiny"),
    # The legacy (pre-1.6, non-zip) torch format.
    pytest.param("n-legacy", "yolov5n.yaml", P5_SIZE, "legacy", id="yolov5n-legacy-format"),
]

_FULL_MARKED = {"m6", "l", "x", "l6", "x6"}


def randomize(model, seed: int):
    """Random weights that keep activations at a sane scale through ~100 layers (the benchmark's generator)."""
    from pyloader_bench.synthetic_pt import randomize_yolov5

    return randomize_yolov5(model, seed)


@contextlib.contextmanager
def official_module_names(v6_model_class: bool):
    """Pickle yolov5's classes under YOLOv5's own module names (models.yolo, models.common)."""
    import yolov5.models as pkg

    aliases = {"models": pkg, "models.yolo": Y5Y, "models.common": Y5C}
    saved_modules = {k: sys.modules.get(k) for k in aliases}
    # Deduplicated: yolo.py binds DetectionModel twice (Model = DetectionModel).
    classes = {id(c): (c, short) for mod, short in ((Y5Y, "models.yolo"), (Y5C, "models.common"))
               for c in vars(mod).values() if isinstance(c, type) and c.__module__ == mod.__name__}
    saved = [(c, c.__module__, c.__name__, c.__qualname__) for c, _ in classes.values()]
    try:
        sys.modules.update(aliases)
        for c, short in classes.values():
            c.__module__ = short
        if v6_model_class:  # models.yolo.Model is yolov5's alias of DetectionModel
            Y5Y.DetectionModel.__name__ = Y5Y.DetectionModel.__qualname__ = "Model"
        yield
    finally:
        for c, mod, name, qual in saved:
            c.__module__, c.__name__, c.__qualname__ = mod, name, qual
        for k, v in saved_modules.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def build_torch_model(cfg, seed: int):
    default_act = Y5C.Conv.default_act
    try:
        cfg_in = copy.deepcopy(cfg) if isinstance(cfg, dict) else os.path.join(Y5_DIR, cfg)
        model = Y5Y.DetectionModel(cfg_in)
    finally:
        Y5C.Conv.default_act = default_act  # parse_model sets it from the yaml's 'activation'
    if cfg is OLD_STYLE_YAML:  # older style: BottleneckCSP's own activation was LeakyReLU(0.1)
        for m in model.modules():
            if isinstance(m, Y5C.BottleneckCSP):
                m.act = nn.LeakyReLU(0.1)
    randomize(model, seed)
    nc = model.yaml["nc"]
    model.names = {k: f"class_{k}" for k in range(nc)} if seed % 2 else [f"class_{k}" for k in range(nc)]
    return model.eval()


def save_checkpoint(model, path, how: str):
    """As YOLOv5's train.py: fp16 deep copies of the model and its EMA, and training metadata."""
    ckpt = {
        "epoch": 7,
        "best_fitness": np.array([0.4321]),
        "model": copy.deepcopy(model).half(),
        "ema": copy.deepcopy(model).half(),
        "updates": 1234,
        "optimizer": None,
        "opt": {"imgsz": 640, "hyp": {"lr0": 0.01}},
        "git": {"remote": "https://github.com/ultralytics/yolov5", "branch": "master", "commit": "abc"},
        "date": datetime.datetime(2024, 1, 2, 3, 4, 5).isoformat(),
    }
    if how == "fused":  # a model saved after YOLOv5's fuse(): Conv modules without bn, conv with bias
        fused = copy.deepcopy(model).fuse().half()
        ckpt["model"], ckpt["ema"] = fused, None
    if how in ("official", "v6"):
        with official_module_names(v6_model_class=how == "v6"):
            torch.save(ckpt, path)
    elif how == "legacy":
        torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(ckpt, path)
    return ckpt["ema"] if ckpt["ema"] is not None else ckpt["model"]


class _Checkpoints:
    def __init__(self, tmpdir):
        self.tmpdir = tmpdir
        self.cache = {}

    def get(self, key, cfg, how):
        if key not in self.cache:
            model = build_torch_model(cfg, seed=len(self.cache) + 1)
            path = str(self.tmpdir / f"{key}.pt")
            saved = save_checkpoint(model, path, how)
            # The reference: the checkpoint's model (ema), back to fp32 (fp16-rounded weights), eval mode.
            ref = copy.deepcopy(saved).float().eval()
            self.cache[key] = (path, ref)
        return self.cache[key]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("yolov5_ckpt")
    yield _Checkpoints(d)
    shutil.rmtree(d, ignore_errors=True)  # checkpoints of every size: gone even when a test fails


def _torch_outputs(ref, x_nhwc):
    with torch.no_grad():
        decoded, raw = ref(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))))
    return decoded.numpy(), [r.numpy() for r in raw]


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("key, cfg, size, how", CASES)
def test_matches_pytorch(checkpoints, key, cfg, size, how):
    if key in _FULL_MARKED and not FULL:
        pytest.skip("big model: set PYLOADER_FULL=1")
    path, ref = checkpoints.get(key, cfg, how)
    x = np.random.default_rng(42).random((2, *size, 3), dtype=np.float32)
    want_decoded, want_raw = _torch_outputs(ref, x)
    na = want_raw[0].shape[1]
    report = []
    for fold in (True, False):
        raw_model = pyloader.load(path, fold_bn=fold, input_size=size)
        got = raw_model(x)
        got = [np.asarray(g) for g in (got if isinstance(got, (list, tuple)) else [got])]
        assert len(got) == len(want_raw)
        for level, (g, w) in enumerate(zip(got, want_raw)):
            b, h, wd, c = g.shape
            assert c == na * w.shape[-1], (g.shape, w.shape)
            # NHWC channels a*(5+nc)+k  ->  YOLOv5's (B, na, H, W, 5+nc)
            g = g.reshape(b, h, wd, na, -1).transpose(0, 3, 1, 2, 4)
            assert g.shape == w.shape
            err = _rel(g, w)
            report.append(f"raw[{level}] fold={fold}: {err:.2e}")
            assert err <= RTOL, report
        dec = np.asarray(pyloader.load(path, fold_bn=fold, decode=True, input_size=size)(x))
        assert dec.shape == want_decoded.shape
        err = _rel(dec, want_decoded)
        report.append(f"decoded fold={fold}: {err:.2e}")
        assert err <= RTOL, report
    assert raw_model.class_names == [f"class_{k}" for k in range(want_decoded.shape[-1] - 5)]
    print(f"{key}: " + "; ".join(report))


def test_read_layout_and_fold(checkpoints):
    """`read` gives Keras-layout float32 arrays; folding is (gamma/sqrt(var+eps)) * kernel in HWIO."""
    path, ref = checkpoints.get("n", "yolov5n.yaml", "package")
    folded = pyloader.read(path)
    plain = pyloader.read(path, fold_bn=False)
    conv = ref.model[0].conv
    bn = ref.model[0].bn
    w = conv.weight.detach().numpy()
    np.testing.assert_array_equal(plain["model_0_conv/kernel"], w.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(plain["model_0_bn/moving_variance"], bn.running_var.numpy())
    assert "model_0_conv/bias" not in plain
    scale = bn.weight.detach().numpy().astype(np.float64) / np.sqrt(bn.running_var.numpy().astype(np.float64) + bn.eps)
    np.testing.assert_allclose(folded["model_0_conv/kernel"], (w * scale[:, None, None, None]).transpose(2, 3, 1, 0),
                               rtol=1e-6, atol=1e-7)
    bias = bn.bias.detach().numpy() - bn.running_mean.numpy() * scale
    np.testing.assert_allclose(folded["model_0_conv/bias"], bias, rtol=1e-5, atol=1e-6)
    det = ref.model[-1].m[2]
    np.testing.assert_array_equal(folded["model_24_m_2/bias"], det.bias.detach().numpy())
    assert all(a.dtype == np.float32 for a in folded.values())
    n_params = sum(p.numel() for p in ref.parameters())
    n_bn = sum(m.num_features for m in ref.modules() if isinstance(m, nn.BatchNorm2d))
    assert sum(a.size for a in plain.values()) == n_params + 2 * n_bn  # + running mean and var


def test_epsilon_from_checkpoint(checkpoints, tmp_path):
    """The BatchNorm epsilon comes from the checkpoint's modules, not from Keras' or YOLOv5's default."""
    model = build_torch_model("yolov5n.yaml", seed=99)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.25
    path = str(tmp_path / "eps.pt")
    save_checkpoint(model, path, "package")
    km = pyloader.load(path, fold_bn=False, input_size=P5_SIZE)
    eps = {layer.epsilon for layer in km.layers if layer.__class__.__name__ == "BatchNormalization"}
    assert eps == {0.25}
    x = np.random.default_rng(1).random((1, *P5_SIZE, 3), dtype=np.float32)
    want, _ = _torch_outputs(copy.deepcopy(model).half().float().eval(), x)
    got = np.asarray(pyloader.load(path, fold_bn=True, decode=True, input_size=P5_SIZE)(x))
    assert _rel(got, want) <= RTOL


def test_ema_preferred_over_model(tmp_path):
    """YOLOv5 loads `ema` when present and not None, else `model`."""
    a = build_torch_model("yolov5n.yaml", seed=5)
    b = build_torch_model("yolov5n.yaml", seed=6)

    def kernel(m):
        return m.model[0].conv.weight.detach().half().float().numpy().transpose(2, 3, 1, 0)

    path = str(tmp_path / "ema.pt")
    torch.save({"model": copy.deepcopy(a).half(), "ema": copy.deepcopy(b).half()}, path)
    np.testing.assert_array_equal(pyloader.read(path, fold_bn=False)["model_0_conv/kernel"], kernel(b))
    torch.save({"model": copy.deepcopy(a).half(), "ema": None}, path)
    np.testing.assert_array_equal(pyloader.read(path, fold_bn=False)["model_0_conv/kernel"], kernel(a))


def test_default_input_size_and_bad_size(checkpoints):
    path, _ = checkpoints.get("n", "yolov5n.yaml", "package")
    assert pyloader.load(path).input_shape == (None, 640, 640, 3)
    path6, _ = checkpoints.get("n6", "hub/yolov5n6.yaml", "package")
    assert pyloader.load(path6).input_shape == (None, 1280, 1280, 3)
    with pytest.raises(ValueError, match="multiples of the model's max stride 64"):
        pyloader.load(path6, input_size=P5_SIZE)


def test_load_imports_neither_torch_nor_yolov5(checkpoints):
    """A subprocess loads a checkpoint and runs the model: torch and yolov5 stay out of sys.modules."""
    path, _ = checkpoints.get("s-official", "yolov5s.yaml", "official")
    code = textwrap.dedent(f"""
        import sys, numpy as np, pyloader
        m = pyloader.load({path!r}, decode=True, input_size=(96, 128))
        y = np.asarray(m(np.zeros((1, 96, 128, 3), np.float32)))
        assert y.shape == (1, 756, 85), y.shape
        arrays = pyloader.read({path!r})
        bad = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'yolov5', 'models', 'utils'))
        print('IMPORTED', bad)
        sys.exit(1 if bad else 0)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


def test_read_imports_no_framework(checkpoints):
    """`read` is numpy only: neither TensorFlow/Keras nor torch/yolov5 get imported."""
    path, _ = checkpoints.get("n", "yolov5n.yaml", "package")
    code = textwrap.dedent(f"""
        import sys, pyloader
        arrays = pyloader.read({path!r})
        assert arrays["model_24_m_0/kernel"].shape == (1, 1, 64, 255), arrays["model_24_m_0/kernel"].shape
        bad = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'yolov5', 'tensorflow', 'keras', 'jax'))
        print('IMPORTED', bad)
        sys.exit(1 if bad else 0)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


def test_not_a_yolov5_model(tmp_path):
    """A valid torch file that is not a YOLOv5 checkpoint: a FormatError naming the file."""
    path = str(tmp_path / "plain.pt")
    torch.save({"weights": torch.zeros(3), "epoch": 1}, path)  # (a dict of tensors only is a state_dict)
    with pytest.raises(FormatError, match="plain.pt: checkpoint has no model"):
        pyloader.read(path)


BACKEND_SCRIPT = """
import sys, numpy as np, keras, pyloader
path, image, out = sys.argv[1:4]
x = np.load(image)
res = {}
for fold in (True, False):
    res[f"decoded_{fold}"] = keras.ops.convert_to_numpy(pyloader.load(path, fold_bn=fold, decode=True, input_size=x.shape[1:3])(x))
    raw = pyloader.load(path, fold_bn=fold, input_size=x.shape[1:3])(x)
    for k, r in enumerate(raw):
        res[f"raw{k}_{fold}"] = keras.ops.convert_to_numpy(r)
np.savez(out, **res)
print(keras.backend.backend())
"""


def test_keras_torch_backend(checkpoints, tmp_path):
    """Keras layers and keras.ops only: the same model on Keras' PyTorch backend (a subprocess) matches too.
    The old-style checkpoint covers Focus, SPP (-inf padded max pools), BottleneckCSP, Hardswish, LeakyReLU."""
    path, ref = checkpoints.get("old", OLD_STYLE_YAML, "official")
    x = np.random.default_rng(3).random((1, *P5_SIZE, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    r = subprocess.run([sys.executable, "-c", BACKEND_SCRIPT, path, str(tmp_path / "x.npy"), str(tmp_path / "out.npz")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "torch"
    want_decoded, want_raw = _torch_outputs(ref, x)
    got = np.load(tmp_path / "out.npz")
    for fold in (True, False):
        assert _rel(got[f"decoded_{fold}"], want_decoded) <= RTOL
        for k, w in enumerate(want_raw):
            g = got[f"raw{k}_{fold}"]
            g = g.reshape(*g.shape[:3], w.shape[1], -1).transpose(0, 3, 1, 2, 4)
            assert _rel(g, w) <= RTOL
