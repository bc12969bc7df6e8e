"""End-to-end detection (`load(..., nms=...)`, `--nms`) against independent NMS on the reference models' output.

- Darknet: OpenCV's Darknet importer runs the same network (BN epsilon compensated as in
  test_darknet_opencv.py); its decoded yolo rows go through OpenCV's own `cv2.dnn.NMSBoxesBatched` (per class)
  or `cv2.dnn.NMSBoxes` (class-agnostic).
- YOLOv5: the `yolov5` package's PyTorch model on the same checkpoint; its decoded output goes through the
  package's `non_max_suppression` and through torchvision's `batched_nms`.
- Ultralytics (yolov8n, 80 classes, no objectness) and YOLOv7 (yolov7-tiny, 3 classes): likewise, the
  `ultralytics` package's `non_max_suppression` / `yolov7detect`'s, and torchvision, on the PyTorch model's
  decoded output.

The networks are yolov3-tiny (3 classes) and yolov5n (3 classes) with random well-scaled weights, the head
convolutions' objectness and class biases raised so that each image has tens of boxes above the score
threshold and NMS has work to do (overlaps within and across classes). Several images, in one batch, both
the TensorFlow-op path and the keras.ops path of the layer; the kept boxes, their classes and scores must be
the same, in the same (score) order.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import SHARED_CFG  # noqa: E402
from pyloader.darknet.synthetic import write_weights  # noqa: E402

import pyloader  # noqa: E402

cv2 = pytest.importorskip("cv2")

IOU, SCORE = 0.45, 0.25
NC = 3
DARKNET_SIZE = (160, 224)
YOLOV5_SIZE = (128, 160)


def _images(n, size, seed=0):
    return np.random.default_rng(seed).random((n, *size, 3), dtype=np.float32)


def _match(got, want, size, what):
    """got/want: (xyxy [n, 4], scores [n], classes [n]) in score order. Boxes of equal score (fp16 weights
    make exact ties) may come in either order: both sides are compared sorted by class and position."""
    gb, gs, gc = (np.asarray(a) for a in got)
    wb, ws, wc = (np.asarray(a) for a in want)
    assert len(gs) == len(ws), f"{what}: {len(gs)} detections kept, reference {len(ws)}"
    assert (np.diff(gs) <= 1e-6).all(), f"{what}: not in score order"
    g, w = np.lexsort((gb[:, 1], gb[:, 0], gc)), np.lexsort((wb[:, 1], wb[:, 0], wc))
    gb, gs, gc, wb, ws, wc = gb[g], gs[g], gc[g], wb[w], ws[w], wc[w]
    assert len(ws) >= 3, f"{what}: too few detections for a meaningful check ({len(ws)})"
    np.testing.assert_array_equal(gc, wc, err_msg=what)
    np.testing.assert_allclose(gs, ws, rtol=1e-4, atol=1e-5, err_msg=what)
    np.testing.assert_allclose(gb, wb, rtol=0, atol=2e-4 * max(size), err_msg=what)


def _ours(outs, i):
    n = int(np.asarray(outs["num_detections"])[i])
    boxes = np.asarray(outs["boxes"])[i]
    scores = np.asarray(outs["scores"])[i]
    classes = np.asarray(outs["classes"])[i]
    assert (classes[n:] == -1).all() and (scores[n:] == 0).all() and (boxes[n:] == 0).all()
    return boxes[:n], scores[:n], classes[:n]


# ---------------------------------------------------------------------------------------------------------
# Darknet against OpenCV


@pytest.fixture(scope="module")
def darknet_case(tmp_path_factory):
    from test_darknet_opencv import DARKNET_EPS, OPENCV_EPS, opencv_cfg

    if not (SHARED_CFG / "yolov3-tiny.cfg").is_file():
        pytest.skip("../shared/cfg/yolov3-tiny.cfg not found")
    d = tmp_path_factory.mktemp("nms_darknet")
    text = (SHARED_CFG / "yolov3-tiny.cfg").read_text()
    text = re.sub(r"(?m)^classes=80$", f"classes={NC}", text)
    text = re.sub(r"(?m)^filters=255$", f"filters={3 * (5 + NC)}", text)
    cfg = d / "tiny3.cfg"
    cfg.write_text(text)

    def tweak(network, layer, t):
        if any(h.inputs[0] == layer.index for h in network.heads):
            b = t["biases"].reshape(3, 5 + NC)
            b[:, 2:4] += 1.0  # bigger boxes: they overlap their neighbours'
            b[:, 4] -= 1.0  # objectness: about a quarter of the boxes above the score threshold

    ours, theirs = d / "tiny3.weights", d / "opencv.weights"
    write_weights(ours, str(cfg), seed=11, tweak=tweak)
    write_weights(theirs, str(cfg), seed=11, tweak=tweak, variance_offset=DARKNET_EPS - OPENCV_EPS)
    ocfg = opencv_cfg(str(cfg), d, DARKNET_SIZE)
    return str(cfg), str(ours), ocfg, str(theirs)


def _opencv_rows(ocfg, weights, image):
    net = cv2.dnn.readNetFromDarknet(ocfg, weights)
    net.setInput(image[None].transpose(0, 3, 1, 2))
    return np.concatenate([o.reshape(-1, 5 + NC) for o in net.forward(net.getUnconnectedOutLayersNames())])


def _opencv_nms(rows, size, agnostic, max_det):
    h, w = size
    probs = rows[:, 5:]  # OpenCV's yolo rows: objectness x class probability
    cls, score = probs.argmax(1), probs.max(1)
    x, y, bw, bh = rows[:, 0] * w, rows[:, 1] * h, rows[:, 2] * w, rows[:, 3] * h
    rects = [(float(a - c / 2), float(b - d / 2), float(c), float(d)) for a, b, c, d in zip(x, y, bw, bh)]
    if agnostic:
        keep = cv2.dnn.NMSBoxes(rects, score.tolist(), SCORE, IOU)
    else:
        keep = cv2.dnn.NMSBoxesBatched(rects, score.tolist(), cls.tolist(), SCORE, IOU)
    keep = np.asarray(keep, int).reshape(-1)[:max_det]
    xyxy = np.stack([x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2], 1)
    return xyxy[keep], score[keep], cls[keep]


@pytest.mark.parametrize("agnostic,max_det", [(False, 300), (True, 300), (False, 7)])
def test_darknet_nms_matches_opencv(darknet_case, agnostic, max_det):
    cfg, weights, ocfg, oweights = darknet_case
    images = _images(3, DARKNET_SIZE, seed=1)
    model = pyloader.load(weights, cfg, input_size=DARKNET_SIZE,
                          nms={"iou": IOU, "score": SCORE, "agnostic": agnostic, "max_det": max_det})
    assert list(model.output_names) == ["boxes", "scores", "classes", "num_detections"]
    assert model.metadata["nms"]["agnostic"] == agnostic
    counts = []
    for use_tf_op in (None, False):  # TensorFlow's NonMaxSuppressionV4, then the keras.ops formulation
        model.get_layer("nms").use_tf_op = use_tf_op
        outs = dict(zip(model.output_names, model(images)))
        assert tuple(outs["boxes"].shape) == (3, max_det, 4)
        for i, image in enumerate(images):
            want = _opencv_nms(_opencv_rows(ocfg, oweights, image), DARKNET_SIZE, agnostic, max_det)
            _match(_ours(outs, i), want, DARKNET_SIZE, f"image {i} agnostic={agnostic} tf_op={use_tf_op}")
            counts.append(len(want[1]))
    print(f"darknet agnostic={agnostic} max_det={max_det}: kept {counts}")


# ---------------------------------------------------------------------------------------------------------
# YOLOv5 against the yolov5 package and torchvision


@pytest.fixture(scope="module")
def yolov5_case(tmp_path_factory):
    torch = pytest.importorskip("torch")
    Y5Y = pytest.importorskip("yolov5.models.yolo")
    from pyloader_bench.synthetic_pt import randomize_yolov5

    cfg = {"nc": NC, "depth_multiple": 0.33, "width_multiple": 0.25,
           "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]}
    import yaml

    with open(os.path.join(os.path.dirname(Y5Y.__file__), "yolov5n.yaml")) as f:
        base = yaml.safe_load(f)
    cfg.update(backbone=base["backbone"], head=base["head"])
    model = Y5Y.DetectionModel(copy.deepcopy(cfg))
    randomize_yolov5(model, seed=3)
    with torch.no_grad():
        for conv in model.model[-1].m:
            b = conv.bias.view(3, 5 + NC)
            b[:, 2:4] += 1.0
            b[:, 4] -= 1.0
    model.names = [f"c{k}" for k in range(NC)]
    path = tmp_path_factory.mktemp("nms_yolov5") / "y5n3.pt"
    ckpt = {"epoch": 1, "model": copy.deepcopy(model).half(), "ema": copy.deepcopy(model).half()}
    torch.save(ckpt, path)
    return str(path), copy.deepcopy(ckpt["ema"]).float().eval()


@pytest.mark.parametrize("agnostic", [False, True])
def test_yolov5_nms_matches_yolov5_and_torchvision(yolov5_case, agnostic):
    import torch
    import torchvision
    from yolov5.utils.general import non_max_suppression

    path, ref = yolov5_case
    images = _images(3, YOLOV5_SIZE, seed=2)
    with torch.no_grad():
        pred = ref(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))[0]
    want_y5 = non_max_suppression(pred.clone(), SCORE, IOU, agnostic=agnostic, max_det=300)
    model = pyloader.load(path, input_size=YOLOV5_SIZE, nms={"iou": IOU, "score": SCORE, "agnostic": agnostic})
    counts = []
    for use_tf_op in (None, False):
        model.get_layer("nms").use_tf_op = use_tf_op
        outs = dict(zip(model.output_names, model(images)))
        for i in range(len(images)):
            got = _ours(outs, i)
            d = want_y5[i].numpy()
            what = f"image {i} agnostic={agnostic} tf_op={use_tf_op}"
            _match(got, (d[:, :4], d[:, 4], d[:, 5].astype(int)), YOLOV5_SIZE, what + " vs yolov5")
            # torchvision: conf = obj x cls, best class, threshold, batched_nms (or nms when agnostic)
            p = pred[i]
            conf, cls = (p[:, 5:] * p[:, 4:5]).max(1)
            sel = conf > SCORE
            xy, wh = p[sel, :2], p[sel, 2:4]
            boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)
            counts.append(int(sel.sum()))
            keep = (torchvision.ops.nms(boxes, conf[sel], IOU) if agnostic
                    else torchvision.ops.batched_nms(boxes, conf[sel], cls[sel], IOU))[:300]
            _match(got, (boxes[keep].numpy(), conf[sel][keep].numpy(), cls[sel][keep].numpy()), YOLOV5_SIZE,
                   what + " vs torchvision")
            counts.append(len(keep))
    print(f"yolov5 agnostic={agnostic}: (candidates, kept) {counts}")


# ---------------------------------------------------------------------------------------------------------
# Ultralytics (YOLOv8) and YOLOv7 against their own packages' NMS and torchvision

ULTRA_SIZE = (96, 128)
YOLOV7_SIZE = (128, 160)


def _torchvision_nms(xywh, conf, cls, agnostic):
    import torch
    import torchvision

    sel = conf > SCORE
    xy, wh = xywh[sel, :2], xywh[sel, 2:4]
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)
    keep = (torchvision.ops.nms(boxes, conf[sel], IOU) if agnostic
            else torchvision.ops.batched_nms(boxes, conf[sel], cls[sel], IOU))[:300]
    return int(sel.sum()), (boxes[keep].numpy(), conf[sel][keep].numpy(), cls[sel][keep].numpy())


def _check_family(path, pred, size, images, agnostic, family_nms, torchvision_inputs, what):
    """pred: the reference model's decoded output; family_nms(pred) -> per-image [n, 6] (xyxy, conf, cls)."""
    want = family_nms(pred)
    model = pyloader.load(path, input_size=size, nms={"iou": IOU, "score": SCORE, "agnostic": agnostic})
    counts = []
    for use_tf_op in (None, False):
        model.get_layer("nms").use_tf_op = use_tf_op
        outs = dict(zip(model.output_names, model(images)))
        for i in range(len(images)):
            got = _ours(outs, i)
            d = want[i].numpy()
            w = f"{what} image {i} agnostic={agnostic} tf_op={use_tf_op}"
            _match(got, (d[:, :4], d[:, 4], d[:, 5].astype(int)), size, w + " vs own NMS")
            n, tv = _torchvision_nms(*torchvision_inputs(pred[i]), agnostic)
            _match(got, tv, size, w + " vs torchvision")
            counts.append((n, len(tv[1])))
    print(f"{what} agnostic={agnostic}: (candidates, kept) {counts}")


