"""pyloader's YOLOv9 Keras models against WongKinYiu's YOLOv9 PyTorch models (PyPI `yolo9`, the reference).

Each model is built by yolo9's own `DetectionModel` from a yaml the package ships (yolo9/models/detect/), given
random well-scaled weights (conv kernels ~ N(0, 1/fan_in), batch-norm statistics; the DFL's fixed bins kept:
pyloader_bench.synthetic_pt.randomize_ultralytics) and saved as YOLOv9's train.py saves (fp16 `model` and `ema`,
optimizer state, ...), pickled under the package's module names (yolo9.models.yolo.DetectionModel, ...) or, for one
case (yolov9-t), under the GitHub repository's (models.yolo, models.common). The reference is the checkpoint's `ema` after
`.float()`, in eval mode: `(decoded, raw)`, per branch for the Dual / Triple heads.

Tolerance: max |keras - torch| <= 1e-4 * max |torch| per output (see tests/test_yolov5_reference.py for why).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pyloader
from pyloader.errors import FormatError

sys.path.insert(0, os.path.dirname(__file__))
from conftest import FULL, require  # noqa: E402
from module_aliases import pickled_as  # noqa: E402

torch = require("torch")
Y9C = require("yolo9.models.common")
Y9E = require("yolo9.models.experimental")
Y9Y = require("yolo9.models.yolo")

from pyloader_bench.synthetic_pt import randomize_ultralytics  # noqa: E402

RTOL = 1e-4
SIZE = (64, 96)
YAMLS = os.path.join(os.path.dirname(Y9Y.__file__), "detect")


def official_module_names():
    """Pickle yolo9's classes under the GitHub repository's module names (models.yolo, models.common, ...)."""
    import yolo9.models as pkg

    return pickled_as(pkg, ((Y9Y, "models.yolo"), (Y9C, "models.common"), (Y9E, "models.experimental")))


def build_torch_model(yaml_name: str, seed: int):
    """yolo9's DetectionModel from its own yaml (its FLOPs summary skipped); the class-wide default activation a
    yaml's `activation:` sets (parse_model) restored afterwards."""
    acts = (Y9C.Conv.default_act, Y9C.RepConvN.default_act)
    info = Y9Y.BaseModel.info
    try:
        Y9Y.BaseModel.info = lambda self, *a, **k: None
        with contextlib.redirect_stdout(io.StringIO()):
            model = Y9Y.DetectionModel(os.path.join(YAMLS, yaml_name))
    finally:
        Y9Y.BaseModel.info = info
        Y9C.Conv.default_act, Y9C.RepConvN.default_act = acts
    randomize_ultralytics(model, seed)
    model.names = [f"class_{k}" for k in range(model.yaml["nc"])]
    return model.eval()


def save_checkpoint(model, path, official=False):
    """As YOLOv9's train.py: fp16 deep copies of the model and its EMA, the optimizer state and training metadata."""
    opt = torch.optim.SGD([p for p in model.parameters()], lr=0.01, momentum=0.9)
    ckpt = {"epoch": 3, "best_fitness": np.array([0.25]), "model": copy.deepcopy(model).half(),
            "ema": copy.deepcopy(model).half(), "updates": 42, "optimizer": opt.state_dict(),
            "opt": {"weights": "", "cfg": "yolov9.yaml", "imgsz": 640}, "git": None, "date": "2024-03-01T00:00:00"}
    with official_module_names() if official else contextlib.nullcontext():
        torch.save(ckpt, path)
    return ckpt["ema"]


class _Checkpoints:
    def __init__(self, tmpdir):
        self.tmpdir, self.cache = tmpdir, {}

    def get(self, yaml_name):
        official = yaml_name in OFFICIAL
        key = yaml_name
        if key not in self.cache:
            path = str(self.tmpdir / f"{yaml_name[:-5]}{'-official' if official else ''}.pt")
            saved = save_checkpoint(build_torch_model(yaml_name, seed=len(self.cache) + 1), path, official)
            self.cache[key] = (path, copy.deepcopy(saved).float().eval())
        return self.cache[key]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    return _Checkpoints(tmp_path_factory.mktemp("yolov9_ckpt"))


