"""Ultralytics classification models (the -cls yamls of YOLOv8, YOLO11, YOLO12, YOLO26, and the ResNet ones:
yolov8-cls-resnet50 / -resnet101's ResNetLayer rows, yolo11-cls-resnet18's TorchVision ResNet) against the PyPI
`ultralytics` package's own PyTorch models: the first task of issue 20, plugged into the family interface.

Each yaml shipped in the package is built by ultralytics itself (`ClassificationModel`), given random well-scaled
weights and saved as its trainer saves `last.pt` (pyloader_bench.synthetic_pt.write_ultralytics_checkpoint), then
`strip_optimizer`'s `best.pt`. The reference in eval mode returns (probabilities, logits); pyloader's raw model
returns `logits`, decode=True returns `probabilities`, `logits`. Tolerance as the detection tests: max |keras -
torch| <= 1e-4 * max |torch|. yolo11-cls-resnet18 is built with `weights: null` (its yaml's DEFAULT makes
torchvision download ImageNet weights; the module tree is the same). A classification model has no boxes: nms=True
is a FormatError naming the file and the task.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyloader
from pyloader.errors import FormatError

try:
    import torch
    import ultralytics
    from ultralytics.nn.tasks import ClassificationModel  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the install
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(f"CI needs torch and ultralytics for the Ultralytics reference tests: {e}") from e
    pytest.skip(f"torch/ultralytics not installed: {e}", allow_module_level=True)

from pyloader_bench.synthetic_pt import write_ultralytics_checkpoint

RTOL = 1e-4
SIZE = (96, 128)  # any size works: the head pools the whole map
FULL = os.environ.get("PYLOADER_FULL") == "1"

# every classification yaml the installed package ships, at scale n where it has scales
SUPPORTED = ["yolov8n-cls.yaml", "yolo11n-cls.yaml", "yolo12n-cls.yaml", "yolo26n-cls.yaml", "yolov8n-cls-resnet50.yaml",
             "yolo11-cls-resnet18.yaml"]
SLOW = ["yolov8n-cls-resnet101.yaml"]  # 44M parameters whatever the scale (ResNetLayer ignores the width): PYLOADER_FULL=1
NOT_YET: dict = {}  # shipped classification yamls not read yet, and why


def test_scope_is_enumerated():
    """Every classification yaml the installed package ships is tested here or listed in NOT_YET with its reason: a
    yaml added upstream is a failure, not silence."""
    shipped = {p.name for p in (Path(ultralytics.__file__).parent / "cfg" / "models").rglob("*-cls*.yaml")}
    ours = {y.replace("n-cls", "-cls") for y in SUPPORTED + SLOW} | set(NOT_YET)
    assert shipped == ours, (sorted(shipped - ours), sorted(ours - shipped))


def _close(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert float(np.abs(got - want).max()) <= RTOL * float(np.abs(want).max())


@pytest.fixture(scope="module", params=SUPPORTED + [pytest.param(y, marks=pytest.mark.full) for y in SLOW])
def ckpt(request, tmp_path_factory):
    if request.param in SLOW and not FULL:
        pytest.skip("a large model: set PYLOADER_FULL=1")
    d = tmp_path_factory.mktemp("cls")
    last, best = d / "last.pt", d / "best.pt"
    yaml = request.param
    if yaml == "yolo11-cls-resnet18.yaml":  # weights None: nothing downloaded
        text = (Path(ultralytics.__file__).parent / "cfg" / "models" / "11" / yaml).read_text()
        assert "resnet18, DEFAULT," in text
        yaml = d / yaml
        yaml.write_text(text.replace("resnet18, DEFAULT,", "resnet18, null,"))
    write_ultralytics_checkpoint(last, yaml, seed=3, stripped=best, task_model="ClassificationModel")
    from ultralytics.nn.tasks import load_checkpoint

    ref, _ = load_checkpoint(str(best))
    ref = ref.float().eval()
    return request.param, last, best, ref


def test_classify_matches_ultralytics(ckpt):
    yaml_name, last, best, ref = ckpt
    x = np.random.default_rng(0).uniform(0, 1, (2, *SIZE, 3)).astype(np.float32)
    with torch.no_grad():
        probs, logits = ref(torch.from_numpy(x).permute(0, 3, 1, 2))
    for path in (last, best):
        for fold_bn in (True, False):
            raw = pyloader.load(path, fold_bn=fold_bn, input_size=SIZE)
            assert raw.output_names == ["logits"]
            _close(raw(x), logits.numpy())
            dec = pyloader.load(path, fold_bn=fold_bn, decode=True, input_size=SIZE)
            assert dec.output_names == ["probabilities", "logits"]
            got_p, got_l = dec(x)
            _close(got_p, probs.numpy())
            _close(got_l, logits.numpy())
            assert dec.metadata["task"] == "classify" and len(dec.class_names) == logits.shape[1]
    with pytest.raises(FormatError,
                       match=rf"{best.name}: nms is not available for this ultralytics model \(task classify\)"):
        pyloader.load(best, nms=True, input_size=SIZE)


@pytest.mark.parametrize("ckpt, row, arg, value, match", [
    ("yolov8n-cls-resnet50.yaml", 2, 4, 3, r"'model.2.layer': blocks \(the yaml row's n\): expected 3, the checkpoint has 4"),
    ("yolo11-cls-resnet18.yaml", 0, 0, 256, r"'model.0': output channels \(the yaml row\): expected 256, the checkpoint has 512"),
], indirect=["ckpt"])
def test_resnet_row_disagreeing_is_refused(ckpt, row, arg, value, match, tmp_path):
    """A ResNetLayer / TorchVision module that disagrees with its yaml row: FormatError naming the module."""
    model = copy.deepcopy(ckpt[3])
    model.yaml["backbone"][row][3][arg] = value
    path = tmp_path / "bad.pt"
    torch.save({"model": model.half(), "ema": None}, path)
    with pytest.raises(FormatError, match=rf"bad.pt: module {match}"):
        pyloader.read(path)


@pytest.mark.parametrize("ckpt", ["yolo11n-cls.yaml"], indirect=True)  # one model is enough for the output path
def test_classify_to_keras_file_and_inspect(ckpt, tmp_path):
    """Through the one path of `convert` (template and exporter) and `inspect`, as commands; the .keras file loads in
    a fresh process with its metadata."""
    yaml_name, last, best, ref = ckpt
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "pyloader", "convert", str(last), str(best), "-o", str(out),
                        "--decode", "--input-size", f"{SIZE[0]}x{SIZE[1]}"], capture_output=True, text=True,
                       timeout=900, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "pyloader", "inspect", str(out / "best.keras"), "--json"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    meta = json.loads(r.stdout)
    meta = meta.get("metadata", meta)
    assert meta["task"] == "classify" and [o["name"] for o in meta["outputs"]] == ["probabilities", "logits"]
    code = ("import sys, numpy as np, pyloader, keras\n"
            "m = keras.saving.load_model(sys.argv[1])\n"
            "x = np.random.default_rng(0).uniform(0, 1, (2, 96, 128, 3)).astype(np.float32)\n"
            "p, l = m(x)\n"
            "np.save(sys.argv[2], np.asarray(p))\n"
            "print(m.metadata['task'])\n")
    r = subprocess.run([sys.executable, "-c", code, str(out / "best.keras"), str(tmp_path / "p.npy")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and r.stdout.strip().endswith("classify"), r.stdout + r.stderr
    x = np.random.default_rng(0).uniform(0, 1, (2, *SIZE, 3)).astype(np.float32)
    with torch.no_grad():
        probs, _ = ref(torch.from_numpy(x).permute(0, 3, 1, 2))
    _close(np.load(tmp_path / "p.npy"), probs.numpy())
