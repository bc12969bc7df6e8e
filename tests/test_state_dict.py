"""Plain state_dicts (`torch.save(model.state_dict())`): read safely, listed by `inspect`, refused by `load`
without an architecture, and loaded with `cfg=` the model's yaml (YOLOv5, YOLOv7) to match the reference
PyTorch model (the PyPI `yolov5` and `yolov7detect` packages)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import pyloader
from pyloader.errors import FormatError, UnsafePickleError

try:
    import torch
    import yaml
    import yolov5.models.yolo as Y5Y
    import yolov7.models.yolo as Y7Y
except ImportError as e:  # pragma: no cover - depends on the install
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(f"CI needs torch, yolov5 and yolov7detect for the state_dict tests: {e}") from e
    pytest.skip(f"torch/yolov5/yolov7detect not installed: {e}", allow_module_level=True)

sys.path.insert(0, os.path.dirname(__file__))
import yolov7_archs as ARCH  # noqa: E402
from test_yolov7_reference import compare, randomize  # noqa: E402

SIZE = (96, 128)


def _yolov5n_yaml() -> dict:
    with open(os.path.join(os.path.dirname(Y5Y.__file__), "yolov5n.yaml"), encoding="ascii", errors="ignore") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def yolov5n(tmp_path_factory):
    from pyloader_bench.synthetic_pt import randomize_yolov5

    cfg = _yolov5n_yaml()
    model = randomize_yolov5(Y5Y.DetectionModel(copy.deepcopy(cfg)), 3).eval()
    path = tmp_path_factory.mktemp("sd") / "yolov5n_state_dict.pt"
    torch.save(model.state_dict(), path)
    return str(path), model, cfg


@pytest.fixture(scope="module")
def yolov7_tiny(tmp_path_factory):
    cfg = ARCH.yolov7_tiny(nc=6)
    model = randomize(Y7Y.Model(copy.deepcopy(cfg)), 4).eval()
    d = tmp_path_factory.mktemp("sd")
    path = d / "yolov7-tiny.pth"
    torch.save(model.state_dict(), path)
    yaml_path = d / "yolov7-tiny.yaml"
    yaml_path.write_text(yaml.safe_dump(cfg))
    return str(path), model, cfg, str(yaml_path)


def test_yolov5_state_dict_with_cfg(yolov5n, tmp_path):
    path, model, cfg = yolov5n
    report = compare(path, model, SIZE, cfg=cfg)
    print("yolov5n state_dict: " + "; ".join(report))
    yaml_path = tmp_path / "yolov5n.yaml"
    yaml_path.write_text(yaml.safe_dump(cfg))
    arrays = pyloader.read(path, cfg=str(yaml_path), fold_bn=False)
    np.testing.assert_array_equal(arrays["model_0_conv/kernel"], model.model[0].conv.weight.detach().numpy().transpose(2, 3, 1, 0))


def test_yolov7_state_dict_with_cfg(yolov7_tiny):
    path, model, cfg, yaml_path = yolov7_tiny
    report = compare(path, model, SIZE, cfg=yaml_path)
    print("yolov7-tiny state_dict: " + "; ".join(report))
    assert pyloader.load(path, cfg=cfg, input_size=SIZE).class_names == [f"class{k}" for k in range(6)]


def test_state_dict_needs_cfg(yolov7_tiny):
    path = yolov7_tiny[0]
    for call in (pyloader.load, pyloader.read):
        with pytest.raises(FormatError, match="state_dict .* carries no architecture: pass cfg="):
            call(path)


def test_state_dict_wrong_cfg(yolov5n, yolov7_tiny):
    """Another model's yaml: a FormatError naming the module, expected and actual."""
    with pytest.raises(FormatError, match=r"module 'model\.\d+"):
        pyloader.read(yolov5n[0], cfg=yolov7_tiny[2])
    with pytest.raises(FormatError, match="not a model yaml"):
        pyloader.read(yolov5n[0], cfg={"nc": 80})


def test_inspect_lists_state_dict_tensors(yolov5n):
    path, model, _ = yolov5n
    r = subprocess.run([sys.executable, "-m", "pyloader", "inspect", "--json", path], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads(r.stdout)
    names = [t[0] for t in info["tensors"]]
    assert names == list(model.state_dict())
    assert "state_dict" in info["format"]


def test_other_builds_on_containers_still_refused(tmp_path):
    """Only the OrderedDict `_metadata` state of a state_dict is accepted; other BUILDs on a dict are not."""
    import pickle
    import zipfile

    good = tmp_path / "sd.pt"
    torch.save({"w": torch.zeros(2)}, good)
    data = zipfile.ZipFile(good).read("sd/data.pkl")
    # The pickle of a plain dict, then BUILD with a state other than {'_metadata': ...}.
    evil = pickle.dumps({"a": 1}, protocol=2)[:-1] + pickle.dumps({"x": 1}, protocol=2)[2:-1] + b"b."
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as z:
        z.writestr("bad/data.pkl", evil)
        z.writestr("bad/byteorder", "little")
    assert data  # the real file's pickle is read (above); this one is refused
    with pytest.raises(UnsafePickleError, match="BUILD"):
        pyloader.read(bad)
