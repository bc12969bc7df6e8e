"""The direct TFLite writer (pyloader.outputs.tflite_direct) against TensorFlow's converter and the independent
references: yolov3-tiny, yolov4-tiny, yolov4 (synthetic Darknet weights; OpenCV's Darknet importer) and Ultralytics
yolov8n / yolo11n (synthetic checkpoints; the ultralytics PyTorch model), raw heads and decoded, at small inputs.

Each checkpoint is converted twice (PYLOADER_TFLITE_WRITER direct / converter); a fresh process loads every file in
LiteRT as a user would and reports its operators, input and output shapes and outputs. The operator lists are
compared as multisets: the converter orders independent branches its own way (its topological order, not Keras'),
the operators themselves are the same. A model with a layer the direct writer does not cover goes to the converter,
and the CLI's report line and the file's metadata say so.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import pyloader
from pyloader.darknet.synthetic import tiny_cfg, write_weights
from pyloader.outputs import read_metadata
from test_darknet_opencv import DARKNET_EPS, OPENCV_EPS, opencv_cfg, run_opencv
from test_outputs import rel_err, run_py

DARKNET = (64, 96)
ULTRA = (96, 128)
CASES = [("yolov3-tiny", False), ("yolov3-tiny", True), ("yolov4-tiny", True), ("yolov4", True),
         ("yolov8n", False), ("yolov8n", True), ("yolo11n", True)]

RUN_LITERT = """
    import json, sys
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    report = {}
    for path in sys.argv[2:]:
        it = Interpreter(model_path=path)
        runner = it.get_signature_runner()
        (name, detail), = runner.get_input_details().items()
        x = np.load(sys.argv[1] + ("/x_ul.npy" if detail["shape"][1] == 96 else "/x_dn.npy"))
        outs = runner(**{name: x})
        np.savez(path + ".npz", **outs)
        report[path] = {"ops": [o["op_name"] for o in it._get_ops_details()],
                        "input": [list(map(int, detail["shape_signature"]))],
                        "outputs": {k: list(map(int, v["shape"])) for k, v in runner.get_output_details().items()}}
    print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory, cfg_dir):
    pytest.importorskip("ai_edge_litert")
    d = tmp_path_factory.mktemp("direct")
    sources = {}
    for cfg in ("yolov3-tiny", "yolov4-tiny", "yolov4"):
        write_weights(d / f"{cfg}.weights", cfg_dir / f"{cfg}.cfg", seed=7)
        write_weights(d / f"{cfg}.opencv.weights", cfg_dir / f"{cfg}.cfg", seed=7,
                      variance_offset=DARKNET_EPS - OPENCV_EPS)
        shutil.copy(cfg_dir / f"{cfg}.cfg", d / f"{cfg}.cfg")
        sources[cfg] = d / f"{cfg}.weights"
    from pyloader_bench.synthetic_pt import write_ultralytics_checkpoint

    for y in ("yolov8n", "yolo11n"):
        write_ultralytics_checkpoint(d / f"{y}.last.pt", f"{y}.yaml", stripped=d / f"{y}.pt")
        sources[y] = d / f"{y}.pt"
    rng = np.random.default_rng(0)
    np.save(d / "x_dn.npy", rng.uniform(0, 1, (1, *DARKNET, 3)).astype(np.float32))
    np.save(d / "x_ul.npy", rng.uniform(0, 1, (1, *ULTRA, 3)).astype(np.float32))
    out = {}  # templates off: a template learned from one writer's file would write the other's (one process)
    saved = os.environ.get("PYLOADER_TFLITE_WRITER")
    try:
        for name, decode in CASES:
            for writer in ("direct", "converter"):
                os.environ["PYLOADER_TFLITE_WRITER"] = writer
                size = ULTRA if name.startswith("yolo1") or name.startswith("yolov8") else DARKNET
                (r,) = pyloader.convert([sources[name]], d / f"{writer}_{int(decode)}", format="tflite",
                                        decode=decode, input_size=size, templates=False)
                assert r.status == "converted", r
                out[(name, decode, writer)] = r.output
    finally:
        os.environ.pop("PYLOADER_TFLITE_WRITER") if saved is None else os.environ.update(PYLOADER_TFLITE_WRITER=saved)
    p = run_py(RUN_LITERT, d, *out.values())
    assert p.returncode == 0, p.stderr[-3000:]
    return d, out, json.loads(p.stdout.strip().splitlines()[-1])


