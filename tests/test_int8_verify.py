"""int8 TFLite (`--int8 --calibration DIR`, `--int8-io`), `--verify`, and their bad input.

The network is yolov3-tiny with 3 classes and random well-scaled weights (as in test_nms.py); the calibration
set is a few generated PNG images of different sizes. The int8 files are checked by `--verify` (the TFLite
interpreter against the in-memory Keras model) and their agreement with the float model is measured: raw-head
relative error, and detections kept in common after the same NMS on the float and int8 decoded outputs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import SHARED_CFG, require  # noqa: E402
from pyloader.darknet.synthetic import write_weights  # noqa: E402

import pyloader  # noqa: E402
from pyloader.bulk import worker as bulk_write  # noqa: E402

SIZE = (160, 224)
NC = 3


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    if not (SHARED_CFG / "yolov3-tiny.cfg").is_file():
        pytest.skip("../shared/cfg/yolov3-tiny.cfg not found")
    require("PIL")
    from PIL import Image

    d = tmp_path_factory.mktemp("int8")
    text = (SHARED_CFG / "yolov3-tiny.cfg").read_text()
    text = re.sub(r"(?m)^classes=80$", f"classes={NC}", text)
    text = re.sub(r"(?m)^filters=255$", f"filters={3 * (5 + NC)}", text)
    text = re.sub(r"(?m)^width=\d+$", f"width={SIZE[1]}", text)
    text = re.sub(r"(?m)^height=\d+$", f"height={SIZE[0]}", text)
    (d / "tiny3.cfg").write_text(text)

    def tweak(network, layer, t):  # detections to keep (see test_nms.py)
        if any(h.inputs[0] == layer.index for h in network.heads):
            b = t["biases"].reshape(3, 5 + NC)
            b[:, 2:4] += 1.0
            b[:, 4] -= 1.0

    write_weights(d / "tiny3.weights", str(d / "tiny3.cfg"), seed=11, tweak=tweak)
    cal = d / "calibration"
    cal.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # smooth random images (low-frequency noise upsampled), different sizes
        small = rng.random((6 + i, 8, 3))
        img = Image.fromarray((small * 255).astype(np.uint8)).resize((200 + 17 * i, 150 + 9 * i), Image.BILINEAR)
        img.save(cal / f"img{i}.png")
    return d / "tiny3.weights", d / "tiny3.cfg", cal


def _cli(*args, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "pyloader", "convert", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _tflite_run(path, x):
    import tensorflow as tf

    it = tf.lite.Interpreter(model_path=str(path))
    runner = it.get_signature_runner()
    (name, detail), = runner.get_input_details().items()
    assert detail["dtype"] == np.float32
    out = runner(**{name: x})
    return [out[k] for k in sorted(out, key=lambda k: int(k.rsplit("_", 1)[1]) if k[-1].isdigit() else k)]


def test_int8_agreement_with_float(case, tmp_path):
    """--int8 (float input/output), raw heads and --decode, verified by --verify; agreement measured."""
    from pyloader.calibration import list_images, load_images
    from pyloader.keras_blocks.nms import DetectionNMS
    from pyloader.verify import match_detections

    weights, cfg, cal = case
    out = tmp_path / "out"
    r = _cli(weights, "--cfg", cfg, "-o", out, "--format", "tflite", "--int8", "--calibration", cal, "--verify", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "verified: max rel diff" in r.stdout
    raw_file = out / "tiny3.tflite"
    r = _cli(weights, "--cfg", cfg, "-o", tmp_path / "dec", "--format", "tflite", "--int8", "--calibration", cal,
             "--decode", "-q")
    assert r.returncode == 0, r.stderr[-3000:]

    images = load_images(list_images(cal), SIZE, letterbox=False)
    raw_model = pyloader.load(weights, cfg)
    dec_model = pyloader.load(weights, cfg, decode=True)
    nms = DetectionNMS(layout="xywh_obj_cls", box_scale=(SIZE[1], SIZE[0]))
    rel, matched, n_float, n_int8 = [], 0, 0, 0
    for i in range(len(images)):
        x = images[i:i + 1]
        want = [np.asarray(t) for t in raw_model(x)]
        got = _tflite_run(raw_file, x)
        rel.append(max(float(np.abs(g - w).max() / np.abs(w).max()) for g, w in zip(got, want)))
        (got_dec,) = _tflite_run(tmp_path / "dec" / "tiny3.tflite", x)
        a = dict(zip(("boxes", "scores", "classes", "num_detections"), nms(np.asarray(dec_model(x)))))
        b = dict(zip(("boxes", "scores", "classes", "num_detections"), nms(got_dec)))
        m, nw, ng, _ = match_detections({k: np.asarray(v) for k, v in a.items()},
                                        {k: np.asarray(v) for k, v in b.items()})
        matched, n_float, n_int8 = matched + m, n_float + nw, n_int8 + ng
    print(f"int8 raw heads: max rel error per image {[f'{v:.3f}' for v in rel]}; detections: float {n_float}, "
          f"int8 {n_int8}, in common {matched} ({matched / max(n_float, 1):.0%} of float)")
    assert max(rel) < 0.1  # the heads' last convolutions float (all int8: ~0.2); a broken file is off by ~1
    assert n_float >= 20 and matched >= 0.9 * n_float  # all int8 kept 80%
    convs = _conv_weight_types(raw_file)  # the stem (first convolutions, <= 10% of the weights) and heads float
    assert convs[0][0] == "FLOAT32" and convs[-1][0] == "FLOAT32" and "INT8" in {t for t, _ in convs}, convs
    assert sum(n for t, n in convs if t == "FLOAT32") < 0.15 * sum(n for _, n in convs), convs


def _conv_weight_types(path):
    """[(weight tensor type, element count)] of the file's convolutions, in execution order."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    sub = model.subgraphs[0]
    return [(types[sub.tensors[op.inputs[1]].type], int(np.prod(sub.tensors[op.inputs[1]].shape)))
            for op in sub.operators
            if model.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.CONV_2D]


