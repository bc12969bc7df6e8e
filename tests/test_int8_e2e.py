"""`--int8 --decode` of an end-to-end head (YOLO26: the one-to-one branch and Ultralytics' top-k instead of NMS): one
TFLite file, the network int8 and the decode + top-k tail float (pyloader/outputs/quantize.py, as for `--int8 --nms`),
so the rows' class index and boxes stay exact float columns. Its rows are checked in the TFLite interpreter against
the float `--decode` file's on the calibration images, as test_int8_nms.py judges NMS: rows scoring at least SCORE
are the detections, kept = same class and IoU >= 0.5 (pyloader.verify.match_detections).

The checkpoint: yolo26n built by the `ultralytics` package from its yaml, random well-scaled weights, saved as its
trainer saves, `end2end` set (as training leaves it), class logits lowered so that some tens of rows score above
SCORE (random weights score every class near 0.5).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import require  # noqa: E402
from test_int8_nms import _detections, _operators  # noqa: E402
from test_int8_verify import _cli  # noqa: E402

SIZE, SCORE = (96, 128), 0.25


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    torch = require("torch")
    require("ultralytics")
    Image = require("PIL.Image")
    from pyloader_bench.synthetic_pt import write_ultralytics_checkpoint

    d = tmp_path_factory.mktemp("int8_e2e")
    path = d / "yolo26n.pt"
    write_ultralytics_checkpoint(path, "yolo26n.yaml", seed=5)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    ckpt["ema"].end2end = True
    with torch.no_grad():
        for seq in ckpt["ema"].model[-1].one2one_cv3:
            seq[-1].bias -= 1.5
    torch.save(ckpt, path)
    cal = d / "cal"
    cal.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):  # smooth random images (low-frequency noise upsampled), different sizes
        small = (rng.random((5 + i, 7, 3)) * 255).astype(np.uint8)
        Image.fromarray(small).resize((150 + 13 * i, 110 + 9 * i), Image.BILINEAR).save(cal / f"img{i}.png")
    return path, cal


def _as_detections(rows):
    """Top-k rows [1, k, 6] (best first) as match_detections' dict: the rows scoring at least SCORE."""
    n = int((rows[0, :, 4] >= SCORE).sum())
    return {"boxes": rows[:, :, :4], "classes": rows[:, :, 5].astype(np.int32), "num_detections": np.array([n])}


def test_int8_topk_rows_keep_the_float_detections(case, tmp_path):
    from pyloader.calibration import list_images, load_images
    from pyloader.verify import match_detections

    path, cal = case
    common = [path, "--format", "tflite", "--decode", "--input-size", "x".join(map(str, SIZE)), "-q"]
    r = _cli(*common, "-o", tmp_path / "int8", "--int8", "--calibration", cal, "--verify")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "verified: max rel diff" in r.stdout
    r = _cli(*common, "-o", tmp_path / "float")
    assert r.returncode == 0, r.stderr[-3000:]
    int8_file, float_file = tmp_path / "int8" / "yolo26n.tflite", tmp_path / "float" / "yolo26n.tflite"

    ops, custom = _operators(int8_file)
    assert not custom and all(name != "CUSTOM" for name, _ in ops), (custom, ops)
    assert ("CONV_2D", "INT8") in ops  # the network in int8
    assert ("TOPK_V2", "FLOAT32") in ops and ("TOPK_V2", "INT8") not in ops  # the top-k in float
    assert ("CONV_2D", "FLOAT32") in ops  # the heads' last convolutions
    assert os.path.getsize(int8_file) < 0.5 * os.path.getsize(float_file)

    images = load_images(list_images(cal), SIZE, letterbox=True)
    kept = n_float = 0
    for want, got in zip(_detections(float_file, images), _detections(int8_file, images)):
        (w,), (g,) = want.values(), got.values()
        assert g.dtype == np.float32 and g.shape == w.shape == (1, min(300, w.shape[1]), 6)
        assert np.array_equal(g[..., 5], np.round(g[..., 5])) and g[..., 5].min() >= 0  # class indices, exact
        m, nw, _, _ = match_detections(_as_detections(w), _as_detections(g))
        kept, n_float = kept + m, n_float + nw
    print(f"--int8 --decode (top-k rows) keeps {kept} of the float file's {n_float} detections")
    assert n_float >= 20 and kept >= 0.9 * n_float
