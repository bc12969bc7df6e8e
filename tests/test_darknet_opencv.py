"""Every official darknet cfg in ../shared/cfg against OpenCV's Darknet importer (opencv-python-headless 4.x).

For each cfg: synthetic well-scaled weights (header 0.2.5 or 0.1.0, alternating), one random image, and every
head compared, with fold_bn on and off, at a small non-square size whose coarsest grid is odd-sized
(the models are fully convolutional; this keeps CI fast) and, for a representative sample, at the cfg's own
size. PYLOADER_FULL=1 runs every cfg at its own size.

Tolerance: max |pyloader - OpenCV| <= 1e-4 * max |OpenCV| per head. Both compute in float32 with different
summation orders and OpenCV fuses BN differently; the measured differences are ~1e-6 relative (see README).

Known differences between OpenCV and darknet, handled here (the darknet side is checked against a
hand-transliterated numpy reference in test_darknet_semantics.py):
- BN epsilon: OpenCV uses 1e-6, darknet 1e-5. OpenCV gets a weights file whose variances are 9e-6 larger,
  so that both compute sqrt(var + 1e-5); pyloader reads the unmodified file.
- A convolutional section without activation= is logistic in darknet, linear in OpenCV: the OpenCV copy of
  the cfg states activation=logistic explicitly (no official cfg relies on the default).
- 'silu' (WongKinYiu's yolov7 cfg): darknet computes relu, pyloader the intended SiLU; OpenCV gets 'swish'.
- cspx-p7-mish.cfg lists 20 anchors and masks up to 19 with num=16; OpenCV refuses it, so its copy says
  num=20 (raw outputs are unaffected; decoded boxes use the listed anchors, as pyloader does).
- OpenCV 4.x has no [reorg3d]: yolov4-sam-mish-csp-reorg-bfm.cfg is compared with the numpy transliteration
  of darknet (tests/darknet_numpy_ref.py) instead, after checking that this is why OpenCV refuses it.
"""

import os
import re
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import FULL, shared_cfgs  # noqa: E402
import darknet_numpy_ref as ref  # noqa: E402
from pyloader.darknet.synthetic import write_weights  # noqa: E402

cv2 = pytest.importorskip("cv2") if os.environ.get("CI") != "true" else __import__("cv2")

import pyloader  # noqa: E402
from pyloader.darknet.cfg import parse_network  # noqa: E402
from pyloader.errors import FormatError  # noqa: E402

CFGS = shared_cfgs()
NATIVE_SAMPLE = {"yolov2-tiny.cfg", "yolov3-tiny.cfg", "yolov4-tiny.cfg", "yolov7-tiny.cfg"}
OPENCV_EPS = 1e-6
DARKNET_EPS = 1e-5
REL_TOL = 1e-4
OPENCV_CLASS_THRESH = 0.2  # OpenCV zeroes class scores (objectness * probability) at or below this


def small_size(cfg):
    """A small non-square size the cfg's routes accept: odd pixel counts (97x161) where the network allows
    (no feature pyramid), else multiples of the total stride with an odd-sized coarsest grid."""
    try:
        parse_network(cfg, (97, 161))
        return 97, 161
    except FormatError:
        pass
    for m in (32, 64, 128):
        for hm, wm in ((3, 5), (5, 7)):
            try:
                parse_network(cfg, (hm * m, wm * m))
                return hm * m, wm * m
            except FormatError:
                pass
    raise AssertionError(f"no small size works for {cfg}")


def opencv_cfg(cfg, tmp_path, size):
    text = open(cfg).read()
    text = re.sub(r"(?m)^\s*width\s*=.*$", f"width={size[1]}", text)
    text = re.sub(r"(?m)^\s*height\s*=.*$", f"height={size[0]}", text)
    text = re.sub(r"(?m)^activation\s*=\s*silu\s*$", "activation=swish", text)
    sections = re.split(r"(?m)^(?=\[)", text)
    for k, sec in enumerate(sections):  # make darknet's default activation explicit
        if sec.startswith("[convolutional]") and not re.search(r"(?m)^\s*activation\s*=", sec):
            sections[k] = sec.replace("[convolutional]", "[convolutional]\nactivation=logistic", 1)
    text = "".join(sections)
    if os.path.basename(cfg) == "cspx-p7-mish.cfg":
        text = re.sub(r"(?m)^num=16$", "num=20", text)
    path = tmp_path / ("opencv_" + os.path.basename(cfg))
    path.write_text(text)
    return str(path)


