"""TFLite files with a dynamic batch (issue 22 item 4, TFLite part), run in LiteRT (item 7): the input's
shape_signature has batch -1, and after `resize_tensor_input(i, [2, H, W, 3])` + `allocate_tensors` the file
gives the Keras model's outputs for two images at once, as it does for one.

A fresh process with LiteRT alone (`ai_edge_litert.interpreter`, no TensorFlow) runs the files; the references
are OpenCV's Darknet importer (the raw heads of both images, run as one batch) and `pyloader.load` in this process
(the NMS rows, whose matcher is pyloader's: tests/test_nms.py checks that matcher against OpenCV's NMSBoxes).
Checkpoints: yolov3-tiny .weights of random values, raw heads and --nms.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import pyloader
from pyloader.darknet.synthetic import write_weights
from pyloader.verify import compare_outputs
from pyloader.darknet.cfg import parse_network
from test_darknet_opencv import DARKNET_EPS, OPENCV_EPS, assert_close, opencv_cfg, run_opencv
from test_outputs import rel_err, run_py

SMALL = (64, 96)

RUN = """
    import json, sys
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    x = np.load(sys.argv[1])
    report = {}
    for path in sys.argv[2:]:
        it = Interpreter(model_path=path)
        (d,) = it.get_input_details()
        outs = {}
        for n in (1, 2):
            it.resize_tensor_input(d["index"], [n, *x.shape[1:]])
            it.allocate_tensors()
            it.set_tensor(d["index"], x[:n])
            it.invoke()
            outs.update({f"{n}/{o['name']}": it.get_tensor(o["index"]) for o in it.get_output_details()})
        np.savez(path + ".npz", **outs)
        report[path] = d["shape_signature"].tolist()
    assert "tensorflow" not in sys.modules
    print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def litert():
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("ai-edge-litert must be installed in CI (pyproject's test extra)")
        pytest.skip("ai-edge-litert is not installed")


def test_tflite_batch_one_and_two_against_keras(litert, cfg_dir, tmp_path):
    write_weights(tmp_path / "v3t.weights", cfg_dir / "yolov3-tiny.cfg", seed=4)
    shutil.copy(cfg_dir / "yolov3-tiny.cfg", tmp_path / "v3t.cfg")
    x = np.random.default_rng(1).uniform(0, 1, (2, *SMALL, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    nms = {"score": 0.05}
    paths = {}
    for kind, options in (("heads", None), ("nms", nms)):
        (r,) = pyloader.convert([tmp_path / "v3t.weights"], tmp_path / kind, format="tflite", input_size=SMALL,
                                nms=options)
        assert r.status == "converted", r
        paths[kind] = r.output
    p = run_py(RUN, tmp_path / "x.npy", *paths.values())
    assert p.returncode == 0, p.stderr[-3000:]
    signatures = json.loads(p.stdout.strip().splitlines()[-1])
    measured = {}
    for kind, options in (("heads", None), ("nms", nms)):
        assert signatures[paths[kind]] == [-1, *SMALL, 3]
        model = pyloader.load(tmp_path / "v3t.weights", input_size=SMALL, nms=options)
        got = np.load(paths[kind] + ".npz")
        for n in (1, 2):
            want = dict(zip(model.output_names, (np.asarray(o) for o in model(x[:n]))))
            out = {k: got[f"{n}/{k}"] for k in model.output_names}
            assert all(out[k].shape[0] == n for k in out), {k: v.shape for k, v in out.items()}
            if kind == "nms":
                assert want["num_detections"].min() > 0  # detections to compare in both images
                measured[(kind, n)] = compare_outputs(want, out)
            else:
                measured[(kind, n)] = max(rel_err(out[k], want[k]) for k in want)
    print(measured)
    assert max(measured.values()) <= 1e-4, measured
    # the raw heads of the batch-2 run against OpenCV's importer, an implementation nobody here wrote
    cfg = cfg_dir / "yolov3-tiny.cfg"
    write_weights(tmp_path / "cv.weights", cfg, seed=4, variance_offset=DARKNET_EPS - OPENCV_EPS)
    network = parse_network(cfg, SMALL)
    raw_ref, _ = run_opencv(opencv_cfg(cfg, tmp_path, SMALL), str(tmp_path / "cv.weights"), x, network.heads,
                            network)
    got = np.load(paths["heads"] + ".npz")
    names = pyloader.load(tmp_path / "v3t.weights", input_size=SMALL).output_names
    for name, want in zip(names, raw_ref, strict=True):
        assert_close(got[f"2/{name}"], want, f"tflite batch 2 {name} vs OpenCV")
