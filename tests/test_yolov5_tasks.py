"""YOLOv5's own segmentation and classification checkpoints (issue 20 item 8) against the PyPI `yolov5` package's
models: SegmentationModel (yolov5n-seg.yaml: Segment, Detect with 32 mask coefficients per anchor, and Proto) and
ClassificationModel (yolov5n.yaml's backbone cut at layer 10 as YOLOv5's classify/train.py makes it, ending in
Classify), with random well-scaled weights; scale n, and s, m, l, x with PYLOADER_FULL=1.

Saved as YOLOv5's trainers save: segment/train.py's `last.pt` (fp16 `model` and `ema`, the optimizer's state) under
YOLOv5's own module names (models.yolo, models.common), then its `strip_optimizer` (`best.pt`: `model` = ema,
`ema` None); classify/train.py's checkpoints (fp16 `model` = ema, `ema` None, `optimizer` None), once under the
package's names (yolov5.models...), once under YOLOv5's. The reference is the checkpoint's model back in fp32, in
eval mode: Segment returns (detections [B, boxes, 5 + nc + nm], prototypes NCHW, raw heads [B, na, H, W, no]);
Classify its logits (YOLOv5's classify predict.py / val.py take their softmax). Tolerance as the detection tests:
max |keras - torch| <= 1e-4 * max |torch|, fold_bn on and off. NMS is refused for both tasks, by name.
"""

from __future__ import annotations

import copy
import datetime
import functools
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

import pyloader
from pyloader.errors import FormatError

try:
    import torch
    import yolov5.models.common as Y5C
    import yolov5.models.yolo as Y5Y
    from yolov5.utils.general import strip_optimizer
except ImportError as e:  # pragma: no cover - depends on the install
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(f"CI needs torch and yolov5 for the YOLOv5 reference tests: {e}") from e
    pytest.skip(f"torch/yolov5 not installed: {e}", allow_module_level=True)

from pyloader_bench.synthetic_pt import randomize_yolov5
from test_yolov5_reference import official_module_names  # noqa: E402

RTOL = 1e-4
SIZE = (96, 128)
Y5_DIR = os.path.dirname(Y5Y.__file__)
FULL = os.environ.get("PYLOADER_FULL") == "1"
SCALES = [pytest.param("n", id="n")] + [pytest.param(s, id=s, marks=pytest.mark.full) for s in "smlx"]


def _scale(request) -> str:
    scale = getattr(request, "param", "n")
    if scale != "n" and not FULL:
        pytest.skip("every scale: set PYLOADER_FULL=1")
    return scale


def _rel(got, want):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / np.abs(want).max())


def _train_ckpt(model, ema, optimizer):
    return {"epoch": 3, "best_fitness": np.array([0.25]), "model": model, "ema": ema, "updates": 40,
            "optimizer": optimizer, "opt": {"imgsz": 640, "epochs": 10},
            "date": datetime.datetime(2024, 1, 2, 3, 4, 5).isoformat()}


def _segmentation_model(scale="n", seed=1):
    model = Y5Y.SegmentationModel(os.path.join(Y5_DIR, "segment", f"yolov5{scale}-seg.yaml"), nc=5)
    randomize_yolov5(model, seed)
    model.names = {k: f"part_{k}" for k in range(5)}
    return model


@pytest.fixture(scope="module")
def seg(request, tmp_path_factory):
    scale = _scale(request)
    d = tmp_path_factory.mktemp("y5seg")
    model = _segmentation_model(scale)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-3)
    opt.step()  # momentum buffers in the state
    randomize_yolov5(model, 1)  # the step moved the weights; keep them well-scaled
    last, best = d / "last.pt", d / "best.pt"
    with official_module_names(False):  # as YOLOv5's own segment/train.py writes them
        torch.save(_train_ckpt(copy.deepcopy(model).half(), copy.deepcopy(model).half(), opt.state_dict()), last)
        with mock.patch.object(torch, "load", functools.partial(torch.load, weights_only=False)):
            strip_optimizer(last, best)
    ref = copy.deepcopy(model).half().float().eval()
    return last, best, ref


@pytest.fixture(scope="module")
def cls(request, tmp_path_factory):
    scale = _scale(request)
    d = tmp_path_factory.mktemp("y5cls")
    det = Y5Y.DetectionModel(os.path.join(Y5_DIR, f"yolov5{scale}.yaml"))
    randomize_yolov5(det, 2)
    model = Y5Y.ClassificationModel(model=det, nc=7, cutoff=10)  # as classify/train.py from a detection model
    model.names = [f"kind_{k}" for k in range(7)]
    last, best = d / "last.pt", d / "best.pt"
    torch.save(_train_ckpt(copy.deepcopy(model).half(), None, None), last)
    with official_module_names(False):
        torch.save(_train_ckpt(copy.deepcopy(model).half(), None, None), best)
    return last, best, copy.deepcopy(model).half().float().eval()


def _image(seed=0):
    return np.random.default_rng(seed).random((2, *SIZE, 3), dtype=np.float32)


def _nchw(x):
    return np.asarray(x).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("seg", SCALES, indirect=True)