@pytest.fixture(scope="module")
def ultralytics_case(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from pyloader_bench.synthetic_pt import write_ultralytics_checkpoint

    path = str(tmp_path_factory.mktemp("nms_ultra") / "v8n.pt")
    write_ultralytics_checkpoint(path, "yolov8n.yaml", seed=5)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    with torch.no_grad():  # lower the class logits: 80 classes put every anchor over the threshold
        for seq in ckpt["ema"].model[-1].cv3:
            seq[-1].bias -= 2.5
    torch.save(ckpt, path)
    return path, copy.deepcopy(ckpt["ema"]).float().eval()


@pytest.mark.parametrize("agnostic", [False, True])
def test_ultralytics_nms_matches_ultralytics_and_torchvision(ultralytics_case, agnostic):
    import torch
    try:
        from ultralytics.utils.nms import non_max_suppression
    except ImportError:  # older ultralytics
        from ultralytics.utils.ops import non_max_suppression

    path, ref = ultralytics_case
    images = _images(3, ULTRA_SIZE, seed=4)
    with torch.no_grad():
        pred = ref(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))[0]  # [B, 4 + nc, anchors]

    def tv_inputs(p):  # [4 + nc, anchors]: no objectness
        p = p.T
        conf, cls = p[:, 4:].max(1)
        return p[:, :4], conf, cls

    _check_family(path, pred, ULTRA_SIZE, images, agnostic,
                  lambda p: non_max_suppression(p.clone(), SCORE, IOU, agnostic=agnostic, max_det=300),
                  tv_inputs, "ultralytics yolov8n")


