"""Ultralytics Segment, Pose and OBB models of YOLOv8, YOLO11, YOLO12 and YOLOv9 (issue 20, tasks; YOLO26's:
test_ultralytics_tasks26.py) against the PyPI `ultralytics`
package's own PyTorch models (SegmentationModel, PoseModel, OBBModel).

Each yaml shipped in the package is built by ultralytics itself, given random well-scaled weights and saved as its
trainer saves `last.pt`, then `strip_optimizer`'s `best.pt` (pyloader_bench.synthetic_pt.write_ultralytics_checkpoint).
The reference in eval mode returns (y, preds): y is what decode=True gives, output by output (Segment: (detections
with mask coefficients, prototypes), Pose: detections with decoded keypoints, OBB: detections with the angle); preds
holds the raw 'boxes', 'scores' and 'mask_coefficient' / 'kpts' / 'angle' that the raw outputs (head_i, then
mask_coefficients_i / keypoints_i / angle_i, then prototypes) are checked against. Prototypes are NHWC in Keras
(as Ultralytics' own TF exports give them), NCHW in torch.

Tolerance as the detection tests, per part (boxes, class probabilities, the task's channels, each against its own
scale): max |keras - torch| <= 1e-4 * max |torch|; measured about 1e-6. nms=True gives the task's NMS outputs (checked
against Ultralytics' NMS in tests/test_task_nms.py). Every scale with PYLOADER_FULL=1.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyloader
from pyloader.errors import FormatError

FULL = os.environ.get("PYLOADER_FULL") == "1"
RTOL = 1e-4
P5_SIZE, P6_SIZE = (96, 128), (128, 192)

try:
    import torch
    import ultralytics
    from ultralytics.nn import tasks as ul_tasks
except ImportError as e:  # pragma: no cover - depends on the install
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(f"CI needs torch and ultralytics for the Ultralytics reference tests: {e}") from e
    pytest.skip(f"torch/ultralytics not installed: {e}", allow_module_level=True)

from pyloader_bench.synthetic_pt import randomize_ultralytics, write_ultralytics_checkpoint

MODEL_CLASS = {"seg": "SegmentationModel", "pose": "PoseModel", "obb": "OBBModel"}
RAW_KEY = {"seg": "mask_coefficient", "pose": "kpts", "obb": "angle"}  # the reference's raw task entry
RAW_NAME = {"seg": "mask_coefficients", "pose": "keypoints", "obb": "angle"}

# the Segment / Pose / OBB yamls of YOLOv8, YOLO11, YOLO12 and YOLOv9 that the package ships, at scale n (YOLOv9's
# have no scales: c here, e with PYLOADER_FULL=1)
SUPPORTED = ["yolov8n-seg.yaml", "yolo11n-seg.yaml", "yolov8n-pose.yaml", "yolo11n-pose.yaml", "yolov8n-obb.yaml",
             "yolo11n-obb.yaml", "yolov8n-seg-p6.yaml", "yolov8n-pose-p6.yaml", "yolo12n-seg.yaml", "yolo12n-pose.yaml",
             "yolo12n-obb.yaml", "yolov9c-seg.yaml"]
FULL_ONLY = ["yolov9e-seg.yaml"]
FOLDERS = ("v8", "11", "12", "v9")
# task yamls of these families' folders that are not read yet, and why (YOLOE's: test_ultralytics_world.py)
NOT_YET: dict = {}


def _task(yaml_name: str) -> str:
    return next(t for t in MODEL_CLASS if f"-{t}" in yaml_name)


def _size(yaml_name: str) -> tuple:
    return P6_SIZE if "-p6" in yaml_name else P5_SIZE


CASES = [pytest.param(y, id=y[:-5]) for y in SUPPORTED] + [
    pytest.param(y, id=y[:-5], marks=pytest.mark.full) for y in FULL_ONLY + [
        y.replace("n-", f"{s}-") for y in SUPPORTED if "n-" in y for s in "smlx"]]


def _base(yaml_name: str) -> str:
    """'yolo12n-seg.yaml' -> 'yolo12-seg.yaml' (the scale letter after the version); YOLOv9's names have no scale."""
    return yaml_name if yaml_name.startswith("yolov9") else yaml_name.replace("n-", "-", 1)


def test_scope_is_enumerated():
    """Every Segment / Pose / OBB yaml that the installed package ships for YOLOv8, YOLO11, YOLO12 and YOLOv9 is
    either tested here (at scale n) or listed in NOT_YET with its reason: a yaml added upstream is a failure, not
    silence."""
    root = Path(ultralytics.__file__).parent / "cfg" / "models"
    shipped = {p.name for d in FOLDERS for p in (root / d).glob("*.yaml")
               if any(f"-{t}" in p.name for t in MODEL_CLASS) and not p.name.startswith("yoloe")}
    ours = {_base(y) for y in SUPPORTED + FULL_ONLY} | set(NOT_YET)
    assert shipped == ours, (sorted(shipped - ours), sorted(ours - shipped))


def _close(got, want, what):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    err = float(np.abs(got - want).max()) / float(np.abs(want).max())
    assert err <= RTOL, f"{what}: relative error {err:.3g}"


