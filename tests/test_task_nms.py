"""`nms=True` for Ultralytics Segment, Pose and OBB models (issue 20 item 5) against Ultralytics' own NMS.

The outputs are detection's (boxes, scores, classes, num_detections) plus one per task, gathered with the kept
boxes: mask_coefficients (and the prototypes passed through), keypoints (decoded, flat as Ultralytics' rows), angles
(OBB: boxes are the rotated boxes' x, y, w, h, suppressed by probiou Fast-NMS). boxes, scores, classes and the task
output concatenated on the last axis are Ultralytics' nms=True export rows.

References, on the `ultralytics` package's own PyTorch model (built from its yaml, random well-scaled weights, saved
as its trainer saves; class logits lowered for the 80-class models and the DFL bins tilted towards short distances so
that tens of boxes per image survive and more compete): its predictor's `non_max_suppression` (rotated=True for OBB)
on the eval output, and the exporter's own `NMSModel` (the nms=True export graph) whose padded rows must equal ours.
Kept sets equal, boxes, scores and each task's columns within 1e-4 of the reference part's max |value|, classes
equal; both the TensorFlow-op and the keras.ops suppression paths. Then the segment model through a `.keras` file
and the OBB model (the rotated NMS) through a TFLite file of builtin ops, each run in a fresh process.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

import pyloader
from pyloader.keras_blocks.nms_options import NMS_OUTPUTS

try:
    import torch
    from ultralytics.engine.exporter import NMSModel
    from ultralytics.utils.nms import non_max_suppression
except ImportError as e:  # pragma: no cover - depends on the install
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(f"CI needs torch and ultralytics for the Ultralytics NMS tests: {e}") from e
    pytest.skip(f"torch/ultralytics not installed: {e}", allow_module_level=True)

from pyloader_bench.synthetic_pt import write_ultralytics_checkpoint

SIZE, IOU, SCORE = (96, 128), 0.45, 0.25
# task -> (yaml, model class, the output holding its columns, class-logit bias shift, DFL tilt)
TASKS = {"segment": ("yolov8n-seg.yaml", "SegmentationModel", "mask_coefficients", -2.5, 0.3),
         "pose": ("yolo11n-pose.yaml", "PoseModel", "keypoints", -2.5, 0.3),
         "obb": ("yolov8n-obb.yaml", "OBBModel", "angles", -2.5, 0.3)}
RTOL = 1e-4


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """task -> (checkpoint, reference model, images, eval output); built on first use."""
    made = {}

    def case(task):
        if task not in made:
            yaml_name, model_class, _, shift, tilt = TASKS[task]
            path = tmp_path_factory.mktemp(task) / f"{yaml_name[:-5]}.pt"
            write_ultralytics_checkpoint(path, yaml_name, seed=5, task_model=model_class)
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            head = ckpt["ema"].model[-1]
            with torch.no_grad():
                for seq in head.cv3:
                    seq[-1].bias += shift
                # DFL bins tilted towards short distances, more for top and bottom: smaller, elongated boxes (the
                # angle matters to probiou), more of them kept
                ramp = torch.arange(head.reg_max) * tilt
                for seq in head.cv2:
                    seq[-1].bias -= torch.cat([ramp, 2 * ramp, ramp, 2 * ramp]).to(seq[-1].bias.dtype)
            torch.save(ckpt, path)
            ref = copy.deepcopy(ckpt["ema"]).float().eval()
            x = np.random.default_rng(1).random((3, *SIZE, 3), dtype=np.float32)
            with torch.no_grad():
                y = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))[0]
            made[task] = path, ref, x, y
        return made[task]

    return case


def _rows(outs, i, extra):
    """Image i's kept rows [n, 6 + columns] (boxes, score, class, the task's columns); the padding checked."""
    n = int(np.asarray(outs["num_detections"])[i])
    parts = [np.asarray(outs["boxes"])[i], np.asarray(outs["scores"])[i][:, None],
             np.asarray(outs["classes"])[i][:, None].astype(np.float32), np.asarray(outs[extra])[i]]
    assert (parts[2][n:] == -1).all() and all((p[n:] == 0).all() for k, p in enumerate(parts) if k != 2)
    return np.concatenate(parts, -1)[:n]


def _match(got, want, what):
    """Same kept set (count, classes, boxes), each part within RTOL of the reference part's max; rows compared in
    an order independent of score ties."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert len(got) == len(want), f"{what}: {len(got)} kept, reference {len(want)}"
    assert len(want) >= 5, f"{what}: too few detections for a meaningful check ({len(want)})"
    assert (np.diff(got[:, 4]) <= 1e-6).all(), f"{what}: not in score order"
    g, w = (r[np.lexsort((np.round(r[:, 1], 1), np.round(r[:, 0], 1), r[:, 5]))] for r in (got, want))
    np.testing.assert_array_equal(g[:, 5], w[:, 5], err_msg=what)
    for part, cols in (("boxes", slice(0, 4)), ("scores", slice(4, 5)), ("task columns", slice(6, None))):
        err = np.abs(g[:, cols] - w[:, cols]).max() / np.abs(w[:, cols]).max()
        assert err <= RTOL, f"{what} {part}: relative error {err:.3g}"


