"""`convert --nms` files say what they hold, read back from the files in fresh processes.

Matrix: Darknet (yolov3-tiny) and YOLOv5 (.pt) x keras, savedmodel, tflite x templates on / off. With
templates, two checkpoints of one architecture per family, so that the second file is patched into the
template output (pyloader.templates); without them, one per family, written by the exporter. Non-default NMS options. For every file:
`pyloader inspect FILE --json` (no TensorFlow) shows decode true, the nms options and the outputs boxes /
scores / classes / num_detections with their shapes; in another fresh process the file itself has those
outputs (Keras output names, the SavedModel serving signature's keys, the TFLite output tensors), its other
copy of the metadata agrees (the SavedModel `metadata` signature), and `import pyloader, keras;
keras.saving.load_model(f).metadata["nms"]` is the options.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import pyloader
from pyloader.keras_blocks.nms_options import nms_options

from pyloader.darknet.synthetic import write_weights
from test_cli_convert import make_pt

NMS = {"iou": 0.5, "score": 0.3, "max_det": 20, "agnostic": True}
WANT_OUTPUTS = [("boxes", [None, 20, 4]), ("scores", [None, 20]), ("classes", [None, 20]),
                ("num_detections", [None])]
FORMATS = ("keras", "savedmodel", "tflite")


@pytest.fixture(scope="module")
def sources(tmp_path_factory, cfg_dir):
    d = tmp_path_factory.mktemp("nms_meta")
    srcs = []
    for i in range(2):
        write_weights(d / f"dark{i}.weights", cfg_dir / "yolov3-tiny.cfg", seed=i)
        srcs.append(d / f"dark{i}.weights")
    for i in range(2):
        if make_pt(d / f"y5_{i}.pt", seed=i) is not None:
            srcs.append(d / f"y5_{i}.pt")
    return srcs, cfg_dir / "yolov3-tiny.cfg"


@pytest.fixture(scope="module")
def outputs(sources, tmp_path_factory):
    """{(format, templates): [file, ...]}: every source converted with --nms."""
    srcs, cfg = sources
    base = tmp_path_factory.mktemp("nms_meta_out")
    got = {}
    for templates in (True, False):
        run = srcs if templates else srcs[::2]  # the exporter: one checkpoint per family is enough
        for fmt in FORMATS:
            out = base / f"{fmt}-{'tpl' if templates else 'exp'}"
            results = pyloader.convert(run, out, cfg=cfg, format=fmt, input_size=(64, 64), nms=NMS,
                                       templates=templates)
            assert [r.status for r in results] == ["converted"] * len(run), results
            if templates:  # written from the template output (a fallback to the exporter says why in note)
                assert [r.note for r in results] == [""] * len(run)
            got[fmt, templates] = [r.output for r in results]
    return got


INSPECT = """
import contextlib, io, json, sys
from pyloader.cli import main
found = {}
for path in sys.argv[1:]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["inspect", path, "--json"]) == 0
    found[path] = json.loads(buf.getvalue())["metadata"]
heavy = sorted(m for m in ("tensorflow", "keras", "torch") if m in sys.modules)
print(json.dumps({"found": found, "heavy": heavy}))
"""

FILES = """
import json, sys
import pyloader, keras
import tensorflow as tf
from pyloader.metadata import parse
got = {}
for path in sys.argv[1:]:
    if path.endswith(".keras"):
        m = keras.saving.load_model(path)
        got[path] = {"outputs": list(m.output_names), "nms": m.metadata["nms"], "decode": m.metadata["decode"]}
    elif path.endswith(".tflite"):
        it = tf.lite.Interpreter(model_path=path)
        got[path] = {"outputs": [d["name"] for d in it.get_output_details()]}
    else:
        sm = tf.saved_model.load(path)
        serve = sm.signatures["serving_default"].structured_outputs
        meta = parse(sm.signatures["metadata"]()["pyloader_metadata"].numpy())
        got[path] = {"outputs": sorted(serve), "nms": meta["nms"], "decode": meta["decode"]}
print(json.dumps(got))
"""


def _fresh(code, files):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    p = subprocess.run([sys.executable, "-c", code, *map(str, files)], capture_output=True, text=True, env=env,
                       timeout=900)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_inspect_shows_the_nms_model(outputs):
    want = nms_options(NMS)
    files = [f for fs in outputs.values() for f in fs]
    got = _fresh(INSPECT, files)
    assert got["heavy"] == []  # inspect reads the metadata without TensorFlow, Keras or torch
    for f in files:
        meta = got["found"][f]
        assert meta["decode"] is True, f
        assert meta["nms"] == want, f
        assert [(o["name"], o["shape"]) for o in meta["outputs"]] == WANT_OUTPUTS, f


def test_files_hold_what_their_metadata_says(outputs):
    want = nms_options(NMS)
    files = [f for fs in outputs.values() for f in fs]
    got = _fresh(FILES, files)
    names = [n for n, _ in WANT_OUTPUTS]
    for f in files:
        g = got[f]
        if f.endswith(".tflite"):
            assert g["outputs"] == names, f
            continue
        assert g["nms"] == want and g["decode"] is True, f
        assert g["outputs"] == (names if f.endswith(".keras") else sorted(names)), f