def _reference(d, name, decode):
    """The independent reference's outputs: OpenCV's raw heads or decoded boxes (x, y, w, h, objectness), or the
    ultralytics model's decoded output / raw heads."""
    if name.startswith("yolov8") or name.startswith("yolo1"):
        from test_ultralytics_reference import _reference as ultralytics

        y, raw = ultralytics(d / f"{name}.pt", np.load(d / "x_ul.npy"))
        return y if decode else raw
    from pyloader.darknet.cfg import parse_network

    network = parse_network(str(d / f"{name}.cfg"), DARKNET)
    raw, decoded = run_opencv(opencv_cfg(str(d / f"{name}.cfg"), d, DARKNET), str(d / f"{name}.opencv.weights"),
                              np.load(d / "x_dn.npy"), network.heads, network)
    return np.concatenate(decoded)[None, :, :5] if decode else raw


@pytest.mark.parametrize("name,decode", CASES, ids=[f"{n}-{'decoded' if d else 'raw'}" for n, d in CASES])
def test_direct_matches_converter_and_reference(files, name, decode):
    d, out, report = files
    direct, conv = (out[(name, decode, w)] for w in ("direct", "converter"))
    a, b = report[direct], report[conv]
    assert collections.Counter(a["ops"]) == collections.Counter(b["ops"]), (a["ops"], b["ops"])
    assert a["input"] == b["input"] and a["input"][0][0] == -1  # the batch dynamic in both
    assert list(a["outputs"].items()) == list(b["outputs"].items())  # names, order and shapes
    assert read_metadata(direct)["tflite_writer"] == "direct"
    assert read_metadata(conv)["tflite_writer"] == "converter: forced"
    got, want = np.load(direct + ".npz"), np.load(conv + ".npz")
    errs = {k: rel_err(got[k], want[k]) for k in want}
    assert max(errs.values()) <= 1e-5, errs
    ref = _reference(d, name, decode)
    if name.startswith("yolov8") or name.startswith("yolo1"):
        mine = got["detections"] if decode else np.concatenate(
            [got[k].reshape(1, -1, got[k].shape[-1]) for k in got], axis=1)
        ref_err = rel_err(mine, ref)
        assert ref_err <= 1e-5, ref_err
    else:  # OpenCV: its own epsilon and kernels, compared as test_darknet_opencv does (1e-4 of the range)
        mine = [got["detections"][..., :5]] if decode else [got[k] for k in got]
        ref_err = max(rel_err(m, r) for m, r in zip(mine, ref if not decode else [ref]))
        assert ref_err <= 1e-4, ref_err
    print(name, "decoded" if decode else "raw", len(a["ops"]), "ops; vs converter", errs, "vs reference", ref_err)


def test_uncovered_layer_goes_to_the_converter(tmp_path):
    """[reorg3d] (pyloader's SpaceToDepth, no emitter): the converter writes the file, the CLI's report line and
    the metadata say why; forcing the direct writer is an error naming the layer."""
    cfg = tiny_cfg().replace("[convolutional]\nsize=1", "[reorg3d]\nstride=2\n\n[convolutional]\nsize=1", 1)
    (tmp_path / "r.cfg").write_text(cfg)
    write_weights(tmp_path / "r.weights", tmp_path / "r.cfg")
    cmd = [sys.executable, "-m", "pyloader.cli", "convert", str(tmp_path / "r.weights"), "-o", str(tmp_path / "o"),
           "--format", "tflite"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    why = "converter: layer reorg3d_2 (SpaceToDepth) has no direct emitter"
    assert f"tflite writer: {tmp_path / 'o' / 'r.tflite'}: {why}" in p.stdout, p.stdout
    assert read_metadata(tmp_path / "o" / "r.tflite")["tflite_writer"] == why
    p = subprocess.run(cmd + ["--tflite-writer", "direct", "--overwrite"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 1 and "does not write this model: layer reorg3d_2 (SpaceToDepth)" in p.stderr, p.stderr


def test_schema_numbers_are_tensorflows():
    """Every operator code, options union type and tensor type of tflite_schema is TensorFlow's."""
    pytest.importorskip("tensorflow")
    from tensorflow.lite.python import schema_py_generated as s

    from pyloader.outputs import tflite_schema as mine

    assert {k: getattr(s.BuiltinOperator, k) for k in mine.OPS} == mine.OPS
    assert {k: getattr(s.BuiltinOptions, k) for k in mine.OPTIONS} == {k: v[0] for k, v in mine.OPTIONS.items()}
    assert (s.TensorType.FLOAT32, s.TensorType.INT32) == (mine.FLOAT32, mine.INT32)
    assert (s.Padding.SAME, s.Padding.VALID) == (mine.PADDING["same"], mine.PADDING["valid"])