def torch_outputs(ref, x_nhwc):
    """(decoded per returned branch, raw heads per returned branch) of the reference's eval forward."""
    with torch.no_grad():
        decoded, raw = ref(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))))
    if not isinstance(decoded, (list, tuple)):  # one branch: (y, [d per level])
        decoded, raw = [decoded], [raw]
    return [d.numpy() for d in decoded], [[r.numpy().transpose(0, 2, 3, 1) for r in branch] for branch in raw]


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _listed(y):
    return [np.asarray(v) for v in (y if isinstance(y, (list, tuple)) else [y])]


def compare(path, ref, size=SIZE, folds=(True, False)):
    x = np.random.default_rng(42).random((2, *size, 3), dtype=np.float32)
    want_decoded, want_raw = torch_outputs(ref, x)
    report = []
    for fold in folds:
        got = _listed(pyloader.load(path, fold_bn=fold, input_size=size)(x))
        want = [h for branch in want_raw for h in branch]
        assert len(got) == len(want)
        for k, (g, w) in enumerate(zip(got, want)):
            assert g.shape == w.shape, (k, g.shape, w.shape)
            report.append(f"raw[{k}] fold={fold}: {rel(g, w):.1e}")
            assert rel(g, w) <= RTOL, report
        got = _listed(pyloader.load(path, fold_bn=fold, decode=True, input_size=size)(x))
        assert len(got) == len(want_decoded)
        for k, (g, w) in enumerate(zip(got, want_decoded)):
            assert g.shape == w.shape, (k, g.shape, w.shape)
            report.append(f"decoded[{k}] fold={fold}: {rel(g, w):.1e}")
            assert rel(g, w) <= RTOL, report
    return report


CI_YAMLS = ["gelan-t.yaml", "yolov9-t.yaml"]
OFFICIAL = {"yolov9-t.yaml"}  # pickled under the GitHub repository's module names (models.yolo.DetectionModel)
FULL_YAMLS = ["gelan-s.yaml", "gelan-m.yaml", "gelan-c.yaml", "gelan-e.yaml", "gelan.yaml", "yolov9-s.yaml",
              "yolov9-m.yaml", "yolov9-c.yaml", "yolov9-e.yaml", "yolov9.yaml", "yolov9-cf.yaml"]


@pytest.mark.parametrize("yaml_name", CI_YAMLS + [pytest.param(y, marks=pytest.mark.full) for y in FULL_YAMLS])
def test_matches_pytorch(checkpoints, yaml_name):
    if yaml_name in FULL_YAMLS and not FULL:
        pytest.skip("big model: set PYLOADER_FULL=1")
    path, ref = checkpoints.get(yaml_name)
    report = compare(path, ref)
    assert pyloader.load(path, input_size=SIZE).class_names == list(ref.names)
    print(f"{yaml_name}: " + "; ".join(report))


def test_detect_yamls_enumerated():
    """Every detection yaml yolo9 ships is tested here or refused on purpose (yolov7-af: YOLOv7's MP / SPPCSPC rows
    with the anchor-free Detect), so that a yaml added upstream shows up as a failure."""
    shipped = sorted(f for f in os.listdir(YAMLS) if f.endswith(".yaml"))
    assert shipped == sorted(CI_YAMLS + FULL_YAMLS + ["yolov7-af.yaml"])


def test_nms_on_main_branch(checkpoints):
    """nms=True: NMS of the main (last) branch's decoded output, as detect_dual.py's pred[0][1], against torchvision's
    batched_nms on the reference's."""
    import torchvision

    path, ref = checkpoints.get("yolov9-t.yaml")
    x = np.random.default_rng(3).random((2, *SIZE, 3), dtype=np.float32)
    decoded, _ = torch_outputs(ref, x)
    model = pyloader.load(path, input_size=SIZE, nms={"iou": 0.45, "score": 0.25})
    assert model.output_names[:4] == ["boxes", "scores", "classes", "num_detections"]
    assert model.metadata["outputs"][0]["name"] == "boxes"
    out = dict(zip(model.output_names, (np.asarray(o) for o in model(x))))
    kept = 0
    for i in range(len(x)):
        p = torch.from_numpy(decoded[-1][i].T)
        conf, cls = p[:, 4:].max(1)
        sel = conf > 0.25
        xy, wh = p[sel, :2], p[sel, 2:4]
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)
        keep = torchvision.ops.batched_nms(boxes, conf[sel], cls[sel], 0.45)[:300]
        n = int(out["num_detections"][i])
        kept += n
        assert n == len(keep) > 0
        np.testing.assert_allclose(out["boxes"][i, :n], boxes[keep].numpy(), atol=1e-3 * float(np.abs(boxes).max()))
        np.testing.assert_allclose(out["scores"][i, :n], conf[sel][keep].numpy(), atol=1e-4)
        assert (out["classes"][i, :n] == cls[sel][keep].numpy()).all()
    print(f"nms kept {kept} boxes")


