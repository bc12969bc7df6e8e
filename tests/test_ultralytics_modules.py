"""The backbone and neck modules of YOLOv3u, the Ghost variants, YOLOv6, YOLO12 and YOLOv9 (Detect heads) against the
PyPI `ultralytics` package's own PyTorch models (issue 20).

Each yaml shipped in the package is built by ultralytics itself (`DetectionModel`), given random well-scaled weights
and saved as its trainer saves (pyloader_bench.synthetic_pt.write_ultralytics_checkpoint: `last.pt`, then
`strip_optimizer`'s `best.pt`). The yamls without scales (YOLOv3u, YOLOv9c / e) are large: CI runs a copy at depth
0.33, width 0.25 (the modules are the same, with fewer channels), every shipped size runs with PYLOADER_FULL=1.
YOLO12's l / x scales add A2C2f's residual gamma: CI runs scale 'l' at width 0.25. Raw heads and decode=True,
fold_bn on and off, each within 1e-4 of the reference's max |value|.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import pyloader
from pyloader.errors import FormatError

try:
    import torch
    import yaml
    from ultralytics.nn.tasks import yaml_model_load
except ImportError as e:  # pragma: no cover - depends on the install
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(f"CI needs torch and ultralytics for the Ultralytics reference tests: {e}") from e
    pytest.skip(f"torch/ultralytics not installed: {e}", allow_module_level=True)

from pyloader_bench.synthetic_pt import write_ultralytics_checkpoint
from test_ultralytics_reference import BACKEND_SCRIPT, _flat, _reference, _rel  # noqa: E402

FULL = os.environ.get("PYLOADER_FULL") == "1"
RTOL = 1e-4
P5, P6 = (96, 128), (128, 192)


def _small(cfg):
    """A yaml without scales at a size CI runs quickly: depth 0.33, width 0.25."""
    cfg.update(depth_multiple=0.33, width_multiple=0.25)


def _small_cb(cfg):
    """_small, and YOLOv9-E's CBLinear groups (which parse_model does not scale) a quarter as wide to match."""
    _small(cfg)
    for row in cfg["backbone"] + cfg["head"]:
        if row[2] == "CBLinear":
            row[3][0] = [c // 4 for c in row[3][0]]


def _yolo12_l_small(cfg):
    """YOLO12 scale 'l' (A2C2f's residual gamma, mlp ratio 1.2, C3k blocks) at depth 0.5, width 0.25."""
    cfg.update(scale="l", scales={"l": [0.5, 0.25, 1024]})


CASES = [
    pytest.param("yolov3-tiny.yaml", None, P5, id="yolov3-tinyu"),  # nn.MaxPool2d, nn.ZeroPad2d
    pytest.param("yolov3-spp.yaml", _small, P5, id="yolov3-sppu-small"),  # Bottleneck rows (repeated), SPP
    pytest.param("yolov8n-ghost.yaml", None, P5, id="yolov8n-ghost"),  # GhostConv, C3Ghost (GhostBottleneck)
    pytest.param("yolov6n.yaml", None, P5, id="yolov6n"),  # nn.ConvTranspose2d, ReLU, repeated Conv rows
    pytest.param("yolo12n.yaml", None, P5, id="yolo12n"),  # A2C2f: area attention (area 4 at P4)
    pytest.param("yolo12.yaml", _yolo12_l_small, P5, id="yolo12l-small"),  # A2C2f's residual gamma
    pytest.param("yolov9t.yaml", None, P5, id="yolov9t"),  # ELAN1, AConv, RepNCSPELAN4 (RepConv), SPPELAN
    pytest.param("yolov9e.yaml", _small_cb, P5, id="yolov9e-small"),  # ADown, nn.Identity, CBLinear, CBFuse
] + [
    pytest.param(name, None, size, id=name[:-5], marks=pytest.mark.full)
    for name, size in [("yolov3.yaml", P5), ("yolov3-spp.yaml", P5), ("yolov9s.yaml", P5), ("yolov9m.yaml", P5),
                       ("yolov9c.yaml", P5), ("yolov9e.yaml", P5)]
    + [(f"yolov8{s}-ghost{p}.yaml", P6 if p == "-p6" else P5) for s in "nsmlx" for p in ("", "-p2", "-p6")
       if (s, p) != ("n", "")]
    + [(f"{f}{s}.yaml", P5) for f in ("yolov6", "yolo12") for s in "smlx"]
]

# Detection yamls of this part of issue 20 (YOLOv3u, Ghost, YOLOv6, YOLO12, YOLOv9) that do not load yet, and why:
# none. test_every_shipped_yaml_is_covered keeps this list and CASES in step with what the package ships.
NOT_YET: dict = {}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ul-modules")
    made = {}

    def get(name, change):
        key = (name, change)
        if key not in made:
            src, stem = name, f"{name[:-5]}-{len(made)}"
            if change:  # the shipped yaml, changed, as a file next to the checkpoints
                cfg = yaml_model_load(name)
                change(cfg)
                src = str(d / f"{stem}.yaml")
                with open(src, "w") as f:
                    yaml.safe_dump(cfg, f)
            last, best = d / f"{stem}-last.pt", d / f"{stem}-best.pt"
            write_ultralytics_checkpoint(last, src, seed=len(made), stripped=best)
            made[key] = (last, best)
        return made[key]

    return get


@pytest.mark.parametrize("name,change,size", CASES)
def test_matches_ultralytics(checkpoints, name, change, size, request):
    if request.node.get_closest_marker("full") and not FULL:
        pytest.skip("every shipped size: set PYLOADER_FULL=1")
    last, best = checkpoints(name, change)
    x = np.random.default_rng(1).random((1, *size, 3), dtype=np.float32)
    want_y, want_raw = _reference(best, x)
    # raw with the norms folded, decoded with them kept, and the trainer's last.pt (fp16 ema) decoded and folded
    errors = {"raw fold=True": _rel(_flat(pyloader.load(best, input_size=size)(x)), want_raw),
              "decoded fold=False": _rel(pyloader.load(best, fold_bn=False, decode=True, input_size=size)(x), want_y),
              "decoded last.pt": _rel(pyloader.load(last, decode=True, input_size=size)(x), _reference(last, x)[0])}
    print(name, {k: f"{v:.1e}" for k, v in errors.items()})
    assert all(v <= RTOL for v in errors.values()), errors


def test_every_shipped_yaml_is_covered():
    """Every detection yaml of these families that the installed package ships is tested here or listed in NOT_YET:
    a yaml added upstream shows up as a failure."""
    import ultralytics

    root = os.path.join(os.path.dirname(ultralytics.__file__), "cfg", "models")
    shipped = {f for d, pattern in (("v3", ""), ("v6", ""), ("v8", "-ghost"), ("12", ""), ("v9", ""))
               for f in os.listdir(os.path.join(root, d))
               if f.endswith(".yaml") and pattern in f and not any(t in f for t in ("-cls", "-seg", "-pose", "-obb"))}
    tested = {p.values[0] for p in CASES} | set(NOT_YET)
    unscaled = {re.sub(r"^(yolov8|yolov6|yolo12)[nsmlx]", r"\1", f) for f in tested}  # yolov8n-ghost -> yolov8-ghost
    assert shipped <= unscaled, sorted(shipped - unscaled)


def test_keras_file_keeps_area_attention(checkpoints, tmp_path):
    """A .keras file of YOLO12 (the area attention's `area`, the channel splits) reloads and matches."""
    import keras

    _, best = checkpoints("yolo12n.yaml", None)
    m = pyloader.load(best, decode=True, input_size=P5)
    m.save(tmp_path / "m.keras")
    x = np.random.default_rng(2).random((1, *P5, 3), dtype=np.float32)
    assert _rel(keras.saving.load_model(tmp_path / "m.keras")(x), np.asarray(m(x))) <= 1e-6


def test_keras_torch_backend(checkpoints, tmp_path):
    """Keras layers and keras.ops only: YOLO12 (area attention, A2C2f) on Keras' PyTorch backend."""
    _, best = checkpoints("yolo12n.yaml", None)
    x = np.random.default_rng(3).random((1, *P5, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run([sys.executable, "-c", BACKEND_SCRIPT, str(best), str(tmp_path / "x.npy"), str(tmp_path / "o.npz")],
                       capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "torch"}, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("torch"), r.stdout[-2000:] + r.stderr[-3000:]
    assert _rel(np.load(tmp_path / "o.npz")["decoded"], _reference(best, x)[0]) <= RTOL


def test_module_disagreeing_with_its_row(checkpoints, tmp_path):
    """A checkpoint whose module disagrees with its yaml row: a FormatError naming the module path, expected vs
    actual."""
    last, _ = checkpoints("yolov3-tiny.yaml", None)
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    ckpt["ema"].yaml["backbone"][1][3] = [3, 2, 0]  # the MaxPool2d row now says kernel 3
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(FormatError, match=r"module 'model\.1': kernel, stride, padding \(the yaml row\): expected "
                                          r"\[\(3, 3\), \(2, 2\), \(0, 0\)\], the checkpoint has \[\(2, 2\)"):
        pyloader.load(tmp_path / "bad.pt", input_size=P5)