@pytest.fixture(scope="module")
def yolov7_case(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("yolov7")
    import yolov7_archs as ARCH
    from test_yolov7_reference import build_torch_model, save_checkpoint

    model = build_torch_model(ARCH.yolov7_tiny(nc=NC), seed=7)
    with torch.no_grad():  # wider boxes, lower objectness (as for YOLOv5)
        for conv in model.model[-1].m:
            b = conv.bias.view(3, 5 + NC)
            b[:, 2:4] += 1.0
            b[:, 4] -= 1.0
    path = str(tmp_path_factory.mktemp("nms_yolov7") / "y7tiny.pt")
    saved = save_checkpoint(model, path)
    return path, copy.deepcopy(saved).float().eval()


@pytest.mark.parametrize("agnostic", [False, True])
def test_yolov7_nms_matches_yolov7_and_torchvision(yolov7_case, agnostic):
    import torch
    from yolov7.utils.general import non_max_suppression

    path, ref = yolov7_case
    images = _images(3, YOLOV7_SIZE, seed=6)
    with torch.no_grad():
        pred = ref(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))[0]

    def tv_inputs(p):
        conf, cls = (p[:, 5:] * p[:, 4:5]).max(1)
        return p[:, :4], conf, cls

    _check_family(path, pred, YOLOV7_SIZE, images, agnostic,
                  lambda p: non_max_suppression(p.clone(), SCORE, IOU, agnostic=agnostic),
                  tv_inputs, "yolov7-tiny")