@pytest.fixture(scope="module")
def gelan_t():
    return build_torch_model("gelan-t.yaml", seed=11)


def test_fused_form(tmp_path, gelan_t):
    """A checkpoint of the model after yolo9's own fuse() (batch norm folded into each Conv, RepConvN reparameterised
    into one convolution), saved as strip_optimizer leaves it (`ema` None)."""
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        fused = copy.deepcopy(gelan_t).fuse().eval()
    path = str(tmp_path / "fused.pt")
    torch.save({"epoch": -1, "model": fused.half(), "ema": None, "optimizer": None}, path)
    ref = torch.load(path, weights_only=False)["model"].float().eval()
    compare(path, ref, folds=(True,))


def _tampered(tmp_path, model, edit, name="bad.pt"):
    """The gelan-t model with its pickled yaml edited (the tensors stay as they are)."""
    model = copy.deepcopy(model)
    edit(model.yaml)
    path = str(tmp_path / name)
    save_checkpoint(model, path)
    return path


@pytest.mark.parametrize("edit, match", [
    (lambda y: y["backbone"][1][3].__setitem__(0, 48),
     r"module 'model\.1': convolution weight \(32, 16, 3, 3\).*the yaml row gives weight \(48, 16, 3, 3\)"),
    (lambda y: y["backbone"][4][3].__setitem__(2, 16),
     r"module 'model\.4\.cv2\.0\.cv1': convolution weight \(16, 32, 1, 1\).*weight \(8, 32, 1, 1\)"),
    (lambda y: y["backbone"][3].__setitem__(2, "ADown"),
     r"module 'model\.3': expected a ADown module, found <yolo9\.models\.common\.AConv record>"),
    (lambda y: y.__setitem__("nc", 3),
     r"module 'model\.22': DDetect nc=80 .*the yaml row gives nc=3"),
], ids=["channels", "elan-c4", "module", "nc"])
def test_tensors_checked_against_yaml(tmp_path, gelan_t, edit, match):
    path = _tampered(tmp_path, gelan_t, edit)
    with pytest.raises(FormatError, match=match) as e:
        pyloader.read(path)
    assert "bad.pt" in str(e.value)


def test_load_imports_neither_torch_nor_yolo9(checkpoints):
    """A user's process: loading and running a YOLOv9 checkpoint imports no torch and no yolo9 code."""
    path, _ = checkpoints.get("yolov9-t.yaml")
    code = textwrap.dedent(f"""
        import sys, numpy as np, pyloader
        m = pyloader.load({path!r}, decode=True, input_size={SIZE!r})
        y = [np.asarray(v) for v in m(np.zeros((1, *{SIZE!r}, 3), np.float32))]
        assert [v.shape for v in y] == [(1, 84, 126)] * 2, [v.shape for v in y]
        assert m.output_names == ["aux_detections", "detections"], m.output_names
        bad = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'yolo9', 'models', 'utils'))
        print('IMPORTED', bad)
        sys.exit(1 if bad else 0)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


def test_cli_convert_and_inspect(checkpoints, tmp_path):
    """`pyloader convert` and `pyloader inspect` on a YOLOv9 checkpoint, run as commands; the .keras file reloads in
    a fresh process and matches the reference's main branch."""
    path, ref = checkpoints.get("gelan-t.yaml")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "pyloader", "convert", path, "-o", str(out), "--decode",
                        "--input-size", "64x96"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-m", "pyloader", "inspect", path], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "YOLOv9 PyTorch checkpoint" in r.stdout and "DDetect" in r.stdout and "RepNCSPELAN4" in r.stdout
    x = np.random.default_rng(5).random((1, *SIZE, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(f"""
        import numpy as np, keras
        import pyloader  # what a user imports: registers pyloader's Keras classes for load_model
        m = keras.saving.load_model({str(out / 'gelan-t.keras')!r})
        np.save({str(tmp_path / 'y.npy')!r}, keras.ops.convert_to_numpy(m(np.load({str(tmp_path / 'x.npy')!r}))))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    want, _ = torch_outputs(ref, x)
    assert rel(np.load(tmp_path / "y.npy"), want[0]) <= RTOL