def run_opencv(cfg_path, weights, image, heads, network):
    net = cv2.dnn.readNetFromDarknet(cfg_path, weights)
    names = list(net.getLayerNames())
    raw_names = [names[names.index(f"permute_{h.index}") - 1] for h in heads]
    decoded_names = [f"yolo_{h.index}" if h.type == "yolo" else "detection_out" for h in heads]
    net.setInput(image.transpose(0, 3, 1, 2))
    outs = net.forward(raw_names + decoded_names)
    return [o.transpose(0, 2, 3, 1) for o in outs[: len(heads)]], list(outs[len(heads):])


def assert_close(got, want, what):
    scale = float(np.abs(want).max())
    diff = float(np.abs(got - want).max())
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs OpenCV {want.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite values"
    assert diff <= REL_TOL * scale, f"{what}: max diff {diff:.3g} > {REL_TOL} x {scale:.3g}"
    return diff / scale


def cases():
    out = []
    for k, cfg in enumerate(CFGS):
        name = os.path.basename(cfg)
        header = "v0.2.5" if k % 2 == 0 else "v0.1.0"
        out.append(pytest.param(str(cfg), "small", header, id=f"{name}-small"))
        if FULL or name in NATIVE_SAMPLE:
            out.append(pytest.param(str(cfg), "native", header, id=f"{name}-native"))
    return out


@pytest.mark.parametrize("cfg,size_kind,header", cases())
def test_matches_opencv(cfg, size_kind, header, tmp_path):
    network0 = parse_network(cfg)
    size = small_size(cfg) if size_kind == "small" else (network0.height, network0.width)
    network = parse_network(cfg, size)
    heads = network.heads
    ours = tmp_path / "ours.weights"
    theirs = tmp_path / "opencv.weights"
    tensors = write_weights(ours, cfg, seed=7, header=header)
    write_weights(theirs, cfg, seed=7, header=header, variance_offset=DARKNET_EPS - OPENCV_EPS)
    image = np.random.default_rng(3).uniform(0, 1, (1, *size, network.channels)).astype(np.float32)
    try:
        raw_ref, decoded_ref = run_opencv(opencv_cfg(cfg, tmp_path, size), str(theirs), image, heads, network)
    except cv2.error as e:
        # OpenCV 4.x has no [reorg3d] (yolov4-sam-mish-csp-reorg-bfm.cfg): check that this is the reason, then
        # compare with the numpy transliteration of darknet instead.
        assert "Unknown layer type: reorg3d" in str(e), e
        return compare_with_numpy_reference(cfg, ours, tensors, network, image)

    report = {}
    for fold_bn in (True, False):
        model = pyloader.load(ours, cfg, fold_bn=fold_bn, input_size=size)
        outs = model(image)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        assert len(outs) == len(heads)
        for h, got, want in zip(heads, outs, raw_ref):
            rel = assert_close(np.asarray(got), want, f"{os.path.basename(cfg)} head {h.index} fold_bn={fold_bn}")
            report[(fold_bn, h.index)] = rel

    model = pyloader.load(ours, cfg, decode=True, input_size=size)
    boxes = np.asarray(model(image))[0]
    start = 0
    for h, want in zip(heads, decoded_ref):
        got = boxes[start:start + want.shape[0]]
        start += want.shape[0]
        what = f"{os.path.basename(cfg)} decoded head {h.index}"
        np.testing.assert_allclose(got[:, :5], want[:, :5], rtol=REL_TOL, atol=1e-5, err_msg=what)
        scores = got[:, 5:] * got[:, 4:5]  # OpenCV reports objectness * class probability, thresholded
        kept = want[:, 5:] != 0
        np.testing.assert_allclose(scores[kept], want[:, 5:][kept], rtol=REL_TOL, atol=1e-5, err_msg=what)
        assert (scores[~kept] <= OPENCV_CLASS_THRESH + 1e-5).all(), what
    assert start == boxes.shape[0]
    print(os.path.basename(cfg), size, {k: f"{v:.2e}" for k, v in report.items()})


def compare_with_numpy_reference(cfg, weights, tensors, network, image):
    want = ref.forward(network, tensors, image[0].transpose(2, 0, 1))
    for fold_bn in (True, False):
        outs = pyloader.load(weights, cfg, fold_bn=fold_bn, input_size=image.shape[1:3])(image)
        for h, got in zip(network.heads, outs):
            assert_close(np.asarray(got)[0].transpose(2, 0, 1), want[h.index],
                         f"{os.path.basename(cfg)} head {h.index} fold_bn={fold_bn} (numpy reference)")


def test_sweep_is_not_empty():
    # The sweep must cover the shared cfgs (CI fails in conftest when they are missing).
    if os.environ.get("CI") == "true":
        assert len(CFGS) >= 20