def test_int8_full_integer_io(case, tmp_path):
    """--int8-io: int8 input and outputs; --verify quantizes the image and dequantizes the outputs with the
    file's own parameters."""
    import tensorflow as tf

    weights, cfg, cal = case
    r = _cli(weights, "--cfg", cfg, "-o", tmp_path, "--format", "tflite", "--int8", "--int8-io", "--calibration",
             cal, "--verify", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "verified" in r.stdout
    it = tf.lite.Interpreter(model_path=str(tmp_path / "tiny3.tflite"))
    assert it.get_input_details()[0]["dtype"] == np.int8
    assert all(d["dtype"] == np.int8 for d in it.get_output_details())


def test_int8_verify_ignores_file_names(case, tmp_path):
    """The int8 --verify verdict and number are the same when the calibration images are renamed (their sort
    order reversed): the images are chosen by their pixels, the outputs compared after the heads' logistic."""
    import shutil

    from pyloader.bulk.jobs import Job
    from pyloader.verify import INT8_IMAGES, verify_images

    weights, cfg, cal = case
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    paths = sorted(cal.iterdir())
    for i, p in enumerate(reversed(paths)):
        shutil.copy(p, renamed / f"{i:02d}_{p.stem[::-1]}.png")
    model = pyloader.load(weights, cfg)
    chosen = [verify_images(model, Job(source="x", output="x", format="tflite", int8=True, calibration=c), False)
              for c in (cal, renamed)]
    assert len(chosen[0]) == min(len(paths), INT8_IMAGES) > 1 and np.array_equal(*chosen)
    res = [pyloader.convert([weights], tmp_path / n, cfg=cfg, format="tflite", int8=True, calibration=c,
                            verify=True)[0] for n, c in (("a", cal), ("b", renamed))]
    assert all(r.status == "converted" for r in res), res
    assert res[0].verify == res[1].verify and 0 < res[0].verify < 0.25, res


@pytest.mark.parametrize("fmt", ["keras", "tflite"])
def test_verify_catches_a_corrupted_output(case, tmp_path, monkeypatch, fmt):
    """A writer that perturbs one kernel of what it writes (the in-memory model stays right): --verify fails
    the source and nothing is left in the output folder."""
    weights, cfg, _ = case
    real_write = bulk_write.write_output

    def corrupting_write(model, tmp, job, *args):
        v = next(w for w in model.weights if w.path.endswith("kernel") and "conv_15" in w.path)
        keep = np.asarray(v.numpy()).copy()
        v.assign(keep * 1.5)
        try:
            real_write(model, tmp, job, *args)
        finally:
            v.assign(keep)

    monkeypatch.setattr(bulk_write, "write_output", corrupting_write)
    (res,) = pyloader.convert([weights], tmp_path, cfg=cfg, format=fmt, verify=True)
    assert res.status == "failed" and "verify" in res.reason and "differs" in res.reason, res
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(bulk_write, "write_output", real_write)
    (res,) = pyloader.convert([weights], tmp_path, cfg=cfg, format=fmt, verify=True, overwrite=True)
    assert res.status == "converted" and res.verify is not None and res.verify < 1e-4, res


def test_bad_int8_and_nms_options(case, tmp_path):
    """Usage errors (exit 2), nothing written: int8 without calibration, with another format,
    a calibration folder without images or with an unreadable one, nms with weights.h5, nms flags alone."""
    weights, cfg, cal = case
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    out = tmp_path / "out"
    cases = [
        (["--format", "tflite", "--int8"], "--calibration"),
        (["--format", "keras", "--int8", "--calibration", cal], "--format tflite"),
        (["--format", "tflite", "--int8-io"], "--int8"),
        (["--format", "tflite", "--int8", "--calibration", empty], "no calibration images"),
        (["--format", "tflite", "--int8", "--calibration", broken], "a.png"),
        (["--format", "weights.h5", "--nms"], "weights.h5"),
        (["--iou", "0.5"], "--nms"),
        (["--nms", "--iou", "1.5"], "--iou"),
    ]
    for args, message in cases:
        r = _cli(weights, "--cfg", cfg, "-o", out, *args, timeout=120)
        assert r.returncode == 2, (args, r.returncode, r.stderr[-2000:])
        assert message in r.stderr, (args, r.stderr[-2000:])
        assert not out.exists() or os.listdir(out) == [], args
    with pytest.raises(ValueError, match="calibration"):
        pyloader.convert([weights], out, cfg=cfg, format="tflite", int8=True)
    assert not out.exists()