# ---------------------------------------------------------------------------------------------------------
# Deployment: TFLite (NON_MAX_SUPPRESSION_V4), other backends, bad input


def test_cli_tflite_nms_matches_keras(darknet_case, tmp_path):
    """`pyloader convert --nms --format tflite`: the file uses TFLite's NMS builtin and, run by the TFLite
    interpreter in a fresh process, gives the Keras model's detections by output name."""
    cfg, weights, _, _ = darknet_case
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pyloader", "convert", weights, "--cfg", cfg, "-o", str(out), "--format", "tflite",
           "--nms", "--iou", "0.5", "--score", "0.3", "--max-det", "40", "--input-size", "160x224", "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    images = _images(2, DARKNET_SIZE, seed=5)
    np.save(tmp_path / "x.npy", images)
    script = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf
        it = tf.lite.Interpreter(model_path={str(out / 'tiny3.tflite')!r})
        ops = sorted({{d["op_name"] for d in it._get_ops_details()}})
        runner = it.get_signature_runner()
        x = np.load({str(tmp_path / 'x.npy')!r})
        res = [runner(**{{list(runner.get_input_details())[0]: x[i:i + 1]}}) for i in range(len(x))]
        np.savez({str(tmp_path / 'y.npz')!r}, **{{f"{{k}}_{{i}}": v for i, r in enumerate(res) for k, v in r.items()}})
        print(json.dumps(ops))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "NON_MAX_SUPPRESSION_V4" in json.loads(r.stdout.strip().splitlines()[-1])
    got = np.load(tmp_path / "y.npz")
    model = pyloader.load(weights, cfg, input_size=DARKNET_SIZE, nms={"iou": 0.5, "score": 0.3, "max_det": 40})
    want = dict(zip(model.output_names, model(images)))
    for i in range(len(images)):
        n = int(want["num_detections"][i])
        assert n >= 3 and int(got[f"num_detections_{i}"][0]) == n
        np.testing.assert_array_equal(got[f"classes_{i}"][0], np.asarray(want["classes"])[i])
        np.testing.assert_allclose(got[f"boxes_{i}"][0], np.asarray(want["boxes"])[i], atol=1e-3)
        np.testing.assert_allclose(got[f"scores_{i}"][0], np.asarray(want["scores"])[i], atol=1e-5)


