"""YOLO26's task heads (Segment26, Pose26, OBB26, SemanticSegment, Depth: issue 20 item 1) against the PyPI
`ultralytics` package's own PyTorch models (SegmentationModel, PoseModel, OBBModel, SemanticSegmentationModel,
DepthModel built from its yolo26-seg / -pose / -obb / -sem / -depth yamls).

Each yaml is built by ultralytics, given random well-scaled weights and saved as its trainer saves (`last.pt`, then
`strip_optimizer`'s `best.pt`); the same checkpoint with `end2end` set (the one-to-one branch and Detect.postprocess's
top-k, as training with nms=False leaves it), and that one after the head's own fuse() (the one-to-many branch, the
training-only Proto26.semseg, Pose26's cv4_sigma and flow_model removed). The reference is the checkpoint's model in
eval mode: ((detections, prototypes), preds) for Segment26, (detections, preds) otherwise; detections are
[B, 4 + nc + channels, anchors] (end2end off) or [B, min(max_det, anchors), 6 + channels] rows (on: x1, y1, x2, y2 (OBB:
the rotated x, y, w, h), score, class, then the mask coefficients / decoded keypoints / angle). The raw outputs are the
branch the model decodes: head_i, then mask_coefficients_i / keypoints_i / angle_i, then the prototypes.

SemanticSegment's eval output is its logits [B, nc, H/8, W/8] (pyloader: NHWC `logits`, raw and decoded), Depth's the
calibrated depth [B, 1, H/4, W/4] (decoded `depth`; raw `log_depth`, the head's last Conv2d, checked through a hook).

Tolerance: per part (boxes, scores or class probabilities, the task's channels, prototypes), max |keras - torch| <=
1e-4 * max |torch|; top-k rows are paired by score (within 1e-4) and class first, as test_ultralytics_e2e does.
Measured: about 1e-6 or less. nms=True: the one-to-many branch and the task's NMS, as for YOLOv8 / YOLO11.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyloader
from pyloader.errors import FormatError

sys.path.insert(0, os.path.dirname(__file__))
from conftest import close  # noqa: E402
# skips this module without torch / ultralytics (fails in CI), as the other task tests
from test_ultralytics_tasks import MODEL_CLASS, P5_SIZE, RAW_KEY, RAW_NAME, RTOL, _nchw, _task  # noqa: E402
from test_ultralytics_tasks import _check_metadata as tasks_check_metadata  # noqa: E402

import torch  # noqa: E402
import ultralytics  # noqa: E402
from pyloader_bench.synthetic_pt import write_ultralytics_checkpoint  # noqa: E402
from ultralytics.utils.torch_utils import strip_optimizer  # noqa: E402

SUPPORTED = ["yolo26n-seg.yaml", "yolo26n-pose.yaml", "yolo26n-obb.yaml"]
DENSE = {"yolo26n-sem.yaml": "SemanticSegmentationModel", "yolo26n-depth.yaml": "DepthModel"}
# the task yamls of the 26/ folder not read yet, and why (YOLOE's: test_ultralytics_world.py)
NOT_YET: dict = {}
STATES = ["as-trained", "end2end", "fused"]
FULL = os.environ.get("PYLOADER_FULL") == "1"
CASES = [pytest.param(y, id=y[:-5]) for y in SUPPORTED] + [
    pytest.param(y.replace("n-", f"{c}-"), id=y[:-5].replace("n-", f"{c}-"), marks=pytest.mark.full)
    for y in SUPPORTED for c in "smlx"]
HEAD = {"seg": "Segment26", "pose": "Pose26", "obb": "OBB26"}


def test_scope_is_enumerated():
    """Every task yaml of the installed package's 26/ folder (all but detect and classify) is tested here or listed in
    NOT_YET with its reason."""
    root = Path(ultralytics.__file__).parent / "cfg" / "models" / "26"
    shipped = {p.name for p in root.glob("*.yaml") if any(f"-{t}" in p.name for t in ("seg", "pose", "obb", "sem", "depth"))
               and not p.name.startswith("yoloe")}
    assert shipped == {y.replace("yolo26n-", "yolo26-") for y in SUPPORTED + list(DENSE)} | set(NOT_YET)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """yaml -> {state: (last.pt, best.pt)}."""
    d, made = tmp_path_factory.mktemp("tasks26"), {}

    def get(yaml_name):
        if yaml_name not in made:
            stem = yaml_name[:-5]
            last = d / f"{stem}-as-trained-last.pt"
            write_ultralytics_checkpoint(last, yaml_name, seed=7, task_model=DENSE.get(yaml_name) or MODEL_CLASS[_task(yaml_name)])
            ckpt = torch.load(last, map_location="cpu", weights_only=False)
            if yaml_name in DENSE:  # no end-to-end branch; a calibrated Depth
                if "depth" in yaml_name:
                    ckpt["ema"].model[-1].cal_a.fill_(0.9)
                    ckpt["ema"].model[-1].cal_b.fill_(0.1)
                    torch.save(ckpt, last)
                made[yaml_name] = {"as-trained": (last, Path(str(last).replace("-last", "-best")))}
                strip_optimizer(str(last), str(made[yaml_name]["as-trained"][1]))
                return made[yaml_name]
            ckpt["ema"].end2end = True
            torch.save(ckpt, d / f"{stem}-end2end-last.pt")
            ckpt["ema"].model[-1].fuse()
            torch.save(ckpt, d / f"{stem}-fused-last.pt")
            made[yaml_name] = {}
            for state in STATES:
                path = d / f"{stem}-{state}-last.pt"
                strip_optimizer(str(path), str(path).replace("-last", "-best"))
                made[yaml_name][state] = (path, Path(str(path).replace("-last", "-best")))
        return made[yaml_name]

    return get


def _reference(path, x):
    """The checkpoint's model in eval mode on NHWC x: (detections, prototypes or None, raw preds of the decoded
    branch, the head)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    ref = (ckpt.get("ema") or ckpt["model"]).float().eval()
    with torch.no_grad():
        y, preds = ref(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
    head = ref.model[-1]
    if "one2one" in preds:
        preds = preds["one2one" if head.end2end else "one2many"]
    det, proto = (y[0], y[1]) if isinstance(y, tuple) else (y, None)
    return det.numpy(), None if proto is None else proto.numpy(), preds, head


def _rel(got, want, what):
    return close(got, want, what, RTOL)


def _paired(got, want):
    """got's rows [B, k, C] reordered to want's: rows of the same class whose scores tie within RTOL may come in
    either order (the nearest box of those); a row tying with the last selected score may be another anchor."""
    got, out = np.asarray(got), np.array(want, copy=True)
    for b, (g, w) in enumerate(zip(got, want)):
        free = list(range(len(g)))
        for i, row in enumerate(w):
            ties = [j for j in free if g[j, 5] == row[5] and abs(g[j, 4] - row[4]) <= RTOL]
            if not ties:
                assert abs(row[4] - w[-1, 4]) <= RTOL, f"row {i} {row[:6]} has no counterpart"
                continue
            j = min(ties, key=lambda j: float(np.abs(g[j, :4] - row[:4]).max()))
            free.remove(j)
            out[b, i] = g[j]
    return out


def _check_decoded(got, want, nc, e2e, what):
    """Per part: boxes, scores / class probabilities (and class index), the task's channels."""
    got = np.asarray(got)
    if e2e:
        got = _paired(got, want)
        parts = {"boxes": np.s_[..., :4], "scores": np.s_[..., 4:6], "task": np.s_[..., 6:]}
    else:
        parts = {"boxes": np.s_[:, :4], "classes": np.s_[:, 4:4 + nc], "task": np.s_[:, 4 + nc:]}
    return {f"{what} {k}": _rel(got[s], want[s], f"{what} {k}") for k, s in parts.items()}


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("yaml_name", CASES)
def test_matches_ultralytics(checkpoints, yaml_name, state):
    """decode=True (fold_bn on and off, best.pt and last.pt) and the raw outputs, against the reference (every
    scale with PYLOADER_FULL=1)."""
    if yaml_name not in SUPPORTED and not FULL:
        pytest.skip("every scale: set PYLOADER_FULL=1")
    last, best = checkpoints(yaml_name)[state]
    task = _task(yaml_name)
    x = np.random.default_rng(1).random((2, *P5_SIZE, 3), dtype=np.float32)
    det, proto, preds, head = _reference(best, x)
    e2e = state != "as-trained"
    assert head.end2end is e2e and type(head).__name__ == HEAD[task]
    errors = {}
    loads = {"as-trained": ((best, True), (best, False), (last, True)), "end2end": ((best, True), (best, False)),
             "fused": ((best, True),)}[state]
    for path, fold in loads:
        m = pyloader.load(path, fold_bn=fold, decode=True, input_size=P5_SIZE)
        out = m(x)
        assert m.output_names == (["detections", "prototypes"] if task == "seg" else ["detections"])
        errors.update(_check_decoded(out[0] if task == "seg" else out, det, head.nc, e2e, f"{path.name} fold={fold}"))
        if task == "seg":
            errors["prototypes"] = _rel(np.transpose(np.asarray(out[1]), (0, 3, 1, 2)), proto, "prototypes")
        _check_metadata(m, head, task, e2e)
    raw = pyloader.load(best, input_size=P5_SIZE)
    _check_metadata(raw, head, task, e2e)
    out, nl = [np.asarray(o) for o in raw(x)], head.nl
    heads = _nchw(out[:nl], 4 + head.nc)
    errors["raw boxes"] = _rel(heads[:, :4], preds["boxes"].numpy(), "raw boxes")
    errors["raw scores"] = _rel(heads[:, 4:], preds["scores"].numpy(), "raw scores")
    errors[f"raw {RAW_NAME[task]}"] = _rel(_nchw(out[nl:2 * nl], out[nl].shape[-1]), preds[RAW_KEY[task]].numpy(), "task")
    if task == "seg":
        errors["raw prototypes"] = _rel(np.transpose(out[-1], (0, 3, 1, 2)), proto, "raw prototypes")
    print(yaml_name, state, f"max {max(errors.values()):.1e}")


def _check_metadata(model, head, task, e2e):
    """As the v8 / v11 task tests, and the branch the model decodes."""
    tasks_check_metadata(model, head, task)
    assert model.metadata["end2end"]["branch"] == ("one2one" if e2e else "one2many")


def _nms_matches_ultralytics(best, task, x):
    """nms=True (the one-to-many branch, as Ultralytics' nms=True export): detection's outputs plus the task's
    columns, as many kept as Ultralytics' own non_max_suppression keeps on the reference's decoded output, of the
    same classes (tests/test_task_nms.py checks the rows themselves for YOLOv8 / YOLO11)."""
    from ultralytics.utils.nms import non_max_suppression

    model = pyloader.load(best, nms={"score": 0.01}, input_size=P5_SIZE)
    extra = {"seg": "mask_coefficients", "pose": "keypoints", "obb": "angles"}[task]
    assert model.output_names == ["boxes", "scores", "classes", "num_detections", extra] + (
        ["prototypes"] if task == "seg" else [])
    assert model.metadata["end2end"]["branch"] == "one2many"
    outs = dict(zip(model.output_names, (np.asarray(o) for o in model(x))))
    det, _, _, head = _reference(best, x)
    ref = non_max_suppression(torch.from_numpy(det), 0.01, 0.45, nc=head.nc, max_time_img=60, rotated=task == "obb")
    assert sum(len(r) for r in ref) >= 3, [len(r) for r in ref]
    for i, r in enumerate(ref):
        n = int(outs["num_detections"][i])
        assert n == len(r) and sorted(outs["classes"][i][:n]) == sorted(r[:, 5].int().tolist()), (task, n, len(r))


def test_inspect_nms_and_keras_files(checkpoints, tmp_path):
    """`inspect` names each head; nms=True matches Ultralytics' NMS; each head's decoded end2end .keras file (its
    Proto26, task decoding and top-k with the task's channels; the semantic and depth heads) reloads in a fresh
    process and gives the reference's outputs."""
    from pyloader.inspect_checkpoint import inspect

    x = np.random.default_rng(2).random((1, *P5_SIZE, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    files, want = [], {}
    for yaml_name in SUPPORTED:
        task = _task(yaml_name)
        _, best = checkpoints(yaml_name)["end2end"]
        level = inspect(best)["architecture"]["heads"][0]
        assert level["type"].startswith(f"{HEAD[task]}: Detect + {RAW_NAME[task]}") and "one-to-one branch + top-k" in level["type"]
        _nms_matches_ultralytics(checkpoints(yaml_name)["as-trained"][1], task, x)
        (res,) = pyloader.convert([best], tmp_path / task, format="keras", decode=True, input_size=P5_SIZE)
        assert res.status == "converted", res
        files.append(str(res.output))
        det, proto, _, head = _reference(best, x)
        want[task] = (det, proto, head.nc)
    for yaml_name in DENSE:
        _, best = checkpoints(yaml_name)["as-trained"]
        (res,) = pyloader.convert([best], tmp_path / yaml_name[:-5], format="keras", decode=True, input_size=P5_SIZE)
        assert res.status == "converted", res
        files.append(str(res.output))
        ckpt = torch.load(best, map_location="cpu", weights_only=False)
        with torch.no_grad():
            want[yaml_name] = ckpt["model"].float().eval()(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    code = ("import sys, numpy as np, keras, pyloader\n"
            "x = np.load(sys.argv[1])\n"
            "outs = {}\n"
            "for i, f in enumerate(sys.argv[3:]):\n"
            "    o = keras.saving.load_model(f)(x)\n"
            "    o = o if isinstance(o, (list, tuple)) else [o]\n"
            "    outs.update({f'{i}_{j}': np.asarray(t) for j, t in enumerate(o)})\n"
            "np.savez(sys.argv[2], **outs)\n")
    r = subprocess.run([sys.executable, "-c", code, tmp_path / "x.npy", tmp_path / "o.npz", *files], capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0, r.stderr[-3000:]
    o = np.load(tmp_path / "o.npz")
    for i, yaml_name in enumerate(SUPPORTED):
        det, proto, nc = want[_task(yaml_name)]
        _check_decoded(o[f"{i}_0"], det, nc, True, yaml_name)
        if proto is not None:
            _rel(np.transpose(o[f"{i}_1"], (0, 3, 1, 2)), proto, "prototypes")
    for i, yaml_name in enumerate(DENSE, len(SUPPORTED)):
        _rel(np.transpose(o[f"{i}_0"], (0, 3, 1, 2)), want[yaml_name], yaml_name)


@pytest.mark.parametrize("yaml_name", list(DENSE))
def test_dense_heads_match_ultralytics(checkpoints, yaml_name, tmp_path):
    """SemanticSegment's logits, Depth's log depth and depth: raw and decoded, fold_bn on and off, best and last;
    Depth's align-corners upsampling through TFLite (`--verify`)."""
    last, best = checkpoints(yaml_name)["as-trained"]
    x = np.random.default_rng(3).random((2, *P5_SIZE, 3), dtype=np.float32)
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    ref = ckpt["model"].float().eval()
    head, raw = ref.model[-1], {}
    hook = head.head.register_forward_hook(lambda m, i, o: raw.update(y=o)) if hasattr(head, "head") else None
    with torch.no_grad():
        want = ref(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    depth = hook is not None
    if depth:
        hook.remove()
        log = raw["y"].numpy()
        assert 0.2 < float(((log > -4) & (log < 5)).mean()) and want.shape == (2, 1, *(s // 4 for s in P5_SIZE))
    errors = {}
    for path, fold, decode in ((best, True, True), (best, False, True), (last, True, True), (best, False, False)):
        m = pyloader.load(path, fold_bn=fold, decode=decode, input_size=P5_SIZE)
        name = ("depth" if decode else "log_depth") if depth else "logits"
        assert m.output_names == [name] and m.metadata["task"] == ("depth" if depth else "semantic")
        assert [o["shape"] for o in m.metadata["outputs"]] == [[None, *m.outputs[0].shape[1:]]]
        got = np.transpose(np.asarray(m(x)), (0, 3, 1, 2))
        errors[f"{path.name} fold={fold} {name}"] = _rel(got, want if decode or not depth else log, name)
    print(yaml_name, {k: f"{v:.1e}" for k, v in errors.items()})
    if depth:
        (res,) = pyloader.convert([best], tmp_path, format="tflite", decode=True, input_size=P5_SIZE, verify=True)
        assert res.status == "converted", res
    from pyloader.inspect_checkpoint import inspect

    level = inspect(best)["architecture"]["heads"][0]
    assert level["type"].startswith("Depth (" if depth else "SemanticSegment (")
    with pytest.raises(FormatError, match=rf"{best.name}: nms is not available for this ultralytics model \(task "):
        pyloader.load(best, nms=True, input_size=P5_SIZE)


def _resave(src, dst, change):
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    change(ckpt["model"].model[-1])
    torch.save(ckpt, dst)
    return dst


@pytest.mark.parametrize("yaml_name,change,message", [
    ("yolo26n-seg.yaml", lambda h: h.proto.feat_refine.__delitem__(1),
     r"module 'model\.23\.proto\.feat_refine': 1 convs, expected one per level after the first \(2\)"),
    ("yolo26n-pose.yaml", lambda h: h.one2one_cv4_kpts.__delitem__(0),
     r"module 'model\.23\.one2one_cv4': 3 levels and 2 cv4_kpts, expected nl=3"),
    ("yolo26n-pose.yaml", lambda h: setattr(h, "kpt_shape", [17, 2]),
     r"module 'model\.23': kpt_shape: the yaml gives \[17, 3\], the head has \[17, 2\]"),
    ("yolo26n-depth.yaml", lambda h: h.refine.__delitem__(0),
     r"module 'model\.23': 3 proj and 1 refine blocks, expected 3 and 2 \(levels\)"),
    ("yolo26n-sem.yaml", lambda h: setattr(h, "nc", 5),
     r"module 'model\.17\.classifier\.1': weight \(19, 64, 1, 1\): expected a 1x1 Conv2d with bias from 64 channels to 5"),
], ids=["proto26-refine", "pose26-kpts", "kpt_shape", "depth-refine", "sem-nc"])
def test_bad_heads_name_the_module(checkpoints, tmp_path, yaml_name, change, message):
    """A head whose modules disagree with each other or with its yaml: a FormatError naming the module."""
    _, best = checkpoints(yaml_name)["as-trained" if yaml_name in DENSE else "end2end"]
    path = _resave(best, tmp_path / "bad.pt", change)
    with pytest.raises(FormatError, match=message):
        pyloader.read(path)