def _nchw(levels, channels):
    """Per-level NHWC tensors as Ultralytics' flattened [B, C, anchors]."""
    return np.concatenate([np.asarray(t).reshape(len(t), -1, channels) for t in levels], axis=1).transpose(0, 2, 1)


@pytest.fixture(scope="module", params=CASES)
def ckpt(request, tmp_path_factory):
    yaml_name = request.param
    if yaml_name not in SUPPORTED and not FULL:
        pytest.skip("every scale: set PYLOADER_FULL=1")
    d = tmp_path_factory.mktemp(yaml_name[:-5])
    last, best = d / "last.pt", d / "best.pt"
    write_ultralytics_checkpoint(last, yaml_name, seed=5, stripped=best, task_model=MODEL_CLASS[_task(yaml_name)])
    ref, _ = ul_tasks.load_checkpoint(str(best))
    ref = ref.float().eval()
    x = np.random.default_rng(0).uniform(0, 1, (2, *_size(yaml_name), 3)).astype(np.float32)
    with torch.no_grad():
        y, preds = ref(torch.from_numpy(x).permute(0, 3, 1, 2))
    return yaml_name, last, best, ref.model[-1], x, y, preds


def test_decoded_matches_ultralytics(ckpt):
    """decode=True: what the reference returns in eval mode, output by output, each part on its own scale; the
    metadata describes the outputs."""
    yaml_name, last, best, head, x, y, _ = ckpt
    task, nc = _task(yaml_name), head.nc
    det = (y[0] if task == "seg" else y).numpy()
    for path, fold_bn in ((last, True), (last, False), (best, True)):
        model = pyloader.load(path, fold_bn=fold_bn, decode=True, input_size=_size(yaml_name))
        out = model(x)
        got = np.asarray(out[0] if task == "seg" else out)
        assert model.output_names == (["detections", "prototypes"] if task == "seg" else ["detections"])
        for what, rows in (("boxes", slice(0, 4)), ("classes", slice(4, 4 + nc)), (RAW_NAME[task], slice(4 + nc, None))):
            _close(got[:, rows], det[:, rows], f"{path.name} fold_bn={fold_bn} {what}")
        if task == "seg":
            _close(np.transpose(np.asarray(out[1]), (0, 3, 1, 2)), y[1].numpy(), f"{path.name} prototypes")
        assert got.shape[1] == 4 + nc + (head.nm if task == "seg" else head.nk if task == "pose" else 1)
        _check_metadata(model, head, task)


def test_raw_matches_ultralytics(ckpt):
    """decode=False: head_i (box bins, class logits), the task's raw outputs per level, and the prototypes; the
    metadata describes them."""
    yaml_name, last, best, head, x, y, preds = ckpt
    task, nl, rm = _task(yaml_name), head.nl, head.reg_max
    model = pyloader.load(best, fold_bn=False, input_size=_size(yaml_name))
    names = [f"head_{i}" for i in range(nl)] + [f"{RAW_NAME[task]}_{i}" for i in range(nl)]
    assert model.output_names == names + (["prototypes"] if task == "seg" else [])
    _check_metadata(model, head, task)
    out = [np.asarray(o) for o in model(x)]
    heads = _nchw(out[:nl], 4 * rm + head.nc)
    _close(heads[:, :4 * rm], preds["boxes"].numpy(), "boxes")
    _close(heads[:, 4 * rm:], preds["scores"].numpy(), "scores")
    extra = _nchw(out[nl:2 * nl], out[nl].shape[-1])
    if task == "obb":  # the reference keeps the angle, (sigmoid - 0.25) * pi, not its logit
        extra = (1 / (1 + np.exp(-extra)) - 0.25) * math.pi
    _close(extra, preds[RAW_KEY[task]].numpy(), RAW_NAME[task])
    if task == "seg":
        _close(np.transpose(out[-1], (0, 3, 1, 2)), y[1].numpy(), "prototypes")


def _check_metadata(model, head, task):
    """The metadata names the task, the outputs as the model has them (names, shapes), kpt_shape for pose."""
    meta = model.metadata
    assert meta["task"] == {"seg": "segment", "pose": "pose", "obb": "obb"}[task]
    assert [o["name"] for o in meta["outputs"]] == model.output_names
    for o, t in zip(meta["outputs"], model.outputs):
        assert o["shape"][1:] == list(t.shape[1:]), (o["name"], o["shape"], t.shape)
    assert meta.get("kpt_shape") == (list(head.kpt_shape) if task == "pose" else None)
    assert meta["strides"] == [[int(s), int(s)] for s in head.stride]