def _nms_model_rows(ref, task, x, agnostic):
    """Ultralytics' nms=True export graph (engine.exporter.NMSModel) on the reference, as the exporter prepares the
    head (export mode, xyxy boxes but for OBB): [B, 300, 6 + columns]."""
    ref = copy.deepcopy(ref)
    head = ref.model[-1]
    ref.task, head.export, head.format, head.xyxy = task, True, "torchscript", task != "obb"
    args = types.SimpleNamespace(format="torchscript", conf=SCORE, iou=IOU, max_det=300, agnostic_nms=agnostic,
                                 dynamic=False, batch=len(x), opset=None, quantize=None)
    with torch.no_grad():
        out = NMSModel(ref, args)(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    return (out[0] if task == "segment" else out).numpy()


@pytest.mark.parametrize("agnostic", [False, True], ids=["per-class", "agnostic"])
@pytest.mark.parametrize("task", list(TASKS))
def test_task_nms_matches_ultralytics(cases, task, agnostic):
    path, ref, x, y = cases(task)
    extra, nc = TASKS[task][2], ref.model[-1].nc
    pred = y[0] if task == "segment" else y
    want = non_max_suppression(pred.clone(), SCORE, IOU, agnostic=agnostic, max_det=300, max_time_img=60, nc=nc,
                               rotated=task == "obb")
    export_rows = _nms_model_rows(ref, task, x, agnostic)
    model = pyloader.load(path, input_size=SIZE, nms={"iou": IOU, "score": SCORE, "agnostic": agnostic})
    names = [*NMS_OUTPUTS, extra] + (["prototypes"] if task == "segment" else [])
    assert model.output_names == names
    _check_metadata(model, ref.model[-1], task)
    counts = []
    for use_tf_op in (None, False) if task != "obb" else (None,):  # OBB: probiou Fast-NMS on every backend
        model.get_layer("nms").use_tf_op = use_tf_op
        outs = dict(zip(model.output_names, model(x)))
        for i in range(len(x)):
            got, what = _rows(outs, i, extra), f"{task} image {i} agnostic={agnostic} tf_op={use_tf_op}"
            _match(got, want[i].numpy(), what + " vs non_max_suppression")
            _match(got, export_rows[i][:len(got)], what + " vs NMSModel")
            assert not export_rows[i][len(got):].any(), what + ": NMSModel keeps more"
            counts.append(len(got))
        if task == "segment":
            p = np.transpose(np.asarray(outs["prototypes"]), (0, 3, 1, 2))
            err = np.abs(p - y[1].numpy()).max() / np.abs(y[1].numpy()).max()
            assert err <= RTOL, f"prototypes: relative error {err:.3g}"
    print(f"{task} agnostic={agnostic}: kept {counts}, w/h {np.median(pred[:, 2] / pred[:, 3]):.2f}")


def _check_metadata(model, head, task):
    meta = model.metadata
    assert [o["name"] for o in meta["outputs"]] == model.output_names
    for o, t in zip(meta["outputs"], model.outputs):
        assert o["shape"][1:] == list(t.shape[1:]), (o["name"], o["shape"], t.shape)
    assert meta["decode"] is True and meta["nms"]["iou"] == IOU and meta["task"] == task
    assert meta["nms_rows"].startswith(f"boxes, scores, classes (as float), {TASKS[task][2]} concatenated")
    assert ("x, y, w, h" in meta["outputs"][0]["layout"]) == (task == "obb")
    if task == "pose":
        assert meta["kpt_shape"] == list(head.kpt_shape)


def test_classify_refuses_nms(tmp_path):
    """A classification model has no boxes: nms is a FormatError naming the file."""
    path = tmp_path / "cls.pt"
    write_ultralytics_checkpoint(path, "yolo11n-cls.yaml", seed=1, task_model="ClassificationModel")
    with pytest.raises(pyloader.FormatError, match=r"cls\.pt: nms is not available for this ultralytics model "
                                                   r"\(task classify\)"):
        pyloader.load(path, nms=True, input_size=(64, 64))


def test_files_in_a_fresh_process(cases, tmp_path):
    """`.keras` (segment: NMS rows plus the prototypes) and TFLite (OBB: the rotated NMS, builtin ops only), written
    by `pyloader.convert`, run in a fresh process: Ultralytics' rows, by output name."""
    seg, obb = cases("segment"), cases("obb")
    nms = {"iou": IOU, "score": SCORE}
    files = {}
    for task, (path, *_), fmt in (("segment", seg, "keras"), ("obb", obb, "tflite")):
        res = pyloader.convert([path], tmp_path / task, format=fmt, input_size=SIZE, nms=nms)
        assert [r.status for r in res] == ["converted"], res
        files[task] = res[0].output
    np.save(tmp_path / "seg.npy", seg[2])
    np.save(tmp_path / "obb.npy", obb[2])
    script = textwrap.dedent(f"""
        import json, warnings, numpy as np, pyloader, keras, tensorflow as tf
        m = keras.saving.load_model({files['segment']!r})
        out = {{f"seg_{{k}}": np.asarray(v) for k, v in zip(m.output_names, m(np.load({str(tmp_path / 'seg.npy')!r})))}}
        warnings.filterwarnings("ignore")
        it = tf.lite.Interpreter(model_path={files['obb']!r})
        ops = sorted({{d["op_name"] for d in it._get_ops_details()}})
        runner = it.get_signature_runner()
        x = np.load({str(tmp_path / 'obb.npy')!r})
        for i in range(len(x)):
            for k, v in runner(**{{list(runner.get_input_details())[0]: x[i:i + 1]}}).items():
                out[f"obb_{{k}}_{{i}}"] = v
        np.savez({str(tmp_path / 'y.npz')!r}, **out)
        print(json.dumps({{"ops": ops, "names": list(m.output_names), "meta": m.metadata["outputs"]}}))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert not [op for op in info["ops"] if op.startswith("Flex") or op == "CUSTOM"], info["ops"]
    assert info["names"] == [*NMS_OUTPUTS, "mask_coefficients", "prototypes"]
    assert [o["name"] for o in info["meta"]] == info["names"]
    got = np.load(tmp_path / "y.npz")
    _, ref, x, y = seg
    want = non_max_suppression(y[0].clone(), SCORE, IOU, max_det=300, max_time_img=60, nc=ref.model[-1].nc)
    outs = {k[4:]: got[k] for k in got.files if k.startswith("seg_")}
    for i in range(len(x)):
        _match(_rows(outs, i, "mask_coefficients"), want[i].numpy(), f"segment .keras image {i}")
    _, ref, x, y = obb
    want = non_max_suppression(y.clone(), SCORE, IOU, max_det=300, max_time_img=60, nc=ref.model[-1].nc, rotated=True)
    for i in range(len(x)):
        outs = {k: got[f"obb_{k}_{i}"] for k in (*NMS_OUTPUTS, "angles")}
        _match(_rows(outs, 0, "angles"), want[i].numpy(), f"obb .tflite image {i}")