def test_nms_same_on_jax_backend(darknet_case, tmp_path):
    """The keras.ops path gives the same detections under JAX as TensorFlow's NMS op under TensorFlow."""
    pytest.importorskip("jax")
    cfg, weights, _, _ = darknet_case
    images = _images(2, DARKNET_SIZE, seed=4)
    np.save(tmp_path / "x.npy", images)
    script = textwrap.dedent(f"""
        import numpy as np, pyloader
        m = pyloader.load({weights!r}, {cfg!r}, input_size={DARKNET_SIZE!r}, nms=True)
        o = m(np.load({str(tmp_path / 'x.npy')!r}))
        np.savez({str(tmp_path / 'jax.npz')!r}, **{{k: np.asarray(v) for k, v in zip(m.output_names, o)}})
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(tmp_path / "jax.npz")
    model = pyloader.load(weights, cfg, input_size=DARKNET_SIZE, nms=True)
    want = dict(zip(model.output_names, model(images)))
    np.testing.assert_array_equal(got["num_detections"], np.asarray(want["num_detections"]))
    np.testing.assert_array_equal(got["classes"], np.asarray(want["classes"]))
    np.testing.assert_allclose(got["boxes"], np.asarray(want["boxes"]), atol=1e-3)
    assert int(got["num_detections"].min()) >= 3


@pytest.mark.parametrize("options,message", [
    ({"iou": 1.5}, "iou"), ({"score": -0.1}, "score"), ({"max_det": 0}, "max_det"), ({"bogus": 1}, "bogus"),
])
def test_bad_nms_options(darknet_case, options, message):
    cfg, weights, _, _ = darknet_case
    with pytest.raises(ValueError, match=message):
        pyloader.load(weights, cfg, nms=options)


def test_nms_needs_heads(tmp_path):
    """A cfg without [yolo]/[region] layers cannot have NMS: FormatError from load, exit 1 from the command
    line, nothing written."""
    cfg = tmp_path / "plain.cfg"
    cfg.write_text("[net]\nwidth=32\nheight=32\nchannels=3\n\n[convolutional]\nfilters=4\nsize=3\nstride=1\n"
                   "pad=1\nactivation=leaky\n")
    write_weights(tmp_path / "plain.weights", str(cfg))
    with pytest.raises(pyloader.FormatError, match="nms needs"):
        pyloader.load(tmp_path / "plain.weights", cfg, nms=True)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "pyloader", "convert", str(tmp_path / "plain.weights"), "-o", str(out),
                        "--nms", "-q"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "nms needs" in r.stderr
    assert not out.exists() or os.listdir(out) == []