def test_nms_and_inspect(ckpt):
    """nms=True: detection's outputs plus the task's columns per kept box (and the prototypes), as many kept per
    image as Ultralytics' own non_max_suppression keeps, of the same classes (tests/test_task_nms.py checks the rows
    themselves). `inspect` names the head and what it adds per anchor."""
    yaml_name, last, best, head, x, y, preds = ckpt
    from pyloader.inspect_checkpoint import inspect
    from ultralytics.utils.nms import non_max_suppression

    task = _task(yaml_name)
    want = (("mask_coefficients", head.nm) if task == "seg" else ("angle", 1) if task == "obb"
            else ("keypoints", "x".join(map(str, head.kpt_shape))))
    for level in inspect(best)["architecture"]["heads"]:
        assert level["type"].startswith(f"{type(head).__name__}: Detect + {want[0]}") and level[want[0]] == want[1]
    model = pyloader.load(best, nms={"score": 0.05}, input_size=_size(yaml_name))
    extra = {"seg": "mask_coefficients", "pose": "keypoints", "obb": "angles"}[task]
    assert model.output_names == ["boxes", "scores", "classes", "num_detections", extra] + (
        ["prototypes"] if task == "seg" else [])
    _check_metadata(model, head, task)
    outs = dict(zip(model.output_names, (np.asarray(o) for o in model(x))))
    assert outs[extra].shape[2] == (head.nm if task == "seg" else head.nk if task == "pose" else 1)
    ref = non_max_suppression((y[0] if task == "seg" else y).clone(), 0.05, 0.45, nc=head.nc, max_time_img=60,
                              rotated=task == "obb")
    assert min(len(r) for r in ref) >= 3, [len(r) for r in ref]
    for i, r in enumerate(ref):
        n = int(outs["num_detections"][i])
        assert n == len(r) and sorted(outs["classes"][i][:n]) == sorted(r[:, 5].int().tolist())


def _save(model, path):
    model.names = {k: f"c{k}" for k in range(model.yaml["nc"])}
    torch.save({"epoch": -1, "model": model.half(), "ema": None, "train_args": {}}, path)


def test_bad_task_heads_name_the_module(tmp_path):
    """A head whose attributes or tensors disagree with its yaml or with each other: a FormatError naming the module,
    expected vs actual."""
    from ultralytics.nn.modules.block import Proto

    pose = randomize_ultralytics(ul_tasks.PoseModel("yolov8n-pose.yaml", verbose=False))
    pose.model[-1].kpt_shape = [17, 2]
    _save(pose, tmp_path / "pose.pt")
    with pytest.raises(FormatError, match=r"pose\.pt: module 'model\.22': kpt_shape: the yaml gives \[17, 3\], the "
                                          r"head has \[17, 2\]"):
        pyloader.read(tmp_path / "pose.pt")
    seg = randomize_ultralytics(ul_tasks.SegmentationModel("yolov8n-seg.yaml", verbose=False))
    seg.model[-1].proto = Proto(64, 32, 32)  # npr is 64 (256 at width 0.25)
    _save(seg, tmp_path / "seg.pt")
    with pytest.raises(FormatError, match=r"seg\.pt: module 'model\.22\.proto': 32 hidden and 32 output channels, "
                                          r"expected npr=64 and nm=32"):
        pyloader.read(tmp_path / "seg.pt")
    obb = randomize_ultralytics(ul_tasks.OBBModel("yolov8n-obb.yaml", verbose=False))
    obb.model[-1].ne = 2
    _save(obb, tmp_path / "obb.pt")
    with pytest.raises(FormatError, match=r"obb\.pt: module 'model\.22': OBB ne=2: expected 1"):
        pyloader.read(tmp_path / "obb.pt")


def _pyloader(*args, python="-m pyloader"):
    """`python -m pyloader ARGS` (or `python -c CODE ARGS`) in a fresh process; its stdout."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    r = subprocess.run([sys.executable, *python.split(), *map(str, args)], capture_output=True, text=True,
                       timeout=900, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_segment_to_keras_file_and_inspect(ckpt, tmp_path):
    """Through `convert` (template and exporter) and `inspect`, as commands: the .keras file of a segmentation model
    (its ConvTranspose2d and the task decode layer) loads in a fresh process and gives the reference's outputs."""
    yaml_name, last, best, head, x, y, preds = ckpt
    if yaml_name != "yolo11n-seg.yaml":
        pytest.skip("one model is enough for the output path")
    out = tmp_path / "out"
    _pyloader("convert", last, best, "-o", out, "--decode", "--input-size", f"{x.shape[1]}x{x.shape[2]}")
    meta = json.loads(_pyloader("inspect", out / "best.keras", "--json"))
    meta = meta.get("metadata", meta)
    assert meta["task"] == "segment" and [o["name"] for o in meta["outputs"]] == ["detections", "prototypes"]
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, pyloader, keras\n"
            "m = keras.saving.load_model(sys.argv[1])\n"
            "d, p = m(np.load(sys.argv[2]))\n"
            "np.savez(sys.argv[3], d=np.asarray(d), p=np.asarray(p))\n")
    _pyloader(code, out / "best.keras", tmp_path / "x.npy", tmp_path / "o.npz", python="-c")
    o = np.load(tmp_path / "o.npz")
    _close(o["d"][:, :4], y[0].numpy()[:, :4], "boxes")
    _close(o["d"][:, 4 + head.nc:], y[0].numpy()[:, 4 + head.nc:], "mask coefficients")
    _close(np.transpose(o["p"], (0, 3, 1, 2)), y[1].numpy(), "prototypes")