def test_segment_matches_yolov5(seg):
    last, best, ref = seg
    x = _image()
    with torch.no_grad():
        want_det, want_proto, want_raw = ref(torch.from_numpy(_nchw(x).copy()))
    na, errs = ref.model[-1].na, []
    for path in (last, best):
        for fold_bn in (True, False):
            raw = pyloader.load(path, fold_bn=fold_bn, input_size=SIZE)
            assert raw.output_names == ["head_0", "head_1", "head_2", "prototypes"]
            *heads, proto = raw(x)
            for g, w in zip(heads, want_raw):  # NHWC channel a * no + k -> YOLOv5's [B, na, H, W, no]
                b, h, wd, _ = g.shape
                errs.append(_rel(np.asarray(g).reshape(b, h, wd, na, -1).transpose(0, 3, 1, 2, 4), w.numpy()))
            errs.append(_rel(_nchw(proto), want_proto.numpy()))
            assert [o["shape"][1:] for o in raw.metadata["outputs"]] == [list(t.shape[1:]) for t in raw(x)]
            dec = pyloader.load(path, fold_bn=fold_bn, decode=True, input_size=SIZE)
            assert dec.output_names == ["detections", "prototypes"]
            got_det, got_proto = dec(x)
            errs += [_rel(got_det, want_det.numpy()), _rel(_nchw(got_proto), want_proto.numpy())]
            assert dec.metadata["task"] == "segment" and dec.class_names == [f"part_{k}" for k in range(5)]
            assert max(errs) <= RTOL, errs
    print(f"segment: max relative error {max(errs):.2e}")
    with pytest.raises(FormatError, match=rf"{best.name}: nms is not available for this yolov5 model \(task segment\)"):
        pyloader.load(best, nms=True, input_size=SIZE)


@pytest.mark.parametrize("cls", SCALES, indirect=True)
def test_classify_matches_yolov5(cls):
    last, best, ref = cls
    x = _image(1)
    with torch.no_grad():
        logits = ref(torch.from_numpy(_nchw(x).copy())).numpy()
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    errs = []
    for path in (last, best):
        for fold_bn in (True, False):
            raw = pyloader.load(path, fold_bn=fold_bn, input_size=SIZE)
            assert raw.output_names == ["logits"]
            errs.append(_rel(raw(x), logits))
            dec = pyloader.load(path, fold_bn=fold_bn, decode=True, input_size=SIZE)
            assert dec.output_names == ["probabilities", "logits"]
            got_p, got_l = dec(x)
            errs += [_rel(got_p, probs), _rel(got_l, logits)]
            assert dec.metadata["task"] == "classify" and dec.class_names == [f"kind_{k}" for k in range(7)]
            assert max(errs) <= RTOL, errs
    print(f"classify: max relative error {max(errs):.2e}")
    assert pyloader.load(best).inputs[0].shape[1:3] == (224, 224)  # classify/train.py's default size
    with pytest.raises(FormatError, match=rf"{best.name}: nms is not available for this yolov5 model \(task classify\)"):
        pyloader.load(best, nms=True, input_size=SIZE)


@pytest.mark.parametrize("seg", ["n"], indirect=True)  # the n-scale checkpoints, built once
def test_segment_proto_disagreeing_is_refused(seg, tmp_path):
    """A Proto whose last conv gives other than nm channels: FormatError naming the module, expected vs actual."""
    model = copy.deepcopy(seg[2])
    head = model.model[-1]
    head.proto.cv3 = Y5C.Conv(head.npr, head.nm + 1)
    path = tmp_path / "bad.pt"
    torch.save(_train_ckpt(copy.deepcopy(model).half(), None, None), path)
    with pytest.raises(FormatError, match=r"bad.pt: module 'model.24.proto': channels .* expected \(64, 64, 64, 64, 64, "
                                          r"32\) .* have \(64, 64, 64, 64, 64, 33\)"):
        pyloader.read(path)


@pytest.mark.parametrize("seg", ["n"], indirect=True)  # the n-scale checkpoints, built once
def test_segment_to_keras_file_fresh_process(seg, tmp_path):
    """`convert --decode` as a command; the .keras file reloads in a fresh process with its two outputs."""
    last, best, ref = seg
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "pyloader", "convert", str(best), "-o", str(out), "--decode",
                        "--input-size", f"{SIZE[0]}x{SIZE[1]}"], capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    x = _image(2)
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, pyloader, keras\n"
            "m = keras.saving.load_model(sys.argv[1])\n"
            "d, p = m(np.load(sys.argv[2]))\n"
            "np.savez(sys.argv[3], d=np.asarray(d), p=np.asarray(p))\n"
            "print(m.metadata['task'])\n")
    r = subprocess.run([sys.executable, "-c", code, str(out / "best.keras"), str(tmp_path / "x.npy"),
                        str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and r.stdout.strip().endswith("segment"), r.stdout + r.stderr
    with torch.no_grad():
        want_det, want_proto, _ = ref(torch.from_numpy(_nchw(x).copy()))
    got = np.load(tmp_path / "out.npz")
    assert _rel(got["d"], want_det.numpy()) <= RTOL and _rel(_nchw(got["p"]), want_proto.numpy()) <= RTOL
